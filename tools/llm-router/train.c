
/*
 * Copyright (C) the ngx_http_llm_router_module authors
 *
 * Features of an example, and logistic regression on them: AdaGrad with
 * an L2 penalty, soft labels, a seeded shuffle, so that a model is the
 * same whenever the data and options are.
 */


#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "llm_router.h"


typedef struct {
    lr_feature_t     *x;
    uint32_t         *message;
    size_t            n;
    size_t            size;
    int               failed;
} lr_collect_t;


static void lr_collect(void *data, unsigned message, uint32_t hash);
static int lr_feature_cmp(const void *one, const void *two);
static uint64_t lr_random(uint64_t *state);


static void
lr_collect(void *data, unsigned message, uint32_t hash)
{
    lr_collect_t  *c = data;
    void          *p;

    if (c->failed) {
        return;
    }

    if (c->n == c->size) {
        c->size = c->size ? 2 * c->size : 256;

        p = realloc(c->x, c->size * sizeof(lr_feature_t));
        if (p == NULL) {
            c->failed = 1;
            return;
        }

        c->x = p;

        p = realloc(c->message, c->size * sizeof(uint32_t));
        if (p == NULL) {
            c->failed = 1;
            return;
        }

        c->message = p;
    }

    c->x[c->n].hash = hash;
    c->x[c->n].value = 1.0f;
    c->message[c->n] = message;
    c->n++;
}


static int
lr_feature_cmp(const void *one, const void *two)
{
    const lr_feature_t  *a = one, *b = two;

    return (a->hash > b->hash) - (a->hash < b->hash);
}


int
lr_vectorize(const unsigned char *body, size_t len, const llmr_dialect_t *d,
    unsigned history, lr_example_t *ex, char *err, size_t errlen)
{
    int              rc;
    size_t           i, k, text;
    double           scale;
    lr_collect_t     c;
    llmr_request_t  *rq;

    memset(&c, 0, sizeof(lr_collect_t));
    memset(ex, 0, sizeof(lr_example_t));

    rq = malloc(sizeof(llmr_request_t));
    if (rq == NULL || llmr_request_init(rq, d, NULL, history) != LLMR_OK) {
        free(rq);
        snprintf(err, errlen, "out of memory");
        return LLMR_ERROR;
    }

    rq->feature = lr_collect;
    rq->feature_data = &c;

    rc = llmr_request_feed(rq, body, len);

    if (rc == LLMR_OK) {
        rc = llmr_request_finish(rq);
    }

    if (rc != LLMR_OK) {
        snprintf(err, errlen, "%s", rq->error);
        goto done;
    }

    /* the text features count as the score counts them */

    text = c.n;
    scale = llmr_text_scale(rq);

    for (i = 0; i < text; i++) {
        c.x[i].value = (float) (llmr_message_factor(rq, c.message[i])
                                * scale);
    }

    llmr_dense_features(rq, lr_collect, &c);

    if (c.failed) {
        snprintf(err, errlen, "out of memory");
        rc = LLMR_ERROR;
        goto done;
    }

    /* one entry a hash, without those that do not count */

    qsort(c.x, c.n, sizeof(lr_feature_t), lr_feature_cmp);

    for (i = 0, k = 0; i < c.n; i++) {
        if (k && c.x[k - 1].hash == c.x[i].hash) {
            c.x[k - 1].value += c.x[i].value;
            continue;
        }

        c.x[k++] = c.x[i];
    }

    for (i = 0, c.n = 0; i < k; i++) {
        if (c.x[i].value != 0.0f) {
            c.x[c.n++] = c.x[i];
        }
    }

    ex->x = c.x;
    ex->n = (uint32_t) c.n;
    ex->weight = 1.0f;
    c.x = NULL;

done:

    llmr_request_free(rq);
    free(rq);
    free(c.x);
    free(c.message);

    return rc;
}


void
lr_example_free(lr_example_t *ex)
{
    free(ex->x);
    ex->x = NULL;
    ex->n = 0;
}


double
lr_predict(const lr_example_t *ex, const float *weights, float bias,
    uint32_t mask)
{
    double    z;
    uint32_t  i;

    z = bias;

    for (i = 0; i < ex->n; i++) {
        z += weights[ex->x[i].hash & mask] * (double) ex->x[i].value;
    }

    return 1.0 / (1.0 + exp(-z));
}


/* xorshift64*: a shuffle that is the same on every machine */

static uint64_t
lr_random(uint64_t *state)
{
    *state ^= *state >> 12;
    *state ^= *state << 25;
    *state ^= *state >> 27;

    return *state * 0x2545f4914f6cdd1dULL;
}


double
lr_train(lr_example_t *ex, size_t n, const lr_options_t *opt,
    float *weights, float *bias)
{
    size_t     i, j, *order, t;
    double     p, g, loss, wsum, gb, *sq, sqb;
    uint32_t   k, h, mask;
    uint64_t   state;
    unsigned   epoch;

    mask = ((uint32_t) 1 << opt->bits) - 1;

    order = malloc(n * sizeof(size_t));
    sq = calloc((size_t) mask + 1, sizeof(double));

    if (order == NULL || sq == NULL) {
        free(order);
        free(sq);
        return -1;
    }

    memset(weights, 0, ((size_t) mask + 1) * sizeof(float));
    *bias = 0;
    sqb = 0;

    for (i = 0; i < n; i++) {
        order[i] = i;
    }

    state = opt->seed ? opt->seed : 1;

    for (epoch = 0; epoch < opt->epochs; epoch++) {

        for (i = n; i > 1; i--) {
            j = lr_random(&state) % i;
            t = order[i - 1];
            order[i - 1] = order[j];
            order[j] = t;
        }

        for (i = 0; i < n; i++) {
            lr_example_t  *e = &ex[order[i]];

            p = lr_predict(e, weights, *bias, mask);
            g = (p - e->label) * e->weight;

            gb = g;
            sqb += gb * gb;
            *bias -= (float) (opt->rate * gb / sqrt(sqb + 1e-12));

            for (k = 0; k < e->n; k++) {
                h = e->x[k].hash & mask;
                gb = g * e->x[k].value + opt->l2 * weights[h];
                sq[h] += gb * gb;
                weights[h] -= (float) (opt->rate * gb / sqrt(sq[h] + 1e-12));
            }
        }
    }

    loss = 0;
    wsum = 0;

    for (i = 0; i < n; i++) {
        p = lr_predict(&ex[i], weights, *bias, mask);
        p = p < 1e-12 ? 1e-12 : (p > 1 - 1e-12 ? 1 - 1e-12 : p);

        loss -= ex[i].weight * (ex[i].label * log(p)
                                + (1 - ex[i].label) * log(1 - p));
        wsum += ex[i].weight;
    }

    free(order);
    free(sq);

    return wsum > 0 ? loss / wsum : 0;
}
