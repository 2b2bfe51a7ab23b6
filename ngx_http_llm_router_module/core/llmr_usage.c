
/*
 * Copyright (C) the ngx_http_llm_router_module authors
 *
 * Token usage of a provider response, read as the bytes pass by: a JSON
 * body, or an SSE stream whose "data:" lines are JSON documents.  The
 * scanner keeps a few bytes of state, so a response is never buffered
 * and a usage object split over any number of buffers is still found.
 * It is not a validator: it only follows strings, nesting and keys.
 *
 * Every dialect's usage is found by the same keys: a "usage" object at
 * the top of a document (chat, a Messages "message_delta") or in its
 * "message" or "response" (a Messages "message_start", a Responses
 * "response.completed"), with the details of cached and reasoning
 * tokens.  A stream may report
 * a count more than once: the last one counts.
 */


#include <stddef.h>
#include <string.h>

#include "llmr.h"


#define LLMR_SSE_PREFIX      "data:"
#define LLMR_SSE_DATA        (sizeof(LLMR_SSE_PREFIX) - 1)
#define LLMR_SSE_SKIP        (LLMR_SSE_DATA + 1)

#define LLMR_TOKENS_MAX      1000000000

/* what a value is: a count, LLMR_USAGE_*, or one of these */

enum {
    LLMR_FIELD_NONE = LLMR_USAGE_FIELDS,
    LLMR_FIELD_USAGE,
    LLMR_FIELD_WRAPPER,
    LLMR_FIELD_PROMPT_DETAILS,
    LLMR_FIELD_COMPLETION_DETAILS,
    LLMR_FIELD_CONTENT
};


typedef struct {
    const char  *name;
    unsigned     field;
} llmr_usage_key_t;


static const llmr_usage_key_t  llmr_usage_keys[] = {
    { "prompt_tokens", LLMR_USAGE_PROMPT },
    { "input_tokens", LLMR_USAGE_PROMPT },
    { "completion_tokens", LLMR_USAGE_COMPLETION },
    { "output_tokens", LLMR_USAGE_COMPLETION },
    { "cache_read_input_tokens", LLMR_USAGE_CACHED },
    { "cache_creation_input_tokens", LLMR_USAGE_CACHE_WRITE },
    { "prompt_tokens_details", LLMR_FIELD_PROMPT_DETAILS },
    { "input_tokens_details", LLMR_FIELD_PROMPT_DETAILS },
    { "completion_tokens_details", LLMR_FIELD_COMPLETION_DETAILS },
    { "output_tokens_details", LLMR_FIELD_COMPLETION_DETAILS },
    { NULL, 0 }
};


static void llmr_usage_keep(llmr_usage_t *u, unsigned char c);
static void llmr_usage_reset(llmr_usage_t *u);
static void llmr_usage_byte(llmr_usage_t *u, unsigned char c);
static void llmr_usage_key(llmr_usage_t *u);
static int llmr_usage_key_is(llmr_usage_t *u, const char *name);
static const unsigned char *llmr_find(const unsigned char *p,
    const unsigned char *end, const char *s);
static const unsigned char *llmr_skip_space(const unsigned char *p,
    const unsigned char *end);
static const unsigned char *llmr_usage_member(const unsigned char *p,
    const unsigned char *end, const unsigned char **before);

#define llmr_json_space(c)                                                    \
    ((c) == ' ' || (c) == '\t' || (c) == '\r' || (c) == '\n')


void
llmr_usage_init(llmr_usage_t *u, const llmr_dialect_t *d, int sse)
{
    unsigned  i;

    memset(u, 0, sizeof(llmr_usage_t));

    u->dialect = d;
    u->sse = sse ? 1 : 0;
    u->field = LLMR_FIELD_NONE;
    u->number_field = LLMR_FIELD_NONE;

    for (i = 0; i < LLMR_USAGE_FIELDS; i++) {
        u->tokens[i] = -1;
    }
}


/*
 * All prompt tokens, cached ones included, whatever the dialect: an
 * Anthropic "input_tokens" counts neither the tokens read from its cache
 * nor those written to it; OpenAI's counts both.
 */

int
llmr_usage_tokens(const llmr_usage_t *u, llmr_tokens_t *t)
{
    uint64_t  v[LLMR_USAGE_FIELDS];
    unsigned  i;

    if (u->tokens[LLMR_USAGE_PROMPT] < 0
        || u->tokens[LLMR_USAGE_COMPLETION] < 0)
    {
        return 0;
    }

    for (i = 0; i < LLMR_USAGE_FIELDS; i++) {
        v[i] = (u->tokens[i] > 0) ? (uint64_t) u->tokens[i] : 0;
    }

    t->prompt = v[LLMR_USAGE_PROMPT];
    t->completion = v[LLMR_USAGE_COMPLETION];
    t->cached = v[LLMR_USAGE_CACHED];
    t->cache_write = v[LLMR_USAGE_CACHE_WRITE];
    t->reasoning = v[LLMR_USAGE_REASONING];

    /* parts of a count are never more than the count */

    if (t->reasoning > t->completion) {
        t->reasoning = t->completion;
    }

    if (u->dialect->cache_apart) {
        t->prompt += t->cached + t->cache_write;
        return 1;
    }

    if (t->cached > t->prompt) {
        t->cached = t->prompt;
    }

    if (t->cache_write > t->prompt - t->cached) {
        t->cache_write = t->prompt - t->cached;
    }

    return 1;
}


void
llmr_usage_keep_text(llmr_usage_t *u, unsigned char *buf, size_t size)
{
    u->text = buf;
    u->text_size = size;
    u->text_len = 0;
    u->text_whole = 0;
    u->text_hex = 0;
    u->text_full = 0;
}


size_t
llmr_usage_text(const llmr_usage_t *u)
{
    return u->text_whole;
}


/*
 * A byte of a string of the answer's text, its closing quote included.
 * Once a byte does not fit, nothing more is kept: the text is what came
 * before the last whole character or escape.
 */

static void
llmr_usage_keep(llmr_usage_t *u, unsigned char c)
{
    int  boundary;

    if (u->text_full) {
        return;
    }

    if (u->escape) {
        /* the letter of an escape: \uXXXX has four digits more */
        boundary = 0;
        u->text_hex = (c == 'u') ? 4 : 0;

    } else if (u->text_hex) {
        boundary = 0;
        u->text_hex--;

    } else if (c == '"') {
        u->text_whole = u->text_len;
        return;

    } else {
        /* not a UTF-8 continuation byte */
        boundary = ((c & 0xc0) != 0x80);
    }

    if (boundary) {
        u->text_whole = u->text_len;
    }

    if (u->text_len == u->text_size) {
        u->text_full = 1;
        return;
    }

    u->text[u->text_len++] = (c < 0x20) ? ' ' : c;
}


static void
llmr_usage_reset(llmr_usage_t *u)
{
    u->in_string = 0;
    u->escape = 0;

    /* the part of a string a line cut off is no text */
    u->text_len = u->text_whole;
    u->text_hex = 0;
    u->expect_key = 0;
    u->in_key = 0;
    u->in_content = 0;
    u->depth = 0;
    u->objects = 0;
    u->usage_depth = 0;
    u->details_depth = 0;
    u->wrapper = 0;
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

        if (u->in_content && u->text) {
            llmr_usage_keep(u, c);
        }

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

    if (u->number_field != LLMR_FIELD_NONE) {
        if (c >= '0' && c <= '9') {
            u->number = u->number * 10 + (c - '0');

            if (u->number > LLMR_TOKENS_MAX) {
                u->number = LLMR_TOKENS_MAX;
            }

            return;
        }

        u->tokens[u->number_field] = u->number;
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

    } else if (c == '{' && field == LLMR_FIELD_WRAPPER) {
        u->wrapper = 1;

    } else if (c == '{' && (field == LLMR_FIELD_PROMPT_DETAILS
                            || field == LLMR_FIELD_COMPLETION_DETAILS))
    {
        u->details_depth = u->depth + 1;
        u->details = field;

    } else if (c >= '0' && c <= '9' && field < LLMR_USAGE_FIELDS) {
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
        if (u->depth && u->depth == u->details_depth) {
            u->details_depth = 0;
        }

        if (u->depth && u->depth == u->usage_depth) {
            u->usage_depth = 0;
        }

        if (u->depth == 2) {
            u->wrapper = 0;
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
    const char *const       *name;
    const llmr_usage_key_t  *k;

    for (name = u->sse ? u->dialect->stream_text_keys
                       : u->dialect->text_keys;
         *name;
         name++)
    {
        if (llmr_usage_key_is(u, *name)) {
            u->field = LLMR_FIELD_CONTENT;
            goto done;
        }
    }

    if ((u->depth == 1 || (u->depth == 2 && u->wrapper))
        && !u->usage_depth && llmr_usage_key_is(u, "usage"))
    {
        u->field = LLMR_FIELD_USAGE;

    } else if (u->depth == 1 && (llmr_usage_key_is(u, "message")
                                 || llmr_usage_key_is(u, "response")))
    {
        u->field = LLMR_FIELD_WRAPPER;

    } else if (u->usage_depth && u->depth == u->usage_depth) {

        for (k = llmr_usage_keys; k->name; k++) {
            if (llmr_usage_key_is(u, k->name)) {
                u->field = k->field;
                break;
            }
        }

    } else if (u->details_depth && u->depth == u->details_depth) {

        if (u->details == LLMR_FIELD_PROMPT_DETAILS
            && llmr_usage_key_is(u, "cached_tokens"))
        {
            u->field = LLMR_USAGE_CACHED;

        } else if (u->details == LLMR_FIELD_COMPLETION_DETAILS
                   && llmr_usage_key_is(u, "reasoning_tokens"))
        {
            u->field = LLMR_USAGE_REASONING;
        }
    }

done:

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
 * text of the answer and of its tool calls, at four bytes a token.
 */

uint64_t
llmr_usage_content_tokens(const llmr_usage_t *u)
{
    return (u->content_bytes + 3) / 4;
}


static const unsigned char *
llmr_find(const unsigned char *p, const unsigned char *end, const char *s)
{
    size_t                n;
    const unsigned char  *q;

    n = strlen(s);

    for (q = p; end - q >= (ptrdiff_t) n; q++) {
        q = memchr(q, s[0], end - q);

        if (q == NULL || end - q < (ptrdiff_t) n) {
            return NULL;
        }

        if (memcmp(q, s, n) == 0) {
            return q;
        }
    }

    return NULL;
}


static const unsigned char *
llmr_skip_space(const unsigned char *p, const unsigned char *end)
{
    while (p < end && llmr_json_space(*p)) {
        p++;
    }

    return p;
}


/*
 * "usage": where a member starts, after '{' or ','; not in a string,
 * where a quote is escaped, nor in a key that ends so
 */

static const unsigned char *
llmr_usage_member(const unsigned char *p, const unsigned char *end,
    const unsigned char **before)
{
    const unsigned char  *q, *b;

    for (q = llmr_find(p, end, "\"usage\":");
         q;
         q = llmr_find(q + 1, end, "\"usage\":"))
    {
        for (b = q; b > p && llmr_json_space(b[-1]); b--) {
            /* void */
        }

        if (b > p && (b[-1] == '{' || b[-1] == ',')) {
            *before = b;
            return q;
        }
    }

    return NULL;
}


size_t
llmr_usage_unasked(const unsigned char *p, size_t len, int whole,
    unsigned char *out, int *drop)
{
    const unsigned char  *end, *q, *v, *from, *to, *b;
    unsigned char        *o;

    *drop = 0;
    end = p + len;

    if (whole && (len < 5 || memcmp(p, "data:", 5) != 0)) {
        memcpy(out, p, len);
        return len;
    }

    /* the chunk of usage alone: no choices, and a usage object */

    q = llmr_usage_member(p, end, &b);

    if (q && whole) {
        v = llmr_skip_space(q + 8, end);

        if (v < end && *v == '{'
            && (llmr_find(p, end, "\"choices\":[]")
                || llmr_find(p, end, "\"choices\": []")))
        {
            *drop = 1;
            return 0;
        }
    }

    o = out;

    for ( /* void */ ; q; q = llmr_usage_member(p, end, &b)) {
        v = llmr_skip_space(q + 8, end);

        if (end - v < 4 || memcmp(v, "null", 4) != 0) {
            /* a usage that is not null stays */
            memcpy(o, p, q + 8 - p);
            o += q + 8 - p;
            p = q + 8;
            continue;
        }

        /* the member and the comma before it, or the one after it */

        to = v + 4;

        if (b[-1] == ',') {
            from = b - 1;

        } else {
            from = q;
            to = llmr_skip_space(to, end);

            if (to < end && *to == ',') {
                to = llmr_skip_space(to + 1, end);
            }
        }

        memcpy(o, p, from - p);
        o += from - p;
        p = to;
    }

    memcpy(o, p, end - p);
    o += end - p;

    return o - out;
}
