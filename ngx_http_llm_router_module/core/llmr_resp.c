
/*
 * Copyright (C) the ngx_http_llm_router_module authors
 *
 * RESP, the protocol of Redis: a command is an array of bulk strings,
 * binary safe, so that a budget key of a client's choosing is never
 * more than a string to Redis.  Replies are read whole from the start of
 * a buffer: those of the module are a few dozen bytes.
 */


#include <stdint.h>
#include <string.h>

#include "llmr.h"


#define LLMR_RESP_BULK_MAX  65536


static int llmr_resp_line(const unsigned char *p, size_t len,
    const unsigned char **eol);
static int llmr_resp_integer(const unsigned char *p,
    const unsigned char *end, int64_t *n);
static unsigned char *llmr_resp_number(unsigned char *p, char type,
    size_t n);


size_t
llmr_resp_command_size(unsigned argc, const llmr_str_t *argv)
{
    size_t    len;
    unsigned  i;

    /* "*N\r\n", and "$LEN\r\nDATA\r\n" each: 20 digits at most */

    len = 1 + 20 + 2;

    for (i = 0; i < argc; i++) {
        len += 1 + 20 + 2 + argv[i].len + 2;
    }

    return len;
}


unsigned char *
llmr_resp_command(unsigned char *p, unsigned argc, const llmr_str_t *argv)
{
    unsigned  i;

    p = llmr_resp_number(p, '*', argc);

    for (i = 0; i < argc; i++) {
        p = llmr_resp_number(p, '$', argv[i].len);

        if (argv[i].len) {
            memcpy(p, argv[i].data, argv[i].len);
            p += argv[i].len;
        }

        *p++ = '\r';
        *p++ = '\n';
    }

    return p;
}


static unsigned char *
llmr_resp_number(unsigned char *p, char type, size_t n)
{
    unsigned char   digits[20];
    unsigned        i;

    *p++ = (unsigned char) type;

    i = 0;

    do {
        digits[i++] = (unsigned char) ('0' + n % 10);
        n /= 10;
    } while (n);

    while (i) {
        *p++ = digits[--i];
    }

    *p++ = '\r';
    *p++ = '\n';

    return p;
}


int
llmr_resp_parse(const unsigned char *p, size_t len, llmr_resp_t *reply,
    size_t *used)
{
    int                   rc;
    int64_t               n;
    unsigned              i;
    const unsigned char  *start, *end, *eol;

    memset(reply, 0, sizeof(llmr_resp_t));

    start = p;
    end = p + len;

    rc = llmr_resp_line(p, len, &eol);
    if (rc != LLMR_OK) {
        return rc;
    }

    switch (*p) {

    case '+':
    case '-':
        reply->type = (*p == '+') ? LLMR_RESP_STATUS : LLMR_RESP_ERROR;
        reply->text.data = p + 1;
        reply->text.len = eol - (p + 1);
        break;

    case ':':
        reply->type = LLMR_RESP_INTEGER;

        if (llmr_resp_integer(p + 1, eol, &reply->integer) != LLMR_OK) {
            return LLMR_ERROR;
        }

        break;

    case '$':
        reply->type = LLMR_RESP_BULK;

        if (llmr_resp_integer(p + 1, eol, &n) != LLMR_OK
            || n < -1 || n > LLMR_RESP_BULK_MAX)
        {
            return LLMR_ERROR;
        }

        if (n == -1) {
            reply->nil = 1;
            break;
        }

        /* the data and its CRLF */

        if ((size_t) (end - (eol + 2)) < (size_t) n + 2) {
            return LLMR_AGAIN;
        }

        reply->text.data = eol + 2;
        reply->text.len = (size_t) n;

        if (eol[2 + n] != '\r' || eol[2 + n + 1] != '\n') {
            return LLMR_ERROR;
        }

        eol += n + 2;
        break;

    case '*':
        reply->type = LLMR_RESP_ARRAY;

        if (llmr_resp_integer(p + 1, eol, &n) != LLMR_OK
            || n < -1 || n > LLMR_RESP_ITEMS)
        {
            return LLMR_ERROR;
        }

        if (n == -1) {
            reply->nil = 1;
            break;
        }

        reply->nitems = (unsigned) n;

        for (i = 0; i < reply->nitems; i++) {
            p = eol + 2;

            rc = llmr_resp_line(p, end - p, &eol);
            if (rc != LLMR_OK) {
                return rc;
            }

            if (*p != ':'
                || llmr_resp_integer(p + 1, eol, &reply->items[i])
                   != LLMR_OK)
            {
                return LLMR_ERROR;
            }
        }

        break;

    default:
        return LLMR_ERROR;
    }

    *used = (size_t) (eol + 2 - start);

    return LLMR_OK;
}


/* a line ending in CRLF, *eol at its CR */

static int
llmr_resp_line(const unsigned char *p, size_t len, const unsigned char **eol)
{
    const unsigned char  *cr;

    if (len > LLMR_RESP_LINE_MAX) {
        len = LLMR_RESP_LINE_MAX;
    }

    cr = memchr(p, '\r', len);

    if (cr == NULL) {
        return (len == LLMR_RESP_LINE_MAX) ? LLMR_ERROR : LLMR_AGAIN;
    }

    if (cr + 1 == p + len) {
        return (len == LLMR_RESP_LINE_MAX) ? LLMR_ERROR : LLMR_AGAIN;
    }

    if (cr[1] != '\n' || cr == p) {
        return LLMR_ERROR;
    }

    *eol = cr;

    return LLMR_OK;
}


/* a signed decimal that fits int64_t, nothing else between p and end */

static int
llmr_resp_integer(const unsigned char *p, const unsigned char *end,
    int64_t *n)
{
    int        negative;
    uint64_t   v, max;

    negative = (p < end && *p == '-');
    p += negative;

    if (p == end) {
        return LLMR_ERROR;
    }

    max = negative ? (uint64_t) INT64_MAX + 1 : (uint64_t) INT64_MAX;

    for (v = 0; p < end; p++) {
        if (*p < '0' || *p > '9' || v > (max - (*p - '0')) / 10) {
            return LLMR_ERROR;
        }

        v = v * 10 + (*p - '0');
    }

    *n = negative ? (int64_t) (0 - v) : (int64_t) v;

    return LLMR_OK;
}
