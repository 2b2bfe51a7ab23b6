
/*
 * Copyright (C) the ngx_http_llm_router_module authors
 *
 * libFuzzer target: a request body goes through what the module does
 * with it.  Its dialect is its first byte modulo 3 ('{' chat, '\n'
 * Messages, ' ' Responses: white space before the JSON).  The body is
 * fed in two or three buffers, cut where a hash of the input says (or in
 * buffers of a few bytes), each a heap block of its own so that a read
 * past a buffer is caught; keywords, a classifier, a feature callback
 * and the text capture are on, and now and then a window of a few bytes
 * for the text.  The verdict and the features must be those of the body
 * in one buffer.  A body that parses is then routed by
 * rules of every kind, its triage request is built in one of the three
 * dialects and must parse as a request of that dialect, and the body
 * with the rewrite's edits spliced in must parse again with the new
 * model, the same features and, for a chat stream, usage asked for.  A
 * body refused gets its error in its dialect, which must be JSON.
 */


#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "llmr.h"
#include "fuzz.h"


#define FUZZ_BITS      8

/* new model names, as JSON string literals, and what they decode to */
#define FUZZ_UPSTREAM   "\"up-model\""
#define FUZZ_UPSTREAM2  "\"x\\\"y\\u00e9\""
#define FUZZ_DECODED2   "x\"y\xc3\xa9"

#define FUZZ_PROMPT    "Answer \"simple\" or \"complex\".\n\t\x01"

#define fuzz_assert(e)  do { if (!(e)) abort(); } while (0)


typedef struct {
    const char            *text;
    unsigned               list;
} fuzz_phrase_t;


int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void fuzz_init(void);
static int fuzz_feed(llmr_request_t *rq, const uint8_t *p, size_t len);
static int fuzz_split(llmr_request_t *rq, const uint8_t *data, size_t size,
    uint32_t h);
static void fuzz_bounded(const llmr_dialect_t *d, const uint8_t *data,
    size_t size, uint32_t h, int rc, const llmr_request_t *whole);
static void fuzz_same(const llmr_features_t *a, const llmr_features_t *b);
static void fuzz_stand_in(const llmr_dialect_t *d, const uint8_t *data,
    size_t size, const llmr_classifier_t *c);
static void fuzz_feature(void *data, unsigned message, uint32_t hash);
static int fuzz_external(void *data, const llmr_cond_t *cond);
static void fuzz_trainer(llmr_request_t *rq);
static void fuzz_route(llmr_request_t *rq);
static void fuzz_conds(const llmr_features_t *f);
static void fuzz_error(const llmr_dialect_t *d, const char *error,
    uint32_t h);
static void fuzz_names(const llmr_features_t *f);
static void fuzz_triage(llmr_request_t *rq, uint32_t h);
static void fuzz_rewrite(llmr_request_t *rq, const uint8_t *data,
    size_t size, uint32_t h);
static int fuzz_parse(llmr_request_t *rq, const llmr_dialect_t *d,
    const llmr_classifier_t *c, const unsigned char *p, size_t len);
static void fuzz_same_request(const llmr_features_t *a,
    const llmr_features_t *b);


static const fuzz_phrase_t  fuzz_phrases[] = {
    { "prove", 0 },
    { "step by step", 0 },
    { "theorem", 0 },
    { "c++", 1 },
    { "stack trace", 1 },
    { "\xc3\xa9" "crire", 2 },
    { "poem", 2 },
    { NULL, 0 }
};

/* the lists by name, for keywords= conditions */
static const char  *fuzz_lists[] = { "math", "code", "prose", NULL };

/* rules, one a line; the last one holds always */
static const char  *fuzz_rules[] = {
    "tokens>200 code",
    "keywords=math score>0.5",
    "triage=complex !tools",
    "$stream messages>2",
    "thinking !images",
    "tokens<50 !score<0.3",
    "tool=get_weather images",
    "triage=simple-task",
    "!$json keywords=code",
    "!tool=web_search thinking",
    "messages<2 !keywords=prose !triage=x_y",
    "",
    NULL
};

#define FUZZ_RULES  12
#define FUZZ_CONDS  24

/* tools that tool= conditions ask for, one rule each in fuzz_conds() */
static const char  *fuzz_tools[] = {
    "get_weather", "web_search", "web_search_20250305", "lookup", NULL
};

static llmr_keywords_t      fuzz_keywords;
static llmr_phrase_t        fuzz_kw[8];
static llmr_classifier_t    fuzz_classifier;
static llmr_rule_t          fuzz_rule[FUZZ_RULES + 1];
static llmr_cond_t          fuzz_cond[FUZZ_CONDS + 1];
static unsigned             fuzz_ready;
static unsigned             fuzz_history;     /* of the current input */
static size_t               fuzz_scan_limit;  /* of the current input */


static void
fuzz_init(void)
{
    char            err[LLMR_ERROR_MAX];
    size_t          len, n;
    float           w[1 << FUZZ_BITS];
    uint32_t        x;
    unsigned        i, k, nconds;
    const char     *p, *end;
    unsigned char  *file, *text;

    for (i = 0; fuzz_phrases[i].text; i++) {
        len = strlen(fuzz_phrases[i].text);
        text = malloc(len);
        fuzz_assert(text != NULL);
        memcpy(text, fuzz_phrases[i].text, len);

        fuzz_kw[i].text = text;
        fuzz_kw[i].len = len;
        fuzz_kw[i].list = fuzz_phrases[i].list;
    }

    fuzz_assert(llmr_keywords_init(&fuzz_keywords, fuzz_kw, i, 3) == LLMR_OK);

    /* a small model with weights from a fixed LCG, read in place */

    x = 12345;

    for (i = 0; i < (1 << FUZZ_BITS); i++) {
        x = x * 1103515245u + 12345u;
        w[i] = (float) ((int) ((x >> 16) & 0x7fff) - 16384) / 8192.0f;
    }

    file = malloc(llmr_classifier_size(FUZZ_BITS));
    fuzz_assert(file != NULL);

    llmr_classifier_write(file, FUZZ_BITS, 4, 0.25f, w);
    fuzz_assert(llmr_classifier_load(&fuzz_classifier, file,
                                     llmr_classifier_size(FUZZ_BITS),
                                     err, sizeof(err))
                == LLMR_OK);

    /* the rules, conditions parsed as the configuration is */

    nconds = 0;

    for (i = 0; fuzz_rules[i]; i++) {
        fuzz_rule[i].conds = &fuzz_cond[nconds];
        fuzz_rule[i].model = i;

        for (p = fuzz_rules[i]; *p; p = *end ? end + 1 : end) {
            end = strchr(p, ' ');
            if (end == NULL) {
                end = p + strlen(p);
            }

            fuzz_assert(nconds < FUZZ_CONDS);
            fuzz_assert(llmr_cond_parse(&fuzz_cond[nconds],
                                        (const unsigned char *) p,
                                        end - p, err, sizeof(err))
                        == LLMR_OK);

            if (fuzz_cond[nconds].type == LLMR_COND_KEYWORDS) {
                n = fuzz_cond[nconds].name.len;

                for (k = 0; fuzz_lists[k]; k++) {
                    if (strlen(fuzz_lists[k]) == n
                        && memcmp(fuzz_lists[k], fuzz_cond[nconds].name.data,
                                  n) == 0)
                    {
                        break;
                    }
                }

                fuzz_assert(fuzz_lists[k] != NULL);
                fuzz_cond[nconds].arg = k;
            }

            nconds++;
            fuzz_rule[i].nconds++;
        }
    }

    fuzz_ready = 1;
}


static int
fuzz_feed(llmr_request_t *rq, const uint8_t *p, size_t len)
{
    int             rc;
    unsigned char  *buf;

    if (len == 0) {
        return llmr_request_feed(rq, NULL, 0);
    }

    /* freed at once: nothing may point into a buffer once it is parsed */

    buf = malloc(len);
    fuzz_assert(buf != NULL);
    memcpy(buf, p, len);

    rc = llmr_request_feed(rq, buf, len);

    free(buf);

    return rc;
}


static void
fuzz_feature(void *data, unsigned message, uint32_t hash)
{
    uint64_t  *n = data;

    (void) message;
    (void) hash;

    (*n)++;
}


static int
fuzz_external(void *data, const llmr_cond_t *cond)
{
    const llmr_features_t  *f = data;

    if (cond->name.len == 7 && memcmp(cond->name.data, "$stream", 7) == 0) {
        return f->stream;
    }

    return f->json_mode;
}


/*
 * With the smallest string bound and no window (with one, the window
 * bounds a string held), long strings are cut: the features of
 * their text may differ, but not the verdict (but for a model name too
 * long to keep) nor where the rewrite splices.
 */

static void
fuzz_bounded(const llmr_dialect_t *d, const uint8_t *data, size_t size,
    uint32_t h, int rc, const llmr_request_t *whole)
{
    int                     rc2;
    llmr_request_t          rq;
    const llmr_features_t  *f;

    f = &whole->f;

    fuzz_assert(llmr_request_init(&rq, d, &fuzz_keywords, fuzz_history)
                == LLMR_OK);
    rq.hold_max = LLMR_HOLD_MIN;
    rq.scan_limit = 0;

    rc2 = fuzz_split(&rq, data, size, h);

    if (rc2 == LLMR_OK) {
        rc2 = llmr_request_finish(&rq);
    }

    fuzz_assert(rq.hold_size <= 2 * LLMR_HOLD_MIN || rq.hold_size <= 256);

    llmr_request_free(&rq);

    if (rc != LLMR_OK) {
        /* a model name longer than a window of a few bytes */
        fuzz_assert(rc2 != LLMR_OK || strstr(whole->error, "'model'"));
        return;
    }

    if (rc2 != LLMR_OK) {
        fuzz_assert(strstr(rq.error, "'model'") != NULL);
        return;
    }

    fuzz_assert(rq.f.body_len == f->body_len
                && rq.f.object_start == f->object_start
                && rq.f.model_start == f->model_start
                && rq.f.model_end == f->model_end
                && rq.f.options_end == f->options_end
                && rq.f.options_object == f->options_object
                && rq.f.usage_start == f->usage_start
                && rq.f.usage_end == f->usage_end
                && rq.f.messages == f->messages
                && rq.f.stream == f->stream);
}


int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    int                    rc, rc1;
    size_t                 slot;
    uint32_t               h;
    uint64_t               features;
    unsigned               nslots, history;
    unsigned char         *buf;
    llmr_capture_t         capture;
    llmr_request_t         rq, whole;
    const llmr_dialect_t  *d;

    if (!fuzz_ready) {
        fuzz_init();
    }

    h = fuzz_hash(data, size);

    /* the dialect: '{' chat, '\n' Messages, ' ' Responses */
    d = &llmr_dialects[size ? data[0] % LLMR_APIS : 0];

    history = (h >> 3) % (LLMR_HISTORY_MAX + 4);
    fuzz_history = history;
    nslots = 2 + (h >> 12) % (LLMR_SLOTS_MAX - 1);
    slot = 1 + (h >> 17) % 64;

    buf = malloc(nslots * slot);
    fuzz_assert(buf != NULL);

    if (llmr_request_init(&rq, d, &fuzz_keywords, history) != LLMR_OK) {
        free(buf);
        return 0;
    }

    fuzz_assert(llmr_capture_init(&capture, buf, slot, nslots) == LLMR_OK);
    rq.capture = &capture;

    /* now and then a window of a few bytes, as a long text has one */
    fuzz_scan_limit = (h & 0x2000000) ? 2 + (h >> 26) % 62 : LLMR_SCAN_LIMIT;
    rq.scan_limit = fuzz_scan_limit;

    features = 0;

    if (h & 0x800000) {
        rq.classifier = &fuzz_classifier;
    }

    if (h & 0x1000000) {
        rq.feature = fuzz_feature;
        rq.feature_data = &features;
    }

    rc = fuzz_split(&rq, data, size, h);

    if (rc == LLMR_OK) {
        rc = llmr_request_finish(&rq);
    }

    llmr_request_free(&rq);

    /* the same body in one buffer: the same verdict, the same features */

    fuzz_assert(llmr_request_init(&whole, d, &fuzz_keywords, history)
                == LLMR_OK);
    whole.classifier = rq.classifier;
    whole.scan_limit = fuzz_scan_limit;

    rc1 = fuzz_feed(&whole, data, size);

    if (rc1 == LLMR_OK) {
        rc1 = llmr_request_finish(&whole);
    }

    llmr_request_free(&whole);

    fuzz_assert(rc == rc1);

    fuzz_bounded(d, data, size, h, rc1, &whole);
    fuzz_stand_in(d, data, size, rq.classifier);

    if (rc != LLMR_OK) {
        fuzz_assert(rq.error[0] != '\0'
                    && memchr(rq.error, '\0', LLMR_ERROR_MAX) != NULL);
        fuzz_error(d, rq.error, h);
        free(buf);
        return 0;
    }

    fuzz_same(&rq.f, &whole.f);

    fuzz_assert(rq.f.api == d->api);

    /* a Responses request may only go on from a stored one */
    fuzz_assert(rq.f.messages > 0 || rq.f.previous);
    fuzz_assert(!rq.f.previous || d->api == LLMR_API_RESPONSES);
    fuzz_assert(rq.f.messages == 0 || rq.f.current < rq.f.messages);

    fuzz_assert(rq.f.model_len <= LLMR_MODEL_NAME_MAX);
    fuzz_assert(rq.f.body_len == size);
    fuzz_assert(rq.classifier ? rq.f.score >= 0 && rq.f.score <= 1
                              : rq.f.score == -1);
    fuzz_assert(rq.f.ntools <= LLMR_TOOLS_MAX);
    fuzz_assert(rq.f.ntools == 0 || rq.f.tools);

    /* only a chat request has stream_options */
    fuzz_assert(d->api == LLMR_API_CHAT
                || (!rq.f.stream_options && !rq.f.include_usage));
    fuzz_assert(!rq.f.include_usage || rq.f.stream_options);

    fuzz_trainer(&rq);
    fuzz_route(&rq);
    fuzz_conds(&rq.f);
    fuzz_names(&rq.f);
    fuzz_triage(&rq, h);
    fuzz_rewrite(&rq, data, size, h);

    free(buf);

    return 0;
}


/*
 * Mostly two or three buffers; one input in eight is fed in buffers of
 * one to eight bytes, so that strings and escapes are cut everywhere.
 */

static int
fuzz_split(llmr_request_t *rq, const uint8_t *data, size_t size,
    uint32_t h)
{
    int     rc;
    size_t  cut1, cut2, off, n;

    if ((h & 0x7) == 0) {
        n = 1 + (h >> 28) % 8;

        for (off = 0; off < size; off += n) {
            rc = fuzz_feed(rq, data + off, size - off < n ? size - off : n);
            if (rc != LLMR_OK) {
                return rc;
            }
        }

        return LLMR_OK;
    }

    cut1 = h % (size + 1);
    cut2 = (h & 0x100) ? size : cut1 + (h >> 9) % (size - cut1 + 1);

    rc = fuzz_feed(rq, data, cut1);

    if (rc == LLMR_OK) {
        rc = fuzz_feed(rq, data + cut1, cut2 - cut1);
    }

    if (rc == LLMR_OK) {
        rc = fuzz_feed(rq, data + cut2, size - cut2);
    }

    return rc;
}


/*
 * Without a window, a long string read without yajl (see llmr_stand_in())
 * reads as yajl reads it: the same verdict, the same features.
 */

static void
fuzz_stand_in(const llmr_dialect_t *d, const uint8_t *data, size_t size,
    const llmr_classifier_t *c)
{
    int             rc[2];
    unsigned        i;
    llmr_request_t  rq[2];

    for (i = 0; i < 2; i++) {
        fuzz_assert(llmr_request_init(&rq[i], d, &fuzz_keywords,
                                      fuzz_history)
                    == LLMR_OK);
        rq[i].classifier = c;

        /* 0: yajl reads every string; size + 1: a window over them all */
        rq[i].scan_limit = i ? size + 1 : 0;

        rc[i] = fuzz_feed(&rq[i], data, size);

        if (rc[i] == LLMR_OK) {
            rc[i] = llmr_request_finish(&rq[i]);
        }

        llmr_request_free(&rq[i]);
    }

    fuzz_assert(rc[0] == rc[1]);

    if (rc[0] == LLMR_OK) {
        fuzz_same(&rq[0].f, &rq[1].f);
    }
}


static void
fuzz_same(const llmr_features_t *a, const llmr_features_t *b)
{
    fuzz_same_request(a, b);

    fuzz_assert(a->stream_options == b->stream_options
                && a->model_present == b->model_present
                && a->model_truncated == b->model_truncated
                && a->include_usage == b->include_usage);

    fuzz_assert(a->model_len == b->model_len
                && memcmp(a->model, b->model, a->model_len) == 0);

    fuzz_assert(a->object_start == b->object_start
                && a->model_start == b->model_start
                && a->model_end == b->model_end
                && a->options_object == b->options_object
                && a->options_members == b->options_members
                && a->usage_start == b->usage_start
                && a->usage_end == b->usage_end
                && a->body_len == b->body_len);

    /*
     * Where stream_options starts is found by a scan that an object's
     * first key may cut short; the rewrite reads it only when the value
     * is not an object.
     */
    fuzz_assert(a->options_object != LLMR_NO_OFFSET
                || (a->options_start == b->options_start
                    && a->options_end == b->options_end));
}


/* what llm-router's trainer and score output ask of a parsed request */

static void
fuzz_trainer(llmr_request_t *rq)
{
    size_t           n;
    double           x;
    uint64_t         dense, found;
    unsigned         k;
    llmr_capture_t  *c;
    unsigned char    text[LLMR_SCORE_MAX];

    for (k = 0; k < rq->f.messages && k < 100; k++) {
        x = llmr_message_factor(rq, k);
        fuzz_assert(x == 0.0 || x == LLMR_HISTORY_FACTOR || x == 1.0);
    }

    x = llmr_text_scale(rq);
    fuzz_assert(x > 0.0 && x <= 1.0);

    dense = 0;
    llmr_dense_features(rq, fuzz_feature, &dense);
    fuzz_assert(dense == 10);

    n = llmr_score_format(text, rq->f.score);
    fuzz_assert(rq->f.score < 0 ? n == 4 && memcmp(text, "null", 4) == 0
                                : n == 8);

    /* the lists in the text kept of the current message */

    c = rq->capture;

    if (c->current >= 0) {
        found = llmr_keywords_match(&fuzz_keywords, c->slot[c->current].text,
                                    c->slot[c->current].len);
        fuzz_assert(found < (1u << 3));
    }
}


/*
 * The rules, and one more made of the "model" value read as a condition,
 * so that the condition parser sees text from the input; the walk asks
 * for a triage verdict, which is the first word of the current message.
 */

static void
fuzz_route(llmr_request_t *rq)
{
    int               r;
    char              err[48];
    size_t            n;
    llmr_cond_t       cond;
    llmr_rule_t       rules[FUZZ_RULES + 1];
    llmr_features_t  *f;
    llmr_capture_t   *c;

    f = &rq->f;
    c = rq->capture;
    n = FUZZ_RULES;

    memcpy(rules, fuzz_rule, sizeof(llmr_rule_t) * FUZZ_RULES);

    if (llmr_cond_parse(&cond, f->model, f->model_len, err, sizeof(err))
        == LLMR_OK)
    {
        if (cond.type == LLMR_COND_KEYWORDS) {
            cond.arg = cond.name.len % 3;
        }

        /* before the catch-all */
        rules[n] = rules[n - 1];
        rules[n - 1].conds = &cond;
        rules[n - 1].nconds = 1;
        n++;

    } else {
        fuzz_assert(memchr(err, '\0', sizeof(err)) != NULL);
    }

    f->triage = LLMR_TRIAGE_UNKNOWN;

    r = llmr_rules_eval(rules, n, f, fuzz_external, f);

    if (r == LLMR_RULES_PENDING) {
        f->triage = LLMR_TRIAGE_FAILED;

        if (c->current >= 0
            && llmr_triage_label(c->slot[c->current].text,
                                 c->slot[c->current].len, NULL,
                                 f->triage_label, &f->triage_len)
               == LLMR_OK)
        {
            fuzz_assert(f->triage_len > 0
                        && f->triage_len <= LLMR_LABEL_MAX);
            f->triage = LLMR_TRIAGE_DONE;
        }

        r = llmr_rules_eval(rules, n, f, fuzz_external, f);
    }

    /* the catch-all holds */
    fuzz_assert(r >= 0 && (size_t) r < n);
}


/*
 * The conditions of the dialects' features, each alone in a rule before
 * a catch-all: the first rule holds exactly when the feature is there.
 */

static void
fuzz_conds(const llmr_features_t *f)
{
    int           r;
    char          err[48];
    size_t        n;
    unsigned      i, k, has;
    uint32_t      hash;
    llmr_cond_t   cond[2];
    llmr_rule_t   rules[2];
    char          text[64];

    memset(rules, 0, sizeof(rules));
    rules[0].conds = &cond[0];
    rules[0].nconds = 1;
    rules[1].model = 1;

    for (i = 0; i < 4 + 2 * 4; i++) {
        if (i < 4) {
            /* thinking, !thinking, images, !images */
            n = (size_t) snprintf(text, sizeof(text), "%s%s",
                                  (i & 1) ? "!" : "",
                                  (i & 2) ? "images" : "thinking");
            has = (i & 2) ? f->images : f->thinking;

        } else {
            k = (i - 4) / 2;
            n = (size_t) snprintf(text, sizeof(text), "%stool=%s",
                                  (i & 1) ? "!" : "", fuzz_tools[k]);

            hash = llmr_tool_hash((const unsigned char *) fuzz_tools[k],
                                  strlen(fuzz_tools[k]));

            for (has = 0, k = 0; k < f->ntools; k++) {
                has |= (f->tool[k] == hash);
            }
        }

        fuzz_assert(llmr_cond_parse(&cond[0], (const unsigned char *) text,
                                    n, err, sizeof(err))
                    == LLMR_OK);

        r = llmr_rules_eval(rules, 2, f, fuzz_external, (void *) f);

        fuzz_assert(r == ((i & 1) ? (int) has : (int) !has));
    }
}


/*
 * The error the client gets, in its dialect, with a status from the
 * hash: no longer than announced, and JSON.
 */

static void
fuzz_error(const llmr_dialect_t *d, const char *error, uint32_t h)
{
    size_t          len, size;
    unsigned        status;
    unsigned char  *out, *end;

    static const unsigned  statuses[] = {
        400, 401, 403, 404, 413, 429, 500, 502, 503, 529
    };

    status = statuses[(h >> 9) % (sizeof(statuses) / sizeof(statuses[0]))];
    len = strlen(error);

    size = llmr_error_json_size((const unsigned char *) error, len);

    out = malloc(size);
    fuzz_assert(out != NULL);

    end = llmr_error_json(d, status, (const unsigned char *) error, len,
                          out);

    fuzz_assert(end > out && (size_t) (end - out) <= size);
    fuzz_assert(fuzz_json_valid(out, end - out));

    free(out);
}


/* a dialect by its name, or by the end of a path: the model's text */

static void
fuzz_names(const llmr_features_t *f)
{
    const llmr_dialect_t  *d;

    d = llmr_dialect_find(f->model, f->model_len);

    fuzz_assert(d == NULL
                || (d->name.len == f->model_len
                    && memcmp(d->name.data, f->model, f->model_len) == 0));

    d = llmr_dialect_of_path(f->model, f->model_len);

    fuzz_assert(d == NULL
                || (d->path.len <= f->model_len
                    && memcmp(d->path.data,
                              f->model + f->model_len - d->path.len,
                              d->path.len) == 0));

    fuzz_assert(llmr_dialect_find(llmr_dialects[f->api].name.data,
                                  llmr_dialects[f->api].name.len)
                == &llmr_dialects[f->api]);
}


/*
 * The triage request, in a dialect chosen from the hash: JSON of the
 * size announced, and a request of that dialect, with the triage model
 * and one or two messages.
 */

static void
fuzz_triage(llmr_request_t *rq, uint32_t h)
{
    int                    rc;
    size_t                 size;
    unsigned               max_tokens;
    llmr_triage_t          t;
    llmr_request_t         tr;
    unsigned char         *out, *end;
    const llmr_dialect_t  *d;

    d = &llmr_dialects[(h >> 21) % LLMR_APIS];

    t.dialect = d;
    t.model.data = (const unsigned char *) "nano";
    t.model.len = 4;
    t.prompt.data = (const unsigned char *) FUZZ_PROMPT;
    t.prompt.len = sizeof(FUZZ_PROMPT) - 1;
    t.max_tokens = h >> 28;
    t.history = (h >> 5) % 300;

    size = llmr_triage_body_size(rq, &t);

    out = malloc(size);
    fuzz_assert(out != NULL);

    end = llmr_triage_body(rq, &t, out);

    fuzz_assert((size_t) (end - out) == size);
    fuzz_assert(fuzz_json_valid(out, size));

    rc = fuzz_parse(&tr, d, NULL, out, size);

    fuzz_assert(rc == LLMR_OK);
    fuzz_assert(tr.f.model_len == 4 && memcmp(tr.f.model, "nano", 4) == 0);
    fuzz_assert(tr.f.messages == (d->api == LLMR_API_CHAT ? 2u : 1u));
    fuzz_assert(!tr.f.stream && !tr.f.tools);

    max_tokens = t.max_tokens > d->triage_min_tokens ? t.max_tokens
                                                     : d->triage_min_tokens;
    fuzz_assert(tr.f.max_tokens == (int64_t) max_tokens);

    free(out);
}


/*
 * The body the provider gets, the edits spliced into it in their order,
 * must parse in the same dialect, with the new model and the same
 * features; a chat stream whose client did not ask for usage asks for
 * it; and a second rewrite has nothing more to ask.
 */

static void
fuzz_rewrite(llmr_request_t *rq, const uint8_t *data, size_t size,
    uint32_t h)
{
    int               rc;
    size_t            n, len, total, off, dlen;
    unsigned          nedits, i, ask;
    llmr_str_t        up;
    llmr_edit_t       edits[LLMR_EDITS_MAX], more[LLMR_EDITS_MAX];
    llmr_request_t    again;
    const char       *decoded;
    unsigned char    *repl, *body, *p;

    if ((h >> 25) & 1) {
        up.data = (const unsigned char *) FUZZ_UPSTREAM2;
        up.len = sizeof(FUZZ_UPSTREAM2) - 1;
        decoded = FUZZ_DECODED2;
        dlen = sizeof(FUZZ_DECODED2) - 1;

    } else {
        up.data = (const unsigned char *) FUZZ_UPSTREAM;
        up.len = sizeof(FUZZ_UPSTREAM) - 1;
        decoded = &FUZZ_UPSTREAM[1];
        dlen = sizeof(FUZZ_UPSTREAM) - 3;
    }

    ask = (rq->f.api == LLMR_API_CHAT && rq->f.stream
           && !rq->f.include_usage);

    n = llmr_rewrite_size(&rq->f, up.len);

    repl = malloc(n);
    fuzz_assert(repl != NULL);

    memset(edits, 0, sizeof(edits));

    nedits = llmr_rewrite(&rq->f, &up, repl, edits);

    fuzz_assert(nedits >= 1 && nedits <= LLMR_EDITS_MAX);

    /* two edits only to make the client's own stream_options ask */
    fuzz_assert(nedits == 1 || (ask && rq->f.stream_options));

    total = 0;

    for (i = 0; i < nedits; i++) {
        fuzz_assert(edits[i].start <= edits[i].end && edits[i].end <= size);
        fuzz_assert(edits[i].data >= repl
                    && edits[i].len <= n
                    && (size_t) (edits[i].data - repl) <= n - edits[i].len);
        fuzz_assert(i == 0 || edits[i - 1].end <= edits[i].start);

        total += edits[i].len;
    }

    fuzz_assert(total <= n);

    /* the body with the edits spliced in, in a block of its own size */

    len = size + total;

    for (i = 0; i < nedits; i++) {
        len -= edits[i].end - edits[i].start;
    }

    body = malloc(len ? len : 1);
    fuzz_assert(body != NULL);

    p = body;
    off = 0;

    for (i = 0; i < nedits; i++) {
        memcpy(p, data + off, edits[i].start - off);
        p += edits[i].start - off;
        memcpy(p, edits[i].data, edits[i].len);
        p += edits[i].len;
        off = edits[i].end;
    }

    memcpy(p, data + off, size - off);
    p += size - off;

    fuzz_assert((size_t) (p - body) == len);
    fuzz_assert(fuzz_json_valid(body, len));

    rc = fuzz_parse(&again, &llmr_dialects[rq->f.api], rq->classifier,
                    body, len);

    fuzz_assert(rc == LLMR_OK);
    fuzz_assert(again.f.model_present && !again.f.model_truncated);
    fuzz_assert(again.f.model_len == dlen
                && memcmp(again.f.model, decoded, dlen) == 0);

    fuzz_same_request(&rq->f, &again.f);

    if (ask) {
        fuzz_assert(again.f.stream_options && again.f.include_usage);

    } else {
        fuzz_assert(again.f.stream_options == rq->f.stream_options
                    && again.f.include_usage == rq->f.include_usage);
    }

    /* nothing is left to ask: one edit, the model */

    free(repl);

    n = llmr_rewrite_size(&again.f, up.len);
    fuzz_assert(n == up.len);

    repl = malloc(n);
    fuzz_assert(repl != NULL);

    fuzz_assert(llmr_rewrite(&again.f, &up, repl, more) == 1);
    fuzz_assert(more[0].start == again.f.model_start
                && more[0].end == again.f.model_end
                && more[0].len == up.len);

    free(body);
    free(repl);
}


/*
 * What the rewrite must not change; with the places and the model, what
 * the cuts of a body must not change either (fuzz_same).  A score bit
 * for bit: it does not depend on how the body came.
 */

static void
fuzz_same_request(const llmr_features_t *a, const llmr_features_t *b)
{
    fuzz_assert(a->api == b->api
                && a->est_tokens == b->est_tokens
                && a->prompt_tokens == b->prompt_tokens
                && a->messages == b->messages
                && a->keywords == b->keywords
                && a->max_tokens == b->max_tokens
                && a->current == b->current);

    fuzz_assert(a->code == b->code && a->tools == b->tools
                && a->stream == b->stream
                && a->json_mode == b->json_mode
                && a->thinking == b->thinking
                && a->images == b->images
                && a->previous == b->previous);

    fuzz_assert(a->ntools == b->ntools
                && memcmp(a->tool, b->tool, a->ntools * sizeof(uint32_t))
                   == 0);

    fuzz_assert(memcmp(&a->score, &b->score, sizeof(double)) == 0);
}


/* a body in one buffer; the request is freed, its features kept */

static int
fuzz_parse(llmr_request_t *rq, const llmr_dialect_t *d,
    const llmr_classifier_t *c, const unsigned char *p, size_t len)
{
    int  rc;

    fuzz_assert(llmr_request_init(rq, d, &fuzz_keywords, fuzz_history)
                == LLMR_OK);
    rq->classifier = c;
    rq->scan_limit = fuzz_scan_limit;

    rc = fuzz_feed(rq, p, len);

    if (rc == LLMR_OK) {
        rc = llmr_request_finish(rq);
    }

    llmr_request_free(rq);

    return rc;
}


