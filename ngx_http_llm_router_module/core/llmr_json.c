
/*
 * Copyright (C) the ngx_http_llm_router_module authors
 *
 * JSON strings: the check and the decoding of a string's body as yajl
 * does them, for long strings that the router reads without yajl, and
 * the escaping of the values it writes: model names in request bodies,
 * and messages and names in log records and errors.
 */


#include <string.h>

#include "llmr.h"


#define LLMR_ONES   0x0101010101010101ULL
#define LLMR_HIGHS  0x8080808080808080ULL

/* a byte of w is zero */
#define llmr_zero_byte(w)  (((w) - LLMR_ONES) & ~(w) & LLMR_HIGHS)


static uint32_t llmr_json_hex(const unsigned char *p);


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


/*
 * Checks a string's body up to its closing quote, or all of p, as
 * yajl's lexer does: no control characters, escapes that are JSON's,
 * UTF-8 sequences whole.  Text is read eight bytes at a time while no
 * byte in them needs a look: below 0x20, above 0x7f, a quote or a
 * backslash.
 */

int
llmr_json_check(llmr_json_check_t *c, const unsigned char *p, size_t len,
    size_t *used)
{
    size_t         i;
    uint64_t       w;
    unsigned char  ch;

    for (i = 0; i < len; i++) {

        if (llmr_json_between(c)) {
            while (len - i >= 8) {
                memcpy(&w, p + i, 8);

                if ((((w - 0x2020202020202020ULL) | w) & LLMR_HIGHS)
                    | llmr_zero_byte(w ^ 0x2222222222222222ULL)
                    | llmr_zero_byte(w ^ 0x5c5c5c5c5c5c5c5cULL))
                {
                    break;
                }

                i += 8;
            }

            if (i == len) {
                break;
            }
        }

        ch = p[i];

        if (c->hex) {
            if (!((ch >= '0' && ch <= '9')
                  || ((ch | 0x20) >= 'a' && (ch | 0x20) <= 'f')))
            {
                goto invalid;
            }

            c->hex--;

        } else if (c->escape) {
            c->escape = 0;

            if (ch == 'u') {
                c->hex = 4;

            } else if (ch == '\0' || strchr("\"\\/bfnrt", ch) == NULL) {
                goto invalid;
            }

        } else if (c->utf8) {
            if ((ch & 0xc0) != 0x80) {
                *used = i;
                return LLMR_JSON_UTF8;
            }

            c->utf8--;

        } else if (ch == '"') {
            break;

        } else if (ch == '\\') {
            c->escape = 1;

        } else if (ch < 0x20) {
            goto invalid;

        } else if (ch >= 0x80) {
            if ((ch >> 5) == 0x06) {
                c->utf8 = 1;

            } else if ((ch >> 4) == 0x0e) {
                c->utf8 = 2;

            } else if ((ch >> 3) == 0x1e) {
                c->utf8 = 3;

            } else {
                *used = i;
                return LLMR_JSON_UTF8;
            }
        }
    }

    *used = i;
    return LLMR_OK;

invalid:

    *used = i;
    return LLMR_JSON_INVALID;
}


/*
 * Decodes a checked string body, or a part of one that starts and ends
 * between characters, into dst, which has room for len bytes: an escape
 * is never shorter than what it stands for.  The bytes are yajl's own,
 * a lone high surrogate a '?', so that a text read here reads the same
 * as one yajl has decoded.
 */

unsigned char *
llmr_json_unescape(unsigned char *dst, const unsigned char *p, size_t len)
{
    size_t                n;
    uint32_t              cp;
    const unsigned char  *end, *b;

    end = p + len;

    while (p < end) {
        b = memchr(p, '\\', end - p);
        n = (b ? b : end) - p;

        memcpy(dst, p, n);
        dst += n;
        p += n;

        if (b == NULL) {
            break;
        }

        switch (p[1]) {
        case 'r':
            *dst++ = '\r';
            break;
        case 'n':
            *dst++ = '\n';
            break;
        case 'f':
            *dst++ = '\f';
            break;
        case 'b':
            *dst++ = '\b';
            break;
        case 't':
            *dst++ = '\t';
            break;
        case 'u':
            cp = llmr_json_hex(p + 2);
            p += 4;

            if ((cp & 0xfc00) == 0xd800) {
                /* yajl pairs it with the next \u escape, whatever it is */

                if (p + 3 < end && p[2] == '\\' && p[3] == 'u') {
                    cp = ((cp & 0x3f) << 10)
                         | ((((cp >> 6) & 0xf) + 1) << 16)
                         | (llmr_json_hex(p + 4) & 0x3ff);
                    p += 6;

                } else {
                    *dst++ = '?';
                    break;
                }
            }

            dst = llmr_utf8_encode(dst, cp);
            break;
        default:
            /* '"', '\\', '/' */
            *dst++ = p[1];
        }

        p += 2;
    }

    return dst;
}


static uint32_t
llmr_json_hex(const unsigned char *p)
{
    uint32_t       v;
    unsigned       i;
    unsigned char  c;

    v = 0;

    for (i = 0; i < 4; i++) {
        c = p[i];
        v = (v << 4) | ((c <= '9') ? c - '0' : (c | 0x20) - 'a' + 10);
    }

    return v;
}


/* a code point in UTF-8: the CLI decodes with it too */

unsigned char *
llmr_utf8_encode(unsigned char *dst, uint32_t cp)
{
    if (cp < 0x80) {
        *dst++ = (unsigned char) cp;

    } else if (cp < 0x800) {
        *dst++ = (unsigned char) (0xc0 | (cp >> 6));
        *dst++ = (unsigned char) (0x80 | (cp & 0x3f));

    } else if (cp < 0x10000) {
        *dst++ = (unsigned char) (0xe0 | (cp >> 12));
        *dst++ = (unsigned char) (0x80 | ((cp >> 6) & 0x3f));
        *dst++ = (unsigned char) (0x80 | (cp & 0x3f));

    } else {
        *dst++ = (unsigned char) (0xf0 | (cp >> 18));
        *dst++ = (unsigned char) (0x80 | ((cp >> 12) & 0x3f));
        *dst++ = (unsigned char) (0x80 | ((cp >> 6) & 0x3f));
        *dst++ = (unsigned char) (0x80 | (cp & 0x3f));
    }

    return dst;
}
