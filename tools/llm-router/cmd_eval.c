
/*
 * Copyright (C) the ngx_http_llm_router_module authors
 *
 * llm-router eval: routing quality on rows with both outcomes, scored
 * by a model file as nginx scores, or out of fold by cross-validation.
 */


#include <math.h>
#include <stdlib.h>

#include "llm_router.h"


#define LR_CURVE_STEPS  10


static int lr_cross_validate(lr_data_t *d, unsigned folds,
    const lr_options_t *opt);
static void lr_eval_text(const lr_curve_t *c);
static void lr_eval_json(const lr_curve_t *c);
static void lr_put(const char *fmt, double value, const char *none);


int
lr_cmd_eval(int argc, char **argv)
{
    int            n, rc, json;
    unsigned       folds;
    lr_data_t      d;
    lr_read_t      how;
    lr_curve_t     c;
    lr_model_t     model;
    const char    *path;
    lr_options_t   opt = LR_OPTIONS_DEFAULT;
    lr_option_t    opts[] = {
        { "model", LR_OPT_STRING, &path, 0, 0 },
        { "cv", LR_OPT_UINT, &folds, 2, 1000 },
        { "json", LR_OPT_FLAG, &json, 0, 0 },
        LR_TRAIN_OPTIONS(&opt)
    };

    path = NULL;
    folds = 0;
    json = 0;

    n = lr_options_parse(argc, argv, opts, lr_nelts(opts));

    if (n < 0) {
        return LR_EXIT_USAGE;
    }

    if ((path == NULL) == (folds == 0) || n != 1) {
        lr_error("eval: --model FILE or --cv K, and one DATA.jsonl "
                 "expected");
        return LR_EXIT_USAGE;
    }

    how.need = LR_NEED_OUTCOMES;
    how.history = opt.history;
    how.classifier = NULL;

    if (path) {
        if (lr_model_load(&model, path) != LLMR_OK) {
            return LR_EXIT_FAILURE;
        }

        how.history = model.classifier.history;
        how.classifier = &model.classifier;

    } else {
        how.need |= LR_VECTORIZE;
    }

    rc = lr_data_load(&d, argv[0], &how);

    if (path) {
        lr_model_free(&model);
    }

    if (rc != LLMR_OK) {
        return LR_EXIT_FAILURE;
    }

    if (folds) {
        rc = lr_cross_validate(&d, folds, &opt);
    }

    if (rc == LLMR_OK) {
        rc = lr_data_curve(&c, &d, LR_FOLD_ALL);

        if (rc != LLMR_OK) {
            lr_error("out of memory");
        }
    }

    lr_data_free(&d);

    if (rc != LLMR_OK) {
        return LR_EXIT_FAILURE;
    }

    if (json) {
        lr_eval_json(&c);

    } else {
        lr_eval_text(&c);
    }

    lr_curve_free(&c);

    return 0;
}


/* each row scored by the model trained on the folds it is not in */

static int
lr_cross_validate(lr_data_t *d, unsigned folds, const lr_options_t *opt)
{
    int       rc;
    float     bias, *weights;
    size_t    i, trained;
    double    loss;
    unsigned  fold;

    weights = malloc(sizeof(float) << opt->bits);

    if (weights == NULL) {
        lr_error("out of memory");
        return LLMR_ERROR;
    }

    for (i = 0; i < d->n; i++) {
        d->rows[i].fold = (unsigned) (lr_row_unit(&d->rows[i], opt->seed)
                                      * folds);
    }

    rc = LLMR_OK;

    for (fold = 0; fold < folds; fold++) {
        loss = lr_data_train(d, fold, opt, weights, &bias, &trained);

        if (loss < 0) {
            lr_error("out of memory");
            rc = LLMR_ERROR;
            break;
        }

        if (trained == 0) {
            lr_error("eval: %zu rows are too few for --cv %u", d->n, folds);
            rc = LLMR_ERROR;
            break;
        }
    }

    free(weights);

    return rc;
}


static void
lr_eval_text(const lr_curve_t *c)
{
    unsigned  i;
    double    share;

    printf("rows              %zu\n", c->n);
    printf("weak accuracy     %.4f\n", c->quality[0]);
    printf("strong accuracy   %.4f\n", c->quality[c->n]);
    printf("strong share   quality   PGR\n");

    for (i = 0; i <= LR_CURVE_STEPS; i++) {
        share = (double) i / LR_CURVE_STEPS;

        printf("%11.0f%%    %.4f   ", 100 * share,
               lr_curve_quality(c, share));
        lr_put("%.4f\n", lr_curve_pgr(c, share), "n/a\n");
    }

    lr_put("APGR              %.4f\n", lr_curve_apgr(c), "APGR n/a\n");
    lr_put("CPT(50%%)          %.2f%%\n", 100 * lr_curve_cpt(c, 0.5),
           "CPT(50%) n/a\n");
    lr_put("CPT(80%%)          %.2f%%\n", 100 * lr_curve_cpt(c, 0.8),
           "CPT(80%) n/a\n");
}


/* one object, shares as fractions, null where there is no quality gap */

static void
lr_eval_json(const lr_curve_t *c)
{
    unsigned  i;
    double    share;

    printf("{\"rows\":%zu,\"weak_accuracy\":%.6f,\"strong_accuracy\":%.6f,"
           "\"curve\":[", c->n, c->quality[0], c->quality[c->n]);

    for (i = 0; i <= LR_CURVE_STEPS; i++) {
        share = (double) i / LR_CURVE_STEPS;

        printf("%s{\"strong_share\":%.1f,\"quality\":%.6f,\"pgr\":",
               i ? "," : "", share, lr_curve_quality(c, share));
        lr_put("%.6f}", lr_curve_pgr(c, share), "null}");
    }

    printf("],\"apgr\":");
    lr_put("%.6f", lr_curve_apgr(c), "null");
    printf(",\"cpt50\":");
    lr_put("%.6f", lr_curve_cpt(c, 0.5), "null");
    printf(",\"cpt80\":");
    lr_put("%.6f", lr_curve_cpt(c, 0.8), "null");
    printf("}\n");
}


static void
lr_put(const char *fmt, double value, const char *none)
{
    if (isnan(value)) {
        fputs(none, stdout);

    } else {
        printf(fmt, value);
    }
}
