
/*
 * Copyright (C) the ngx_http_llm_router_module authors
 *
 * The routing core: plain C99 and yajl, no NGINX headers.  The module
 * and the unit tests link it, and offline tools are to link the same
 * code, so that a decision made offline is bit-identical to one made
 * inside NGINX.
 */


#ifndef _LLMR_H_INCLUDED_
#define _LLMR_H_INCLUDED_


#include <stddef.h>
#include <stdint.h>
#include <yajl/yajl_parse.h>


/*
 * the version of the module ($llm_router_version) and of llm-router
 * (--version); packaging/debian/changelog gives the same one
 */
#define LLMR_VERSION         "0.1.0"

#define LLMR_OK               0
#define LLMR_ERROR           -1
#define LLMR_AGAIN           -2

#define LLMR_HISTORY_MAX     64
#define LLMR_KEYWORDS_MAX    64
#define LLMR_DEPTH_MAX       64
#define LLMR_MODEL_NAME_MAX  256
#define LLMR_ERROR_MAX       160
#define LLMR_LABEL_MAX       32
#define LLMR_HOLD_MAX        65536
#define LLMR_SCAN_LIMIT      16384
#define LLMR_HOLD_MIN        1024
#define LLMR_TOKEN_MAX       4096

/* an offset that has not been seen yet */
#define LLMR_NO_OFFSET       UINT64_MAX


typedef struct {
    size_t                 len;
    const unsigned char   *data;
} llmr_str_t;


/*
 * The API dialects a client or a provider speaks.  Each is a row of
 * llmr_dialects[]: how its requests are read, where its usage is, what
 * its errors look like and how its answers are judged.  Nothing outside
 * that table asks which dialect it is.
 */

typedef enum {
    LLMR_API_CHAT = 0,                  /* OpenAI Chat Completions */
    LLMR_API_MESSAGES,                  /* Anthropic Messages */
    LLMR_API_RESPONSES,                 /* OpenAI Responses */
    LLMR_APIS
} llmr_api_e;

typedef struct llmr_request_s  llmr_request_t;
typedef struct llmr_dialect_s  llmr_dialect_t;

const llmr_dialect_t *llmr_dialect_find(const unsigned char *name,
    size_t len);
const llmr_dialect_t *llmr_dialect_of_path(const unsigned char *path,
    size_t len);

/* the JSON error of a dialect, with the status and its message */

size_t llmr_error_json_size(const unsigned char *message, size_t len);
unsigned char *llmr_error_json(const llmr_dialect_t *d, unsigned status,
    const unsigned char *message, size_t len, unsigned char *out);


/* byte classes, within the core */

#define LLMR_CT_ALPHA  0x01
#define LLMR_CT_DIGIT  0x02
#define LLMR_CT_WORD   0x04         /* letters, digits, '_', UTF-8 */
#define LLMR_CT_SPACE  0x08
#define LLMR_CT_CONT   0x10         /* a UTF-8 continuation byte */

extern const unsigned char  llmr_ctype[256];
extern const unsigned char  llmr_tolower[256];

#define llmr_lower(c)     llmr_tolower[(unsigned char) (c)]
#define llmr_is_alpha(c)  (llmr_ctype[(unsigned char) (c)] & LLMR_CT_ALPHA)
#define llmr_is_digit(c)  (llmr_ctype[(unsigned char) (c)] & LLMR_CT_DIGIT)
#define llmr_is_word(c)   (llmr_ctype[(unsigned char) (c)] & LLMR_CT_WORD)
#define llmr_is_space(c)  (llmr_ctype[(unsigned char) (c)] & LLMR_CT_SPACE)


/* keyword lists: case-insensitive whole words and phrases */

typedef struct {
    unsigned char         *text;        /* normalised in place */
    size_t                 len;
    unsigned               list;
} llmr_phrase_t;

typedef struct {
    llmr_phrase_t         *phrases;     /* sorted by first byte */
    unsigned               nphrases;
    unsigned               nlists;
    uint32_t               first[257];

    /* a bit for each pair of lower-case bytes a phrase can start with */
    uint8_t                pair[256 * 256 / 8];
} llmr_keywords_t;

#define llmr_keywords_pair(kw, a, b)                                          \
    ((kw)->pair[(llmr_lower(a) << 5) | (llmr_lower(b) >> 3)]                  \
     & (1 << (llmr_lower(b) & 7)))

int llmr_keywords_init(llmr_keywords_t *kw, llmr_phrase_t *phrases,
    unsigned nphrases, unsigned nlists);
uint64_t llmr_keywords_match(const llmr_keywords_t *kw,
    const unsigned char *p, size_t len);

uint32_t llmr_estimate_tokens(const unsigned char *p, size_t len);
int llmr_looks_like_code(const unsigned char *p, size_t len);


/* features of one chat request, filled by a single streaming pass */

#define LLMR_TOOLS_MAX  64

typedef struct {
    unsigned               api;             /* llmr_api_e */
    uint32_t               est_tokens;      /* current message + window */
    uint32_t               prompt_tokens;   /* estimate for the whole prompt */
    uint32_t               messages;
    uint64_t               keywords;        /* lists matched, bit per list */
    int64_t                max_tokens;      /* -1 when absent */

    unsigned               code:1;
    unsigned               tools:1;
    unsigned               stream:1;
    unsigned               stream_options:1;
    unsigned               model_present:1;
    unsigned               model_truncated:1;
    unsigned               json_mode:1;     /* response_format asks JSON */
    unsigned               thinking:1;      /* extended thinking, effort */
    unsigned               images:1;        /* an image or document part */
    unsigned               include_usage:1; /* the client asked for usage */
    unsigned               previous:1;      /* previous_response_id */

    /* the declared tools, by the hash of their name or type */
    uint32_t               tool[LLMR_TOOLS_MAX];
    unsigned               ntools;

    size_t                 model_len;
    unsigned char          model[LLMR_MODEL_NAME_MAX];

    uint32_t               current;         /* index of the current message */
    double                 score;           /* -1 without a classifier */

    /* the verdict of a triage model, once it is asked: LLMR_TRIAGE_* */
    unsigned               triage;
    size_t                 triage_len;
    unsigned char          triage_label[LLMR_LABEL_MAX];

    /* byte offsets in the body, for the rewrite */
    uint64_t               object_start;    /* just after the top '{' */
    uint64_t               model_start;     /* the raw "model" value */
    uint64_t               model_end;
    uint64_t               options_start;   /* "stream_options" value */
    uint64_t               options_end;
    uint64_t               options_object;  /* just after its '{' */
    unsigned               options_members;
    uint64_t               usage_start;     /* its "include_usage" value */
    uint64_t               usage_end;
    uint64_t               body_len;
} llmr_features_t;

uint32_t llmr_tool_hash(const unsigned char *p, size_t len);


/* what the router knows of a message, or of a run of messages */

typedef struct {
    uint32_t               tokens;
    uint32_t               code;

    /* for the classifier */
    uint32_t               features;        /* hashed text features */
    uint32_t               numbers;
    uint32_t               questions;
    uint32_t               lines;
    double                 weight;          /* of its text features */
} llmr_message_t;


/* learned scoring: logistic regression over hashed features */

#define LLMR_CLASSIFIER_VERSION    1
#define LLMR_CLASSIFIER_BITS_MIN   8
#define LLMR_CLASSIFIER_BITS_MAX   24
#define LLMR_HISTORY_FACTOR        0.5

typedef struct {
    unsigned               bits;
    uint32_t               mask;
    unsigned               history;         /* trained with, in messages */
    float                  bias;
    const float           *weights;         /* 1 << bits of them */
} llmr_classifier_t;

typedef void (*llmr_feature_pt)(void *data, unsigned message, uint32_t hash);

int llmr_classifier_load(llmr_classifier_t *c, const unsigned char *p,
    size_t len, char *err, size_t errlen);
size_t llmr_classifier_size(unsigned bits);

#define LLMR_SCORE_MAX  16          /* "0.123456", or "null" */

size_t llmr_score_format(unsigned char *buf, double score);
void llmr_classifier_write(unsigned char *out, unsigned bits,
    unsigned history, float bias, const float *weights);


/*
 * The text of the last messages, kept while the body is parsed, for the
 * prompt of a triage model: a ring of slots of the caller's memory, each
 * the head of one message; the current user message's slot is kept out
 * of the ring so that the messages after it do not overwrite it.
 */

#define LLMR_SLOTS_MAX  17

enum {
    LLMR_ROLE_OTHER = 0,
    LLMR_ROLE_USER,
    LLMR_ROLE_ASSISTANT,
    LLMR_ROLE_SYSTEM,
    LLMR_ROLE_TOOL
};

typedef struct {
    unsigned char         *text;
    size_t                 len;
    uint32_t               message;         /* its index in "messages" */
    unsigned               role;
} llmr_slot_t;

typedef struct {
    llmr_slot_t            slot[LLMR_SLOTS_MAX];
    unsigned               nslots;
    size_t                 size;            /* of each slot */
    unsigned               fill;            /* the message being parsed */
    int                    current;         /* -1 before the first */
} llmr_capture_t;

int llmr_capture_init(llmr_capture_t *c, unsigned char *buf, size_t size,
    unsigned nslots);


/*
 * The state of a check of a JSON string's body, as yajl checks it, that
 * goes on across buffers; all zero between characters.
 */
typedef struct {
    unsigned               escape:1;        /* a backslash was the last */
    unsigned               hex:3;           /* digits of \uXXXX to come */
    unsigned               utf8:2;          /* continuation bytes to come */
} llmr_json_check_t;

#define llmr_json_between(c)  (!(c)->escape && !(c)->hex && !(c)->utf8)


/*
 * A string's text: all of it decoded in head, or of a long one its
 * first and last bytes decoded in head and tail; read is how many bytes
 * of the body they come from, and rest how many more the string has,
 * only counted.
 */
typedef struct {
    const unsigned char   *head;
    size_t                 head_len;
    const unsigned char   *tail;
    size_t                 tail_len;
    uint64_t               read;
    uint64_t               rest;
} llmr_text_t;

/* strings from this long are read without yajl */
#define LLMR_STAND_IN_MIN         256
#define LLMR_SCRATCH_SIZE(limit)  ((limit) + 8)


struct llmr_request_s {
    yajl_handle            yajl;
    const llmr_dialect_t  *dialect;
    const llmr_keywords_t *keywords;
    unsigned               history;

    /* set after llmr_request_init() to score, or to collect features */
    const llmr_classifier_t  *classifier;
    llmr_feature_pt        feature;
    void                  *feature_data;

    llmr_features_t        f;

    const unsigned char   *chunk;
    size_t                 chunk_len;
    uint64_t               base;            /* offset of the chunk */

    /* a value whose first byte is looked for after its key */
    uint64_t               key_end;
    uint64_t              *value_start;

    /*
     * a string cut by the end of a chunk, given to yajl once complete;
     * of a string longer than hold_max, the head is kept and the rest
     * checked and counted; with a window, only its head and a ring of
     * its tail (see llmr_hold_window())
     */
    unsigned char         *hold;
    size_t                 hold_len;
    size_t                 hold_size;
    size_t                 hold_max;        /* set after llmr_request_init */
    size_t                 hold_prefix;     /* bytes held before the string */

    /*
     * of a text longer than scan_limit, its first and last halves are
     * read for features and counted, the rest only counted (0: none)
     */
    size_t                 scan_limit;
    uint64_t               skipped;         /* bytes of it not kept */
    llmr_json_check_t      skip;            /* and their check */
    size_t                 token_len;       /* a number cut, so far */
    unsigned               in_string:1;
    unsigned               escaped:1;
    unsigned               skipping:1;

    /*
     * a long string is checked and decoded here, its window into
     * scratch, and yajl is given "" in its place (see llmr_stand_in());
     * scratch, LLMR_SCRATCH_SIZE(scan_limit) bytes, may be set after
     * llmr_request_init(), and shared by requests parsed one at a time
     */
    unsigned char         *scratch;
    size_t                 scratch_size;
    unsigned               scratch_own:1;
    llmr_text_t            text;            /* the string stood in */
    uint64_t               stand_in;        /* its bytes past "" */

    /* the last bytes of a string held with a window, a ring */
    unsigned char         *tail;
    size_t                 tail_size;
    size_t                 tail_next;

    unsigned               depth;
    unsigned               seen;            /* top-level keys, a bit each */
    unsigned char          key[LLMR_DEPTH_MAX + 1];

    /* the message being parsed */
    llmr_message_t         msg;
    uint64_t               msg_keywords;
    unsigned               msg_role;        /* LLMR_ROLE_* */

    /* set after llmr_request_init() to keep the text of messages */
    llmr_capture_t        *capture;

    /* the current turn, and the history window before it */
    llmr_message_t         turn;
    llmr_message_t         window;

    /* the last messages, a ring of history, for the history window */
    llmr_message_t        *ring;
    unsigned               ring_next;
    unsigned               ring_len;
    unsigned               seen_user:1;
    unsigned               seen_messages:1;

    char                   error[LLMR_ERROR_MAX];
};

int llmr_request_init(llmr_request_t *rq, const llmr_dialect_t *d,
    const llmr_keywords_t *kw, unsigned history);
int llmr_request_feed(llmr_request_t *rq, const unsigned char *p,
    size_t len);
int llmr_request_finish(llmr_request_t *rq);
void llmr_request_free(llmr_request_t *rq);

/*
 * The parts of the score, for a trainer that collects the features: a
 * feature counts factor(message) * scale times; dense features once.
 */
double llmr_message_factor(const llmr_request_t *rq, unsigned message);
double llmr_text_scale(const llmr_request_t *rq);
void llmr_dense_features(const llmr_request_t *rq, llmr_feature_pt emit,
    void *data);

/* within the core */

#define LLMR_FNV_OFFSET  2166136261u
#define LLMR_FNV_PRIME   16777619u

uint32_t llmr_text_scan(llmr_request_t *rq, const llmr_keywords_t *kw,
    uint64_t *found, const unsigned char *p, size_t len);
uint32_t llmr_number_hash(size_t len);
void llmr_word(llmr_request_t *rq, uint32_t word, uint32_t *prev);
void llmr_score(llmr_request_t *rq);

/*
 * The rewrite is a splice or two, in the order of the body: its bytes
 * [start, end) are replaced by len bytes of the caller's buffer out, at
 * data.  "upstream" is the new model value as a JSON string literal,
 * quotes included.  A chat stream is also made to carry its usage.
 */

#define LLMR_EDITS_MAX  2

typedef struct {
    uint64_t               start;
    uint64_t               end;
    unsigned char         *data;
    size_t                 len;
} llmr_edit_t;

size_t llmr_rewrite_size(const llmr_features_t *f, size_t upstream_len);
unsigned llmr_rewrite(const llmr_features_t *f, const llmr_str_t *upstream,
    unsigned char *out, llmr_edit_t *edits);


/* models, prices and cost; prices are pico-USD per token */

typedef struct {
    llmr_str_t             name;
    llmr_str_t             upstream;
    unsigned               api;             /* the dialect it speaks */
    uint64_t               price_in;
    uint64_t               price_out;
    uint64_t               price_cached;        /* read from a cache */
    uint64_t               price_cache_write;   /* written to it */
    uint64_t               context;
} llmr_model_t;

/* the tokens of an answer, as the provider counted them */

typedef struct {
    uint64_t               prompt;          /* every input token */
    uint64_t               completion;      /* reasoning included */
    uint64_t               cached;          /* of prompt: cache reads */
    uint64_t               cache_write;     /* of prompt: cache writes */
    uint64_t               reasoning;       /* of completion */
} llmr_tokens_t;

void llmr_model_prices(llmr_model_t *m, const llmr_dialect_t *d,
    int cached_set, int cache_write_set);

int llmr_model_find(const llmr_model_t *models, unsigned n, unsigned api,
    const unsigned char *name, size_t len);
int llmr_price_parse(const unsigned char *p, size_t len, uint64_t *price);
uint64_t llmr_cost(const llmr_model_t *m, const llmr_tokens_t *t);

#define LLMR_USD_MAX  32        /* "18446744.073709551615" and more */

size_t llmr_usd_format(unsigned char *buf, uint64_t pico);


/* rules: conditions are ANDed, the first rule that matches wins */

typedef enum {
    LLMR_COND_TOKENS_GT = 0,
    LLMR_COND_TOKENS_LT,
    LLMR_COND_MESSAGES_GT,
    LLMR_COND_MESSAGES_LT,
    LLMR_COND_CODE,
    LLMR_COND_TOOLS,
    LLMR_COND_KEYWORDS,
    LLMR_COND_SCORE_GT,
    LLMR_COND_SCORE_LT,
    LLMR_COND_TRIAGE,
    LLMR_COND_THINKING,
    LLMR_COND_IMAGES,
    LLMR_COND_TOOL,
    LLMR_COND_EXTERNAL          /* evaluated by the caller */
} llmr_cond_type_e;

typedef struct {
    llmr_cond_type_e       type;
    unsigned               negate;
    uint64_t               arg;
    double                 score;
    llmr_str_t             name;    /* keywords list, triage label, tool,
                                       or the external text */
} llmr_cond_t;

typedef struct {
    llmr_str_t             name;
    llmr_cond_t           *conds;
    unsigned               nconds;
    unsigned               model;
} llmr_rule_t;

typedef int (*llmr_external_pt)(void *data, const llmr_cond_t *cond);

/*
 * The walk stops at the first triage condition it reaches while the
 * verdict is unknown: the caller asks the triage model, sets the verdict
 * (or LLMR_TRIAGE_FAILED) and walks again.
 */
#define LLMR_RULES_PENDING  -2

int llmr_cond_parse(llmr_cond_t *cond, const unsigned char *p, size_t len,
    char *err, size_t errlen);
int llmr_rules_eval(const llmr_rule_t *rules, unsigned n,
    const llmr_features_t *f, llmr_external_pt external, void *data);


/* triage by a small model: its request, and the label of its answer */

#define LLMR_TRIAGE_UNKNOWN  0
#define LLMR_TRIAGE_DONE     1
#define LLMR_TRIAGE_FAILED   2          /* no triage condition holds */

typedef struct {
    const llmr_dialect_t  *dialect;         /* the triage model's */
    llmr_str_t             model;           /* the provider's model name */
    llmr_str_t             prompt;          /* the system message */
    unsigned               max_tokens;
    size_t                 history;         /* bytes of earlier messages */
} llmr_triage_t;

size_t llmr_triage_body_size(const llmr_request_t *rq,
    const llmr_triage_t *t);
unsigned char *llmr_triage_body(const llmr_request_t *rq,
    const llmr_triage_t *t, unsigned char *out);
int llmr_triage_label(const unsigned char *content, size_t len,
    const llmr_str_t *field, unsigned char *label, size_t *label_len);
int llmr_label_valid(const unsigned char *p, size_t len);


/* usage of a provider response: a JSON body or an SSE stream */

enum {
    LLMR_USAGE_PROMPT = 0,
    LLMR_USAGE_COMPLETION,
    LLMR_USAGE_CACHED,
    LLMR_USAGE_CACHE_WRITE,
    LLMR_USAGE_REASONING,
    LLMR_USAGE_FIELDS
};

typedef struct {
    const llmr_dialect_t  *dialect;
    int64_t                tokens[LLMR_USAGE_FIELDS];  /* -1: not seen */

    unsigned               sse:1;
    unsigned               in_string:1;
    unsigned               escape:1;
    unsigned               expect_key:1;
    unsigned               in_key:1;
    unsigned               in_content:1;
    unsigned               wrapper:1;           /* in "message", "response" */

    unsigned               line;                /* SSE line state */
    unsigned               depth;
    uint64_t               objects;             /* bit per depth */
    unsigned               usage_depth;
    unsigned               details_depth;       /* "..._tokens_details" */
    unsigned               details;             /* whose it is */
    unsigned               field;               /* what the value is */
    unsigned               number_field;        /* what the digits are */
    int64_t                number;
    unsigned               key_len;
    unsigned char          key[32];

    uint64_t               content_bytes;       /* of the answer text */

    /* the answer text, kept as the JSON string bodies that carry it */
    unsigned char         *text;
    size_t                 text_size;
    size_t                 text_len;            /* bytes written */
    size_t                 text_whole;          /* a prefix of them */
    unsigned               text_hex:3;          /* \uXXXX digits to come */
    unsigned               text_full:1;
} llmr_usage_t;

void llmr_usage_init(llmr_usage_t *u, const llmr_dialect_t *d, int sse);
void llmr_usage_feed(llmr_usage_t *u, const unsigned char *p, size_t len);
int llmr_usage_tokens(const llmr_usage_t *u, llmr_tokens_t *t);

/*
 * The text of the answer is also kept in buf, JSON-escaped as the
 * provider sent it: the strings whose bytes content_bytes counts, one
 * after another.  llmr_usage_text() tells how much of buf is a valid
 * JSON string body: up to size bytes, cut between characters and
 * escapes; a control character, invalid in a JSON string, is a space.
 */
void llmr_usage_keep_text(llmr_usage_t *u, unsigned char *buf, size_t size);
size_t llmr_usage_text(const llmr_usage_t *u);

/*
 * A line of a chat stream whose usage the router asked for and the
 * client did not: the usage chunk is dropped (*drop is set), and
 * "usage":null is taken out of the other chunks.  Of a line too long to
 * be held whole, only its end is given (whole is 0): the usage chunk is
 * short, and "usage":null is a chunk's last member.  out has room for
 * len bytes; returns the bytes written.
 */
size_t llmr_usage_unasked(const unsigned char *p, size_t len, int whole,
    unsigned char *out, int *drop);
uint64_t llmr_usage_content_tokens(const llmr_usage_t *u);


/* the answer of a model: should a stronger one answer instead? */

#define LLMR_ANSWER_TOOLS  4

typedef enum {
    LLMR_VERDICT_OK = 0,
    LLMR_VERDICT_LENGTH,                /* finish_reason "length" */
    LLMR_VERDICT_CONTENT_FILTER,        /* finish_reason "content_filter" */
    LLMR_VERDICT_EMPTY,                 /* no content but white space */
    LLMR_VERDICT_SHORT,                 /* fewer characters than asked */
    LLMR_VERDICT_PATTERN,               /* a refusal or hedging pattern */
    LLMR_VERDICT_REQUIRED,              /* no required pattern matches */
    LLMR_VERDICT_JSON,                  /* JSON was asked, not answered */
    LLMR_VERDICT_TOOL_ARGS,             /* tool call arguments not JSON */
    LLMR_VERDICT_UNREADABLE             /* not a chat completion */
} llmr_verdict_e;

typedef int (*llmr_pattern_pt)(void *data, const unsigned char *p,
    size_t len);

typedef struct {
    unsigned               finish:1;
    unsigned               empty:1;
    unsigned               json:1;
    unsigned               tool_args:1;
    uint32_t               min_length;      /* characters, 0: no check */
    llmr_pattern_pt        pattern;         /* 1 when the content matches */
    void                  *pattern_data;
    llmr_pattern_pt        require;         /* 0 when it does not */
    void                  *require_data;
} llmr_criteria_t;

typedef struct {
    const llmr_dialect_t  *dialect;
    const llmr_criteria_t *criteria;
    unsigned char         *content;         /* the caller's buffer */
    size_t                 content_len;
    size_t                 size;
    unsigned char          finish[32];
    unsigned               tool_calls:1;
    unsigned               json_invalid:1;
    unsigned               args_invalid:1;
} llmr_answer_t;

int llmr_answer_init(llmr_answer_t *a, const llmr_dialect_t *d,
    const llmr_criteria_t *c, unsigned char *buf, size_t size);
llmr_verdict_e llmr_answer_check(llmr_answer_t *a, const unsigned char *p,
    size_t len, int sse);
const char *llmr_verdict_name(llmr_verdict_e v);


/*
 * Within the core: how a dialect reads a request.  Keys get ids that
 * the dialects share; the keys up to LLMR_KEY_UNIQUE must not repeat.
 */

enum {
    LLMR_KEY_OTHER = 0,
    LLMR_KEY_MODEL,
    LLMR_KEY_MESSAGES,              /* "messages", or "input" */
    LLMR_KEY_STREAM,
    LLMR_KEY_STREAM_OPTIONS,
    LLMR_KEY_SYSTEM,                /* "system", or "instructions" */
    LLMR_KEY_TOOLS,                 /* and the older "functions" */
    LLMR_KEY_MAX_TOKENS,
    LLMR_KEY_FORMAT,                /* "response_format", "text" */
    LLMR_KEY_REASONING,             /* "reasoning_effort", "reasoning" */
    LLMR_KEY_THINKING,
    LLMR_KEY_PREVIOUS,              /* "previous_response_id" */

    /* in nested objects */
    LLMR_KEY_TYPE,
    LLMR_KEY_ROLE,
    LLMR_KEY_CONTENT,
    LLMR_KEY_TEXT,
    LLMR_KEY_NAME,
    LLMR_KEY_FUNCTION,
    LLMR_KEY_INCLUDE_USAGE,
    LLMR_KEY_EFFORT,
    LLMR_KEY_INPUT,
    LLMR_KEY_ARGUMENTS,
    LLMR_KEY_OUTPUT,
    LLMR_KEY_SUMMARY
};

#define LLMR_KEY_UNIQUE  LLMR_KEY_SYSTEM

typedef struct {
    const char            *name;
    unsigned               key;
} llmr_key_name_t;

/* what a string of a request is to the router */

typedef enum {
    LLMR_TEXT_NONE = 0,             /* ids, signatures, image data */
    LLMR_TEXT_MESSAGE,              /* what a message says */
    LLMR_TEXT_TOKENS,               /* of a message, only counted */
    LLMR_TEXT_PROMPT,               /* outside the messages: counted */
    LLMR_TEXT_ROLE,
    LLMR_TEXT_TYPE,                 /* of a content part or an item */
    LLMR_TEXT_TOOL,                 /* a declared tool's name or type */
    LLMR_TEXT_EFFORT,               /* of reasoning */
    LLMR_TEXT_THINKING,             /* the type of "thinking" */
    LLMR_TEXT_FORMAT                /* the type of the answer's format */
} llmr_text_e;

struct llmr_dialect_s {
    llmr_api_e             api;
    llmr_str_t             name;            /* as in nginx.conf */
    llmr_str_t             path;            /* the end of its URIs */
    const char            *input;           /* the conversation's key */
    const llmr_key_name_t *top_keys;
    llmr_text_e          (*text)(const llmr_request_t *rq);

    unsigned               input_string:1;  /* a string is one message */
    unsigned               stream_usage:1;  /* streamed only if asked */
    unsigned               cache_apart:1;   /* input excludes the cache */

    /* prices of cached tokens, without cached= and cache_write= */
    unsigned               cached_permille;
    unsigned               cache_write_permille;

    unsigned char       *(*error)(unsigned char *out, const char *type,
                                  const unsigned char *message, size_t len);
    const char          *(*error_type)(unsigned status);

    const yajl_callbacks  *answer;          /* reads an answer */

    /* the strings of an answer that are its text, for an estimate */
    const char *const     *text_keys;
    const char *const     *stream_text_keys;

    /* a triage request: model, prompt, user text, max_tokens between */
    const char            *triage[5];
    unsigned               triage_min_tokens;

    /* a header the API requires, for requests the router makes */
    llmr_str_t             header;
    llmr_str_t             header_value;
};

extern const llmr_dialect_t  llmr_dialects[LLMR_APIS];

extern const yajl_callbacks  llmr_chat_answer;
extern const yajl_callbacks  llmr_messages_answer;
extern const yajl_callbacks  llmr_responses_answer;


/*
 * RESP, the protocol of Redis: the commands the module sends, and the
 * replies it reads.  An array's elements are integers, as the module's
 * scripts return.
 */

#define LLMR_RESP_ITEMS      128
#define LLMR_RESP_LINE_MAX   1024

typedef enum {
    LLMR_RESP_STATUS = 1,               /* +OK */
    LLMR_RESP_ERROR,                    /* -ERR ... */
    LLMR_RESP_INTEGER,                  /* :1 */
    LLMR_RESP_BULK,                     /* $3 abc, or $-1: nil */
    LLMR_RESP_ARRAY                     /* *2 :1 :2 */
} llmr_resp_type_e;

typedef struct {
    llmr_resp_type_e       type;
    int64_t                integer;
    llmr_str_t             text;        /* a status, error or bulk's */
    unsigned               nil:1;
    unsigned               nitems;
    int64_t                items[LLMR_RESP_ITEMS];
} llmr_resp_t;

size_t llmr_resp_command_size(unsigned argc, const llmr_str_t *argv);
unsigned char *llmr_resp_command(unsigned char *p, unsigned argc,
    const llmr_str_t *argv);

/*
 * A reply at the start of p: LLMR_OK, and *used is its length (the text
 * of the reply points into p); LLMR_AGAIN when it is not whole yet;
 * LLMR_ERROR when p is no reply the module reads.
 */
int llmr_resp_parse(const unsigned char *p, size_t len, llmr_resp_t *reply,
    size_t *used);


/* JSON strings */

/* LLMR_OK, or LLMR_JSON_INVALID or LLMR_JSON_UTF8 at *used */
#define LLMR_JSON_INVALID    1
#define LLMR_JSON_UTF8       2

int llmr_json_check(llmr_json_check_t *c, const unsigned char *p,
    size_t len, size_t *used);
unsigned char *llmr_json_unescape(unsigned char *dst, const unsigned char *p,
    size_t len);
unsigned char *llmr_utf8_encode(unsigned char *dst, uint32_t cp);

size_t llmr_json_escape_size(const unsigned char *p, size_t len);
unsigned char *llmr_json_escape(unsigned char *dst, const unsigned char *p,
    size_t len);


#endif /* _LLMR_H_INCLUDED_ */
