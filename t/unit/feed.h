
/*
 * Copyright (C) the ngx_http_llm_router_module authors
 *
 * What the unit tests share: a body or an answer fed to the core in
 * pieces, as buffers bring it, and the body a provider gets.
 */


#ifndef _FEED_H_INCLUDED_
#define _FEED_H_INCLUDED_


#include <stdlib.h>
#include <string.h>

#include "llmr.h"


/* an initialized request fed in pieces of chunk bytes (0: whole) */

static int
feed_request(llmr_request_t *rq, const char *body, size_t chunk)
{
    int     rc;
    size_t  len, off, n;

    len = strlen(body);
    rc = LLMR_OK;

    for (off = 0; off < len && rc == LLMR_OK; off += n) {
        n = (chunk && len - off > chunk) ? chunk : len - off;
        rc = llmr_request_feed(rq, (const unsigned char *) body + off, n);
    }

    if (rc == LLMR_OK) {
        rc = llmr_request_finish(rq);
    }

    llmr_request_free(rq);

    return rc;
}


/* an answer fed in pieces, its text kept in buf when there is one */

static void
feed_usage_text(llmr_usage_t *u, const llmr_dialect_t *d, int sse,
    const char *text, size_t chunk, unsigned char *buf, size_t size)
{
    size_t  len, off, n;

    llmr_usage_init(u, d, sse);

    if (buf) {
        llmr_usage_keep_text(u, buf, size);
    }

    len = strlen(text);

    for (off = 0; off < len; off += n) {
        n = (chunk && len - off > chunk) ? chunk : len - off;
        llmr_usage_feed(u, (const unsigned char *) text + off, n);
    }
}


static void
feed_usage(llmr_usage_t *u, const llmr_dialect_t *d, int sse,
    const char *text, size_t chunk)
{
    feed_usage_text(u, d, sse, text, chunk, NULL, 0);
}


/* the body a provider gets: the edits of llmr_rewrite() spliced in */

static char *
splice(const char *body, const llmr_edit_t *edits, unsigned n)
{
    char      *out, *o;
    size_t     len, add, at;
    unsigned   i;

    len = strlen(body);

    for (add = 0, i = 0; i < n; i++) {
        add += edits[i].len;
    }

    out = malloc(len + add + 1);
    if (out == NULL) {
        return NULL;
    }

    o = out;
    at = 0;

    for (i = 0; i < n; i++) {
        memcpy(o, body + at, edits[i].start - at);
        o += edits[i].start - at;
        memcpy(o, edits[i].data, edits[i].len);
        o += edits[i].len;
        at = edits[i].end;
    }

    memcpy(o, body + at, len - at);
    o[len - at] = '\0';

    return out;
}


#endif /* _FEED_H_INCLUDED_ */
