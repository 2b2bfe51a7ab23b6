
/*
 * Copyright (C) the ngx_http_llm_router_module authors
 *
 * llm-router judge: labels from shadow pairs.  nginx answered a request
 * with the cheap model and, in the shadow, with the strong one; a judge
 * model is asked which answer is better, twice, the answers changing
 * places, so that its liking for a position cancels out.  Both times the
 * strong answer: label 1; both times the cheap one or a tie: 0; the two
 * orders disagree: 0.5.  The lines written are those train reads.
 *
 * The calls go a number at a time (libcurl's multi interface); a failed
 * call is retried, after a pause that doubles, and a pair whose calls
 * never give a verdict is left out and counted: a judge that fails does
 * not fail the run.
 */


#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <curl/curl.h>

#include "llm_router.h"


#define LR_JUDGE_ANSWER_MAX   65536     /* a judge answers a word */
#define LR_JUDGE_TEXT         256       /* of its text, the head is read */
#define LR_JUDGE_FILE_MAX     1048576   /* a prompt, a key */
#define LR_JUDGE_BACKOFF      0.2       /* seconds before the first retry */
#define LR_JUDGE_WAIT_MAX     1000      /* ms a poll waits at most */
#define LR_JUDGE_ORDERS       2


/* what an order says: the judge preferred the strong answer, or not */

enum {
    LR_VERDICT_NONE = 0,
    LR_VERDICT_STRONG,
    LR_VERDICT_CHEAP
};

/* what a call gave */

enum {
    LR_CALL_VERDICT = 0,
    LR_CALL_GARBAGE,                    /* no A, B or TIE: retried at once */
    LR_CALL_RETRY,                      /* 429, 5xx, network: after a pause */
    LR_CALL_FAILED                      /* any other status: not retried */
};


/*
 * A pair: its line, whose id, request, rule and model are echoed as they
 * were written, and the judge's request for each order (the cheap answer
 * is A in the first, B in the second).
 */

typedef struct {
    unsigned char     *line;
    llmr_str_t         id;
    llmr_str_t         request;
    llmr_str_t         rule;
    llmr_str_t         model;
    unsigned char     *body[LR_JUDGE_ORDERS];
    size_t             len[LR_JUDGE_ORDERS];
    unsigned           tries[LR_JUDGE_ORDERS];
    double             at[LR_JUDGE_ORDERS];         /* a retry, not before */
    unsigned           verdict[LR_JUDGE_ORDERS];
} lr_pair_t;

/* the texts a judge request is made of */

typedef struct {
    const unsigned char  *question;
    size_t                question_len;
    const unsigned char  *a;
    size_t                a_len;
    const unsigned char  *b;
    size_t                b_len;
} lr_texts_t;

typedef struct {
    lr_http_t          http;
    size_t             job;                 /* pair * 2 + order */
    unsigned           busy:1;
} lr_call_t;

typedef struct {
    const char            *url;
    const char            *model;
    const char            *key_file;
    const char            *prompt_file;
    const char            *path;
    const llmr_dialect_t  *api;             /* the judge's */
    unsigned               concurrency;
    unsigned               retries;
    unsigned               timeout;
    struct curl_slist     *headers;

    unsigned char         *prompt;          /* the user message, {a} ... */
    size_t                 prompt_len;

    lr_pair_t             *pairs;
    size_t                 n;
    size_t                 size;

    size_t                *waiting;         /* jobs to retry */
    size_t                 nwaiting;

    size_t                 lines;
    size_t                 bad_status;
    size_t                 no_answer;
    size_t                 calls;
    size_t                 garbage;
    size_t                 http_errors;
    size_t                 network_errors;
    char                   error[CURL_ERROR_SIZE + 64];    /* the first */
} lr_judge_t;


static int lr_judge_options(lr_judge_t *j, int argc, char **argv);
static int lr_judge_key(lr_judge_t *j);
static int lr_judge_prompt(lr_judge_t *j);
static int lr_has(const unsigned char *p, size_t len, const char *s);
static unsigned char *lr_judge_file(const char *path, size_t *len);
static int lr_judge_load(lr_judge_t *j);
static int lr_pair_read(lr_judge_t *j, lr_input_t *in);
static int lr_pair_fill(lr_judge_t *j, const lr_input_t *in,
    const lr_record_t *rec, const lr_texts_t *t);
static int lr_raw_string(const lr_record_t *rec, unsigned field);
static int lr_question(const llmr_str_t *body, const llmr_dialect_t *d,
    unsigned char **text, size_t *len, char *err, size_t errlen);
static size_t lr_judge_body(const lr_judge_t *j, const lr_texts_t *t,
    unsigned char *out);
static size_t lr_put(unsigned char *out, size_t at, const void *p,
    size_t len, int escape);
static int lr_judge_run(lr_judge_t *j);
static int lr_call_start(CURLM *multi, lr_call_t *c, lr_judge_t *j,
    size_t job);
static void lr_call_done(lr_judge_t *j, lr_call_t *c, CURLcode result,
    double now);
static unsigned lr_call_verdict(lr_judge_t *j, const lr_call_t *c,
    unsigned order, unsigned *verdict);
static int lr_job_due(lr_judge_t *j, double now, size_t *job);
static int lr_job_wait(const lr_judge_t *j, double now, int idle);
static double lr_now(void);
static void lr_judge_print(const lr_judge_t *j);
static void lr_judge_summary(const lr_judge_t *j);
static void lr_judge_free(lr_judge_t *j);


/*
 * The words to the judge: the system message, and the user message
 * whose {question}, {a} and {b} are filled (--prompt replaces it).
 */

static const char  lr_judge_system[] =
    "You compare two answers to the same question for correctness, "
    "completeness and clarity, not for their position or their length. "
    "Reply with one word: A, B or TIE.";

static const char  lr_judge_prompt_default[] =
    "Question:\n{question}\n\nAnswer A:\n{a}\n\nAnswer B:\n{b}\n\n"
    "Which answer is better? Reply with A, B, or TIE.";

/* a judge request in each API: model, system, user message, the end */

static const char  *lr_judge_parts[LLMR_APIS][4] = {

    { "{\"model\":\"",
      "\",\"messages\":[{\"role\":\"system\",\"content\":\"",
      "\"},{\"role\":\"user\",\"content\":\"",
      "\"}],\"max_tokens\":8,\"temperature\":0}" },

    { "{\"model\":\"",
      "\",\"system\":\"",
      "\",\"messages\":[{\"role\":\"user\",\"content\":\"",
      "\"}],\"max_tokens\":8,\"temperature\":0}" },

    /*
     * a Responses model takes 16 output tokens at least, and a reasoning
     * model refuses a temperature
     */

    { "{\"model\":\"",
      "\",\"instructions\":\"",
      "\",\"input\":\"",
      "\",\"max_output_tokens\":16}" }
};

static const char  *lr_verdict_names[] = { NULL, "strong", "cheap", "split" };


int
lr_cmd_judge(int argc, char **argv)
{
    int         status;
    lr_judge_t  j;

    memset(&j, 0, sizeof(lr_judge_t));

    status = lr_judge_options(&j, argc, argv);

    if (status == 0
        && (lr_judge_key(&j) != LLMR_OK || lr_judge_prompt(&j) != LLMR_OK
            || lr_judge_load(&j) != LLMR_OK))
    {
        status = LR_EXIT_FAILURE;
    }

    if (status == 0 && j.n) {
        if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) {
            lr_error("judge: libcurl failed to initialise");
            status = LR_EXIT_FAILURE;

        } else {
            status = (lr_judge_run(&j) == LLMR_OK) ? 0 : LR_EXIT_FAILURE;
            curl_global_cleanup();
        }
    }

    if (status == 0) {
        lr_judge_print(&j);
        lr_judge_summary(&j);
    }

    lr_judge_free(&j);

    return status;
}


static int
lr_judge_options(lr_judge_t *j, int argc, char **argv)
{
    int           n;
    lr_list_t     headers;
    lr_option_t   opts[] = {
        { "url", LR_OPT_STRING, &j->url, 0, 0 },
        { "model", LR_OPT_STRING, &j->model, 0, 0 },
        { "api", LR_OPT_API, &j->api, 0, 0 },
        { "key-file", LR_OPT_STRING, &j->key_file, 0, 0 },
        { "header", LR_OPT_LIST, &headers, 0, 0 },
        { "concurrency", LR_OPT_UINT, &j->concurrency, 1, 1000 },
        { "retries", LR_OPT_UINT, &j->retries, 0, 10 },
        { "timeout", LR_OPT_UINT, &j->timeout, 1, 3600 },
        { "prompt", LR_OPT_STRING, &j->prompt_file, 0, 0 }
    };

    memset(&headers, 0, sizeof(lr_list_t));
    j->api = &llmr_dialects[LLMR_API_CHAT];
    j->concurrency = LR_CONCURRENCY_DEFAULT;
    j->retries = LR_RETRIES_DEFAULT;
    j->timeout = LR_TIMEOUT_DEFAULT;

    /* --api is the judge's: lines without "api" are chat requests */

    n = lr_options_parse(argc, argv, opts, lr_nelts(opts));

    if (n >= 0 && (j->url == NULL || j->model == NULL || n != 1)) {
        lr_error("judge: --url URL, --model M and one PAIRS.jsonl expected");
        n = -1;
    }

    j->path = argv[0];

    if (n < 0) {
        free(headers.items);
        return LR_EXIT_USAGE;
    }

    return lr_http_options(&j->headers, &headers, j->api, "judge");
}


/*
 * The key, its file trimmed, as the API takes it: a bearer token for
 * OpenAI, x-api-key for Anthropic.  It is never printed.
 */

static int
lr_judge_key(lr_judge_t *j)
{
    int             rc;
    char           *header;
    size_t          len, i;
    unsigned char  *key, *p;

    if (j->key_file == NULL) {
        return LLMR_OK;
    }

    key = lr_judge_file(j->key_file, &len);

    if (key == NULL) {
        return LLMR_ERROR;
    }

    p = key;

    while (len && llmr_is_space(p[len - 1])) {
        len--;
    }

    while (len && llmr_is_space(*p)) {
        p++;
        len--;
    }

    for (i = 0; i < len; i++) {
        if (p[i] < 0x20 || p[i] == 0x7f) {
            break;
        }
    }

    if (len == 0 || i < len) {
        lr_error("judge: %s: %s", j->key_file,
                 len ? "the key is more than one line" : "no key");
        free(key);
        return LLMR_ERROR;
    }

    header = malloc(len + sizeof("Authorization: Bearer "));

    if (header == NULL) {
        lr_error("out of memory");
        free(key);
        return LLMR_ERROR;
    }

    sprintf(header, "%s%.*s",
            j->api->api == LLMR_API_MESSAGES ? "x-api-key: "
                                             : "Authorization: Bearer ",
            (int) len, p);

    rc = lr_http_header(&j->headers, header);

    /* curl has its copy */

    memset(header, 0, len + sizeof("Authorization: Bearer "));
    memset(key, 0, p - key + len);
    free(header);
    free(key);

    if (rc != LLMR_OK) {
        lr_error("out of memory");
    }

    return rc;
}


static int
lr_judge_prompt(lr_judge_t *j)
{
    if (j->prompt_file == NULL) {
        j->prompt = malloc(sizeof(lr_judge_prompt_default) - 1);

        if (j->prompt == NULL) {
            lr_error("out of memory");
            return LLMR_ERROR;
        }

        j->prompt_len = sizeof(lr_judge_prompt_default) - 1;
        memcpy(j->prompt, lr_judge_prompt_default, j->prompt_len);

        return LLMR_OK;
    }

    j->prompt = lr_judge_file(j->prompt_file, &j->prompt_len);

    if (j->prompt == NULL) {
        return LLMR_ERROR;
    }

    /* a judge that is not shown both answers has nothing to judge */

    if (!lr_has(j->prompt, j->prompt_len, "{a}")
        || !lr_has(j->prompt, j->prompt_len, "{b}"))
    {
        lr_error("judge: %s: the prompt has no {a} or no {b}",
                 j->prompt_file);
        return LLMR_ERROR;
    }

    return LLMR_OK;
}


static int
lr_has(const unsigned char *p, size_t len, const char *s)
{
    size_t  i, n;

    n = strlen(s);

    for (i = 0; i + n <= len; i++) {
        if (memcmp(p + i, s, n) == 0) {
            return 1;
        }
    }

    return 0;
}


static unsigned char *
lr_judge_file(const char *path, size_t *len)
{
    FILE           *file;
    unsigned char  *p;

    file = fopen(path, "rb");

    if (file == NULL) {
        lr_error("%s: %s", path, strerror(errno));
        return NULL;
    }

    p = lr_file_read(file, LR_JUDGE_FILE_MAX, len);

    if (p == NULL) {
        lr_error("%s: %s", path, strerror(errno));

    } else if (*len == LR_JUDGE_FILE_MAX) {
        lr_error("%s: larger than %d bytes", path, LR_JUDGE_FILE_MAX - 1);
        free(p);
        p = NULL;
    }

    fclose(file);

    return p;
}


/* every line is read, and checked, before the first call is made */

static int
lr_judge_load(lr_judge_t *j)
{
    int         rc;
    lr_input_t  in;

    if (lr_input_open(&in, j->path) != LLMR_OK) {
        return LLMR_ERROR;
    }

    while ((rc = lr_input_next(&in)) == LLMR_OK) {
        j->lines++;

        if (lr_pair_read(j, &in) != LLMR_OK) {
            rc = LLMR_ERROR;
            break;
        }
    }

    lr_input_close(&in);

    if (rc == LLMR_ERROR) {
        return LLMR_ERROR;
    }

    j->waiting = malloc((2 * j->n + 1) * sizeof(size_t));

    if (j->waiting == NULL) {
        lr_error("out of memory");
        return LLMR_ERROR;
    }

    return LLMR_OK;
}


/*
 * A pair line: skipped, and counted, when the shadow call did not answer
 * (its shadow_status is not 2xx) or an answer is missing or empty; a line
 * that is not a pair record stops the run, as in every command.
 */

static int
lr_pair_read(lr_judge_t *j, lr_input_t *in)
{
    int                    rc;
    char                   err[LLMR_ERROR_MAX];
    double                 status;
    size_t                 cheap_len, strong_len;
    lr_texts_t             t;
    llmr_str_t             body;
    lr_record_t            rec;
    unsigned char         *cheap, *strong, *question;
    const llmr_str_t      *f;
    const llmr_dialect_t  *d;

    cheap = NULL;
    strong = NULL;
    question = NULL;
    cheap_len = 0;
    strong_len = 0;

    if (lr_record_parse(&rec, (unsigned char *) in->line, in->len, err,
                        sizeof(err))
        != LLMR_OK
        || lr_record_object(&rec, LR_FIELD_REQUEST, &body, err, sizeof(err))
           != LLMR_OK
        || lr_record_dialect(&rec, &d, err, sizeof(err)) != LLMR_OK)
    {
        goto bad;
    }

    if (!lr_raw_string(&rec, LR_FIELD_RULE)
        || !lr_raw_string(&rec, LR_FIELD_MODEL))
    {
        snprintf(err, sizeof(err), "\"%s\" must be a string",
                 lr_raw_string(&rec, LR_FIELD_RULE) ? "model" : "rule");
        goto bad;
    }

    f = &rec.field[LR_FIELD_SHADOW_STATUS];

    if (f->data && !(f->len == 4 && memcmp(f->data, "null", 4) == 0)) {
        if (lr_record_number(&rec, LR_FIELD_SHADOW_STATUS, 1, 999, &status,
                             err, sizeof(err))
            != LLMR_OK)
        {
            goto bad;
        }

        if (status < 200 || status >= 300) {
            j->bad_status++;
            return LLMR_OK;
        }
    }

    rc = lr_record_string(&rec, LR_FIELD_ANSWER, &cheap, &cheap_len, err,
                          sizeof(err));

    if (rc == LLMR_OK) {
        rc = lr_record_string(&rec, LR_FIELD_SHADOW_ANSWER, &strong,
                              &strong_len, err, sizeof(err));
    }

    if (rc == LLMR_ERROR) {
        goto bad;
    }

    if (rc == LR_ABSENT || cheap_len == 0 || strong_len == 0) {
        j->no_answer++;
        free(cheap);
        free(strong);
        return LLMR_OK;
    }

    if (lr_question(&body, d, &question, &t.question_len, err, sizeof(err))
        != LLMR_OK)
    {
        goto bad;
    }

    t.question = question;
    t.a = cheap;
    t.a_len = cheap_len;
    t.b = strong;
    t.b_len = strong_len;

    rc = lr_pair_fill(j, in, &rec, &t);

    free(cheap);
    free(strong);
    free(question);

    if (rc != LLMR_OK) {
        lr_error("out of memory");
    }

    return rc;

bad:

    lr_input_error(in, "%s", err);

    free(cheap);
    free(strong);

    return LLMR_ERROR;
}


/* absent, null or a string: a name that can be echoed */

static int
lr_raw_string(const lr_record_t *rec, unsigned field)
{
    const llmr_str_t  *f;

    f = &rec->field[field];

    return f->data == NULL || f->data[0] == '"'
           || (f->len == 4 && memcmp(f->data, "null", 4) == 0);
}


static int
lr_pair_fill(lr_judge_t *j, const lr_input_t *in, const lr_record_t *rec,
    const lr_texts_t *t)
{
    size_t              size, k;
    unsigned            order;
    lr_pair_t          *pair, *pairs;
    lr_texts_t          swapped;
    llmr_str_t         *copy[4];
    const lr_texts_t   *texts[LR_JUDGE_ORDERS];
    const llmr_str_t   *f;
    static unsigned     fields[4] = { LR_FIELD_ID, LR_FIELD_REQUEST,
                                      LR_FIELD_RULE, LR_FIELD_MODEL };
    static llmr_str_t   null = { 4, (const unsigned char *) "null" };

    if (j->n == j->size) {
        size = j->size ? 2 * j->size : 256;

        pairs = realloc(j->pairs, size * sizeof(lr_pair_t));
        if (pairs == NULL) {
            return LLMR_ERROR;
        }

        j->pairs = pairs;
        j->size = size;
    }

    pair = &j->pairs[j->n];
    memset(pair, 0, sizeof(lr_pair_t));

    pair->line = malloc(in->len);
    if (pair->line == NULL) {
        return LLMR_ERROR;
    }

    memcpy(pair->line, in->line, in->len);

    copy[0] = &pair->id;
    copy[1] = &pair->request;
    copy[2] = &pair->rule;
    copy[3] = &pair->model;

    /* the fields echoed: the bytes of the copy, or null */

    for (k = 0; k < 4; k++) {
        f = &rec->field[fields[k]];
        *copy[k] = null;

        if (f->data) {
            copy[k]->data = pair->line + (f->data
                                          - (unsigned char *) in->line);
            copy[k]->len = f->len;
        }
    }

    /* the cheap answer is A first, then B */

    swapped = *t;
    swapped.a = t->b;
    swapped.a_len = t->b_len;
    swapped.b = t->a;
    swapped.b_len = t->a_len;

    texts[0] = t;
    texts[1] = &swapped;

    for (order = 0; order < LR_JUDGE_ORDERS; order++) {
        pair->len[order] = lr_judge_body(j, texts[order], NULL);
        pair->body[order] = malloc(pair->len[order]);

        if (pair->body[order] == NULL) {
            free(pair->body[0]);
            free(pair->line);
            return LLMR_ERROR;
        }

        lr_judge_body(j, texts[order], pair->body[order]);
    }

    j->n++;

    return LLMR_OK;
}


/*
 * The question is the current user message, as the core reads it for a
 * triage model: its text, of every text part, whole.
 */

static int
lr_question(const llmr_str_t *body, const llmr_dialect_t *d,
    unsigned char **text, size_t *len, char *err, size_t errlen)
{
    int              rc;
    size_t           size;
    unsigned char   *buf;
    llmr_capture_t   c;
    llmr_request_t   rq;

    /* decoded, a text is no longer than the body */

    size = body->len + 1;

    buf = malloc(2 * size);

    if (buf == NULL || llmr_request_init(&rq, d, NULL, 0) != LLMR_OK) {
        free(buf);
        snprintf(err, errlen, "out of memory");
        return LLMR_ERROR;
    }

    llmr_capture_init(&c, buf, size, 2);

    rq.capture = &c;
    rq.hold_max = (size > LLMR_HOLD_MAX) ? size : LLMR_HOLD_MAX;

    rc = llmr_request_feed(&rq, body->data, body->len);

    if (rc == LLMR_OK) {
        rc = llmr_request_finish(&rq);
    }

    if (rc != LLMR_OK) {
        snprintf(err, errlen, "%s", rq.error);
        llmr_request_free(&rq);
        free(buf);
        return LLMR_ERROR;
    }

    llmr_request_free(&rq);

    *len = (c.current >= 0) ? c.slot[c.current].len : 0;

    /* the text moves to the head of the buffer, which is the caller's */

    if (*len) {
        memmove(buf, c.slot[c.current].text, *len);
    }

    *text = buf;

    return LLMR_OK;
}


/*
 * One writer for the size (out NULL) and the bytes of a judge request:
 * the template's placeholders are filled in one pass, so that an answer
 * that says "{b}" is not filled again.
 */

static size_t
lr_judge_body(const lr_judge_t *j, const lr_texts_t *t, unsigned char *out)
{
    size_t                at, i, start;
    const char          **part;
    const unsigned char  *p;

    part = lr_judge_parts[j->api->api];
    p = j->prompt;

    at = lr_put(out, 0, part[0], strlen(part[0]), 0);
    at = lr_put(out, at, j->model, strlen(j->model), 1);
    at = lr_put(out, at, part[1], strlen(part[1]), 0);
    at = lr_put(out, at, lr_judge_system, sizeof(lr_judge_system) - 1, 1);
    at = lr_put(out, at, part[2], strlen(part[2]), 0);

    for (i = 0, start = 0; i < j->prompt_len; i++) {
        if (p[i] != '{') {
            continue;
        }

        if (j->prompt_len - i >= 10 && memcmp(p + i, "{question}", 10) == 0) {
            at = lr_put(out, at, p + start, i - start, 1);
            at = lr_put(out, at, t->question, t->question_len, 1);
            i += 9;
            start = i + 1;

        } else if (j->prompt_len - i >= 3
                   && (memcmp(p + i, "{a}", 3) == 0
                       || memcmp(p + i, "{b}", 3) == 0))
        {
            at = lr_put(out, at, p + start, i - start, 1);
            at = (p[i + 1] == 'a') ? lr_put(out, at, t->a, t->a_len, 1)
                                   : lr_put(out, at, t->b, t->b_len, 1);
            i += 2;
            start = i + 1;
        }
    }

    at = lr_put(out, at, p + start, j->prompt_len - start, 1);

    return lr_put(out, at, part[3], strlen(part[3]), 0);
}


static size_t
lr_put(unsigned char *out, size_t at, const void *p, size_t len, int escape)
{
    if (!escape) {
        if (out) {
            memcpy(out + at, p, len);
        }

        return at + len;
    }

    if (out == NULL) {
        return at + llmr_json_escape_size(p, len);
    }

    return llmr_json_escape(out + at, p, len) - out;
}


/*
 * A free call takes a retry that is due, or else the next job; the wait
 * is for a transfer, or for the next retry to be due.
 */

static int
lr_judge_run(lr_judge_t *j)
{
    int         rc, running, left, finished;
    void       *data;
    CURLM      *multi;
    size_t      i, next, jobs, active, job;
    double      now;
    CURLMsg    *msg;
    CURLMcode   code;
    lr_call_t  *c, *calls;

    multi = curl_multi_init();
    calls = calloc(j->concurrency, sizeof(lr_call_t));

    rc = (multi && calls) ? LLMR_OK : LLMR_ERROR;

    for (i = 0; rc == LLMR_OK && i < j->concurrency; i++) {
        rc = lr_http_init(&calls[i].http, j->headers, LR_JUDGE_ANSWER_MAX,
                          (long) j->timeout, &calls[i]);
    }

    if (rc != LLMR_OK) {
        lr_error("judge: out of memory");
    }

    jobs = LR_JUDGE_ORDERS * j->n;
    next = 0;
    active = 0;
    code = CURLM_OK;

    while (rc == LLMR_OK && (next < jobs || j->nwaiting || active)) {

        now = lr_now();

        for (i = 0; rc == LLMR_OK && i < j->concurrency; i++) {
            if (calls[i].busy) {
                continue;
            }

            if (lr_job_due(j, now, &job) != LLMR_OK) {
                if (next == jobs) {
                    break;
                }

                job = next++;
            }

            rc = lr_call_start(multi, &calls[i], j, job);
            active += (rc == LLMR_OK);
        }

        if (rc != LLMR_OK) {
            lr_error("judge: out of memory");
            break;
        }

        code = curl_multi_perform(multi, &running);
        finished = 0;

        while (code == CURLM_OK
               && (msg = curl_multi_info_read(multi, &left)))
        {
            if (msg->msg != CURLMSG_DONE) {
                continue;
            }

            curl_easy_getinfo(msg->easy_handle, CURLINFO_PRIVATE, &data);
            c = data;

            curl_multi_remove_handle(multi, c->http.easy);
            lr_call_done(j, c, msg->data.result, lr_now());

            c->busy = 0;
            active--;
            finished++;
        }

        if (code == CURLM_OK && !finished) {
            code = curl_multi_poll(multi, NULL, 0,
                                   lr_job_wait(j, lr_now(),
                                               active < j->concurrency),
                                   NULL);
        }

        if (code != CURLM_OK) {
            lr_error("judge: %s", curl_multi_strerror(code));
            rc = LLMR_ERROR;
        }
    }

    for (i = 0; calls && i < j->concurrency; i++) {
        lr_http_free(multi, &calls[i].http, calls[i].busy);
    }

    free(calls);

    if (multi) {
        curl_multi_cleanup(multi);
    }

    return rc;
}


static int
lr_call_start(CURLM *multi, lr_call_t *c, lr_judge_t *j, size_t job)
{
    lr_pair_t  *pair;
    unsigned    order;

    pair = &j->pairs[job / LR_JUDGE_ORDERS];
    order = job % LR_JUDGE_ORDERS;

    c->job = job;

    if (lr_http_post(multi, &c->http, j->url, pair->body[order],
                     pair->len[order])
        != LLMR_OK)
    {
        return LLMR_ERROR;
    }

    c->busy = 1;

    return LLMR_OK;
}


/*
 * A verdict, or a retry: at once for an answer without one, after 0.2 s,
 * 0.4 s, ... for a provider that is busy or down; an order that has no
 * verdict after --retries leaves its pair out.
 */

static void
lr_call_done(lr_judge_t *j, lr_call_t *c, CURLcode result, double now)
{
    long        status;
    unsigned    order, outcome, verdict;
    lr_pair_t  *pair;

    pair = &j->pairs[c->job / LR_JUDGE_ORDERS];
    order = c->job % LR_JUDGE_ORDERS;

    j->calls++;
    status = 0;
    verdict = LR_VERDICT_NONE;

    if (result != CURLE_OK) {
        j->network_errors++;
        outcome = LR_CALL_RETRY;

        if (j->error[0] == '\0') {
            snprintf(j->error, sizeof(j->error), "%s",
                     c->http.error[0] ? c->http.error
                                      : curl_easy_strerror(result));
        }

    } else {
        curl_easy_getinfo(c->http.easy, CURLINFO_RESPONSE_CODE, &status);

        if (status >= 200 && status <= 299) {
            outcome = lr_call_verdict(j, c, order, &verdict);

        } else {
            j->http_errors++;
            outcome = (status == 429 || status >= 500) ? LR_CALL_RETRY
                                                       : LR_CALL_FAILED;

            if (j->error[0] == '\0') {
                snprintf(j->error, sizeof(j->error), "HTTP %ld", status);
            }
        }
    }

    if (outcome == LR_CALL_VERDICT) {
        pair->verdict[order] = verdict;
        return;
    }

    if (outcome == LR_CALL_FAILED || pair->tries[order] >= j->retries) {
        return;
    }

    pair->at[order] = now;

    if (outcome == LR_CALL_RETRY) {
        pair->at[order] += LR_JUDGE_BACKOFF * ldexp(1, pair->tries[order]);
    }

    pair->tries[order]++;
    j->waiting[j->nwaiting++] = c->job;
}


/*
 * The first word of the answer's text, read in the judge's API as the
 * router reads a triage model's: A, B or TIE, in any case.  A tie is as
 * good as the cheap answer.
 */

static unsigned
lr_call_verdict(lr_judge_t *j, const lr_call_t *c, unsigned order,
    unsigned *verdict)
{
    int              choice;
    size_t           n;
    llmr_answer_t    a;
    unsigned char    text[LR_JUDGE_TEXT], word[LLMR_LABEL_MAX];
    llmr_criteria_t  criteria;

    memset(&criteria, 0, sizeof(llmr_criteria_t));
    llmr_answer_init(&a, j->api, &criteria, text, sizeof(text));

    choice = -1;

    if (c->http.len <= LR_JUDGE_ANSWER_MAX
        && llmr_answer_check(&a, c->http.answer, c->http.len, 0)
           == LLMR_VERDICT_OK
        && llmr_triage_label(a.content, a.content_len, NULL, word, &n)
           == LLMR_OK)
    {
        if (n == 1 && (word[0] == 'a' || word[0] == 'b')) {
            choice = word[0];

        } else if (n == 3 && memcmp(word, "tie", 3) == 0) {
            choice = 't';
        }
    }

    if (choice == -1) {
        j->garbage++;

        if (j->error[0] == '\0') {
            snprintf(j->error, sizeof(j->error),
                     "an answer without A, B or TIE: \"%.*s\"",
                     (int) (a.content_len < 40 ? a.content_len : 40),
                     a.content);
        }

        return LR_CALL_GARBAGE;
    }

    /* the strong answer is B in the first order, A in the second */

    *verdict = (choice == (order ? 'a' : 'b')) ? LR_VERDICT_STRONG
                                               : LR_VERDICT_CHEAP;

    return LR_CALL_VERDICT;
}


static int
lr_job_due(lr_judge_t *j, double now, size_t *job)
{
    size_t      i, k;
    lr_pair_t  *pair;

    for (i = 0; i < j->nwaiting; i++) {
        k = j->waiting[i];
        pair = &j->pairs[k / LR_JUDGE_ORDERS];

        if (pair->at[k % LR_JUDGE_ORDERS] <= now) {
            *job = k;
            j->waiting[i] = j->waiting[--j->nwaiting];
            return LLMR_OK;
        }
    }

    return LLMR_ERROR;
}


/* milliseconds to wait at most: to the next retry when a call is idle */

static int
lr_job_wait(const lr_judge_t *j, double now, int idle)
{
    size_t   i, k;
    double   at, first;

    first = now + LR_JUDGE_WAIT_MAX / 1000.0;

    for (i = 0; idle && i < j->nwaiting; i++) {
        k = j->waiting[i];
        at = j->pairs[k / LR_JUDGE_ORDERS].at[k % LR_JUDGE_ORDERS];
        first = (at < first) ? at : first;
    }

    return (first > now) ? (int) ceil((first - now) * 1000) : 0;
}


static double
lr_now(void)
{
    struct timespec  ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);

    return ts.tv_sec + ts.tv_nsec / 1e9;
}


/* the labels, in the order of the pairs */

static void
lr_judge_print(const lr_judge_t *j)
{
    size_t      i;
    unsigned    strong, v;
    lr_pair_t  *pair;

    for (i = 0; i < j->n; i++) {
        pair = &j->pairs[i];

        if (pair->verdict[0] == LR_VERDICT_NONE
            || pair->verdict[1] == LR_VERDICT_NONE)
        {
            continue;
        }

        strong = (pair->verdict[0] == LR_VERDICT_STRONG)
                 + (pair->verdict[1] == LR_VERDICT_STRONG);

        v = (strong == 2) ? LR_VERDICT_STRONG
            : (strong == 0) ? LR_VERDICT_CHEAP : 3;

        printf("{\"id\":%.*s,\"request\":%.*s,\"label\":%s,\"rule\":%.*s,"
               "\"model\":%.*s,\"verdict\":\"%s\"}\n",
               (int) pair->id.len, pair->id.data,
               (int) pair->request.len, pair->request.data,
               (strong == 2) ? "1" : (strong == 0) ? "0" : "0.5",
               (int) pair->rule.len, pair->rule.data,
               (int) pair->model.len, pair->model.data,
               lr_verdict_names[v]);
    }
}


static void
lr_judge_summary(const lr_judge_t *j)
{
    size_t     i, labelled, split, strong, failed;
    lr_pair_t  *pair;

    labelled = 0;
    strong = 0;
    split = 0;

    for (i = 0; i < j->n; i++) {
        pair = &j->pairs[i];

        if (pair->verdict[0] && pair->verdict[1]) {
            labelled++;
            strong += (pair->verdict[0] == LR_VERDICT_STRONG
                       && pair->verdict[1] == LR_VERDICT_STRONG);
            split += (pair->verdict[0] != pair->verdict[1]);
        }
    }

    lr_error("judge: %zu pairs: %zu labelled (%zu strong, %zu cheap, "
             "%zu split), %zu skipped (%zu shadow_status not 2xx, %zu "
             "without both answers), %zu without a verdict",
             j->lines, labelled, strong, labelled - strong - split, split,
             j->bad_status + j->no_answer, j->bad_status, j->no_answer,
             j->n - labelled);

    failed = j->garbage + j->http_errors + j->network_errors;

    if (failed) {
        lr_error("judge: %zu of %zu calls gave no verdict (%zu answers "
                 "without A, B or TIE, %zu HTTP errors, %zu network "
                 "errors), the first: %s", failed, j->calls, j->garbage,
                 j->http_errors, j->network_errors, j->error);
    }
}


static void
lr_judge_free(lr_judge_t *j)
{
    size_t  i;

    for (i = 0; i < j->n; i++) {
        free(j->pairs[i].line);
        free(j->pairs[i].body[0]);
        free(j->pairs[i].body[1]);
    }

    free(j->pairs);
    free(j->waiting);
    free(j->prompt);
    curl_slist_free_all(j->headers);
}
