
/*
 * Copyright (C) the ngx_http_llm_router_module authors
 *
 * llm_router_explain: the decision as JSON, and nothing sent upstream,
 * so that traffic can be replayed against a new policy for free.
 */


#include "ngx_http_llm_router_module.h"


#define NGX_HTTP_LLM_ROUTER_EXPLAIN_FIELDS                                    \
    "{,\"url\":,\"prompt_tokens\":,\"max_tokens\":,\"code\":false,"           \
    "\"tools\":false,\"thinking\":false,\"images\":false,\"keywords\":[],"    \
    "\"est_cost_usd\":}\n"


ngx_int_t
ngx_http_llm_router_explain_handler(ngx_http_request_t *r)
{
    u_char                           *p;
    size_t                            len;
    ngx_buf_t                        *b;
    ngx_str_t                         type;
    ngx_uint_t                        i, first;
    llmr_tokens_t                     tokens;
    llmr_features_t                  *f;
    ngx_http_llm_router_ctx_t        *ctx;
    ngx_http_llm_router_keywords_t   *list;
    ngx_http_llm_router_main_conf_t  *lmcf;

    ctx = ngx_http_get_module_ctx(r, ngx_http_llm_router_module);

    if (ctx == NULL || !ctx->routed) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    lmcf = ngx_http_get_module_main_conf(r, ngx_http_llm_router_module);
    list = lmcf->lists.elts;
    f = &ctx->request.f;

    len = sizeof(NGX_HTTP_LLM_ROUTER_EXPLAIN_FIELDS) - 1
          + ngx_http_llm_router_decision_size(ctx)
          + ngx_http_llm_router_json_size(&ctx->model->url)
          + 2 * NGX_INT64_LEN + LLMR_USD_MAX;

    for (i = 0; i < lmcf->lists.nelts; i++) {
        len += ngx_http_llm_router_json_size(&list[i].name) + 1;
    }

    b = ngx_create_temp_buf(r->pool, len);
    if (b == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    p = b->pos;
    *p++ = '{';
    p = ngx_http_llm_router_decision(p, ctx);
    p = ngx_cpymem(p, ",\"url\":", sizeof(",\"url\":") - 1);
    p = ngx_http_llm_router_json(p, &ctx->model->url);

    p = ngx_sprintf(p, ",\"prompt_tokens\":%uD,\"max_tokens\":%L,"
                    "\"code\":%s,\"tools\":%s,\"thinking\":%s,"
                    "\"images\":%s,\"keywords\":[",
                    f->prompt_tokens, f->max_tokens,
                    f->code ? "true" : "false", f->tools ? "true" : "false",
                    f->thinking ? "true" : "false",
                    f->images ? "true" : "false");

    first = 1;

    for (i = 0; i < lmcf->lists.nelts; i++) {
        if ((f->keywords >> i) & 1) {
            if (!first) {
                *p++ = ',';
            }

            p = ngx_http_llm_router_json(p, &list[i].name);
            first = 0;
        }
    }

    /* the prompt as estimated, and the completion at most max_tokens */

    ngx_memzero(&tokens, sizeof(llmr_tokens_t));

    tokens.prompt = f->prompt_tokens;
    tokens.completion = f->max_tokens > 0 ? (uint64_t) f->max_tokens : 0;

    p = ngx_cpymem(p, "],\"est_cost_usd\":", sizeof("],\"est_cost_usd\":") - 1);
    p += llmr_usd_format(p, ngx_http_llm_router_model_cost(r, ctx->model,
                                                           &tokens));
    *p++ = '}';
    *p++ = '\n';

    b->last = p;

    ngx_str_set(&type, "application/json");

    return ngx_http_llm_router_send_buf(r, b, &type);
}
