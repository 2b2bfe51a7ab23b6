
/*
 * Copyright (C) the ngx_http_llm_router_module authors
 *
 * Token usage of a provider response, read as the bytes pass by: a JSON
 * body, or an SSE stream whose "data:" lines are JSON documents.  The
 * scanner keeps a few bytes of state, so a response is never buffered
 * and a usage object split over any number of buffers is still found.
 * It is not a validator: it only follows strings, nesting and keys.
 */


#include <string.h>

#include "llmr.h"


#define LLMR_SSE_PREFIX      "data:"
#define LLMR_SSE_DATA        (sizeof(LLMR_SSE_PREFIX) - 1)
#define LLMR_SSE_SKIP        (LLMR_SSE_DATA + 1)

#define LLMR_TOKENS_MAX      1000000000

enum {
    LLMR_FIELD_NONE = 0,
    LLMR_FIELD_USAGE,
    LLMR_FIELD_PROMPT,
    LLMR_FIELD_COMPLETION,
    LLMR_FIELD_CONTENT
};


static void llmr_usage_reset(llmr_usage_t *u);
static void llmr_usage_byte(llmr_usage_t *u, unsigned char c);
static void llmr_usage_key(llmr_usage_t *u);
static int llmr_usage_key_is(llmr_usage_t *u, const char *name);


void
llmr_usage_init(llmr_usage_t *u, int sse)
{
    memset(u, 0, sizeof(llmr_usage_t));

    u->sse = sse ? 1 : 0;
    u->prompt_tokens = -1;
    u->completion_tokens = -1;
}


static void
llmr_usage_reset(llmr_usage_t *u)
{
    u->in_string = 0;
    u->escape = 0;
    u->expect_key = 0;
    u->in_key = 0;
    u->in_content = 0;
    u->depth = 0;
    u->objects = 0;
    u->usage_depth = 0;
    u->field = LLMR_FIELD_NONE;
    u->number_field = LLMR_FIELD_NONE;
}


void
llmr_usage_feed(llmr_usage_t *u, const unsigned char *p, size_t len)
{
    const unsigned char  *end;

    end = p + len;

    if (!u->sse) {
        while (p < end) {
            llmr_usage_byte(u, *p++);
        }

        return;
    }

    while (p < end) {

        if (*p == '\n') {
            /* the end of a data line ends its number too */
            llmr_usage_byte(u, ' ');
            u->line = 0;
            p++;
            continue;
        }

        if (u->line == LLMR_SSE_DATA) {
            llmr_usage_byte(u, *p++);
            continue;
        }

        if (u->line == LLMR_SSE_SKIP) {
            p++;
            continue;
        }

        if (*p == (unsigned char) LLMR_SSE_PREFIX[u->line]) {
            if (++u->line == LLMR_SSE_DATA) {
                /* each data line is a document of its own */
                llmr_usage_reset(u);
            }

        } else {
            u->line = LLMR_SSE_SKIP;
        }

        p++;
    }
}


static void
llmr_usage_byte(llmr_usage_t *u, unsigned char c)
{
    unsigned  field;

    if (u->in_string) {

        if (u->escape) {
            u->escape = 0;

        } else if (c == '\\') {
            u->escape = 1;
            /* an escaped key is never one of ours */
            u->key_len = sizeof(u->key);
            return;

        } else if (c == '"') {
            u->in_string = 0;
            u->in_key = 0;
            u->in_content = 0;
            return;
        }

        u->content_bytes += u->in_content;

        if (u->in_key && u->key_len < sizeof(u->key)) {
            u->key[u->key_len++] = c;
        }

        return;
    }

    if (u->number_field) {
        if (c >= '0' && c <= '9') {
            u->number = u->number * 10 + (c - '0');

            if (u->number > LLMR_TOKENS_MAX) {
                u->number = LLMR_TOKENS_MAX;
            }

            return;
        }

        if (u->number_field == LLMR_FIELD_PROMPT) {
            u->prompt = u->number;

        } else {
            u->completion = u->number;
        }

        u->number_field = LLMR_FIELD_NONE;
    }

    if (c == ' ' || c == '\t' || c == '\r' || c == '\n') {
        return;
    }

    if (c == ':') {
        llmr_usage_key(u);
        return;
    }

    /* a value, or punctuation, follows what a key announced */

    field = u->field;
    u->field = LLMR_FIELD_NONE;

    if (c == '{' && field == LLMR_FIELD_USAGE) {
        u->usage_depth = u->depth + 1;
        u->prompt = -1;
        u->completion = -1;

    } else if (c >= '0' && c <= '9'
               && (field == LLMR_FIELD_PROMPT
                   || field == LLMR_FIELD_COMPLETION))
    {
        u->number_field = field;
        u->number = c - '0';
    }

    switch (c) {

    case '"':
        u->in_string = 1;
        u->in_content = (field == LLMR_FIELD_CONTENT);

        if (u->expect_key) {
            u->in_key = 1;
            u->expect_key = 0;
            u->key_len = 0;
        }

        break;

    case '{':
    case '[':
        u->depth++;

        if (u->depth < 64) {
            if (c == '{') {
                u->objects |= (uint64_t) 1 << u->depth;

            } else {
                u->objects &= ~((uint64_t) 1 << u->depth);
            }
        }

        u->expect_key = (c == '{');
        break;

    case '}':
    case ']':
        if (u->depth && u->depth == u->usage_depth) {
            if (u->prompt >= 0 && u->completion >= 0) {
                u->prompt_tokens = u->prompt;
                u->completion_tokens = u->completion;
            }

            u->usage_depth = 0;
        }

        if (u->depth) {
            u->depth--;
        }

        u->expect_key = 0;
        break;

    case ',':
        u->expect_key = u->depth < 64 && ((u->objects >> u->depth) & 1);
        break;
    }
}


static void
llmr_usage_key(llmr_usage_t *u)
{
    if (llmr_usage_key_is(u, "content")
        || llmr_usage_key_is(u, "arguments"))
    {
        u->field = LLMR_FIELD_CONTENT;

    } else if (u->depth == 1 && llmr_usage_key_is(u, "usage")) {
        u->field = LLMR_FIELD_USAGE;

    } else if (u->usage_depth && u->depth == u->usage_depth) {

        if (llmr_usage_key_is(u, "prompt_tokens")
            || llmr_usage_key_is(u, "input_tokens"))
        {
            u->field = LLMR_FIELD_PROMPT;

        } else if (llmr_usage_key_is(u, "completion_tokens")
                   || llmr_usage_key_is(u, "output_tokens"))
        {
            u->field = LLMR_FIELD_COMPLETION;
        }
    }

    /* the key is used up: "a":"b":"c" must not match twice */
    u->key_len = sizeof(u->key);
}


static int
llmr_usage_key_is(llmr_usage_t *u, const char *name)
{
    size_t  n;

    n = strlen(name);

    return u->key_len == n && memcmp(u->key, name, n) == 0;
}


/*
 * When a provider sends no usage, the completion is estimated from the
 * text of its "content" and tool call "arguments" strings, at four bytes
 * a token.
 */

uint64_t
llmr_usage_content_tokens(const llmr_usage_t *u)
{
    return (u->content_bytes + 3) / 4;
}
