
/*
 * Copyright (C) the ngx_http_llm_router_module authors
 *
 * The response side: usage is read from the provider's answer as it
 * passes, a chat stream is given back as the client asked for it, and
 * nginx's HTML error pages become JSON errors in the client's dialect.
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
static ngx_uint_t ngx_http_llm_router_unasked(ngx_http_request_t *r,
    ngx_http_llm_router_ctx_t *ctx);
static ngx_int_t ngx_http_llm_router_add_header(ngx_http_request_t *r,
    const char *name, u_char *value, size_t len);
static ngx_int_t ngx_http_llm_router_unask(ngx_http_request_t *r,
    ngx_http_llm_router_ctx_t *ctx, ngx_chain_t **in);
static ngx_buf_t *ngx_http_llm_router_strip_buf(ngx_http_request_t *r,
    ngx_http_llm_router_strip_t *st, size_t size);
static ngx_int_t ngx_http_llm_router_strip_line(ngx_http_request_t *r,
    ngx_http_llm_router_strip_t *st);
static u_char *ngx_http_llm_router_unask_line(
    ngx_http_llm_router_strip_t *strip, u_char *line, size_t len, u_char *out);
static u_char *ngx_http_llm_router_keep_tail(
    ngx_http_llm_router_strip_t *strip, u_char *p, size_t n, u_char *out);


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

        if (ctx && ctx->shadow && r == ctx->shadow->sr) {
            return ngx_http_llm_router_shadow_header(r, ctx->shadow);
        }

        /* a try of failover: dropped, or the header of the answer */

        if (ctx && r == ctx->sr) {
            if (ngx_http_llm_router_unasked(r, ctx) && r->upstream) {
                r->upstream->buffering = 0;
            }

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

    /* the answer has come: the request to the provider was made */

    if (ctx) {
        ngx_http_llm_router_hide_key(&ctx->key_header);
    }

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
        sse = ngx_http_llm_router_sse(r);

        llmr_usage_init(&ctx->usage, ctx->dialect, sse);
        ctx->scan_usage = 1;

        if (ctx->shadow) {
            ngx_http_llm_router_shadow_keep(ctx->shadow, &ctx->usage);
        }

        /*
         * the usage chunk the router asked for is not the client's; the
         * answer is not buffered to a file, which would not be read back
         */

        if (ngx_http_llm_router_unasked(r, ctx) && ctx->strip == NULL) {
            if (r->upstream) {
                r->upstream->buffering = 0;
            }

            ctx->strip = ngx_pcalloc(r->pool,
                                     sizeof(ngx_http_llm_router_strip_t));
            if (ctx->strip == NULL) {
                return NGX_ERROR;
            }

            /* the length changes */
            ngx_http_clear_content_length(r);
        }
    }

    return ngx_http_next_header_filter(r);
}


/*
 * The error in the shape of the client's dialect.  One it cannot fix by
 * retrying (a spent budget, a configuration that chose no model) says
 * so: the OpenAI and Anthropic SDKs would otherwise retry, and sleep for
 * as long as Retry-After says.
 */

ngx_uint_t
ngx_http_llm_router_sse(ngx_http_request_t *r)
{
    return r->headers_out.content_type.len >= sizeof("text/event-stream") - 1
           && ngx_strncasecmp(r->headers_out.content_type.data,
                              (u_char *) "text/event-stream",
                              sizeof("text/event-stream") - 1)
              == 0;
}


/* a chat stream that carries the usage only the router asked for */

static ngx_uint_t
ngx_http_llm_router_unasked(ngx_http_request_t *r,
    ngx_http_llm_router_ctx_t *ctx)
{
    return ctx->dialect && ctx->dialect->stream_usage
           && ctx->request.f.stream && !ctx->request.f.include_usage
           && ngx_http_llm_router_sse(r);
}


static ngx_int_t
ngx_http_llm_router_json_error(ngx_http_request_t *r,
    ngx_http_llm_router_ctx_t *ctx)
{
    u_char                        *p;
    ngx_buf_t                     *b;
    ngx_http_llm_router_status_t  *s;

    if (ctx->error.len == 0) {
        for (s = ngx_http_llm_router_statuses; s->status; s++) {
            if (s->status == r->err_status) {
                break;
            }
        }

        ctx->error = s->message;
    }

    if (ctx->dialect == NULL) {
        ctx->dialect = ngx_http_llm_router_dialect(r);
    }

    b = ngx_create_temp_buf(r->pool,
                            llmr_error_json_size(ctx->error.data,
                                                 ctx->error.len));
    if (b == NULL) {
        return NGX_ERROR;
    }

    b->last = llmr_error_json(ctx->dialect, r->err_status, ctx->error.data,
                              ctx->error.len, b->pos);
    b->last_buf = 1;
    b->last_in_chain = 1;

    ctx->error_buf = b;
    ctx->json_error = 1;

    if (ctx->retry_after) {
        p = ngx_pnalloc(r->pool, NGX_TIME_T_LEN);
        if (p == NULL) {
            return NGX_ERROR;
        }

        if (ngx_http_llm_router_add_header(r, "Retry-After", p,
                                  ngx_sprintf(p, "%T", ctx->retry_after) - p)
            != NGX_OK)
        {
            return NGX_ERROR;
        }
    }

    if (ctx->no_retry
        && ngx_http_llm_router_add_header(r, "x-should-retry",
                                          (u_char *) "false",
                                          sizeof("false") - 1)
           != NGX_OK)
    {
        return NGX_ERROR;
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
ngx_http_llm_router_add_header(ngx_http_request_t *r, const char *name,
    u_char *value, size_t len)
{
    ngx_table_elt_t  *h;

    h = ngx_list_push(&r->headers_out.headers);
    if (h == NULL) {
        return NGX_ERROR;
    }

    h->hash = 1;
#if (nginx_version >= 1023000)
    h->next = NULL;
#endif
    h->key.data = (u_char *) name;
    h->key.len = ngx_strlen(name);
    h->value.data = value;
    h->value.len = len;

    return NGX_OK;
}


static ngx_int_t
ngx_http_llm_router_body_filter(ngx_http_request_t *r, ngx_chain_t *in)
{
    ngx_int_t                   rc;
    ngx_buf_t                  *b;
    ngx_chain_t                *cl, out;
    ngx_http_llm_router_ctx_t  *ctx;

    ctx = ngx_http_get_module_ctx(r->main, ngx_http_llm_router_module);

    if (ctx && r == ctx->triage_sr) {
        return ngx_http_llm_router_triage_body(r, ctx, in);
    }

    if (ctx && ctx->shadow && r == ctx->shadow->sr) {
        return ngx_http_llm_router_shadow_body(r, ctx->shadow, in);
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

    if (ctx->strip == NULL) {
        return ngx_http_next_body_filter(r, in);
    }

    if (ngx_http_llm_router_unask(r, ctx, &in) != NGX_OK) {
        return NGX_ERROR;
    }

    rc = ngx_http_next_body_filter(r, in);

    /* the buffers sent are written again: the stream's size is not held */

    ngx_chain_update_chains(r->pool, &ctx->strip->free, &ctx->strip->busy,
                            &in, (ngx_buf_tag_t) &ngx_http_llm_router_module);

    return rc;
}


/*
 * The stream without what the client did not ask for: each buffer is
 * copied, whole lines made of its bytes and of those held from the
 * buffers before.  A line is held up to a bound; a longer one, not the
 * usage chunk, goes on as it comes but for its last bytes, which may
 * hold "usage":null.
 */

static ngx_int_t
ngx_http_llm_router_unask(ngx_http_request_t *r,
    ngx_http_llm_router_ctx_t *ctx, ngx_chain_t **in)
{
    int                           drop;
    u_char                       *p, *end, *nl, *o;
    size_t                        n, size;
    ngx_buf_t                    *b, *ob;
    ngx_chain_t                  *cl, *out, **last;
    ngx_http_llm_router_strip_t  *st;

    st = ctx->strip;
    out = NULL;
    last = &out;

    for (cl = *in; cl; cl = cl->next) {
        b = cl->buf;

        if ((!ngx_buf_in_memory(b) && !ngx_buf_special(b))
            || (ngx_buf_special(b) && !(b->last_buf && st->len)))
        {
            ob = b;
            goto next;
        }

        /* the line held, then the buffer's, at most */

        size = st->len + (b->last - b->pos) + 1;

        ob = ngx_http_llm_router_strip_buf(r, st, size);
        if (ob == NULL) {
            return NGX_ERROR;
        }

        o = ob->pos;

        for (p = b->pos, end = b->last; p < end; p += n) {
            nl = ngx_strlchr(p, end, '\n');
            n = nl ? (size_t) (nl + 1 - p) : (size_t) (end - p);

            if (st->long_line || st->len + n > NGX_HTTP_LLM_ROUTER_STRIP_LINE)
            {
                if (ngx_http_llm_router_strip_line(r, st) != NGX_OK) {
                    return NGX_ERROR;
                }

                st->long_line = 1;
                o = ngx_http_llm_router_keep_tail(st, p, n, o);

                if (nl) {
                    o += llmr_usage_unasked(st->line, st->len, 0, o, &drop);
                    st->len = 0;
                    st->long_line = 0;
                }

                continue;
            }

            if (nl && st->len == 0) {
                /* a whole line, read where it is */
                o = ngx_http_llm_router_unask_line(st, p, n, o);
                continue;
            }

            if (ngx_http_llm_router_strip_line(r, st) != NGX_OK) {
                return NGX_ERROR;
            }

            ngx_memcpy(st->line + st->len, p, n);
            st->len += n;

            if (nl) {
                o = ngx_http_llm_router_unask_line(st, st->line, st->len, o);
                st->len = 0;
            }
        }

        /* the stream ends: a line without its end goes as it is */

        if (b->last_buf && st->len) {
            o = ngx_cpymem(o, st->line, st->len);
            st->len = 0;
        }

        ob->last = o;
        ob->flush = b->flush;
        ob->last_buf = b->last_buf;
        ob->last_in_chain = b->last_in_chain;

        if (o == ob->pos) {
            /* nothing to send yet: a special buffer, not an empty one */
            ob->temporary = 0;
            ob->sync = 1;
        }

        b->pos = b->last;

    next:

        *last = ngx_alloc_chain_link(r->pool);
        if (*last == NULL) {
            return NGX_ERROR;
        }

        (*last)->buf = ob;
        (*last)->next = NULL;
        last = &(*last)->next;
    }

    *in = out;

    return NGX_OK;
}


/* an output buffer of size bytes at least: one sent before, or a new one */

static ngx_buf_t *
ngx_http_llm_router_strip_buf(ngx_http_request_t *r,
    ngx_http_llm_router_strip_t *st, size_t size)
{
    ngx_buf_t    *b;
    ngx_chain_t  *cl;

    cl = ngx_chain_get_free_buf(r->pool, &st->free);
    if (cl == NULL) {
        return NULL;
    }

    b = cl->buf;
    ngx_free_chain(r->pool, cl);

    if ((size_t) (b->end - b->start) < size) {
        b->start = ngx_pnalloc(r->pool, ngx_max(size, 4096));
        if (b->start == NULL) {
            return NULL;
        }

        b->end = b->start + ngx_max(size, 4096);
    }

    b->pos = b->start;
    b->last = b->start;
    b->temporary = 1;
    b->sync = 0;
    b->tag = (ngx_buf_tag_t) &ngx_http_llm_router_module;

    return b;
}


/* the line held, when one must be: of the few streams that cut lines */

static ngx_int_t
ngx_http_llm_router_strip_line(ngx_http_request_t *r,
    ngx_http_llm_router_strip_t *st)
{
    if (st->line == NULL) {
        st->line = ngx_pnalloc(r->pool, NGX_HTTP_LLM_ROUTER_STRIP_LINE);
        if (st->line == NULL) {
            return NGX_ERROR;
        }
    }

    return NGX_OK;
}


/* the bytes held and p, but for their last ones, which are held */

static u_char *
ngx_http_llm_router_keep_tail(ngx_http_llm_router_strip_t *strip, u_char *p,
    size_t n, u_char *out)
{
    size_t  total, keep, send, held;

    total = strip->len + n;
    keep = ngx_min(total, NGX_HTTP_LLM_ROUTER_STRIP_TAIL);
    send = total - keep;
    held = ngx_min(send, strip->len);

    out = ngx_cpymem(out, strip->line, held);
    out = ngx_cpymem(out, p, send - held);

    ngx_memmove(strip->line, strip->line + held, strip->len - held);
    ngx_memcpy(strip->line + strip->len - held, p + send - held,
               n - (send - held));

    strip->len = keep;

    return out;
}


static u_char *
ngx_http_llm_router_unask_line(ngx_http_llm_router_strip_t *strip,
    u_char *line, size_t len, u_char *out)
{
    int  drop;

    /* the blank line that ended a dropped event goes with it */

    if (strip->drop_blank
        && ((len == 1 && line[0] == '\n')
            || (len == 2 && line[0] == '\r' && line[1] == '\n')))
    {
        strip->drop_blank = 0;
        return out;
    }

    strip->drop_blank = 0;

    len = llmr_usage_unasked(line, len, 1, out, &drop);

    if (drop) {
        strip->drop_blank = 1;
        return out;
    }

    return out + len;
}


void
ngx_http_llm_router_consume(ngx_chain_t *in)
{
    for ( /* void */ ; in; in = in->next) {
        in->buf->pos = in->buf->last;
        in->buf->file_pos = in->buf->file_last;
    }
}
