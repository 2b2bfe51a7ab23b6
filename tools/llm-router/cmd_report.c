
/*
 * Copyright (C) the ngx_http_llm_router_module authors
 *
 * llm-router report: what routing costs in quality and saves in money,
 * from judge's labels and nginx's shadow pairs.  The quality loss of a
 * group of requests is the share of them whose strong answer was better
 * (a split verdict counts half), with a 95% Wilson score interval, which
 * stays within 0 and 1 and is honest for small groups and shares near
 * 0; the cost saved is what the strong model would have cost for the
 * same requests less what they cost.
 */


#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "llm_router.h"


#define LR_Z          1.96              /* of a 95% normal interval */
#define LR_USD_MAX    1e9


typedef struct {
    unsigned char    *name;             /* decoded; NULL when none */
    size_t            len;
    size_t            n;
    double            sum;              /* of the labels */
} lr_group_t;

typedef struct {
    lr_group_t       *items;
    size_t            n;
} lr_groups_t;

typedef struct {
    size_t            lines;
    lr_group_t        all;
    lr_groups_t       rules;
    lr_groups_t       models;

    size_t            costs;            /* lines with both costs */
    double            cost;
    double            strong;

    size_t            escalations;      /* lines that tell */
    size_t            escalated;
} lr_report_t;


static int lr_report_read(lr_report_t *r, const char *path);
static int lr_report_line(lr_report_t *r, const lr_record_t *rec, char *err,
    size_t errlen);
static int lr_report_label(lr_report_t *r, const lr_record_t *rec,
    double label, char *err, size_t errlen);
static int lr_report_cost(lr_report_t *r, const lr_record_t *rec, char *err,
    size_t errlen);
static int lr_group_add(lr_groups_t *groups, unsigned char *name,
    size_t len, double label);
static int lr_group_cmp(const void *one, const void *two);
static void lr_wilson(const lr_group_t *g, double *low, double *high);
static size_t lr_width(const unsigned char *p, size_t len);
static void lr_report_text(lr_report_t *r);
static size_t lr_groups_width(const lr_groups_t *groups, size_t prefix,
    size_t *n);
static void lr_row_text(const char *prefix, const lr_group_t *g, int named,
    size_t width, size_t nwidth);
static void lr_report_json(lr_report_t *r);
static void lr_groups_json(const lr_groups_t *groups, const char *key);
static void lr_stats_json(const lr_group_t *g);
static void lr_groups_free(lr_groups_t *groups);


int
lr_cmd_report(int argc, char **argv)
{
    int          n, i, json, rc;
    lr_report_t  r;
    lr_option_t  opts[] = {
        { "json", LR_OPT_FLAG, &json, 0, 0 }
    };

    json = 0;

    n = lr_options_parse(argc, argv, opts, lr_nelts(opts));

    if (n < 1) {
        if (n == 0) {
            lr_error("report: one or more LABELS-OR-PAIRS.jsonl expected");
        }

        return LR_EXIT_USAGE;
    }

    memset(&r, 0, sizeof(lr_report_t));
    rc = LLMR_OK;

    for (i = 0; rc == LLMR_OK && i < n; i++) {
        rc = lr_report_read(&r, argv[i]);
    }

    if (rc == LLMR_OK && r.lines == 0) {
        lr_error("report: no data");
        rc = LLMR_ERROR;
    }

    if (rc == LLMR_OK) {
        /* qsort() takes no NULL, even for nothing */

        if (r.all.n) {
            qsort(r.rules.items, r.rules.n, sizeof(lr_group_t),
                  lr_group_cmp);
            qsort(r.models.items, r.models.n, sizeof(lr_group_t),
                  lr_group_cmp);
        }

        if (json) {
            lr_report_json(&r);

        } else {
            lr_report_text(&r);
        }
    }

    lr_groups_free(&r.rules);
    lr_groups_free(&r.models);

    return (rc == LLMR_OK) ? 0 : LR_EXIT_FAILURE;
}


static int
lr_report_read(lr_report_t *r, const char *path)
{
    int          rc;
    char         err[LLMR_ERROR_MAX];
    lr_input_t   in;
    lr_record_t  rec;

    if (lr_input_open(&in, path) != LLMR_OK) {
        return LLMR_ERROR;
    }

    while ((rc = lr_input_next(&in)) == LLMR_OK) {
        r->lines++;

        if (lr_record_parse(&rec, (unsigned char *) in.line, in.len, err,
                            sizeof(err))
            != LLMR_OK
            || lr_report_line(r, &rec, err, sizeof(err)) != LLMR_OK)
        {
            lr_input_error(&in, "%s", err);
            rc = LLMR_ERROR;
            break;
        }
    }

    lr_input_close(&in);

    return (rc == LLMR_ERROR) ? LLMR_ERROR : LLMR_OK;
}


/* a label line of judge, a pair line of nginx, or both */

static int
lr_report_line(lr_report_t *r, const lr_record_t *rec, char *err,
    size_t errlen)
{
    int       rc;
    double    label;
    unsigned  escalated;

    rc = lr_record_number(rec, LR_FIELD_LABEL, 0, 1, &label, err, errlen);

    if (rc == LLMR_OK) {
        rc = lr_report_label(r, rec, label, err, errlen);
    }

    if (rc != LLMR_ERROR) {
        rc = lr_report_cost(r, rec, err, errlen);
    }

    if (rc != LLMR_ERROR) {
        rc = lr_record_bool(rec, LR_FIELD_ESCALATED, 0, &escalated, err,
                            errlen);
    }

    if (rc == LLMR_OK) {
        r->escalations++;
        r->escalated += escalated;
    }

    return (rc == LLMR_ERROR) ? LLMR_ERROR : LLMR_OK;
}


static int
lr_report_label(lr_report_t *r, const lr_record_t *rec, double label,
    char *err, size_t errlen)
{
    int             rc;
    size_t          len;
    unsigned        i;
    unsigned char  *name;
    lr_groups_t    *groups[2];
    unsigned        fields[2] = { LR_FIELD_RULE, LR_FIELD_MODEL };

    groups[0] = &r->rules;
    groups[1] = &r->models;

    r->all.n++;
    r->all.sum += label;

    for (i = 0; i < 2; i++) {
        name = NULL;
        len = 0;

        rc = lr_record_string(rec, fields[i], &name, &len, err, errlen);

        if (rc == LLMR_ERROR) {
            return LLMR_ERROR;
        }

        if (lr_group_add(groups[i], name, len, label) != LLMR_OK) {
            snprintf(err, errlen, "out of memory");
            return LLMR_ERROR;
        }
    }

    return LLMR_OK;
}


/*
 * The costs of a pair whose shadow call answered: what the request
 * cost, and what the strong model cost for it.
 */

static int
lr_report_cost(lr_report_t *r, const lr_record_t *rec, char *err,
    size_t errlen)
{
    int                rc;
    double             status, cost, strong;
    const llmr_str_t  *f;

    f = &rec->field[LR_FIELD_SHADOW_STATUS];

    if (f->data && !(f->len == 4 && memcmp(f->data, "null", 4) == 0)) {
        if (lr_record_number(rec, LR_FIELD_SHADOW_STATUS, 1, 999, &status,
                             err, errlen)
            != LLMR_OK)
        {
            return LLMR_ERROR;
        }

        if (status < 200 || status >= 300) {
            return LLMR_OK;
        }
    }

    rc = lr_record_number(rec, LR_FIELD_COST, 0, LR_USD_MAX, &cost, err,
                          errlen);

    if (rc == LLMR_OK) {
        rc = lr_record_number(rec, LR_FIELD_SHADOW_COST, 0, LR_USD_MAX,
                              &strong, err, errlen);
    }

    if (rc == LLMR_OK) {
        r->costs++;
        r->cost += cost;
        r->strong += strong;
    }

    return rc;
}


/* name, malloc()ed or NULL, is the group's or freed */

static int
lr_group_add(lr_groups_t *groups, unsigned char *name, size_t len,
    double label)
{
    size_t       i;
    lr_group_t  *g, *items;

    for (i = 0; i < groups->n; i++) {
        g = &groups->items[i];

        if ((name == NULL && g->name == NULL)
            || (name && g->name && g->len == len
                && memcmp(g->name, name, len) == 0))
        {
            g->n++;
            g->sum += label;
            free(name);
            return LLMR_OK;
        }
    }

    items = realloc(groups->items, (groups->n + 1) * sizeof(lr_group_t));

    if (items == NULL) {
        free(name);
        return LLMR_ERROR;
    }

    groups->items = items;

    g = &items[groups->n++];
    g->name = name;
    g->len = len;
    g->n = 1;
    g->sum = label;

    return LLMR_OK;
}


/* the largest first, then by name; the group without a name last */

static int
lr_group_cmp(const void *one, const void *two)
{
    int                rc;
    const lr_group_t  *a = one, *b = two;

    if (a->n != b->n) {
        return (a->n < b->n) - (a->n > b->n);
    }

    if (a->name == NULL || b->name == NULL) {
        return (a->name == NULL) - (b->name == NULL);
    }

    rc = memcmp(a->name, b->name, a->len < b->len ? a->len : b->len);

    return rc ? rc : (a->len > b->len) - (a->len < b->len);
}


/*
 * The Wilson score interval of the share sum / n:
 *
 *     (p + z^2/2n  -+  z sqrt(p(1 - p)/n + z^2/4n^2)) / (1 + z^2/n)
 */

static void
lr_wilson(const lr_group_t *g, double *low, double *high)
{
    double  n, p, z2, center, half;

    n = (double) g->n;
    p = g->sum / n;
    z2 = LR_Z * LR_Z;

    center = (p + z2 / (2 * n)) / (1 + z2 / n);
    half = LR_Z * sqrt(p * (1 - p) / n + z2 / (4 * n * n)) / (1 + z2 / n);

    *low = (center - half > 0) ? center - half : 0;
    *high = (center + half < 1) ? center + half : 1;
}


/* characters, not bytes, for the columns */

static size_t
lr_width(const unsigned char *p, size_t len)
{
    size_t  i, n;

    for (i = 0, n = 0; i < len; i++) {
        n += !(llmr_ctype[p[i]] & LLMR_CT_CONT);
    }

    return n;
}


static void
lr_report_text(lr_report_t *r)
{
    size_t  i, width, w, nwidth, n;
    char    num[32];

    if (r->all.n) {
        n = r->all.n;
        width = sizeof("all") - 1;

        w = lr_groups_width(&r->rules, sizeof("rule ") - 1, &n);
        width = (w > width) ? w : width;

        w = lr_groups_width(&r->models, sizeof("model ") - 1, &n);
        width = (w > width) ? w : width;

        nwidth = (size_t) snprintf(num, sizeof(num), "%zu", n);

        printf("quality loss: the share of requests whose strong answer "
               "was better,\nwith its 95%% Wilson score interval (low, "
               "high)\n\n");

        printf("%-*s  %*s  %6s  %6s  %6s\n", (int) width, "", (int) nwidth,
               "n", "loss", "low", "high");

        lr_row_text("all", &r->all, 0, width, nwidth);

        for (i = 0; i < r->rules.n; i++) {
            lr_row_text("rule ", &r->rules.items[i], 1, width, nwidth);
        }

        for (i = 0; i < r->models.n; i++) {
            lr_row_text("model ", &r->models.items[i], 1, width, nwidth);
        }

    } else {
        printf("quality loss: no labelled requests\n");
    }

    if (r->costs) {
        printf("cost of %zu requests: %.8f USD, %.8f USD all strong\n"
               "saved: %.8f USD", r->costs, r->cost, r->strong,
               r->strong - r->cost);

        if (r->strong > 0) {
            printf(" (%.1f%%)", 100 * (r->strong - r->cost) / r->strong);
        }

        printf("\n");
    }

    if (r->escalations) {
        printf("escalated: %zu of %zu requests (%.1f%%)\n", r->escalated,
               r->escalations, 100.0 * r->escalated / r->escalations);
    }
}


/* the widest name of the groups with its prefix; n grows to the largest */

static size_t
lr_groups_width(const lr_groups_t *groups, size_t prefix, size_t *n)
{
    size_t             i, w, width;
    const lr_group_t  *g;

    width = 0;

    for (i = 0; i < groups->n; i++) {
        g = &groups->items[i];

        w = prefix + (g->name ? lr_width(g->name, g->len)
                              : sizeof("(none)") - 1);
        width = (w > width) ? w : width;
        *n = (g->n > *n) ? g->n : *n;
    }

    return width;
}


/* "rule NAME   n   loss   low   high", in percent */

static void
lr_row_text(const char *prefix, const lr_group_t *g, int named,
    size_t width, size_t nwidth)
{
    size_t  w;
    double  low, high;

    lr_wilson(g, &low, &high);

    fputs(prefix, stdout);
    w = strlen(prefix);

    if (named) {
        if (g->name) {
            fwrite(g->name, 1, g->len, stdout);
            w += lr_width(g->name, g->len);

        } else {
            fputs("(none)", stdout);
            w += sizeof("(none)") - 1;
        }
    }

    printf("%*s  %*zu  %5.1f%%  %5.1f%%  %5.1f%%\n", (int) (width - w), "",
           (int) nwidth, g->n, 100 * g->sum / g->n, 100 * low, 100 * high);
}


static void
lr_report_json(lr_report_t *r)
{
    printf("{\"lines\":%zu,\"interval\":\"wilson\",\"confidence\":0.95,"
           "\"all\":{", r->lines);

    lr_stats_json(&r->all);
    putchar('}');
    lr_groups_json(&r->rules, "rule");
    lr_groups_json(&r->models, "model");

    if (r->costs) {
        printf(",\"cost\":{\"requests\":%zu,\"cost_usd\":%.8f,"
               "\"strong_usd\":%.8f,\"saved_usd\":%.8f,\"saved_share\":",
               r->costs, r->cost, r->strong, r->strong - r->cost);

        if (r->strong > 0) {
            printf("%.6f}", (r->strong - r->cost) / r->strong);

        } else {
            printf("null}");
        }

    } else {
        printf(",\"cost\":null");
    }

    if (r->escalations) {
        printf(",\"escalation\":{\"requests\":%zu,\"escalated\":%zu,"
               "\"rate\":%.6f}}\n", r->escalations, r->escalated,
               (double) r->escalated / r->escalations);

    } else {
        printf(",\"escalation\":null}\n");
    }
}


/* ,"rules":[{"rule":NAME,"n":...},...] */

static void
lr_groups_json(const lr_groups_t *groups, const char *key)
{
    size_t             i, size;
    unsigned char     *p;
    const lr_group_t  *g;

    printf(",\"%ss\":[", key);

    for (i = 0; i < groups->n; i++) {
        g = &groups->items[i];

        printf("%s{\"%s\":", i ? "," : "", key);

        if (g->name == NULL) {
            fputs("null", stdout);

        } else {
            size = llmr_json_escape_size(g->name, g->len);
            p = malloc(size ? size : 1);

            /* without memory, the name as it is: the run fails anyway */

            if (p) {
                llmr_json_escape(p, g->name, g->len);
            }

            putchar('"');
            fwrite(p ? p : g->name, 1, p ? size : g->len, stdout);
            putchar('"');
            free(p);
        }

        putchar(',');
        lr_stats_json(g);
        putchar('}');
    }

    putchar(']');
}


/* "n":N,"loss":L,"low":A,"high":B */

static void
lr_stats_json(const lr_group_t *g)
{
    double  low, high;

    if (g->n == 0) {
        printf("\"n\":0,\"loss\":null,\"low\":null,\"high\":null");
        return;
    }

    lr_wilson(g, &low, &high);

    printf("\"n\":%zu,\"loss\":%.6f,\"low\":%.6f,\"high\":%.6f", g->n,
           g->sum / g->n, low, high);
}


static void
lr_groups_free(lr_groups_t *groups)
{
    size_t  i;

    for (i = 0; i < groups->n; i++) {
        free(groups->items[i].name);
    }

    free(groups->items);
}
