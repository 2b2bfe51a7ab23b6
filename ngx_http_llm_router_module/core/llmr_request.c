
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
    LLMR_KEY_OTHER = 0,
    LLMR_KEY_MODEL,
    LLMR_KEY_MESSAGES,
    LLMR_KEY_STREAM,
    LLMR_KEY_STREAM_OPTIONS,
    LLMR_KEY_TOOLS,
    LLMR_KEY_FUNCTIONS,
    LLMR_KEY_MAX_TOKENS,
    LLMR_KEY_RESPONSE_FORMAT,
    LLMR_KEY_TYPE,
    LLMR_KEY_ROLE,
    LLMR_KEY_CONTENT,
    LLMR_KEY_TEXT
};

enum {
    LLMR_VALUE_NULL = 0,
    LLMR_VALUE_BOOL,
    LLMR_VALUE_NUMBER,
    LLMR_VALUE_STRING,
    LLMR_VALUE_MAP,
    LLMR_VALUE_ARRAY
};


typedef struct {
    const char  *name;
    unsigned     key;
} llmr_key_name_t;


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
static size_t llmr_string_open(llmr_request_t *rq, const unsigned char *p,
    size_t len);
static size_t llmr_string_close(llmr_request_t *rq, const unsigned char *p,
    size_t len);
static int llmr_hold(llmr_request_t *rq, const unsigned char *p,
    size_t len);
static void llmr_locate_model(llmr_request_t *rq, size_t upto);
static void llmr_message_done(llmr_request_t *rq);
static void llmr_message_add(llmr_message_t *sum, const llmr_message_t *m,
    unsigned code);
static int llmr_parse_error(llmr_request_t *rq, yajl_status status,
    uint64_t offset);
static int llmr_in_message_text(llmr_request_t *rq);
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


/* the keys that matter, by the depth of the object they are in */

static const llmr_key_name_t  llmr_top_keys[] = {
    { "model", LLMR_KEY_MODEL },
    { "messages", LLMR_KEY_MESSAGES },
    { "stream", LLMR_KEY_STREAM },
    { "stream_options", LLMR_KEY_STREAM_OPTIONS },
    { "tools", LLMR_KEY_TOOLS },
    { "functions", LLMR_KEY_FUNCTIONS },
    { "max_tokens", LLMR_KEY_MAX_TOKENS },
    { "max_completion_tokens", LLMR_KEY_MAX_TOKENS },
    { "response_format", LLMR_KEY_RESPONSE_FORMAT },
    { NULL, 0 }
};

static const llmr_key_name_t  llmr_format_keys[] = {
    { "type", LLMR_KEY_TYPE },
    { NULL, 0 }
};

static const llmr_key_name_t  llmr_message_keys[] = {
    { "role", LLMR_KEY_ROLE },
    { "content", LLMR_KEY_CONTENT },
    { NULL, 0 }
};

static const llmr_key_name_t  llmr_part_keys[] = {
    { "text", LLMR_KEY_TEXT },
    { NULL, 0 }
};


#define LLMR_STREAM_OPTIONS  ",\"stream_options\":{\"include_usage\":true}"
#define LLMR_MODEL_KEY       "\"model\":"

#define llmr_offset(rq)                                                       \
    ((rq)->base + yajl_get_bytes_consumed((rq)->yajl))

#define llmr_need_stream_options(f)  ((f)->stream && !(f)->stream_options)


int
llmr_request_init(llmr_request_t *rq, const llmr_keywords_t *kw,
    unsigned history)
{
    memset(rq, 0, sizeof(llmr_request_t));

    rq->keywords = kw;
    rq->history = history < LLMR_HISTORY_MAX ? history : LLMR_HISTORY_MAX;

    rq->f.max_tokens = -1;
    rq->f.score = -1;
    rq->f.object_start = LLMR_NO_OFFSET;
    rq->f.model_start = LLMR_NO_OFFSET;
    rq->f.model_end = LLMR_NO_OFFSET;
    rq->model_key_end = LLMR_NO_OFFSET;

    rq->yajl = yajl_alloc(&llmr_callbacks, NULL, rq);
    if (rq->yajl == NULL) {
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
}


/*
 * yajl lexes a token that the end of a chunk cuts again from its first
 * byte with every later chunk: a message text of n bytes arriving in k
 * chunks would be lexed about k * n / 2 times.  So a string cut by the
 * end of a chunk is kept aside, from its opening quote, until its
 * closing quote has arrived, and yajl gets it whole: every byte is
 * lexed once, and the copy is the one yajl would have made anyway.
 * Only quotes and backslashes are looked for here, with memchr().
 */

int
llmr_request_feed(llmr_request_t *rq, const unsigned char *p, size_t len)
{
    size_t  n;

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

        if (llmr_parse(rq, rq->hold, rq->hold_len) != LLMR_OK) {
            return LLMR_ERROR;
        }

        rq->hold_len = 0;

        p += n;
        len -= n;
    }

    n = llmr_string_open(rq, p, len);

    if (n && llmr_parse(rq, p, n) != LLMR_OK) {
        return LLMR_ERROR;
    }

    if (n < len && llmr_hold(rq, p + n, len - n) != LLMR_OK) {
        return LLMR_ERROR;
    }

    return LLMR_OK;
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

    llmr_locate_model(rq, len);

    rq->base += len;
    rq->chunk = NULL;
    rq->chunk_len = 0;

    return LLMR_OK;
}


/* where the string still open at the end of p starts, or len */

static size_t
llmr_string_open(llmr_request_t *rq, const unsigned char *p, size_t len)
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


static int
llmr_hold(llmr_request_t *rq, const unsigned char *p, size_t len)
{
    size_t          size;
    unsigned char  *hold;

    if (rq->hold_len + len > rq->hold_size) {
        size = rq->hold_size ? rq->hold_size : 256;

        while (size < rq->hold_len + len) {
            size *= 2;
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


int
llmr_request_finish(llmr_request_t *rq)
{
    yajl_status  status;

    if (rq->in_string) {
        /* a string without its end: yajl says what is wrong */

        if (llmr_parse(rq, rq->hold, rq->hold_len) != LLMR_OK) {
            return LLMR_ERROR;
        }

        rq->hold_len = 0;
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

    if (!rq->seen_messages) {
        llmr_fail(rq, "missing required parameter: 'messages'");
        return LLMR_ERROR;
    }

    if (rq->f.messages == 0) {
        llmr_fail(rq, "'messages' must be a non-empty array");
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
 * yajl tells where a token ends but not where it starts: the "model"
 * value starts at the first byte after its key that is neither white
 * space, as yajl has it ('\v' and '\f' too), nor the colon.  Those bytes
 * are scanned as they pass, so nothing is buffered for it.
 */

static void
llmr_locate_model(llmr_request_t *rq, size_t upto)
{
    size_t                i;
    const unsigned char  *p;

    if (rq->model_key_end == LLMR_NO_OFFSET
        || rq->f.model_start != LLMR_NO_OFFSET
        || rq->chunk == NULL)
    {
        return;
    }

    i = (rq->model_key_end > rq->base)
        ? (size_t) (rq->model_key_end - rq->base) : 0;
    p = rq->chunk;

    for ( /* void */ ; i < upto; i++) {
        if (p[i] != ' ' && p[i] != '\t' && p[i] != '\r' && p[i] != '\n'
            && p[i] != '\v' && p[i] != '\f' && p[i] != ':')
        {
            rq->f.model_start = rq->base + i;
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
            llmr_locate_model(rq, yajl_get_bytes_consumed(rq->yajl));
            rq->f.model_end = llmr_offset(rq);
            return 1;

        case LLMR_KEY_MESSAGES:
            if (type != LLMR_VALUE_ARRAY) {
                return llmr_fail(rq, "invalid type for 'messages': "
                                     "expected an array of objects");
            }

            rq->seen_messages = 1;
            return 1;

        case LLMR_KEY_STREAM:
            if (type != LLMR_VALUE_BOOL && type != LLMR_VALUE_NULL) {
                return llmr_fail(rq, "invalid type for 'stream': "
                                     "expected a boolean");
            }

            return 1;
        }

        return 1;

    case 2:
        switch (rq->key[1]) {

        case LLMR_KEY_MESSAGES:
            if (type != LLMR_VALUE_MAP) {
                return llmr_fail(rq, "invalid type for 'messages': "
                                     "expected an array of objects");
            }

            return 1;

        case LLMR_KEY_TOOLS:
        case LLMR_KEY_FUNCTIONS:
            rq->f.tools = 1;
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
    llmr_request_t  *rq = ctx;

    if (!llmr_value(rq, LLMR_VALUE_STRING)) {
        return 0;
    }

    if (rq->depth == 2 && rq->key[1] == LLMR_KEY_RESPONSE_FORMAT
        && rq->key[2] == LLMR_KEY_TYPE)
    {
        /* "json_object" or "json_schema": the answer must be JSON */
        rq->f.json_mode = (len == 11 && memcmp(p, "json_object", 11) == 0)
                          || (len == 11 && memcmp(p, "json_schema", 11) == 0);
        return 1;
    }

    if (rq->depth == 1) {
        if (rq->key[1] == LLMR_KEY_MODEL) {
            rq->f.model_truncated = (len > LLMR_MODEL_NAME_MAX);
            rq->f.model_len = rq->f.model_truncated ? LLMR_MODEL_NAME_MAX
                                                    : len;
            memcpy(rq->f.model, p, rq->f.model_len);
        }

        return 1;
    }

    if (rq->key[1] == LLMR_KEY_TOOLS || rq->key[1] == LLMR_KEY_FUNCTIONS) {
        /* tool definitions are billed as prompt */
        rq->f.prompt_tokens += llmr_estimate_tokens(p, len);
        return 1;
    }

    if (rq->depth < 3 || rq->key[1] != LLMR_KEY_MESSAGES) {
        return 1;
    }

    /* inside a message */

    if (rq->depth == 3 && rq->key[3] == LLMR_KEY_ROLE) {
        rq->msg_role = llmr_role(p, len);
    }

    if (rq->key[3] == LLMR_KEY_CONTENT && rq->depth > 3
        && !(rq->depth == 5 && rq->key[5] == LLMR_KEY_TEXT))
    {
        /* content parts other than text: types, image URLs, audio */
        return 1;
    }

    if (!llmr_in_message_text(rq)) {
        rq->msg.tokens += llmr_estimate_tokens(p, len);
        return 1;
    }

    /* the features and the keyword lists come in the pass of the tokens */

    rq->msg.tokens += llmr_text_scan((rq->classifier || rq->feature) ? rq
                                                                     : NULL,
                                     rq->keywords, &rq->msg_keywords,
                                     p, len);

    if (!rq->msg.code) {
        rq->msg.code = llmr_looks_like_code(p, len);
    }

    if (rq->capture) {
        llmr_capture_text(rq->capture, p, len);
    }

    return 1;
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
llmr_in_message_text(llmr_request_t *rq)
{
    return rq->key[3] == LLMR_KEY_CONTENT
           && (rq->depth == 3 || rq->depth == 5);
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

    } else if (rq->depth == 3 && rq->key[1] == LLMR_KEY_MESSAGES) {
        rq->f.messages++;
        memset(&rq->msg, 0, sizeof(llmr_message_t));
        rq->msg_keywords = 0;
        rq->msg_role = LLMR_ROLE_OTHER;

        if (rq->capture) {
            rq->capture->slot[rq->capture->fill].len = 0;
        }
    }

    return 1;
}


static int
llmr_map_key(void *ctx, const unsigned char *p, size_t len)
{
    unsigned                key;
    const llmr_key_name_t  *names;
    llmr_request_t         *rq = ctx;

    names = NULL;

    if (rq->depth == 1) {
        names = llmr_top_keys;

    } else if (rq->depth == 2 && rq->key[1] == LLMR_KEY_RESPONSE_FORMAT) {
        names = llmr_format_keys;

    } else if (rq->key[1] == LLMR_KEY_MESSAGES) {
        if (rq->depth == 3) {
            names = llmr_message_keys;

        } else if (rq->depth == 5 && rq->key[3] == LLMR_KEY_CONTENT) {
            names = llmr_part_keys;
        }
    }

    key = LLMR_KEY_OTHER;

    for ( /* void */ ; names && names->name; names++) {
        if (strlen(names->name) == len && memcmp(names->name, p, len) == 0) {
            key = names->key;
            break;
        }
    }

    if (rq->depth == 1 && key != LLMR_KEY_OTHER
        && key <= LLMR_KEY_STREAM_OPTIONS)
    {
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
            rq->model_key_end = llmr_offset(rq);

        } else if (key == LLMR_KEY_STREAM_OPTIONS) {
            rq->f.stream_options = 1;
        }
    }

    rq->key[rq->depth] = (unsigned char) key;

    return 1;
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
    unsigned          k, window, user, current;
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

        window = rq->history < rq->ring_len ? rq->history : rq->ring_len;

        for (k = 1; k <= window; k++) {
            m = &rq->ring[(rq->ring_next + LLMR_HISTORY_MAX - k)
                          % LLMR_HISTORY_MAX];

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

    rq->ring[rq->ring_next] = rq->msg;
    rq->ring_next = (rq->ring_next + 1) % LLMR_HISTORY_MAX;

    if (rq->ring_len < LLMR_HISTORY_MAX) {
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

    if (llmr_need_stream_options(f)) {
        n += sizeof(LLMR_STREAM_OPTIONS) - 1;
    }

    return n;
}


unsigned char *
llmr_rewrite(const llmr_features_t *f, llmr_str_t *upstream,
    unsigned char *out, uint64_t *start, uint64_t *end)
{
    unsigned char  *p;

    p = out;

    if (f->model_present) {
        *start = f->model_start;
        *end = f->model_end;

    } else {
        /* a new first member: "model":"x", */
        *start = f->object_start;
        *end = f->object_start;

        memcpy(p, LLMR_MODEL_KEY, sizeof(LLMR_MODEL_KEY) - 1);
        p += sizeof(LLMR_MODEL_KEY) - 1;
    }

    memcpy(p, upstream->data, upstream->len);
    p += upstream->len;

    if (llmr_need_stream_options(f)) {
        memcpy(p, LLMR_STREAM_OPTIONS, sizeof(LLMR_STREAM_OPTIONS) - 1);
        p += sizeof(LLMR_STREAM_OPTIONS) - 1;
    }

    if (!f->model_present) {
        *p++ = ',';
    }

    return p;
}
