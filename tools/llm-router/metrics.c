
/*
 * Copyright (C) the ngx_http_llm_router_module authors
 *
 * Routing quality as routing-eval measures it: requests sorted by score,
 * the k highest sent to the strong model, for k = 0 to n.  Requests with
 * equal scores are in no order, so the curve is the expected one over
 * all orders of each tie: the same on every run, and no better for a
 * router that scores everything alike than the file's order would make
 * it.  Between its n + 1 points the curve is linear.
 */


#include <math.h>
#include <stdlib.h>

#include "llm_router.h"


static int lr_outcome_cmp(const void *one, const void *two);
static int lr_score_cmp(const void *one, const void *two);
static double lr_point_pgr(const lr_curve_t *c, size_t k);


static int
lr_outcome_cmp(const void *one, const void *two)
{
    const lr_outcome_t  *a = one, *b = two;

    return (a->score < b->score) - (a->score > b->score);
}


/* sorts o by score, highest first; n > 0 */

int
lr_curve_init(lr_curve_t *c, lr_outcome_t *o, size_t n)
{
    size_t  a, b, k;
    double  sum, gain;

    c->n = n;
    c->quality = malloc((n + 1) * sizeof(double));

    if (c->quality == NULL) {
        return LLMR_ERROR;
    }

    qsort(o, n, sizeof(lr_outcome_t), lr_outcome_cmp);

    sum = 0;

    for (k = 0; k < n; k++) {
        sum += o[k].weak;
    }

    c->quality[0] = sum / n;

    /*
     * k of the m requests of a tie sent strong, in a random order, gain
     * k / m of what the whole tie gains
     */

    for (a = 0; a < n; a = b) {
        gain = 0;

        for (b = a; b < n && o[b].score == o[a].score; b++) {
            gain += o[b].strong - o[b].weak;
        }

        for (k = a + 1; k <= b; k++) {
            c->quality[k] = (sum + gain * (k - a) / (b - a)) / n;
        }

        sum += gain;
    }

    return LLMR_OK;
}


void
lr_curve_free(lr_curve_t *c)
{
    free(c->quality);
    c->quality = NULL;
}


/* the quality with a share (0..1) of the requests sent strong */

double
lr_curve_quality(const lr_curve_t *c, double share)
{
    double  x;
    size_t  k;

    x = share * c->n;
    k = (size_t) x;

    if (k >= c->n) {
        return c->quality[c->n];
    }

    return c->quality[k] + (x - k) * (c->quality[k + 1] - c->quality[k]);
}


/*
 * PGR is measured against the curve's own ends, so that it is exactly
 * 0 and 1 there; without a gap between them there is no PGR: NaN.
 */

double
lr_curve_pgr(const lr_curve_t *c, double share)
{
    return (lr_curve_quality(c, share) - c->quality[0])
           / (c->quality[c->n] - c->quality[0]);
}


static double
lr_point_pgr(const lr_curve_t *c, size_t k)
{
    return (c->quality[k] - c->quality[0])
           / (c->quality[c->n] - c->quality[0]);
}


/* the area under PGR for shares 0 to 1: the trapezoids are exact */

double
lr_curve_apgr(const lr_curve_t *c)
{
    size_t  k;
    double  area;

    area = 0;

    for (k = 0; k < c->n; k++) {
        area += (lr_point_pgr(c, k) + lr_point_pgr(c, k + 1)) / 2;
    }

    return area / c->n;
}


/* the smallest share at which the linear curve reaches the PGR */

double
lr_curve_cpt(const lr_curve_t *c, double pgr)
{
    size_t  k;
    double  prev, next;

    if (isnan(lr_point_pgr(c, 0))) {
        return NAN;
    }

    if (lr_point_pgr(c, 0) >= pgr) {
        return 0;
    }

    for (k = 1; k < c->n; k++) {
        if (lr_point_pgr(c, k) >= pgr) {
            break;
        }
    }

    prev = lr_point_pgr(c, k - 1);
    next = lr_point_pgr(c, k);

    return (k - 1 + (pgr - prev) / (next - prev)) / c->n;
}


static int
lr_score_cmp(const void *one, const void *two)
{
    const double  *a = one, *b = two;

    return (*a < *b) - (*a > *b);
}


void
lr_scores_sort(double *scores, size_t n)
{
    qsort(scores, n, sizeof(double), lr_score_cmp);
}


/*
 * The threshold between two neighbouring scores (sorted, highest first)
 * where "score > T" comes nearest to the share: a tie is never split,
 * and the middle of the gap leaves room for rounding and for new data.
 */

double
lr_threshold(const double *sorted, size_t n, double share)
{
    size_t  i, best;
    double  target;

    target = share * n;
    best = 0;

    for (i = 1; i <= n; i++) {
        if (i < n && sorted[i - 1] == sorted[i]) {
            continue;
        }

        if (fabs(i - target) < fabs(best - target)) {
            best = i;
        }
    }

    if (best == 0) {
        return 1;
    }

    if (best == n) {
        return 0;
    }

    return (sorted[best - 1] + sorted[best]) / 2;
}
