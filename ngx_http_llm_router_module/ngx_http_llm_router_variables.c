
/*
 * Copyright (C) the ngx_http_llm_router_module authors
 *
 * Embedded variables, and $llm_router_log: one JSON record a request.
 */


#include "ngx_http_llm_router_module.h"





static ngx_int_t ngx_http_llm_router_model_variable(ngx_http_request_t *r,
    ngx_http_variable_value_t *v, uintptr_t data);
static ngx_int_t ngx_http_llm_router_rule_variable(ngx_http_request_t *r,
    ngx_http_variable_value_t *v, uintptr_t data);
static ngx_int_t ngx_http_llm_router_est_tokens_variable(
    ngx_http_request_t *r, ngx_http_variable_value_t *v, uintptr_t data);
static ngx_int_t ngx_http_llm_router_score_variable(ngx_http_request_t *r,
    ngx_http_variable_value_t *v, uintptr_t data);
static ngx_int_t ngx_http_llm_router_triage_variable(ngx_http_request_t *r,
    ngx_http_variable_value_t *v, uintptr_t data);
static ngx_int_t ngx_http_llm_router_cost_variable(ngx_http_request_t *r,
    ngx_http_variable_value_t *v, uintptr_t data);
static ngx_int_t ngx_http_llm_router_requested_variable(
    ngx_http_request_t *r, ngx_http_variable_value_t *v, uintptr_t data);
static ngx_int_t ngx_http_llm_router_api_variable(ngx_http_request_t *r,
    ngx_http_variable_value_t *v, uintptr_t data);
static ngx_int_t ngx_http_llm_router_log_variable(ngx_http_request_t *r,
    ngx_http_variable_value_t *v, uintptr_t data);
static ngx_int_t ngx_http_llm_router_version_variable(ngx_http_request_t *r,
    ngx_http_variable_value_t *v, uintptr_t data);
static size_t ngx_http_llm_router_attempts_size(
    ngx_http_llm_router_ctx_t *ctx);
static u_char *ngx_http_llm_router_attempts(u_char *p,
    ngx_http_llm_router_ctx_t *ctx, ngx_http_llm_router_account_t *a,
    ngx_uint_t status, ngx_msec_int_t ms);
static u_char *ngx_http_llm_router_triage_record(u_char *p,
    ngx_http_llm_router_ctx_t *ctx);
static ngx_http_llm_router_ctx_t *ngx_http_llm_router_routed(
    ngx_http_request_t *r, ngx_http_variable_value_t *v);
static void ngx_http_llm_router_value(ngx_http_variable_value_t *v,
    u_char *data, size_t len);


static ngx_http_variable_t  ngx_http_llm_router_vars[] = {

    { ngx_string("llm_router_model"), NULL,
      ngx_http_llm_router_model_variable,
      offsetof(ngx_http_llm_router_model_t, name),
      NGX_HTTP_VAR_NOCACHEABLE, 0 },

    { ngx_string("llm_router_upstream_model"), NULL,
      ngx_http_llm_router_model_variable,
      offsetof(ngx_http_llm_router_model_t, upstream),
      NGX_HTTP_VAR_NOCACHEABLE, 0 },

    { ngx_string("llm_router_url"), NULL,
      ngx_http_llm_router_model_variable,
      offsetof(ngx_http_llm_router_model_t, url),
      NGX_HTTP_VAR_NOCACHEABLE, 0 },

    { ngx_string("llm_router_rule"), NULL,
      ngx_http_llm_router_rule_variable, 0,
      NGX_HTTP_VAR_NOCACHEABLE, 0 },

    { ngx_string("llm_router_est_tokens"), NULL,
      ngx_http_llm_router_est_tokens_variable, 0,
      NGX_HTTP_VAR_NOCACHEABLE, 0 },

    { ngx_string("llm_router_score"), NULL,
      ngx_http_llm_router_score_variable, 0,
      NGX_HTTP_VAR_NOCACHEABLE, 0 },

    { ngx_string("llm_router_triage"), NULL,
      ngx_http_llm_router_triage_variable, 0,
      NGX_HTTP_VAR_NOCACHEABLE, 0 },

    { ngx_string("llm_router_cost"), NULL,
      ngx_http_llm_router_cost_variable, 0,
      NGX_HTTP_VAR_NOCACHEABLE, 0 },

    { ngx_string("llm_router_requested_model"), NULL,
      ngx_http_llm_router_requested_variable, 0,
      NGX_HTTP_VAR_NOCACHEABLE, 0 },

    { ngx_string("llm_router_api"), NULL,
      ngx_http_llm_router_api_variable, 0,
      NGX_HTTP_VAR_NOCACHEABLE, 0 },

    { ngx_string("llm_router_log"), NULL,
      ngx_http_llm_router_log_variable, 0,
      NGX_HTTP_VAR_NOCACHEABLE, 0 },

    { ngx_string("llm_router_shadow_record"), NULL,
      ngx_http_llm_router_shadow_variable, 0,
      NGX_HTTP_VAR_NOCACHEABLE, 0 },

    { ngx_string("llm_router_version"), NULL,
      ngx_http_llm_router_version_variable, 0, 0, 0 },

      ngx_http_null_variable
};


ngx_int_t
ngx_http_llm_router_add_variables(ngx_conf_t *cf)
{
    ngx_http_variable_t  *var, *v;

    for (v = ngx_http_llm_router_vars; v->name.len; v++) {
        var = ngx_http_add_variable(cf, &v->name, v->flags);
        if (var == NULL) {
            return NGX_ERROR;
        }

        var->get_handler = v->get_handler;
        var->data = v->data;
    }

    return NGX_OK;
}


/* the context of a routed request; for others the variable is not found */

static ngx_http_llm_router_ctx_t *
ngx_http_llm_router_routed(ngx_http_request_t *r,
    ngx_http_variable_value_t *v)
{
    ngx_http_llm_router_ctx_t  *ctx;

    /* the tries of failover proxy with the main request's decision */

    ctx = ngx_http_get_module_ctx(r->main, ngx_http_llm_router_module);

    if (ctx == NULL || !ctx->routed) {
        v->not_found = 1;
        return NULL;
    }

    return ctx;
}


static void
ngx_http_llm_router_value(ngx_http_variable_value_t *v, u_char *data,
    size_t len)
{
    v->len = len;
    v->data = data;
    v->valid = 1;
    v->no_cacheable = 0;
    v->not_found = 0;
}


/* in the triage and shadow calls, the model is theirs */

static ngx_int_t
ngx_http_llm_router_model_variable(ngx_http_request_t *r,
    ngx_http_variable_value_t *v, uintptr_t data)
{
    ngx_str_t                       *s;
    ngx_http_llm_router_ctx_t       *ctx;
    ngx_http_llm_router_model_t     *model;
    ngx_http_llm_router_loc_conf_t  *llcf;

    ctx = ngx_http_get_module_ctx(r->main, ngx_http_llm_router_module);

    if (ctx && r == ctx->triage_sr) {
        llcf = ngx_http_get_module_loc_conf(r->main,
                                            ngx_http_llm_router_module);
        model = llcf->triage->model;

    } else if (ctx && ctx->shadow
               && (r == ctx->shadow->sr || r == ctx->shadow->request))
    {
        model = ctx->shadow->conf->model;

    } else {
        ctx = ngx_http_llm_router_routed(r, v);
        if (ctx == NULL) {
            return NGX_OK;
        }

        model = ctx->model;
    }

    s = (ngx_str_t *) ((char *) model + data);

    ngx_http_llm_router_value(v, s->data, s->len);

    return NGX_OK;
}


static ngx_int_t
ngx_http_llm_router_rule_variable(ngx_http_request_t *r,
    ngx_http_variable_value_t *v, uintptr_t data)
{
    ngx_http_llm_router_ctx_t  *ctx;

    ctx = ngx_http_llm_router_routed(r, v);
    if (ctx == NULL) {
        return NGX_OK;
    }

    ngx_http_llm_router_value(v, ctx->rule.data, ctx->rule.len);

    return NGX_OK;
}


static ngx_int_t
ngx_http_llm_router_est_tokens_variable(ngx_http_request_t *r,
    ngx_http_variable_value_t *v, uintptr_t data)
{
    u_char                     *p;
    ngx_http_llm_router_ctx_t  *ctx;

    ctx = ngx_http_llm_router_routed(r, v);
    if (ctx == NULL) {
        return NGX_OK;
    }

    p = ngx_pnalloc(r->pool, NGX_INT32_LEN);
    if (p == NULL) {
        return NGX_ERROR;
    }

    ngx_http_llm_router_value(v, p,
                      ngx_sprintf(p, "%uD", ctx->request.f.est_tokens) - p);

    return NGX_OK;
}


static ngx_int_t
ngx_http_llm_router_score_variable(ngx_http_request_t *r,
    ngx_http_variable_value_t *v, uintptr_t data)
{
    u_char                     *p;
    ngx_http_llm_router_ctx_t  *ctx;

    ctx = ngx_http_llm_router_routed(r, v);
    if (ctx == NULL) {
        return NGX_OK;
    }

    if (ctx->request.f.score < 0) {
        v->not_found = 1;
        return NGX_OK;
    }

    p = ngx_pnalloc(r->pool, LLMR_SCORE_MAX);
    if (p == NULL) {
        return NGX_ERROR;
    }

    ngx_http_llm_router_value(v, p,
                              llmr_score_format(p, ctx->request.f.score));

    return NGX_OK;
}


static ngx_int_t
ngx_http_llm_router_triage_variable(ngx_http_request_t *r,
    ngx_http_variable_value_t *v, uintptr_t data)
{
    ngx_http_llm_router_ctx_t  *ctx;

    ctx = ngx_http_llm_router_routed(r, v);
    if (ctx == NULL) {
        return NGX_OK;
    }

    if (ctx->request.f.triage != LLMR_TRIAGE_DONE) {
        v->not_found = 1;
        return NGX_OK;
    }

    ngx_http_llm_router_value(v, ctx->request.f.triage_label,
                              ctx->request.f.triage_len);

    return NGX_OK;
}


/*
 * The client's "model", as soon as the body is read: rules may test it,
 * as agents ask for a small model for their background work.
 */

static ngx_int_t
ngx_http_llm_router_requested_variable(ngx_http_request_t *r,
    ngx_http_variable_value_t *v, uintptr_t data)
{
    ngx_http_llm_router_ctx_t  *ctx;

    ctx = ngx_http_get_module_ctx(r->main, ngx_http_llm_router_module);

    if (ctx == NULL || !ctx->parsed || ctx->request.f.model_len == 0) {
        v->not_found = 1;
        return NGX_OK;
    }

    ngx_http_llm_router_value(v, ctx->request.f.model,
                              ctx->request.f.model_len);

    return NGX_OK;
}


static ngx_int_t
ngx_http_llm_router_api_variable(ngx_http_request_t *r,
    ngx_http_variable_value_t *v, uintptr_t data)
{
    ngx_http_llm_router_ctx_t  *ctx;

    ctx = ngx_http_get_module_ctx(r->main, ngx_http_llm_router_module);

    if (ctx == NULL || ctx->dialect == NULL) {
        v->not_found = 1;
        return NGX_OK;
    }

    ngx_http_llm_router_value(v, (u_char *) ctx->dialect->name.data,
                              ctx->dialect->name.len);

    return NGX_OK;
}


static ngx_int_t
ngx_http_llm_router_version_variable(ngx_http_request_t *r,
    ngx_http_variable_value_t *v, uintptr_t data)
{
    ngx_http_llm_router_value(v, (u_char *) LLMR_VERSION,
                              sizeof(LLMR_VERSION) - 1);

    return NGX_OK;
}


static ngx_int_t
ngx_http_llm_router_cost_variable(ngx_http_request_t *r,
    ngx_http_variable_value_t *v, uintptr_t data)
{
    u_char                         *p;
    ngx_http_llm_router_ctx_t      *ctx;
    ngx_http_llm_router_account_t   a;

    ctx = ngx_http_llm_router_routed(r, v);
    if (ctx == NULL) {
        return NGX_OK;
    }

    p = ngx_pnalloc(r->pool, LLMR_USD_MAX);
    if (p == NULL) {
        return NGX_ERROR;
    }

    ngx_http_llm_router_account(r, ctx, &a);

    ngx_http_llm_router_value(v, p,
                   llmr_usd_format(p, ngx_http_llm_router_total_cost(ctx, &a)));

    return NGX_OK;
}


/*
 * Tokens come from the provider's usage when it sent one; otherwise the
 * prompt is estimated from the request and the completion from the text
 * of the answer.  A failed answer costs nothing.
 */

void
ngx_http_llm_router_account(ngx_http_request_t *r,
    ngx_http_llm_router_ctx_t *ctx, ngx_http_llm_router_account_t *a)
{
    ngx_memzero(a, sizeof(ngx_http_llm_router_account_t));
    ngx_str_set(&a->source, "none");

    if (ctx == NULL || !ctx->routed || !ctx->scan_usage) {
        return;
    }

    if (llmr_usage_tokens(&ctx->usage, &a->tokens)) {
        ngx_str_set(&a->source, "response");

    } else {
        a->tokens.prompt = ctx->request.f.prompt_tokens;
        a->tokens.completion = llmr_usage_content_tokens(&ctx->usage);
        ngx_str_set(&a->source, "estimate");
    }

    a->cost = ngx_http_llm_router_model_cost(r, ctx->model, &a->tokens);
}


uint64_t
ngx_http_llm_router_model_cost(ngx_http_request_t *r,
    ngx_http_llm_router_model_t *model, llmr_tokens_t *tokens)
{
    ngx_http_llm_router_main_conf_t  *lmcf;

    lmcf = ngx_http_get_module_main_conf(r, ngx_http_llm_router_module);

    return llmr_cost(&lmcf->core_models[model
                         - (ngx_http_llm_router_model_t *) lmcf->models.elts],
                     tokens);
}


/* the answer's cost, that of escalated answers before it and triage's */

uint64_t
ngx_http_llm_router_total_cost(ngx_http_llm_router_ctx_t *ctx,
    ngx_http_llm_router_account_t *a)
{
    uint64_t    cost;
    ngx_uint_t  i;

    cost = a->cost + (ctx ? ctx->triage_cost : 0);

    for (i = 0; ctx && i < ctx->nattempts; i++) {
        if (i != ctx->answered) {
            cost += ctx->attempts[i].cost;
        }
    }

    return cost;
}


#define NGX_HTTP_LLM_ROUTER_DECISION_FIELDS                                   \
    "\"api\":\"responses\",\"model\":,\"upstream_model\":,\"rule\":,"          \
    "\"stream\":false,\"messages\":,\"est_tokens\":,\"score\":"

#define NGX_HTTP_LLM_ROUTER_TRIAGE_FIELDS                                     \
    ",\"triage\":{\"verdict\":\"\",\"cached\":false,\"latency_ms\":,"         \
    "\"status\":,\"cost_usd\":},\"triage_error\":\"\""


/*
 * The decision, shared by the log record and llm_router_explain: nulls
 * and zeros for a request that was not routed.
 */

size_t
ngx_http_llm_router_decision_size(ngx_http_llm_router_ctx_t *ctx)
{
    size_t  len;

    len = sizeof(NGX_HTTP_LLM_ROUTER_DECISION_FIELDS) - 1
          + 2 * NGX_INT32_LEN + LLMR_SCORE_MAX
          + sizeof(NGX_HTTP_LLM_ROUTER_TRIAGE_FIELDS) - 1
          + 6 * LLMR_LABEL_MAX + 2 * NGX_INT_T_LEN + LLMR_USD_MAX
          + sizeof("credentials") - 1;

    if (ctx == NULL || !ctx->routed) {
        return len + 3 * (sizeof("null") - 1);
    }

    return len + ngx_http_llm_router_json_size(&ctx->model->name)
           + ngx_http_llm_router_json_size(&ctx->model->upstream)
           + ngx_http_llm_router_json_size(&ctx->rule);
}


u_char *
ngx_http_llm_router_decision(u_char *p, ngx_http_llm_router_ctx_t *ctx)
{
    ngx_str_t               none;
    const llmr_features_t  *f;
    static const llmr_features_t  nothing = { .score = -1 };

    ngx_str_null(&none);

    if (ctx && ctx->dialect) {
        p = ngx_sprintf(p, "\"api\":\"%V\",", &ctx->dialect->name);

    } else {
        p = ngx_cpymem(p, "\"api\":null,", sizeof("\"api\":null,") - 1);
    }

    if (ctx == NULL || !ctx->routed) {
        f = &nothing;
        p = ngx_cpymem(p, "\"model\":null,\"upstream_model\":null,"
                          "\"rule\":null",
                       sizeof("\"model\":null,\"upstream_model\":null,"
                              "\"rule\":null") - 1);

    } else {
        f = &ctx->request.f;
        p = ngx_cpymem(p, "\"model\":", sizeof("\"model\":") - 1);
        p = ngx_http_llm_router_json(p, &ctx->model->name);
        p = ngx_cpymem(p, ",\"upstream_model\":",
                       sizeof(",\"upstream_model\":") - 1);
        p = ngx_http_llm_router_json(p, &ctx->model->upstream);
        p = ngx_cpymem(p, ",\"rule\":", sizeof(",\"rule\":") - 1);
        p = ngx_http_llm_router_json(p, &ctx->rule);
    }

    p = ngx_sprintf(p, ",\"stream\":%s,\"messages\":%uD,\"est_tokens\":%uD,"
                    "\"score\":", f->stream ? "true" : "false",
                    f->messages, f->est_tokens);

    p += llmr_score_format(p, f->score);

    return ngx_http_llm_router_triage_record(p, ctx);
}


/*
 * "triage": null when the triage model was not asked, else its verdict
 * (null when it failed), whether it came from the cache, and the call's
 * latency, status and cost; "triage_error": why it failed, or null.
 */

static u_char *
ngx_http_llm_router_triage_record(u_char *p, ngx_http_llm_router_ctx_t *ctx)
{
    ngx_str_t         label;
    llmr_features_t  *f;

    if (ctx == NULL || !ctx->routed
        || ctx->request.f.triage == LLMR_TRIAGE_UNKNOWN)
    {
        return ngx_cpymem(p, ",\"triage\":null,\"triage_error\":null",
                          sizeof(",\"triage\":null,\"triage_error\":null")
                          - 1);
    }

    f = &ctx->request.f;

    if (f->triage == LLMR_TRIAGE_DONE) {
        label.data = f->triage_label;
        label.len = f->triage_len;

    } else {
        ngx_str_null(&label);
    }

    p = ngx_cpymem(p, ",\"triage\":{\"verdict\":",
                   sizeof(",\"triage\":{\"verdict\":") - 1);
    p = ngx_http_llm_router_json(p, &label);
    p = ngx_sprintf(p, ",\"cached\":%s,\"latency_ms\":%M,\"status\":%ui,"
                    "\"cost_usd\":", ctx->triage_cached ? "true" : "false",
                    ctx->triage_latency, ctx->triage_status);
    p += llmr_usd_format(p, ctx->triage_cost);

    if (ctx->triage_error) {
        return ngx_sprintf(p, "},\"triage_error\":\"%s\"", ctx->triage_error);
    }

    return ngx_cpymem(p, "},\"triage_error\":null",
                      sizeof("},\"triage_error\":null") - 1);
}


#define NGX_HTTP_LLM_ROUTER_LOG_FIELDS                                        \
    "{,\"prompt_tokens\":,\"completion_tokens\":,\"cached_tokens\":,"       \
    "\"cache_write_tokens\":,\"reasoning_tokens\":,\"usage_source\":\"\","   \
    "\"cost_usd\":,\"status\":,\"latency_ms\":,\"fallback\":false,"        \
    "\"escalated\":false,\"escalation_reason\":null,\"attempts\":[],"        \
    "\"error\":}"


static ngx_int_t
ngx_http_llm_router_log_variable(ngx_http_request_t *r,
    ngx_http_variable_value_t *v, uintptr_t data)
{
    u_char                          *p, *start;
    size_t                           len;
    ngx_msec_int_t                   ms;
    ngx_time_t                      *tp;
    ngx_uint_t                       status;
    ngx_http_llm_router_ctx_t       *ctx;
    ngx_http_llm_router_account_t    a;
    ngx_http_llm_router_loc_conf_t  *llcf;

    llcf = ngx_http_get_module_loc_conf(r, ngx_http_llm_router_module);
    ctx = ngx_http_get_module_ctx(r, ngx_http_llm_router_module);

    /*
     * the tries of failover (log_subrequest on) are in the main record,
     * and the shadow call has a record of its own
     */

    if (r != r->main || (!ngx_http_llm_router_on(llcf) && ctx == NULL)
        || (ctx && ctx->shadow && ctx->shadow->request == r))
    {
        v->not_found = 1;
        return NGX_OK;
    }

    ngx_http_llm_router_account(r, ctx, &a);

    status = r->err_status ? r->err_status : r->headers_out.status;

    tp = ngx_timeofday();
    ms = (ngx_msec_int_t) ((tp->sec - r->start_sec) * 1000
                           + (tp->msec - r->start_msec));
    ms = ngx_max(ms, 0);

    len = sizeof(NGX_HTTP_LLM_ROUTER_LOG_FIELDS) - 1
          + ngx_http_llm_router_decision_size(ctx)
          + (ctx ? ngx_http_llm_router_json_size(&ctx->error) : 0)
          + 7 * NGX_INT64_LEN + LLMR_USD_MAX + a.source.len
          + ngx_http_llm_router_attempts_size(ctx)
          + ngx_http_llm_router_shadow_log_size(r, ctx);

    start = ngx_pnalloc(r->pool, len);
    if (start == NULL) {
        return NGX_ERROR;
    }

    p = start;
    *p++ = '{';
    p = ngx_http_llm_router_decision(p, ctx);

    p = ngx_sprintf(p, ",\"prompt_tokens\":%uL,\"completion_tokens\":%uL,"
                    "\"cached_tokens\":%uL,\"cache_write_tokens\":%uL,"
                    "\"reasoning_tokens\":%uL,\"usage_source\":\"%V\","
                    "\"cost_usd\":",
                    a.tokens.prompt, a.tokens.completion, a.tokens.cached,
                    a.tokens.cache_write, a.tokens.reasoning, &a.source);

    p += llmr_usd_format(p, ngx_http_llm_router_total_cost(ctx, &a));

    p = ngx_sprintf(p, ",\"status\":%ui,\"latency_ms\":%M", status, ms);
    p = ngx_http_llm_router_attempts(p, ctx, &a, status, ms);
    p = ngx_http_llm_router_shadow_log(p, r, ctx);

    if (ctx && ctx->error.len) {
        p = ngx_cpymem(p, ",\"error\":", sizeof(",\"error\":") - 1);
        p = ngx_http_llm_router_json(p, &ctx->error);
    }

    *p++ = '}';

    ngx_http_llm_router_value(v, start, p - start);

    return NGX_OK;
}


#define NGX_HTTP_LLM_ROUTER_ATTEMPT_FIELDS                                    \
    "{\"model\":,\"status\":,\"latency_ms\":,\"reason\":\"content_filter\","  \
    "\"cost_usd\":},"


static size_t
ngx_http_llm_router_attempts_size(ngx_http_llm_router_ctx_t *ctx)
{
    size_t      len;
    ngx_uint_t  i, n;

    len = sizeof(",\"escalation_reason\":\"content_filter\"") - 1;

    if (ctx == NULL || !ctx->routed) {
        return len;
    }

    n = ctx->nattempts ? ctx->nattempts : 1;

    for (i = 0; i < n; i++) {
        len += sizeof(NGX_HTTP_LLM_ROUTER_ATTEMPT_FIELDS) - 1
               + ngx_http_llm_router_json_size(ctx->nattempts
                                               ? &ctx->attempts[i].model->name
                                               : &ctx->model->name)
               + 2 * NGX_INT64_LEN + LLMR_USD_MAX;
    }

    return len;
}


/*
 * "fallback", "escalated", "escalation_reason" and "attempts": each try
 * with its model, status, latency, why another came, and cost.  A
 * request without failover has one try, the request itself.
 */

static u_char *
ngx_http_llm_router_attempts(u_char *p, ngx_http_llm_router_ctx_t *ctx,
    ngx_http_llm_router_account_t *a, ngx_uint_t status, ngx_msec_int_t ms)
{
    ngx_uint_t                      i, fallback;
    ngx_http_llm_router_attempt_t  *at, one;

    if (ctx == NULL || !ctx->routed) {
        return ngx_cpymem(p, ",\"fallback\":false,\"escalated\":false,"
                             "\"escalation_reason\":null,\"attempts\":[]",
                          sizeof(",\"fallback\":false,\"escalated\":false,"
                                 "\"escalation_reason\":null,"
                                 "\"attempts\":[]") - 1);
    }

    if (ctx->nattempts == 0) {
        ngx_memzero(&one, sizeof(ngx_http_llm_router_attempt_t));
        one.model = ctx->model;
        one.status = status;
        one.latency = ms;
        at = &one;

    } else {
        at = ctx->attempts;
    }

    fallback = 0;

    /* a try failed and another came after it */

    for (i = 0; i + 1 < ctx->nattempts; i++) {
        fallback |= at[i].failed;
    }

    p = ngx_sprintf(p, ",\"fallback\":%s,\"escalated\":%s,"
                    "\"escalation_reason\":",
                    fallback ? "true" : "false",
                    ctx->escalated ? "true" : "false");

    if (ctx->escalation_reason) {
        p = ngx_sprintf(p, "\"%s\"", ctx->escalation_reason);

    } else {
        p = ngx_cpymem(p, "null", sizeof("null") - 1);
    }

    p = ngx_cpymem(p, ",\"attempts\":[", sizeof(",\"attempts\":[") - 1);

    for (i = 0; i < (ctx->nattempts ? ctx->nattempts : 1); i++) {
        if (i) {
            *p++ = ',';
        }

        p = ngx_cpymem(p, "{\"model\":", sizeof("{\"model\":") - 1);
        p = ngx_http_llm_router_json(p, &at[i].model->name);
        p = ngx_sprintf(p, ",\"status\":%ui,\"latency_ms\":%M,\"reason\":",
                        at[i].status, (ngx_msec_int_t) at[i].latency);

        if (at[i].reason) {
            p = ngx_sprintf(p, "\"%s\"", at[i].reason);

        } else {
            p = ngx_cpymem(p, "null", sizeof("null") - 1);
        }

        p = ngx_cpymem(p, ",\"cost_usd\":", sizeof(",\"cost_usd\":") - 1);

        /* the try that answered costs what the account says */
        p += llmr_usd_format(p, (i == ctx->answered || !ctx->nattempts)
                                ? a->cost : at[i].cost);
        *p++ = '}';
    }

    *p++ = ']';

    return p;
}


size_t
ngx_http_llm_router_json_size(ngx_str_t *s)
{
    if (s->data == NULL) {
        return sizeof("null") - 1;
    }

    return llmr_json_escape_size(s->data, s->len) + 2;
}


/* a JSON string, or null for a value that does not exist */

u_char *
ngx_http_llm_router_json(u_char *p, ngx_str_t *s)
{
    if (s->data == NULL) {
        return ngx_cpymem(p, "null", sizeof("null") - 1);
    }

    *p++ = '"';
    p = llmr_json_escape(p, s->data, s->len);
    *p++ = '"';

    return p;
}
