
/*
 * Copyright (C) the ngx_http_llm_router_module authors
 *
 * The smallest TAP producer: prove runs the unit tests of the core.
 */


#ifndef _TAP_H_INCLUDED_
#define _TAP_H_INCLUDED_


#include <stdio.h>
#include <string.h>


static int  tap_count;
static int  tap_failed;


static int
tap_ok(int pass, const char *name)
{
    tap_count++;

    if (!pass) {
        tap_failed++;
    }

    printf("%sok %d - %s\n", pass ? "" : "not ", tap_count, name);

    return pass;
}


static void
tap_is(long long got, long long expected, const char *name)
{
    if (!tap_ok(got == expected, name)) {
        printf("#   got %lld, expected %lld\n", got, expected);
    }
}


static void
tap_is_str(const char *got, size_t len, const char *expected,
    const char *name)
{
    int  pass;

    pass = (got != NULL && len == strlen(expected)
            && memcmp(got, expected, len) == 0);

    if (!tap_ok(pass, name)) {
        printf("#   got      \"%.*s\"\n#   expected \"%s\"\n",
               got ? (int) len : 4, got ? got : "NULL", expected);
    }
}


static int
tap_done(void)
{
    printf("1..%d\n", tap_count);

    return tap_failed ? 1 : 0;
}


#endif /* _TAP_H_INCLUDED_ */
