
/*
 * Copyright (C) the ngx_http_llm_router_module authors
 *
 * Is an answer good enough, or should a stronger model answer?  The
 * answer, a JSON body or an SSE stream, is read in one pass by the
 * callbacks of its dialect: the text of the answer (the first choice of
 * a chat completion) is gathered (decoded) into the caller's buffer, and
 * why it ended, its tool call arguments and, when JSON was asked for,
 * the text itself are checked as they come.  Each dialect's reasons to
 * end are told in the words of chat: "length", "content_filter".
 */


#include <string.h>

#include "llmr.h"


#define LLMR_ANSWER_DEPTH  16


enum {
    LLMR_A_OTHER = 0,
    LLMR_A_CHOICES,
    LLMR_A_FINISH,
    LLMR_A_MESSAGE,
    LLMR_A_CONTENT,
    LLMR_A_TOOL_CALLS,
    LLMR_A_INDEX,
    LLMR_A_FUNCTION,
    LLMR_A_ARGUMENTS,
    LLMR_A_TYPE,
    LLMR_A_TEXT,
    LLMR_A_DELTA,
    LLMR_A_STATUS,
    LLMR_A_REASON,
    LLMR_A_OUTPUT,
    LLMR_A_RESPONSE,
    LLMR_A_INCOMPLETE,
    LLMR_A_BLOCK
};

/* the events of a Responses stream whose "delta" is read */

enum {
    LLMR_EVENT_OTHER = 0,
    LLMR_EVENT_TEXT,
    LLMR_EVENT_ARGUMENTS
};


typedef struct {
    llmr_answer_t        *a;
    unsigned              depth;
    unsigned char         key[LLMR_ANSWER_DEPTH];
    uint32_t              item[LLMR_ANSWER_DEPTH];     /* array positions */
    unsigned              tool;                        /* index of the call */
    unsigned              event;                       /* LLMR_EVENT_* */
    yajl_handle           json;                        /* the content */
    yajl_handle           args[LLMR_ANSWER_TOOLS];
} llmr_answer_parse_t;


static int llmr_a_null(void *ctx);
static int llmr_a_boolean(void *ctx, int v);
static int llmr_a_number(void *ctx, const char *p, size_t len);
static int llmr_a_string(void *ctx, const unsigned char *p, size_t len);
static int llmr_a_start_map(void *ctx);
static int llmr_a_map_key(void *ctx, const unsigned char *p, size_t len);
static int llmr_a_end(void *ctx);
static int llmr_a_start_array(void *ctx);
static int llmr_a_value(llmr_answer_parse_t *ap);
static int llmr_a_in_choice(llmr_answer_parse_t *ap, unsigned at);
static unsigned llmr_a_index(const char *p, size_t len);
static int llmr_a_feed(yajl_handle *h, const unsigned char *p, size_t len);
static int llmr_a_valid(yajl_handle h);
static void llmr_a_content(llmr_answer_parse_t *ap, const unsigned char *p,
    size_t len);
static void llmr_a_arguments(llmr_answer_parse_t *ap, unsigned tool,
    const unsigned char *p, size_t len);
static void llmr_a_finish(llmr_answer_t *a, const char *finish);

static int llmr_m_map_key(void *ctx, const unsigned char *p, size_t len);
static int llmr_event_index(void *ctx, const char *p, size_t len);
static int llmr_m_string(void *ctx, const unsigned char *p, size_t len);
static int llmr_r_map_key(void *ctx, const unsigned char *p, size_t len);
static int llmr_r_string(void *ctx, const unsigned char *p, size_t len);


const yajl_callbacks  llmr_chat_answer = {
    llmr_a_null,
    llmr_a_boolean,
    NULL,
    NULL,
    llmr_a_number,
    llmr_a_string,
    llmr_a_start_map,
    llmr_a_map_key,
    llmr_a_end,
    llmr_a_start_array,
    llmr_a_end
};

const yajl_callbacks  llmr_messages_answer = {
    llmr_a_null,
    llmr_a_boolean,
    NULL,
    NULL,
    llmr_event_index,
    llmr_m_string,
    llmr_a_start_map,
    llmr_m_map_key,
    llmr_a_end,
    llmr_a_start_array,
    llmr_a_end
};

const yajl_callbacks  llmr_responses_answer = {
    llmr_a_null,
    llmr_a_boolean,
    NULL,
    NULL,
    llmr_event_index,
    llmr_r_string,
    llmr_a_start_map,
    llmr_r_map_key,
    llmr_a_end,
    llmr_a_start_array,
    llmr_a_end
};

/* validates JSON without looking at it */
static const yajl_callbacks  llmr_validate_callbacks;


static const char  *llmr_verdicts[] = {
    "ok", "length", "content_filter", "empty", "short", "pattern",
    "required", "json", "tool_args", "unreadable"
};


const char *
llmr_verdict_name(llmr_verdict_e v)
{
    return llmr_verdicts[v];
}


/*
 * The keys that matter, by depth: 1 the chunk, 2 "choices", 3 the
 * choice, 4 "message" or "delta", 5 "tool_calls", 6 a call, 7 its
 * "function".
 */

static int
llmr_a_map_key(void *ctx, const unsigned char *p, size_t len)
{
    unsigned              k;
    llmr_answer_parse_t  *ap = ctx;

#define llmr_key_is(s)  (len == sizeof(s) - 1 && memcmp(p, s, len) == 0)

    if (ap->depth >= LLMR_ANSWER_DEPTH) {
        return 1;
    }

    k = LLMR_A_OTHER;

    switch (ap->depth) {

    case 1:
        k = llmr_key_is("choices") ? LLMR_A_CHOICES : k;
        break;

    case 3:
        k = llmr_key_is("finish_reason") ? LLMR_A_FINISH
            : (llmr_key_is("message") || llmr_key_is("delta")) ? LLMR_A_MESSAGE
            : k;
        break;

    case 4:
        k = llmr_key_is("content") ? LLMR_A_CONTENT
            : llmr_key_is("tool_calls") ? LLMR_A_TOOL_CALLS : k;
        break;

    case 6:
        k = llmr_key_is("index") ? LLMR_A_INDEX
            : llmr_key_is("function") ? LLMR_A_FUNCTION : k;
        break;

    case 7:
        k = llmr_key_is("arguments") ? LLMR_A_ARGUMENTS : k;
        break;
    }

#undef llmr_key_is

    ap->key[ap->depth] = (unsigned char) k;

    return 1;
}


/* the first choice, down to depth `at`: keys 1, 3, 4, ... on the path */

static int
llmr_a_in_choice(llmr_answer_parse_t *ap, unsigned at)
{
    if (ap->depth < at || ap->key[1] != LLMR_A_CHOICES || ap->item[2] != 1) {
        return 0;
    }

    return at < 4 || ap->key[3] == LLMR_A_MESSAGE;
}


static int
llmr_a_value(llmr_answer_parse_t *ap)
{
    /* an element of an array is counted as it starts: the first is 1 */

    if (ap->depth && ap->depth < LLMR_ANSWER_DEPTH
        && ap->key[ap->depth] == LLMR_A_OTHER
        && ap->item[ap->depth] != (uint32_t) -1)
    {
        ap->item[ap->depth]++;
    }

    return 1;
}


static int
llmr_a_null(void *ctx)
{
    return llmr_a_value(ctx);
}


static int
llmr_a_boolean(void *ctx, int v)
{
    (void) v;

    return llmr_a_value(ctx);
}


static int
llmr_a_number(void *ctx, const char *p, size_t len)
{
    llmr_answer_parse_t  *ap = ctx;

    llmr_a_value(ap);

    if (ap->depth == 6 && ap->key[6] == LLMR_A_INDEX
        && ap->key[4] == LLMR_A_TOOL_CALLS && llmr_a_in_choice(ap, 6))
    {
        ap->tool = llmr_a_index(p, len);
    }

    return 1;
}


/* the index of a tool call, bounded: one too large is no call we keep */

static unsigned
llmr_a_index(const char *p, size_t len)
{
    size_t    i;
    unsigned  n;

    n = 0;

    for (i = 0; i < len && p[i] >= '0' && p[i] <= '9' && n < 1000; i++) {
        n = n * 10 + (p[i] - '0');
    }

    return n;
}


static int
llmr_a_string(void *ctx, const unsigned char *p, size_t len)
{
    size_t                n;
    llmr_answer_t        *a;
    llmr_answer_parse_t  *ap = ctx;

    llmr_a_value(ap);

    a = ap->a;

    if (!llmr_a_in_choice(ap, 3)) {
        return 1;
    }

    if (ap->depth == 3 && ap->key[3] == LLMR_A_FINISH) {
        n = len < sizeof(a->finish) - 1 ? len : sizeof(a->finish) - 1;
        memcpy(a->finish, p, n);
        a->finish[n] = '\0';
        return 1;
    }

    if (ap->depth == 4 && ap->key[4] == LLMR_A_CONTENT) {
        llmr_a_content(ap, p, len);
        return 1;
    }

    if (ap->depth == 7 && ap->key[7] == LLMR_A_ARGUMENTS
        && ap->key[4] == LLMR_A_TOOL_CALLS && ap->key[6] == LLMR_A_FUNCTION)
    {
        llmr_a_arguments(ap, ap->tool, p, len);
    }

    return 1;
}


static void
llmr_a_content(llmr_answer_parse_t *ap, const unsigned char *p, size_t len)
{
    size_t          n;
    llmr_answer_t  *a;

    a = ap->a;

    n = a->size - a->content_len;
    n = len < n ? len : n;
    memcpy(a->content + a->content_len, p, n);
    a->content_len += n;

    if (a->criteria->json && llmr_a_feed(&ap->json, p, len) != LLMR_OK) {
        a->json_invalid = 1;
    }
}


static void
llmr_a_arguments(llmr_answer_parse_t *ap, unsigned tool,
    const unsigned char *p, size_t len)
{
    ap->a->tool_calls = 1;

    if (tool < LLMR_ANSWER_TOOLS
        && llmr_a_feed(&ap->args[tool], p, len) != LLMR_OK)
    {
        ap->a->args_invalid = 1;
    }
}


static void
llmr_a_finish(llmr_answer_t *a, const char *finish)
{
    size_t  n;

    n = strlen(finish);
    n = n < sizeof(a->finish) - 1 ? n : sizeof(a->finish) - 1;
    memcpy(a->finish, finish, n);
    a->finish[n] = '\0';
}


#define llmr_key_is(s)  (len == sizeof(s) - 1 && memcmp(p, s, len) == 0)

/*
 * A Messages answer: a message whose "content" blocks are text or
 * tool_use, or a stream whose "content_block_delta" events carry text
 * and the pieces of tool input ("partial_json"), and whose
 * "message_delta" tells the stop reason.
 */

static int
llmr_m_map_key(void *ctx, const unsigned char *p, size_t len)
{
    unsigned              k;
    llmr_answer_parse_t  *ap = ctx;

    if (ap->depth >= LLMR_ANSWER_DEPTH) {
        return 1;
    }

    k = llmr_key_is("type") ? LLMR_A_TYPE
        : llmr_key_is("text") ? LLMR_A_TEXT
        : LLMR_A_OTHER;

    if (ap->depth == 1) {
        k = llmr_key_is("content") ? LLMR_A_CONTENT
            : llmr_key_is("stop_reason") ? LLMR_A_FINISH
            : llmr_key_is("delta") ? LLMR_A_DELTA
            : llmr_key_is("index") ? LLMR_A_INDEX
            : llmr_key_is("content_block") ? LLMR_A_BLOCK
            : k;

    } else if (ap->depth == 2) {
        k = llmr_key_is("stop_reason") ? LLMR_A_FINISH
            : llmr_key_is("partial_json") ? LLMR_A_ARGUMENTS
            : k;
    }

    ap->key[ap->depth] = (unsigned char) k;

    return 1;
}


/*
 * The index of a Messages content block, or the output_index of a
 * Responses event: the call that a piece of tool arguments is of.
 */

static int
llmr_event_index(void *ctx, const char *p, size_t len)
{
    llmr_answer_parse_t  *ap = ctx;

    llmr_a_value(ap);

    if (ap->depth == 1 && ap->key[1] == LLMR_A_INDEX) {
        ap->tool = llmr_a_index(p, len);
    }

    return 1;
}


static int
llmr_m_string(void *ctx, const unsigned char *p, size_t len)
{
    unsigned              d;
    const unsigned char  *k;
    llmr_answer_parse_t  *ap = ctx;

    llmr_a_value(ap);

    d = ap->depth;
    k = ap->key;

    if (d >= LLMR_ANSWER_DEPTH) {
        return 1;
    }

    if (k[d] == LLMR_A_FINISH && (d == 1 || k[1] == LLMR_A_DELTA)) {
        llmr_a_finish(ap->a, llmr_key_is("max_tokens") ? "length"
                             : llmr_key_is("model_context_window_exceeded")
                               ? "length"
                             : llmr_key_is("refusal") ? "content_filter"
                             : "stop");
        return 1;
    }

    if (k[d] == LLMR_A_TYPE && llmr_key_is("tool_use")
        && ((d == 3 && k[1] == LLMR_A_CONTENT)
            || (d == 2 && k[1] == LLMR_A_BLOCK)))
    {
        ap->a->tool_calls = 1;
        return 1;
    }

    if (k[d] == LLMR_A_TEXT
        && ((d == 3 && k[1] == LLMR_A_CONTENT)
            || (d == 2 && k[1] == LLMR_A_DELTA)))
    {
        llmr_a_content(ap, p, len);
        return 1;
    }

    if (d == 2 && k[2] == LLMR_A_ARGUMENTS && k[1] == LLMR_A_DELTA) {
        llmr_a_arguments(ap, ap->tool, p, len);
    }

    return 1;
}


/*
 * A Responses answer: a response whose "output" items are messages of
 * output_text parts or function calls, or a stream of events, of which
 * the text and argument deltas are read, and the final response for its
 * status: "incomplete" for max_output_tokens is chat's "length".
 */

static int
llmr_r_map_key(void *ctx, const unsigned char *p, size_t len)
{
    unsigned              k;
    llmr_answer_parse_t  *ap = ctx;

    if (ap->depth >= LLMR_ANSWER_DEPTH) {
        return 1;
    }

    k = llmr_key_is("type") ? LLMR_A_TYPE
        : llmr_key_is("text") ? LLMR_A_TEXT
        : llmr_key_is("status") ? LLMR_A_STATUS
        : llmr_key_is("reason") ? LLMR_A_REASON
        : llmr_key_is("content") ? LLMR_A_CONTENT
        : llmr_key_is("arguments") ? LLMR_A_ARGUMENTS
        : llmr_key_is("incomplete_details") ? LLMR_A_INCOMPLETE
        : LLMR_A_OTHER;

    if (ap->depth == 1) {
        k = llmr_key_is("output") ? LLMR_A_OUTPUT
            : llmr_key_is("delta") ? LLMR_A_DELTA
            : llmr_key_is("response") ? LLMR_A_RESPONSE
            : llmr_key_is("output_index") ? LLMR_A_INDEX
            : k;
    }

    ap->key[ap->depth] = (unsigned char) k;

    return 1;
}


static int
llmr_r_string(void *ctx, const unsigned char *p, size_t len)
{
    unsigned              d, top;
    const unsigned char  *k;
    llmr_answer_parse_t  *ap = ctx;

    llmr_a_value(ap);

    d = ap->depth;
    k = ap->key;

    if (d >= LLMR_ANSWER_DEPTH) {
        return 1;
    }

    if (d == 1 && k[1] == LLMR_A_TYPE) {
        ap->event = llmr_key_is("response.output_text.delta")
                    ? LLMR_EVENT_TEXT
                    : llmr_key_is("response.function_call_arguments.delta")
                      ? LLMR_EVENT_ARGUMENTS : LLMR_EVENT_OTHER;
        return 1;
    }

    if (d == 1 && k[1] == LLMR_A_DELTA) {
        if (ap->event == LLMR_EVENT_TEXT) {
            llmr_a_content(ap, p, len);

        } else if (ap->event == LLMR_EVENT_ARGUMENTS) {
            llmr_a_arguments(ap, ap->tool, p, len);
        }

        return 1;
    }

    /* the response: the body, or "response" of a stream's last event */

    top = (k[1] == LLMR_A_RESPONSE) ? 2 : 1;

    if (d == top && k[d] == LLMR_A_STATUS) {
        if (llmr_key_is("incomplete")
            && strcmp((char *) ap->a->finish, "content_filter") != 0)
        {
            llmr_a_finish(ap->a, "length");
        }

        return 1;
    }

    if (d == top + 1 && k[top] == LLMR_A_INCOMPLETE && k[d] == LLMR_A_REASON
        && llmr_key_is("content_filter"))
    {
        llmr_a_finish(ap->a, "content_filter");
        return 1;
    }

    /* the output items of a body; a stream's come in deltas */

    if (k[1] != LLMR_A_OUTPUT) {
        return 1;
    }

    if (d == 3 && k[3] == LLMR_A_TYPE && llmr_key_is("function_call")) {
        ap->a->tool_calls = 1;

    } else if (d == 3 && k[3] == LLMR_A_ARGUMENTS) {
        llmr_a_arguments(ap, ap->item[2] - 1, p, len);

    } else if (d == 5 && k[3] == LLMR_A_CONTENT && k[5] == LLMR_A_TEXT) {
        llmr_a_content(ap, p, len);
    }

    return 1;
}

#undef llmr_key_is


static int
llmr_a_start_map(void *ctx)
{
    llmr_answer_parse_t  *ap = ctx;

    llmr_a_value(ap);

    if (ap->depth == 5 && ap->key[5] == LLMR_A_OTHER) {
        /* a tool call without "index" is the next one */
        ap->tool = ap->item[5] - 1;
    }

    if (++ap->depth < LLMR_ANSWER_DEPTH) {
        ap->key[ap->depth] = LLMR_A_OTHER;
        ap->item[ap->depth] = (uint32_t) -1;    /* an object, not an array */
    }

    return 1;
}


static int
llmr_a_start_array(void *ctx)
{
    llmr_answer_parse_t  *ap = ctx;

    llmr_a_value(ap);

    if (++ap->depth < LLMR_ANSWER_DEPTH) {
        ap->key[ap->depth] = LLMR_A_OTHER;
        ap->item[ap->depth] = 0;
    }

    return 1;
}


static int
llmr_a_end(void *ctx)
{
    llmr_answer_parse_t  *ap = ctx;

    ap->depth--;

    return 1;
}


/* JSON in pieces: a validator is made on the first piece */

static int
llmr_a_feed(yajl_handle *h, const unsigned char *p, size_t len)
{
    if (*h == NULL) {
        *h = yajl_alloc(&llmr_validate_callbacks, NULL, NULL);
        if (*h == NULL) {
            return LLMR_ERROR;
        }
    }

    return yajl_parse(*h, p, len) == yajl_status_ok ? LLMR_OK : LLMR_ERROR;
}


static int
llmr_a_valid(yajl_handle h)
{
    return h && yajl_complete_parse(h) == yajl_status_ok;
}


int
llmr_answer_init(llmr_answer_t *a, const llmr_dialect_t *d,
    const llmr_criteria_t *c, unsigned char *buf, size_t size)
{
    memset(a, 0, sizeof(llmr_answer_t));

    a->dialect = d;
    a->criteria = c;
    a->content = buf;
    a->size = size;

    return LLMR_OK;
}


/*
 * Reads the answer: a JSON body, or the data lines of an SSE stream,
 * whose JSON documents follow one another.
 */

llmr_verdict_e
llmr_answer_check(llmr_answer_t *a, const unsigned char *p, size_t len,
    int sse)
{
    size_t                i, n;
    unsigned              k;
    uint32_t              chars;
    yajl_handle           y;
    yajl_status           st;
    llmr_verdict_e        v;
    llmr_answer_parse_t   ap;
    const unsigned char  *end, *eol, *d;
    const llmr_criteria_t  *c;

    c = a->criteria;

    memset(&ap, 0, sizeof(llmr_answer_parse_t));
    ap.a = a;

    y = yajl_alloc(a->dialect->answer, NULL, &ap);
    if (y == NULL) {
        return LLMR_VERDICT_UNREADABLE;
    }

    yajl_config(y, yajl_allow_multiple_values, 1);

    st = yajl_status_ok;

    if (!sse) {
        st = yajl_parse(y, p, len);

    } else {
        for (end = p + len; p < end && st == yajl_status_ok; p = eol + 1) {
            eol = memchr(p, '\n', end - p);
            if (eol == NULL) {
                eol = end;
            }

            if (eol - p < 5 || memcmp(p, "data:", 5) != 0) {
                continue;
            }

            d = p + 5;
            n = eol - d;

            while (n && (*d == ' ')) {
                d++;
                n--;
            }

            while (n && (d[n - 1] == '\r' || d[n - 1] == ' ')) {
                n--;
            }

            if (n == 6 && memcmp(d, "[DONE]", 6) == 0) {
                continue;
            }

            st = yajl_parse(y, d, n);
        }
    }

    if (st == yajl_status_ok) {
        st = yajl_complete_parse(y);
    }

    yajl_free(y);

    v = (st == yajl_status_ok) ? LLMR_VERDICT_OK : LLMR_VERDICT_UNREADABLE;

    if (v == LLMR_VERDICT_OK && c->finish
        && strcmp((char *) a->finish, "length") == 0)
    {
        v = LLMR_VERDICT_LENGTH;

    } else if (v == LLMR_VERDICT_OK && c->finish
               && strcmp((char *) a->finish, "content_filter") == 0)
    {
        v = LLMR_VERDICT_CONTENT_FILTER;
    }

    if (v == LLMR_VERDICT_OK && c->empty && !a->tool_calls) {
        for (i = 0; i < a->content_len; i++) {
            if (!llmr_is_space(a->content[i])) {
                break;
            }
        }

        if (i == a->content_len) {
            v = LLMR_VERDICT_EMPTY;
        }
    }

    if (v == LLMR_VERDICT_OK && c->min_length && !a->tool_calls) {
        chars = 0;

        for (i = 0; i < a->content_len; i++) {
            chars += !(llmr_ctype[a->content[i]] & LLMR_CT_CONT);
        }

        if (chars < c->min_length) {
            v = LLMR_VERDICT_SHORT;
        }
    }

    if (v == LLMR_VERDICT_OK && c->pattern
        && c->pattern(c->pattern_data, a->content, a->content_len))
    {
        v = LLMR_VERDICT_PATTERN;
    }

    if (v == LLMR_VERDICT_OK && c->require && !a->tool_calls
        && !c->require(c->require_data, a->content, a->content_len))
    {
        v = LLMR_VERDICT_REQUIRED;
    }

    if (v == LLMR_VERDICT_OK && c->json && !a->tool_calls
        && (a->json_invalid || !llmr_a_valid(ap.json)))
    {
        v = LLMR_VERDICT_JSON;
    }

    if (v == LLMR_VERDICT_OK && c->tool_args && a->tool_calls) {
        for (k = 0; k < LLMR_ANSWER_TOOLS; k++) {
            if (ap.args[k] && !llmr_a_valid(ap.args[k])) {
                a->args_invalid = 1;
            }
        }

        if (a->args_invalid) {
            v = LLMR_VERDICT_TOOL_ARGS;
        }
    }

    if (ap.json) {
        yajl_free(ap.json);
    }

    for (k = 0; k < LLMR_ANSWER_TOOLS; k++) {
        if (ap.args[k]) {
            yajl_free(ap.args[k]);
        }
    }

    return v;
}
