
/*
 * Copyright (C) the ngx_http_llm_router_module authors
 *
 * What the fuzz targets share.
 */


#ifndef _FUZZ_H_INCLUDED_
#define _FUZZ_H_INCLUDED_


#include <stddef.h>
#include <stdint.h>

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


#endif /* _FUZZ_H_INCLUDED_ */
