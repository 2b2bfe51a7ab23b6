
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
 */


#include "ngx_http_llm_router_module.h"


#define NGX_HTTP_LLM_ROUTER_KEY_LEN   64
#define NGX_HTTP_LLM_ROUTER_BUSIEST   20


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


static ngx_http_llm_router_spend_t *ngx_http_llm_router_spend(
    ngx_http_llm_router_main_conf_t *lmcf, ngx_http_llm_router_budget_t *b,
    ngx_str_t *key, ngx_uint_t hash);
static ngx_int_t ngx_http_llm_router_reserve_one(ngx_http_request_t *r,
    ngx_http_llm_router_ctx_t *ctx, ngx_http_llm_router_budget_t *b,
    ngx_http_llm_router_reservation_t *res);
static uint64_t ngx_http_llm_router_worst(ngx_http_request_t *r,
    ngx_http_llm_router_ctx_t *ctx, ngx_http_llm_router_budget_t *b,
    ngx_http_llm_router_model_t *m, ngx_uint_t depth);
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
 * llm_router_budget NAME key=$var limit=USD period=day action=reject
 *     [max_tokens=N];                      at http level: a definition
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
    llmr_features_t                 *f;
    ngx_http_llm_router_loc_conf_t  *llcf;

    if (m == NULL || depth == NGX_HTTP_LLM_ROUTER_ATTEMPTS_MAX) {
        return 0;
    }

    llcf = ngx_http_get_module_loc_conf(r, ngx_http_llm_router_module);
    f = &ctx->request.f;

    /* a prompt may be written to a cache, at a price above the input's */

    cost = f->prompt_tokens * ngx_max(m->price_in, m->price_cache_write)
           + (f->max_tokens > 0 ? (uint64_t) f->max_tokens
                                : (uint64_t) b->max_tokens)
             * m->price_out;

    if (llcf->escalate) {
        cost += ngx_http_llm_router_worst(r, ctx, b, m->escalate, depth + 1);
    }

    fallback = ngx_http_llm_router_worst(r, ctx, b, m->fallback, depth + 1);

    return ngx_max(cost, fallback);
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
            ngx_http_llm_router_settle(r, ctx, 0);
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
    u_char                           *p;
    time_t                            now, reset;
    uint64_t                          worst;
    ngx_str_t                         key, action;
    ngx_uint_t                        period, hash;
    ngx_slab_pool_t                  *shpool;
    ngx_http_llm_router_spend_t      *s;
    ngx_http_llm_router_main_conf_t  *lmcf;

    lmcf = ngx_http_get_module_main_conf(r, ngx_http_llm_router_module);

    if (ngx_http_complex_value(r, b->key, &key) != NGX_OK) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    key.len = ngx_min(key.len, NGX_HTTP_LLM_ROUTER_KEY_LEN);

    now = ngx_time();
    period = now / b->period;

    hash = ngx_crc32_short(key.data, key.len) ^ b->hash;

    shpool = (ngx_slab_pool_t *) lmcf->zone->shm.addr;

    ngx_shmtx_lock(&shpool->mutex);

    s = ngx_http_llm_router_spend(lmcf, b, &key, hash);

    if (s == NULL) {
        ngx_shmtx_unlock(&shpool->mutex);
        ngx_log_error(NGX_LOG_ALERT, r->connection->log, 0,
                      "llm_router: the zone \"%V\" is full, budget \"%V\" "
                      "is not enforced for key \"%V\"",
                      &lmcf->zone->shm.name, &b->name, &key);
        return NGX_OK;
    }

    if (s->period != period) {
        /* a new period: what was spent before no longer counts */
        s->period = period;
        s->spent = 0;
        s->reserved = 0;
    }

    worst = ngx_http_llm_router_worst(r, ctx, b, ctx->model, 0);

    if (s->spent + s->reserved + worst > b->limit && b->downgrade) {
        worst = ngx_http_llm_router_worst(r, ctx, b, b->downgrade, 0);

        if (s->spent + s->reserved + worst <= b->limit) {
            ngx_log_error(NGX_LOG_INFO, r->connection->log, 0,
                          "llm_router: budget \"%V\" downgrades \"%V\" to "
                          "\"%V\"", &b->name, &ctx->model->name,
                          &b->downgrade->name);

            ctx->model = b->downgrade;
            ngx_str_set(&ctx->rule, "budget");

            ngx_str_set(&action, "downgrade");
            ngx_http_llm_router_series(lmcf->shm,
                                       NGX_HTTP_LLM_ROUTER_SERIES_BUDGET,
                                       &b->name, &action, NULL);
        }
    }

    if (s->spent + s->reserved + worst > b->limit) {
        ngx_shmtx_unlock(&shpool->mutex);

        reset = (period + 1) * b->period;

        p = ngx_pnalloc(r->pool, 256 + b->name.len);
        if (p == NULL) {
            return NGX_HTTP_INTERNAL_SERVER_ERROR;
        }

        ctx->error.data = p;
        ctx->error.len = ngx_sprintf(p, "budget \"%V\" is spent for this "
                                     "period; it resets in %T seconds",
                                     &b->name, reset - now)
                         - p;
        ctx->retry_after = reset - now;
        ctx->no_retry = 1;

        ngx_log_error(NGX_LOG_INFO, r->connection->log, 0,
                      "llm_router: budget \"%V\" rejects the request",
                      &b->name);

        ngx_str_set(&action, "reject");
        ngx_http_llm_router_series(lmcf->shm,
                                   NGX_HTTP_LLM_ROUTER_SERIES_BUDGET,
                                   &b->name, &action, NULL);

        return NGX_HTTP_TOO_MANY_REQUESTS;
    }

    s->reserved += worst;
    s->inflight++;

    ngx_shmtx_unlock(&shpool->mutex);

    res->spend = s;
    res->period = period;
    res->reserved = worst;
    ctx->nreservations++;

    return NGX_OK;
}


/* the real cost replaces the reservation, in the log phase */

void
ngx_http_llm_router_settle(ngx_http_request_t *r,
    ngx_http_llm_router_ctx_t *ctx, uint64_t cost)
{
    ngx_uint_t                          i;
    ngx_slab_pool_t                    *shpool;
    ngx_http_llm_router_spend_t        *s;
    ngx_http_llm_router_main_conf_t    *lmcf;
    ngx_http_llm_router_reservation_t  *res;

    if (ctx->nreservations == 0) {
        return;
    }

    lmcf = ngx_http_get_module_main_conf(r, ngx_http_llm_router_module);
    shpool = (ngx_slab_pool_t *) lmcf->zone->shm.addr;

    ngx_shmtx_lock(&shpool->mutex);

    for (i = 0; i < ctx->nreservations; i++) {
        res = &ctx->reservations[i];
        s = res->spend;

        if (s->period == res->period) {
            s->reserved -= ngx_min(s->reserved, res->reserved);
            s->spent += cost;
        }

        s->inflight--;
    }

    ngx_shmtx_unlock(&shpool->mutex);

    ctx->nreservations = 0;
}


/* the spend of a key, made on first use; the caller holds the mutex */

static ngx_http_llm_router_spend_t *
ngx_http_llm_router_spend(ngx_http_llm_router_main_conf_t *lmcf,
    ngx_http_llm_router_budget_t *b, ngx_str_t *key, ngx_uint_t hash)
{
    ngx_slab_pool_t              *shpool;
    ngx_rbtree_node_t            *node, *sentinel;
    ngx_http_llm_router_shm_t    *shm;
    ngx_http_llm_router_spend_t  *s;

    shm = lmcf->shm;
    node = shm->spends.root;
    sentinel = shm->spends.sentinel;

    while (node != sentinel) {
        if (hash != node->key) {
            node = (hash < node->key) ? node->left : node->right;
            continue;
        }

        s = (ngx_http_llm_router_spend_t *) node;

        if (s->budget == b->hash && s->len == key->len
            && ngx_memcmp(s->key, key->data, key->len) == 0)
        {
            return s;
        }

        node = node->right;
    }

    shpool = (ngx_slab_pool_t *) lmcf->zone->shm.addr;

    s = ngx_slab_calloc_locked(shpool, sizeof(ngx_http_llm_router_spend_t));

    if (s == NULL) {
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

    ngx_rbtree_insert(&shm->spends, &s->node);

    return s;
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
