
/*
 * Copyright (C) the ngx_http_llm_router_module authors
 *
 * libFuzzer target: a request body goes through what the module does
 * with it.  The body is fed in two or three buffers, cut where a hash of
 * the input says (or in buffers of a few bytes), each a heap block of
 * its own so that a read past a buffer is caught; keywords, a
 * classifier, a feature callback and the text capture are on.  The
 * verdict and the features must be those of the body in one buffer.  A
 * body that parses is then routed by rules of every kind, its triage
 * request is built and checked to be JSON, and the rewritten body must
 * parse again with the new model.
 */


#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "llmr.h"
#include "fuzz.h"


#define FUZZ_BITS      8
#define FUZZ_UPSTREAM  "\"up-model\""

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
static void fuzz_same(const llmr_features_t *a, const llmr_features_t *b);
static void fuzz_feature(void *data, unsigned message, uint32_t hash);
static int fuzz_external(void *data, const llmr_cond_t *cond);
static void fuzz_trainer(llmr_request_t *rq);
static void fuzz_route(llmr_request_t *rq);
static void fuzz_triage(llmr_request_t *rq, uint32_t h);
static void fuzz_rewrite(llmr_request_t *rq, const uint8_t *data,
    size_t size);
static int fuzz_json_valid(const unsigned char *p, size_t len);


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
    "tokens<50 !score<0.3",
    "triage=simple-task",
    "!$json keywords=code",
    "messages<2 !keywords=prose !triage=x_y",
    "",
    NULL
};

#define FUZZ_RULES  9
#define FUZZ_CONDS  16

static llmr_keywords_t      fuzz_keywords;
static llmr_phrase_t        fuzz_kw[8];
static llmr_classifier_t    fuzz_classifier;
static llmr_rule_t          fuzz_rule[FUZZ_RULES + 1];
static llmr_cond_t          fuzz_cond[FUZZ_CONDS + 1];
static unsigned             fuzz_ready;

static const yajl_callbacks  fuzz_no_callbacks;


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


int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    int              rc, rc1;
    size_t           slot;
    uint32_t         h;
    uint64_t         features;
    unsigned         nslots, history;
    unsigned char   *buf;
    llmr_capture_t   capture;
    llmr_request_t   rq, whole;

    if (!fuzz_ready) {
        fuzz_init();
    }

    h = fuzz_hash(data, size);

    history = (h >> 3) % (LLMR_HISTORY_MAX + 4);
    nslots = 2 + (h >> 12) % (LLMR_SLOTS_MAX - 1);
    slot = 1 + (h >> 17) % 64;

    buf = malloc(nslots * slot);
    fuzz_assert(buf != NULL);

    if (llmr_request_init(&rq, &fuzz_keywords, history) != LLMR_OK) {
        free(buf);
        return 0;
    }

    fuzz_assert(llmr_capture_init(&capture, buf, slot, nslots) == LLMR_OK);
    rq.capture = &capture;

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

    fuzz_assert(llmr_request_init(&whole, &fuzz_keywords, history)
                == LLMR_OK);
    whole.classifier = rq.classifier;

    rc1 = fuzz_feed(&whole, data, size);

    if (rc1 == LLMR_OK) {
        rc1 = llmr_request_finish(&whole);
    }

    llmr_request_free(&whole);

    fuzz_assert(rc == rc1);

    if (rc != LLMR_OK) {
        fuzz_assert(rq.error[0] != '\0'
                    && memchr(rq.error, '\0', LLMR_ERROR_MAX) != NULL);
        free(buf);
        return 0;
    }

    fuzz_same(&rq.f, &whole.f);

    fuzz_assert(rq.f.messages > 0 && rq.f.current < rq.f.messages);
    fuzz_assert(rq.f.model_len <= LLMR_MODEL_NAME_MAX);
    fuzz_assert(rq.f.body_len == size);
    fuzz_assert(rq.classifier ? rq.f.score >= 0 && rq.f.score <= 1
                              : rq.f.score == -1);

    fuzz_trainer(&rq);
    fuzz_route(&rq);
    fuzz_triage(&rq, h);
    fuzz_rewrite(&rq, data, size);

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


static void
fuzz_same(const llmr_features_t *a, const llmr_features_t *b)
{
    fuzz_assert(a->est_tokens == b->est_tokens
                && a->prompt_tokens == b->prompt_tokens
                && a->messages == b->messages
                && a->keywords == b->keywords
                && a->max_tokens == b->max_tokens
                && a->current == b->current);

    fuzz_assert(a->code == b->code && a->tools == b->tools
                && a->stream == b->stream
                && a->stream_options == b->stream_options
                && a->model_present == b->model_present
                && a->model_truncated == b->model_truncated
                && a->json_mode == b->json_mode);

    fuzz_assert(a->model_len == b->model_len
                && memcmp(a->model, b->model, a->model_len) == 0);

    fuzz_assert(a->object_start == b->object_start
                && a->model_start == b->model_start
                && a->model_end == b->model_end
                && a->body_len == b->body_len);

    /* bit for bit: a score does not depend on how the body came */
    fuzz_assert(memcmp(&a->score, &b->score, sizeof(double)) == 0);
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


static void
fuzz_triage(llmr_request_t *rq, uint32_t h)
{
    size_t          size;
    llmr_triage_t   t;
    unsigned char  *out, *end;

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

    free(out);
}


/* the body the provider gets must parse, with the new model */

static void
fuzz_rewrite(llmr_request_t *rq, const uint8_t *data, size_t size)
{
    int              rc;
    size_t           n;
    uint64_t         start, end;
    llmr_str_t       up;
    llmr_request_t   again;
    unsigned char   *repl, *last, *body;

    up.data = (const unsigned char *) FUZZ_UPSTREAM;
    up.len = sizeof(FUZZ_UPSTREAM) - 1;

    n = llmr_rewrite_size(&rq->f, up.len);

    repl = malloc(n);
    fuzz_assert(repl != NULL);

    last = llmr_rewrite(&rq->f, &up, repl, &start, &end);

    fuzz_assert((size_t) (last - repl) == n);
    fuzz_assert(start <= end && end <= size);

    body = malloc(size - (end - start) + n);
    fuzz_assert(body != NULL);

    memcpy(body, data, start);
    memcpy(body + start, repl, n);
    memcpy(body + start + n, data + end, size - end);

    fuzz_assert(llmr_request_init(&again, NULL, 0) == LLMR_OK);

    rc = llmr_request_feed(&again, body, size - (end - start) + n);

    if (rc == LLMR_OK) {
        rc = llmr_request_finish(&again);
    }

    llmr_request_free(&again);

    fuzz_assert(rc == LLMR_OK);
    fuzz_assert(again.f.model_len == up.len - 2
                && memcmp(again.f.model, up.data + 1, up.len - 2) == 0);
    fuzz_assert(again.f.messages == rq->f.messages);
    fuzz_assert(!again.f.stream || again.f.stream_options);

    free(body);
    free(repl);
}


static int
fuzz_json_valid(const unsigned char *p, size_t len)
{
    int          ok;
    yajl_handle  y;

    y = yajl_alloc(&fuzz_no_callbacks, NULL, NULL);
    fuzz_assert(y != NULL);

    ok = yajl_parse(y, p, len) == yajl_status_ok
         && yajl_complete_parse(y) == yajl_status_ok;

    yajl_free(y);

    return ok;
}
