
/*
 * Copyright (C) the ngx_http_llm_router_module authors
 *
 * Failover and escalation: when a model has a fallback, or an escalate
 * target and llm_router_escalate is on, each try is a subrequest to the
 * location itself, proxied by nginx as usual.  The answer of a try that
 * failed (a connection error, a timeout, a status of
 * llm_router_fallback_status) never reaches the client: its header and
 * body are dropped, and the next model of the chain is tried with the
 * same request, rewritten for it.  When the answer may be escalated, it
 * is held back whole, checked, and either released byte for byte or
 * dropped for the escalate model's.
 */


#include "ngx_http_llm_router_module.h"


typedef struct {
    ngx_array_t                   *patterns;        /* ngx_regex_elt_t */
    ngx_log_t                     *log;
} ngx_http_llm_router_patterns_t;


static ngx_int_t ngx_http_llm_router_try_next(ngx_http_request_t *r,
    ngx_http_llm_router_ctx_t *ctx, ngx_http_llm_router_model_t *next);
static ngx_int_t ngx_http_llm_router_start(ngx_http_request_t *r,
    ngx_http_llm_router_ctx_t *ctx);
static ngx_int_t ngx_http_llm_router_attempt_done(ngx_http_request_t *r,
    void *data, ngx_int_t rc);
static ngx_http_llm_router_model_t *ngx_http_llm_router_next(
    ngx_http_request_t *r, ngx_http_llm_router_ctx_t *ctx);
static ngx_uint_t ngx_http_llm_router_failed(ngx_http_request_t *r,
    ngx_uint_t status);
static ngx_uint_t ngx_http_llm_router_tried(ngx_http_llm_router_ctx_t *ctx,
    ngx_http_llm_router_model_t *m);
static ngx_uint_t ngx_http_llm_router_usable(ngx_http_request_t *r,
    ngx_http_llm_router_ctx_t *ctx, ngx_http_llm_router_model_t *m);
static ngx_int_t ngx_http_llm_router_checked(ngx_http_request_t *r,
    ngx_http_llm_router_ctx_t *ctx);
static ngx_int_t ngx_http_llm_router_release(ngx_http_request_t *r,
    ngx_http_llm_router_ctx_t *ctx, ngx_http_request_t *sr);
static int ngx_http_llm_router_match(void *data, const unsigned char *p,
    size_t len);
static ngx_int_t ngx_http_llm_router_answer(ngx_http_request_t *r,
    ngx_http_llm_router_ctx_t *ctx);
static ngx_int_t ngx_http_llm_router_checked_release(ngx_http_request_t *r,
    ngx_http_llm_router_ctx_t *ctx);
static void ngx_http_llm_router_headers(ngx_http_request_t *r,
    ngx_http_headers_out_t *h, ngx_http_request_t *sr);
static ngx_msec_t ngx_http_llm_router_retry_after(ngx_http_request_t *sr);


/*
 * The precontent handler of the main request, once it is routed: starts
 * a try, or, woken up when one has ended, starts the next or finishes.
 */

ngx_int_t
ngx_http_llm_router_attempt(ngx_http_request_t *r,
    ngx_http_llm_router_ctx_t *ctx)
{
    ngx_int_t                       rc;
    ngx_http_llm_router_model_t    *next;
    ngx_http_llm_router_attempt_t  *a;

    if (ctx->sr == NULL) {

        /* a model cooling down after a 429 is skipped if it can be */

        if (ngx_http_llm_router_cooling(r, ctx->model)
            && (next = ngx_http_llm_router_next(r, ctx)) != NULL)
        {
            ngx_log_error(NGX_LOG_INFO, r->connection->log, 0,
                          "llm_router: model \"%V\" is cooling down, "
                          "\"%V\" answers", &ctx->model->name, &next->name);

            /* the log tells why the routed model did not answer */

            a = &ctx->attempts[ctx->nattempts++];
            ngx_memzero(a, sizeof(ngx_http_llm_router_attempt_t));
            a->model = ctx->model;
            a->reason = "cooldown";
            a->failed = 1;

            ctx->model = next;

            rc = ngx_http_llm_router_prepare(r, ctx);
            if (rc != NGX_OK) {
                return rc;
            }
        }

        return ngx_http_llm_router_start(r, ctx);
    }

    if (!ctx->sr_failed && ctx->hold) {
        /* the whole answer is here, held back */
        return ngx_http_llm_router_checked(r, ctx);
    }

    if (ctx->sr_failed) {
        a = &ctx->attempts[ctx->nattempts - 1];
        next = a->failed ? ngx_http_llm_router_next(r, ctx) : NULL;

        if (next == NULL && ctx->kept) {
            /* the stronger models failed: the cheap answer is better */
            return ngx_http_llm_router_checked_release(r, ctx);
        }

        if (next == NULL) {
            ngx_http_finalize_request(r, ctx->final_status);
            return NGX_DONE;
        }

        return ngx_http_llm_router_try_next(r, ctx, next);
    }

    /* the answer of the last try went to the client */

    if (!r->header_sent) {
        ngx_http_finalize_request(r, NGX_HTTP_BAD_GATEWAY);
        return NGX_DONE;
    }

    if (!ctx->sr_complete) {
        /* broken after its header: the client must see it broken too */
        ngx_http_finalize_request(r, NGX_ERROR);
        return NGX_DONE;
    }

    ngx_http_finalize_request(r, ngx_http_send_special(r, NGX_HTTP_LAST));

    return NGX_DONE;
}


/* after a try: the request made for another model, and sent */

static ngx_int_t
ngx_http_llm_router_try_next(ngx_http_request_t *r,
    ngx_http_llm_router_ctx_t *ctx, ngx_http_llm_router_model_t *next)
{
    ngx_int_t  rc;

    ctx->model = next;

    rc = ngx_http_llm_router_prepare(r, ctx);
    if (rc != NGX_OK) {
        ngx_http_finalize_request(r, rc);
        return NGX_DONE;
    }

    return ngx_http_llm_router_start(r, ctx);
}


static ngx_int_t
ngx_http_llm_router_start(ngx_http_request_t *r,
    ngx_http_llm_router_ctx_t *ctx)
{
    ngx_http_request_t              *sr;
    ngx_http_post_subrequest_t      *ps;
    ngx_http_llm_router_attempt_t   *a;
    ngx_http_llm_router_loc_conf_t  *llcf;

    ps = ngx_palloc(r->pool, sizeof(ngx_http_post_subrequest_t));
    if (ps == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    ps->handler = ngx_http_llm_router_attempt_done;
    ps->data = ctx;

    ctx->answered = ctx->nattempts;

    a = &ctx->attempts[ctx->nattempts++];
    ngx_memzero(a, sizeof(ngx_http_llm_router_attempt_t));
    a->model = ctx->model;
    a->start = ngx_current_msec;

    /* a clone goes on from this phase, to the location's proxy_pass */

    if (ngx_http_subrequest(r, &r->uri, &r->args, &sr, ps,
                            NGX_HTTP_SUBREQUEST_CLONE)
        != NGX_OK)
    {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    ctx->sr = sr;
    ctx->sr_failed = 0;
    ctx->sr_complete = 0;
    ctx->held = NULL;

    /* an answer that may be escalated is held back until it is checked */

    llcf = ngx_http_get_module_loc_conf(r, ngx_http_llm_router_module);

    ctx->hold = llcf->escalate && ctx->model->escalate
                && ngx_http_llm_router_usable(r, ctx, ctx->model->escalate)
                && ctx->nattempts < NGX_HTTP_LLM_ROUTER_ATTEMPTS_MAX
                && (!ctx->request.f.stream || llcf->escalate_stream)
                && llcf->escalate_buffer;

    ngx_log_debug1(NGX_LOG_DEBUG_HTTP, r->connection->log, 0,
                   "llm_router: trying model \"%V\"", &ctx->model->name);

    return NGX_AGAIN;
}


static ngx_int_t
ngx_http_llm_router_attempt_done(ngx_http_request_t *r, void *data,
    ngx_int_t rc)
{
    ngx_http_llm_router_ctx_t  *ctx = data;

    ngx_http_llm_router_attempt_t  *a;

    a = &ctx->attempts[ctx->nattempts - 1];
    a->latency = ngx_current_msec - a->start;

    if (a->status == 0 && rc >= NGX_HTTP_SPECIAL_RESPONSE) {
        a->status = rc;
    }

    return rc;
}


/*
 * The header of a try: a failure with a model left to try is dropped;
 * anything else becomes the header of the client's answer.  nginx's own
 * error pages (no connection, a timeout) always stay inside: the main
 * request answers them with its JSON error once no model is left.
 */

ngx_int_t
ngx_http_llm_router_attempt_header(ngx_http_request_t *sr,
    ngx_http_llm_router_ctx_t *ctx)
{
    ngx_uint_t                      status;
    ngx_http_request_t             *r;
    ngx_http_llm_router_attempt_t  *a;

    r = sr->main;
    status = sr->err_status ? sr->err_status : sr->headers_out.status;

    a = &ctx->attempts[ctx->nattempts - 1];
    a->status = status;

    if (status == NGX_HTTP_TOO_MANY_REQUESTS) {
        ngx_http_llm_router_cool(r, ctx->model,
                                 ngx_http_llm_router_retry_after(sr));
    }

    if (ngx_http_llm_router_failed(r, status)) {
        a->reason = sr->err_status ? "upstream" : "status";
        a->failed = 1;
    }

    if (sr->err_status || (a->failed && ngx_http_llm_router_next(r, ctx))) {
        ctx->sr_failed = 1;
        ctx->final_status = status;

        ngx_log_error(NGX_LOG_INFO, r->connection->log, 0,
                      "llm_router: model \"%V\" failed with %ui",
                      &ctx->model->name, status);

        return NGX_DECLINED;
    }

    if (ctx->hold && status >= 200 && status < 300) {
        ctx->held_headers = sr->headers_out;
        ctx->held_sr = sr;
        return NGX_DECLINED;
    }

    ctx->hold = 0;
    ngx_http_llm_router_headers(r, &sr->headers_out, sr);

    return ngx_http_send_header(r);
}


/*
 * The answer's header for the main request.  Lists whose last part is
 * the one inside the subrequest's headers_out get theirs: headers that
 * filters add (add_header) then go into the main request's list.
 */

static void
ngx_http_llm_router_headers(ngx_http_request_t *r, ngx_http_headers_out_t *h,
    ngx_http_request_t *sr)
{
    r->headers_out = *h;

    if (h->headers.last == &sr->headers_out.headers.part) {
        r->headers_out.headers.last = &r->headers_out.headers.part;
    }

    if (h->trailers.last == &sr->headers_out.trailers.part) {
        r->headers_out.trailers.last = &r->headers_out.trailers.part;
    }
}


/*
 * The body of a held answer is copied aside as it comes (the upstream's
 * buffers are reused) into a buffer that grows as needed; one larger
 * than llm_router_escalate_buffer, or in a temporary file, is released
 * as it is, unchecked.
 */

ngx_int_t
ngx_http_llm_router_hold(ngx_http_request_t *sr,
    ngx_http_llm_router_ctx_t *ctx, ngx_chain_t *in)
{
    size_t                           size, held;
    ngx_buf_t                       *b;
    ngx_chain_t                     *cl;
    ngx_http_llm_router_loc_conf_t  *llcf;

    llcf = ngx_http_get_module_loc_conf(sr, ngx_http_llm_router_module);

    for (cl = in; cl; cl = cl->next) {
        size = ngx_buf_size(cl->buf);

        if (size == 0) {
            /* the last buffer and the like: the main request ends it */
            continue;
        }

        b = ctx->held;
        held = b ? (size_t) (b->last - b->pos) : 0;

        if (!ngx_buf_in_memory(cl->buf)
            || held + size > llcf->escalate_buffer)
        {
            break;
        }

        if (b == NULL || size > (size_t) (b->end - b->last)) {

            /* doubling, up to llm_router_escalate_buffer */

            b = ngx_create_temp_buf(sr->pool,
                                    ngx_min(llcf->escalate_buffer,
                                            ngx_max(2 * (held + size),
                                                    16384)));
            if (b == NULL) {
                return NGX_ERROR;
            }

            if (ctx->held) {
                b->last = ngx_cpymem(b->last, ctx->held->pos, held);
            }

            ctx->held = b;
        }

        b->last = ngx_cpymem(b->last, cl->buf->pos, size);
        cl->buf->pos = cl->buf->last;
    }

    if (cl == NULL) {
        return NGX_OK;
    }

    ngx_log_error(NGX_LOG_INFO, sr->connection->log, 0,
                  "llm_router: the answer of model \"%V\" is larger than "
                  "llm_router_escalate_buffer, not checked",
                  &ctx->model->name);

    return ngx_http_llm_router_release(sr->main, ctx, sr) == NGX_ERROR
           ? NGX_ERROR : ngx_http_output_filter(sr, cl);
}


/*
 * The held answer goes to the client: its header, then what was held.
 * From the subrequest's body filter the rest follows; from the main
 * request the answer is all there.
 */

static ngx_int_t
ngx_http_llm_router_release(ngx_http_request_t *r,
    ngx_http_llm_router_ctx_t *ctx, ngx_http_request_t *sr)
{
    ngx_int_t    rc;
    ngx_chain_t  out;

    ctx->hold = 0;
    ngx_http_llm_router_headers(r, &ctx->held_headers, ctx->held_sr);

    rc = ngx_http_send_header(r);

    if (rc == NGX_ERROR || ctx->held == NULL
        || ctx->held->last == ctx->held->pos)
    {
        return rc;
    }

    out.buf = ctx->held;
    out.next = NULL;

    ctx->held = NULL;

    return ngx_http_output_filter(sr, &out);
}


/* the held answer is whole: it goes out, or the escalate model answers */

static ngx_int_t
ngx_http_llm_router_checked(ngx_http_request_t *r,
    ngx_http_llm_router_ctx_t *ctx)
{
    size_t                           len;
    ngx_uint_t                       sse;
    u_char                          *content;
    llmr_answer_t                    answer;
    llmr_verdict_e                   v;
    llmr_criteria_t                  c;
    ngx_http_llm_router_patterns_t   refuse, require;
    ngx_http_llm_router_account_t    a;
    ngx_http_llm_router_loc_conf_t  *llcf;

    llcf = ngx_http_get_module_loc_conf(r, ngx_http_llm_router_module);

    len = ctx->held ? (size_t) (ctx->held->last - ctx->held->pos) : 0;

    content = ngx_pnalloc(r->pool, len + 1);
    if (content == NULL) {
        ngx_http_finalize_request(r, NGX_HTTP_INTERNAL_SERVER_ERROR);
        return NGX_DONE;
    }

    ngx_memzero(&c, sizeof(llmr_criteria_t));

    c.finish = 1;
    c.empty = 1;
    c.min_length = llcf->escalate_min_length;
    c.json = llcf->escalate_json && ctx->request.f.json_mode;
    c.tool_args = llcf->escalate_tool_args;

    refuse.patterns = llcf->escalate_patterns;
    refuse.log = r->connection->log;
    require.patterns = llcf->escalate_require;
    require.log = r->connection->log;

    c.pattern = refuse.patterns ? ngx_http_llm_router_match : NULL;
    c.pattern_data = &refuse;
    c.require = require.patterns ? ngx_http_llm_router_match : NULL;
    c.require_data = &require;

    sse = ctx->held_headers.content_type.len >= sizeof("text/event-stream") - 1
          && ngx_strncasecmp(ctx->held_headers.content_type.data,
                             (u_char *) "text/event-stream",
                             sizeof("text/event-stream") - 1)
             == 0;

    llmr_answer_init(&answer, ctx->dialect, &c, content, len);

    /* an answer cut short is no answer */

    v = ctx->sr_complete
        ? llmr_answer_check(&answer, ctx->held ? ctx->held->pos : content,
                            len, sse)
        : LLMR_VERDICT_UNREADABLE;

    if (v == LLMR_VERDICT_OK) {
        return ngx_http_llm_router_answer(r, ctx);
    }

    /* the held answer was billed: it counts in the cost */

    llmr_usage_init(&ctx->usage, ctx->dialect, sse);

    if (ctx->held) {
        llmr_usage_feed(&ctx->usage, ctx->held->pos, len);
    }

    ctx->scan_usage = 1;
    ngx_http_llm_router_account(r, ctx, &a);
    ctx->scan_usage = 0;

    ctx->attempts[ctx->nattempts - 1].tokens = a.tokens;
    ctx->attempts[ctx->nattempts - 1].cost = a.cost;
    ctx->attempts[ctx->nattempts - 1].reason = llmr_verdict_name(v);

    ctx->escalated = 1;
    ctx->escalation_reason = llmr_verdict_name(v);

    ctx->kept_headers = ctx->held_headers;
    ctx->kept_sr = ctx->held_sr;
    ctx->kept = ctx->held;
    ctx->kept_model = ctx->model;
    ctx->kept_attempt = ctx->nattempts - 1;

    ngx_log_error(NGX_LOG_INFO, r->connection->log, 0,
                  "llm_router: the answer of model \"%V\" is escalated "
                  "to \"%V\": %s", &ctx->model->name,
                  &ctx->model->escalate->name, ctx->escalation_reason);

    return ngx_http_llm_router_try_next(r, ctx, ctx->model->escalate);
}


/* the held answer, whole, is the client's */

static ngx_int_t
ngx_http_llm_router_answer(ngx_http_request_t *r,
    ngx_http_llm_router_ctx_t *ctx)
{
    ngx_int_t  rc;

    rc = ngx_http_llm_router_release(r, ctx, r);

    if (rc == NGX_ERROR) {
        ngx_http_finalize_request(r, rc);
        return NGX_DONE;
    }

    ngx_http_finalize_request(r, ngx_http_send_special(r, NGX_HTTP_LAST));

    return NGX_DONE;
}


/*
 * Every model the answer was escalated to failed: the escalated answer,
 * inadequate as it seemed, is still better than an error.
 */

static ngx_int_t
ngx_http_llm_router_checked_release(ngx_http_request_t *r,
    ngx_http_llm_router_ctx_t *ctx)
{
    ngx_log_error(NGX_LOG_INFO, r->connection->log, 0,
                  "llm_router: the escalated answer of model \"%V\" is "
                  "sent: no stronger model answered", &ctx->kept_model->name);

    ctx->model = ctx->kept_model;
    ctx->answered = ctx->kept_attempt;
    ctx->held_headers = ctx->kept_headers;
    ctx->held_sr = ctx->kept_sr;
    ctx->held = ctx->kept;

    return ngx_http_llm_router_answer(r, ctx);
}


static int
ngx_http_llm_router_match(void *data, const unsigned char *p, size_t len)
{
    ngx_http_llm_router_patterns_t *pp = data;

    ngx_str_t  s;

    s.data = (u_char *) p;
    s.len = len;

    return ngx_regex_exec_array(pp->patterns, &s, pp->log) == NGX_OK;
}


static ngx_uint_t
ngx_http_llm_router_failed(ngx_http_request_t *r, ngx_uint_t status)
{
    ngx_uint_t                       i, *s;
    ngx_http_llm_router_loc_conf_t  *llcf;

    llcf = ngx_http_get_module_loc_conf(r, ngx_http_llm_router_module);

    s = llcf->fallback_status->elts;

    for (i = 0; i < llcf->fallback_status->nelts; i++) {
        if (s[i] == status) {
            return 1;
        }
    }

    return 0;
}


/*
 * The next model of the chain that has not been tried and whose context
 * window holds the prompt and the answer asked for.
 */

static ngx_http_llm_router_model_t *
ngx_http_llm_router_next(ngx_http_request_t *r,
    ngx_http_llm_router_ctx_t *ctx)
{
    ngx_http_llm_router_model_t  *m;

    if (ctx->nattempts == NGX_HTTP_LLM_ROUTER_ATTEMPTS_MAX) {
        return NULL;
    }

    for (m = ctx->model->fallback; m; m = m->fallback) {
        if (ngx_http_llm_router_usable(r, ctx, m)) {
            return m;
        }
    }

    return NULL;
}


/*
 * A model that has not been tried, is not cooling down, and whose
 * context window holds the prompt and the answer asked for.
 */

static ngx_uint_t
ngx_http_llm_router_usable(ngx_http_request_t *r,
    ngx_http_llm_router_ctx_t *ctx, ngx_http_llm_router_model_t *m)
{
    uint64_t          need;
    llmr_features_t  *f;

    if (ngx_http_llm_router_tried(ctx, m)) {
        return 0;
    }

    if (ngx_http_llm_router_cooling(r, m)) {
        ngx_log_debug1(NGX_LOG_DEBUG_HTTP, r->connection->log, 0,
                       "llm_router: model \"%V\" is cooling down", &m->name);
        return 0;
    }

    f = &ctx->request.f;
    need = f->prompt_tokens + (f->max_tokens > 0 ? f->max_tokens : 0);

    if (m->context && m->context < need) {
        ngx_log_debug2(NGX_LOG_DEBUG_HTTP, r->connection->log, 0,
                       "llm_router: model \"%V\" is too small for "
                       "%uL tokens", &m->name, need);
        return 0;
    }

    return 1;
}


static ngx_uint_t
ngx_http_llm_router_tried(ngx_http_llm_router_ctx_t *ctx,
    ngx_http_llm_router_model_t *m)
{
    ngx_uint_t  i;

    for (i = 0; i < ctx->nattempts; i++) {
        if (ctx->attempts[i].model == m) {
            return 1;
        }
    }

    return 0;
}


/*
 * How long a model that answered 429 is skipped: its Retry-After, in
 * seconds or as a date, at most five minutes; or llm_router_cooldown.
 */

static ngx_msec_t
ngx_http_llm_router_retry_after(ngx_http_request_t *sr)
{
    time_t                           t;
    ngx_int_t                        n;
    ngx_uint_t                       i;
    ngx_list_part_t                 *part;
    ngx_table_elt_t                 *h;
    ngx_http_llm_router_loc_conf_t  *llcf;

    part = &sr->headers_out.headers.part;
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

        if (h[i].hash == 0 || h[i].key.len != sizeof("Retry-After") - 1
            || ngx_strncasecmp(h[i].key.data, (u_char *) "Retry-After",
                               sizeof("Retry-After") - 1)
               != 0)
        {
            continue;
        }

        n = ngx_atoi(h[i].value.data, h[i].value.len);

        if (n == NGX_ERROR) {
            t = ngx_parse_http_time(h[i].value.data, h[i].value.len);
            n = (t == NGX_ERROR) ? NGX_ERROR : t - ngx_time();
        }

        if (n != NGX_ERROR) {
            return (ngx_msec_t) ngx_max(ngx_min(n, 300), 0) * 1000;
        }
    }

    llcf = ngx_http_get_module_loc_conf(sr, ngx_http_llm_router_module);

    return llcf->cooldown;
}
