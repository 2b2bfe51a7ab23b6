
/*
 * Copyright (C) the ngx_http_llm_router_module authors
 *
 * llm-router score and calibrate: scores of a model file, computed by
 * the calls nginx makes, and the threshold that sends a given share of
 * the requests to the strong model.
 */


#include <stdlib.h>
#include <string.h>

#include "llm_router.h"


int
lr_cmd_score(int argc, char **argv)
{
    int            n, rc;
    size_t         len;
    lr_row_t       row;
    lr_read_t      how;
    lr_input_t     in;
    lr_model_t     model;
    lr_record_t    rec;
    const char    *path;
    llmr_str_t    *id;
    unsigned char  score[LLMR_SCORE_MAX];
    lr_option_t    opts[] = {
        { "model", LR_OPT_STRING, &path, 0, 0 }
    };

    path = NULL;

    n = lr_options_parse(argc, argv, opts, lr_nelts(opts));

    if (n < 0) {
        return LR_EXIT_USAGE;
    }

    if (path == NULL || n > 1) {
        lr_error("score: --model FILE and at most one DATA.jsonl expected");
        return LR_EXIT_USAGE;
    }

    if (lr_model_load(&model, path) != LLMR_OK) {
        return LR_EXIT_FAILURE;
    }

    if (lr_input_open(&in, n ? argv[0] : "-") != LLMR_OK) {
        lr_model_free(&model);
        return LR_EXIT_FAILURE;
    }

    /* the history the model was trained with, as nginx checks it */
    how.need = 0;
    how.history = model.classifier.history;
    how.classifier = &model.classifier;

    /* the score as nginx prints it; a line without an id is its number */

    while ((rc = lr_row_read(&in, &how, &rec, &row, NULL)) == LLMR_OK) {
        id = &rec.field[LR_FIELD_ID];
        len = llmr_score_format(score, row.score);

        if (id->data) {
            printf("{\"id\": %.*s, \"score\": %.*s}\n", (int) id->len,
                   id->data, (int) len, score);

        } else {
            printf("{\"id\": %lu, \"score\": %.*s}\n", in.number, (int) len,
                   score);
        }
    }

    lr_input_close(&in);
    lr_model_free(&model);

    return (rc == LR_DONE) ? 0 : LR_EXIT_FAILURE;
}


int
lr_cmd_calibrate(int argc, char **argv)
{
    int            n, rc;
    char           err[LLMR_ERROR_MAX], cond[32];
    size_t         i, above;
    double         share, *scores;
    lr_data_t      d;
    lr_read_t      how;
    lr_model_t     model;
    llmr_cond_t    rule;
    const char    *path;
    lr_option_t    opts[] = {
        { "model", LR_OPT_STRING, &path, 0, 0 },
        { "strong-share", LR_OPT_DOUBLE, &share, 0, 1 }
    };

    path = NULL;
    share = -1;

    n = lr_options_parse(argc, argv, opts, lr_nelts(opts));

    if (n < 0) {
        return LR_EXIT_USAGE;
    }

    if (path == NULL || share < 0 || n != 1) {
        lr_error("calibrate: --model FILE, --strong-share S and one "
                 "DATA.jsonl expected");
        return LR_EXIT_USAGE;
    }

    if (lr_model_load(&model, path) != LLMR_OK) {
        return LR_EXIT_FAILURE;
    }

    /* the history the model was trained with, as nginx checks it */
    how.need = 0;
    how.history = model.classifier.history;
    how.classifier = &model.classifier;

    rc = lr_data_load(&d, argv[0], &how);

    lr_model_free(&model);

    if (rc != LLMR_OK) {
        return LR_EXIT_FAILURE;
    }

    scores = malloc(d.n * sizeof(double));

    if (scores == NULL) {
        lr_error("out of memory");
        lr_data_free(&d);
        return LR_EXIT_FAILURE;
    }

    for (i = 0; i < d.n; i++) {
        scores[i] = d.rows[i].score;
    }

    lr_scores_sort(scores, d.n);

    /* the share is counted as nginx will compare, with the printed value */

    snprintf(cond, sizeof(cond), "score>%.6f",
             lr_threshold(scores, d.n, share));

    if (llmr_cond_parse(&rule, (unsigned char *) cond, strlen(cond), err,
                        sizeof(err))
        != LLMR_OK)
    {
        lr_error("calibrate: %s", err);
        rc = LLMR_ERROR;

    } else {
        for (above = 0; above < d.n && scores[above] > rule.score; above++) {
            /* void */
        }

        printf("threshold %s (%.1f%% of %zu requests score above it)\n",
               cond + 6, 100.0 * above / d.n, d.n);
        printf("llm_router_rule learned %s large;\n", cond);
    }

    free(scores);
    lr_data_free(&d);

    return (rc == LLMR_OK) ? 0 : LR_EXIT_FAILURE;
}
