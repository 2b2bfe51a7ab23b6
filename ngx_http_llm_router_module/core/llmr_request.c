
/*
 * Copyright (C) the ngx_http_llm_router_module authors
 *
 * One streaming pass over an OpenAI-style chat request: yajl callbacks
 * turn the body into routing features and remember where the "model"
 * value lies, so that the caller can splice a new one into its buffers.
 */


#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "llmr.h"


enum {
    LLMR_VALUE_NULL = 0,
    LLMR_VALUE_BOOL,
    LLMR_VALUE_NUMBER,
    LLMR_VALUE_STRING,
    LLMR_VALUE_MAP,
    LLMR_VALUE_ARRAY
};


static int llmr_null(void *ctx);
static int llmr_boolean(void *ctx, int value);
static int llmr_number(void *ctx, const char *p, size_t len);
static int llmr_string(void *ctx, const unsigned char *p, size_t len);
static int llmr_start_map(void *ctx);
static int llmr_map_key(void *ctx, const unsigned char *p, size_t len);
static int llmr_end_map(void *ctx);
static int llmr_start_array(void *ctx);
static int llmr_end_array(void *ctx);

static int llmr_value(llmr_request_t *rq, unsigned type);
static int llmr_open(llmr_request_t *rq, unsigned type);
static int llmr_fail(llmr_request_t *rq, const char *message);
static int llmr_parse(llmr_request_t *rq, const unsigned char *p,
    size_t len);
static size_t llmr_string_next(llmr_request_t *rq, const unsigned char *p,
    size_t len, size_t *end);
static size_t llmr_string_close(llmr_request_t *rq, const unsigned char *p,
    size_t len);
static int llmr_hold(llmr_request_t *rq, const unsigned char *p,
    size_t len);
static int llmr_keep(llmr_request_t *rq, const unsigned char *p,
    size_t len);
static size_t llmr_hold_cut(llmr_request_t *rq);
static int llmr_skip(llmr_request_t *rq, const unsigned char *p,
    size_t len);
static int llmr_held(llmr_request_t *rq);
static int llmr_hold_window(llmr_request_t *rq, const unsigned char *p,
    size_t len);
static int llmr_ring_keep(llmr_request_t *rq, const unsigned char *p,
    size_t len);
static unsigned char *llmr_ring_unroll(llmr_request_t *rq, size_t *len);
static void llmr_reverse(unsigned char *p, size_t len);
static int llmr_held_window(llmr_request_t *rq);
static int llmr_held_done(llmr_request_t *rq, int rc);
static int llmr_stand_in(llmr_request_t *rq, const unsigned char *p,
    size_t len);
static int llmr_stand_in_text(llmr_request_t *rq, const unsigned char *head,
    size_t head_len, const unsigned char *tail, size_t tail_len,
    size_t len);
static size_t llmr_tail_start(const unsigned char *p, size_t len,
    size_t from);
static int llmr_check_upto(llmr_request_t *rq, llmr_json_check_t *c,
    const unsigned char *p, size_t len, size_t *i, size_t upto);
static int llmr_string_error(llmr_request_t *rq, uint64_t offset, int rc);
static int llmr_token_cut(llmr_request_t *rq, const unsigned char *p,
    size_t len, int open);
static size_t llmr_string_prefix(const unsigned char *p, size_t n);
static void llmr_locate(llmr_request_t *rq, uint64_t *start);
static void llmr_locate_value(llmr_request_t *rq, size_t upto);
static void llmr_text(llmr_request_t *rq, llmr_text_e kind,
    const llmr_text_t *t);
static void llmr_type(llmr_request_t *rq, const unsigned char *p,
    size_t len);
static void llmr_tool(llmr_features_t *f, const unsigned char *p,
    size_t len);
static void llmr_tool_add(llmr_features_t *f, uint32_t hash);
static int llmr_is(const unsigned char *p, size_t len, const char *s);
static uint32_t llmr_text_window(llmr_request_t *rq, const llmr_text_t *t);
static uint32_t llmr_text_tokens(const llmr_text_t *t);
static uint32_t llmr_text_rest(const llmr_text_t *t, uint32_t tokens);
static void llmr_message_start(llmr_request_t *rq);
static const llmr_key_name_t *llmr_key_alias(const llmr_key_name_t *names,
    const unsigned char *p, size_t len);
static void llmr_message_done(llmr_request_t *rq);
static void llmr_message_add(llmr_message_t *sum, const llmr_message_t *m,
    unsigned code);
static int llmr_parse_error(llmr_request_t *rq, yajl_status status,
    uint64_t offset);
static unsigned llmr_role(const unsigned char *p, size_t len);
static void llmr_capture_text(llmr_capture_t *c, const unsigned char *p,
    size_t len);
static void llmr_capture_done(llmr_capture_t *c, uint32_t message,
    unsigned role, unsigned current);


static const yajl_callbacks  llmr_callbacks = {
    llmr_null,
    llmr_boolean,
    NULL,
    NULL,
    llmr_number,
    llmr_string,
    llmr_start_map,
    llmr_map_key,
    llmr_end_map,
    llmr_start_array,
    llmr_end_array
};


/* the keys that matter in nested objects, in every dialect */

static const llmr_key_name_t  llmr_nested_keys[] = {
    { "type", LLMR_KEY_TYPE },
    { "role", LLMR_KEY_ROLE },
    { "content", LLMR_KEY_CONTENT },
    { "text", LLMR_KEY_TEXT },
    { "name", LLMR_KEY_NAME },
    { "function", LLMR_KEY_FUNCTION },
    { "include_usage", LLMR_KEY_INCLUDE_USAGE },
    { "effort", LLMR_KEY_EFFORT },
    { "input", LLMR_KEY_INPUT },
    { "arguments", LLMR_KEY_ARGUMENTS },
    { "output", LLMR_KEY_OUTPUT },
    { "summary", LLMR_KEY_SUMMARY },
    { "thinking", LLMR_KEY_THINKING },
    { "format", LLMR_KEY_FORMAT },
    { NULL, 0 }
};

/* content parts that are not text */

static const char  *llmr_image_types[] = {
    "image_url", "file", "image", "document", "input_image", "input_file",
    NULL
};


#define LLMR_STREAM_OPTIONS  ",\"stream_options\":{\"include_usage\":true}"
#define LLMR_USAGE_OPTIONS   "{\"include_usage\":true}"
#define LLMR_INCLUDE_USAGE   "\"include_usage\":true"
#define LLMR_MODEL_KEY       "\"model\":"

#define llmr_offset(rq)                                                       \
    ((rq)->base + yajl_get_bytes_consumed((rq)->yajl) + (rq)->stand_in)

#define llmr_stands_in(rq, n)                                                 \
    ((rq)->scan_limit && (n) >= LLMR_STAND_IN_MIN)

/* keys and names, never that long, stay whole */
#define llmr_window(rq)                                                       \
    ((rq)->scan_limit > LLMR_HOLD_MIN ? (rq)->scan_limit : LLMR_HOLD_MIN)

/* the ring of a held string's tail: its last half window and a byte */
#define llmr_ring_size(rq)  (llmr_window(rq) / 2 + 1)

/*
 * A chat stream carries its usage only when asked to: it is always asked
 * upstream, for hidden reasoning tokens are billed too, and the response
 * filter takes it out of what a client that did not ask sees.
 */
#define llmr_ask_usage(f)                                                     \
    (llmr_dialects[(f)->api].stream_usage && (f)->stream                      \
     && !(f)->include_usage)


int
llmr_request_init(llmr_request_t *rq, const llmr_dialect_t *d,
    const llmr_keywords_t *kw, unsigned history)
{
    memset(rq, 0, sizeof(llmr_request_t));

    rq->dialect = d;
    rq->f.api = d->api;
    rq->keywords = kw;
    rq->history = history < LLMR_HISTORY_MAX ? history : LLMR_HISTORY_MAX;

    rq->f.max_tokens = -1;
    rq->f.score = -1;
    rq->f.object_start = LLMR_NO_OFFSET;
    rq->f.model_start = LLMR_NO_OFFSET;
    rq->f.model_end = LLMR_NO_OFFSET;
    rq->f.options_start = LLMR_NO_OFFSET;
    rq->f.options_end = LLMR_NO_OFFSET;
    rq->f.options_object = LLMR_NO_OFFSET;
    rq->f.usage_start = LLMR_NO_OFFSET;
    rq->f.usage_end = LLMR_NO_OFFSET;
    rq->hold_max = LLMR_HOLD_MAX;
    rq->scan_limit = LLMR_SCAN_LIMIT;

    if (rq->history) {
        rq->ring = malloc(rq->history * sizeof(llmr_message_t));
        if (rq->ring == NULL) {
            return LLMR_ERROR;
        }
    }

    rq->yajl = yajl_alloc(&llmr_callbacks, NULL, rq);
    if (rq->yajl == NULL) {
        free(rq->ring);
        rq->ring = NULL;
        return LLMR_ERROR;
    }

    return LLMR_OK;
}


void
llmr_request_free(llmr_request_t *rq)
{
    if (rq->yajl) {
        yajl_free(rq->yajl);
        rq->yajl = NULL;
    }

    free(rq->hold);
    rq->hold = NULL;
    rq->hold_len = 0;
    rq->hold_size = 0;

    free(rq->ring);
    rq->ring = NULL;

    free(rq->tail);
    rq->tail = NULL;
    rq->tail_size = 0;

    if (rq->scratch_own) {
        free(rq->scratch);
        rq->scratch = NULL;
        rq->scratch_own = 0;
    }
}


/*
 * yajl lexes a token that the end of a chunk cuts again from its first
 * byte with every later chunk: a message text of n bytes arriving in k
 * chunks would be lexed about k * n / 2 times.  So a string cut by the
 * end of a chunk is kept aside, from its opening quote, until its
 * closing quote has arrived, and yajl gets it whole: every byte is
 * lexed once.  The first token of a call to yajl is copied by its lexer:
 * the structural byte before the string is kept with it, so that the
 * string is not that token.  Only quotes and backslashes are looked for
 * here, with memchr().  A long string whole in a chunk, or held, is not
 * given to yajl at all (see llmr_stand_in()).
 */

int
llmr_request_feed(llmr_request_t *rq, const unsigned char *p, size_t len)
{
    size_t  n, m, end;

    if (len == 0) {
        return LLMR_OK;
    }

    if (rq->in_string) {
        n = llmr_string_close(rq, p, len);

        if (llmr_hold(rq, p, n) != LLMR_OK) {
            return LLMR_ERROR;
        }

        if (rq->in_string) {
            return LLMR_OK;
        }

        if (llmr_held(rq) != LLMR_OK) {
            return LLMR_ERROR;
        }

        p += n;
        len -= n;
    }

    for ( ;; ) {
        n = llmr_string_next(rq, p, len, &end);

        if (n == len || rq->in_string) {
            break;
        }

        if (llmr_token_cut(rq, p, n, 0) != LLMR_OK) {
            return LLMR_ERROR;
        }

        if (n && llmr_parse(rq, p, n) != LLMR_OK) {
            return LLMR_ERROR;
        }

        if (llmr_stand_in(rq, p + n + 1, end - n - 2) != LLMR_OK) {
            return LLMR_ERROR;
        }

        p += end;
        len -= end;
    }

    m = (n < len) ? llmr_string_prefix(p, n) : n;

    if (llmr_token_cut(rq, p, m, m == len) != LLMR_OK) {
        return LLMR_ERROR;
    }

    if (m && llmr_parse(rq, p, m) != LLMR_OK) {
        return LLMR_ERROR;
    }

    if (m < len) {
        rq->hold_prefix = n - m;

        if (llmr_hold(rq, p + m, len - m) != LLMR_OK) {
            return LLMR_ERROR;
        }
    }

    return LLMR_OK;
}


/*
 * Where a string at n is held from: its quote, or the structural byte
 * before it and the white space between, if the chunk has them.
 */

static size_t
llmr_string_prefix(const unsigned char *p, size_t n)
{
    size_t  i;

    for (i = n; i > 0; i--) {
        if (p[i - 1] != ' ' && p[i - 1] != '\t' && p[i - 1] != '\n'
            && p[i - 1] != '\r')
        {
            break;
        }
    }

    if (i > 0 && (p[i - 1] == ':' || p[i - 1] == ',' || p[i - 1] == '['
                  || p[i - 1] == '{'))
    {
        return i - 1;
    }

    return n;
}


static int
llmr_parse(llmr_request_t *rq, const unsigned char *p, size_t len)
{
    yajl_status  status;

    rq->chunk = p;
    rq->chunk_len = len;

    status = yajl_parse(rq->yajl, p, len);

    if (status != yajl_status_ok) {
        return llmr_parse_error(rq, status, llmr_offset(rq));
    }

    llmr_locate_value(rq, len);

    rq->base += len;
    rq->chunk = NULL;
    rq->chunk_len = 0;

    return LLMR_OK;
}


/*
 * Where the first long string of p starts, *end past its closing quote,
 * or where the string still open at the end of p starts, or len.
 */

static size_t
llmr_string_next(llmr_request_t *rq, const unsigned char *p, size_t len,
    size_t *end)
{
    size_t                i;
    const unsigned char  *q;

    for (i = 0; i < len; /* void */) {
        q = memchr(p + i, '"', len - i);
        if (q == NULL) {
            break;
        }

        i = q - p;

        rq->in_string = 1;
        rq->escaped = 0;

        i += 1 + llmr_string_close(rq, q + 1, len - i - 1);

        if (rq->in_string) {
            return q - p;
        }

        if (llmr_stands_in(rq, i - (q - p) - 2)) {
            *end = i;
            return q - p;
        }
    }

    return len;
}


/* the bytes of p up to the closing quote, or all of them */

static size_t
llmr_string_close(llmr_request_t *rq, const unsigned char *p, size_t len)
{
    size_t                i;
    const unsigned char  *q, *b, *end;

    i = 0;

    if (rq->escaped) {
        if (len == 0) {
            return 0;
        }

        rq->escaped = 0;
        i = 1;
    }

    q = memchr(p + i, '"', len - i);

    for ( ;; ) {
        end = q ? q : p + len;

        b = memchr(p + i, '\\', end - (p + i));
        if (b == NULL) {
            break;
        }

        /* the backslash and the byte it escapes */

        i = b - p + 2;

        if (i > len) {
            rq->escaped = 1;
            return len;
        }

        if (q && p + i > q) {
            /* that quote was escaped */
            q = memchr(p + i, '"', len - i);
        }
    }

    if (q == NULL) {
        return len;
    }

    rq->in_string = 0;

    return q - p + 1;
}


/*
 * The bytes of a string, from its opening quote, up to its closing quote
 * if it has come.  Past hold_max the head of the string is kept, cut
 * where a character starts and no escape is open, and the rest is
 * checked as yajl would check it and counted, but not kept: the memory
 * a request holds is bounded whatever its body.  With a window, only
 * what the window reads is kept (see llmr_hold_window()).
 */

static int
llmr_hold(llmr_request_t *rq, const unsigned char *p, size_t len)
{
    size_t  room, cut;

    if (rq->scan_limit) {
        return llmr_hold_window(rq, p, len);
    }

    /* the bytes before the string are not the string's */

    if (!rq->skipping
        && rq->hold_len + len <= rq->hold_prefix + rq->hold_max)
    {
        return llmr_keep(rq, p, len);
    }

    if (!rq->skipping) {
        room = rq->hold_prefix + rq->hold_max - rq->hold_len;

        if (llmr_keep(rq, p, room) != LLMR_OK) {
            return LLMR_ERROR;
        }

        p += room;
        len -= room;

        /* the kept bytes past the cut are skipped with the others */

        cut = llmr_hold_cut(rq);

        rq->skipping = 1;
        memset(&rq->skip, 0, sizeof(llmr_json_check_t));

        room = rq->hold_len - cut;
        rq->hold_len = cut;

        if (llmr_skip(rq, rq->hold + cut, room) != LLMR_OK) {
            return LLMR_ERROR;
        }
    }

    if (llmr_skip(rq, p, len) != LLMR_OK) {
        return LLMR_ERROR;
    }

    if (!rq->in_string) {
        /* the closing quote, checked by llmr_skip(), ends the kept head */
        return llmr_keep(rq, (const unsigned char *) "\"", 1);
    }

    return LLMR_OK;
}


static int
llmr_keep(llmr_request_t *rq, const unsigned char *p, size_t len)
{
    size_t          size, bound;
    unsigned char  *hold;

    if (rq->hold_len + len > rq->hold_size) {
        size = rq->hold_size ? rq->hold_size : 256;

        while (size < rq->hold_len + len) {
            size *= 2;
        }

        /*
         * no more than a hold ever takes: the bytes before, the head,
         * "\"", or with a window its head, and once the string is whole
         * the rest of a string no longer than the window
         */

        if (rq->scan_limit == 0) {
            bound = rq->hold_prefix + 1 + rq->hold_max;

        } else if (rq->skipping) {
            bound = rq->hold_prefix + 1 + llmr_window(rq);

        } else {
            bound = rq->hold_prefix + 2 + llmr_window(rq) / 2 + 8;
        }

        if (size > bound) {
            size = (rq->hold_len + len > bound) ? rq->hold_len + len : bound;
        }

        hold = realloc(rq->hold, size);
        if (hold == NULL) {
            llmr_fail(rq, "out of memory");
            return LLMR_ERROR;
        }

        rq->hold = hold;
        rq->hold_size = size;
    }

    memcpy(rq->hold + rq->hold_len, p, len);
    rq->hold_len += len;

    return LLMR_OK;
}


/*
 * A string cut by the end of a chunk, with a window: its head is kept,
 * as llmr_stand_in() cuts it (half the window, and on to where a
 * character starts), and the rest is checked and counted as it passes,
 * its last half window and a byte in a ring for the tail.  A request
 * thus holds a window's worth of a string whatever its length, and the
 * string reads as it would whole in one chunk.
 */

static int
llmr_hold_window(llmr_request_t *rq, const unsigned char *p, size_t len)
{
    int     rc;
    size_t  n, used, half, head;

    /* the bytes before the string, and its opening quote */

    if (rq->hold_len <= rq->hold_prefix) {
        n = rq->hold_prefix + 1 - rq->hold_len;

        if (llmr_keep(rq, p, n) != LLMR_OK) {
            return LLMR_ERROR;
        }

        p += n;
        len -= n;

        memset(&rq->skip, 0, sizeof(llmr_json_check_t));
        rq->tail_next = 0;
    }

    half = llmr_window(rq) / 2;

    while (len && !rq->skipping) {
        head = rq->hold_len - rq->hold_prefix - 1;

        if (head < half) {
            n = (len < half - head) ? len : half - head;

        } else if (!llmr_json_between(&rq->skip)) {
            n = 1;

        } else {
            rq->skipping = 1;
            break;
        }

        rc = llmr_json_check(&rq->skip, p, n, &used);

        if (rc != LLMR_OK) {
            return llmr_string_error(rq, rq->base + rq->hold_len + used, rc);
        }

        if (used < n) {
            /* the closing quote: the string is whole in the hold */
            return llmr_keep(rq, p, used + 1);
        }

        if (llmr_keep(rq, p, n) != LLMR_OK) {
            return LLMR_ERROR;
        }

        p += n;
        len -= n;
    }

    if (len == 0) {
        return LLMR_OK;
    }

    rc = llmr_json_check(&rq->skip, p, len, &used);

    if (rc != LLMR_OK) {
        return llmr_string_error(rq, rq->base + rq->hold_len + rq->skipped
                                     + used, rc);
    }

    rq->skipped += used;

    return llmr_ring_keep(rq, p, used);
}


/* the last bytes of a string in a ring of half a window and a byte */

static int
llmr_ring_keep(llmr_request_t *rq, const unsigned char *p, size_t len)
{
    size_t  size, n;

    size = llmr_ring_size(rq);

    if (rq->tail_size < size) {
        free(rq->tail);

        rq->tail = malloc(size);
        if (rq->tail == NULL) {
            rq->tail_size = 0;
            llmr_fail(rq, "out of memory");
            return LLMR_ERROR;
        }

        rq->tail_size = size;
    }

    if (len > size) {
        p += len - size;
        len = size;
    }

    while (len) {
        n = size - rq->tail_next;
        n = (len < n) ? len : n;

        memcpy(rq->tail + rq->tail_next, p, n);
        rq->tail_next = (rq->tail_next + n) % size;

        p += n;
        len -= n;
    }

    return LLMR_OK;
}


/* the ring's bytes, oldest first, rotated in place: three reversals */

static unsigned char *
llmr_ring_unroll(llmr_request_t *rq, size_t *len)
{
    size_t  size;

    size = llmr_ring_size(rq);

    if (rq->skipped < size) {
        *len = (size_t) rq->skipped;
        return rq->tail;
    }

    *len = size;

    llmr_reverse(rq->tail, rq->tail_next);
    llmr_reverse(rq->tail + rq->tail_next, size - rq->tail_next);
    llmr_reverse(rq->tail, size);

    return rq->tail;
}


static void
llmr_reverse(unsigned char *p, size_t len)
{
    unsigned char   c, *q;

    for (q = p + len; p + 1 < q; p++, q--) {
        c = *p;
        *p = q[-1];
        q[-1] = c;
    }
}


/* the last place in the held head where a character starts, not escaped */

static size_t
llmr_hold_cut(llmr_request_t *rq)
{
    size_t          i, cut;
    unsigned        hex;
    unsigned char   c;

    cut = rq->hold_prefix + 1;
    hex = 0;

    for (i = cut; i < rq->hold_len; i++) {
        c = rq->hold[i];

        if (hex) {
            hex = (hex == 6) ? ((c == 'u') ? 4 : 0) : hex - 1;
            continue;
        }

        if (c == '\\') {
            cut = i;
            hex = 6;            /* the byte escaped, and \uXXXX's digits */
            continue;
        }

        if (!(llmr_ctype[c] & LLMR_CT_CONT)) {
            cut = i;
        }
    }

    return cut;
}


/*
 * Bytes of a string that are not kept: what yajl would refuse in them is
 * refused, and they are counted for the token estimate.  The closing
 * quote, if there, is the last byte.
 */

static int
llmr_skip(llmr_request_t *rq, const unsigned char *p, size_t len)
{
    int     rc;
    size_t  n;

    rc = llmr_json_check(&rq->skip, p, len, &n);
    rq->skipped += n;

    if (rc != LLMR_OK) {
        return llmr_string_error(rq, rq->base + rq->hold_len + rq->skipped,
                                 rc);
    }

    return LLMR_OK;
}


static int
llmr_string_error(llmr_request_t *rq, uint64_t offset, int rc)
{
    if (rc == LLMR_JSON_UTF8) {
        snprintf(rq->error, LLMR_ERROR_MAX,
                 "request body is not valid UTF-8 (at byte %llu)",
                 (unsigned long long) offset);

    } else {
        snprintf(rq->error, LLMR_ERROR_MAX,
                 "request body is not valid JSON (at byte %llu): invalid "
                 "character in string", (unsigned long long) offset);
    }

    return LLMR_ERROR;
}


/*
 * yajl keeps a token that the end of a chunk cuts until it ends: a
 * number or a literal, unlike a string, has no reason to be long, and
 * one that runs on across chunks past LLMR_TOKEN_MAX is refused.
 */

#define llmr_token_byte(c)                                                    \
    ((c) > 0x20 && (c) != '{' && (c) != '}' && (c) != '[' && (c) != ']'       \
     && (c) != ',' && (c) != ':' && (c) != '"')

static int
llmr_token_cut(llmr_request_t *rq, const unsigned char *p, size_t len,
    int open)
{
    size_t  i;

    if (rq->token_len) {
        for (i = 0; i < len && llmr_token_byte(p[i]); i++) {
            /* void */
        }

        rq->token_len += i;

        if (i < len) {
            rq->token_len = 0;
        }
    }

    if (open && rq->token_len == 0) {
        for (i = len; i > 0 && llmr_token_byte(p[i - 1]); i--) {
            /* void */
        }

        rq->token_len = len - i;
    }

    if (rq->token_len > LLMR_TOKEN_MAX) {
        snprintf(rq->error, LLMR_ERROR_MAX,
                 "request body is not valid JSON (at byte %llu): a number "
                 "or literal longer than %d bytes",
                 (unsigned long long) rq->base, LLMR_TOKEN_MAX);
        return LLMR_ERROR;
    }

    return LLMR_OK;
}


/* a string held whole, or its head, to yajl; the offsets go on past it */

static int
llmr_held(llmr_request_t *rq)
{
    int     rc;
    size_t  body;

    if (!llmr_json_between(&rq->skip)) {
        /* an escape or a character the closing quote cuts */
        return llmr_string_error(rq, rq->base + rq->hold_len + rq->skipped,
                                 rq->skip.utf8 ? LLMR_JSON_UTF8
                                               : LLMR_JSON_INVALID);
    }

    if (rq->scan_limit && rq->skipping) {
        return llmr_held_done(rq, llmr_held_window(rq));
    }

    /* the string between its quotes */
    body = rq->hold_len - rq->hold_prefix - 2;

    if (llmr_stands_in(rq, body)) {

        if (rq->hold_prefix
            && llmr_parse(rq, rq->hold, rq->hold_prefix) != LLMR_OK)
        {
            return LLMR_ERROR;
        }

        /*
         * llmr_hold_window() has checked it, and it ended in the head,
         * shorter than the window: it stands in whole
         */

        rc = llmr_stand_in_text(rq, rq->hold + rq->hold_prefix + 1, body,
                                NULL, 0, body);

        return llmr_held_done(rq, rc);
    }

    if (llmr_parse(rq, rq->hold, rq->hold_len) != LLMR_OK) {
        return LLMR_ERROR;
    }

    rq->base += rq->skipped;

    return llmr_held_done(rq, LLMR_OK);
}


/* the hold is empty again, for the next string */

static int
llmr_held_done(llmr_request_t *rq, int rc)
{
    rq->skipped = 0;
    rq->skipping = 0;
    rq->hold_len = 0;
    rq->hold_prefix = 0;

    return rc;
}


/*
 * A string held with a window (see llmr_hold_window()): the head held
 * and the ring's tail stand in for it as its bytes would whole.
 */

static int
llmr_held_window(llmr_request_t *rq)
{
    int                   rc;
    size_t                head, half, from, tail, n;
    uint64_t              len;
    const unsigned char  *ring;

    head = rq->hold_len - rq->hold_prefix - 1;
    len = head + rq->skipped;
    ring = llmr_ring_unroll(rq, &n);

    if (rq->hold_prefix
        && llmr_parse(rq, rq->hold, rq->hold_prefix) != LLMR_OK)
    {
        return LLMR_ERROR;
    }

    if (len <= llmr_window(rq)) {
        /* the ring has all the rest, checked as it came: the string whole */

        rc = llmr_keep(rq, ring, n);

        if (rc == LLMR_OK) {
            rc = llmr_stand_in_text(rq, rq->hold + rq->hold_prefix + 1, len,
                                    NULL, 0, len);
        }

    } else {
        /* the ring has the string's last n bytes */

        half = llmr_window(rq) / 2;
        from = (len - half > head + 1) ? len - half : head + 1;
        tail = llmr_tail_start(ring, n, from - (len - n));

        rc = llmr_stand_in_text(rq, rq->hold + rq->hold_prefix + 1, head,
                                ring + tail, n - tail, len);
    }

    return rc;
}


/*
 * yajl lexes a string a byte at a time, and decodes all of it into a
 * buffer of its own, grown by doubling, when it has escapes.  A long
 * string whole in a chunk (p, between its quotes) is checked here
 * instead, eight bytes at a time (a held one is checked as it comes, by
 * llmr_hold_window()), and only the part of it that is read
 * decoded: all of it up to scan_limit bytes (and at least
 * LLMR_HOLD_MIN), or its first and last halves.  yajl gets "" in its
 * place, and its callbacks read rq->text.  The offsets count the bytes
 * of the string.
 */

static int
llmr_stand_in(llmr_request_t *rq, const unsigned char *p, size_t len)
{
    size_t             i, window, half, head, from, tail;
    llmr_json_check_t  check;

    window = llmr_window(rq);
    half = window / 2;

    memset(&check, 0, sizeof(llmr_json_check_t));
    i = 0;

    /* the head ends where a character starts */

    if (llmr_check_upto(rq, &check, p, len, &i, len <= window ? len : half)
        != LLMR_OK)
    {
        return LLMR_ERROR;
    }

    head = i;

    if (llmr_check_upto(rq, &check, p, len, &i, len) != LLMR_OK) {
        return LLMR_ERROR;
    }

    if (!llmr_json_between(&check)) {
        return llmr_string_error(rq, rq->base + 1 + len,
                                 check.utf8 ? LLMR_JSON_UTF8
                                            : LLMR_JSON_INVALID);
    }

    if (len <= window) {
        return llmr_stand_in_text(rq, p, len, NULL, 0, len);
    }

    from = (len - half > head + 1) ? len - half : head + 1;
    tail = llmr_tail_start(p, len, from);

    return llmr_stand_in_text(rq, p, head, p + tail, len - tail, len);
}


/*
 * Where the tail of a long string starts: the first place from "from"
 * that is sure to start a character whatever comes before it, a UTF-8
 * lead byte, or after an ASCII byte that ends one (a backslash, a 'u'
 * and a hex digit may be an escape's), so that a tail held in a ring
 * starts where the same string whole in a chunk does; none is len.
 */

static size_t
llmr_tail_start(const unsigned char *p, size_t len, size_t from)
{
    size_t         i;
    unsigned char  c;

    for (i = from; i < len; i++) {
        c = p[i - 1];

        if (p[i] >= 0xc0
            || (c < 0x80 && c != '\\' && c != 'u'
                && !((c >= '0' && c <= '9')
                     || ((c | 0x20) >= 'a' && (c | 0x20) <= 'f'))))
        {
            return i;
        }
    }

    return len;
}


/*
 * The decoded head and tail (or the whole string, without a tail) into
 * the scratch buffer, and "" to yajl for the string of len bytes.
 */

static int
llmr_stand_in_text(llmr_request_t *rq, const unsigned char *head,
    size_t head_len, const unsigned char *tail, size_t tail_len, size_t len)
{
    int             rc;
    size_t          size;
    unsigned char  *end;

    static const unsigned char  empty[] = "\"\"";

    size = LLMR_SCRATCH_SIZE(llmr_window(rq));

    if (rq->scratch == NULL || rq->scratch_size < size) {
        if (rq->scratch_own) {
            free(rq->scratch);
        }

        rq->scratch = malloc(size);
        if (rq->scratch == NULL) {
            rq->scratch_size = 0;
            rq->scratch_own = 0;
            llmr_fail(rq, "out of memory");
            return LLMR_ERROR;
        }

        rq->scratch_size = size;
        rq->scratch_own = 1;
    }

    end = llmr_json_unescape(rq->scratch, head, head_len);

    rq->text.head = rq->scratch;
    rq->text.head_len = end - rq->scratch;
    rq->text.tail = NULL;
    rq->text.tail_len = 0;

    if (tail) {
        rq->text.tail = end;
        rq->text.tail_len = llmr_json_unescape(end, tail, tail_len) - end;
    }

    rq->text.read = head_len + tail_len;
    rq->text.rest = len - head_len - tail_len;
    rq->stand_in = len;

    rc = llmr_parse(rq, empty, 2);

    rq->base += rq->stand_in;
    rq->stand_in = 0;
    rq->text.head = NULL;

    return rc;
}


/*
 * Checks p from *i up to upto, and on to where a character starts; the
 * body has no closing quote, so the check stops only at an error.
 */

static int
llmr_check_upto(llmr_request_t *rq, llmr_json_check_t *c,
    const unsigned char *p, size_t len, size_t *i, size_t upto)
{
    int     rc;
    size_t  n;

    rc = llmr_json_check(c, p + *i, upto - *i, &n);
    *i += n;

    while (rc == LLMR_OK && *i < len && !llmr_json_between(c)) {
        rc = llmr_json_check(c, p + *i, 1, &n);
        *i += n;
    }

    if (rc != LLMR_OK) {
        return llmr_string_error(rq, rq->base + 1 + *i, rc);
    }

    return LLMR_OK;
}


int
llmr_request_finish(llmr_request_t *rq)
{
    yajl_status  status;

    if (rq->in_string) {
        /* a string without its end: yajl says what is wrong */

        if (llmr_parse(rq, rq->hold, rq->hold_len) != LLMR_OK) {
            return LLMR_ERROR;
        }

        rq->base += rq->skipped;
        rq->hold_len = 0;
        rq->hold_prefix = 0;
        rq->in_string = 0;
    }

    rq->f.body_len = rq->base;

    if (rq->base == 0) {
        llmr_fail(rq, "request body is empty");
        return LLMR_ERROR;
    }

    status = yajl_complete_parse(rq->yajl);

    if (status != yajl_status_ok) {
        return llmr_parse_error(rq, status, rq->base);
    }

    /* a Responses request may go on from a stored one, and add nothing */

    if (!rq->seen_messages && !rq->f.previous) {
        snprintf(rq->error, LLMR_ERROR_MAX,
                 "missing required parameter: '%s'", rq->dialect->input);
        return LLMR_ERROR;
    }

    if (rq->f.messages == 0 && !rq->f.previous) {
        snprintf(rq->error, LLMR_ERROR_MAX,
                 "'%s' must be a non-empty array", rq->dialect->input);
        return LLMR_ERROR;
    }

    llmr_score(rq);

    return LLMR_OK;
}


static int
llmr_parse_error(llmr_request_t *rq, yajl_status status, uint64_t offset)
{
    size_t          n;
    unsigned char  *text;

    if (status == yajl_status_client_canceled) {
        /* a callback has set the error */
        return LLMR_ERROR;
    }

    text = yajl_get_error(rq->yajl, 0, NULL, 0);

    if (text && strstr((char *) text, "UTF8")) {
        snprintf(rq->error, LLMR_ERROR_MAX,
                 "request body is not valid UTF-8 (at byte %llu)",
                 (unsigned long long) offset);

    } else {
        n = text ? strcspn((char *) text, "\n") : 0;

        snprintf(rq->error, LLMR_ERROR_MAX,
                 "request body is not valid JSON (at byte %llu): %.*s",
                 (unsigned long long) offset, (int) n,
                 text ? (char *) text : "");
    }

    if (text) {
        yajl_free_error(rq->yajl, text);
    }

    return LLMR_ERROR;
}


/* returns zero, which in a callback cancels the parse */

static int
llmr_fail(llmr_request_t *rq, const char *message)
{
    snprintf(rq->error, LLMR_ERROR_MAX, "%s", message);

    return 0;
}


/*
 * yajl tells where a token ends but not where it starts: a value the
 * rewrite replaces ("model", and a chat stream's options) starts at the
 * first byte after its key that is neither white space, as yajl has it
 * ('\v' and '\f' too), nor the colon.  Those bytes are scanned as they
 * pass, so nothing is buffered for it.
 */

static void
llmr_locate(llmr_request_t *rq, uint64_t *start)
{
    rq->key_end = llmr_offset(rq);
    rq->value_start = start;
}


static void
llmr_locate_value(llmr_request_t *rq, size_t upto)
{
    size_t                i;
    const unsigned char  *p;

    if (rq->value_start == NULL || rq->chunk == NULL) {
        return;
    }

    i = (rq->key_end > rq->base) ? (size_t) (rq->key_end - rq->base) : 0;
    p = rq->chunk;

    for ( /* void */ ; i < upto; i++) {
        if (p[i] != ' ' && p[i] != '\t' && p[i] != '\r' && p[i] != '\n'
            && p[i] != '\v' && p[i] != '\f' && p[i] != ':')
        {
            *rq->value_start = rq->base + i;
            rq->value_start = NULL;
            return;
        }
    }
}


/*
 * Every value passes here first: it checks the types the router relies
 * on and records where the "model" value ends.
 */

static int
llmr_value(llmr_request_t *rq, unsigned type)
{
    switch (rq->depth) {

    case 0:
        if (type != LLMR_VALUE_MAP) {
            return llmr_fail(rq, "request body must be a JSON object");
        }

        return 1;

    case 1:
        switch (rq->key[1]) {

        case LLMR_KEY_MODEL:
            if (type != LLMR_VALUE_STRING && type != LLMR_VALUE_NULL) {
                return llmr_fail(rq, "invalid type for 'model': "
                                     "expected a string");
            }

            rq->f.model_present = 1;
            llmr_locate_value(rq, yajl_get_bytes_consumed(rq->yajl));
            rq->f.model_end = llmr_offset(rq);
            return 1;

        case LLMR_KEY_MESSAGES:
            if (type != LLMR_VALUE_ARRAY
                && !(type == LLMR_VALUE_STRING && rq->dialect->input_string))
            {
                snprintf(rq->error, LLMR_ERROR_MAX,
                         "invalid type for '%s': expected an array of "
                         "objects", rq->dialect->input);
                return 0;
            }

            rq->seen_messages = 1;
            return 1;

        case LLMR_KEY_STREAM:
            if (type != LLMR_VALUE_BOOL && type != LLMR_VALUE_NULL) {
                return llmr_fail(rq, "invalid type for 'stream': "
                                     "expected a boolean");
            }

            return 1;

        case LLMR_KEY_STREAM_OPTIONS:
            if (type != LLMR_VALUE_MAP && type != LLMR_VALUE_NULL) {
                return llmr_fail(rq, "invalid type for 'stream_options': "
                                     "expected an object");
            }

            if (type == LLMR_VALUE_NULL) {
                /* the rewrite may replace it with options of its own */
                llmr_locate_value(rq, yajl_get_bytes_consumed(rq->yajl));
                rq->f.options_end = llmr_offset(rq);
            }

            return 1;
        }

        return 1;

    case 2:
        switch (rq->key[1]) {

        case LLMR_KEY_MESSAGES:
            if (type != LLMR_VALUE_MAP) {
                snprintf(rq->error, LLMR_ERROR_MAX,
                         "invalid type for '%s': expected an array of "
                         "objects", rq->dialect->input);
                return 0;
            }

            return 1;

        case LLMR_KEY_TOOLS:
            rq->f.tools = 1;
            return 1;

        case LLMR_KEY_STREAM_OPTIONS:
            if (rq->key[2] != LLMR_KEY_INCLUDE_USAGE) {
                return 1;
            }

            if (type != LLMR_VALUE_BOOL && type != LLMR_VALUE_NULL) {
                return llmr_fail(rq, "invalid type for "
                                     "'stream_options.include_usage': "
                                     "expected a boolean");
            }

            llmr_locate_value(rq, yajl_get_bytes_consumed(rq->yajl));
            rq->f.usage_end = llmr_offset(rq);

            return 1;
        }

        return 1;
    }

    return 1;
}


static int
llmr_null(void *ctx)
{
    return llmr_value(ctx, LLMR_VALUE_NULL);
}


static int
llmr_boolean(void *ctx, int value)
{
    llmr_request_t  *rq = ctx;

    if (!llmr_value(rq, LLMR_VALUE_BOOL)) {
        return 0;
    }

    if (rq->depth == 1 && rq->key[1] == LLMR_KEY_STREAM) {
        rq->f.stream = value ? 1 : 0;

    } else if (rq->depth == 2 && rq->key[1] == LLMR_KEY_STREAM_OPTIONS
               && rq->key[2] == LLMR_KEY_INCLUDE_USAGE)
    {
        rq->f.include_usage = value ? 1 : 0;
    }

    return 1;
}


static int
llmr_number(void *ctx, const char *p, size_t len)
{
    size_t           i;
    int64_t          n;
    llmr_request_t  *rq = ctx;

    if (!llmr_value(rq, LLMR_VALUE_NUMBER)) {
        return 0;
    }

    if (rq->depth != 1 || rq->key[1] != LLMR_KEY_MAX_TOKENS || len > 18) {
        return 1;
    }

    n = 0;

    for (i = 0; i < len; i++) {
        if (p[i] < '0' || p[i] > '9') {
            /* negative or fractional: not a usable limit */
            return 1;
        }

        n = n * 10 + (p[i] - '0');
    }

    rq->f.max_tokens = n;

    return 1;
}


static int
llmr_string(void *ctx, const unsigned char *p, size_t len)
{
    llmr_text_t      t;
    llmr_text_e      kind;
    llmr_request_t  *rq = ctx;

    if (!llmr_value(rq, LLMR_VALUE_STRING)) {
        return 0;
    }

    if (rq->text.head) {
        t = rq->text;

    } else {
        t.head = p;
        t.head_len = len;
        t.tail = NULL;
        t.tail_len = 0;
        t.read = rq->hold_len - rq->hold_prefix;
        t.rest = rq->skipped;
    }

    if (rq->depth == 1 && rq->key[1] == LLMR_KEY_MODEL) {
        if (t.rest || t.tail) {
            /* no model has such a name */
            return llmr_fail(rq, "invalid 'model': the string is too long");
        }

        rq->f.model_truncated = (t.head_len > LLMR_MODEL_NAME_MAX);
        rq->f.model_len = rq->f.model_truncated ? LLMR_MODEL_NAME_MAX
                                                : t.head_len;
        memcpy(rq->f.model, t.head, rq->f.model_len);
        return 1;
    }

    if (rq->depth == 1 && rq->key[1] == LLMR_KEY_PREVIOUS) {
        rq->f.previous = (t.head_len != 0);
        return 1;
    }

    kind = rq->dialect->text(rq);

    if (kind == LLMR_TEXT_NONE) {
        return 1;
    }

    if (rq->depth == 1 && rq->key[1] == LLMR_KEY_MESSAGES) {
        /* "input" as a string is a user message of its own */

        rq->f.messages++;
        llmr_message_start(rq);
        rq->msg_role = LLMR_ROLE_USER;
        rq->msg.tokens = llmr_estimate_tokens((const unsigned char *) "user",
                                              4);
        llmr_text(rq, kind, &t);
        llmr_message_done(rq);

        return 1;
    }

    llmr_text(rq, kind, &t);

    return 1;
}


static void
llmr_text(llmr_request_t *rq, llmr_text_e kind, const llmr_text_t *t)
{
    size_t                len;
    const unsigned char  *p;

    p = t->head;
    len = t->head_len;

    switch (kind) {

    case LLMR_TEXT_MESSAGE:
        break;

    case LLMR_TEXT_ROLE:
        rq->msg_role = llmr_role(p, len);
        rq->msg.tokens += llmr_text_tokens(t);
        return;

    case LLMR_TEXT_TOKENS:
        rq->msg.tokens += llmr_text_tokens(t);
        return;

    case LLMR_TEXT_TOOL:
        llmr_tool(&rq->f, p, len);
        rq->f.prompt_tokens += llmr_text_tokens(t);
        return;

    case LLMR_TEXT_PROMPT:
        /* the system prompt, instructions and tool definitions */
        rq->f.prompt_tokens += llmr_text_tokens(t);
        return;

    case LLMR_TEXT_TYPE:
        llmr_type(rq, p, len);
        return;

    case LLMR_TEXT_EFFORT:
        rq->f.thinking = !llmr_is(p, len, "none")
                         && !llmr_is(p, len, "minimal");
        return;

    case LLMR_TEXT_THINKING:
        rq->f.thinking = llmr_is(p, len, "enabled")
                         || llmr_is(p, len, "adaptive");
        return;

    case LLMR_TEXT_FORMAT:
        /* "json_object" or "json_schema": the answer must be JSON */
        rq->f.json_mode = llmr_is(p, len, "json_object")
                          || llmr_is(p, len, "json_schema");
        return;

    default: /* LLMR_TEXT_NONE */
        return;
    }

    rq->msg.tokens += llmr_text_window(rq, t);

    if (rq->capture) {
        llmr_capture_text(rq->capture, p, len);

        if (t->tail) {
            llmr_capture_text(rq->capture, t->tail, t->tail_len);
        }
    }
}


/* the tokens of a text only counted: the bytes not read, four a token */

static uint32_t
llmr_text_tokens(const llmr_text_t *t)
{
    uint32_t  tokens;

    tokens = llmr_estimate_tokens(t->head, t->head_len);

    if (t->tail) {
        tokens += llmr_estimate_tokens(t->tail, t->tail_len);
    }

    return tokens + (uint32_t) ((t->rest + 3) / 4);
}


/*
 * What a text says is read in a window: all of it up to scan_limit
 * bytes, or its first and last halves; a long pasted document does not
 * change what code or a keyword means for routing.  The features and
 * the keyword lists come in the pass of the tokens.  The tokens of the
 * rest are counted at the rate of the window's.  A long string comes
 * with its halves (see llmr_stand_in()), cut from the bytes as the
 * client sent them (escaped), and the rest is counted at the rate of
 * those bytes; so are the bytes of a string too long to be kept.
 */

static uint32_t
llmr_text_window(llmr_request_t *rq, const llmr_text_t *t)
{
    size_t                window, half, len;
    uint64_t              rest;
    uint32_t              tokens;
    llmr_request_t       *features;
    const unsigned char  *p;

    features = (rq->classifier || rq->feature) ? rq : NULL;

    p = t->head;
    len = t->head_len;

    if (t->tail) {
        tokens = llmr_text_scan(features, rq->keywords, &rq->msg_keywords,
                                p, len)
                 + llmr_text_scan(features, rq->keywords, &rq->msg_keywords,
                                  t->tail, t->tail_len);

        if (!rq->msg.code) {
            rq->msg.code = llmr_looks_like_code(p, len)
                           || llmr_looks_like_code(t->tail, t->tail_len);
        }

    } else if (rq->scan_limit == 0 || len <= rq->scan_limit) {
        tokens = llmr_text_scan(features, rq->keywords, &rq->msg_keywords,
                                p, len);

        if (!rq->msg.code) {
            rq->msg.code = llmr_looks_like_code(p, len);
        }

    } else {
        /* a window of a few bytes, shorter than any long string */

        half = rq->scan_limit / 2;
        window = 2 * half;

        tokens = llmr_text_scan(features, rq->keywords, &rq->msg_keywords,
                                p, half)
                 + llmr_text_scan(features, rq->keywords, &rq->msg_keywords,
                                  p + len - half, half);

        if (!rq->msg.code) {
            rq->msg.code = llmr_looks_like_code(p, half)
                           || llmr_looks_like_code(p + len - half, half);
        }

        rest = len - window;
        tokens += (uint32_t) ((rest * tokens + window / 2) / window);
    }

    return tokens + llmr_text_rest(t, tokens);
}


/* the tokens of the bytes not read, at the rate of those read */

static uint32_t
llmr_text_rest(const llmr_text_t *t, uint32_t tokens)
{
    if (t->rest == 0) {
        return 0;
    }

    if (t->read == 0 || tokens == 0) {
        return (uint32_t) ((t->rest + 3) / 4);
    }

    return (uint32_t) ((t->rest * tokens + t->read / 2) / t->read);
}


/*
 * The type of a content part tells an image or a document; that of an
 * item of a Responses "input" tells who speaks when no role is given:
 * calls come from the assistant, their output from tools.
 */

static void
llmr_type(llmr_request_t *rq, const unsigned char *p, size_t len)
{
    const char  **t;

    for (t = llmr_image_types; *t; t++) {
        if (llmr_is(p, len, *t)) {
            rq->f.images = 1;
            return;
        }
    }

    if (rq->depth != 3 || rq->msg_role != LLMR_ROLE_OTHER) {
        return;
    }

    if (len > 7 && memcmp(p + len - 7, "_output", 7) == 0) {
        rq->msg_role = LLMR_ROLE_TOOL;

    } else if ((len > 5 && memcmp(p + len - 5, "_call", 5) == 0)
               || llmr_is(p, len, "reasoning"))
    {
        rq->msg_role = LLMR_ROLE_ASSISTANT;
    }
}


/*
 * A declared tool, by its name or type; a versioned built-in type such
 * as "web_search_20250305" or "web_search_preview" is also known by its
 * stem, "web_search".
 */

static void
llmr_tool(llmr_features_t *f, const unsigned char *p, size_t len)
{
    size_t  n;

    /* the type of every function tool names none */

    if (llmr_is(p, len, "function") || llmr_is(p, len, "custom")) {
        return;
    }

    llmr_tool_add(f, llmr_tool_hash(p, len));

    n = len;

    if (len > 8 && memcmp(p + len - 8, "_preview", 8) == 0) {
        n = len - 8;

    } else {
        while (n && p[n - 1] >= '0' && p[n - 1] <= '9') {
            n--;
        }

        n = (n < len && n > 1 && p[n - 1] == '_') ? n - 1 : len;
    }

    if (n < len) {
        llmr_tool_add(f, llmr_tool_hash(p, n));
    }
}


static void
llmr_tool_add(llmr_features_t *f, uint32_t hash)
{
    unsigned  i;

    for (i = 0; i < f->ntools; i++) {
        if (f->tool[i] == hash) {
            return;
        }
    }

    if (f->ntools < LLMR_TOOLS_MAX) {
        f->tool[f->ntools++] = hash;
    }
}


static int
llmr_is(const unsigned char *p, size_t len, const char *s)
{
    return strlen(s) == len && memcmp(p, s, len) == 0;
}


static unsigned
llmr_role(const unsigned char *p, size_t len)
{
    if (len == 4 && memcmp(p, "user", 4) == 0) {
        return LLMR_ROLE_USER;
    }

    if (len == 9 && memcmp(p, "assistant", 9) == 0) {
        return LLMR_ROLE_ASSISTANT;
    }

    if ((len == 6 && memcmp(p, "system", 6) == 0)
        || (len == 9 && memcmp(p, "developer", 9) == 0))
    {
        return LLMR_ROLE_SYSTEM;
    }

    if ((len == 4 && memcmp(p, "tool", 4) == 0)
        || (len == 8 && memcmp(p, "function", 8) == 0))
    {
        return LLMR_ROLE_TOOL;
    }

    return LLMR_ROLE_OTHER;
}


static int
llmr_open(llmr_request_t *rq, unsigned type)
{
    if (!llmr_value(rq, type)) {
        return 0;
    }

    if (rq->depth == LLMR_DEPTH_MAX) {
        return llmr_fail(rq, "request body is nested too deeply");
    }

    rq->depth++;
    rq->key[rq->depth] = LLMR_KEY_OTHER;

    return 1;
}


static int
llmr_start_map(void *ctx)
{
    llmr_request_t  *rq = ctx;

    if (!llmr_open(rq, LLMR_VALUE_MAP)) {
        return 0;
    }

    if (rq->depth == 1) {
        rq->f.object_start = llmr_offset(rq);

    } else if (rq->depth == 2 && rq->key[1] == LLMR_KEY_STREAM_OPTIONS) {
        rq->f.options_object = llmr_offset(rq);

    } else if (rq->depth == 3 && rq->key[1] == LLMR_KEY_MESSAGES) {
        rq->f.messages++;
        llmr_message_start(rq);
    }

    return 1;
}


static void
llmr_message_start(llmr_request_t *rq)
{
    memset(&rq->msg, 0, sizeof(llmr_message_t));
    rq->msg_keywords = 0;
    rq->msg_role = LLMR_ROLE_OTHER;

    if (rq->capture) {
        rq->capture->slot[rq->capture->fill].len = 0;
    }
}


static int
llmr_map_key(void *ctx, const unsigned char *p, size_t len)
{
    unsigned                key;
    const llmr_key_name_t  *names;
    llmr_request_t         *rq = ctx;

    if (rq->text.head) {
        /* a long key: none the router knows, but it may be an alias */
        p = rq->text.head;
        len = rq->text.head_len;
    }

    names = (rq->depth == 1) ? rq->dialect->top_keys : llmr_nested_keys;

    key = LLMR_KEY_OTHER;

    for ( /* void */ ; names->name; names++) {
        if (strlen(names->name) == len && memcmp(names->name, p, len) == 0) {
            key = names->key;
            break;
        }
    }

    if (rq->depth == 1 && key == LLMR_KEY_OTHER) {
        names = llmr_key_alias(rq->dialect->top_keys, p, len);

        if (names) {
            snprintf(rq->error, LLMR_ERROR_MAX,
                     "a key that a provider may read as '%s' is not "
                     "accepted in request body", names->name);
            return 0;
        }
    }

    if (rq->depth == 1 && key != LLMR_KEY_OTHER && key <= LLMR_KEY_UNIQUE) {

        /*
         * a second "model" or "messages" could be read differently by
         * the provider than by the router
         */

        if (rq->seen & (1u << key)) {
            snprintf(rq->error, LLMR_ERROR_MAX,
                     "duplicate key '%.*s' in request body", (int) len, p);
            return 0;
        }

        rq->seen |= 1u << key;

        if (key == LLMR_KEY_MODEL) {
            llmr_locate(rq, &rq->f.model_start);

        } else if (key == LLMR_KEY_STREAM_OPTIONS) {
            rq->f.stream_options = 1;
            llmr_locate(rq, &rq->f.options_start);
        }
    }

    if (rq->depth == 2 && rq->key[1] == LLMR_KEY_STREAM_OPTIONS) {
        rq->f.options_members++;

        if (key == LLMR_KEY_INCLUDE_USAGE) {
            if (rq->f.usage_start != LLMR_NO_OFFSET) {
                return llmr_fail(rq, "duplicate key 'include_usage' in "
                                     "request body");
            }

            llmr_locate(rq, &rq->f.usage_start);
        }
    }

    rq->key[rq->depth] = (unsigned char) key;

    return 1;
}


/*
 * A key the router does not read that another decoder may: Go's
 * encoding/json matches keys without regard to case, folding the long s
 * (U+017F) to "s" and the Kelvin sign (U+212A) to "k", and a parser in C
 * stops at a NUL.  "MODEL", "Model", "ſtream" and "model\u0000" would
 * then name a model, or a stream, that the router never saw.
 */

static const llmr_key_name_t *
llmr_key_alias(const llmr_key_name_t *names, const unsigned char *p,
    size_t len)
{
    size_t          i, n;
    unsigned char   c, fold[32];

    for (i = 0, n = 0; i < len && p[i] != '\0'; i++) {

        if (n == sizeof(fold)) {
            return NULL;
        }

        c = p[i];

        if (c < 0x80) {
            fold[n++] = llmr_lower(c);

        } else if (c == 0xc5 && i + 1 < len && p[i + 1] == 0xbf) {
            fold[n++] = 's';
            i++;

        } else if (c == 0xe2 && i + 2 < len && p[i + 1] == 0x84
                   && p[i + 2] == 0xaa)
        {
            fold[n++] = 'k';
            i += 2;

        } else {
            /* no key of ours has other letters */
            return NULL;
        }
    }

    for ( /* void */ ; names->name; names++) {
        if (strlen(names->name) == n && memcmp(names->name, fold, n) == 0) {
            return names;
        }
    }

    return NULL;
}


static int
llmr_end_map(void *ctx)
{
    llmr_request_t  *rq = ctx;

    if (rq->depth == 3 && rq->key[1] == LLMR_KEY_MESSAGES) {
        llmr_message_done(rq);
    }

    rq->depth--;

    return 1;
}


static int
llmr_start_array(void *ctx)
{
    return llmr_open(ctx, LLMR_VALUE_ARRAY);
}


static int
llmr_end_array(void *ctx)
{
    llmr_request_t  *rq = ctx;

    rq->depth--;

    return 1;
}


/*
 * The current message is the last one from the user (or the last one
 * when no user spoke).  The turn is that message and everything after
 * it, such as tool results in an agent loop; the history window is the
 * messages before it.
 */

static void
llmr_message_done(llmr_request_t *rq)
{
    unsigned          k, user, current;
    llmr_message_t   *m;
    llmr_features_t  *f;

    f = &rq->f;

    /* 3 tokens of framing per message, as providers count them */
    f->prompt_tokens += rq->msg.tokens + 3 + (f->messages == 1 ? 3 : 0);

    user = (rq->msg_role == LLMR_ROLE_USER);
    current = user || !rq->seen_user;

    if (rq->capture) {
        llmr_capture_done(rq->capture, f->messages - 1, rq->msg_role,
                          current);
    }

    if (current) {
        rq->seen_user |= user;

        rq->turn = rq->msg;
        memset(&rq->window, 0, sizeof(llmr_message_t));

        for (k = 1; k <= rq->ring_len; k++) {
            m = &rq->ring[(rq->ring_next + rq->history - k) % rq->history];

            /* code is looked for in the last three messages only */
            llmr_message_add(&rq->window, m, k <= 3);
        }

        f->current = f->messages - 1;
        f->keywords = rq->msg_keywords;

    } else {
        llmr_message_add(&rq->turn, &rq->msg, 1);
    }

    f->est_tokens = rq->turn.tokens + rq->window.tokens;
    f->code = rq->turn.code || rq->window.code;

    if (rq->history == 0) {
        return;
    }

    rq->ring[rq->ring_next] = rq->msg;
    rq->ring_next = (rq->ring_next + 1) % rq->history;

    if (rq->ring_len < rq->history) {
        rq->ring_len++;
    }
}


int
llmr_capture_init(llmr_capture_t *c, unsigned char *buf, size_t size,
    unsigned nslots)
{
    unsigned  i;

    if (nslots < 2 || nslots > LLMR_SLOTS_MAX) {
        return LLMR_ERROR;
    }

    memset(c, 0, sizeof(llmr_capture_t));

    c->nslots = nslots;
    c->size = size;
    c->current = -1;

    for (i = 0; i < nslots; i++) {
        c->slot[i].text = buf + i * size;
    }

    return LLMR_OK;
}


/*
 * The head of the message is kept; text parts are joined by a newline.
 * A cut never splits a UTF-8 sequence, so the text stays valid JSON.
 */

static void
llmr_capture_text(llmr_capture_t *c, const unsigned char *p, size_t len)
{
    size_t        room;
    llmr_slot_t  *s;

    s = &c->slot[c->fill];

    if (s->len && s->len < c->size) {
        s->text[s->len++] = '\n';
    }

    room = c->size - s->len;

    if (len > room) {
        len = room;

        while (len && (llmr_ctype[p[len]] & LLMR_CT_CONT)) {
            len--;
        }
    }

    memcpy(s->text + s->len, p, len);
    s->len += len;
}


/* the next message fills the oldest slot, never the current message's */

static void
llmr_capture_done(llmr_capture_t *c, uint32_t message, unsigned role,
    unsigned current)
{
    llmr_slot_t  *s;

    s = &c->slot[c->fill];
    s->message = message;
    s->role = role;

    if (current) {
        c->current = (int) c->fill;
    }

    do {
        c->fill = (c->fill + 1) % c->nslots;
    } while ((int) c->fill == c->current);
}


static void
llmr_message_add(llmr_message_t *sum, const llmr_message_t *m,
    unsigned code)
{
    sum->tokens += m->tokens;
    sum->code |= code && m->code;
    sum->features += m->features;
    sum->numbers += m->numbers;
    sum->questions += m->questions;
    sum->lines += m->lines;
    sum->weight += m->weight;
}


size_t
llmr_rewrite_size(const llmr_features_t *f, size_t upstream_len)
{
    size_t  n;

    n = upstream_len;

    if (!f->model_present) {
        n += sizeof(LLMR_MODEL_KEY ",") - 1;
    }

    if (llmr_ask_usage(f)) {
        /* the longest of the ways to ask */
        n += sizeof(LLMR_STREAM_OPTIONS) - 1;
    }

    return n;
}


unsigned
llmr_rewrite(const llmr_features_t *f, const llmr_str_t *upstream,
    unsigned char *out, llmr_edit_t *edits)
{
    unsigned        n;
    llmr_edit_t    *e, t;
    unsigned char  *p;

    p = out;
    e = &edits[0];
    e->data = p;

    if (f->model_present) {
        e->start = f->model_start;
        e->end = f->model_end;

    } else {
        /* a new first member: "model":"x", */
        e->start = f->object_start;
        e->end = f->object_start;

        memcpy(p, LLMR_MODEL_KEY, sizeof(LLMR_MODEL_KEY) - 1);
        p += sizeof(LLMR_MODEL_KEY) - 1;
    }

    memcpy(p, upstream->data, upstream->len);
    p += upstream->len;

    if (llmr_ask_usage(f) && !f->stream_options) {
        memcpy(p, LLMR_STREAM_OPTIONS, sizeof(LLMR_STREAM_OPTIONS) - 1);
        p += sizeof(LLMR_STREAM_OPTIONS) - 1;
    }

    if (!f->model_present) {
        *p++ = ',';
    }

    e->len = p - e->data;
    n = 1;

    if (!llmr_ask_usage(f) || !f->stream_options) {
        return n;
    }

    /* the client's own options: include_usage is made true */

    e = &edits[n++];
    e->data = p;

    if (f->usage_start != LLMR_NO_OFFSET) {
        e->start = f->usage_start;
        e->end = f->usage_end;

        memcpy(p, "true", 4);
        p += 4;

    } else if (f->options_object != LLMR_NO_OFFSET) {
        e->start = f->options_object;
        e->end = f->options_object;

        memcpy(p, LLMR_INCLUDE_USAGE, sizeof(LLMR_INCLUDE_USAGE) - 1);
        p += sizeof(LLMR_INCLUDE_USAGE) - 1;

        if (f->options_members) {
            *p++ = ',';
        }

    } else {
        e->start = f->options_start;
        e->end = f->options_end;

        memcpy(p, LLMR_USAGE_OPTIONS, sizeof(LLMR_USAGE_OPTIONS) - 1);
        p += sizeof(LLMR_USAGE_OPTIONS) - 1;
    }

    e->len = p - e->data;

    if (edits[1].start < edits[0].start) {
        t = edits[0];
        edits[0] = edits[1];
        edits[1] = t;
    }

    return n;
}
