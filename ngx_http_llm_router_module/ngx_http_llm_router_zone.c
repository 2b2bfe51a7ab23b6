
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
static void ngx_http_llm_router_series(ngx_http_llm_router_shm_t *shm,
    ngx_uint_t kind, ngx_str_t *a, ngx_str_t *b, ngx_str_t *c);
static void ngx_http_llm_router_observe(ngx_atomic_t *buckets,
    ngx_msec_t *bounds, ngx_msec_t value);


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


static ngx_int_t
ngx_http_llm_router_init_zone(ngx_shm_zone_t *shm_zone, void *data)
{
    ngx_http_llm_router_main_conf_t  *olmcf = data;

    ngx_slab_pool_t                  *shpool;
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

    lmcf->shm = ngx_slab_calloc(shpool, sizeof(ngx_http_llm_router_shm_t));
    if (lmcf->shm == NULL) {
        return NGX_ERROR;
    }

    shpool->data = lmcf->shm;

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

        if (e->hash == m->hash) {
            return e;
        }
    }

    return NULL;
}


static void
ngx_http_llm_router_label(ngx_http_llm_router_label_t *l, ngx_str_t *s)
{
    l->len = (u_char) ngx_min(s->len, NGX_HTTP_LLM_ROUTER_LABEL_LEN);
    ngx_memcpy(l->data, s->data, l->len);
}


/* a labelled counter, taken on first use, one more */

static void
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

        if (e->hash == hash) {
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
 * The log phase: the request, its tries and the answer counted, with
 * atomics only.
 */

ngx_int_t
ngx_http_llm_router_count(ngx_http_request_t *r)
{
    u_char                            buf[NGX_INT_T_LEN];
    ngx_str_t                         none, status;
    ngx_msec_t                        ms;
    ngx_uint_t                        i;
    ngx_time_t                       *tp;
    ngx_http_llm_router_ctx_t        *ctx;
    ngx_http_llm_router_shm_t        *shm;
    ngx_http_llm_router_attempt_t    *at;
    ngx_http_llm_router_account_t     a;
    ngx_http_llm_router_shm_model_t  *e;
    ngx_http_llm_router_main_conf_t  *lmcf;

    lmcf = ngx_http_get_module_main_conf(r, ngx_http_llm_router_module);
    ctx = ngx_http_get_module_ctx(r, ngx_http_llm_router_module);

    shm = lmcf->shm;

    if (shm == NULL || ctx == NULL || !ctx->routed || r != r->main) {
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
        (void) ngx_atomic_fetch_add(&e->prompt, a.prompt);
        (void) ngx_atomic_fetch_add(&e->completion, a.completion);
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

        if (i != ctx->answered && at[i].cost) {
            e = ngx_http_llm_router_shm_model(lmcf, at[i].model);

            if (e) {
                (void) ngx_atomic_fetch_add(&e->prompt, at[i].prompt);
                (void) ngx_atomic_fetch_add(&e->completion,
                                            at[i].completion);
                (void) ngx_atomic_fetch_add(&e->cost, at[i].cost);
            }
        }
    }

    if (ctx->nattempts == 0 && r->headers_out.status >= NGX_HTTP_BAD_REQUEST)
    {
        status.data = buf;
        status.len = ngx_sprintf(buf, "%ui", r->headers_out.status) - buf;

        ngx_http_llm_router_series(shm, NGX_HTTP_LLM_ROUTER_SERIES_ERROR,
                                   &ctx->model->name, &status, NULL);
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
}
