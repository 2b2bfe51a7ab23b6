
/*
 * Copyright (C) the ngx_http_llm_router_module authors
 *
 * Rows of data: each line checked, and its request run through the
 * core, before anything is learned or measured from it; folds by a
 * hash, so that a split is the same on every run.
 */


#include <stdlib.h>
#include <string.h>

#include "llm_router.h"


#define LR_WEIGHT_MAX  1e9


static int lr_row_fill(const lr_record_t *rec, const lr_read_t *how,
    lr_row_t *row, lr_example_t *ex, char *err, size_t errlen);
static int lr_row_outcomes(const lr_record_t *rec, const lr_read_t *how,
    lr_row_t *row, char *err, size_t errlen);
static int lr_data_grow(lr_data_t *d, int examples);
static uint64_t lr_mix(uint64_t x);
static uint64_t lr_key(const lr_record_t *rec, unsigned long line);


/* the next row; LR_DONE at the end, LLMR_ERROR once it is reported */

int
lr_row_read(lr_input_t *in, const lr_read_t *how, lr_record_t *rec,
    lr_row_t *row, lr_example_t *ex)
{
    int   rc;
    char  err[LLMR_ERROR_MAX];

    rc = lr_input_next(in);

    if (rc != LLMR_OK) {
        return rc;
    }

    if (lr_record_parse(rec, (unsigned char *) in->line, in->len, err,
                        sizeof(err))
        != LLMR_OK
        || lr_row_fill(rec, how, row, ex, err, sizeof(err)) != LLMR_OK)
    {
        lr_input_error(in, "%s", err);
        return LLMR_ERROR;
    }

    row->key = lr_key(rec, in->number);

    return LLMR_OK;
}


static int
lr_row_fill(const lr_record_t *rec, const lr_read_t *how, lr_row_t *row,
    lr_example_t *ex, char *err, size_t errlen)
{
    int         rc;
    double      label, weight;
    llmr_str_t  body;

    memset(row, 0, sizeof(lr_row_t));
    row->score = -1;

    if (lr_record_object(rec, LR_FIELD_REQUEST, &body, err, errlen)
        != LLMR_OK
        || lr_record_dialect(rec, &row->dialect, err, errlen) != LLMR_OK)
    {
        return LLMR_ERROR;
    }

    if (lr_row_outcomes(rec, how, row, err, errlen) != LLMR_OK) {
        return LLMR_ERROR;
    }

    /* without a label, the strong model is needed where only it is right */

    label = row->outcomes && row->strong && !row->weak;
    weight = 1;

    if (lr_record_number(rec, LR_FIELD_LABEL, how->need & LR_NEED_LABEL, 1,
                         &label, err, errlen)
        == LLMR_ERROR
        || lr_record_number(rec, LR_FIELD_WEIGHT, 0, LR_WEIGHT_MAX, &weight,
                            err, errlen)
           == LLMR_ERROR)
    {
        return LLMR_ERROR;
    }

    if (!(how->need & LR_VECTORIZE)) {
        return lr_request_check(&body, row->dialect, how->history,
                                how->classifier, &row->score, err, errlen);
    }

    rc = lr_vectorize(body.data, body.len, row->dialect, how->history, ex,
                      err, errlen);

    ex->label = (float) label;
    ex->weight = (float) weight;

    return rc;
}


/* both outcomes, or none: optional unless the command needs them */

static int
lr_row_outcomes(const lr_record_t *rec, const lr_read_t *how, lr_row_t *row,
    char *err, size_t errlen)
{
    int       rc, required;
    unsigned  i, known, value[2];

    required = (how->need & LR_NEED_OUTCOMES) != 0;
    known = 0;

    for (i = 0; i < 2; i++) {
        rc = lr_record_bool(rec, LR_FIELD_WEAK + i, required, &value[i], err,
                            errlen);

        if (rc == LLMR_ERROR) {
            return LLMR_ERROR;
        }

        known += (rc == LLMR_OK);
    }

    if (known == 2) {
        row->outcomes = 1;
        row->weak = value[0];
        row->strong = value[1];
    }

    return LLMR_OK;
}


int
lr_data_load(lr_data_t *d, const char *path, const lr_read_t *how)
{
    int           rc;
    lr_input_t    in;
    lr_record_t   rec;

    memset(d, 0, sizeof(lr_data_t));

    if (lr_input_open(&in, path) != LLMR_OK) {
        return LLMR_ERROR;
    }

    for ( ;; ) {
        if (lr_data_grow(d, how->need & LR_VECTORIZE) != LLMR_OK) {
            lr_error("out of memory");
            rc = LLMR_ERROR;
            break;
        }

        rc = lr_row_read(&in, how, &rec, &d->rows[d->n],
                         d->ex ? &d->ex[d->n] : NULL);

        if (rc != LLMR_OK) {
            break;
        }

        d->n++;
    }

    lr_input_close(&in);

    if (rc == LR_DONE && d->n == 0) {
        lr_error("%s: no data", in.name);
        rc = LLMR_ERROR;
    }

    if (rc == LLMR_ERROR) {
        lr_data_free(d);
        return LLMR_ERROR;
    }

    return LLMR_OK;
}


static int
lr_data_grow(lr_data_t *d, int examples)
{
    size_t         size;
    lr_row_t      *rows;
    lr_example_t  *ex;

    if (d->n < d->size) {
        return LLMR_OK;
    }

    size = d->size ? 2 * d->size : 1024;

    rows = realloc(d->rows, size * sizeof(lr_row_t));
    if (rows == NULL) {
        return LLMR_ERROR;
    }

    d->rows = rows;

    if (examples) {
        ex = realloc(d->ex, size * sizeof(lr_example_t));
        if (ex == NULL) {
            return LLMR_ERROR;
        }

        d->ex = ex;
    }

    d->size = size;

    return LLMR_OK;
}


void
lr_data_free(lr_data_t *d)
{
    size_t  i;

    for (i = 0; d->ex && i < d->n; i++) {
        lr_example_free(&d->ex[i]);
    }

    free(d->ex);
    free(d->rows);
    memset(d, 0, sizeof(lr_data_t));
}


/* splitmix64's finaliser */

static uint64_t
lr_mix(uint64_t x)
{
    x ^= x >> 30;
    x *= 0xbf58476d1ce4e5b9ULL;
    x ^= x >> 27;
    x *= 0x94d049bb133111ebULL;
    x ^= x >> 31;

    return x;
}


/* a row is known by its id where it has one, so folds survive a sort */

static uint64_t
lr_key(const lr_record_t *rec, unsigned long line)
{
    size_t             i;
    uint64_t           h;
    const llmr_str_t  *id;

    id = &rec->field[LR_FIELD_ID];

    if (id->data == NULL) {
        return line;
    }

    h = 14695981039346656037ULL;

    for (i = 0; i < id->len; i++) {
        h = (h ^ id->data[i]) * 1099511628211ULL;
    }

    return h;
}


/* a number in [0, 1) for a row: below --holdout, or times the folds */

double
lr_row_unit(const lr_row_t *row, uint64_t seed)
{
    return (double) (lr_mix(row->key ^ lr_mix(seed)) >> 11)
           / 9007199254740992.0;
}


/*
 * Trains on the rows of the other folds, then scores those of the fold
 * with lr_predict(); returns the training loss, -1 without memory.
 */

double
lr_data_train(lr_data_t *d, unsigned fold, const lr_options_t *opt,
    float *weights, float *bias, size_t *trained)
{
    size_t         i, n;
    double         loss;
    lr_example_t  *ex;

    ex = malloc(d->n * sizeof(lr_example_t));
    if (ex == NULL) {
        return -1;
    }

    for (i = 0, n = 0; i < d->n; i++) {
        if (d->rows[i].fold != fold) {
            ex[n++] = d->ex[i];
        }
    }

    *trained = n;
    loss = n ? lr_train(ex, n, opt, weights, bias) : 0;

    free(ex);

    if (n == 0 || loss < 0) {
        return loss;
    }

    for (i = 0; i < d->n; i++) {
        if (d->rows[i].fold == fold) {
            d->rows[i].score = lr_predict(&d->ex[i], weights, *bias,
                                          ((uint32_t) 1 << opt->bits) - 1);
        }
    }

    return loss;
}


/* the curve of the rows of a fold (or all) that have both outcomes */

int
lr_data_curve(lr_curve_t *c, const lr_data_t *d, unsigned fold)
{
    int            rc;
    size_t         i, n;
    lr_outcome_t  *o;

    memset(c, 0, sizeof(lr_curve_t));

    o = malloc(d->n * sizeof(lr_outcome_t));
    if (o == NULL) {
        return LLMR_ERROR;
    }

    for (i = 0, n = 0; i < d->n; i++) {
        if (d->rows[i].outcomes
            && (fold == LR_FOLD_ALL || d->rows[i].fold == fold))
        {
            o[n].score = d->rows[i].score;
            o[n].weak = d->rows[i].weak;
            o[n].strong = d->rows[i].strong;
            n++;
        }
    }

    rc = n ? lr_curve_init(c, o, n) : LLMR_OK;

    free(o);

    return rc;
}
