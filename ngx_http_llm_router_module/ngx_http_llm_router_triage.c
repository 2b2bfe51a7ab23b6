
/*
 * Copyright (C) the ngx_http_llm_router_module authors
 *
 * Triage by a small model.  When the rule walk reaches a "triage="
 * condition, the request waits for a verdict: a background subrequest
 * posts a short chat request, built from llm_router_triage_prompt and
 * the conversation's text kept while the body was parsed, to an
 * internal location, proxied by nginx like any other request.  Its
 * answer, captured by the filters, gives the label; a timer bounds the
 * wait.  A timeout, an error or an answer without a label makes the
 * triage conditions false: the client's request goes on either way.
 * Verdicts are cached in the zone, by a hash of the triage request.
 */


#include "ngx_http_llm_router_module.h"


/* the head of each message kept, and how many of them */
#define NGX_HTTP_LLM_ROUTER_TRIAGE_TEXT     2048
#define NGX_HTTP_LLM_ROUTER_TRIAGE_SLOTS    8

/* an answer larger than this is no label */
#define NGX_HTTP_LLM_ROUTER_TRIAGE_ANSWER   16384

#define NGX_HTTP_LLM_ROUTER_TRIAGE_HISTORY  3072      /* tokens at most */


typedef struct {
    ngx_rbtree_node_t              node;          /* key: of the hashes */
    ngx_queue_t                    queue;
    uint32_t                       check;         /* the crc32 */
    time_t                         expires;
    u_char                         len;
    u_char                         label[LLMR_LABEL_MAX];
} ngx_http_llm_router_verdict_t;


static ngx_int_t ngx_http_llm_router_triage_done(ngx_http_request_t *sr,
    void *data, ngx_int_t rc);
static void ngx_http_llm_router_triage_timeout(ngx_event_t *ev);
static void ngx_http_llm_router_judge(ngx_http_request_t *r,
    ngx_http_llm_router_ctx_t *ctx, ngx_http_request_t *sr);
static void ngx_http_llm_router_triage_fail(ngx_http_request_t *r,
    ngx_http_llm_router_ctx_t *ctx, const char *reason);
static ngx_int_t ngx_http_llm_router_cache_get(ngx_http_request_t *r,
    ngx_http_llm_router_ctx_t *ctx);
static void ngx_http_llm_router_cache_put(ngx_http_request_t *r,
    ngx_http_llm_router_ctx_t *ctx);
static ngx_http_llm_router_verdict_t *ngx_http_llm_router_cache_find(
    ngx_http_llm_router_shm_t *shm, uint32_t *hash);
static ngx_uint_t ngx_http_llm_router_cache_max(ngx_slab_pool_t *shpool);


#define ngx_http_llm_router_cache_key(hash)                                   \
    ((ngx_rbtree_key_t) ((uint64_t) (hash)[0] << 32 | (hash)[1]))


#define NGX_HTTP_LLM_ROUTER_TRIAGE_PROMPT                                     \
    "You route requests to AI models. Read the user's request and "          \
    "answer with one word: \"simple\" if a small, fast model can answer "    \
    "it well (chat, short facts, rewording, summaries, simple "              \
    "questions), or \"complex\" if it needs a strong model (multi-step "     \
    "reasoning, mathematics, code, expert knowledge, long or subtle "        \
    "instructions). Answer with the word only."


/*
 * llm_router_triage URI model=NAME [timeout=300ms] [max_tokens=8]
 *     [history=256] [field=NAME] [cache=10m|off];
 * llm_router_triage off;
 */

char *
ngx_http_llm_router_triage(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_llm_router_loc_conf_t *llcf = conf;

    ngx_int_t                      n;
    ngx_str_t                     *value, s;
    ngx_uint_t                     i;
    ngx_http_llm_router_triage_t  *t;

    if (llcf->triage != NGX_CONF_UNSET_PTR) {
        return "is duplicate";
    }

    value = cf->args->elts;

    if (cf->args->nelts == 2 && ngx_strcmp(value[1].data, "off") == 0) {
        llcf->triage = NULL;
        return NGX_CONF_OK;
    }

    if (value[1].data[0] != '/') {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "invalid URI \"%V\" in \"llm_router_triage\": "
                           "the URI of a location expected", &value[1]);
        return NGX_CONF_ERROR;
    }

    t = ngx_pcalloc(cf->pool, sizeof(ngx_http_llm_router_triage_t));
    if (t == NULL) {
        return NGX_CONF_ERROR;
    }

    t->uri = value[1];
    t->timeout = 300;
    t->max_tokens = 8;
    t->history = 256 * 4;
    t->cache = NGX_CONF_UNSET;
    t->file = cf->conf_file->file.name.data;
    t->line = cf->conf_file->line;

    for (i = 2; i < cf->args->nelts; i++) {

        if (ngx_strncmp(value[i].data, "model=", 6) == 0) {
            t->model_name.data = value[i].data + 6;
            t->model_name.len = value[i].len - 6;
            continue;
        }

        if (ngx_strncmp(value[i].data, "timeout=", 8) == 0) {
            s.data = value[i].data + 8;
            s.len = value[i].len - 8;

            t->timeout = ngx_parse_time(&s, 0);

            if (t->timeout == (ngx_msec_t) NGX_ERROR || t->timeout == 0) {
                goto invalid;
            }

            continue;
        }

        if (ngx_strncmp(value[i].data, "max_tokens=", 11) == 0) {
            n = ngx_atoi(value[i].data + 11, value[i].len - 11);

            if (n == NGX_ERROR || n == 0 || n > 4096) {
                goto invalid;
            }

            t->max_tokens = n;
            continue;
        }

        if (ngx_strncmp(value[i].data, "history=", 8) == 0) {
            n = ngx_atoi(value[i].data + 8, value[i].len - 8);

            if (n == NGX_ERROR || n > NGX_HTTP_LLM_ROUTER_TRIAGE_HISTORY) {
                goto invalid;
            }

            /* four bytes a token, as the estimate counts them */
            t->history = n * 4;
            continue;
        }

        if (ngx_strncmp(value[i].data, "field=", 6) == 0
            && value[i].len > 6)
        {
            t->field.data = value[i].data + 6;
            t->field.len = value[i].len - 6;
            continue;
        }

        if (ngx_strncmp(value[i].data, "cache=", 6) == 0) {
            s.data = value[i].data + 6;
            s.len = value[i].len - 6;

            if (s.len == 3 && ngx_strncmp(s.data, "off", 3) == 0) {
                t->cache = 0;
                continue;
            }

            t->cache = ngx_parse_time(&s, 1);

            if (t->cache == (time_t) NGX_ERROR || t->cache == 0) {
                goto invalid;
            }

            continue;
        }

        goto invalid;
    }

    if (t->model_name.len == 0) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"llm_router_triage\" needs model=NAME: the "
                           "model whose name, key and price the triage "
                           "uses");
        return NGX_CONF_ERROR;
    }

    llcf->triage = t;

    return NGX_CONF_OK;

invalid:

    ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                       "invalid parameter \"%V\" in \"llm_router_triage\"",
                       &value[i]);
    return NGX_CONF_ERROR;
}


char *
ngx_http_llm_router_merge_triage(ngx_conf_t *cf,
    ngx_http_llm_router_loc_conf_t *prev,
    ngx_http_llm_router_loc_conf_t *conf)
{
    ngx_int_t                         m;
    ngx_http_llm_router_triage_t     *t;
    ngx_http_llm_router_main_conf_t  *lmcf;

    ngx_conf_merge_ptr_value(conf->triage, prev->triage, NULL);
    ngx_conf_merge_str_value(conf->triage_prompt, prev->triage_prompt,
                             NGX_HTTP_LLM_ROUTER_TRIAGE_PROMPT);

    t = conf->triage;

    if (t && ngx_http_llm_router_check_uri(cf, conf, &t->uri,
                                           "llm_router_triage", t->file,
                                           t->line)
             != NGX_CONF_OK)
    {
        return NGX_CONF_ERROR;
    }

    if (t == NULL || t->model) {
        return NGX_CONF_OK;
    }

    /* resolved once, where it is declared: the levels below share it */

    lmcf = ngx_http_conf_get_module_main_conf(cf, ngx_http_llm_router_module);

    m = ngx_http_llm_router_find(&lmcf->models, &t->model_name);

    if (m == NGX_ERROR) {
        ngx_log_error(NGX_LOG_EMERG, cf->log, 0,
                      "unknown model \"%V\" in \"llm_router_triage\" in "
                      "%s:%ui", &t->model_name, t->file, t->line);
        return NGX_CONF_ERROR;
    }

    t->model = (ngx_http_llm_router_model_t *) lmcf->models.elts + m;

    if (t->cache == NGX_CONF_UNSET) {
        t->cache = lmcf->zone ? 600 : 0;

    } else if (t->cache && lmcf->zone == NULL) {
        ngx_log_error(NGX_LOG_EMERG, cf->log, 0,
                      "the cache of \"llm_router_triage\" needs "
                      "\"llm_router_zone\" in %s:%ui", t->file, t->line);
        return NGX_CONF_ERROR;
    }

    return NGX_CONF_OK;
}


/* the text of the conversation is kept while the body is parsed */

ngx_int_t
ngx_http_llm_router_capture(ngx_http_request_t *r,
    ngx_http_llm_router_ctx_t *ctx)
{
    u_char                          *buf;
    ngx_uint_t                       slots;
    llmr_capture_t                  *c;
    ngx_http_llm_router_loc_conf_t  *llcf;

    llcf = ngx_http_get_module_loc_conf(r, ngx_http_llm_router_module);

    /* without history, the current message and the one being parsed */
    slots = llcf->triage->history ? NGX_HTTP_LLM_ROUTER_TRIAGE_SLOTS : 2;

    c = ngx_palloc(r->pool, sizeof(llmr_capture_t));
    buf = ngx_pnalloc(r->pool, slots * NGX_HTTP_LLM_ROUTER_TRIAGE_TEXT);

    if (c == NULL || buf == NULL) {
        return NGX_ERROR;
    }

    if (llmr_capture_init(c, buf, NGX_HTTP_LLM_ROUTER_TRIAGE_TEXT, slots)
        != LLMR_OK)
    {
        return NGX_ERROR;
    }

    ctx->request.capture = c;

    return NGX_OK;
}


/*
 * Asks the triage model, once.  NGX_OK: the verdict is known (cached,
 * or the triage failed at once); NGX_AGAIN: the request waits for it.
 */

ngx_int_t
ngx_http_llm_router_ask(ngx_http_request_t *r,
    ngx_http_llm_router_ctx_t *ctx)
{
    size_t                           size;
    ngx_str_t                        auth;
    ngx_buf_t                       *b;
    ngx_list_t                       headers;
    ngx_chain_t                     *cl;
    llmr_triage_t                    lt;
    ngx_http_request_t              *sr;
    ngx_http_request_body_t         *rb;
    ngx_http_post_subrequest_t      *ps;
    ngx_http_llm_router_triage_t    *t;
    ngx_http_llm_router_loc_conf_t  *llcf;

    llcf = ngx_http_get_module_loc_conf(r, ngx_http_llm_router_module);
    t = llcf->triage;

    lt.dialect = t->model->dialect;
    lt.model.data = t->model->upstream.data;
    lt.model.len = t->model->upstream.len;
    lt.prompt.data = llcf->triage_prompt.data;
    lt.prompt.len = llcf->triage_prompt.len;
    lt.max_tokens = t->max_tokens;
    lt.history = t->history;

    size = llmr_triage_body_size(&ctx->request, &lt);

    b = ngx_create_temp_buf(r->pool, size);
    if (b == NULL) {
        return NGX_ERROR;
    }

    b->last = llmr_triage_body(&ctx->request, &lt, b->pos);
    b->last_buf = 1;
    b->last_in_chain = 1;

    /* the cache key: the location and all the model reads */

    ngx_crc32_init(ctx->triage_hash[0]);
    ngx_crc32_update(&ctx->triage_hash[0], t->uri.data, t->uri.len);
    ngx_crc32_update(&ctx->triage_hash[0], b->pos, size);
    ngx_crc32_final(ctx->triage_hash[0]);
    ctx->triage_hash[1] = ngx_murmur_hash2(b->pos, size);

    ctx->triage_start = ngx_current_msec;

    if (t->cache && ngx_http_llm_router_cache_get(r, ctx) == NGX_OK) {
        ngx_log_debug2(NGX_LOG_DEBUG_HTTP, r->connection->log, 0,
                       "llm_router: triage verdict \"%*s\" is cached",
                       ctx->request.f.triage_len,
                       ctx->request.f.triage_label);
        return NGX_OK;
    }

    if (ngx_http_llm_router_auth(r, t->model, &auth) != NGX_OK) {
        ngx_http_llm_router_triage_fail(r, ctx, "credentials");
        return NGX_OK;
    }

    ps = ngx_palloc(r->pool, sizeof(ngx_http_post_subrequest_t));
    rb = ngx_pcalloc(r->pool, sizeof(ngx_http_request_body_t));
    cl = ngx_alloc_chain_link(r->pool);

    if (ps == NULL || rb == NULL || cl == NULL) {
        return NGX_ERROR;
    }

    if (ngx_http_llm_router_call_headers(r, ctx, t->model, &auth, &headers,
                                         r->pool)
        != NGX_OK)
    {
        return NGX_ERROR;
    }

    ps->handler = ngx_http_llm_router_triage_done;
    ps->data = ctx;

    cl->buf = b;
    cl->next = NULL;
    rb->bufs = cl;

    /*
     * in the background: the answer to the client is not held behind
     * it, and it can be given up when its time is over
     */

    if (ngx_http_subrequest(r, &t->uri, NULL, &sr, ps,
                            NGX_HTTP_SUBREQUEST_BACKGROUND)
        != NGX_OK)
    {
        return NGX_ERROR;
    }

    sr->method = NGX_HTTP_POST;
    ngx_str_set(&sr->method_name, "POST");
    sr->request_body = rb;

    /* one part, sized for all: its last is its own */
    sr->headers_in.headers = headers;
    sr->headers_in.headers.last = &sr->headers_in.headers.part;
    sr->headers_in.content_type = NULL;
    sr->headers_in.content_length = NULL;
    sr->headers_in.content_length_n = size;
    sr->headers_in.transfer_encoding = NULL;
    sr->headers_in.chunked = 0;

    ctx->triage_sr = sr;
    ctx->triage_waiting = 1;

    ngx_http_llm_router_event(&ctx->triage_timer,
                              ngx_http_llm_router_triage_timeout, r,
                              r->connection->log);

    ngx_add_timer(&ctx->triage_timer, t->timeout);

    ngx_log_debug2(NGX_LOG_DEBUG_HTTP, r->connection->log, 0,
                   "llm_router: asking \"%V\" for a triage verdict, "
                   "%uz bytes", &t->uri, size);

    return NGX_AGAIN;
}


/* the subrequest ended: its answer was captured by the filters */

static ngx_int_t
ngx_http_llm_router_triage_done(ngx_http_request_t *sr, void *data,
    ngx_int_t rc)
{
    ngx_http_llm_router_ctx_t  *ctx = data;

    ngx_http_request_t  *r;

    r = sr->main;

    if (ctx->triage_waiting) {
        ctx->triage_waiting = 0;

        if (ctx->triage_timer.timer_set) {
            ngx_del_timer(&ctx->triage_timer);
        }

        if (ctx->triage_status == 0) {
            /* no answer: nginx's own error, such as a 502 */
            ctx->triage_status = rc >= NGX_HTTP_SPECIAL_RESPONSE ? rc : 0;
            ngx_http_llm_router_triage_fail(r, ctx, "upstream");

        } else {
            ngx_http_llm_router_judge(r, ctx, sr);
        }

        ngx_http_llm_router_wake(r);
    }

    /* a triage that failed must not fail the client's request */

    if (rc == NGX_ERROR || rc >= NGX_HTTP_SPECIAL_RESPONSE) {
        return NGX_OK;
    }

    return rc;
}


static void
ngx_http_llm_router_triage_timeout(ngx_event_t *ev)
{
    ngx_connection_t           *c;
    ngx_http_upstream_t        *u;
    ngx_http_request_t         *r, *sr;
    ngx_http_llm_router_ctx_t  *ctx;

    r = ev->data;
    c = r->connection;
    ctx = ngx_http_get_module_ctx(r, ngx_http_llm_router_module);

    ngx_http_set_log_request(c->log, r);

    ctx->triage_waiting = 0;
    ngx_http_llm_router_triage_fail(r, ctx, "timeout");

    /*
     * the answer is not waited for: its upstream is finalized as nginx
     * does when the request it serves goes away, which closes the
     * connection and ends the subrequest without its handler
     */

    sr = ctx->triage_sr;
    u = sr->upstream;

    if (u && u->cleanup) {
        (*u->cleanup)(sr);
    }

    ngx_http_llm_router_wake(r);
    ngx_http_run_posted_requests(c);
}


/* the request waited for a verdict, the triage model's or Redis's */

void
ngx_http_llm_router_wake(ngx_http_request_t *r)
{
    r->write_event_handler = ngx_http_llm_router_resume;

    if (ngx_http_post_request(r, NULL) != NGX_OK) {
        ngx_http_finalize_request(r, NGX_HTTP_INTERNAL_SERVER_ERROR);
    }
}


/* the label of the answer, its tokens and cost */

static void
ngx_http_llm_router_judge(ngx_http_request_t *r,
    ngx_http_llm_router_ctx_t *ctx, ngx_http_request_t *sr)
{
    size_t                            len, n;
    u_char                           *content, *body;
    ngx_buf_t                        *b;
    llmr_str_t                        field;
    llmr_usage_t                      usage;
    llmr_tokens_t                    *tokens;
    llmr_answer_t                     answer;
    llmr_criteria_t                   criteria;
    llmr_features_t                  *f;
    ngx_http_llm_router_triage_t     *t;
    ngx_http_llm_router_loc_conf_t   *llcf;

    llcf = ngx_http_get_module_loc_conf(r, ngx_http_llm_router_module);
    t = llcf->triage;
    f = &ctx->request.f;

    if (ctx->triage_status < 200 || ctx->triage_status >= 300) {
        ngx_http_llm_router_triage_fail(r, ctx, "status");
        return;
    }

    if (ctx->triage_too_large) {
        ngx_http_llm_router_triage_fail(r, ctx, "too_large");
        return;
    }

    body = ctx->triage_answer ? ctx->triage_answer->pos : (u_char *) "";
    len = ctx->triage_answer ? ctx->triage_answer->last - body : 0;

    content = ngx_pnalloc(r->pool, len + 1);
    if (content == NULL) {
        ngx_http_llm_router_triage_fail(r, ctx, "no_memory");
        return;
    }

    ngx_memzero(&criteria, sizeof(llmr_criteria_t));
    llmr_answer_init(&answer, t->model->dialect, &criteria, content, len);

    if (llmr_answer_check(&answer, body, len, 0) == LLMR_VERDICT_OK) {
        content = answer.content;
        n = answer.content_len;

    } else if (sr->headers_out.content_type.len >= sizeof("text/plain") - 1
               && ngx_strncasecmp(sr->headers_out.content_type.data,
                                  (u_char *) "text/plain",
                                  sizeof("text/plain") - 1)
                  == 0)
    {
        /* a classifier of its own may answer with the label alone */
        content = body;
        n = len;

    } else {
        n = 0;
        content = NULL;
    }

    /* the call was billed whether its answer is usable or not */

    llmr_usage_init(&usage, t->model->dialect, 0);
    llmr_usage_feed(&usage, body, len);

    tokens = &ctx->triage_tokens;

    if (!llmr_usage_tokens(&usage, tokens)) {
        b = sr->request_body->bufs->buf;
        ngx_memzero(tokens, sizeof(llmr_tokens_t));
        tokens->prompt = llmr_estimate_tokens(b->pos, b->last - b->pos);
        tokens->completion = content ? llmr_estimate_tokens(content, n) : 0;
    }

    ctx->triage_cost = ngx_http_llm_router_model_cost(r, t->model, tokens);

    if (content == NULL) {
        ngx_http_llm_router_triage_fail(r, ctx, "unreadable");
        return;
    }

    field.data = t->field.data;
    field.len = t->field.len;

    if (llmr_triage_label(content, n, &field, f->triage_label,
                          &f->triage_len)
        != LLMR_OK)
    {
        ngx_http_llm_router_triage_fail(r, ctx, "no_label");
        return;
    }

    f->triage = LLMR_TRIAGE_DONE;
    ctx->triage_latency = ngx_current_msec - ctx->triage_start;

    ngx_log_debug2(NGX_LOG_DEBUG_HTTP, r->connection->log, 0,
                   "llm_router: triage verdict \"%*s\"", f->triage_len,
                   f->triage_label);

    if (t->cache) {
        ngx_http_llm_router_cache_put(r, ctx);
    }
}


/* the request goes on: its triage conditions are false */

static void
ngx_http_llm_router_triage_fail(ngx_http_request_t *r,
    ngx_http_llm_router_ctx_t *ctx, const char *reason)
{
    ctx->request.f.triage = LLMR_TRIAGE_FAILED;
    ctx->triage_error = reason;
    ctx->triage_latency = ngx_current_msec - ctx->triage_start;

    ngx_log_error(NGX_LOG_WARN, r->connection->log, 0,
                  "llm_router: triage failed: %s, status %ui after %M ms",
                  reason, ctx->triage_status, ctx->triage_latency);
}


/* the answer of the subrequest: its status, then its body, kept */

ngx_int_t
ngx_http_llm_router_triage_header(ngx_http_request_t *sr,
    ngx_http_llm_router_ctx_t *ctx)
{
    ctx->triage_status = sr->err_status ? sr->err_status
                                        : sr->headers_out.status;

    return NGX_OK;
}


ngx_int_t
ngx_http_llm_router_triage_body(ngx_http_request_t *sr,
    ngx_http_llm_router_ctx_t *ctx, ngx_chain_t *in)
{
    size_t      size;
    ngx_buf_t  *b;

    for ( /* void */ ; in; in = in->next) {
        size = ngx_buf_size(in->buf);

        if (size && !ctx->triage_too_large) {
            b = ctx->triage_answer;

            if (b == NULL) {
                b = ngx_create_temp_buf(sr->pool,
                                        NGX_HTTP_LLM_ROUTER_TRIAGE_ANSWER);
                if (b == NULL) {
                    return NGX_ERROR;
                }

                ctx->triage_answer = b;
            }

            if (!ngx_buf_in_memory(in->buf)
                || size > (size_t) (b->end - b->last))
            {
                ctx->triage_too_large = 1;

            } else {
                b->last = ngx_cpymem(b->last, in->buf->pos, size);
            }
        }

        in->buf->pos = in->buf->last;
        in->buf->file_pos = in->buf->file_last;
    }

    return NGX_OK;
}


void
ngx_http_llm_router_triage_cleanup(ngx_http_llm_router_ctx_t *ctx)
{
    if (ctx->triage_timer.timer_set) {
        ngx_del_timer(&ctx->triage_timer);
    }
}


/*
 * The verdict cache: an rbtree by hash, and a queue from the last used
 * to the least, which gives up its entries when the cache is full (at
 * most a quarter of the zone) or the zone is.
 */

static ngx_int_t
ngx_http_llm_router_cache_get(ngx_http_request_t *r,
    ngx_http_llm_router_ctx_t *ctx)
{
    ngx_int_t                         rc;
    ngx_slab_pool_t                  *shpool;
    llmr_features_t                  *f;
    ngx_http_llm_router_shm_t        *shm;
    ngx_http_llm_router_verdict_t    *v;
    ngx_http_llm_router_main_conf_t  *lmcf;

    lmcf = ngx_http_get_module_main_conf(r, ngx_http_llm_router_module);
    shpool = (ngx_slab_pool_t *) lmcf->zone->shm.addr;
    shm = lmcf->shm;
    f = &ctx->request.f;

    rc = NGX_DECLINED;

    ngx_shmtx_lock(&shpool->mutex);

    v = ngx_http_llm_router_cache_find(shm, ctx->triage_hash);

    if (v && v->expires <= ngx_time()) {
        ngx_queue_remove(&v->queue);
        ngx_rbtree_delete(&shm->verdicts, &v->node);
        ngx_slab_free_locked(shpool, v);
        shm->nverdicts--;
        v = NULL;
    }

    if (v) {
        ngx_queue_remove(&v->queue);
        ngx_queue_insert_head(&shm->verdict_lru, &v->queue);

        f->triage = LLMR_TRIAGE_DONE;
        f->triage_len = v->len;
        ngx_memcpy(f->triage_label, v->label, v->len);

        rc = NGX_OK;
    }

    ngx_shmtx_unlock(&shpool->mutex);

    if (rc == NGX_OK) {
        ctx->triage_cached = 1;
    }

    return rc;
}


static void
ngx_http_llm_router_cache_put(ngx_http_request_t *r,
    ngx_http_llm_router_ctx_t *ctx)
{
    ngx_uint_t                        i;
    ngx_queue_t                      *q;
    ngx_slab_pool_t                  *shpool;
    llmr_features_t                  *f;
    ngx_http_llm_router_shm_t        *shm;
    ngx_http_llm_router_triage_t     *t;
    ngx_http_llm_router_verdict_t    *v;
    ngx_http_llm_router_loc_conf_t   *llcf;
    ngx_http_llm_router_main_conf_t  *lmcf;

    lmcf = ngx_http_get_module_main_conf(r, ngx_http_llm_router_module);
    llcf = ngx_http_get_module_loc_conf(r, ngx_http_llm_router_module);
    shpool = (ngx_slab_pool_t *) lmcf->zone->shm.addr;
    shm = lmcf->shm;
    t = llcf->triage;
    f = &ctx->request.f;

    ngx_shmtx_lock(&shpool->mutex);

    v = ngx_http_llm_router_cache_find(shm, ctx->triage_hash);

    if (v == NULL) {

        /* the least used entry makes room, twice at most */

        for (i = 0; i < 3; i++) {
            if (shm->nverdicts < ngx_http_llm_router_cache_max(shpool)) {
                v = ngx_slab_alloc_locked(shpool,
                                   sizeof(ngx_http_llm_router_verdict_t));
                if (v) {
                    break;
                }
            }

            if (ngx_queue_empty(&shm->verdict_lru) || i == 2) {
                break;
            }

            q = ngx_queue_last(&shm->verdict_lru);
            ngx_queue_remove(q);

            v = ngx_queue_data(q, ngx_http_llm_router_verdict_t, queue);
            ngx_rbtree_delete(&shm->verdicts, &v->node);
            ngx_slab_free_locked(shpool, v);
            shm->nverdicts--;
            v = NULL;
        }

        if (v == NULL) {
            ngx_shmtx_unlock(&shpool->mutex);
            return;
        }

        v->node.key = ngx_http_llm_router_cache_key(ctx->triage_hash);
        v->check = ctx->triage_hash[0];
        ngx_rbtree_insert(&shm->verdicts, &v->node);
        shm->nverdicts++;

    } else {
        ngx_queue_remove(&v->queue);
    }

    ngx_queue_insert_head(&shm->verdict_lru, &v->queue);

    v->expires = ngx_time() + t->cache;
    v->len = (u_char) f->triage_len;
    ngx_memcpy(v->label, f->triage_label, f->triage_len);

    ngx_shmtx_unlock(&shpool->mutex);
}


/*
 * The key holds both hashes where it has 64 bits; with 32 bits, a key
 * that two requests share is a miss for the one that has not the crc32.
 */

static ngx_http_llm_router_verdict_t *
ngx_http_llm_router_cache_find(ngx_http_llm_router_shm_t *shm,
    uint32_t *hash)
{
    ngx_rbtree_key_t                key;
    ngx_rbtree_node_t              *node, *sentinel;
    ngx_http_llm_router_verdict_t  *v;

    key = ngx_http_llm_router_cache_key(hash);
    node = shm->verdicts.root;
    sentinel = shm->verdicts.sentinel;

    while (node != sentinel) {

        if (key != node->key) {
            node = (key < node->key) ? node->left : node->right;
            continue;
        }

        v = (ngx_http_llm_router_verdict_t *) node;

        return (v->check == hash[0]) ? v : NULL;
    }

    return NULL;
}


static ngx_uint_t
ngx_http_llm_router_cache_max(ngx_slab_pool_t *shpool)
{
    return (shpool->end - shpool->start) / 4
           / sizeof(ngx_http_llm_router_verdict_t);
}
