
/*
 * Copyright (C) the ngx_http_llm_router_module authors
 *
 * Learned scoring: a logistic regression over hashed features of the
 * conversation, computed in the parse pass.  Each text feature adds its
 * weight to the message it was found in, so a score needs no feature
 * list and no allocation: only a lookup per word and word pair.
 *
 *   z = bias + (turn + 0.5 window) / sqrt(features) + dense,  p = 1/(1+e^-z)
 *
 * where turn and window are the weight sums of the current turn and of
 * the history window, and dense are one-hot buckets of lengths, counts
 * and flags.  The trainer builds the same vector from the hashes that
 * llmr_request_t hands to its feature callback.
 */


#include <math.h>
#include <stdio.h>
#include <string.h>

#include "llmr.h"


#define LLMR_CLASSIFIER_MAGIC   "LLMRCLF\0"
#define LLMR_CLASSIFIER_HEADER  24

/* seeds keep the kinds of feature apart in the one hash space */
#define LLMR_SEED_WORD          0x2f1a9c45u
#define LLMR_SEED_PAIR          0x8d3b67e1u
#define LLMR_SEED_DENSE         0x5c4e21b7u

/* the dense features of a request, summed against the weights */

typedef struct {
    double                     z;
    const llmr_classifier_t   *classifier;
} llmr_dense_sum_t;


static uint32_t llmr_mix(uint32_t h);
static void llmr_emit(llmr_request_t *rq, uint32_t hash);
static unsigned llmr_bucket(uint64_t n);
static void llmr_dense_add(void *data, unsigned message, uint32_t hash);
static uint32_t llmr_fnv(const unsigned char *p, size_t len);
static uint32_t llmr_get32(const unsigned char *p);
static void llmr_put32(unsigned char *p, uint32_t v);


/* murmur3's finaliser: FNV alone spreads short words poorly */

static uint32_t
llmr_mix(uint32_t h)
{
    h ^= h >> 16;
    h *= 0x85ebca6bu;
    h ^= h >> 13;
    h *= 0xc2b2ae35u;
    h ^= h >> 16;

    return h;
}


static void
llmr_emit(llmr_request_t *rq, uint32_t hash)
{
    rq->msg.features++;

    if (rq->classifier) {
        rq->msg.weight += rq->classifier->weights[hash
                                                  & rq->classifier->mask];
    }

    if (rq->feature) {
        rq->feature(rq->feature_data, rq->f.messages - 1, hash);
    }
}


void
llmr_word(llmr_request_t *rq, uint32_t word, uint32_t *prev)
{
    llmr_emit(rq, llmr_mix(word ^ LLMR_SEED_WORD));
    llmr_emit(rq, llmr_mix((*prev * 0x9e3779b1u) ^ word ^ LLMR_SEED_PAIR));

    *prev = word;
}


/* "#1" to "#4": a number of one to four or more characters */

uint32_t
llmr_number_hash(size_t len)
{
    uint32_t  h;

    h = (LLMR_FNV_OFFSET ^ '#') * LLMR_FNV_PRIME;

    return (h ^ ('0' + (len < 4 ? len : 4))) * LLMR_FNV_PRIME;
}


static uint32_t
llmr_fnv(const unsigned char *p, size_t len)
{
    uint32_t  h;

    h = LLMR_FNV_OFFSET;

    while (len--) {
        h = (h ^ *p++) * LLMR_FNV_PRIME;
    }

    return h;
}


/* log2 buckets: 0, 1, 2-3, 4-7, ... */

static unsigned
llmr_bucket(uint64_t n)
{
    unsigned  b;

    for (b = 0; n; b++) {
        n >>= 1;
    }

    return b;
}


void
llmr_dense_features(const llmr_request_t *rq, llmr_feature_pt emit,
    void *data)
{
    unsigned                i;
    uint64_t                v[10];
    const llmr_features_t  *f;

    f = &rq->f;

    v[0] = rq->turn.tokens;
    v[1] = rq->window.tokens;
    v[2] = f->messages;
    v[3] = rq->turn.numbers;
    v[4] = rq->turn.questions;
    v[5] = rq->turn.lines;
    v[6] = f->max_tokens < 0 ? 0 : (uint64_t) f->max_tokens + 1;
    v[7] = f->code;
    v[8] = f->tools;
    v[9] = 1;                                       /* a second bias */

    for (i = 0; i < 10; i++) {
        emit(data, (unsigned) -1,
             llmr_mix(LLMR_SEED_DENSE ^ (i << 8) ^ llmr_bucket(v[i])));
    }
}


static void
llmr_dense_add(void *data, unsigned message, uint32_t hash)
{
    llmr_dense_sum_t  *sum = data;

    (void) message;

    sum->z += sum->classifier->weights[hash & sum->classifier->mask];
}


/* how much a message's text counts: the turn fully, the window half */

double
llmr_message_factor(const llmr_request_t *rq, unsigned message)
{
    unsigned  current;

    current = rq->f.current;

    if (message >= current) {
        return 1.0;
    }

    if (current - message <= rq->history) {
        return LLMR_HISTORY_FACTOR;
    }

    return 0.0;
}


double
llmr_text_scale(const llmr_request_t *rq)
{
    uint32_t  n;

    n = rq->turn.features + rq->window.features;

    return 1.0 / sqrt(n ? (double) n : 1.0);
}


void
llmr_score(llmr_request_t *rq)
{
    llmr_dense_sum_t  sum;

    if (rq->classifier == NULL) {
        rq->f.score = -1;
        return;
    }

    sum.classifier = rq->classifier;
    sum.z = rq->classifier->bias
            + (rq->turn.weight + LLMR_HISTORY_FACTOR * rq->window.weight)
              * llmr_text_scale(rq);

    llmr_dense_features(rq, llmr_dense_add, &sum);

    rq->f.score = 1.0 / (1.0 + exp(-sum.z));
}


/* one format for nginx and the llm-router command: their scores compare */

size_t
llmr_score_format(unsigned char *buf, double score)
{
    if (score < 0) {
        memcpy(buf, "null", 4);
        return 4;
    }

    return (size_t) snprintf((char *) buf, LLMR_SCORE_MAX, "%.6f", score);
}


/*
 * The model file: "LLMRCLF\0", version, bits, history, bias, the
 * weights, then an FNV-1a checksum of all that; little-endian floats.
 */

size_t
llmr_classifier_size(unsigned bits)
{
    return LLMR_CLASSIFIER_HEADER + ((size_t) 4 << bits) + 4;
}


int
llmr_classifier_load(llmr_classifier_t *c, const unsigned char *p,
    size_t len, char *err, size_t errlen)
{
    size_t        i;
    float         bias;
    unsigned      bits, version, history;
    uint16_t      one;
    const float  *weights;

    one = 1;

    if (*(unsigned char *) &one != 1) {
        snprintf(err, errlen, "big-endian hosts are not supported");
        return LLMR_ERROR;
    }

    if (len < LLMR_CLASSIFIER_HEADER + 4
        || memcmp(p, LLMR_CLASSIFIER_MAGIC, 8) != 0)
    {
        snprintf(err, errlen, "not a classifier file");
        return LLMR_ERROR;
    }

    version = llmr_get32(p + 8);

    if (version != LLMR_CLASSIFIER_VERSION) {
        snprintf(err, errlen, "classifier file version %u, version %u "
                 "expected", version, LLMR_CLASSIFIER_VERSION);
        return LLMR_ERROR;
    }

    bits = llmr_get32(p + 12);

    if (bits < LLMR_CLASSIFIER_BITS_MIN || bits > LLMR_CLASSIFIER_BITS_MAX) {
        snprintf(err, errlen, "invalid hash size of %u bits", bits);
        return LLMR_ERROR;
    }

    history = llmr_get32(p + 16);

    if (history > LLMR_HISTORY_MAX) {
        snprintf(err, errlen, "invalid history of %u messages", history);
        return LLMR_ERROR;
    }

    if (len != llmr_classifier_size(bits)) {
        snprintf(err, errlen, "%s classifier file: %zu bytes, %zu expected",
                 len < llmr_classifier_size(bits) ? "truncated" : "oversized",
                 len, llmr_classifier_size(bits));
        return LLMR_ERROR;
    }

    if (llmr_get32(p + len - 4) != llmr_fnv(p, len - 4)) {
        snprintf(err, errlen, "corrupt classifier file: bad checksum");
        return LLMR_ERROR;
    }

    if ((uintptr_t) (p + LLMR_CLASSIFIER_HEADER) % sizeof(float)) {
        snprintf(err, errlen, "misaligned classifier data");
        return LLMR_ERROR;
    }

    /* a NaN or an infinity would make scores NaN, which is no number */

    memcpy(&bias, p + 20, sizeof(float));
    weights = (const float *) (p + LLMR_CLASSIFIER_HEADER);

    if (!isfinite(bias)) {
        snprintf(err, errlen, "invalid classifier file: the bias is not "
                 "a finite number");
        return LLMR_ERROR;
    }

    for (i = 0; i < (size_t) 1 << bits; i++) {
        if (!isfinite(weights[i])) {
            snprintf(err, errlen, "invalid classifier file: weight %zu is "
                     "not a finite number", i);
            return LLMR_ERROR;
        }
    }

    c->bits = bits;
    c->mask = ((uint32_t) 1 << bits) - 1;
    c->history = history;
    c->bias = bias;
    c->weights = weights;

    return LLMR_OK;
}


void
llmr_classifier_write(unsigned char *out, unsigned bits, unsigned history,
    float bias, const float *weights)
{
    size_t  len;

    len = llmr_classifier_size(bits);

    memcpy(out, LLMR_CLASSIFIER_MAGIC, 8);
    llmr_put32(out + 8, LLMR_CLASSIFIER_VERSION);
    llmr_put32(out + 12, bits);
    llmr_put32(out + 16, history);
    memcpy(out + 20, &bias, sizeof(float));
    memcpy(out + LLMR_CLASSIFIER_HEADER, weights, (size_t) 4 << bits);
    llmr_put32(out + len - 4, llmr_fnv(out, len - 4));
}


static uint32_t
llmr_get32(const unsigned char *p)
{
    return (uint32_t) p[0] | (uint32_t) p[1] << 8 | (uint32_t) p[2] << 16
           | (uint32_t) p[3] << 24;
}


static void
llmr_put32(unsigned char *p, uint32_t v)
{
    p[0] = (unsigned char) v;
    p[1] = (unsigned char) (v >> 8);
    p[2] = (unsigned char) (v >> 16);
    p[3] = (unsigned char) (v >> 24);
}
