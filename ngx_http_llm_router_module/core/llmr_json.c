
/*
 * Copyright (C) the ngx_http_llm_router_module authors
 *
 * JSON string escaping for the values the router writes: model names
 * in request bodies, and messages and names in log records and errors.
 */


#include "llmr.h"


static const char  llmr_hex[] = "0123456789abcdef";


size_t
llmr_json_escape_size(const unsigned char *p, size_t len)
{
    size_t  i, n;

    n = len;

    for (i = 0; i < len; i++) {
        if (p[i] == '"' || p[i] == '\\') {
            n++;

        } else if (p[i] < 0x20 || p[i] == 0x7f) {
            n += 5;
        }
    }

    return n;
}


unsigned char *
llmr_json_escape(unsigned char *dst, const unsigned char *p, size_t len)
{
    size_t  i;

    for (i = 0; i < len; i++) {

        if (p[i] == '"' || p[i] == '\\') {
            *dst++ = '\\';
            *dst++ = p[i];

        } else if (p[i] < 0x20 || p[i] == 0x7f) {
            *dst++ = '\\';
            *dst++ = 'u';
            *dst++ = '0';
            *dst++ = '0';
            *dst++ = llmr_hex[p[i] >> 4];
            *dst++ = llmr_hex[p[i] & 0xf];

        } else {
            *dst++ = p[i];
        }
    }

    return dst;
}
