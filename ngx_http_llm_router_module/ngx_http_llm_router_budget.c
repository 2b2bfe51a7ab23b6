
/*
 * Copyright (C) the ngx_http_llm_router_module authors
 *
 * Budgets: spend limits per key (any variable), kept in the shared zone.
 * Before a request is sent, its worst case is reserved: the estimated
 * prompt at the input price and max_tokens (or the budget's default) at
 * the output price.  A reservation that does not fit downgrades the
 * request to a cheaper model or rejects it; in the log phase the
 * reservation is settled to the real cost.  So concurrent requests
 * never overshoot a limit by more than one request's worst case.
 *
 * Keys come from requests, so a client chooses them: only a request that
 * goes takes room in the zone, the arithmetic saturates instead of
 * wrapping around, and keys of equal hashes are told apart by their
 * bytes wherever they sit in the tree.
 */


#include "ngx_http_llm_router_module.h"


#define NGX_HTTP_LLM_ROUTER_KEY_LEN   64
#define NGX_HTTP_LLM_ROUTER_BUSIEST   20
#define NGX_HTTP_LLM_ROUTER_PICO_MAX  ((uint64_t) -1)


typedef struct {
    ngx_rbtree_node_t              node;          /* key: hash */
    ngx_uint_t                     budget;        /* hash of its name */
    ngx_uint_t                     period;        /* number, since 1970 */
    uint64_t                       spent;         /* pico-USD */
    uint64_t                       reserved;
    ngx_uint_t                     inflight;      /* requests holding it */
    u_char                         len;
    u_char                         key[NGX_HTTP_LLM_ROUTER_KEY_LEN];
} ngx_http_llm_router_spend_t;


static ngx_http_llm_router_spend_t *ngx_http_llm_router_spend_find(
    ngx_http_llm_router_shm_t *shm, ngx_http_llm_router_budget_t *b,
    ngx_str_t *key, ngx_uint_t hash);
static ngx_http_llm_router_spend_t *ngx_http_llm_router_spend_add(
    ngx_http_llm_router_main_conf_t *lmcf, ngx_http_llm_router_budget_t *b,
    ngx_str_t *key, ngx_uint_t hash);
static ngx_int_t ngx_http_llm_router_spend_cmp(ngx_uint_t budget, u_char *key,
    size_t len, ngx_http_llm_router_spend_t *s);
static void ngx_http_llm_router_spend_insert(ngx_rbtree_node_t *temp,
    ngx_rbtree_node_t *node, ngx_rbtree_node_t *sentinel);
static ngx_int_t ngx_http_llm_router_reserve_one(ngx_http_request_t *r,
    ngx_http_llm_router_ctx_t *ctx, ngx_http_llm_router_budget_t *b,
    ngx_http_llm_router_reservation_t *res);
static ngx_int_t ngx_http_llm_router_full(ngx_http_request_t *r,
    ngx_http_llm_router_ctx_t *ctx, ngx_http_llm_router_budget_t *b,
    ngx_str_t *key, time_t now);
static ngx_int_t ngx_http_llm_router_refuse(ngx_http_request_t *r,
    ngx_http_llm_router_ctx_t *ctx, ngx_http_llm_router_budget_t *b,
    time_t now, ngx_uint_t full);
static uint64_t ngx_http_llm_router_worst(ngx_http_request_t *r,
    ngx_http_llm_router_ctx_t *ctx, ngx_http_llm_router_budget_t *b,
    ngx_http_llm_router_model_t *m, ngx_uint_t depth);
static uint64_t ngx_http_llm_router_worst_call(ngx_http_llm_router_ctx_t *ctx,
    ngx_http_llm_router_budget_t *b, ngx_http_llm_router_model_t *m);
static uint64_t ngx_http_llm_router_pico_add(uint64_t a, uint64_t b);
static uint64_t ngx_http_llm_router_pico_mul(uint64_t a, uint64_t b);
static size_t ngx_http_llm_router_key_cut(u_char *p, size_t len);
static u_char *ngx_http_llm_router_log_escape(u_char *p, u_char *data,
    size_t len);
static ngx_uint_t ngx_http_llm_router_budget_hash(ngx_str_t *name);
static void ngx_http_llm_router_spend_expire(
    ngx_http_llm_router_main_conf_t *lmcf);


static ngx_str_t  ngx_http_llm_router_periods[] = {
    ngx_string("minute"),
    ngx_string("hour"),
    ngx_string("day"),
    ngx_null_string
};

static time_t  ngx_http_llm_router_period_seconds[] = { 60, 3600, 86400 };


/*
 * Per worker: when a full zone was last written to the error log, and
 * when the keys of past periods were last looked for in it.  A flood of
 * new keys would otherwise write a line, and walk the whole tree under
 * the zone's lock, for each request.
 */

static time_t  ngx_http_llm_router_full_logged;
static time_t  ngx_http_llm_router_expired;


/*
 * llm_router_budget NAME key=$var limit=USD period=day action=reject
 *     [max_tokens=N] [fail=closed|open];   at http level: a definition
 * llm_router_budget NAME;                  anywhere: it applies there
 */

char *
ngx_http_llm_router_budget(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_llm_router_loc_conf_t *llcf = conf;

    ngx_str_t                         *value, *name, s;
    ngx_uint_t                         i, k;
    ngx_http_llm_router_budget_t      *b;
    ngx_http_llm_router_main_conf_t   *lmcf;
    ngx_http_compile_complex_value_t   ccv;

    value = cf->args->elts;
    lmcf = ngx_http_conf_get_module_main_conf(cf, ngx_http_llm_router_module);

    if (cf->args->nelts == 2) {
        /* applied here; the definition may come later in the http block */

        if (llcf->budget_names == NGX_CONF_UNSET_PTR) {
            llcf->budget_names = ngx_array_create(cf->pool, 2,
                                                  sizeof(ngx_str_t));
            if (llcf->budget_names == NULL) {
                return NGX_CONF_ERROR;
            }
        }

        name = ngx_array_push(llcf->budget_names);
        if (name == NULL) {
            return NGX_CONF_ERROR;
        }

        *name = value[1];

        return NGX_CONF_OK;
    }

    if (cf->cmd_type != NGX_HTTP_MAIN_CONF) {
        return "with parameters is only allowed at the http level";
    }

    if (ngx_http_llm_router_find(&lmcf->budgets, &value[1]) != NGX_ERROR) {
        return "is duplicate";
    }

    if (ngx_http_llm_router_check_label(cf, &value[1]) != NGX_OK) {
        return NGX_CONF_ERROR;
    }

    b = ngx_array_push(&lmcf->budgets);
    if (b == NULL) {
        return NGX_CONF_ERROR;
    }

    ngx_memzero(b, sizeof(ngx_http_llm_router_budget_t));
    b->name = value[1];
    b->hash = ngx_http_llm_router_budget_hash(&value[1]);
    b->max_tokens = 4096;

    for (i = 2; i < cf->args->nelts; i++) {

        if (ngx_strncmp(value[i].data, "key=", 4) == 0) {
            s.data = value[i].data + 4;
            s.len = value[i].len - 4;

            b->key = ngx_palloc(cf->pool, sizeof(ngx_http_complex_value_t));
            if (b->key == NULL) {
                return NGX_CONF_ERROR;
            }

            ngx_memzero(&ccv, sizeof(ngx_http_compile_complex_value_t));
            ccv.cf = cf;
            ccv.value = &s;
            ccv.complex_value = b->key;

            if (ngx_http_compile_complex_value(&ccv) != NGX_OK) {
                return NGX_CONF_ERROR;
            }

            continue;
        }

        if (ngx_strncmp(value[i].data, "limit=", 6) == 0) {
            if (llmr_price_parse(value[i].data + 6, value[i].len - 6,
                                 &b->limit)
                != LLMR_OK)
            {
                goto invalid;
            }

            /* a price is pico-USD a token per USD a million: times 1e6 */
            b->limit *= 1000000;
            continue;
        }

        if (ngx_strncmp(value[i].data, "period=", 7) == 0) {
            for (k = 0; ngx_http_llm_router_periods[k].len; k++) {
                if (ngx_http_llm_router_periods[k].len == value[i].len - 7
                    && ngx_strncmp(ngx_http_llm_router_periods[k].data,
                                   value[i].data + 7, value[i].len - 7)
                       == 0)
                {
                    break;
                }
            }

            if (ngx_http_llm_router_periods[k].len == 0) {
                goto invalid;
            }

            b->period = ngx_http_llm_router_period_seconds[k];
            continue;
        }

        if (ngx_strcmp(value[i].data, "action=reject") == 0) {
            b->action_set = 1;
            continue;
        }

        if (ngx_strncmp(value[i].data, "action=downgrade:", 17) == 0
            && value[i].len > 17)
        {
            b->downgrade_name.data = value[i].data + 17;
            b->downgrade_name.len = value[i].len - 17;
            b->action_set = 1;
            continue;
        }

        if (ngx_strcmp(value[i].data, "fail=closed") == 0) {
            b->fail_open = 0;
            continue;
        }

        if (ngx_strcmp(value[i].data, "fail=open") == 0) {
            b->fail_open = 1;
            continue;
        }

        if (ngx_strncmp(value[i].data, "max_tokens=", 11) == 0) {
            b->max_tokens = ngx_atoi(value[i].data + 11, value[i].len - 11);

            if (b->max_tokens == NGX_ERROR) {
                goto invalid;
            }

            continue;
        }

    invalid:

        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "invalid parameter \"%V\" in \"llm_router_budget\" "
                           "\"%V\"", &value[i], &b->name);
        return NGX_CONF_ERROR;
    }

    if (b->key == NULL || b->limit == 0 || b->period == 0 || !b->action_set)
    {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"llm_router_budget\" \"%V\" needs key=, limit=, "
                           "period= and action=", &b->name);
        return NGX_CONF_ERROR;
    }

    return NGX_CONF_OK;
}


/* the CRC32 of a budget's name, never 0, mixed into the keys of the tree */

static ngx_uint_t
ngx_http_llm_router_budget_hash(ngx_str_t *name)
{
    return ngx_crc32_short(name->data, name->len) | 1;
}


/*
 * The worst case of a request on model m, in pico-USD: its answer, and,
 * where it may be escalated, the escalate model's too; or, should it
 * fail (a failure is not billed), the worst of its fallback.
 */

static uint64_t
ngx_http_llm_router_worst(ngx_http_request_t *r,
    ngx_http_llm_router_ctx_t *ctx, ngx_http_llm_router_budget_t *b,
    ngx_http_llm_router_model_t *m, ngx_uint_t depth)
{
    uint64_t                         cost, fallback;
    ngx_http_llm_router_loc_conf_t  *llcf;

    if (m == NULL || depth == NGX_HTTP_LLM_ROUTER_ATTEMPTS_MAX) {
        return 0;
    }

    llcf = ngx_http_get_module_loc_conf(r, ngx_http_llm_router_module);

    cost = ngx_http_llm_router_worst_call(ctx, b, m);

    if (llcf->escalate) {
        cost = ngx_http_llm_router_pico_add(cost,
                   ngx_http_llm_router_worst(r, ctx, b, m->escalate,
                                             depth + 1));
    }

    fallback = ngx_http_llm_router_worst(r, ctx, b, m->fallback, depth + 1);

    return ngx_max(cost, fallback);
}


/* the worst case of one call of model m */

static uint64_t
ngx_http_llm_router_worst_call(ngx_http_llm_router_ctx_t *ctx,
    ngx_http_llm_router_budget_t *b, ngx_http_llm_router_model_t *m)
{
    uint64_t          price, tokens;
    llmr_features_t  *f;

    f = &ctx->request.f;

    tokens = (f->max_tokens > 0) ? (uint64_t) f->max_tokens
                                 : (uint64_t) b->max_tokens;

    /* no model answers more than its context window holds */

    if (m->context && tokens > m->context) {
        tokens = m->context;
    }

    /*
     * A prompt may be written to a cache, at a price above the input's.
     * The client chooses max_tokens: a product or a sum that wrapped
     * around 2^64 would reserve next to nothing, so they saturate.
     */

    price = ngx_max(m->price_in, m->price_cache_write);

    return ngx_http_llm_router_pico_add(
               ngx_http_llm_router_pico_mul(f->prompt_tokens, price),
               ngx_http_llm_router_pico_mul(tokens, m->price_out));
}


static uint64_t
ngx_http_llm_router_pico_add(uint64_t a, uint64_t b)
{
    return (a > NGX_HTTP_LLM_ROUTER_PICO_MAX - b)
           ? NGX_HTTP_LLM_ROUTER_PICO_MAX : a + b;
}


static uint64_t
ngx_http_llm_router_pico_mul(uint64_t a, uint64_t b)
{
    return (b && a > NGX_HTTP_LLM_ROUTER_PICO_MAX / b)
           ? NGX_HTTP_LLM_ROUTER_PICO_MAX : a * b;
}


/*
 * Reserves for each budget of the location, downgrading the request
 * where a budget says so.  Returns NGX_OK, or the status to answer.
 */

ngx_int_t
ngx_http_llm_router_reserve(ngx_http_request_t *r,
    ngx_http_llm_router_ctx_t *ctx)
{
    ngx_int_t                           rc;
    ngx_uint_t                          i;
    ngx_http_llm_router_budget_t      **b;
    ngx_http_llm_router_loc_conf_t     *llcf;
    ngx_http_llm_router_main_conf_t    *lmcf;

    llcf = ngx_http_get_module_loc_conf(r, ngx_http_llm_router_module);
    lmcf = ngx_http_get_module_main_conf(r, ngx_http_llm_router_module);

    if (llcf->budgets == NULL || lmcf->shm == NULL) {
        return NGX_OK;
    }

    b = llcf->budgets->elts;

    for (i = 0; i < llcf->budgets->nelts
                && ctx->nreservations < NGX_HTTP_LLM_ROUTER_BUDGETS_MAX; i++)
    {
        rc = ngx_http_llm_router_reserve_one(r, ctx, b[i],
                                     &ctx->reservations[ctx->nreservations]);
        if (rc != NGX_OK) {
            /* what the other budgets reserved is given back */
            ngx_http_llm_router_settle(r, ctx->reservations,
                                       &ctx->nreservations, 0);
            return rc;
        }
    }

    return NGX_OK;
}


static ngx_int_t
ngx_http_llm_router_reserve_one(ngx_http_request_t *r,
    ngx_http_llm_router_ctx_t *ctx, ngx_http_llm_router_budget_t *b,
    ngx_http_llm_router_reservation_t *res)
{
    time_t                            now;
    uint64_t                          worst, used;
    ngx_str_t                         key, action;
    ngx_uint_t                        period, hash;
    ngx_slab_pool_t                  *shpool;
    ngx_http_llm_router_model_t      *model;
    ngx_http_llm_router_spend_t      *s;
    ngx_http_llm_router_main_conf_t  *lmcf;

    lmcf = ngx_http_get_module_main_conf(r, ngx_http_llm_router_module);

    if (ngx_http_complex_value(r, b->key, &key) != NGX_OK) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    key.len = ngx_http_llm_router_key_cut(key.data, key.len);

    now = ngx_time();
    period = now / b->period;

    hash = ngx_crc32_short(key.data, key.len) ^ b->hash;

    shpool = (ngx_slab_pool_t *) lmcf->zone->shm.addr;

    ngx_shmtx_lock(&shpool->mutex);

    s = ngx_http_llm_router_spend_find(lmcf->shm, b, &key, hash);

    if (s && s->period != period) {
        /* a new period: what was spent before no longer counts */
        s->period = period;
        s->spent = 0;
        s->reserved = 0;
    }

    /* a key the zone does not hold has spent nothing */

    used = s ? ngx_http_llm_router_pico_add(s->spent, s->reserved) : 0;

    model = ctx->model;
    worst = ngx_http_llm_router_worst(r, ctx, b, model, 0);

    if (ngx_http_llm_router_pico_add(used, worst) > b->limit && b->downgrade) {
        model = b->downgrade;
        worst = ngx_http_llm_router_worst(r, ctx, b, model, 0);
    }

    if (ngx_http_llm_router_pico_add(used, worst) > b->limit) {
        ngx_shmtx_unlock(&shpool->mutex);
        return ngx_http_llm_router_refuse(r, ctx, b, now, 0);
    }

    if (s == NULL) {
        /* only a request that goes takes room in the zone */

        s = ngx_http_llm_router_spend_add(lmcf, b, &key, hash);

        if (s == NULL) {
            ngx_shmtx_unlock(&shpool->mutex);
            return ngx_http_llm_router_full(r, ctx, b, &key, now);
        }

        s->period = period;
    }

    s->reserved = ngx_http_llm_router_pico_add(s->reserved, worst);
    s->inflight++;

    ngx_shmtx_unlock(&shpool->mutex);

    res->budget = b;
    res->spend = s;
    res->period = period;
    res->reserved = worst;
    ctx->nreservations++;

    if (model != ctx->model) {
        ngx_log_error(NGX_LOG_INFO, r->connection->log, 0,
                      "llm_router: budget \"%V\" downgrades \"%V\" to "
                      "\"%V\"", &b->name, &ctx->model->name, &model->name);

        ctx->model = model;
        ngx_str_set(&ctx->rule, "budget");

        ngx_str_set(&action, "downgrade");
        ngx_http_llm_router_series(lmcf->shm,
                                   NGX_HTTP_LLM_ROUTER_SERIES_BUDGET,
                                   &b->name, &action, NULL);
    }

    return NGX_OK;
}


/*
 * The zone has no room for a new key, even once the keys of past periods
 * are given back: the budget rejects the request, or with fail=open lets
 * it go without counting it.
 */

static ngx_int_t
ngx_http_llm_router_full(ngx_http_request_t *r,
    ngx_http_llm_router_ctx_t *ctx, ngx_http_llm_router_budget_t *b,
    ngx_str_t *key, time_t now)
{
    u_char                           *last;
    u_char                            buf[NGX_HTTP_LLM_ROUTER_KEY_LEN * 4];
    ngx_http_llm_router_main_conf_t  *lmcf;

    if (now - ngx_http_llm_router_full_logged >= 60) {
        ngx_http_llm_router_full_logged = now;

        lmcf = ngx_http_get_module_main_conf(r, ngx_http_llm_router_module);
        last = ngx_http_llm_router_log_escape(buf, key->data, key->len);

        ngx_log_error(NGX_LOG_ALERT, r->connection->log, 0,
                      "llm_router: the zone \"%V\" is full, budget \"%V\" "
                      "%s new keys such as \"%*s\" (logged at most once a "
                      "minute)", &lmcf->zone->shm.name, &b->name,
                      b->fail_open ? "is not enforced for" : "rejects",
                      (size_t) (last - buf), buf);
    }

    if (b->fail_open) {
        return NGX_OK;
    }

    return ngx_http_llm_router_refuse(r, ctx, b, now, 1);
}


/* a 429 until the period resets: nothing goes upstream */

static ngx_int_t
ngx_http_llm_router_refuse(ngx_http_request_t *r,
    ngx_http_llm_router_ctx_t *ctx, ngx_http_llm_router_budget_t *b,
    time_t now, ngx_uint_t full)
{
    u_char                           *p;
    time_t                            reset;
    ngx_str_t                         action;
    ngx_http_llm_router_main_conf_t  *lmcf;

    lmcf = ngx_http_get_module_main_conf(r, ngx_http_llm_router_module);

    reset = (now / b->period + 1) * b->period;

    p = ngx_pnalloc(r->pool, 256 + b->name.len);
    if (p == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    ctx->error.data = p;

    if (full) {
        p = ngx_sprintf(p, "budget \"%V\" cannot take a new key, its zone is "
                        "full; it resets in %T seconds", &b->name,
                        reset - now);

    } else {
        p = ngx_sprintf(p, "budget \"%V\" is spent for this period; it "
                        "resets in %T seconds", &b->name, reset - now);
    }

    ctx->error.len = p - ctx->error.data;
    ctx->retry_after = reset - now;
    ctx->no_retry = 1;

    ngx_log_error(NGX_LOG_INFO, r->connection->log, 0,
                  "llm_router: budget \"%V\" rejects the request%s",
                  &b->name, full ? ", its zone is full" : "");

    ngx_str_set(&action, "reject");
    ngx_http_llm_router_series(lmcf->shm, NGX_HTTP_LLM_ROUTER_SERIES_BUDGET,
                               &b->name, &action, NULL);

    return NGX_HTTP_TOO_MANY_REQUESTS;
}


/*
 * A key is cut to 64 bytes, but not inside a UTF-8 character: the status
 * page shows it.  When the first byte left out continues a character,
 * the character's first bytes are left out too.
 */

static size_t
ngx_http_llm_router_key_cut(u_char *p, size_t len)
{
    size_t  n;

    if (len <= NGX_HTTP_LLM_ROUTER_KEY_LEN) {
        return len;
    }

    len = NGX_HTTP_LLM_ROUTER_KEY_LEN;

    if ((p[len] & 0xc0) != 0x80) {
        return len;
    }

    for (n = len - 1; n > len - 4; n--) {
        if ((p[n] & 0xc0) != 0x80) {
            return (p[n] >= 0xc0) ? n : len;
        }
    }

    return len;
}


/* a key in the error log: printable ASCII, the other bytes as \xFF */

static u_char *
ngx_http_llm_router_log_escape(u_char *p, u_char *data, size_t len)
{
    size_t         i;
    static u_char  hex[] = "0123456789ABCDEF";

    for (i = 0; i < len; i++) {
        if (data[i] < 0x20 || data[i] > 0x7e || data[i] == '"'
            || data[i] == '\\')
        {
            *p++ = '\\';
            *p++ = 'x';
            *p++ = hex[data[i] >> 4];
            *p++ = hex[data[i] & 0xf];
            continue;
        }

        *p++ = data[i];
    }

    return p;
}


/* the real cost replaces the reservation, in the log phase */

void
ngx_http_llm_router_settle(ngx_http_request_t *r,
    ngx_http_llm_router_reservation_t *reservations, ngx_uint_t *n,
    uint64_t cost)
{
    ngx_uint_t                          i;
    ngx_slab_pool_t                    *shpool;
    ngx_http_llm_router_shm_t          *shm;
    ngx_http_llm_router_spend_t        *s;
    ngx_http_llm_router_main_conf_t    *lmcf;
    ngx_http_llm_router_reservation_t  *res;

    if (*n == 0) {
        return;
    }

    lmcf = ngx_http_get_module_main_conf(r, ngx_http_llm_router_module);
    shpool = (ngx_slab_pool_t *) lmcf->zone->shm.addr;
    shm = lmcf->shm;

    ngx_shmtx_lock(&shpool->mutex);

    for (i = 0; i < *n; i++) {
        res = &reservations[i];
        s = res->spend;

        if (s->period == res->period) {
            s->reserved -= ngx_min(s->reserved, res->reserved);
            s->spent = ngx_http_llm_router_pico_add(s->spent, cost);
        }

        s->inflight--;

        /*
         * A key that spent nothing is no different from a key never seen:
         * its room is given back, so that requests that another budget
         * refused, or that cost nothing, cannot fill the zone.
         */

        if (s->inflight == 0 && s->spent == 0 && s->reserved == 0) {
            ngx_rbtree_delete(&shm->spends, &s->node);
            ngx_slab_free_locked(shpool, s);
        }
    }

    ngx_shmtx_unlock(&shpool->mutex);

    *n = 0;
}


/*
 * One call of model m more, on the keys the request reserved: NGX_OK, or
 * NGX_DECLINED where it does not fit, and nothing is reserved.
 */

ngx_int_t
ngx_http_llm_router_reserve_call(ngx_http_request_t *r,
    ngx_http_llm_router_ctx_t *ctx, ngx_http_llm_router_model_t *m,
    ngx_http_llm_router_reservation_t *reservations, ngx_uint_t *n)
{
    uint64_t                            worst;
    ngx_uint_t                          i;
    ngx_slab_pool_t                    *shpool;
    ngx_http_llm_router_spend_t        *s;
    ngx_http_llm_router_main_conf_t    *lmcf;
    ngx_http_llm_router_reservation_t  *res;

    *n = 0;

    if (ctx->nreservations == 0) {
        return NGX_OK;
    }

    lmcf = ngx_http_get_module_main_conf(r, ngx_http_llm_router_module);
    shpool = (ngx_slab_pool_t *) lmcf->zone->shm.addr;

    ngx_shmtx_lock(&shpool->mutex);

    for (i = 0; i < ctx->nreservations; i++) {
        res = &ctx->reservations[i];
        s = res->spend;
        worst = ngx_http_llm_router_worst_call(ctx, res->budget, m);

        if (s->period != res->period
            || ngx_http_llm_router_pico_add(
                   ngx_http_llm_router_pico_add(s->spent, s->reserved),
                   worst)
               > res->budget->limit)
        {
            break;
        }

        s->reserved += worst;
        s->inflight++;

        reservations[i] = *res;
        reservations[i].reserved = worst;
    }

    ngx_shmtx_unlock(&shpool->mutex);

    *n = i;

    if (i < ctx->nreservations) {
        ngx_http_llm_router_settle(r, reservations, n, 0);
        return NGX_DECLINED;
    }

    return NGX_OK;
}


/*
 * The spend of a key, or NULL; the caller holds the mutex.  Keys of equal
 * hashes are ordered by their budget and bytes, as ngx_str_rbtree_lookup()
 * does: rotations may have put any of them on either side of another.
 */

static ngx_http_llm_router_spend_t *
ngx_http_llm_router_spend_find(ngx_http_llm_router_shm_t *shm,
    ngx_http_llm_router_budget_t *b, ngx_str_t *key, ngx_uint_t hash)
{
    ngx_int_t                     rc;
    ngx_rbtree_node_t            *node, *sentinel;
    ngx_http_llm_router_spend_t  *s;

    node = shm->spends.root;
    sentinel = shm->spends.sentinel;

    while (node != sentinel) {

        if (hash != node->key) {
            node = (hash < node->key) ? node->left : node->right;
            continue;
        }

        s = (ngx_http_llm_router_spend_t *) node;

        rc = ngx_http_llm_router_spend_cmp(b->hash, key->data, key->len, s);

        if (rc == 0) {
            return s;
        }

        node = (rc < 0) ? node->left : node->right;
    }

    return NULL;
}


/* a new key's spend, in the tree; the caller holds the mutex */

static ngx_http_llm_router_spend_t *
ngx_http_llm_router_spend_add(ngx_http_llm_router_main_conf_t *lmcf,
    ngx_http_llm_router_budget_t *b, ngx_str_t *key, ngx_uint_t hash)
{
    ngx_slab_pool_t              *shpool;
    ngx_http_llm_router_shm_t    *shm;
    ngx_http_llm_router_spend_t  *s;

    shm = lmcf->shm;
    shpool = (ngx_slab_pool_t *) lmcf->zone->shm.addr;

    s = ngx_slab_calloc_locked(shpool, sizeof(ngx_http_llm_router_spend_t));

    if (s == NULL) {
        if (ngx_http_llm_router_expired == ngx_time()) {
            return NULL;
        }

        ngx_http_llm_router_expired = ngx_time();
        ngx_http_llm_router_spend_expire(lmcf);

        s = ngx_slab_calloc_locked(shpool,
                                   sizeof(ngx_http_llm_router_spend_t));
        if (s == NULL) {
            return NULL;
        }
    }

    s->node.key = hash;
    s->budget = b->hash;
    s->len = (u_char) key->len;
    ngx_memcpy(s->key, key->data, key->len);

    /*
     * The tree has this module's insert function for this call only, made
     * under the lock.  The tree lives in shared memory and outlives a
     * reload, which may load another build of the module at another
     * address: a pointer to its code kept there could be followed by a
     * worker that never mapped that code.  Between calls the tree keeps
     * nginx's own function.
     */

    shm->spends.insert = ngx_http_llm_router_spend_insert;
    ngx_rbtree_insert(&shm->spends, &s->node);
    shm->spends.insert = ngx_rbtree_insert_value;

    return s;
}


/* equal hashes: by budget, then by the key's bytes */

static ngx_int_t
ngx_http_llm_router_spend_cmp(ngx_uint_t budget, u_char *key, size_t len,
    ngx_http_llm_router_spend_t *s)
{
    if (budget != s->budget) {
        return (budget < s->budget) ? -1 : 1;
    }

    return ngx_memn2cmp(key, s->key, len, s->len);
}


/* ngx_str_rbtree_insert_value(), for spends */

static void
ngx_http_llm_router_spend_insert(ngx_rbtree_node_t *temp,
    ngx_rbtree_node_t *node, ngx_rbtree_node_t *sentinel)
{
    ngx_int_t                      rc;
    ngx_rbtree_node_t            **p;
    ngx_http_llm_router_spend_t   *s, *t;

    s = (ngx_http_llm_router_spend_t *) node;

    for ( ;; ) {

        if (node->key != temp->key) {
            rc = (node->key < temp->key) ? -1 : 1;

        } else {
            t = (ngx_http_llm_router_spend_t *) temp;
            rc = ngx_http_llm_router_spend_cmp(s->budget, s->key, s->len, t);
        }

        p = (rc < 0) ? &temp->left : &temp->right;

        if (*p == sentinel) {
            break;
        }

        temp = *p;
    }

    *p = node;
    node->parent = temp;
    node->left = sentinel;
    node->right = sentinel;
    ngx_rbt_red(node);
}


/*
 * The zone is full: the keys of past periods, and of budgets that the
 * configuration no longer has, are given back, unless a request still
 * holds them.  Called under the zone's lock.
 */

static void
ngx_http_llm_router_spend_expire(ngx_http_llm_router_main_conf_t *lmcf)
{
    time_t                         now;
    ngx_uint_t                     i;
    ngx_slab_pool_t               *shpool;
    ngx_rbtree_node_t             *node, *next, *sentinel;
    ngx_http_llm_router_shm_t     *shm;
    ngx_http_llm_router_spend_t   *s;
    ngx_http_llm_router_budget_t  *b;

    shm = lmcf->shm;
    shpool = (ngx_slab_pool_t *) lmcf->zone->shm.addr;
    sentinel = shm->spends.sentinel;

    if (shm->spends.root == sentinel) {
        return;
    }

    now = ngx_time();
    b = lmcf->budgets.elts;

    for (node = ngx_rbtree_min(shm->spends.root, sentinel);
         node;
         node = next)
    {
        next = ngx_rbtree_next(&shm->spends, node);
        s = (ngx_http_llm_router_spend_t *) node;

        if (s->inflight) {
            continue;
        }

        for (i = 0; i < lmcf->budgets.nelts; i++) {
            if (b[i].hash == s->budget) {
                break;
            }
        }

        if (i < lmcf->budgets.nelts
            && s->period == (ngx_uint_t) (now / b[i].period))
        {
            continue;
        }

        ngx_rbtree_delete(&shm->spends, node);
        ngx_slab_free_locked(shpool, s);
    }
}


/*
 * The busiest keys of each budget for llm_router_status: the tree is
 * walked under the mutex, keeping the largest spends.
 */

u_char *
ngx_http_llm_router_budget_status(u_char *p, ngx_http_request_t *r)
{
    ngx_uint_t                         i, k, n, period;
    ngx_slab_pool_t                   *shpool;
    ngx_rbtree_node_t                 *node, *root, *sentinel;
    ngx_http_llm_router_spend_t       *s, *top[NGX_HTTP_LLM_ROUTER_BUSIEST];
    ngx_http_llm_router_budget_t      *b;
    ngx_http_llm_router_main_conf_t   *lmcf;

    lmcf = ngx_http_get_module_main_conf(r, ngx_http_llm_router_module);

    p = ngx_sprintf(p, "# HELP llm_router_budget_limit_usd The limit of a "
                    "budget per period.\n"
                    "# TYPE llm_router_budget_limit_usd gauge\n");

    b = lmcf->budgets.elts;

    for (i = 0; i < lmcf->budgets.nelts; i++) {
        p = ngx_cpymem(p, "llm_router_budget_limit_usd{budget=\"",
                       sizeof("llm_router_budget_limit_usd{budget=\"") - 1);
        p = ngx_http_llm_router_prom_escape(p, b[i].name.data, b[i].name.len);
        p = ngx_cpymem(p, "\"} ", 3);
        p += llmr_usd_format(p, b[i].limit);
        *p++ = '\n';
    }

    p = ngx_sprintf(p, "# HELP llm_router_budget_spent_usd Spent in the "
                    "current period, for the %d busiest keys of each "
                    "budget.\n# TYPE llm_router_budget_spent_usd gauge\n",
                    NGX_HTTP_LLM_ROUTER_BUSIEST);

    shpool = (ngx_slab_pool_t *) lmcf->zone->shm.addr;
    root = ((ngx_http_llm_router_shm_t *) lmcf->shm)->spends.root;
    sentinel = ((ngx_http_llm_router_shm_t *) lmcf->shm)->spends.sentinel;

    ngx_shmtx_lock(&shpool->mutex);

    for (i = 0; i < lmcf->budgets.nelts; i++) {
        period = ngx_time() / b[i].period;
        n = 0;

        for (node = root == sentinel ? NULL : ngx_rbtree_min(root, sentinel);
             node;
             node = ngx_rbtree_next(&((ngx_http_llm_router_shm_t *)
                                      lmcf->shm)->spends, node))
        {
            s = (ngx_http_llm_router_spend_t *) node;

            if (s->budget != b[i].hash || s->period != period) {
                continue;
            }

            /* insertion into the top list, largest first */

            for (k = n; k > 0 && top[k - 1]->spent < s->spent; k--) {
                if (k < NGX_HTTP_LLM_ROUTER_BUSIEST) {
                    top[k] = top[k - 1];
                }
            }

            if (k < NGX_HTTP_LLM_ROUTER_BUSIEST) {
                top[k] = s;
                n = ngx_min(n + 1, NGX_HTTP_LLM_ROUTER_BUSIEST);
            }
        }

        for (k = 0; k < n; k++) {
            p = ngx_cpymem(p, "llm_router_budget_spent_usd{budget=\"",
                           sizeof("llm_router_budget_spent_usd{budget=\"")
                           - 1);
            p = ngx_http_llm_router_prom_escape(p, b[i].name.data,
                                                b[i].name.len);
            p = ngx_cpymem(p, "\",key=\"", 7);
            p = ngx_http_llm_router_prom_escape(p, top[k]->key,
                                                top[k]->len);
            p = ngx_cpymem(p, "\"} ", 3);
            p += llmr_usd_format(p, top[k]->spent);
            *p++ = '\n';
        }
    }

    ngx_shmtx_unlock(&shpool->mutex);

    return p;
}
