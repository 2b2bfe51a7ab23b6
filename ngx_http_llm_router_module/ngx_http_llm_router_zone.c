
/*
 * Copyright (C) the ngx_http_llm_router_module authors
 *
 * The shared memory zone: what every worker must know of the models,
 * the cooldown of a model that answered 429, and the metrics, counted in
 * the log phase.  Entries are found by the hash of their names, so that
 * they outlive a reload that reorders the models.
 */


#include "ngx_http_llm_router_module.h"


static ngx_int_t ngx_http_llm_router_init_zone(ngx_shm_zone_t *shm_zone,
    void *data);
static ngx_http_llm_router_shm_model_t *ngx_http_llm_router_shm_model(
    ngx_http_llm_router_main_conf_t *lmcf, ngx_http_llm_router_model_t *m);
static void ngx_http_llm_router_label(ngx_http_llm_router_label_t *l,
    ngx_str_t *s);
static ngx_uint_t ngx_http_llm_router_same(ngx_http_llm_router_label_t *l,
    ngx_str_t *s);
static void ngx_http_llm_router_observe(ngx_atomic_t *buckets,
    ngx_msec_t *bounds, ngx_msec_t value);
static void ngx_http_llm_router_rate_add(ngx_http_request_t *r,
    ngx_http_llm_router_rate_t *rate, ngx_uint_t which, ngx_str_t *model,
    ngx_uint_t hit);
static void ngx_http_llm_router_count_triage(ngx_http_request_t *r,
    ngx_http_llm_router_ctx_t *ctx);
static void ngx_http_llm_router_cooldown_publish(
    ngx_http_llm_router_main_conf_t *lmcf, ngx_http_llm_router_model_t *m,
    ngx_msec_t time);
static void ngx_http_llm_router_cooldown_read(
    ngx_http_llm_router_redis_cmd_t *cmd, llmr_resp_t *reply);


ngx_str_t  ngx_http_llm_router_rate_names[] = {
    ngx_string("escalation_rate"),
    ngx_string("fallback_rate"),
    ngx_string("error_rate")
};


/* upper bounds, in milliseconds; the last bucket is +Inf */

ngx_msec_t  ngx_http_llm_router_latency_buckets[] = {
    100, 250, 500, 1000, 2500, 5000, 10000, 30000, 60000, 120000, 300000
};

/* in microseconds */

ngx_msec_t  ngx_http_llm_router_decision_buckets[] = {
    10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000, 100000
};


char *
ngx_http_llm_router_zone(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_llm_router_main_conf_t *lmcf = conf;

    size_t      min;
    ssize_t     size;
    ngx_str_t  *value;

    if (lmcf->zone) {
        return "is duplicate";
    }

    value = cf->args->elts;

    size = ngx_parse_size(&value[2]);
    min = ngx_align(sizeof(ngx_http_llm_router_shm_t), ngx_pagesize)
          + 8 * ngx_pagesize;

    if (size == NGX_ERROR || size < (ssize_t) min) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "invalid zone size \"%V\" in \"llm_router_zone\", "
                           "at least %uz expected", &value[2], min);
        return NGX_CONF_ERROR;
    }

    lmcf->zone = ngx_shared_memory_add(cf, &value[1], size,
                                       &ngx_http_llm_router_module);
    if (lmcf->zone == NULL) {
        return NGX_CONF_ERROR;
    }

    if (lmcf->zone->data) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "duplicate zone \"%V\"", &value[1]);
        return NGX_CONF_ERROR;
    }

    lmcf->zone->init = ngx_http_llm_router_init_zone;
    lmcf->zone->data = lmcf;

    return NGX_CONF_OK;
}


/* llm_router_alert escalation_rate>20% [window=5m] [min=20]; */

char *
ngx_http_llm_router_alert(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_llm_router_main_conf_t *lmcf = conf;

    u_char                       *p, *last;
    ngx_int_t                     n;
    ngx_str_t                    *value, s;
    ngx_uint_t                    i, which;
    ngx_http_llm_router_alert_t  *al;

    value = cf->args->elts;

    p = (u_char *) ngx_strlchr(value[1].data, value[1].data + value[1].len,
                               '>');
    last = value[1].data + value[1].len;

    for (which = 0; which < NGX_HTTP_LLM_ROUTER_RATES; which++) {
        if (p && (size_t) (p - value[1].data)
                 == ngx_http_llm_router_rate_names[which].len
            && ngx_strncmp(value[1].data,
                           ngx_http_llm_router_rate_names[which].data,
                           p - value[1].data)
               == 0)
        {
            break;
        }
    }

    if (which == NGX_HTTP_LLM_ROUTER_RATES || last - p < 3
        || last[-1] != '%')
    {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "invalid alert \"%V\": escalation_rate>N%%, "
                           "fallback_rate>N%% or error_rate>N%% expected",
                           &value[1]);
        return NGX_CONF_ERROR;
    }

    al = &lmcf->alerts[which];

    if (al->set) {
        return "is duplicate";
    }

    /* a percentage with at most one decimal: per mille */

    n = ngx_atofp(p + 1, last - 1 - (p + 1), 1);

    if (n == NGX_ERROR || n > 1000) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "invalid percentage in alert \"%V\"", &value[1]);
        return NGX_CONF_ERROR;
    }

    al->threshold = n;
    al->window = 300000;
    al->min = 20;
    al->set = 1;

    for (i = 2; i < cf->args->nelts; i++) {

        if (ngx_strncmp(value[i].data, "window=", 7) == 0) {
            s.data = value[i].data + 7;
            s.len = value[i].len - 7;

            al->window = ngx_parse_time(&s, 0);

            if (al->window == (ngx_msec_t) NGX_ERROR
                || al->window < NGX_HTTP_LLM_ROUTER_SLOTS)
            {
                ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                                   "invalid window \"%V\" in "
                                   "\"llm_router_alert\"", &value[i]);
                return NGX_CONF_ERROR;
            }

            continue;
        }

        if (ngx_strncmp(value[i].data, "min=", 4) == 0) {
            n = ngx_atoi(value[i].data + 4, value[i].len - 4);

            if (n == NGX_ERROR || n == 0) {
                ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                                   "invalid min \"%V\" in "
                                   "\"llm_router_alert\"", &value[i]);
                return NGX_CONF_ERROR;
            }

            al->min = n;
            continue;
        }

        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "invalid parameter \"%V\" in "
                           "\"llm_router_alert\"", &value[i]);
        return NGX_CONF_ERROR;
    }

    return NGX_CONF_OK;
}


static ngx_int_t
ngx_http_llm_router_init_zone(ngx_shm_zone_t *shm_zone, void *data)
{
    ngx_http_llm_router_main_conf_t  *olmcf = data;

    ngx_slab_pool_t                  *shpool;
    ngx_http_llm_router_shm_t        *shm;
    ngx_http_llm_router_main_conf_t  *lmcf;

    lmcf = shm_zone->data;

    if (olmcf) {
        /* a reload with the same zone: what it holds stays */
        lmcf->shm = olmcf->shm;
        return NGX_OK;
    }

    shpool = (ngx_slab_pool_t *) shm_zone->shm.addr;

    if (shm_zone->shm.exists) {
        lmcf->shm = shpool->data;
        return NGX_OK;
    }

    shm = ngx_slab_calloc(shpool, sizeof(ngx_http_llm_router_shm_t));
    if (shm == NULL) {
        return NGX_ERROR;
    }

    ngx_rbtree_init(&shm->spends, &shm->sentinel, ngx_rbtree_insert_value);
    ngx_rbtree_init(&shm->verdicts, &shm->verdict_sentinel,
                    ngx_rbtree_insert_value);
    ngx_queue_init(&shm->verdict_lru);

    lmcf->shm = shm;
    shpool->data = shm;

    /* a full zone is logged by the budget that could not take a key */
    shpool->log_nomem = 0;

    return NGX_OK;
}


/* the model's entry, taken on first use; NULL without a zone or room */

static ngx_http_llm_router_shm_model_t *
ngx_http_llm_router_shm_model(ngx_http_llm_router_main_conf_t *lmcf,
    ngx_http_llm_router_model_t *m)
{
    ngx_uint_t                        i, k;
    ngx_http_llm_router_shm_t        *shm;
    ngx_http_llm_router_shm_model_t  *e;

    shm = lmcf->shm;

    if (shm == NULL) {
        return NULL;
    }

    for (i = 0; i < NGX_HTTP_LLM_ROUTER_ZONE_MODELS; i++) {
        k = (m->hash + i) % NGX_HTTP_LLM_ROUTER_ZONE_MODELS;
        e = &shm->models[k];

        if (e->hash == 0 && ngx_atomic_cmp_set(&e->hash, 0, m->hash)) {
            /* this worker took it: the name, then readers may see it */
            ngx_http_llm_router_label(&e->name, &m->name);
            ngx_memory_barrier();
            e->ready = 1;
            return e;
        }

        if (e->hash == m->hash
            && (!e->ready || ngx_http_llm_router_same(&e->name, &m->name)))
        {
            return e;
        }
    }

    return NULL;
}


/*
 * Whether a ready entry whose hash matches holds this name: two names
 * may share a hash.  An entry still being written by another worker is
 * taken to be the same by the callers: its hash matched.
 */

static ngx_uint_t
ngx_http_llm_router_same(ngx_http_llm_router_label_t *l, ngx_str_t *s)
{
    /* the name is read after the flag that says it is written */
    ngx_memory_barrier();

    return l->len == s->len && ngx_memcmp(l->data, s->data, s->len) == 0;
}


static void
ngx_http_llm_router_label(ngx_http_llm_router_label_t *l, ngx_str_t *s)
{
    l->len = (u_char) ngx_min(s->len, NGX_HTTP_LLM_ROUTER_LABEL_LEN);
    ngx_memcpy(l->data, s->data, l->len);
}


/* a labelled counter, taken on first use, one more */

void
ngx_http_llm_router_series(ngx_http_llm_router_shm_t *shm, ngx_uint_t kind,
    ngx_str_t *a, ngx_str_t *b, ngx_str_t *c)
{
    uint32_t                           hash;
    ngx_uint_t                         i, k;
    ngx_http_llm_router_shm_series_t  *e;

    ngx_crc32_init(hash);
    ngx_crc32_update(&hash, (u_char *) &kind, sizeof(kind));
    ngx_crc32_update(&hash, a->data, a->len);
    ngx_crc32_update(&hash, (u_char *) "\0", 1);
    ngx_crc32_update(&hash, b->data, b->len);
    ngx_crc32_update(&hash, (u_char *) "\0", 1);

    if (c) {
        ngx_crc32_update(&hash, c->data, c->len);
    }

    ngx_crc32_final(hash);
    hash |= 1;

    for (i = 0; i < NGX_HTTP_LLM_ROUTER_ZONE_SERIES; i++) {
        k = (hash + i) % NGX_HTTP_LLM_ROUTER_ZONE_SERIES;
        e = &shm->series[k];

        if (e->hash == 0 && ngx_atomic_cmp_set(&e->hash, 0, hash)) {
            e->kind = kind;
            ngx_http_llm_router_label(&e->label[0], a);
            ngx_http_llm_router_label(&e->label[1], b);

            if (c) {
                ngx_http_llm_router_label(&e->label[2], c);
            }

            ngx_memory_barrier();
            e->ready = 1;
        }

        if (e->hash == hash
            && (!e->ready
                || (ngx_http_llm_router_same(&e->label[0], a)
                    && ngx_http_llm_router_same(&e->label[1], b)
                    && (c == NULL
                        || ngx_http_llm_router_same(&e->label[2], c))
                    && e->kind == kind)))
        {
            (void) ngx_atomic_fetch_add(&e->value, 1);
            return;
        }
    }
}


static void
ngx_http_llm_router_observe(ngx_atomic_t *buckets, ngx_msec_t *bounds,
    ngx_msec_t value)
{
    ngx_uint_t  i;

    for (i = 0; i < NGX_HTTP_LLM_ROUTER_BUCKETS - 1; i++) {
        if (value <= bounds[i]) {
            break;
        }
    }

    (void) ngx_atomic_fetch_add(&buckets[i], 1);
}


/*
 * A rate over the alert's window (five minutes without an alert): the
 * current slot is taken over by the first worker that sees it is old;
 * a count lost in that race does not matter to a rate.
 */

static void
ngx_http_llm_router_rate_add(ngx_http_request_t *r,
    ngx_http_llm_router_rate_t *rate, ngx_uint_t which, ngx_str_t *model,
    ngx_uint_t hit)
{
    u_char                            name[NGX_HTTP_LLM_ROUTER_LABEL_LEN
                                           + 32];
    ngx_str_t                         what;
    ngx_uint_t                        v, total, id, old;
    ngx_msec_t                        window;
    ngx_http_llm_router_slot_t       *s;
    ngx_http_llm_router_alert_t      *al;
    ngx_http_llm_router_main_conf_t  *lmcf;

    lmcf = ngx_http_get_module_main_conf(r, ngx_http_llm_router_module);
    al = &lmcf->alerts[which];

    window = al->set ? al->window : 300000;
    id = ngx_current_msec / (window / NGX_HTTP_LLM_ROUTER_SLOTS) + 1;

    s = &rate->slot[id % NGX_HTTP_LLM_ROUTER_SLOTS];
    old = s->id;

    if (old != id && ngx_atomic_cmp_set(&s->id, old, id)) {
        s->total = 0;
        s->hits = 0;
    }

    (void) ngx_atomic_fetch_add(&s->total, 1);
    (void) ngx_atomic_fetch_add(&s->hits, hit ? 1 : 0);

    if (!al->set) {
        return;
    }

    /* one line when the rate crosses the threshold, one when it is back */

    v = ngx_http_llm_router_rate(rate, window, &total);

    if (total < al->min) {
        return;
    }

    what = ngx_http_llm_router_rate_names[which];

    if (model) {
        what.data = name;
        what.len = ngx_snprintf(name, sizeof(name), "%V of model \"%V\"",
                                &ngx_http_llm_router_rate_names[which], model)
                   - name;
    }

    if (v > al->threshold && ngx_atomic_cmp_set(&rate->firing, 0, 1)) {
        ngx_log_error(NGX_LOG_WARN, r->connection->log, 0,
                      "llm_router alert: %V is %ui.%ui%% over the last "
                      "%M ms (%ui requests), above %ui.%ui%%", &what,
                      v / 10, v % 10, window, total,
                      al->threshold / 10, al->threshold % 10);

    } else if (v <= al->threshold && ngx_atomic_cmp_set(&rate->firing, 1, 0))
    {
        ngx_log_error(NGX_LOG_WARN, r->connection->log, 0,
                      "llm_router alert cleared: %V is %ui.%ui%% over the "
                      "last %M ms (%ui requests)", &what, v / 10, v % 10,
                      window, total);
    }
}


/* per mille of the slots inside the window, and how many they count */


/*
 * The triage call: its result (a verdict, a cached one, or why it
 * failed: words of the module, never of the model), and its tokens and
 * cost under the triage model.
 */

static void
ngx_http_llm_router_count_triage(ngx_http_request_t *r,
    ngx_http_llm_router_ctx_t *ctx)
{
    ngx_str_t                         result;
    ngx_http_llm_router_model_t      *model;
    ngx_http_llm_router_loc_conf_t   *llcf;
    ngx_http_llm_router_main_conf_t  *lmcf;

    if (ctx->request.f.triage == LLMR_TRIAGE_UNKNOWN) {
        return;
    }

    lmcf = ngx_http_get_module_main_conf(r, ngx_http_llm_router_module);
    llcf = ngx_http_get_module_loc_conf(r, ngx_http_llm_router_module);
    model = llcf->triage->model;

    if (ctx->triage_error) {
        result.data = (u_char *) ctx->triage_error;
        result.len = ngx_strlen(ctx->triage_error);

    } else if (ctx->triage_cached) {
        ngx_str_set(&result, "cached");

    } else {
        ngx_str_set(&result, "verdict");
    }

    ngx_http_llm_router_series(lmcf->shm, NGX_HTTP_LLM_ROUTER_SERIES_TRIAGE,
                               &model->name, &result, NULL);

    ngx_http_llm_router_bill(lmcf, model, &ctx->triage_tokens,
                             ctx->triage_cost);
}


/* a call's tokens and cost, under its model */

void
ngx_http_llm_router_bill(ngx_http_llm_router_main_conf_t *lmcf,
    ngx_http_llm_router_model_t *model, llmr_tokens_t *tokens, uint64_t cost)
{
    ngx_http_llm_router_shm_model_t  *e;

    if (tokens->prompt == 0 && tokens->completion == 0 && cost == 0) {
        return;
    }

    e = ngx_http_llm_router_shm_model(lmcf, model);

    if (e) {
        (void) ngx_atomic_fetch_add(&e->prompt, tokens->prompt);
        (void) ngx_atomic_fetch_add(&e->completion, tokens->completion);
        (void) ngx_atomic_fetch_add(&e->cost, cost);
    }
}

ngx_uint_t
ngx_http_llm_router_rate(ngx_http_llm_router_rate_t *rate, ngx_msec_t window,
    ngx_uint_t *total)
{
    ngx_uint_t                   i, id, hits, n;
    ngx_http_llm_router_slot_t  *s;

    id = ngx_current_msec / (window / NGX_HTTP_LLM_ROUTER_SLOTS) + 1;
    hits = 0;
    n = 0;

    for (i = 0; i < NGX_HTTP_LLM_ROUTER_SLOTS; i++) {
        s = &rate->slot[i];

        if (s->id + NGX_HTTP_LLM_ROUTER_SLOTS > id && s->id <= id) {
            n += s->total;
            hits += s->hits;
        }
    }

    *total = n;

    return n ? hits * 1000 / n : 0;
}


/*
 * The log phase: the request, its tries and the answer counted, with
 * atomics only.
 */

ngx_int_t
ngx_http_llm_router_count(ngx_http_request_t *r)
{
    u_char                            buf[NGX_INT_T_LEN];
    ngx_str_t                         none, status;
    ngx_msec_t                        ms;
    ngx_uint_t                        i, code, fallback;
    ngx_http_llm_router_model_t      *m;
    ngx_time_t                       *tp;
    ngx_http_llm_router_ctx_t        *ctx;
    ngx_http_llm_router_shm_t        *shm;
    ngx_http_llm_router_attempt_t    *at;
    ngx_http_llm_router_account_t     a;
    ngx_http_llm_router_shm_model_t  *e;
    ngx_http_llm_router_loc_conf_t   *llcf;
    ngx_http_llm_router_main_conf_t  *lmcf;

    lmcf = ngx_http_get_module_main_conf(r, ngx_http_llm_router_module);
    llcf = ngx_http_get_module_loc_conf(r, ngx_http_llm_router_module);
    ctx = ngx_http_get_module_ctx(r, ngx_http_llm_router_module);

    shm = lmcf->shm;

    /* an explained request was decided, but never sent nor billed */

    if (shm == NULL || ctx == NULL || !ctx->routed || r != r->main
        || llcf->explain)
    {
        return NGX_OK;
    }

    ngx_http_llm_router_series(shm, NGX_HTTP_LLM_ROUTER_SERIES_RULE,
                               &ctx->model->name, &ctx->rule, NULL);

    ngx_http_llm_router_observe(shm->decision,
                                ngx_http_llm_router_decision_buckets,
                                ctx->decision_us);
    (void) ngx_atomic_fetch_add(&shm->decision_us, ctx->decision_us);

    ngx_http_llm_router_account(r, ctx, &a);

    e = ngx_http_llm_router_shm_model(lmcf, ctx->model);

    if (e) {
        (void) ngx_atomic_fetch_add(&e->prompt, a.tokens.prompt);
        (void) ngx_atomic_fetch_add(&e->completion, a.tokens.completion);
        (void) ngx_atomic_fetch_add(&e->cost, a.cost);

        tp = ngx_timeofday();
        ms = (ngx_msec_t) ((tp->sec - r->start_sec) * 1000
                           + (tp->msec - r->start_msec));

        ngx_http_llm_router_observe(e->latency,
                                    ngx_http_llm_router_latency_buckets, ms);
        (void) ngx_atomic_fetch_add(&e->latency_ms, ms);

        if (r->header_sent) {
            ngx_http_llm_router_observe(e->ttfb,
                                        ngx_http_llm_router_latency_buckets,
                                        ctx->ttfb);
            (void) ngx_atomic_fetch_add(&e->ttfb_ms, ctx->ttfb);
        }
    }

    /* the tries: what failed, what was escalated, and what they cost */

    ngx_str_null(&none);
    at = ctx->attempts;

    for (i = 0; i < ctx->nattempts; i++) {

        if (at[i].status >= NGX_HTTP_BAD_REQUEST) {
            status.data = buf;
            status.len = ngx_sprintf(buf, "%ui", at[i].status) - buf;

            ngx_http_llm_router_series(shm, NGX_HTTP_LLM_ROUTER_SERIES_ERROR,
                                       &at[i].model->name, &status, NULL);
        }

        if (i + 1 < ctx->nattempts && at[i].reason) {
            status.data = (u_char *) at[i].reason;
            status.len = ngx_strlen(at[i].reason);

            ngx_http_llm_router_series(shm,
                                       at[i].failed
                                       ? NGX_HTTP_LLM_ROUTER_SERIES_FALLBACK
                                       : NGX_HTTP_LLM_ROUTER_SERIES_ESCALATION,
                                       &at[i].model->name,
                                       &at[i + 1].model->name, &status);
        }

        /* an escalated answer was produced, and billed */

        if (i != ctx->answered) {
            ngx_http_llm_router_bill(lmcf, at[i].model, &at[i].tokens,
                                     at[i].cost);
        }
    }

    if (ctx->nattempts == 0 && r->headers_out.status >= NGX_HTTP_BAD_REQUEST)
    {
        status.data = buf;
        status.len = ngx_sprintf(buf, "%ui", r->headers_out.status) - buf;

        ngx_http_llm_router_series(shm, NGX_HTTP_LLM_ROUTER_SERIES_ERROR,
                                   &ctx->model->name, &status, NULL);
    }

    ngx_http_llm_router_count_triage(r, ctx);

    ngx_http_llm_router_settle(r, ctx->reservations, &ctx->nreservations,
                               ngx_http_llm_router_total_cost(ctx, &a));

    /* the rates the alerts watch */

    fallback = 0;

    for (i = 0; i + 1 < ctx->nattempts; i++) {
        fallback |= at[i].failed;
    }

    ngx_http_llm_router_rate_add(r, &shm->escalations,
                                 NGX_HTTP_LLM_ROUTER_ESCALATION_RATE, NULL,
                                 ctx->escalated);
    ngx_http_llm_router_rate_add(r, &shm->fallbacks,
                                 NGX_HTTP_LLM_ROUTER_FALLBACK_RATE, NULL,
                                 fallback);

    for (i = 0; i < ngx_max(ctx->nattempts, 1); i++) {
        m = ctx->nattempts ? at[i].model : ctx->model;
        code = ctx->nattempts ? at[i].status : r->headers_out.status;

        e = ngx_http_llm_router_shm_model(lmcf, m);

        if (e && code) {
            ngx_http_llm_router_rate_add(r, &e->errors,
                                     NGX_HTTP_LLM_ROUTER_ERROR_RATE, &m->name,
                                     code >= NGX_HTTP_INTERNAL_SERVER_ERROR
                                     || code == NGX_HTTP_TOO_MANY_REQUESTS);
        }
    }

    return NGX_OK;
}


ngx_uint_t
ngx_http_llm_router_cooling(ngx_http_request_t *r,
    ngx_http_llm_router_model_t *m)
{
    ngx_http_llm_router_shm_model_t  *e;
    ngx_http_llm_router_main_conf_t  *lmcf;

    lmcf = ngx_http_get_module_main_conf(r, ngx_http_llm_router_module);

    e = ngx_http_llm_router_shm_model(lmcf, m);

    return e && (ngx_msec_int_t) (e->until - ngx_current_msec) > 0;
}


void
ngx_http_llm_router_cool(ngx_http_request_t *r,
    ngx_http_llm_router_model_t *m, ngx_msec_t time)
{
    ngx_http_llm_router_shm_model_t  *e;
    ngx_http_llm_router_main_conf_t  *lmcf;

    lmcf = ngx_http_get_module_main_conf(r, ngx_http_llm_router_module);

    e = ngx_http_llm_router_shm_model(lmcf, m);

    if (e) {
        e->until = ngx_current_msec + time;
    }

    if (lmcf->cooldown_redis) {
        ngx_http_llm_router_cooldown_publish(lmcf, m, time);
    }
}


/*
 * Cooldowns shared through Redis: a model's is a key that expires with
 * it, "llmr:cooldown:NAME", and a worker of each server reads them all
 * every second.
 */

static void
ngx_http_llm_router_cooldown_publish(ngx_http_llm_router_main_conf_t *lmcf,
    ngx_http_llm_router_model_t *m, ngx_msec_t time)
{
    u_char                            ms[NGX_INT_T_LEN];
    u_char                            key[sizeof("llmr:cooldown:")
                                          + NGX_HTTP_LLM_ROUTER_LABEL_LEN];
    llmr_str_t                        argv[5];
    ngx_http_llm_router_redis_cmd_t  *cmd;

    argv[0].data = (u_char *) "SET";
    argv[0].len = 3;
    argv[1].data = key;
    argv[1].len = ngx_sprintf(key, "llmr:cooldown:%V", &m->name) - key;
    argv[2].data = (u_char *) "1";
    argv[2].len = 1;
    argv[3].data = (u_char *) "PX";
    argv[3].len = 2;
    argv[4].data = ms;
    argv[4].len = ngx_sprintf(ms, "%M", ngx_max(time, 1)) - ms;

    cmd = ngx_http_llm_router_redis_command(lmcf->cooldown_redis, 5, argv, 0);

    if (cmd) {
        cmd->handler = ngx_http_llm_router_redis_ignore;
        (void) ngx_http_llm_router_redis_send(cmd);
    }
}


/* every second, by a worker of each server: see redis.c */

void
ngx_http_llm_router_cooldown_refresh(ngx_http_llm_router_main_conf_t *lmcf)
{
    u_char                            *p, *keys;
    ngx_uint_t                         i, n;
    llmr_str_t                        *argv;
    ngx_http_llm_router_model_t       *m;
    ngx_http_llm_router_redis_cmd_t   *cmd;

    static ngx_str_t  script = ngx_string(
        "local t = {} "
        "for i, k in ipairs(KEYS) do t[i] = redis.call('PTTL', k) end "
        "return t");

    m = lmcf->models.elts;
    n = ngx_min(lmcf->models.nelts, LLMR_RESP_ITEMS);

    argv = ngx_alloc((n + 3) * sizeof(llmr_str_t), ngx_cycle->log);
    keys = ngx_alloc(NGX_INT_T_LEN + n * (sizeof("llmr:cooldown:")
                                          + NGX_HTTP_LLM_ROUTER_LABEL_LEN),
                     ngx_cycle->log);
    p = keys;

    if (argv && keys) {
        argv[0].data = (u_char *) "EVAL";
        argv[0].len = 4;
        argv[1].data = script.data;
        argv[1].len = script.len;
        argv[2].data = p;
        argv[2].len = ngx_sprintf(p, "%ui", n) - p;
        p += argv[2].len;

        for (i = 0; i < n; i++) {
            argv[i + 3].data = p;
            argv[i + 3].len = ngx_sprintf(p, "llmr:cooldown:%V", &m[i].name)
                              - p;
            p += argv[i + 3].len;
        }

        cmd = ngx_http_llm_router_redis_command(lmcf->cooldown_redis, n + 3,
                                                argv, 0);
        if (cmd) {
            cmd->handler = ngx_http_llm_router_cooldown_read;
            (void) ngx_http_llm_router_redis_send(cmd);
        }
    }

    if (argv) {
        ngx_free(argv);
    }

    if (keys) {
        ngx_free(keys);
    }
}


/* the time left of each model's cooldown, in the order of the models */

static void
ngx_http_llm_router_cooldown_read(ngx_http_llm_router_redis_cmd_t *cmd,
    llmr_resp_t *reply)
{
    ngx_msec_t                        until;
    ngx_uint_t                        i;
    ngx_http_llm_router_model_t      *m;
    ngx_http_llm_router_shm_model_t  *e;
    ngx_http_llm_router_main_conf_t  *lmcf;

    if (reply == NULL || reply->type != LLMR_RESP_ARRAY) {
        return;
    }

    lmcf = ngx_http_cycle_get_module_main_conf(ngx_cycle,
                                               ngx_http_llm_router_module);
    m = lmcf->models.elts;

    for (i = 0; i < reply->nitems && i < lmcf->models.nelts; i++) {
        if (reply->items[i] <= 0) {
            continue;
        }

        e = ngx_http_llm_router_shm_model(lmcf, &m[i]);
        until = ngx_current_msec + (ngx_msec_t) reply->items[i];

        if (e && (ngx_msec_int_t) (until - e->until) > 0) {
            e->until = until;
        }
    }
}

