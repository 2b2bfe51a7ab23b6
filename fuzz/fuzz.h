
/*
 * Copyright (C) the ngx_http_llm_router_module authors
 *
 * What the fuzz targets share.
 */


#ifndef _FUZZ_H_INCLUDED_
#define _FUZZ_H_INCLUDED_


#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>

#include "llmr.h"


/* FNV-1a of the input: where to cut it, and other choices made from it */

static uint32_t
fuzz_hash(const uint8_t *p, size_t len)
{
    uint32_t  h;

    h = LLMR_FNV_OFFSET;

    while (len--) {
        h = (h ^ *p++) * LLMR_FNV_PRIME;
    }

    return h;
}


/* whether p is one JSON document, as a provider's parser would take it */

static int
fuzz_json_valid(const unsigned char *p, size_t len)
{
    int          ok;
    yajl_handle  y;

    y = yajl_alloc(NULL, NULL, NULL);
    if (y == NULL) {
        abort();
    }

    ok = yajl_parse(y, p, len) == yajl_status_ok
         && yajl_complete_parse(y) == yajl_status_ok;

    yajl_free(y);

    return ok;
}


#endif /* _FUZZ_H_INCLUDED_ */
