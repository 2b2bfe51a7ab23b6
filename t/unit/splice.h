
/*
 * Copyright (C) the ngx_http_llm_router_module authors
 *
 * The body a provider gets: the edits of llmr_rewrite() spliced into the
 * client's, as the module splices them into its buffer chain.
 */


#ifndef _SPLICE_H_INCLUDED_
#define _SPLICE_H_INCLUDED_


#include <stdlib.h>
#include <string.h>

#include "llmr.h"


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


#endif /* _SPLICE_H_INCLUDED_ */
