
/*
 * Copyright (C) the ngx_http_llm_router_module authors
 *
 * Shadow calls: for a sample of the requests, a stronger model answers
 * too, beside the one the rules chose, so that the two answers can be
 * compared (llm-router judge) and become labels.
 *
 * The client must wait for nothing, and its keepalive connection must
 * not either: a subrequest of the client's request, even a background
 * one, would hold that connection until it ended.  So the call is a
 * subrequest of a request of the module's own, on a connection without
 * a socket, made with a copy of the client's body.  That request lives
 * until both the client's request and the call have ended; it is then
 * logged by the shadow location, where $llm_router_shadow_record is the
 * pair of answers.
 */


#include "ngx_http_llm_router_module.h"


static ngx_int_t ngx_http_llm_router_shadow_create(ngx_http_request_t *r,
    ngx_http_llm_router_ctx_t *ctx, ngx_http_llm_router_shadow_conf_t *conf,
    ngx_http_variable_value_t *id);
static ngx_http_request_t *ngx_http_llm_router_shadow_request(
    ngx_http_request_t *r, ngx_pool_t *pool);
static ngx_int_t ngx_http_llm_router_shadow_headers(ngx_http_request_t *r,
    ngx_http_llm_router_ctx_t *ctx, ngx_http_llm_router_shadow_t *s);
static ngx_chain_t *ngx_http_llm_router_shadow_send(ngx_connection_t *c,
    ngx_chain_t *in, off_t limit);
static void ngx_http_llm_router_shadow_start(ngx_event_t *ev);
static ngx_int_t ngx_http_llm_router_shadow_done(ngx_http_request_t *sr,
    void *data, ngx_int_t rc);
static void ngx_http_llm_router_shadow_ended(ngx_http_request_t *fr);
static void ngx_http_llm_router_shadow_end(ngx_http_llm_router_shadow_t *s);
static void ngx_http_llm_router_shadow_timeout(ngx_event_t *ev);
static void ngx_http_llm_router_shadow_account(
    ngx_http_llm_router_shadow_t *s);
static void ngx_http_llm_router_shadow_detach(void *data);
static void ngx_http_llm_router_shadow_finish_event(ngx_event_t *ev);
static void ngx_http_llm_router_shadow_finish(ngx_http_llm_router_shadow_t *s);
static void ngx_http_llm_router_shadow_close(ngx_connection_t *c);
static void ngx_http_llm_router_shadow_count(ngx_http_request_t *r,
    ngx_http_llm_router_model_t *routed, ngx_str_t *rule, const char *result);
static const char *ngx_http_llm_router_shadow_result(
    ngx_http_llm_router_shadow_t *s);


#define NGX_HTTP_LLM_ROUTER_SHADOW_POOL  4096


/*
 * llm_router_shadow URI model=NAME [sample=100%] [max_answer=16k]
 *     [timeout=60s];
 * llm_router_shadow off;
 */

char *
ngx_http_llm_router_shadow_directive(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf)
{
    ngx_http_llm_router_loc_conf_t *llcf = conf;

    u_char                             *p, *end;
    size_t                              size;
    ngx_str_t                          *value, v;
    ngx_uint_t                          i, sample, decimals;
    ngx_http_llm_router_shadow_conf_t  *sh;

    if (llcf->shadow != NGX_CONF_UNSET_PTR) {
        return "is duplicate";
    }

    value = cf->args->elts;

    if (cf->args->nelts == 2 && ngx_strcmp(value[1].data, "off") == 0) {
        llcf->shadow = NULL;
        return NGX_CONF_OK;
    }

    if (value[1].data[0] != '/') {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "invalid URI \"%V\" in \"llm_router_shadow\": "
                           "the URI of a location expected", &value[1]);
        return NGX_CONF_ERROR;
    }

    sh = ngx_pcalloc(cf->pool, sizeof(ngx_http_llm_router_shadow_conf_t));
    if (sh == NULL) {
        return NGX_CONF_ERROR;
    }

    sh->uri = value[1];
    sh->sample = 10000;
    sh->max_answer = 16384;
    sh->timeout = 60000;
    sh->file = cf->conf_file->file.name.data;
    sh->line = cf->conf_file->line;

    for (i = 2; i < cf->args->nelts; i++) {

        if (ngx_strncmp(value[i].data, "model=", 6) == 0) {
            sh->model_name.data = value[i].data + 6;
            sh->model_name.len = value[i].len - 6;
            continue;
        }

        if (ngx_strncmp(value[i].data, "sample=", 7) == 0) {

            /* a percentage with two decimals at most, as split_clients */

            p = value[i].data + 7;
            end = value[i].data + value[i].len;

            if (p < end && end[-1] == '%') {
                end--;
            }

            sample = 0;
            decimals = 0;

            if (p == end) {
                goto invalid;
            }

            for ( /* void */ ; p < end && *p >= '0' && *p <= '9'; p++) {
                sample = sample * 10 + (*p - '0');

                if (sample > 100) {
                    goto invalid;
                }
            }

            if (p < end && *p == '.') {
                for (p++; p < end && *p >= '0' && *p <= '9'; p++) {
                    if (++decimals > 2) {
                        goto invalid;
                    }

                    sample = sample * 10 + (*p - '0');
                }
            }

            for ( /* void */ ; decimals < 2; decimals++) {
                sample *= 10;
            }

            if (p != end || sample > 10000) {
                goto invalid;
            }

            sh->sample = sample;
            continue;
        }

        if (ngx_strncmp(value[i].data, "max_answer=", 11) == 0) {
            v.data = value[i].data + 11;
            v.len = value[i].len - 11;

            size = ngx_parse_size(&v);

            if (size == (size_t) NGX_ERROR || size == 0
                || size > 1024 * 1024)
            {
                goto invalid;
            }

            sh->max_answer = size;
            continue;
        }

        if (ngx_strncmp(value[i].data, "timeout=", 8) == 0) {
            v.data = value[i].data + 8;
            v.len = value[i].len - 8;

            sh->timeout = ngx_parse_time(&v, 0);

            if (sh->timeout == (ngx_msec_t) NGX_ERROR || sh->timeout == 0) {
                goto invalid;
            }

            continue;
        }

        goto invalid;
    }

    if (sh->model_name.len == 0) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"llm_router_shadow\" needs model=NAME: the "
                           "model whose answers the routed ones are "
                           "compared with");
        return NGX_CONF_ERROR;
    }

    llcf->shadow = sh;

    return NGX_CONF_OK;

invalid:

    ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                       "invalid parameter \"%V\" in \"llm_router_shadow\"",
                       &value[i]);
    return NGX_CONF_ERROR;
}


char *
ngx_http_llm_router_merge_shadow(ngx_conf_t *cf,
    ngx_http_llm_router_loc_conf_t *prev,
    ngx_http_llm_router_loc_conf_t *conf)
{
    ngx_int_t                           m;
    ngx_http_llm_router_main_conf_t    *lmcf;
    ngx_http_llm_router_shadow_conf_t  *sh;

    ngx_conf_merge_ptr_value(conf->shadow, prev->shadow, NULL);

    sh = conf->shadow;

    if (sh == NULL) {
        return NGX_CONF_OK;
    }

    if (ngx_http_llm_router_check_uri(cf, conf, &sh->uri,
                                      "llm_router_shadow", sh->file,
                                      sh->line)
        != NGX_CONF_OK)
    {
        return NGX_CONF_ERROR;
    }

    /* resolved once, where it is declared: the levels below share it */

    if (sh->model == NULL) {
        lmcf = ngx_http_conf_get_module_main_conf(cf,
                                                  ngx_http_llm_router_module);

        m = ngx_http_llm_router_find(&lmcf->models, &sh->model_name);

        if (m == NGX_ERROR) {
            ngx_log_error(NGX_LOG_EMERG, cf->log, 0,
                          "unknown model \"%V\" in \"llm_router_shadow\" in "
                          "%s:%ui", &sh->model_name, sh->file, sh->line);
            return NGX_CONF_ERROR;
        }

        sh->model = (ngx_http_llm_router_model_t *) lmcf->models.elts + m;
    }

    /* with "auto", requests of another API are not shadowed */

    if (ngx_http_llm_router_on(conf) && conf->api != LLMR_APIS
        && sh->model->dialect->api != conf->api)
    {
        ngx_log_error(NGX_LOG_EMERG, cf->log, 0,
                      "\"llm_router_api %V\" cannot be shadowed by model "
                      "\"%V\" of \"api %V\" in %s:%ui",
                      &llmr_dialects[conf->api].name, &sh->model->name,
                      &sh->model->dialect->name, sh->file, sh->line);
        return NGX_CONF_ERROR;
    }

    return NGX_CONF_OK;
}


/*
 * Right after a request is routed: a request of its sample, sent to
 * another model than the shadow's, gets a shadow call.  Whatever
 * happens to it, the client's request goes on as it would without.
 */

void
ngx_http_llm_router_shadow(ngx_http_request_t *r,
    ngx_http_llm_router_ctx_t *ctx)
{
    ngx_http_variable_value_t          *id;
    ngx_http_llm_router_loc_conf_t     *llcf;
    ngx_http_llm_router_main_conf_t    *lmcf;
    ngx_http_llm_router_shadow_conf_t  *sh;

    llcf = ngx_http_get_module_loc_conf(r, ngx_http_llm_router_module);
    lmcf = ngx_http_get_module_main_conf(r, ngx_http_llm_router_module);

    sh = llcf->shadow;

    if (sh == NULL || ctx->model == sh->model
        || ctx->dialect != sh->model->dialect)
    {
        return;
    }

    /* the sample: the same requests whatever the worker, the server */

    id = ngx_http_get_indexed_variable(r, lmcf->request_id);

    if (id == NULL || id->not_found
        || ngx_crc32_long(id->data, id->len) % 10000 >= sh->sample)
    {
        return;
    }

    if (ngx_http_llm_router_shadow_create(r, ctx, sh, id) != NGX_OK) {
        ctx->shadow_skipped = 1;
        ngx_http_llm_router_shadow_count(r, ctx->model, &ctx->rule,
                                         "skipped");
    }
}


static ngx_int_t
ngx_http_llm_router_shadow_create(ngx_http_request_t *r,
    ngx_http_llm_router_ctx_t *ctx, ngx_http_llm_router_shadow_conf_t *conf,
    ngx_http_variable_value_t *id)
{
    off_t                             len;
    u_char                           *p;
    ngx_buf_t                        *b;
    ngx_pool_t                       *pool;
    ngx_chain_t                      *cl, *in;
    ngx_http_request_t               *fr;
    ngx_pool_cleanup_t               *cln;
    ngx_http_request_body_t          *rb;
    ngx_http_llm_router_ctx_t        *fctx;
    ngx_http_variable_value_t        *vv;
    ngx_http_llm_router_shadow_t     *s;
    ngx_http_llm_router_main_conf_t  *lmcf;

    /* the body is copied: the client's goes away with its request */

    for (cl = ctx->client_bufs; cl; cl = cl->next) {
        if (!ngx_buf_in_memory(cl->buf) && ngx_buf_size(cl->buf)) {
            ngx_log_error(NGX_LOG_INFO, r->connection->log, 0,
                          "llm_router: no shadow call for a body in a "
                          "temporary file");
            return NGX_DECLINED;
        }
    }

    /* not the client's log: it goes away with the client's connection */

    pool = ngx_create_pool(NGX_HTTP_LLM_ROUTER_SHADOW_POOL, ngx_cycle->log);
    if (pool == NULL) {
        return NGX_ERROR;
    }

    s = ngx_pcalloc(pool, sizeof(ngx_http_llm_router_shadow_t));
    if (s == NULL) {
        goto failed;
    }

    s->conf = conf;
    s->dialect = ctx->dialect;
    s->routed = ctx->model;
    s->prompt_tokens = ctx->request.f.prompt_tokens;

    s->id.len = id->len;
    s->id.data = ngx_pnalloc(pool, id->len);
    s->rule.data = ngx_pstrdup(pool, &ctx->rule);
    s->rule.len = ctx->rule.len;

    s->body.len = ctx->request.f.body_len;
    s->body.data = ngx_pnalloc(pool, s->body.len);

    s->answer = ngx_pnalloc(pool, conf->max_answer);
    s->shadow_answer = ngx_pnalloc(pool, conf->max_answer);

    b = ngx_calloc_buf(pool);
    in = ngx_alloc_chain_link(pool);
    rb = ngx_pcalloc(pool, sizeof(ngx_http_request_body_t));

    if (s->id.data == NULL || s->rule.data == NULL || s->body.data == NULL
        || s->answer == NULL || s->shadow_answer == NULL || b == NULL
        || in == NULL || rb == NULL)
    {
        goto failed;
    }

    ngx_memcpy(s->id.data, id->data, id->len);

    /*
     * Line ends of a valid body are white space between its tokens:
     * spaces instead send the same JSON, and keep the record one line.
     */

    p = s->body.data;

    for (cl = ctx->client_bufs; cl; cl = cl->next) {
        p = ngx_cpymem(p, cl->buf->pos, cl->buf->last - cl->buf->pos);
    }

    for (p = s->body.data; p < s->body.data + s->body.len; p++) {
        if (*p == CR || *p == LF) {
            *p = ' ';
        }
    }

    b->pos = s->body.data;
    b->last = s->body.data + s->body.len;
    b->memory = 1;
    b->last_buf = 1;
    b->last_in_chain = 1;

    in->buf = b;
    in->next = NULL;

    fr = ngx_http_llm_router_shadow_request(r, pool);
    if (fr == NULL) {
        goto failed;
    }

    s->request = fr;

    /* the module's request goes with the client's body, for the model */

    if (ngx_http_llm_router_rewrite(fr, ctx, conf->model, in, &rb->bufs,
                                    &len)
        != NGX_OK
        || ngx_http_llm_router_shadow_headers(r, ctx, s) != NGX_OK)
    {
        goto close;
    }

    fr->request_body = rb;
    fr->headers_in.content_length_n = len;

    lmcf = ngx_http_get_module_main_conf(r, ngx_http_llm_router_module);

    /* its $request_id is the client's */

    vv = &fr->variables[lmcf->request_id];
    vv->len = s->id.len;
    vv->data = s->id.data;
    vv->valid = 1;

    fctx = ngx_pcalloc(pool, sizeof(ngx_http_llm_router_ctx_t));
    cln = ngx_pool_cleanup_add(r->pool, 0);

    if (fctx == NULL || cln == NULL) {
        goto close;
    }

    fctx->shadow = s;
    ngx_http_set_ctx(fr, fctx, ngx_http_llm_router_module);

    /* the shadow's worst case must fit the budgets, or it is not made */

    if (ngx_http_llm_router_reserve_call(r, ctx, conf->model,
                                         s->reservations, &s->nreservations,
                                         pool)
        != NGX_OK)
    {
        ngx_log_error(NGX_LOG_INFO, r->connection->log, 0,
                      "llm_router: no shadow call, a budget has no room "
                      "for it");
        goto close;
    }

    cln->handler = ngx_http_llm_router_shadow_detach;
    cln->data = r;

    ngx_http_llm_router_event(&s->start_event, ngx_http_llm_router_shadow_start,
                              s, fr->connection->log);

    ngx_http_llm_router_event(&s->finish_event,
                              ngx_http_llm_router_shadow_finish_event, s,
                              fr->connection->log);

    ngx_http_llm_router_event(&s->timer, ngx_http_llm_router_shadow_timeout, s,
                              fr->connection->log);

    ctx->shadow = s;

    /* not now: the client's request goes on first */

    ngx_post_event(&s->start_event, &ngx_posted_events);

    ngx_log_debug2(NGX_LOG_DEBUG_HTTP, r->connection->log, 0,
                   "llm_router: shadow call of \"%V\" as *%uA",
                   &conf->model->name, fr->connection->number);

    return NGX_OK;

close:

    ngx_http_llm_router_shadow_close(s->request->connection);

failed:

    ngx_destroy_pool(pool);

    return NGX_ERROR;
}


/*
 * The module's request, on a connection without a socket: its events
 * never come, so they are made to look active and ready, and what would
 * be written to it is swallowed.  It has the client's server, its
 * client address, its request line, and nothing else of the client's.
 */

static ngx_http_request_t *
ngx_http_llm_router_shadow_request(ngx_http_request_t *r, ngx_pool_t *pool)
{
    ngx_log_t                  *log;
    ngx_time_t                 *tp;
    ngx_connection_t           *c, *saved;
    ngx_http_request_t         *fr;
    ngx_http_log_ctx_t         *lctx;
    ngx_http_core_main_conf_t  *cmcf;

    cmcf = ngx_http_get_module_main_conf(r, ngx_http_core_module);

    log = ngx_palloc(pool, sizeof(ngx_log_t));
    lctx = ngx_pcalloc(pool, sizeof(ngx_http_log_ctx_t));
    fr = ngx_pcalloc(pool, sizeof(ngx_http_request_t));

    if (log == NULL || lctx == NULL || fr == NULL) {
        return NULL;
    }

    fr->ctx = ngx_pcalloc(pool, sizeof(void *) * ngx_http_max_module);
    fr->variables = ngx_pcalloc(pool, cmcf->variables.nelts
                                      * sizeof(ngx_http_variable_value_t));
    fr->request_line.data = ngx_pstrdup(pool, &r->request_line);

    if (fr->ctx == NULL || fr->variables == NULL
        || (r->request_line.len && fr->request_line.data == NULL)
        || ngx_list_init(&fr->headers_out.headers, pool, 4,
                         sizeof(ngx_table_elt_t))
           != NGX_OK
        || ngx_list_init(&fr->headers_out.trailers, pool, 1,
                         sizeof(ngx_table_elt_t))
           != NGX_OK)
    {
        return NULL;
    }

    fr->request_line.len = r->request_line.len;

    /* its errors are logged as the client's are, with its number */

    *log = *r->connection->log;
    log->data = lctx;
    log->action = NULL;

    pool->log = log;

    /*
     * ngx_get_connection() takes a descriptor: 0 stands in for the one
     * there is not, and the slot of 0 it may take in files is given back
     */

    saved = ngx_cycle->files ? ngx_cycle->files[0] : NULL;

    c = ngx_get_connection(0, log);

    if (ngx_cycle->files) {
        ngx_cycle->files[0] = saved;
    }

    if (c == NULL) {
        return NULL;
    }

    c->fd = (ngx_socket_t) -1;
    c->number = ngx_atomic_fetch_add(ngx_connection_counter, 1);
    c->pool = pool;
    c->log = log;
    c->log_error = NGX_ERROR_INFO;
    c->read->log = log;
    c->write->log = log;
    c->read->active = 1;
    c->write->active = 1;
    c->write->ready = 1;
    c->tcp_nodelay = NGX_TCP_NODELAY_DISABLED;
    c->send_chain = ngx_http_llm_router_shadow_send;
    c->data = fr;
    c->requests = 1;

    log->connection = c->number;

    c->addr_text.data = ngx_pstrdup(pool, &r->connection->addr_text);
    c->sockaddr = ngx_palloc(pool, r->connection->socklen);
    c->local_sockaddr = ngx_palloc(pool, r->connection->local_socklen);

    if (c->addr_text.data == NULL || c->sockaddr == NULL
        || c->local_sockaddr == NULL)
    {
        ngx_http_llm_router_shadow_close(c);
        return NULL;
    }

    c->addr_text.len = r->connection->addr_text.len;
    c->socklen = r->connection->socklen;
    ngx_memcpy(c->sockaddr, r->connection->sockaddr, c->socklen);

    /* the client's connection knows its local address once it is asked */

    c->local_socklen = r->connection->local_socklen;

    if (r->connection->local_sockaddr) {
        ngx_memcpy(c->local_sockaddr, r->connection->local_sockaddr,
                   c->local_socklen);

    } else {
        c->local_sockaddr = NULL;
    }

    c->listening = r->connection->listening;

    lctx->connection = c;
    lctx->request = fr;
    lctx->current_request = fr;

    fr->signature = NGX_HTTP_MODULE;
    fr->connection = c;
    fr->pool = pool;
    fr->main = fr;
    fr->count = 1;
    fr->main_conf = r->main_conf;
    fr->srv_conf = r->srv_conf;
    fr->loc_conf = r->loc_conf;
    fr->log_handler = r->log_handler;

    fr->method = NGX_HTTP_POST;
    ngx_str_set(&fr->method_name, "POST");
    fr->http_version = NGX_HTTP_VERSION_11;
    ngx_str_set(&fr->http_protocol, "HTTP/1.1");

    fr->headers_in.keep_alive_n = -1;
    fr->headers_out.content_length_n = -1;
    fr->headers_out.last_modified_time = -1;

    fr->uri_changes = NGX_HTTP_MAX_URI_CHANGES + 1;
    fr->subrequests = NGX_HTTP_MAX_SUBREQUESTS + 1;
    fr->http_state = NGX_HTTP_PROCESS_REQUEST_STATE;
    fr->internal = 1;

    tp = ngx_timeofday();
    fr->start_sec = tp->sec;
    fr->start_msec = tp->msec;

    fr->read_event_handler = ngx_http_request_empty_handler;
    fr->write_event_handler = ngx_http_llm_router_shadow_ended;

    return fr;
}


/*
 * The headers of the call, in the module's request: they must outlive
 * the client's, so each name and value is copied.  The key is the last.
 */

static ngx_int_t
ngx_http_llm_router_shadow_headers(ngx_http_request_t *r,
    ngx_http_llm_router_ctx_t *ctx, ngx_http_llm_router_shadow_t *s)
{
    u_char              *lowcase;
    ngx_str_t            auth;
    ngx_uint_t           i;
    ngx_pool_t          *pool;
    ngx_table_elt_t     *h;
    ngx_http_request_t  *fr;

    fr = s->request;
    pool = fr->pool;

    if (ngx_http_llm_router_auth(r, s->conf->model, &auth) != NGX_OK
        || ngx_http_llm_router_call_headers(r, ctx, s->conf->model, &auth,
                                            &fr->headers_in.headers, pool)
           != NGX_OK)
    {
        return NGX_ERROR;
    }

    /* one part, sized for all */

    h = fr->headers_in.headers.part.elts;

    for (i = 0; i < fr->headers_in.headers.part.nelts; i++) {
        lowcase = ngx_pnalloc(pool, h[i].key.len);
        h[i].key.data = ngx_pstrdup(pool, &h[i].key);
        h[i].value.data = ngx_pstrdup(pool, &h[i].value);

        if (lowcase == NULL || h[i].key.data == NULL
            || h[i].value.data == NULL)
        {
            return NGX_ERROR;
        }

        h[i].lowcase_key = ngx_cpymem(lowcase, h[i].lowcase_key,
                                      h[i].key.len) - h[i].key.len;
    }

    if (auth.len) {
        s->key_header = &h[i - 1];
    }

    return NGX_OK;
}


/* what nginx would write to the connection without a socket */

static ngx_chain_t *
ngx_http_llm_router_shadow_send(ngx_connection_t *c, ngx_chain_t *in,
    off_t limit)
{
    ngx_http_llm_router_consume(in);

    return NULL;
}


static void
ngx_http_llm_router_shadow_start(ngx_event_t *ev)
{
    ngx_http_llm_router_shadow_t *s = ev->data;

    ngx_connection_t            *c;
    ngx_http_request_t          *fr, *sr;
    ngx_http_post_subrequest_t  *ps;

    fr = s->request;
    c = fr->connection;

    s->start = ngx_current_msec;

    ps = ngx_palloc(fr->pool, sizeof(ngx_http_post_subrequest_t));

    if (ps == NULL
        || ngx_http_subrequest(fr, &s->conf->uri, NULL, &sr, ps, 0)
           != NGX_OK)
    {
        /* not made: an error */
        ngx_http_llm_router_shadow_end(s);
        return;
    }

    ps->handler = ngx_http_llm_router_shadow_done;
    ps->data = s;

    sr->method = NGX_HTTP_POST;
    ngx_str_set(&sr->method_name, "POST");
    sr->headers_in.headers.last = &sr->headers_in.headers.part;

    s->sr = sr;

    ngx_add_timer(&s->timer, s->conf->timeout);

    ngx_http_run_posted_requests(c);
}


/* the call ended: its answer was read by the filters */

static ngx_int_t
ngx_http_llm_router_shadow_done(ngx_http_request_t *sr, void *data,
    ngx_int_t rc)
{
    ngx_http_llm_router_shadow_t *s = data;

    if (!s->scanned) {
        /* no answer: nginx's own error, such as a 502 */
        s->shadow_status = rc >= NGX_HTTP_SPECIAL_RESPONSE ? rc : 0;
    }

    /* an error of the call ends the call alone */

    if (rc == NGX_ERROR || rc >= NGX_HTTP_SPECIAL_RESPONSE) {
        return NGX_OK;
    }

    return rc;
}


/* the module's request, once its subrequest has ended */

static void
ngx_http_llm_router_shadow_ended(ngx_http_request_t *fr)
{
    ngx_http_llm_router_ctx_t  *ctx;

    ctx = ngx_http_get_module_ctx(fr, ngx_http_llm_router_module);

    ngx_http_llm_router_shadow_end(ctx->shadow);
}


/* the call is over: it is accounted, and freed if the client's is too */

static void
ngx_http_llm_router_shadow_end(ngx_http_llm_router_shadow_t *s)
{
    ngx_http_llm_router_shadow_account(s);

    if (s->client_done) {
        ngx_http_llm_router_shadow_finish(s);
    }
}


static void
ngx_http_llm_router_shadow_timeout(ngx_event_t *ev)
{
    ngx_http_llm_router_shadow_t *s = ev->data;

    ngx_http_upstream_t  *u;

    s->timed_out = 1;

    ngx_log_error(NGX_LOG_WARN, ev->log, 0,
                  "llm_router: shadow call of model \"%V\" timed out after "
                  "%M ms", &s->conf->model->name, s->conf->timeout);

    /*
     * Its upstream is finalized as nginx does when the request it serves
     * goes away, which ends the subrequest without its handler.  A call
     * not in its upstream yet ends by itself, counted as timed out.
     */

    u = s->sr->upstream;

    if (u == NULL || u->cleanup == NULL) {
        return;
    }

    (*u->cleanup)(s->sr);

    ngx_http_llm_router_shadow_end(s);
}


/* the call's cost, in the budgets and the metrics: once */

static void
ngx_http_llm_router_shadow_account(ngx_http_llm_router_shadow_t *s)
{
    ngx_http_request_t               *fr;
    ngx_http_llm_router_main_conf_t  *lmcf;

    if (s->done) {
        return;
    }

    s->done = 1;

    fr = s->request;

    if (s->timer.timer_set) {
        ngx_del_timer(&s->timer);
    }

    s->latency = ngx_current_msec - s->start;

    /* as for the client's answers: a failed call costs nothing */

    if (!s->timed_out && s->shadow_status >= NGX_HTTP_OK
        && s->shadow_status < NGX_HTTP_SPECIAL_RESPONSE)
    {
        if (!llmr_usage_tokens(&s->usage, &s->tokens)) {
            s->tokens.prompt = s->prompt_tokens;
            s->tokens.completion = llmr_usage_content_tokens(&s->usage);
        }

        s->shadow_cost = ngx_http_llm_router_model_cost(fr, s->conf->model,
                                                        &s->tokens);
    }

    ngx_http_llm_router_settle(fr, s->reservations, &s->nreservations,
                               s->shadow_cost);

    lmcf = ngx_http_get_module_main_conf(fr, ngx_http_llm_router_module);

    ngx_http_llm_router_bill(lmcf, s->conf->model, &s->tokens,
                             s->shadow_cost);

    ngx_http_llm_router_shadow_count(fr, s->routed, &s->rule,
                                     ngx_http_llm_router_shadow_result(s));

    ngx_log_debug3(NGX_LOG_DEBUG_HTTP, fr->connection->log, 0,
                   "llm_router: shadow call ended: %s, status %ui, %M ms",
                   ngx_http_llm_router_shadow_result(s), s->shadow_status,
                   s->latency);
}


/* the client's request ends: its answer is kept with the call's */

static void
ngx_http_llm_router_shadow_detach(void *data)
{
    ngx_http_request_t *r = data;

    ngx_http_llm_router_ctx_t      *ctx;
    ngx_http_llm_router_shadow_t   *s;
    ngx_http_llm_router_account_t   a;

    ctx = ngx_http_get_module_ctx(r, ngx_http_llm_router_module);
    s = ctx->shadow;

    ngx_http_llm_router_account(r, ctx, &a);

    s->cost = ngx_http_llm_router_total_cost(ctx, &a);
    s->answered = ctx->model;
    s->escalated = ctx->escalated;
    s->status = r->err_status ? r->err_status : r->headers_out.status;
    s->answer_len = ctx->scan_usage ? llmr_usage_text(&ctx->usage) : 0;
    s->client_done = 1;

    ctx->shadow = NULL;

    if (s->done) {
        ngx_post_event(&s->finish_event, &ngx_posted_events);
    }
}


static void
ngx_http_llm_router_shadow_finish_event(ngx_event_t *ev)
{
    ngx_http_llm_router_shadow_finish(ev->data);
}


/*
 * Both answers are there: the module's request is logged, by the shadow
 * location, and freed with all it holds.
 */

static void
ngx_http_llm_router_shadow_finish(ngx_http_llm_router_shadow_t *s)
{
    ngx_connection_t    *c;
    ngx_http_request_t  *fr;

    fr = s->request;
    c = fr->connection;

    if (s->start_event.posted) {
        ngx_delete_posted_event(&s->start_event);
    }

    if (s->finish_event.posted) {
        ngx_delete_posted_event(&s->finish_event);
    }

    if (s->timer.timer_set) {
        ngx_del_timer(&s->timer);
    }

    ngx_http_llm_router_hide_key(&s->key_header);

    if (s->sr) {
        fr->loc_conf = s->sr->loc_conf;
    }

    fr->headers_out.status = s->shadow_status;
    fr->posted_requests = NULL;

    ngx_http_free_request(fr, 0);

    ngx_http_llm_router_shadow_close(c);
}


/* the connection without a socket goes back, as ngx_get_connection() */

static void
ngx_http_llm_router_shadow_close(ngx_connection_t *c)
{
    ngx_connection_t  *saved;

    c->destroyed = 1;

    saved = ngx_cycle->files ? ngx_cycle->files[0] : NULL;

    c->fd = 0;
    ngx_free_connection(c);
    c->fd = (ngx_socket_t) -1;

    if (ngx_cycle->files) {
        ngx_cycle->files[0] = saved;
    }
}


static void
ngx_http_llm_router_shadow_count(ngx_http_request_t *r,
    ngx_http_llm_router_model_t *routed, ngx_str_t *rule, const char *result)
{
    ngx_str_t                         res;
    ngx_http_llm_router_main_conf_t  *lmcf;

    lmcf = ngx_http_get_module_main_conf(r, ngx_http_llm_router_module);

    if (lmcf->shm == NULL) {
        return;
    }

    res.data = (u_char *) result;
    res.len = ngx_strlen(result);

    ngx_http_llm_router_series(lmcf->shm, NGX_HTTP_LLM_ROUTER_SERIES_SHADOW,
                               &routed->name, rule, &res);
}


static const char *
ngx_http_llm_router_shadow_result(ngx_http_llm_router_shadow_t *s)
{
    if (!s->done) {
        return "pending";
    }

    if (s->timed_out) {
        return "timeout";
    }

    return (s->shadow_status >= NGX_HTTP_OK
            && s->shadow_status < NGX_HTTP_SPECIAL_RESPONSE)
           ? "ok" : "error";
}


/* the answer of the call: its status, then its text and usage */

ngx_int_t
ngx_http_llm_router_shadow_header(ngx_http_request_t *sr,
    ngx_http_llm_router_shadow_t *s)
{
    s->shadow_status = sr->err_status ? sr->err_status
                                      : sr->headers_out.status;
    s->scanned = 1;

    llmr_usage_init(&s->usage, s->conf->model->dialect,
                    ngx_http_llm_router_sse(sr));
    llmr_usage_keep_text(&s->usage, s->shadow_answer, s->conf->max_answer);

    /* the request to the provider was made */

    ngx_http_llm_router_hide_key(&s->key_header);

    return NGX_OK;
}


ngx_int_t
ngx_http_llm_router_shadow_body(ngx_http_request_t *sr,
    ngx_http_llm_router_shadow_t *s, ngx_chain_t *in)
{
    ngx_chain_t  *cl;

    for (cl = in; cl; cl = cl->next) {
        if (s->scanned && ngx_buf_in_memory(cl->buf)) {
            llmr_usage_feed(&s->usage, cl->buf->pos,
                            cl->buf->last - cl->buf->pos);
        }
    }

    ngx_http_llm_router_consume(in);

    return NGX_OK;
}


/* the client's answer is kept as it passes, when it has a shadow */

void
ngx_http_llm_router_shadow_keep(ngx_http_llm_router_shadow_t *s,
    llmr_usage_t *u)
{
    llmr_usage_keep_text(u, s->answer, s->conf->max_answer);
}


#define NGX_HTTP_LLM_ROUTER_SHADOW_FIELDS                                     \
    "{\"id\":,\"api\":\"responses\",\"request\":,\"rule\":,\"model\":,"      \
    "\"status\":,\"answer\":\"\",\"cost_usd\":,\"escalated\":false,"         \
    "\"shadow_model\":,\"shadow_answer\":\"\",\"shadow_status\":,"           \
    "\"shadow_result\":\"timeout\",\"shadow_latency_ms\":,"                  \
    "\"shadow_cost_usd\":}"


/*
 * $llm_router_shadow_record: the pair, in the module's request once both
 * answers are done; not found elsewhere.  The body and the answers'
 * texts are JSON already.
 */

ngx_int_t
ngx_http_llm_router_shadow_variable(ngx_http_request_t *r,
    ngx_http_variable_value_t *v, uintptr_t data)
{
    u_char                        *p, *start;
    size_t                         len;
    ngx_str_t                      rule, model;
    ngx_http_llm_router_ctx_t     *ctx;
    ngx_http_llm_router_shadow_t  *s;

    ctx = ngx_http_get_module_ctx(r, ngx_http_llm_router_module);

    if (ctx == NULL || ctx->shadow == NULL || ctx->shadow->request != r
        || !ctx->shadow->done || !ctx->shadow->client_done)
    {
        v->not_found = 1;
        return NGX_OK;
    }

    s = ctx->shadow;
    rule = s->rule;
    model = s->answered->name;

    len = sizeof(NGX_HTTP_LLM_ROUTER_SHADOW_FIELDS) - 1
          + ngx_http_llm_router_json_size(&s->id)
          + s->body.len
          + ngx_http_llm_router_json_size(&rule)
          + ngx_http_llm_router_json_size(&model)
          + ngx_http_llm_router_json_size(&s->conf->model->name)
          + s->answer_len + llmr_usage_text(&s->usage)
          + 3 * NGX_INT_T_LEN + 2 * LLMR_USD_MAX;

    start = ngx_pnalloc(r->pool, len);
    if (start == NULL) {
        return NGX_ERROR;
    }

    p = ngx_cpymem(start, "{\"id\":", sizeof("{\"id\":") - 1);
    p = ngx_http_llm_router_json(p, &s->id);
    p = ngx_sprintf(p, ",\"api\":\"%V\",\"request\":", &s->dialect->name);
    p = ngx_cpymem(p, s->body.data, s->body.len);
    p = ngx_cpymem(p, ",\"rule\":", sizeof(",\"rule\":") - 1);
    p = ngx_http_llm_router_json(p, &rule);
    p = ngx_cpymem(p, ",\"model\":", sizeof(",\"model\":") - 1);
    p = ngx_http_llm_router_json(p, &model);
    p = ngx_sprintf(p, ",\"status\":%ui,\"answer\":\"", s->status);
    p = ngx_cpymem(p, s->answer, s->answer_len);
    p = ngx_cpymem(p, "\",\"cost_usd\":", sizeof("\",\"cost_usd\":") - 1);
    p += llmr_usd_format(p, s->cost);
    p = ngx_sprintf(p, ",\"escalated\":%s,\"shadow_model\":",
                    s->escalated ? "true" : "false");
    p = ngx_http_llm_router_json(p, &s->conf->model->name);
    p = ngx_cpymem(p, ",\"shadow_answer\":\"",
                   sizeof(",\"shadow_answer\":\"") - 1);
    p = ngx_cpymem(p, s->shadow_answer, llmr_usage_text(&s->usage));
    p = ngx_sprintf(p, "\",\"shadow_status\":%ui,\"shadow_result\":\"%s\","
                    "\"shadow_latency_ms\":%M,\"shadow_cost_usd\":",
                    s->timed_out ? 0 : s->shadow_status,
                    ngx_http_llm_router_shadow_result(s), s->latency);
    p += llmr_usd_format(p, s->shadow_cost);
    *p++ = '}';

    v->len = p - start;
    v->data = start;
    v->valid = 1;
    v->no_cacheable = 0;
    v->not_found = 0;

    return NGX_OK;
}


#define NGX_HTTP_LLM_ROUTER_SHADOW_LOG                                        \
    ",\"shadow\":{\"model\":,\"result\":\"timeout\",\"status\":null,"         \
    "\"latency_ms\":null,\"cost_usd\":null}"


/*
 * "shadow" in the client's record: null without a shadow call, else its
 * model and result, and its status, latency and cost once it has ended.
 * The record does not wait for it: "pending" then.
 */

size_t
ngx_http_llm_router_shadow_log_size(ngx_http_request_t *r,
    ngx_http_llm_router_ctx_t *ctx)
{
    ngx_http_llm_router_loc_conf_t  *llcf;

    llcf = ngx_http_get_module_loc_conf(r, ngx_http_llm_router_module);

    if (llcf->shadow == NULL) {
        return sizeof(",\"shadow\":null") - 1;
    }

    return sizeof(NGX_HTTP_LLM_ROUTER_SHADOW_LOG) - 1
           + ngx_http_llm_router_json_size(&llcf->shadow->model->name)
           + 2 * NGX_INT_T_LEN + LLMR_USD_MAX;
}


u_char *
ngx_http_llm_router_shadow_log(u_char *p, ngx_http_request_t *r,
    ngx_http_llm_router_ctx_t *ctx)
{
    ngx_http_llm_router_shadow_t    *s;
    ngx_http_llm_router_loc_conf_t  *llcf;

    llcf = ngx_http_get_module_loc_conf(r, ngx_http_llm_router_module);

    s = ctx ? ctx->shadow : NULL;

    if (llcf->shadow == NULL || ctx == NULL
        || (s == NULL && !ctx->shadow_skipped))
    {
        return ngx_cpymem(p, ",\"shadow\":null",
                          sizeof(",\"shadow\":null") - 1);
    }

    p = ngx_cpymem(p, ",\"shadow\":{\"model\":",
                   sizeof(",\"shadow\":{\"model\":") - 1);
    p = ngx_http_llm_router_json(p, &llcf->shadow->model->name);

    if (s == NULL || !s->done) {
        return ngx_sprintf(p, ",\"result\":\"%s\",\"status\":null,"
                           "\"latency_ms\":null,\"cost_usd\":null}",
                           s ? "pending" : "skipped");
    }

    p = ngx_sprintf(p, ",\"result\":\"%s\",\"status\":%ui,"
                    "\"latency_ms\":%M,\"cost_usd\":",
                    ngx_http_llm_router_shadow_result(s),
                    s->timed_out ? 0 : s->shadow_status, s->latency);
    p += llmr_usd_format(p, s->shadow_cost);
    *p++ = '}';

    return p;
}
