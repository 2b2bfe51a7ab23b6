
/*
 * Copyright (C) the ngx_http_llm_router_module authors
 *
 * The request side: the body is parsed as it is read, by a request body
 * filter, the model is chosen, the new "model" value is spliced into the
 * buffer chain and the provider's credentials replace the client's.
 */


#include "ngx_http_llm_router_module.h"


static ngx_int_t ngx_http_llm_router_request_body_filter(ngx_http_request_t *r,
    ngx_chain_t *in);
static ngx_int_t ngx_http_llm_router_parse(ngx_http_request_t *r,
    ngx_http_llm_router_ctx_t *ctx, ngx_chain_t *in);
static void ngx_http_llm_router_body_handler(ngx_http_request_t *r);
static ngx_int_t ngx_http_llm_router_route(ngx_http_request_t *r,
    ngx_http_llm_router_ctx_t *ctx);
static ngx_int_t ngx_http_llm_router_decided(ngx_http_request_t *r,
    ngx_http_llm_router_ctx_t *ctx);
static ngx_int_t ngx_http_llm_router_decide(ngx_http_request_t *r,
    ngx_http_llm_router_ctx_t *ctx);
static int ngx_http_llm_router_var_test(void *data, const llmr_cond_t *cond);
static ngx_int_t ngx_http_llm_router_rewrite_body(ngx_http_request_t *r,
    ngx_http_llm_router_ctx_t *ctx);
static ngx_int_t ngx_http_llm_router_splice(ngx_http_request_t *r,
    ngx_chain_t *in, llmr_edit_t *edit, ngx_chain_t **chain);
static ngx_int_t ngx_http_llm_router_append(ngx_pool_t *pool,
    ngx_chain_t ***last, ngx_buf_t *b, off_t from, off_t to);
static ngx_int_t ngx_http_llm_router_strip_headers(ngx_http_request_t *r,
    ngx_http_llm_router_ctx_t *ctx);
static ngx_int_t ngx_http_llm_router_credentials(ngx_http_request_t *r,
    ngx_http_llm_router_ctx_t *ctx);
static ngx_int_t ngx_http_llm_router_push_header(ngx_pool_t *pool,
    ngx_list_t *list, ngx_str_t *name, ngx_str_t *value);
static ngx_int_t ngx_http_llm_router_client_header(u_char *name,
    size_t len);
static ngx_int_t ngx_http_llm_router_same_dialect(ngx_http_request_t *r,
    ngx_http_llm_router_ctx_t *ctx);
static void ngx_http_llm_router_unkey(void *data);
static void ngx_http_llm_router_cleanup(void *data);


static ngx_http_request_body_filter_pt  ngx_http_next_request_body_filter;


/*
 * Headers of the client that reach no provider: its credentials, which
 * the model's replace; Accept-Encoding, so that the answer comes
 * uncompressed and its usage can be read (nginx may still compress it
 * for the client); and those that tell a provider whose account or
 * project the operator's key bills, or that identify the client to
 * someone else.  llm_router_pass_header keeps those of the last kind.
 * Names are in lower case with '-': a client's "X_Api_Key" is the same
 * header to a provider that reads '_' as '-'.
 */

typedef struct {
    ngx_str_t                      name;
    const char                    *keep;   /* why it cannot be passed */
} ngx_http_llm_router_header_t;


static ngx_http_llm_router_header_t  ngx_http_llm_router_client_headers[] = {
    { ngx_string("authorization"),
      "the client's credentials never reach a provider" },
    { ngx_string("x-api-key"),
      "the client's credentials never reach a provider" },
    { ngx_string("api-key"),
      "the client's credentials never reach a provider" },
    { ngx_string("accept-encoding"),
      "the router reads the usage of uncompressed answers" },
    { ngx_string("openai-organization"), NULL },
    { ngx_string("openai-project"), NULL },
    { ngx_string("proxy-authorization"), NULL },
    { ngx_string("x-goog-api-key"), NULL },
    { ngx_string("cookie"), NULL },
    { ngx_null_string, NULL }
};


static ngx_str_t  ngx_http_llm_router_json_type =
    ngx_string("application/json");


static ngx_str_t  ngx_http_llm_router_auth_headers[] = {
    ngx_null_string,
    ngx_string("Authorization"),
    ngx_string("x-api-key"),
    ngx_string("api-key")
};


/* llm_router_pass_header NAME: a removed header that a level keeps */

char *
ngx_http_llm_router_pass_header(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf)
{
    ngx_http_llm_router_loc_conf_t *llcf = conf;

    ngx_int_t                      i;
    ngx_str_t                     *value;
    ngx_http_llm_router_header_t  *h;

    value = cf->args->elts;

    i = ngx_http_llm_router_client_header(value[1].data, value[1].len);

    if (i == NGX_ERROR) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "invalid header \"%V\" in "
                           "\"llm_router_pass_header\": OpenAI-Organization, "
                           "OpenAI-Project, Proxy-Authorization, "
                           "x-goog-api-key or Cookie expected, the others "
                           "pass anyway", &value[1]);
        return NGX_CONF_ERROR;
    }

    h = &ngx_http_llm_router_client_headers[i];

    if (h->keep) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"llm_router_pass_header\" cannot pass \"%V\": "
                           "%s", &value[1], h->keep);
        return NGX_CONF_ERROR;
    }

    if (llcf->pass_headers == NGX_CONF_UNSET_UINT) {
        llcf->pass_headers = 0;
    }

    llcf->pass_headers |= (ngx_uint_t) 1 << i;

    return NGX_CONF_OK;
}


ngx_int_t
ngx_http_llm_router_request_body_init(ngx_conf_t *cf)
{
    ngx_http_next_request_body_filter = ngx_http_top_request_body_filter;
    ngx_http_top_request_body_filter = ngx_http_llm_router_request_body_filter;

    return NGX_OK;
}


ngx_http_llm_router_ctx_t *
ngx_http_llm_router_create_ctx(ngx_http_request_t *r)
{
    ngx_http_llm_router_ctx_t  *ctx;

    ctx = ngx_pcalloc(r->pool, sizeof(ngx_http_llm_router_ctx_t));
    if (ctx == NULL) {
        return NULL;
    }

    ngx_http_set_ctx(r, ctx, ngx_http_llm_router_module);

    return ctx;
}


ngx_int_t
ngx_http_llm_router_handler(ngx_http_request_t *r)
{
    ngx_int_t                         rc;
    ngx_chain_t                      *cl;
    ngx_http_cleanup_t               *hcln;
    ngx_pool_cleanup_t               *cln;
    ngx_http_llm_router_ctx_t        *ctx;
    ngx_http_llm_router_loc_conf_t   *llcf;
    ngx_http_llm_router_main_conf_t  *lmcf;

    llcf = ngx_http_get_module_loc_conf(r, ngx_http_llm_router_module);

    if (!ngx_http_llm_router_on(llcf) || r != r->main) {
        return NGX_DECLINED;
    }

    ctx = ngx_http_get_module_ctx(r, ngx_http_llm_router_module);

    if (ctx) {
        if (ctx->status == NGX_DECLINED && ctx->failover) {
            return ngx_http_llm_router_attempt(r, ctx);
        }

        return ctx->status;
    }

    ctx = ngx_http_llm_router_create_ctx(r);
    if (ctx == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    lmcf = ngx_http_get_module_main_conf(r, ngx_http_llm_router_module);

    cln = ngx_pool_cleanup_add(r->pool, 0);
    if (cln == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    ctx->dialect = ngx_http_llm_router_dialect(r);

    if (llmr_request_init(&ctx->request, ctx->dialect, &lmcf->keywords,
                          llcf->history)
        != LLMR_OK)
    {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    cln->handler = ngx_http_llm_router_cleanup;
    cln->data = ctx;

    hcln = ngx_http_cleanup_add(r, 0);
    if (hcln == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    hcln->handler = ngx_http_llm_router_unkey;
    hcln->data = ctx;

    ctx->request.classifier = llcf->classifier;
    ctx->request.hold_max = llcf->string_buffer_size;
    ctx->request.scan_limit = llcf->scan_limit;
    ctx->request.scratch = lmcf->scratch;
    ctx->request.scratch_size = lmcf->scratch_size;

    if (llcf->triage && ngx_http_llm_router_capture(r, ctx) != NGX_OK) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    ctx->status = NGX_DONE;

    if (r->request_body) {

        /*
         * read before the router ran, by another module or before an
         * internal redirect: parse what is in memory
         */

        for (cl = r->request_body->bufs; cl; cl = cl->next) {
            if (!ngx_buf_in_memory(cl->buf) && ngx_buf_size(cl->buf)) {
                ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                              "llm_router: the request body was saved to a "
                              "file before the router could read it");
                return NGX_HTTP_INTERNAL_SERVER_ERROR;
            }
        }

        if (ngx_http_llm_router_parse(r, ctx, r->request_body->bufs)
            != NGX_OK)
        {
            return NGX_HTTP_BAD_REQUEST;
        }

    } else {
        ctx->parsing = 1;
    }

    rc = ngx_http_read_client_request_body(r,
                                           ngx_http_llm_router_body_handler);

    if (rc >= NGX_HTTP_SPECIAL_RESPONSE) {
        return rc;
    }

    ngx_http_finalize_request(r, NGX_DONE);

    return NGX_DONE;
}


/*
 * The dialect of a request: that of its location, or, with "auto", that
 * of the end of its URI; chat when nothing tells.
 */

const llmr_dialect_t *
ngx_http_llm_router_dialect(ngx_http_request_t *r)
{
    const llmr_dialect_t            *d;
    ngx_http_llm_router_loc_conf_t  *llcf;

    llcf = ngx_http_get_module_loc_conf(r, ngx_http_llm_router_module);

    if (llcf->api < LLMR_APIS) {
        return &llmr_dialects[llcf->api];
    }

    d = llmr_dialect_of_path(r->uri.data, r->uri.len);

    return d ? d : &llmr_dialects[LLMR_API_CHAT];
}


static void
ngx_http_llm_router_cleanup(void *data)
{
    ngx_http_llm_router_ctx_t  *ctx = data;

    llmr_request_free(&ctx->request);
    ngx_http_llm_router_triage_cleanup(ctx);
}


/* every buffer of the body passes here once, as it arrives */

static ngx_int_t
ngx_http_llm_router_request_body_filter(ngx_http_request_t *r,
    ngx_chain_t *in)
{
    ngx_http_llm_router_ctx_t  *ctx;

    ctx = ngx_http_get_module_ctx(r, ngx_http_llm_router_module);

    if (ctx && ctx->parsing && ngx_http_llm_router_parse(r, ctx, in) != NGX_OK)
    {
        return NGX_HTTP_BAD_REQUEST;
    }

    return ngx_http_next_request_body_filter(r, in);
}


static ngx_int_t
ngx_http_llm_router_parse(ngx_http_request_t *r,
    ngx_http_llm_router_ctx_t *ctx, ngx_chain_t *in)
{
    ngx_buf_t  *b;

    for ( /* void */ ; in; in = in->next) {
        b = in->buf;

        if (llmr_request_feed(&ctx->request, b->pos, b->last - b->pos)
            != LLMR_OK)
        {
            ctx->parsing = 0;
            ctx->error.data = (u_char *) ctx->request.error;
            ctx->error.len = ngx_strlen(ctx->request.error);

            ngx_log_error(NGX_LOG_INFO, r->connection->log, 0,
                          "llm_router: %V", &ctx->error);

            return NGX_ERROR;
        }
    }

    return NGX_OK;
}


static void
ngx_http_llm_router_body_handler(ngx_http_request_t *r)
{
    ngx_http_llm_router_ctx_t  *ctx;

    ctx = ngx_http_get_module_ctx(r, ngx_http_llm_router_module);

    ctx->parsing = 0;

    ngx_http_llm_router_resume(r);
}


/*
 * Once the body is read, and posted again once a verdict that the
 * request waited for is known (the triage model's, Redis's on a budget)
 * or its time is up.
 */

void
ngx_http_llm_router_resume(ngx_http_request_t *r)
{
    ngx_http_llm_router_ctx_t  *ctx;

    ctx = ngx_http_get_module_ctx(r, ngx_http_llm_router_module);

    ctx->status = ngx_http_llm_router_route(r, ctx);

    if (ctx->status == NGX_AGAIN) {
        r->write_event_handler = ngx_http_request_empty_handler;
        return;
    }

    r->write_event_handler = ngx_http_core_run_phases;
    ngx_http_core_run_phases(r);
}


/* returns NGX_DECLINED to go on to the content phase, or an HTTP error */

static ngx_int_t
ngx_http_llm_router_route(ngx_http_request_t *r,
    ngx_http_llm_router_ctx_t *ctx)
{
    ngx_int_t        rc;
    struct timespec  t0, t1;

    /*
     * the decision's own time, in microseconds, for the metrics: not the
     * time spent waiting for a triage verdict
     */

    (void) clock_gettime(CLOCK_MONOTONIC, &t0);

    rc = ngx_http_llm_router_decided(r, ctx);

    (void) clock_gettime(CLOCK_MONOTONIC, &t1);

    ctx->decision_us += (t1.tv_sec - t0.tv_sec) * 1000000
                        + (t1.tv_nsec - t0.tv_nsec) / 1000;

    return rc;
}


static ngx_int_t
ngx_http_llm_router_decided(ngx_http_request_t *r,
    ngx_http_llm_router_ctx_t *ctx)
{
    ngx_int_t                        rc;
    ngx_http_llm_router_loc_conf_t  *llcf;

    llcf = ngx_http_get_module_loc_conf(r, ngx_http_llm_router_module);

    if (ctx->reserving) {
        /* decided already, a budget waited for Redis */
        goto reserve;
    }

    if (!ctx->parsed && llmr_request_finish(&ctx->request) != LLMR_OK) {
        ctx->error.data = (u_char *) ctx->request.error;
        ctx->error.len = ngx_strlen(ctx->request.error);

        ngx_log_error(NGX_LOG_INFO, r->connection->log, 0,
                      "llm_router: %V", &ctx->error);

        return NGX_HTTP_BAD_REQUEST;
    }

    ctx->parsed = 1;

    rc = ngx_http_llm_router_decide(r, ctx);
    if (rc != NGX_OK) {
        return rc;
    }

    if (llcf->explain) {
        rc = ngx_http_llm_router_same_dialect(r, ctx);
        if (rc != NGX_OK) {
            return rc;
        }

        /* nothing goes upstream: the body and headers stay as they are */
        ctx->routed = 1;
        return NGX_DECLINED;
    }

    /* what the client sent stays aside: each attempt is made from it */

    ctx->client_bufs = r->request_body->bufs;

    if (ngx_http_llm_router_strip_headers(r, ctx) != NGX_OK) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    ctx->reserving = 1;

reserve:

    /* budgets reserve the worst case, and may downgrade or reject */

    rc = ngx_http_llm_router_reserve(r, ctx);
    if (rc != NGX_OK) {
        return rc;
    }

    rc = ngx_http_llm_router_prepare(r, ctx);
    if (rc != NGX_OK) {
        ngx_http_llm_router_settle(r, ctx->reservations,
                                   &ctx->nreservations, 0);
        return rc;
    }

    ctx->routed = 1;
    ctx->failover = ctx->model->fallback
                    || (llcf->escalate && ctx->model->escalate);

    ngx_http_llm_router_shadow(r, ctx);

    ngx_log_debug3(NGX_LOG_DEBUG_HTTP, r->connection->log, 0,
                   "llm_router: model \"%V\" by rule \"%V\", %uD tokens",
                   &ctx->model->name, &ctx->rule,
                   ctx->request.f.est_tokens);

    return NGX_DECLINED;
}


static ngx_int_t
ngx_http_llm_router_decide(ngx_http_request_t *r,
    ngx_http_llm_router_ctx_t *ctx)
{
    ngx_int_t                         i, rc;
    llmr_rule_t                      *rule;
    llmr_features_t                  *f;
    ngx_http_llm_router_model_t      *models;
    ngx_http_llm_router_loc_conf_t   *llcf;
    ngx_http_llm_router_main_conf_t  *lmcf;

    llcf = ngx_http_get_module_loc_conf(r, ngx_http_llm_router_module);
    lmcf = ngx_http_get_module_main_conf(r, ngx_http_llm_router_module);

    f = &ctx->request.f;
    models = lmcf->models.elts;

    /* among the models the location can reach, of the request's dialect */

    if (llcf->pin && f->model_len && !f->model_truncated) {
        i = llmr_model_find(llcf->pin_models, llcf->npin, f->api,
                            f->model, f->model_len);

        if (i >= 0) {
            ctx->model = &models[llcf->pin_index[i]];
            ngx_str_set(&ctx->rule, "client");
            return NGX_OK;
        }
    }

    if (llcf->rules) {
        rule = llcf->rules->elts;

        i = llmr_rules_eval(rule, llcf->rules->nelts, f,
                            ngx_http_llm_router_var_test, r);

        if (i == LLMR_RULES_PENDING) {
            /* the rules before did not match: the triage model is asked */

            rc = ngx_http_llm_router_ask(r, ctx);
            if (rc != NGX_OK) {
                return rc;
            }

            /* a cached verdict, or a triage that failed at once */

            i = llmr_rules_eval(rule, llcf->rules->nelts, f,
                                ngx_http_llm_router_var_test, r);
        }

        if (i >= 0) {
            ctx->model = &models[rule[i].model];
            ctx->rule.data = (u_char *) rule[i].name.data;
            ctx->rule.len = rule[i].name.len;
            return NGX_OK;
        }
    }

    if (llcf->default_model) {
        ctx->model = llcf->default_model;
        ngx_str_set(&ctx->rule, "default");
        return NGX_OK;
    }

    ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                  "llm_router: no rule matched the request and no "
                  "\"llm_router_default\" is set");

    ngx_str_set(&ctx->error, "no model is configured for this request");
    ctx->no_retry = 1;

    return NGX_HTTP_INTERNAL_SERVER_ERROR;
}


static int
ngx_http_llm_router_var_test(void *data, const llmr_cond_t *cond)
{
    ngx_http_request_t *r = data;

    ngx_str_t                        value;
    ngx_http_variable_value_t       *v;
    ngx_http_llm_router_var_cond_t  *vc;
    ngx_http_llm_router_loc_conf_t  *llcf;

    llcf = ngx_http_get_module_loc_conf(r, ngx_http_llm_router_module);

    vc = llcf->vars->elts;
    vc += cond->arg;

    v = ngx_http_get_indexed_variable(r, vc->index);

    if (v == NULL || v->not_found) {
        /* not NULL: PCRE1's pcre_exec() refuses a NULL subject */
        ngx_str_set(&value, "");

    } else {
        value.data = v->data;
        value.len = v->len;
    }

#if (NGX_PCRE)
    if (vc->regex) {
        return ngx_http_regex_exec(r, vc->regex, &value) == NGX_OK;
    }
#endif

    return value.len == vc->value.len
           && ngx_strncmp(value.data, vc->value.data, value.len) == 0;
}


/*
 * A model of another dialect would not understand the body: nothing is
 * sent, and the client learns which models disagree.
 */

static ngx_int_t
ngx_http_llm_router_same_dialect(ngx_http_request_t *r,
    ngx_http_llm_router_ctx_t *ctx)
{
    u_char  *p;

    if (ctx->model->dialect == ctx->dialect) {
        return NGX_OK;
    }

    ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                  "llm_router: model \"%V\" chosen by \"%V\" speaks the "
                  "\"%V\" API, the request the \"%V\" API",
                  &ctx->model->name, &ctx->rule, &ctx->model->dialect->name,
                  &ctx->dialect->name);

    p = ngx_pnalloc(r->pool, NGX_MAX_ERROR_STR);
    if (p == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    ctx->error.data = p;
    ctx->error.len = ngx_snprintf(p, NGX_MAX_ERROR_STR,
                                  "the router chose model \"%V\" (rule "
                                  "\"%V\"), which speaks the \"%V\" API, "
                                  "for a request of the \"%V\" API",
                                  &ctx->model->name, &ctx->rule,
                                  &ctx->model->dialect->name,
                                  &ctx->dialect->name)
                     - p;
    ctx->no_retry = 1;

    return NGX_HTTP_INTERNAL_SERVER_ERROR;
}


/* the request for ctx->model: its credentials, its "model" in the body */

ngx_int_t
ngx_http_llm_router_prepare(ngx_http_request_t *r,
    ngx_http_llm_router_ctx_t *ctx)
{
    ngx_int_t  rc;

    rc = ngx_http_llm_router_same_dialect(r, ctx);
    if (rc != NGX_OK) {
        return rc;
    }

    rc = ngx_http_llm_router_credentials(r, ctx);
    if (rc != NGX_OK) {
        return rc;
    }

    if (ngx_http_llm_router_rewrite_body(r, ctx) != NGX_OK) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    return NGX_OK;
}


static ngx_int_t
ngx_http_llm_router_rewrite_body(ngx_http_request_t *r,
    ngx_http_llm_router_ctx_t *ctx)
{
    off_t    len;
    u_char  *p;

    if (ngx_http_llm_router_rewrite(r, ctx, ctx->model, ctx->client_bufs,
                                    &r->request_body->bufs, &len)
        != NGX_OK)
    {
        return NGX_ERROR;
    }

    r->headers_in.content_length_n = len;

    /* $content_length should tell what the provider gets */

    if (r->headers_in.content_length) {
        p = ngx_pnalloc(r->pool, NGX_OFF_T_LEN);
        if (p == NULL) {
            return NGX_ERROR;
        }

        r->headers_in.content_length->value.data = p;
        r->headers_in.content_length->value.len =
                    ngx_sprintf(p, "%O", r->headers_in.content_length_n) - p;
    }

    return NGX_OK;
}


/*
 * The body in, the client's, for a model: a chain of r's pool that
 * shares the buffers of in, and its length.
 */

ngx_int_t
ngx_http_llm_router_rewrite(ngx_http_request_t *r,
    ngx_http_llm_router_ctx_t *ctx, ngx_http_llm_router_model_t *model,
    ngx_chain_t *in, ngx_chain_t **out, off_t *len)
{
    u_char           *p;
    ngx_int_t         i, n;
    llmr_str_t        upstream;
    llmr_edit_t       edits[LLMR_EDITS_MAX];
    llmr_features_t  *f;

    f = &ctx->request.f;

    upstream.data = model->upstream_json.data;
    upstream.len = model->upstream_json.len;

    p = ngx_pnalloc(r->pool, llmr_rewrite_size(f, upstream.len));
    if (p == NULL) {
        return NGX_ERROR;
    }

    n = llmr_rewrite(f, &upstream, p, edits);

    /* the last edit first: the offsets of those before it stay true */

    *len = f->body_len;

    for (i = n - 1; i >= 0; i--) {
        if (ngx_http_llm_router_splice(r, in, &edits[i], &in) != NGX_OK) {
            return NGX_ERROR;
        }

        *len += edits[i].len - (edits[i].end - edits[i].start);
    }

    *out = in;

    return NGX_OK;
}


/*
 * A new chain: bytes [start, end) of the chain in replaced by the edit's
 * bytes.  Buffers are shared, not copied, and the chain in is left as it
 * is: the buffers cut are shallow copies that point into the same memory
 * or the same part of the temporary file.
 */

static ngx_int_t
ngx_http_llm_router_splice(ngx_http_request_t *r, ngx_chain_t *in,
    llmr_edit_t *edit, ngx_chain_t **chain)
{
    off_t         pos, size, start, end;
    ngx_buf_t    *b, *insert;
    ngx_uint_t    inserted;
    ngx_chain_t  *out, **last;

    insert = ngx_calloc_buf(r->pool);
    if (insert == NULL) {
        return NGX_ERROR;
    }

    insert->pos = edit->data;
    insert->last = edit->data + edit->len;
    insert->memory = 1;

    start = edit->start;
    end = edit->end;

    out = NULL;
    last = &out;
    inserted = 0;
    pos = 0;

    for ( /* void */ ; in; in = in->next) {
        b = in->buf;
        size = ngx_buf_size(b);

        if (size == 0) {
            /* a special buffer, such as the last one, stays as it is */

            if (ngx_http_llm_router_append(r->pool, &last, b, 0, 0)
                != NGX_OK)
            {
                return NGX_ERROR;
            }

            continue;
        }

        if (pos < start
            && ngx_http_llm_router_append(r->pool, &last, b, 0,
                                          ngx_min(size, start - pos))
               != NGX_OK)
        {
            return NGX_ERROR;
        }

        if (!inserted && start <= pos + size) {
            if (ngx_http_llm_router_append(r->pool, &last, insert, 0,
                                           edit->len)
                != NGX_OK)
            {
                return NGX_ERROR;
            }

            inserted = 1;
        }

        if (pos + size > end
            && ngx_http_llm_router_append(r->pool, &last, b,
                                          ngx_max(end - pos, 0), size)
               != NGX_OK)
        {
            return NGX_ERROR;
        }

        pos += size;
    }

    if (!inserted) {
        ngx_log_error(NGX_LOG_ALERT, r->connection->log, 0,
                      "llm_router: splice at %O is beyond the body", start);
        return NGX_ERROR;
    }

    *chain = out;

    return NGX_OK;
}


static ngx_int_t
ngx_http_llm_router_append(ngx_pool_t *pool, ngx_chain_t ***last,
    ngx_buf_t *b, off_t from, off_t to)
{
    off_t         size;
    ngx_buf_t    *s;
    ngx_chain_t  *cl;

    size = ngx_buf_size(b);

    if (from == 0 && to == size) {
        s = b;

    } else {
        s = ngx_calloc_buf(pool);
        if (s == NULL) {
            return NGX_ERROR;
        }

        *s = *b;

        if (ngx_buf_in_memory(b)) {
            s->pos = b->pos + from;
            s->last = b->pos + to;
        }

        if (b->in_file) {
            s->file_pos = b->file_pos + from;
            s->file_last = b->file_pos + to;
        }

        if (to != size) {
            s->last_buf = 0;
            s->last_in_chain = 0;
        }
    }

    cl = ngx_alloc_chain_link(pool);
    if (cl == NULL) {
        return NGX_ERROR;
    }

    cl->buf = s;
    cl->next = NULL;

    **last = cl;
    *last = &cl->next;

    return NGX_OK;
}


/*
 * The client's credentials are taken out once, into a header list with
 * room for one more header: each attempt adds its model's key to a copy
 * of that list.  The old elements stay where they are, so that the
 * pointers nginx keeps into them (r->headers_in.host and the like)
 * remain valid.
 */

static ngx_int_t
ngx_http_llm_router_strip_headers(ngx_http_request_t *r,
    ngx_http_llm_router_ctx_t *ctx)
{
    ngx_int_t                        k;
    ngx_uint_t                       i, n;
    ngx_list_t                      *list;
    ngx_list_part_t                 *part;
    ngx_table_elt_t                 *h, *e;
    ngx_http_llm_router_loc_conf_t  *llcf;

    if (ctx->headers.nalloc) {
        /* done before the triage model was asked */
        return NGX_OK;
    }

    llcf = ngx_http_get_module_loc_conf(r, ngx_http_llm_router_module);

    list = &r->headers_in.headers;
    n = 0;

    for (part = &list->part; part; part = part->next) {
        n += part->nelts;
    }

    if (ngx_list_init(&ctx->headers, r->pool, n + 1, sizeof(ngx_table_elt_t))
        != NGX_OK)
    {
        return NGX_ERROR;
    }

    part = &list->part;
    h = part->elts;

    for (i = 0; /* void */ ; i++) {

        if (i >= part->nelts) {
            if (part->next == NULL) {
                break;
            }

            part = part->next;
            h = part->elts;
            i = 0;
        }

        k = ngx_http_llm_router_client_header(h[i].key.data, h[i].key.len);

        if (k != NGX_ERROR && !(llcf->pass_headers & ((ngx_uint_t) 1 << k)))
        {
            continue;
        }

        e = ngx_list_push(&ctx->headers);
        if (e == NULL) {
            return NGX_ERROR;
        }

        *e = h[i];
    }

    r->headers_in.authorization = NULL;

    return NGX_OK;
}


/*
 * The provider's key is set here, whatever the client sent, so that a
 * client key never reaches a provider and no location can forget one.
 */

static ngx_int_t
ngx_http_llm_router_credentials(ngx_http_request_t *r,
    ngx_http_llm_router_ctx_t *ctx)
{
    ngx_str_t                    auth;
    ngx_http_llm_router_model_t  *model;

    model = ctx->model;

    /* one part, with room for the key: the saved list is not touched */
    r->headers_in.headers = ctx->headers;
    r->headers_in.headers.last = &r->headers_in.headers.part;

    if (ngx_http_llm_router_auth(r, model, &auth) != NGX_OK) {
        ngx_str_set(&ctx->error, "the model has no credentials");
        ctx->no_retry = 1;
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    if (auth.len == 0) {
        ctx->key_header = NULL;
        return NGX_OK;
    }

    if (ngx_http_llm_router_push_header(r->pool, &r->headers_in.headers,
                            &ngx_http_llm_router_auth_headers[model->auth],
                            &auth)
        != NGX_OK)
    {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    ctx->key_header = (ngx_table_elt_t *) r->headers_in.headers.part.elts
                      + r->headers_in.headers.part.nelts - 1;

    return NGX_OK;
}


/*
 * The key is for the request to the provider alone: once that request
 * is made, the header that carried it is taken out of the client's
 * headers, so that no variable ($http_authorization, $http_x_api_key),
 * add_header or log_format sees it.  nginx skips a header whose hash
 * is 0; the name and value are cleared as well.
 */

void
ngx_http_llm_router_hide_key(ngx_table_elt_t **key_header)
{
    ngx_table_elt_t  *h;

    h = *key_header;

    if (h == NULL) {
        return;
    }

    h->hash = 0;
    h->key.len = 0;
    h->lowcase_key = (u_char *) "";
    h->value.len = 0;

    *key_header = NULL;
}


/* before the request is logged, whatever ends it */

static void
ngx_http_llm_router_unkey(void *data)
{
    ngx_http_llm_router_ctx_t *ctx = data;

    ngx_http_llm_router_hide_key(&ctx->key_header);
}


/* the value of the model's credentials header; empty for auth none */

ngx_int_t
ngx_http_llm_router_auth(ngx_http_request_t *r,
    ngx_http_llm_router_model_t *model, ngx_str_t *value)
{
    u_char     *p;
    ngx_str_t   key;

    ngx_str_null(value);

    if (model->auth == NGX_HTTP_LLM_ROUTER_AUTH_NONE) {
        return NGX_OK;
    }

    if (ngx_http_complex_value(r, model->key, &key) != NGX_OK) {
        return NGX_ERROR;
    }

    if (key.len == 0) {
        ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                      "llm_router: the key of model \"%V\" is empty",
                      &model->name);
        return NGX_ERROR;
    }

    /*
     * a key computed from variables: a CR or LF would end its header and
     * start one of the client's choosing (keys without variables were
     * checked by nginx -t)
     */

    if (ngx_http_llm_router_has_control(key.data, key.len)) {
        ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                      "llm_router: the key of model \"%V\" has control "
                      "characters", &model->name);
        return NGX_ERROR;
    }

    if (model->auth != NGX_HTTP_LLM_ROUTER_AUTH_BEARER) {
        *value = key;
        return NGX_OK;
    }

    p = ngx_pnalloc(r->pool, sizeof("Bearer ") - 1 + key.len);
    if (p == NULL) {
        return NGX_ERROR;
    }

    value->data = p;
    p = ngx_cpymem(p, "Bearer ", sizeof("Bearer ") - 1);
    p = ngx_cpymem(p, key.data, key.len);
    value->len = p - value->data;

    return NGX_OK;
}


/*
 * The headers of a call the router makes (triage, shadow): the client's
 * without credentials, in a list of its own from pool, the model's key
 * and a JSON content type, its body being the module's whatever the
 * client's was, and the header its API requires ("anthropic-version")
 * if the client did not send it.  The list is made before the call,
 * which must never start with the client's.
 */

ngx_int_t
ngx_http_llm_router_call_headers(ngx_http_request_t *r,
    ngx_http_llm_router_ctx_t *ctx, ngx_http_llm_router_model_t *model,
    ngx_str_t *auth, ngx_list_t *list, ngx_pool_t *pool)
{
    ngx_str_t              name, value;
    ngx_uint_t             i, required;
    ngx_table_elt_t       *h, *e;
    const llmr_dialect_t  *d;

    if (ngx_http_llm_router_strip_headers(r, ctx) != NGX_OK) {
        return NGX_ERROR;
    }

    d = model->dialect;
    required = (d->header.len != 0);

    if (ngx_list_init(list, pool, ctx->headers.part.nelts + 3,
                      sizeof(ngx_table_elt_t))
        != NGX_OK)
    {
        return NGX_ERROR;
    }

    h = ctx->headers.part.elts;

    for (i = 0; i < ctx->headers.part.nelts; i++) {
        if (h[i].key.len == sizeof("content-type") - 1
            && ngx_strncmp(h[i].lowcase_key, "content-type",
                           sizeof("content-type") - 1) == 0)
        {
            continue;
        }

        if (h[i].key.len == d->header.len
            && ngx_strncmp(h[i].lowcase_key, d->header.data, d->header.len)
               == 0)
        {
            required = 0;
        }

        e = ngx_list_push(list);
        if (e == NULL) {
            return NGX_ERROR;
        }

        *e = h[i];
    }

    if (required) {
        name.data = (u_char *) d->header.data;
        name.len = d->header.len;
        value.data = (u_char *) d->header_value.data;
        value.len = d->header_value.len;

        if (ngx_http_llm_router_push_header(pool, list, &name, &value)
            != NGX_OK)
        {
            return NGX_ERROR;
        }
    }

    ngx_str_set(&name, "Content-Type");

    if (ngx_http_llm_router_push_header(pool, list, &name,
                                        &ngx_http_llm_router_json_type)
        != NGX_OK)
    {
        return NGX_ERROR;
    }

    if (auth->len == 0) {
        return NGX_OK;
    }

    return ngx_http_llm_router_push_header(pool, list,
                              &ngx_http_llm_router_auth_headers[model->auth],
                              auth);
}


static ngx_int_t
ngx_http_llm_router_push_header(ngx_pool_t *pool, ngx_list_t *list,
    ngx_str_t *name, ngx_str_t *value)
{
    ngx_table_elt_t  *h;

    h = ngx_list_push(list);
    if (h == NULL) {
        return NGX_ERROR;
    }

    h->key = *name;
    h->value = *value;
    h->lowcase_key = ngx_pnalloc(pool, name->len);
    if (h->lowcase_key == NULL) {
        return NGX_ERROR;
    }

    h->hash = ngx_hash_strlow(h->lowcase_key, name->data, name->len);
#if (nginx_version >= 1023000)
    h->next = NULL;
#endif

    return NGX_OK;
}


/* which of the headers removed, if any, a name is: see the list */

static ngx_int_t
ngx_http_llm_router_client_header(u_char *name, size_t len)
{
    u_char                         c;
    size_t                         k;
    ngx_uint_t                     i;
    ngx_http_llm_router_header_t  *h;

    h = ngx_http_llm_router_client_headers;

    for (i = 0; h[i].name.len; i++) {
        if (h[i].name.len != len) {
            continue;
        }

        for (k = 0; k < len; k++) {
            c = ngx_tolower(name[k]);

            if ((c == '_' ? '-' : c) != h[i].name.data[k]) {
                break;
            }
        }

        if (k == len) {
            return i;
        }
    }

    return NGX_ERROR;
}

