
/*
 * Copyright (C) the ngx_http_llm_router_module authors
 *
 * llm-router train: a model measured on a held-out share of the data
 * first, then trained on all of it and written for llm_router_classifier.
 */


#include <math.h>
#include <stdlib.h>

#include "llm_router.h"


#define LR_HELD_OUT  1


static int lr_holdout(lr_data_t *d, double holdout, const lr_options_t *opt,
    float *weights);
static double lr_log_loss(const lr_data_t *d, unsigned fold);
static int lr_holdout_routing(const lr_data_t *d);


int
lr_cmd_train(int argc, char **argv)
{
    int            n, rc;
    float          bias, *weights;
    double         holdout, loss;
    lr_data_t      d;
    lr_read_t      how;
    const char    *out;
    lr_options_t   opt = LR_OPTIONS_DEFAULT;
    lr_option_t    opts[] = {
        { "out", LR_OPT_STRING, &out, 0, 0 },
        { "holdout", LR_OPT_DOUBLE, &holdout, 0, 0.9 },
        LR_TRAIN_OPTIONS(&opt)
    };

    out = NULL;
    holdout = LR_HOLDOUT_DEFAULT;

    n = lr_options_parse(argc, argv, opts, lr_nelts(opts));

    if (n < 0) {
        return LR_EXIT_USAGE;
    }

    if (out == NULL || n != 1) {
        lr_error("train: --out FILE and one DATA.jsonl expected");
        return LR_EXIT_USAGE;
    }

    how.need = LR_NEED_LABEL | LR_VECTORIZE;
    how.history = opt.history;
    how.classifier = NULL;

    if (lr_data_load(&d, argv[0], &how) != LLMR_OK) {
        return LR_EXIT_FAILURE;
    }

    printf("read %zu examples from %s\n", d.n, argv[0]);

    weights = malloc(sizeof(float) << opt.bits);

    if (weights == NULL) {
        lr_error("out of memory");
        lr_data_free(&d);
        return LR_EXIT_FAILURE;
    }

    rc = (holdout > 0) ? lr_holdout(&d, holdout, &opt, weights) : LLMR_OK;

    if (rc == LLMR_OK) {
        loss = lr_train(d.ex, d.n, &opt, weights, &bias);

        if (loss < 0) {
            lr_error("out of memory");
            rc = LLMR_ERROR;

        } else {
            printf("trained on all %zu: training loss %.4f\n", d.n, loss);
            rc = lr_model_write(out, opt.bits, opt.history, bias, weights);
        }
    }

    if (rc == LLMR_OK) {
        printf("wrote %s: %u bits, %zu bytes\n", out, opt.bits,
               llmr_classifier_size(opt.bits));
    }

    free(weights);
    lr_data_free(&d);

    return (rc == LLMR_OK) ? 0 : LR_EXIT_FAILURE;
}


/* what a model trained without the held-out rows makes of them */

static int
lr_holdout(lr_data_t *d, double holdout, const lr_options_t *opt,
    float *weights)
{
    float   bias;
    size_t  i, trained;
    double  loss;

    for (i = 0; i < d->n; i++) {
        d->rows[i].fold = (lr_row_unit(&d->rows[i], opt->seed) < holdout)
                          ? LR_HELD_OUT : 0;
    }

    loss = lr_data_train(d, LR_HELD_OUT, opt, weights, &bias, &trained);

    if (loss < 0) {
        lr_error("out of memory");
        return LLMR_ERROR;
    }

    if (trained == 0 || trained == d->n) {
        printf("held out: none, %zu examples are too few for --holdout %g\n",
               d->n, holdout);
        return LLMR_OK;
    }

    printf("held out %zu (--holdout %g): trained on %zu, training loss %.4f, "
           "held-out log loss %.4f\n", d->n - trained, holdout, trained,
           loss, lr_log_loss(d, LR_HELD_OUT));

    return lr_holdout_routing(d);
}


static double
lr_log_loss(const lr_data_t *d, unsigned fold)
{
    size_t  i;
    double  p, y, w, loss, sum;

    loss = 0;
    sum = 0;

    for (i = 0; i < d->n; i++) {
        if (d->rows[i].fold != fold) {
            continue;
        }

        p = d->rows[i].score;
        p = p < 1e-12 ? 1e-12 : (p > 1 - 1e-12 ? 1 - 1e-12 : p);
        y = d->ex[i].label;
        w = d->ex[i].weight;

        loss -= w * (y * log(p) + (1 - y) * log(1 - p));
        sum += w;
    }

    return sum > 0 ? loss / sum : 0;
}


/* routing figures, for the held-out rows that have both outcomes */

static int
lr_holdout_routing(const lr_data_t *d)
{
    lr_curve_t  c;

    if (lr_data_curve(&c, d, LR_HELD_OUT) != LLMR_OK) {
        lr_error("out of memory");
        return LLMR_ERROR;
    }

    if (c.n == 0) {
        return LLMR_OK;
    }

    printf("held out, %zu with outcomes: APGR %.4f, CPT(50%%) %.2f%%, "
           "CPT(80%%) %.2f%%\n", c.n, lr_curve_apgr(&c),
           100 * lr_curve_cpt(&c, 0.5), 100 * lr_curve_cpt(&c, 0.8));

    lr_curve_free(&c);

    return LLMR_OK;
}
