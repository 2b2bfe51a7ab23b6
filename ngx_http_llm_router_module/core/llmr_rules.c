
/*
 * Copyright (C) the ngx_http_llm_router_module authors
 *
 * Rule conditions, the rule walk, models, prices and cost.  Money is
 * kept in integer pico-USD so that sums are exact and reproducible.
 */


#include <stdio.h>
#include <string.h>

#include "llmr.h"


#define LLMR_PICO_PER_USD  1000000000000ULL
#define LLMR_NUMBER_MAX    1000000000000ULL


typedef struct {
    const char        *prefix;
    llmr_cond_type_e   type;
} llmr_cond_name_t;


static int llmr_fraction_parse(const unsigned char *p, size_t len,
    double *value);
static int llmr_label_equal(const unsigned char *a, const unsigned char *b,
    size_t len);
static int llmr_cond_true(const llmr_cond_t *cond, const llmr_features_t *f,
    llmr_external_pt external, void *data);


static const llmr_cond_name_t  llmr_number_conds[] = {
    { "tokens>", LLMR_COND_TOKENS_GT },
    { "tokens<", LLMR_COND_TOKENS_LT },
    { "messages>", LLMR_COND_MESSAGES_GT },
    { "messages<", LLMR_COND_MESSAGES_LT },
    { NULL, 0 }
};


int
llmr_cond_parse(llmr_cond_t *cond, const unsigned char *p, size_t len,
    char *err, size_t errlen)
{
    size_t                   n, i;
    uint64_t                 number;
    const llmr_cond_name_t  *name;

    memset(cond, 0, sizeof(llmr_cond_t));

    if (len && p[0] == '!') {
        cond->negate = 1;
        p++;
        len--;
    }

    if (len == 0) {
        snprintf(err, errlen, "empty condition");
        return LLMR_ERROR;
    }

    if (p[0] == '$') {
        cond->type = LLMR_COND_EXTERNAL;
        cond->name.data = p;
        cond->name.len = len;
        return LLMR_OK;
    }

    if (len == 4 && memcmp(p, "code", 4) == 0) {
        cond->type = LLMR_COND_CODE;
        return LLMR_OK;
    }

    if (len == 5 && memcmp(p, "tools", 5) == 0) {
        cond->type = LLMR_COND_TOOLS;
        return LLMR_OK;
    }

    if (len == 8 && memcmp(p, "thinking", 8) == 0) {
        cond->type = LLMR_COND_THINKING;
        return LLMR_OK;
    }

    if (len == 6 && memcmp(p, "images", 6) == 0) {
        cond->type = LLMR_COND_IMAGES;
        return LLMR_OK;
    }

    if (len > 5 && memcmp(p, "tool=", 5) == 0) {
        cond->type = LLMR_COND_TOOL;
        cond->name.data = p + 5;
        cond->name.len = len - 5;
        cond->arg = llmr_tool_hash(p + 5, len - 5);
        return LLMR_OK;
    }

    if (len > 9 && memcmp(p, "keywords=", 9) == 0) {
        cond->type = LLMR_COND_KEYWORDS;
        cond->name.data = p + 9;
        cond->name.len = len - 9;
        return LLMR_OK;
    }

    if (len > 7 && memcmp(p, "triage=", 7) == 0) {
        if (!llmr_label_valid(p + 7, len - 7)) {
            snprintf(err, errlen, "invalid label \"%.*s\", up to %d "
                     "letters, digits, \"_\" or \"-\" expected",
                     (int) (len - 7), p + 7, LLMR_LABEL_MAX);
            return LLMR_ERROR;
        }

        cond->type = LLMR_COND_TRIAGE;
        cond->name.data = p + 7;
        cond->name.len = len - 7;
        return LLMR_OK;
    }

    if (len > 6 && (memcmp(p, "score>", 6) == 0 || memcmp(p, "score<", 6) == 0))
    {
        cond->type = (p[5] == '>') ? LLMR_COND_SCORE_GT : LLMR_COND_SCORE_LT;

        if (llmr_fraction_parse(p + 6, len - 6, &cond->score) != LLMR_OK) {
            snprintf(err, errlen, "invalid score \"%.*s\", a number from "
                     "0 to 1 expected", (int) (len - 6), p + 6);
            return LLMR_ERROR;
        }

        return LLMR_OK;
    }

    for (name = llmr_number_conds; name->prefix; name++) {
        n = strlen(name->prefix);

        if (len <= n || memcmp(p, name->prefix, n) != 0) {
            continue;
        }

        number = 0;

        for (i = n; i < len; i++) {
            if (p[i] < '0' || p[i] > '9' || number > LLMR_NUMBER_MAX) {
                snprintf(err, errlen, "invalid number \"%.*s\"",
                         (int) (len - n), p + n);
                return LLMR_ERROR;
            }

            number = number * 10 + (p[i] - '0');
        }

        cond->type = name->type;
        cond->arg = number;

        return LLMR_OK;
    }

    snprintf(err, errlen, "unknown condition \"%.*s\"", (int) len, p);

    return LLMR_ERROR;
}


/* "0", "1", "0.62": a decimal from 0 to 1, parsed the same everywhere */

static int
llmr_fraction_parse(const unsigned char *p, size_t len, double *value)
{
    size_t  i;
    double  v, unit;

    if (len == 0 || p[0] < '0' || p[0] > '1') {
        return LLMR_ERROR;
    }

    v = p[0] - '0';

    if (len == 1) {
        *value = v;
        return LLMR_OK;
    }

    if (p[1] != '.' || len == 2 || len > 12) {
        return LLMR_ERROR;
    }

    unit = 1.0;

    for (i = 2; i < len; i++) {
        if (p[i] < '0' || p[i] > '9') {
            return LLMR_ERROR;
        }

        unit /= 10;
        v += (p[i] - '0') * unit;
    }

    if (v > 1.0) {
        return LLMR_ERROR;
    }

    *value = v;

    return LLMR_OK;
}


int
llmr_rules_eval(const llmr_rule_t *rules, unsigned n,
    const llmr_features_t *f, llmr_external_pt external, void *data)
{
    int       v;
    unsigned  i, k;

    for (i = 0; i < n; i++) {

        for (k = 0; k < rules[i].nconds; k++) {
            v = llmr_cond_true(&rules[i].conds[k], f, external, data);

            if (v < 0) {
                return LLMR_RULES_PENDING;
            }

            if (!v) {
                break;
            }
        }

        if (k == rules[i].nconds) {
            return (int) i;
        }
    }

    return -1;
}


static int
llmr_cond_true(const llmr_cond_t *cond, const llmr_features_t *f,
    llmr_external_pt external, void *data)
{
    int       v;
    unsigned  i;

    switch (cond->type) {

    case LLMR_COND_TOKENS_GT:
        v = f->est_tokens > cond->arg;
        break;

    case LLMR_COND_TOKENS_LT:
        v = f->est_tokens < cond->arg;
        break;

    case LLMR_COND_MESSAGES_GT:
        v = f->messages > cond->arg;
        break;

    case LLMR_COND_MESSAGES_LT:
        v = f->messages < cond->arg;
        break;

    case LLMR_COND_CODE:
        v = f->code;
        break;

    case LLMR_COND_TOOLS:
        v = f->tools;
        break;

    case LLMR_COND_THINKING:
        v = f->thinking;
        break;

    case LLMR_COND_IMAGES:
        v = f->images;
        break;

    case LLMR_COND_TOOL:
        for (i = 0; i < f->ntools && f->tool[i] != cond->arg; i++) {
            /* void */
        }

        v = (i < f->ntools);
        break;

    case LLMR_COND_KEYWORDS:
        v = (f->keywords >> cond->arg) & 1;
        break;

    /* without a classifier the score is -1 and no score condition holds */

    case LLMR_COND_SCORE_GT:
        v = f->score >= 0 && f->score > cond->score;
        break;

    case LLMR_COND_SCORE_LT:
        v = f->score >= 0 && f->score < cond->score;
        break;

    /* a failed triage makes its conditions false, negated or not */

    case LLMR_COND_TRIAGE:
        if (f->triage == LLMR_TRIAGE_UNKNOWN) {
            return -1;
        }

        if (f->triage == LLMR_TRIAGE_FAILED) {
            return 0;
        }

        v = f->triage_len == cond->name.len
            && llmr_label_equal(f->triage_label, cond->name.data,
                                cond->name.len);
        break;

    default: /* LLMR_COND_EXTERNAL */
        v = external ? external(data, cond) : 0;
        break;
    }

    return v != (int) cond->negate;
}


static int
llmr_label_equal(const unsigned char *a, const unsigned char *b, size_t len)
{
    size_t  i;

    for (i = 0; i < len; i++) {
        if (llmr_lower(a[i]) != llmr_lower(b[i])) {
            return 0;
        }
    }

    return 1;
}


/* a model of the dialect, by its name or by the provider's */

int
llmr_model_find(const llmr_model_t *models, unsigned n, unsigned api,
    const unsigned char *name, size_t len)
{
    unsigned  i;

    for (i = 0; i < n; i++) {
        if (models[i].api != api) {
            continue;
        }

        if ((models[i].name.len == len
             && memcmp(models[i].name.data, name, len) == 0)
            || (models[i].upstream.len == len
                && memcmp(models[i].upstream.data, name, len) == 0))
        {
            return (int) i;
        }
    }

    return -1;
}


/*
 * A price is USD per million tokens with at most six decimals, which is
 * a whole number of pico-USD per token: "0.15" is 150000.
 */

int
llmr_price_parse(const unsigned char *p, size_t len, uint64_t *price)
{
    size_t    i;
    unsigned  decimals, dot;
    uint64_t  v;

    v = 0;
    dot = 0;
    decimals = 0;

    if (len == 0) {
        return LLMR_ERROR;
    }

    for (i = 0; i < len; i++) {

        if (p[i] == '.' && !dot && i > 0) {
            dot = 1;
            continue;
        }

        if (p[i] < '0' || p[i] > '9' || v > 1000000000000000ULL) {
            return LLMR_ERROR;
        }

        if (dot && ++decimals > 6) {
            return LLMR_ERROR;
        }

        v = v * 10 + (p[i] - '0');
    }

    if (dot && decimals == 0) {
        return LLMR_ERROR;
    }

    while (decimals++ < 6) {
        v *= 10;
    }

    /*
     * a thousand USD per million tokens is beyond any real price; the
     * bound keeps a cost of a billion tokens within 64 bits
     */

    if (v > 1000ULL * 1000000) {
        return LLMR_ERROR;
    }

    *price = v;

    return LLMR_OK;
}


/* the prices of cached tokens not set in nginx.conf, by the dialect's */

void
llmr_model_prices(llmr_model_t *m, const llmr_dialect_t *d, int cached_set,
    int cache_write_set)
{
    if (!cached_set) {
        m->price_cached = m->price_in * d->cached_permille / 1000;
    }

    if (!cache_write_set) {
        m->price_cache_write = m->price_in * d->cache_write_permille / 1000;
    }
}


/*
 * Each kind of token at its price.  Counts are at most a billion each
 * (the usage scanner's bound, and estimates are 32-bit) and prices at
 * most a billion pico-USD, so no product overflows; the sum saturates.
 */

uint64_t
llmr_cost(const llmr_model_t *m, const llmr_tokens_t *t)
{
    unsigned  i;
    uint64_t  fresh, part[4], cost;

    fresh = (t->cached + t->cache_write <= t->prompt)
            ? t->prompt - t->cached - t->cache_write : 0;

    part[0] = fresh * m->price_in;
    part[1] = t->cached * m->price_cached;
    part[2] = t->cache_write * m->price_cache_write;
    part[3] = t->completion * m->price_out;

    cost = 0;

    for (i = 0; i < 4; i++) {
        cost = (cost > UINT64_MAX - part[i]) ? UINT64_MAX : cost + part[i];
    }

    return cost;
}


/* USD with up to 12 decimals and no trailing zeros: "0.000123" */

size_t
llmr_usd_format(unsigned char *buf, uint64_t pico)
{
    int  n;

    n = snprintf((char *) buf, LLMR_USD_MAX, "%llu.%012llu",
                 (unsigned long long) (pico / LLMR_PICO_PER_USD),
                 (unsigned long long) (pico % LLMR_PICO_PER_USD));

    while (buf[n - 1] == '0') {
        n--;
    }

    if (buf[n - 1] == '.') {
        n--;
    }

    return (size_t) n;
}
