
/*
 * Copyright (C) the ngx_http_llm_router_module authors
 *
 * The response side: usage is read from the provider's answer as it
 * passes, and nginx's HTML error pages become OpenAI-style JSON errors.
 */


#include "ngx_http_llm_router_module.h"


typedef struct {
    ngx_uint_t                 status;
    ngx_str_t                  message;
} ngx_http_llm_router_status_t;


static ngx_int_t ngx_http_llm_router_header_filter(ngx_http_request_t *r);
static ngx_int_t ngx_http_llm_router_body_filter(ngx_http_request_t *r,
    ngx_chain_t *in);
static ngx_int_t ngx_http_llm_router_json_error(ngx_http_request_t *r,
    ngx_http_llm_router_ctx_t *ctx);
static void ngx_http_llm_router_consume(ngx_chain_t *in);


static ngx_http_output_header_filter_pt  ngx_http_next_header_filter;
static ngx_http_output_body_filter_pt    ngx_http_next_body_filter;


static ngx_http_llm_router_status_t  ngx_http_llm_router_statuses[] = {
    { 400, ngx_string("bad request") },
    { 401, ngx_string("authentication required") },
    { 403, ngx_string("forbidden") },
    { 404, ngx_string("not found") },
    { 405, ngx_string("method not allowed") },
    { 408, ngx_string("the request body was not received in time") },
    { 411, ngx_string("a request body with a length is required") },
    { 413, ngx_string("the request body is larger than "
                      "client_max_body_size") },
    { 429, ngx_string("too many requests") },
    { 500, ngx_string("internal server error") },
    { 502, ngx_string("the model provider could not be reached") },
    { 503, ngx_string("the service is unavailable") },
    { 504, ngx_string("the model provider did not answer in time") },
    { 0, ngx_string("the request failed") }
};


ngx_int_t
ngx_http_llm_router_filter_init(ngx_conf_t *cf)
{
    ngx_http_next_header_filter = ngx_http_top_header_filter;
    ngx_http_top_header_filter = ngx_http_llm_router_header_filter;

    ngx_http_next_body_filter = ngx_http_top_body_filter;
    ngx_http_top_body_filter = ngx_http_llm_router_body_filter;

    return NGX_OK;
}


static ngx_int_t
ngx_http_llm_router_header_filter(ngx_http_request_t *r)
{
    ngx_int_t                        rc;
    ngx_uint_t                       status, sse;
    ngx_time_t                      *tp;
    ngx_http_llm_router_ctx_t       *ctx;
    ngx_http_llm_router_loc_conf_t  *llcf;

    ctx = ngx_http_get_module_ctx(r->main, ngx_http_llm_router_module);

    if (r != r->main) {

        if (ctx && r == ctx->triage_sr) {
            /* the triage model's answer is the router's, not the client's */
            return ngx_http_llm_router_triage_header(r, ctx);
        }

        /* a try of failover: dropped, or the header of the answer */

        if (ctx && r == ctx->sr) {
            rc = ngx_http_llm_router_attempt_header(r, ctx);

            if (rc == NGX_DECLINED) {
                return NGX_OK;
            }

            if (rc == NGX_ERROR) {
                return rc;
            }
        }

        return ngx_http_next_header_filter(r);
    }

    llcf = ngx_http_get_module_loc_conf(r, ngx_http_llm_router_module);

    if (!ngx_http_llm_router_on(llcf)) {
        return ngx_http_next_header_filter(r);
    }

    /* nginx's own error page: an API client expects JSON */

    if (r->err_status >= NGX_HTTP_BAD_REQUEST
        && r->headers_out.content_type.len == sizeof("text/html") - 1
        && ngx_strncmp(r->headers_out.content_type.data, "text/html",
                       sizeof("text/html") - 1) == 0)
    {
        if (ctx == NULL) {
            ctx = ngx_http_llm_router_create_ctx(r);
            if (ctx == NULL) {
                return NGX_ERROR;
            }
        }

        if (ngx_http_llm_router_json_error(r, ctx) != NGX_OK) {
            return NGX_ERROR;
        }

        return ngx_http_next_header_filter(r);
    }

    status = r->headers_out.status;

    if (ctx && ctx->routed) {
        tp = ngx_timeofday();
        ctx->ttfb = (ngx_msec_t) ((tp->sec - r->start_sec) * 1000
                                  + (tp->msec - r->start_msec));
    }

    /* an explain answer is ours, not a provider's: it costs nothing */

    if (ctx && ctx->routed && !llcf->explain
        && status >= 200 && status < 300)
    {
        sse = r->headers_out.content_type.len
                                  >= sizeof("text/event-stream") - 1
              && ngx_strncasecmp(r->headers_out.content_type.data,
                                 (u_char *) "text/event-stream",
                                 sizeof("text/event-stream") - 1)
                 == 0;

        llmr_usage_init(&ctx->usage, sse);
        ctx->scan_usage = 1;
    }

    return ngx_http_next_header_filter(r);
}


static ngx_int_t
ngx_http_llm_router_json_error(ngx_http_request_t *r,
    ngx_http_llm_router_ctx_t *ctx)
{
    u_char                        *p;
    size_t                         len;
    ngx_str_t                      type;
    ngx_buf_t                     *b;
    ngx_table_elt_t               *h;
    ngx_http_llm_router_status_t  *s;

    if (ctx->error.len == 0) {
        for (s = ngx_http_llm_router_statuses; s->status; s++) {
            if (s->status == r->err_status) {
                break;
            }
        }

        ctx->error = s->message;
    }

    if (r->err_status >= NGX_HTTP_INTERNAL_SERVER_ERROR) {
        ngx_str_set(&type, "server_error");

    } else {
        ngx_str_set(&type, "invalid_request_error");
    }

    len = sizeof("{\"error\":{\"message\":\"\",\"type\":\"\","
                 "\"param\":null,\"code\":null}}\n") - 1
          + llmr_json_escape_size(ctx->error.data, ctx->error.len) + type.len;

    b = ngx_create_temp_buf(r->pool, len);
    if (b == NULL) {
        return NGX_ERROR;
    }

    p = ngx_cpymem(b->pos, "{\"error\":{\"message\":\"",
                   sizeof("{\"error\":{\"message\":\"") - 1);
    p = llmr_json_escape(p, ctx->error.data, ctx->error.len);
    p = ngx_sprintf(p, "\",\"type\":\"%V\",\"param\":null,\"code\":null}}\n",
                    &type);

    b->last = p;
    b->last_buf = 1;
    b->last_in_chain = 1;

    ctx->error_buf = b;
    ctx->json_error = 1;

    if (ctx->retry_after) {
        h = ngx_list_push(&r->headers_out.headers);
        if (h == NULL) {
            return NGX_ERROR;
        }

        h->hash = 1;
#if (nginx_version >= 1023000)
        h->next = NULL;
#endif
        ngx_str_set(&h->key, "Retry-After");
        h->value.data = ngx_pnalloc(r->pool, NGX_TIME_T_LEN);
        if (h->value.data == NULL) {
            return NGX_ERROR;
        }

        h->value.len = ngx_sprintf(h->value.data, "%T", ctx->retry_after)
                       - h->value.data;
    }

    ngx_str_set(&r->headers_out.content_type, "application/json");
    r->headers_out.content_type_len = sizeof("application/json") - 1;
    r->headers_out.content_type_lowcase = NULL;
    r->headers_out.charset.len = 0;

    r->headers_out.content_length_n = b->last - b->pos;

    if (r->headers_out.content_length) {
        r->headers_out.content_length->hash = 0;
        r->headers_out.content_length = NULL;
    }

    return NGX_OK;
}


static ngx_int_t
ngx_http_llm_router_body_filter(ngx_http_request_t *r, ngx_chain_t *in)
{
    ngx_buf_t                  *b;
    ngx_chain_t                *cl, out;
    ngx_http_llm_router_ctx_t  *ctx;

    ctx = ngx_http_get_module_ctx(r->main, ngx_http_llm_router_module);

    if (ctx && r == ctx->triage_sr) {
        return ngx_http_llm_router_triage_body(r, ctx, in);
    }

    if (ctx == NULL || (r != r->main && r != ctx->sr)) {
        return ngx_http_next_body_filter(r, in);
    }

    if (r != r->main && ctx->sr_failed) {
        /* the answer of a failed try never reaches the client */
        ngx_http_llm_router_consume(in);
        return NGX_OK;
    }

    if (r != r->main) {

        /* an answer that ends without its last buffer was cut short */

        for (cl = in; cl; cl = cl->next) {
            ctx->sr_complete |= cl->buf->last_in_chain || cl->buf->last_buf;
        }

        if (ctx->hold) {
            return ngx_http_llm_router_hold(r, ctx, in);
        }
    }

    if (ctx->json_error && r == r->main) {

        /* the HTML page is consumed and our JSON goes instead */

        ngx_http_llm_router_consume(in);

        if (ctx->json_error_sent || in == NULL) {
            return NGX_OK;
        }

        ctx->json_error_sent = 1;

        out.buf = ctx->error_buf;
        out.next = NULL;

        return ngx_http_next_body_filter(r, &out);
    }

    if (ctx->scan_usage) {
        for (cl = in; cl; cl = cl->next) {
            b = cl->buf;

            /*
             * a buffer that proxying has written to a temporary file is
             * not read back: usage falls back to the estimate
             */

            if (ngx_buf_in_memory(b)) {
                llmr_usage_feed(&ctx->usage, b->pos, b->last - b->pos);
            }
        }
    }

    return ngx_http_next_body_filter(r, in);
}


static void
ngx_http_llm_router_consume(ngx_chain_t *in)
{
    for ( /* void */ ; in; in = in->next) {
        in->buf->pos = in->buf->last;
        in->buf->file_pos = in->buf->file_last;
    }
}
