
/*
 * Copyright (C) the ngx_http_llm_router_module authors
 *
 * Not a test of its own: for t/02-estimate.t, the token estimate of each
 * chat body read from stdin, one a line, as nginx makes it (in buffers
 * of 16 KB, the window and the string bound of the defaults) and by the
 * full rule (every byte read, nothing bounded): "WINDOWED FULL".
 */


#define _POSIX_C_SOURCE  200809L       /* getline() */

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "llmr.h"


static long estimate(const char *body, size_t len, size_t chunk,
    size_t hold_max, size_t scan_limit);


int
main(void)
{
    char     *line;
    size_t    size;
    ssize_t   n;

    line = NULL;
    size = 0;

    while ((n = getline(&line, &size, stdin)) > 0) {
        while (n && (line[n - 1] == '\n' || line[n - 1] == '\r')) {
            n--;
        }

        printf("%ld %ld\n",
               estimate(line, n, 16384, LLMR_HOLD_MAX, LLMR_SCAN_LIMIT),
               estimate(line, n, 0, (size_t) 1 << 30, 0));
    }

    free(line);

    return 0;
}


/* est_tokens, or -1 for a body the core refuses */

static long
estimate(const char *body, size_t len, size_t chunk, size_t hold_max,
    size_t scan_limit)
{
    int             rc;
    size_t          off, k;
    llmr_request_t  rq;

    if (llmr_request_init(&rq, &llmr_dialects[LLMR_API_CHAT], NULL, 0)
        != LLMR_OK)
    {
        return -1;
    }

    rq.hold_max = hold_max;
    rq.scan_limit = scan_limit;

    rc = LLMR_OK;

    for (off = 0; off < len && rc == LLMR_OK; off += k) {
        k = (chunk && len - off > chunk) ? chunk : len - off;
        rc = llmr_request_feed(&rq, (const unsigned char *) body + off, k);
    }

    if (rc == LLMR_OK) {
        rc = llmr_request_finish(&rq);
    }

    llmr_request_free(&rq);

    return (rc == LLMR_OK) ? (long) rq.f.est_tokens : -1;
}
