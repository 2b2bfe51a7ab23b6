
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

/* what Redis's integers hold, with room for sums */
#define NGX_HTTP_LLM_ROUTER_REDIS_PICO_MAX  ((uint64_t) 1 << 62)

/* the verdicts that the zone makes itself, Redis's being 0, 1, 2 */
#define NGX_HTTP_LLM_ROUTER_LOCAL     -1
#define NGX_HTTP_LLM_ROUTER_FALLBACK  -2

/* a key of a past period in Redis outlives it by this, in seconds */
#define NGX_HTTP_LLM_ROUTER_FLEET_GRACE  60

/* the spends reconciled with Redis at once */
#define NGX_HTTP_LLM_ROUTER_RECONCILE  32


/*
 * The scripts, one EVAL a step: a reservation of the worst case, or of
 * the downgrade's, if it fits; a settlement, which releases what was
 * reserved and adds the cost.  Amounts are pico-USD; a number of Lua is
 * a double, exact up to 2^53 pico-USD, 9007 USD a key and period.
 */

static ngx_str_t  ngx_http_llm_router_reserve_script = ngx_string(
    "local s = tonumber(redis.call('HGET', KEYS[1], 's') or '0') "
    "local used = s + tonumber(redis.call('HGET', KEYS[1], 'r') or '0') "
    "local limit = tonumber(ARGV[1]) "
    "local pick = 0 "
    "if used + tonumber(ARGV[2]) <= limit then pick = 1 "
    "elseif ARGV[3] ~= '0' and used + tonumber(ARGV[3]) <= limit "
    "then pick = 2 end "
    "if pick > 0 then "
    "redis.call('HINCRBY', KEYS[1], 'r', ARGV[pick + 1]) "
    "redis.call('EXPIREAT', KEYS[1], ARGV[4]) end "
    "return {pick, s}");

static ngx_str_t  ngx_http_llm_router_settle_script = ngx_string(
    "local r = tonumber(redis.call('HGET', KEYS[1], 'r') or '0') "
    "local release = math.min(r, tonumber(ARGV[1])) "
    "if release > 0 then "
    "redis.call('HINCRBY', KEYS[1], 'r', string.format('%d', -release)) "
    "end "
    "redis.call('HINCRBY', KEYS[1], 's', ARGV[2]) "
    "redis.call('EXPIREAT', KEYS[1], ARGV[3]) "
    "return 1");


/* a spend of a fleet budget, copied out of the zone for Redis */

typedef struct {
    ngx_http_llm_router_budget_t  *budget;
    ngx_uint_t                     period;
    uint64_t                       release;
    uint64_t                       cost;
    ngx_str_t                      key;
    u_char                         data[NGX_HTTP_LLM_ROUTER_KEY_LEN];
} ngx_http_llm_router_fleet_spend_t;

static ngx_str_t  ngx_http_llm_router_spent_script = ngx_string(
    "local t = {} "
    "for i, k in ipairs(KEYS) do "
    "t[i] = tonumber(redis.call('HGET', k, 's') or '0') end "
    "return t");


typedef struct {
    ngx_rbtree_node_t              node;          /* key: hash */
    ngx_uint_t                     budget;        /* hash of its name */
    ngx_uint_t                     period;        /* number, since 1970 */
    uint64_t                       spent;         /* pico-USD */
    uint64_t                       reserved;
    ngx_uint_t                     inflight;      /* requests holding it */

    /* of a fleet budget: what Redis lacks, and its spend as last read */
    uint64_t                       unsynced;
    uint64_t                       unreleased;
    uint64_t                       fleet_spent;
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
static ngx_int_t ngx_http_llm_router_reserve_fleet(ngx_http_request_t *r,
    ngx_http_llm_router_ctx_t *ctx, ngx_http_llm_router_budget_t *b);
static void ngx_http_llm_router_fleet_reply(
    ngx_http_llm_router_redis_cmd_t *cmd, llmr_resp_t *reply);
static void ngx_http_llm_router_fleet_timeout(ngx_event_t *ev);
static void ngx_http_llm_router_fleet_wake(ngx_event_t *ev);
static void ngx_http_llm_router_fleet_cleanup(void *data);
static ngx_int_t ngx_http_llm_router_fleet_settle(
    ngx_http_llm_router_main_conf_t *lmcf, ngx_http_llm_router_budget_t *b,
    ngx_str_t *key, ngx_uint_t period, uint64_t release, uint64_t cost);
static void ngx_http_llm_router_fleet_settled(
    ngx_http_llm_router_redis_cmd_t *cmd, llmr_resp_t *reply);
static void ngx_http_llm_router_spend_read(
    ngx_http_llm_router_redis_cmd_t *cmd, llmr_resp_t *reply);
static void ngx_http_llm_router_unsynced(
    ngx_http_llm_router_main_conf_t *lmcf, ngx_http_llm_router_budget_t *b,
    ngx_str_t *key, ngx_uint_t period, uint64_t release, uint64_t cost);
static size_t ngx_http_llm_router_fleet_key(u_char *p,
    ngx_http_llm_router_budget_t *b, ngx_str_t *key, ngx_uint_t period);
static u_char *ngx_http_llm_router_pico(u_char *p, uint64_t v);
static ngx_int_t ngx_http_llm_router_budget_key(ngx_http_request_t *r,
    ngx_http_llm_router_budget_t *b, ngx_str_t *key);
static ngx_int_t ngx_http_llm_router_reserve_one(ngx_http_request_t *r,
    ngx_http_llm_router_ctx_t *ctx, ngx_http_llm_router_budget_t *b,
    ngx_int_t verdict, uint64_t fleet_spent);
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
static u_char *ngx_http_llm_router_budget_prometheus(u_char *p,
    ngx_http_llm_router_main_conf_t *lmcf, ngx_http_llm_router_spend_t **top,
    ngx_uint_t *count);
static u_char *ngx_http_llm_router_budget_json(u_char *p,
    ngx_http_llm_router_main_conf_t *lmcf, ngx_http_llm_router_spend_t **top,
    ngx_uint_t *count);
static u_char *ngx_http_llm_router_store(u_char *p,
    ngx_http_llm_router_budget_t *b);
static u_char *ngx_http_llm_router_spent_lines(u_char *p,
    ngx_http_llm_router_main_conf_t *lmcf, ngx_http_llm_router_spend_t **top,
    ngx_uint_t *count, const char *name, ngx_uint_t fleet);
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
 *     [max_tokens=N] [fail=closed|open] [store=zone|redis:NAME];
 *                                          at http level: a definition
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

        if (ngx_strncmp(value[i].data, "store=", 6) == 0) {
            /* resolved once every llm_router_redis is known */
            b->store_name.data = value[i].data + 6;
            b->store_name.len = value[i].len - 6;
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

    /* from where a verdict of Redis was waited for */

    for (i = ctx->budget_next;
         i < llcf->budgets->nelts
         && ctx->nreservations < NGX_HTTP_LLM_ROUTER_BUDGETS_MAX;
         i++)
    {
        rc = b[i]->redis
             ? ngx_http_llm_router_reserve_fleet(r, ctx, b[i])
             : ngx_http_llm_router_reserve_one(r, ctx, b[i],
                                               NGX_HTTP_LLM_ROUTER_LOCAL, 0);

        if (rc == NGX_AGAIN) {
            ctx->budget_next = i;
            return NGX_AGAIN;
        }

        if (rc != NGX_OK) {
            /* what the other budgets reserved is given back */
            ngx_http_llm_router_settle(r, ctx->reservations,
                                       &ctx->nreservations, 0);
            return rc;
        }
    }

    ctx->budget_next = i;

    return NGX_OK;
}


/* the key of a request in a budget, as the zone keeps it */

static ngx_int_t
ngx_http_llm_router_budget_key(ngx_http_request_t *r,
    ngx_http_llm_router_budget_t *b, ngx_str_t *key)
{
    if (ngx_http_complex_value(r, b->key, key) != NGX_OK) {
        return NGX_ERROR;
    }

    key->len = ngx_http_llm_router_key_cut(key->data, key->len);

    return NGX_OK;
}


/*
 * A reservation in the zone.  verdict: NGX_HTTP_LLM_ROUTER_LOCAL, the
 * zone decides against the limit; NGX_HTTP_LLM_ROUTER_FALLBACK, Redis is
 * down and the zone decides against this server's share of the limit;
 * or what Redis decided (0: no room, 1: the model, 2: the downgrade),
 * which the zone follows, keeping this server's own spend.
 */

static ngx_int_t
ngx_http_llm_router_reserve_one(ngx_http_request_t *r,
    ngx_http_llm_router_ctx_t *ctx, ngx_http_llm_router_budget_t *b,
    ngx_int_t verdict, uint64_t fleet_spent)
{
    time_t                              now;
    uint64_t                            worst, used, limit;
    ngx_str_t                           key, action;
    ngx_uint_t                          period, hash, fleet;
    ngx_slab_pool_t                    *shpool;
    ngx_http_llm_router_model_t        *model;
    ngx_http_llm_router_spend_t        *s;
    ngx_http_llm_router_main_conf_t    *lmcf;
    ngx_http_llm_router_reservation_t  *res;

    lmcf = ngx_http_get_module_main_conf(r, ngx_http_llm_router_module);

    if (ngx_http_llm_router_budget_key(r, b, &key) != NGX_OK) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    now = ngx_time();
    period = now / b->period;

    hash = ngx_crc32_short(key.data, key.len) ^ b->hash;

    limit = (verdict == NGX_HTTP_LLM_ROUTER_FALLBACK)
            ? b->limit / lmcf->redis_share : b->limit;

    shpool = (ngx_slab_pool_t *) lmcf->zone->shm.addr;

    ngx_shmtx_lock(&shpool->mutex);

    s = ngx_http_llm_router_spend_find(lmcf->shm, b, &key, hash);

    if (s && s->period != period) {
        /*
         * a new period: what was spent before no longer counts, nor what
         * Redis lacks of it, whose key expires with the period
         */
        s->period = period;
        s->spent = 0;
        s->reserved = 0;
        s->unsynced = 0;
        s->unreleased = 0;
        s->fleet_spent = 0;
    }

    /* a key the zone does not hold has spent nothing */

    used = s ? ngx_http_llm_router_pico_add(s->spent, s->reserved) : 0;

    model = ctx->model;
    worst = ngx_http_llm_router_worst(r, ctx, b, model, 0);

    fleet = (verdict >= 0);

    if (!fleet) {
        if (ngx_http_llm_router_pico_add(used, worst) > limit
            && b->downgrade)
        {
            model = b->downgrade;
            worst = ngx_http_llm_router_worst(r, ctx, b, model, 0);
        }

        verdict = (ngx_http_llm_router_pico_add(used, worst) > limit) ? 0
                  : (model == ctx->model) ? 1 : 2;

    } else if (verdict == 2) {
        model = b->downgrade;
        worst = ngx_http_llm_router_worst(r, ctx, b, model, 0);
    }

    if (verdict == 0) {
        ngx_shmtx_unlock(&shpool->mutex);
        return ngx_http_llm_router_refuse(r, ctx, b, now, 0);
    }

    if (s == NULL) {
        /* only a request that goes takes room in the zone */

        s = ngx_http_llm_router_spend_add(lmcf, b, &key, hash);

        if (s == NULL && !fleet) {
            ngx_shmtx_unlock(&shpool->mutex);
            return ngx_http_llm_router_full(r, ctx, b, &key, now);
        }

        /* Redis holds a reservation the zone has no room for: it goes */

        if (s) {
            s->period = period;
        }
    }

    if (s) {
        s->reserved = ngx_http_llm_router_pico_add(s->reserved, worst);
        s->inflight++;

        if (fleet) {
            s->fleet_spent = fleet_spent;
        }
    }

    ngx_shmtx_unlock(&shpool->mutex);

    res = &ctx->reservations[ctx->nreservations++];

    res->budget = b;
    res->spend = s;
    res->period = period;
    res->reserved = worst;
    res->key = key;
    res->fleet_reserved = fleet ? ngx_min(worst,
                                          NGX_HTTP_LLM_ROUTER_REDIS_PICO_MAX)
                                : 0;

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
 * A budget kept in Redis: the request waits for Redis's verdict on its
 * worst case.  A verdict that does not come in time, or a server that is
 * down, leaves it to the zone, against this server's share of the limit.
 */

static ngx_int_t
ngx_http_llm_router_reserve_fleet(ngx_http_request_t *r,
    ngx_http_llm_router_ctx_t *ctx, ngx_http_llm_router_budget_t *b)
{
    u_char                            n[4][NGX_INT64_LEN], *name;
    uint64_t                          worst[2];
    ngx_int_t                         pick;
    ngx_str_t                         key;
    llmr_str_t                        argv[8];
    ngx_uint_t                        period;
    ngx_pool_cleanup_t               *cln;
    ngx_http_llm_router_fleet_t      *w;
    ngx_http_llm_router_redis_cmd_t  *cmd;

    w = ctx->fleet;

    if (w && w->done) {
        w->done = 0;
        pick = w->pick;

        return ngx_http_llm_router_reserve_one(r, ctx, b,
                                  pick >= 0 ? pick
                                            : NGX_HTTP_LLM_ROUTER_FALLBACK,
                                  w->fleet_spent);
    }

    if (!ngx_http_llm_router_redis_available(b->redis)) {
        return ngx_http_llm_router_reserve_one(r, ctx, b,
                                            NGX_HTTP_LLM_ROUTER_FALLBACK, 0);
    }

    if (ngx_http_llm_router_budget_key(r, b, &key) != NGX_OK) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    period = ngx_time() / b->period;

    name = ngx_pnalloc(r->pool, sizeof("llmr:budget:::") - 1 + b->name.len
                                + key.len + NGX_INT64_LEN);
    if (name == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    argv[0].data = (u_char *) "EVAL";
    argv[0].len = 4;
    argv[1].data = ngx_http_llm_router_reserve_script.data;
    argv[1].len = ngx_http_llm_router_reserve_script.len;
    argv[2].data = (u_char *) "1";
    argv[2].len = 1;
    argv[3].data = name;
    argv[3].len = ngx_http_llm_router_fleet_key(name, b, &key, period);

    argv[4].data = n[0];
    argv[4].len = ngx_http_llm_router_pico(n[0], b->limit) - n[0];

    /* the worst case of the model, and of the budget's downgrade */

    worst[0] = ngx_min(ngx_http_llm_router_worst(r, ctx, b, ctx->model, 0),
                       NGX_HTTP_LLM_ROUTER_REDIS_PICO_MAX);
    worst[1] = b->downgrade
               ? ngx_min(ngx_http_llm_router_worst(r, ctx, b, b->downgrade, 0),
                         NGX_HTTP_LLM_ROUTER_REDIS_PICO_MAX)
               : 0;

    argv[5].data = n[1];
    argv[5].len = ngx_http_llm_router_pico(n[1], worst[0]) - n[1];
    argv[6].data = n[2];
    argv[6].len = ngx_http_llm_router_pico(n[2], worst[1]) - n[2];
    argv[7].data = n[3];
    argv[7].len = ngx_sprintf(n[3], "%ui", (period + 1) * b->period
                                           + NGX_HTTP_LLM_ROUTER_FLEET_GRACE)
                  - n[3];

    cmd = ngx_http_llm_router_redis_command(b->redis, 8, argv, key.len);
    if (cmd == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    cmd->handler = ngx_http_llm_router_fleet_reply;
    cmd->budget = b;
    cmd->period = period;
    cmd->key.data = cmd->last;
    cmd->key.len = key.len;
    ngx_memcpy(cmd->key.data, key.data, key.len);

    /* what a reply that comes too late undoes */
    cmd->worst[0] = worst[0];
    cmd->worst[1] = worst[1];

    if (w == NULL) {
        w = ngx_pcalloc(r->pool, sizeof(ngx_http_llm_router_fleet_t));
        cln = ngx_pool_cleanup_add(r->pool, 0);

        if (w == NULL || cln == NULL) {
            ngx_free(cmd);
            return NGX_HTTP_INTERNAL_SERVER_ERROR;
        }

        w->request = r;

        ngx_http_llm_router_event(&w->timer, ngx_http_llm_router_fleet_timeout,
                                  w, r->connection->log);

        ngx_http_llm_router_event(&w->wake, ngx_http_llm_router_fleet_wake, w,
                                  r->connection->log);

        cln->handler = ngx_http_llm_router_fleet_cleanup;
        cln->data = w;

        ctx->fleet = w;
    }

    w->pick = -1;
    w->fleet_spent = 0;
    w->cmd = cmd;
    cmd->data = w;

    if (ngx_http_llm_router_redis_send(cmd) != NGX_OK) {
        w->cmd = NULL;
        return ngx_http_llm_router_reserve_one(r, ctx, b,
                                            NGX_HTTP_LLM_ROUTER_FALLBACK, 0);
    }

    ngx_add_timer(&w->timer, b->redis->timeout);

    ngx_log_debug2(NGX_LOG_DEBUG_HTTP, r->connection->log, 0,
                   "llm_router: budget \"%V\" asks redis \"%V\"",
                   &b->name, &b->redis->name);

    return NGX_AGAIN;
}


static void
ngx_http_llm_router_fleet_reply(ngx_http_llm_router_redis_cmd_t *cmd,
    llmr_resp_t *reply)
{
    ngx_int_t                         pick;
    ngx_http_llm_router_fleet_t      *w;
    ngx_http_llm_router_main_conf_t  *lmcf;

    pick = -1;

    if (reply && reply->type == LLMR_RESP_ARRAY && reply->nitems == 2
        && reply->items[0] >= 0 && reply->items[0] <= 2)
    {
        pick = (ngx_int_t) reply->items[0];
    }

    w = cmd->data;

    if (w == NULL) {
        /* its request went on without it: what it reserved is undone */

        if (pick > 0) {
            lmcf = ngx_http_cycle_get_module_main_conf(ngx_cycle,
                                                ngx_http_llm_router_module);

            (void) ngx_http_llm_router_fleet_settle(lmcf, cmd->budget,
                                                    &cmd->key, cmd->period,
                                                    cmd->worst[pick - 1], 0);
        }

        return;
    }

    w->cmd = NULL;
    w->pick = pick;
    w->fleet_spent = (pick >= 0 && reply->items[1] > 0)
                     ? (uint64_t) reply->items[1] : 0;
    w->done = 1;

    if (w->timer.timer_set) {
        ngx_del_timer(&w->timer);
    }

    /* the request goes on from the event loop, not from Redis's reply */

    ngx_post_event(&w->wake, &ngx_posted_events);
}


static void
ngx_http_llm_router_fleet_timeout(ngx_event_t *ev)
{
    ngx_http_llm_router_fleet_t *w = ev->data;

    ngx_http_llm_router_redis_error(w->cmd->redis, "did not answer in time",
                                    NULL);

    /* the reply, should it come, is for nobody */

    w->cmd->data = NULL;
    w->cmd = NULL;
    w->pick = -1;
    w->done = 1;

    ngx_http_llm_router_fleet_wake(&w->wake);
}


static void
ngx_http_llm_router_fleet_wake(ngx_event_t *ev)
{
    ngx_http_llm_router_fleet_t *w = ev->data;

    ngx_http_request_t  *r;

    r = w->request;

    ngx_http_set_log_request(r->connection->log, r);

    ngx_http_llm_router_wake(r);
    ngx_http_run_posted_requests(r->connection);
}


static void
ngx_http_llm_router_fleet_cleanup(void *data)
{
    ngx_http_llm_router_fleet_t *w = data;

    if (w->cmd) {
        w->cmd->data = NULL;
    }

    if (w->timer.timer_set) {
        ngx_del_timer(&w->timer);
    }

    if (w->wake.posted) {
        ngx_delete_posted_event(&w->wake);
    }
}


/*
 * A settlement in Redis: what was reserved there released, the cost
 * added.  Not sent, or not answered, it is kept in the zone for the
 * reconciliation.
 */

static ngx_int_t
ngx_http_llm_router_fleet_settle(ngx_http_llm_router_main_conf_t *lmcf,
    ngx_http_llm_router_budget_t *b, ngx_str_t *key, ngx_uint_t period,
    uint64_t release, uint64_t cost)
{
    u_char                            n[3][NGX_INT64_LEN];
    u_char                            name[sizeof("llmr:budget:::")
                                           + NGX_HTTP_LLM_ROUTER_LABEL_LEN
                                           + NGX_HTTP_LLM_ROUTER_KEY_LEN
                                           + NGX_INT64_LEN];
    llmr_str_t                        argv[7];
    ngx_http_llm_router_redis_cmd_t  *cmd;

    argv[0].data = (u_char *) "EVAL";
    argv[0].len = 4;
    argv[1].data = ngx_http_llm_router_settle_script.data;
    argv[1].len = ngx_http_llm_router_settle_script.len;
    argv[2].data = (u_char *) "1";
    argv[2].len = 1;
    argv[3].data = name;
    argv[3].len = ngx_http_llm_router_fleet_key(name, b, key, period);
    argv[4].data = n[0];
    argv[4].len = ngx_http_llm_router_pico(n[0], release) - n[0];
    argv[5].data = n[1];
    argv[5].len = ngx_http_llm_router_pico(n[1], cost) - n[1];
    argv[6].data = n[2];
    argv[6].len = ngx_sprintf(n[2], "%ui", (period + 1) * b->period
                                           + NGX_HTTP_LLM_ROUTER_FLEET_GRACE)
                  - n[2];

    cmd = ngx_http_llm_router_redis_command(b->redis, 7, argv, key->len);

    if (cmd) {
        cmd->handler = ngx_http_llm_router_fleet_settled;
        cmd->budget = b;
        cmd->period = period;
        cmd->release = release;
        cmd->cost = cost;
        cmd->key.data = cmd->last;
        cmd->key.len = key->len;
        ngx_memcpy(cmd->key.data, key->data, key->len);

        if (ngx_http_llm_router_redis_send(cmd) == NGX_OK) {
            return NGX_OK;
        }
    }

    ngx_http_llm_router_unsynced(lmcf, b, key, period, release, cost);

    return NGX_DECLINED;
}


static void
ngx_http_llm_router_fleet_settled(ngx_http_llm_router_redis_cmd_t *cmd,
    llmr_resp_t *reply)
{
    ngx_http_llm_router_main_conf_t  *lmcf;

    if (reply) {
        return;
    }

    lmcf = ngx_http_cycle_get_module_main_conf(ngx_cycle,
                                               ngx_http_llm_router_module);

    ngx_http_llm_router_unsynced(lmcf, cmd->budget, &cmd->key, cmd->period,
                                 cmd->release, cmd->cost);
}


/* what Redis lacks, kept with the key's spend in the zone */

static void
ngx_http_llm_router_unsynced(ngx_http_llm_router_main_conf_t *lmcf,
    ngx_http_llm_router_budget_t *b, ngx_str_t *key, ngx_uint_t period,
    uint64_t release, uint64_t cost)
{
    ngx_uint_t                    hash;
    ngx_slab_pool_t              *shpool;
    ngx_http_llm_router_spend_t  *s;

    hash = ngx_crc32_short(key->data, key->len) ^ b->hash;
    shpool = (ngx_slab_pool_t *) lmcf->zone->shm.addr;

    ngx_shmtx_lock(&shpool->mutex);

    s = ngx_http_llm_router_spend_find(lmcf->shm, b, key, hash);

    if (s && s->period == period) {
        s->unsynced = ngx_http_llm_router_pico_add(s->unsynced, cost);
        s->unreleased = ngx_http_llm_router_pico_add(s->unreleased, release);
    }

    ngx_shmtx_unlock(&shpool->mutex);
}


/*
 * Redis answers again: what the zone kept of the current periods while
 * it did not goes to it, a few keys at a time, each taken under the lock
 * so that no worker sends it twice.
 */

void
ngx_http_llm_router_reconcile(ngx_http_llm_router_redis_t *redis)
{
    ngx_uint_t                         i, n, k;
    ngx_slab_pool_t                   *shpool;
    ngx_rbtree_node_t                 *node, *root, *sentinel;
    ngx_http_llm_router_shm_t         *shm;
    ngx_http_llm_router_spend_t       *s;
    ngx_http_llm_router_budget_t      *b;
    ngx_http_llm_router_fleet_spend_t     u[NGX_HTTP_LLM_ROUTER_RECONCILE];
    ngx_http_llm_router_main_conf_t   *lmcf;

    lmcf = ngx_http_cycle_get_module_main_conf(ngx_cycle,
                                               ngx_http_llm_router_module);
    shm = lmcf->shm;

    if (shm == NULL) {
        return;
    }

    shpool = (ngx_slab_pool_t *) lmcf->zone->shm.addr;
    b = lmcf->budgets.elts;

    do {
        n = 0;

        ngx_shmtx_lock(&shpool->mutex);

        root = shm->spends.root;
        sentinel = shm->spends.sentinel;

        for (node = (root == sentinel) ? NULL
                                       : ngx_rbtree_min(root, sentinel);
             node && n < NGX_HTTP_LLM_ROUTER_RECONCILE;
             node = ngx_rbtree_next(&shm->spends, node))
        {
            s = (ngx_http_llm_router_spend_t *) node;

            if (s->unsynced == 0 && s->unreleased == 0) {
                continue;
            }

            for (i = 0; i < lmcf->budgets.nelts; i++) {
                if (b[i].hash == s->budget && b[i].redis == redis) {
                    break;
                }
            }

            if (i == lmcf->budgets.nelts) {
                continue;
            }

            if (s->period == (ngx_uint_t) (ngx_time() / b[i].period)) {
                u[n].budget = &b[i];
                u[n].period = s->period;
                u[n].release = s->unreleased;
                u[n].cost = s->unsynced;
                u[n].key.data = u[n].data;
                u[n].key.len = s->len;
                ngx_memcpy(u[n].data, s->key, s->len);
                n++;
            }

            /* a past period's key expired with it */

            s->unsynced = 0;
            s->unreleased = 0;
        }

        ngx_shmtx_unlock(&shpool->mutex);

        for (k = 0; k < n; k++) {
            if (ngx_http_llm_router_fleet_settle(lmcf, u[k].budget,
                                                 &u[k].key, u[k].period,
                                                 u[k].release, u[k].cost)
                != NGX_OK)
            {
                /* down again: the rest waits, kept, for the next time */

                for (k++; k < n; k++) {
                    ngx_http_llm_router_unsynced(lmcf, u[k].budget,
                                                 &u[k].key, u[k].period,
                                                 u[k].release, u[k].cost);
                }

                return;
            }
        }

    } while (n == NGX_HTTP_LLM_ROUTER_RECONCILE);
}


/*
 * The fleet's spend of the keys of the current periods that the zone
 * holds, for the status page: read once a second (see redis.c).
 */

void
ngx_http_llm_router_spend_refresh(ngx_http_llm_router_redis_t *redis)
{
    u_char                             *p, *names;
    ngx_uint_t                          i, n;
    llmr_str_t                          argv[3 + LLMR_RESP_ITEMS];
    ngx_slab_pool_t                    *shpool;
    ngx_rbtree_node_t                  *node, *root, *sentinel;
    ngx_http_llm_router_shm_t          *shm;
    ngx_http_llm_router_spend_t        *s;
    ngx_http_llm_router_budget_t       *b;
    ngx_http_llm_router_redis_cmd_t    *cmd;
    ngx_http_llm_router_fleet_spend_t  *f;
    ngx_http_llm_router_main_conf_t    *lmcf;

    lmcf = ngx_http_cycle_get_module_main_conf(ngx_cycle,
                                               ngx_http_llm_router_module);
    shm = lmcf->shm;
    shpool = (ngx_slab_pool_t *) lmcf->zone->shm.addr;
    b = lmcf->budgets.elts;

    f = ngx_alloc(LLMR_RESP_ITEMS * sizeof(ngx_http_llm_router_fleet_spend_t),
                  ngx_cycle->log);
    names = ngx_alloc(LLMR_RESP_ITEMS
                      * (sizeof("llmr:budget:::")
                         + NGX_HTTP_LLM_ROUTER_LABEL_LEN
                         + NGX_HTTP_LLM_ROUTER_KEY_LEN + NGX_INT64_LEN),
                      ngx_cycle->log);

    if (f == NULL || names == NULL) {
        goto done;
    }

    n = 0;

    ngx_shmtx_lock(&shpool->mutex);

    root = shm->spends.root;
    sentinel = shm->spends.sentinel;

    for (node = (root == sentinel) ? NULL : ngx_rbtree_min(root, sentinel);
         node && n < LLMR_RESP_ITEMS;
         node = ngx_rbtree_next(&shm->spends, node))
    {
        s = (ngx_http_llm_router_spend_t *) node;

        for (i = 0; i < lmcf->budgets.nelts; i++) {
            if (b[i].hash == s->budget && b[i].redis == redis
                && s->period == (ngx_uint_t) (ngx_time() / b[i].period))
            {
                f[n].budget = &b[i];
                f[n].period = s->period;
                f[n].key.data = f[n].data;
                f[n].key.len = s->len;
                ngx_memcpy(f[n].data, s->key, s->len);
                n++;
                break;
            }
        }
    }

    ngx_shmtx_unlock(&shpool->mutex);

    if (n == 0) {
        goto done;
    }

    argv[0].data = (u_char *) "EVAL";
    argv[0].len = 4;
    argv[1].data = ngx_http_llm_router_spent_script.data;
    argv[1].len = ngx_http_llm_router_spent_script.len;
    argv[2].data = names;
    argv[2].len = ngx_sprintf(names, "%ui", n) - names;

    p = names + argv[2].len;

    for (i = 0; i < n; i++) {
        argv[3 + i].data = p;
        argv[3 + i].len = ngx_http_llm_router_fleet_key(p, f[i].budget,
                                                        &f[i].key,
                                                        f[i].period);
        p += argv[3 + i].len;
    }

    /* the keys go with the command, to know the reply's numbers by */

    cmd = ngx_http_llm_router_redis_command(redis, 3 + n, argv,
                       NGX_ALIGNMENT + sizeof(ngx_uint_t)
                       + n * sizeof(ngx_http_llm_router_fleet_spend_t));
    if (cmd == NULL) {
        goto done;
    }

    cmd->handler = ngx_http_llm_router_spend_read;
    cmd->data = ngx_align_ptr(cmd->last, NGX_ALIGNMENT);

    *(ngx_uint_t *) cmd->data = n;
    ngx_memcpy((ngx_uint_t *) cmd->data + 1, f,
               n * sizeof(ngx_http_llm_router_fleet_spend_t));

    (void) ngx_http_llm_router_redis_send(cmd);

done:

    if (f) {
        ngx_free(f);
    }

    if (names) {
        ngx_free(names);
    }
}


static void
ngx_http_llm_router_spend_read(ngx_http_llm_router_redis_cmd_t *cmd,
    llmr_resp_t *reply)
{
    ngx_uint_t                          i, n, hash;
    ngx_slab_pool_t                    *shpool;
    ngx_http_llm_router_spend_t        *s;
    ngx_http_llm_router_fleet_spend_t  *f;
    ngx_http_llm_router_main_conf_t    *lmcf;

    n = *(ngx_uint_t *) cmd->data;
    f = (ngx_http_llm_router_fleet_spend_t *) ((ngx_uint_t *) cmd->data + 1);

    if (reply == NULL || reply->type != LLMR_RESP_ARRAY
        || reply->nitems != n)
    {
        return;
    }

    lmcf = ngx_http_cycle_get_module_main_conf(ngx_cycle,
                                               ngx_http_llm_router_module);
    shpool = (ngx_slab_pool_t *) lmcf->zone->shm.addr;

    ngx_shmtx_lock(&shpool->mutex);

    for (i = 0; i < n; i++) {
        /* copied with the command: its key is its own */
        f[i].key.data = f[i].data;

        hash = ngx_crc32_short(f[i].key.data, f[i].key.len)
               ^ f[i].budget->hash;

        s = ngx_http_llm_router_spend_find(lmcf->shm, f[i].budget,
                                           &f[i].key, hash);

        if (s && s->period == f[i].period && reply->items[i] >= 0) {
            s->fleet_spent = (uint64_t) reply->items[i];
        }
    }

    ngx_shmtx_unlock(&shpool->mutex);
}


/* "llmr:budget:NAME:KEY:PERIOD" */

static size_t
ngx_http_llm_router_fleet_key(u_char *p, ngx_http_llm_router_budget_t *b,
    ngx_str_t *key, ngx_uint_t period)
{
    u_char  *start;

    start = p;

    p = ngx_cpymem(p, "llmr:budget:", sizeof("llmr:budget:") - 1);
    p = ngx_cpymem(p, b->name.data, b->name.len);
    *p++ = ':';
    p = ngx_cpymem(p, key->data, key->len);
    p = ngx_sprintf(p, ":%ui", period);

    return p - start;
}


/* an amount for Redis, whose integers have 63 bits */

static u_char *
ngx_http_llm_router_pico(u_char *p, uint64_t v)
{
    return ngx_sprintf(p, "%uL",
                       ngx_min(v, NGX_HTTP_LLM_ROUTER_REDIS_PICO_MAX));
}


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

        if (s == NULL) {
            /* Redis holds it alone */
            continue;
        }

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

        if (s->inflight == 0 && s->spent == 0 && s->reserved == 0
            && s->unsynced == 0 && s->unreleased == 0)
        {
            ngx_rbtree_delete(&shm->spends, &s->node);
            ngx_slab_free_locked(shpool, s);
        }
    }

    ngx_shmtx_unlock(&shpool->mutex);

    /*
     * Redis gets the cost, and gives back what it reserved, if it did:
     * out of the lock, for a settlement not sent is kept in the zone
     */

    for (i = 0; i < *n; i++) {
        res = &reservations[i];

        if (res->budget->redis) {
            (void) ngx_http_llm_router_fleet_settle(lmcf, res->budget,
                                                    &res->key, res->period,
                                                    res->fleet_reserved,
                                                    cost);
        }
    }

    *n = 0;
}


/*
 * One call of model m more, on the keys the request reserved: NGX_OK, or
 * NGX_DECLINED where it does not fit, and nothing is reserved.
 */

ngx_int_t
ngx_http_llm_router_reserve_call(ngx_http_request_t *r,
    ngx_http_llm_router_ctx_t *ctx, ngx_http_llm_router_model_t *m,
    ngx_http_llm_router_reservation_t *reservations, ngx_uint_t *n,
    ngx_pool_t *pool)
{
    uint64_t                            worst;
    ngx_uint_t                          i;
    ngx_slab_pool_t                    *shpool;
    ngx_http_llm_router_spend_t        *s;
    ngx_http_llm_router_main_conf_t    *lmcf;
    ngx_http_llm_router_reservation_t  *res, *call;

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

        if (s == NULL || s->period != res->period
            || ngx_http_llm_router_pico_add(
                   ngx_http_llm_router_pico_add(s->spent, s->reserved),
                   worst)
               > res->budget->limit)
        {
            break;
        }

        /*
         * in the zone alone: Redis gets the call's cost when it ends, and
         * its key must outlive the request
         */

        call = &reservations[i];
        *call = *res;
        call->reserved = worst;
        call->fleet_reserved = 0;
        call->key.data = ngx_pstrdup(pool, &res->key);

        if (call->key.data == NULL) {
            break;
        }

        s->reserved += worst;
        s->inflight++;
    }

    ngx_shmtx_unlock(&shpool->mutex);

    *n = i;

    if (*n < ctx->nreservations) {
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
ngx_http_llm_router_budget_status(u_char *p, ngx_http_request_t *r,
    ngx_uint_t json)
{
    ngx_uint_t                         i, k, n, *count, period;
    ngx_slab_pool_t                   *shpool;
    ngx_rbtree_node_t                 *node, *root, *sentinel;
    ngx_http_llm_router_spend_t       *s, **top, **t;
    ngx_http_llm_router_budget_t      *b;
    ngx_http_llm_router_main_conf_t   *lmcf;

    lmcf = ngx_http_get_module_main_conf(r, ngx_http_llm_router_module);
    b = lmcf->budgets.elts;

    top = ngx_palloc(r->pool, lmcf->budgets.nelts * NGX_HTTP_LLM_ROUTER_BUSIEST
                              * sizeof(ngx_http_llm_router_spend_t *));
    count = ngx_pcalloc(r->pool, lmcf->budgets.nelts * sizeof(ngx_uint_t));

    if (top == NULL || count == NULL) {
        return p;
    }

    shpool = (ngx_slab_pool_t *) lmcf->zone->shm.addr;
    root = ((ngx_http_llm_router_shm_t *) lmcf->shm)->spends.root;
    sentinel = ((ngx_http_llm_router_shm_t *) lmcf->shm)->spends.sentinel;

    ngx_shmtx_lock(&shpool->mutex);

    /* the busiest keys of each budget, largest first */

    for (i = 0; i < lmcf->budgets.nelts; i++) {
        period = ngx_time() / b[i].period;
        t = &top[i * NGX_HTTP_LLM_ROUTER_BUSIEST];
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

            for (k = n; k > 0 && t[k - 1]->spent < s->spent; k--) {
                if (k < NGX_HTTP_LLM_ROUTER_BUSIEST) {
                    t[k] = t[k - 1];
                }
            }

            if (k < NGX_HTTP_LLM_ROUTER_BUSIEST) {
                t[k] = s;
                n = ngx_min(n + 1, NGX_HTTP_LLM_ROUTER_BUSIEST);
            }
        }

        count[i] = n;
    }

    p = json ? ngx_http_llm_router_budget_json(p, lmcf, top, count)
             : ngx_http_llm_router_budget_prometheus(p, lmcf, top, count);

    ngx_shmtx_unlock(&shpool->mutex);

    return p;
}


static u_char *
ngx_http_llm_router_budget_prometheus(u_char *p,
    ngx_http_llm_router_main_conf_t *lmcf, ngx_http_llm_router_spend_t **top,
    ngx_uint_t *count)
{
    u_char                         buf[sizeof("redis:")
                                       + NGX_HTTP_LLM_ROUTER_LABEL_LEN];
    u_char                        *store;
    ngx_uint_t                     i;
    ngx_http_llm_router_budget_t  *b;

    b = lmcf->budgets.elts;

    p = ngx_sprintf(p, "# HELP llm_router_budget_limit_usd The limit of a "
                    "budget per period.\n"
                    "# TYPE llm_router_budget_limit_usd gauge\n");

    for (i = 0; i < lmcf->budgets.nelts; i++) {
        p = ngx_cpymem(p, "llm_router_budget_limit_usd{budget=\"",
                       sizeof("llm_router_budget_limit_usd{budget=\"") - 1);
        p = ngx_http_llm_router_prom_escape(p, b[i].name.data, b[i].name.len);
        p = ngx_cpymem(p, "\"} ", 3);
        p += llmr_usd_format(p, b[i].limit);
        *p++ = '\n';
    }

    p = ngx_sprintf(p, "# HELP llm_router_budget_store Where a budget "
                    "keeps its spend: zone, or redis:NAME.\n"
                    "# TYPE llm_router_budget_store gauge\n");

    for (i = 0; i < lmcf->budgets.nelts; i++) {
        p = ngx_cpymem(p, "llm_router_budget_store{budget=\"",
                       sizeof("llm_router_budget_store{budget=\"") - 1);
        p = ngx_http_llm_router_prom_escape(p, b[i].name.data, b[i].name.len);
        p = ngx_cpymem(p, "\",store=\"", sizeof("\",store=\"") - 1);

        store = ngx_http_llm_router_store(buf, &b[i]);
        p = ngx_http_llm_router_prom_escape(p, buf, store - buf);

        p = ngx_cpymem(p, "\"} 1\n", sizeof("\"} 1\n") - 1);
    }

    p = ngx_sprintf(p, "# HELP llm_router_budget_spent_usd Spent in the "
                    "current period by this server, for the %d busiest "
                    "keys of each budget.\n"
                    "# TYPE llm_router_budget_spent_usd gauge\n",
                    NGX_HTTP_LLM_ROUTER_BUSIEST);

    p = ngx_http_llm_router_spent_lines(p, lmcf, top, count,
                                        "llm_router_budget_spent_usd", 0);

    p = ngx_sprintf(p, "# HELP llm_router_budget_fleet_spent_usd Spent in "
                    "the current period by all servers, as read from "
                    "Redis.\n"
                    "# TYPE llm_router_budget_fleet_spent_usd gauge\n");

    return ngx_http_llm_router_spent_lines(p, lmcf, top, count,
                                       "llm_router_budget_fleet_spent_usd", 1);
}


/*
 * "budgets": {"NAME": {"store": "redis:r", "limit_usd": L,
 * "spent_usd": {"KEY": S, ...}, "fleet_spent_usd": {"KEY": F, ...}}}
 */

static u_char *
ngx_http_llm_router_budget_json(u_char *p,
    ngx_http_llm_router_main_conf_t *lmcf, ngx_http_llm_router_spend_t **top,
    ngx_uint_t *count)
{
    u_char                         buf[sizeof("redis:")
                                       + NGX_HTTP_LLM_ROUTER_LABEL_LEN];
    u_char                        *store;
    ngx_uint_t                     i, k, fleet;
    ngx_http_llm_router_spend_t   *s;
    ngx_http_llm_router_budget_t  *b;

    b = lmcf->budgets.elts;

    p = ngx_cpymem(p, ",\"budgets\":{", sizeof(",\"budgets\":{") - 1);

    for (i = 0; i < lmcf->budgets.nelts; i++) {
        if (i) {
            *p++ = ',';
        }

        p = ngx_http_llm_router_json_string(p, b[i].name.data, b[i].name.len);
        p = ngx_cpymem(p, ":{\"store\":", sizeof(":{\"store\":") - 1);

        store = ngx_http_llm_router_store(buf, &b[i]);
        p = ngx_http_llm_router_json_string(p, buf, store - buf);

        p = ngx_cpymem(p, ",\"limit_usd\":", sizeof(",\"limit_usd\":") - 1);
        p += llmr_usd_format(p, b[i].limit);

        for (fleet = 0; fleet < (b[i].redis ? 2 : 1); fleet++) {
            p = ngx_sprintf(p, ",\"%s\":{",
                            fleet ? "fleet_spent_usd" : "spent_usd");

            for (k = 0; k < count[i]; k++) {
                s = top[i * NGX_HTTP_LLM_ROUTER_BUSIEST + k];

                if (k) {
                    *p++ = ',';
                }

                p = ngx_http_llm_router_json_string(p, s->key, s->len);
                *p++ = ':';
                p += llmr_usd_format(p, fleet ? s->fleet_spent : s->spent);
            }

            *p++ = '}';
        }

        *p++ = '}';
    }

    *p++ = '}';

    return p;
}


/* "zone", or "redis:NAME", to be escaped */

static u_char *
ngx_http_llm_router_store(u_char *p, ngx_http_llm_router_budget_t *b)
{
    if (b->redis == NULL) {
        return ngx_cpymem(p, "zone", sizeof("zone") - 1);
    }

    p = ngx_cpymem(p, "redis:", sizeof("redis:") - 1);

    return ngx_cpymem(p, b->redis->name.data, b->redis->name.len);
}


/* a line a key: this server's spend, or that of the fleet */

static u_char *
ngx_http_llm_router_spent_lines(u_char *p,
    ngx_http_llm_router_main_conf_t *lmcf, ngx_http_llm_router_spend_t **top,
    ngx_uint_t *count, const char *name, ngx_uint_t fleet)
{
    ngx_uint_t                     i, k;
    ngx_http_llm_router_spend_t   *s;
    ngx_http_llm_router_budget_t  *b;

    b = lmcf->budgets.elts;

    for (i = 0; i < lmcf->budgets.nelts; i++) {

        if (fleet && b[i].redis == NULL) {
            continue;
        }

        for (k = 0; k < count[i]; k++) {
            s = top[i * NGX_HTTP_LLM_ROUTER_BUSIEST + k];

            p = ngx_sprintf(p, "%s{budget=\"", name);
            p = ngx_http_llm_router_prom_escape(p, b[i].name.data,
                                                b[i].name.len);
            p = ngx_cpymem(p, "\",key=\"", 7);
            p = ngx_http_llm_router_prom_escape(p, s->key, s->len);
            p = ngx_cpymem(p, "\"} ", 3);
            p += llmr_usd_format(p, fleet ? s->fleet_spent : s->spent);
            *p++ = '\n';
        }
    }

    return p;
}
