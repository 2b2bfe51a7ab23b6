
/*
 * Copyright (C) the ngx_http_llm_router_module authors
 *
 * The shared memory zone: what every worker must know of the models.
 * For now, the cooldown of a model that answered 429: until when it is
 * skipped.  Entries are found by the hash of the model's name, so that
 * they outlive a reload that reorders the models.
 */


#include "ngx_http_llm_router_module.h"


#define NGX_HTTP_LLM_ROUTER_ZONE_MODELS  256


typedef struct {
    ngx_atomic_t                   hash;      /* of the name, 0: free */
    ngx_atomic_t                   until;     /* ngx_current_msec */
} ngx_http_llm_router_shm_model_t;


typedef struct {
    ngx_http_llm_router_shm_model_t  models[NGX_HTTP_LLM_ROUTER_ZONE_MODELS];
} ngx_http_llm_router_shm_t;


static ngx_int_t ngx_http_llm_router_init_zone(ngx_shm_zone_t *shm_zone,
    void *data);
static ngx_http_llm_router_shm_model_t *ngx_http_llm_router_shm_model(
    ngx_http_llm_router_main_conf_t *lmcf, ngx_http_llm_router_model_t *m);


char *
ngx_http_llm_router_zone(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_llm_router_main_conf_t *lmcf = conf;

    ssize_t     size;
    ngx_str_t  *value;

    if (lmcf->zone) {
        return "is duplicate";
    }

    value = cf->args->elts;

    size = ngx_parse_size(&value[2]);

    if (size == NGX_ERROR || size < (ssize_t) (8 * ngx_pagesize)) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "invalid zone size \"%V\" in \"llm_router_zone\", "
                           "at least %uz expected", &value[2],
                           8 * ngx_pagesize);
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

        if (e->hash == 0) {
            /* another worker may take it first, maybe for this model */
            (void) ngx_atomic_cmp_set(&e->hash, 0, m->hash);
        }

        if (e->hash == m->hash) {
            return e;
        }
    }

    return NULL;
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
