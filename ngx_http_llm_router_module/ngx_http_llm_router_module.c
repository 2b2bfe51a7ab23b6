
/*
 * Copyright (C) the ngx_http_llm_router_module authors
 *
 * Directives and configuration: model blocks, keyword lists, rules.
 */


#include "ngx_http_llm_router_module.h"


#define NGX_HTTP_LLM_ROUTER_KEY_FILE_MAX  4096


static char *ngx_http_llm_router_model_block(ngx_conf_t *cf,
    ngx_command_t *cmd, void *conf);
static char *ngx_http_llm_router_model_option(ngx_conf_t *cf,
    ngx_command_t *dummy, void *conf);
static char *ngx_http_llm_router_set_url(ngx_conf_t *cf,
    ngx_http_llm_router_model_t *model, ngx_str_t *value);
static char *ngx_http_llm_router_set_auth(ngx_conf_t *cf,
    ngx_http_llm_router_model_t *model, ngx_str_t *value);
static char *ngx_http_llm_router_set_key(ngx_conf_t *cf,
    ngx_http_llm_router_model_t *model, ngx_str_t *value);
static char *ngx_http_llm_router_set_key_file(ngx_conf_t *cf,
    ngx_http_llm_router_model_t *model, ngx_str_t *value);
static char *ngx_http_llm_router_set_price(ngx_conf_t *cf,
    ngx_http_llm_router_model_t *model, ngx_str_t *value);
static char *ngx_http_llm_router_set_context(ngx_conf_t *cf,
    ngx_http_llm_router_model_t *model, ngx_str_t *value);
static char *ngx_http_llm_router_set_api(ngx_conf_t *cf,
    ngx_http_llm_router_model_t *model, ngx_str_t *value);
static char *ngx_http_llm_router_api(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
static char *ngx_http_llm_router_enable(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
static char *ngx_http_llm_router_pin(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
static ngx_int_t ngx_http_llm_router_reachable(ngx_conf_t *cf,
    ngx_http_llm_router_loc_conf_t *conf);
static ngx_int_t ngx_http_llm_router_reaches(ngx_conf_t *cf,
    ngx_http_llm_router_loc_conf_t *conf, ngx_http_llm_router_model_t *model,
    u_char *seen, const char *how);
static ngx_int_t ngx_http_llm_router_pinnable(ngx_conf_t *cf,
    ngx_http_llm_router_loc_conf_t *conf, u_char *seen);
static ngx_int_t ngx_http_llm_router_check_location(ngx_conf_t *cf,
    ngx_http_llm_router_loc_conf_t *conf, ngx_flag_t enable);
static char *ngx_http_llm_router_escalate_pattern(ngx_conf_t *cf,
    ngx_command_t *cmd, void *conf);
static ngx_int_t ngx_http_llm_router_resolve_chain(ngx_conf_t *cf,
    ngx_http_llm_router_main_conf_t *lmcf, ngx_http_llm_router_model_t *model,
    const char *name);
static char *ngx_http_llm_router_fallback_status(ngx_conf_t *cf,
    ngx_command_t *cmd, void *conf);
static char *ngx_http_llm_router_keywords(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
static char *ngx_http_llm_router_rule(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
static char *ngx_http_llm_router_var_cond(ngx_conf_t *cf,
    ngx_http_llm_router_loc_conf_t *llcf, llmr_cond_t *cond);
static char *ngx_http_llm_router_default(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
static char *ngx_http_llm_router_classifier(ngx_conf_t *cf,
    ngx_command_t *cmd, void *conf);
static char *ngx_http_llm_router_load_classifier(ngx_conf_t *cf,
    ngx_str_t *path, llmr_classifier_t *c);
static char *ngx_http_llm_router_explain(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
static char *ngx_http_llm_router_status(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
static ngx_int_t ngx_http_llm_router_resolve(ngx_conf_t *cf,
    ngx_http_llm_router_loc_conf_t *conf);
static ngx_int_t ngx_http_llm_router_resolve_budgets(ngx_conf_t *cf,
    ngx_http_llm_router_loc_conf_t *conf);

static char *ngx_http_llm_router_check_scan_limit(ngx_conf_t *cf,
    void *post, void *data);
static ngx_int_t ngx_http_llm_router_init_module(ngx_cycle_t *cycle);
static ngx_int_t ngx_http_llm_router_init_process(ngx_cycle_t *cycle);
static ngx_int_t ngx_http_llm_router_preconfiguration(ngx_conf_t *cf);
static ngx_int_t ngx_http_llm_router_postconfiguration(ngx_conf_t *cf);
static void *ngx_http_llm_router_create_main_conf(ngx_conf_t *cf);
static char *ngx_http_llm_router_init_main_conf(ngx_conf_t *cf, void *conf);
static void *ngx_http_llm_router_create_loc_conf(ngx_conf_t *cf);
static char *ngx_http_llm_router_merge_loc_conf(ngx_conf_t *cf, void *parent,
    void *child);


/* what a provider answers when another model should be tried */

static ngx_uint_t  ngx_http_llm_router_default_fallback_status[] = {
    429, 500, 502, 503, 504
};

static ngx_array_t  ngx_http_llm_router_default_fallback = {
    ngx_http_llm_router_default_fallback_status, 5, sizeof(ngx_uint_t), 5,
    NULL
};


static ngx_conf_num_bounds_t  ngx_http_llm_router_history_bounds = {
    ngx_conf_check_num_bounds, 0, LLMR_HISTORY_MAX
};


/* a model's name fits, and the bytes of a string are counted in size_t */

static ngx_conf_num_bounds_t  ngx_http_llm_router_share_bounds = {
    ngx_conf_check_num_bounds, 1, 1000
};

/* 0: no window; a window has room for a few lines at each end */
static ngx_conf_post_t  ngx_http_llm_router_scan_limit_bounds = {
    ngx_http_llm_router_check_scan_limit
};

static ngx_conf_num_bounds_t  ngx_http_llm_router_string_buffer_bounds = {
    ngx_conf_check_num_bounds, LLMR_HOLD_MIN, 1024 * 1024 * 1024
};


/* the directives inside llm_router_model, a bit each against repeats */

typedef struct {
    ngx_str_t                      name;
    ngx_uint_t                     nargs;         /* at least */
    ngx_uint_t                     max_args;
    ngx_uint_t                     bit;
    char                        *(*set)(ngx_conf_t *cf,
                                      ngx_http_llm_router_model_t *model,
                                      ngx_str_t *value);
    size_t                         offset;       /* of a string, set as is */
} ngx_http_llm_router_option_t;


#define NGX_HTTP_LLM_ROUTER_OPTION_AUTH  0x04


/* fallback and escalate name models resolved once every model is known */

static ngx_http_llm_router_option_t  ngx_http_llm_router_options[] = {
    { ngx_string("url"), 1, 1, 0x01, ngx_http_llm_router_set_url, 0 },
    { ngx_string("model"), 1, 1, 0x02, NULL,
      offsetof(ngx_http_llm_router_model_t, upstream) },
    { ngx_string("auth"), 1, 1, NGX_HTTP_LLM_ROUTER_OPTION_AUTH,
      ngx_http_llm_router_set_auth, 0 },
    { ngx_string("key"), 1, 1, 0x08, ngx_http_llm_router_set_key, 0 },
    { ngx_string("key_file"), 1, 1, 0x08, ngx_http_llm_router_set_key_file,
      0 },
    { ngx_string("price"), 2, 4, 0x10, ngx_http_llm_router_set_price, 0 },
    { ngx_string("context"), 1, 1, 0x20, ngx_http_llm_router_set_context,
      0 },
    { ngx_string("fallback"), 1, 1, 0x40, NULL,
      offsetof(ngx_http_llm_router_model_t, fallback_name) },
    { ngx_string("escalate"), 1, 1, 0x80, NULL,
      offsetof(ngx_http_llm_router_model_t, escalate_name) },
    { ngx_string("api"), 1, 1, 0x100, ngx_http_llm_router_set_api, 0 },
    { ngx_null_string, 0, 0, 0, NULL, 0 }
};


/* indexed by NGX_HTTP_LLM_ROUTER_AUTH_* */

static ngx_str_t  ngx_http_llm_router_auth_names[] = {
    ngx_string("none"),
    ngx_string("bearer"),
    ngx_string("x-api-key"),
    ngx_string("api-key")
};


static ngx_command_t  ngx_http_llm_router_commands[] = {

    { ngx_string("llm_router_model"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_BLOCK|NGX_CONF_TAKE1,
      ngx_http_llm_router_model_block,
      NGX_HTTP_MAIN_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("llm_router_zone"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE2,
      ngx_http_llm_router_zone,
      NGX_HTTP_MAIN_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("llm_router_alert"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE123,
      ngx_http_llm_router_alert,
      NGX_HTTP_MAIN_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("llm_router_budget"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_1MORE,
      ngx_http_llm_router_budget,
      NGX_HTTP_LOC_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("llm_router_status"),
      NGX_HTTP_LOC_CONF|NGX_CONF_NOARGS,
      ngx_http_llm_router_status,
      NGX_HTTP_LOC_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("llm_router_cooldown"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_msec_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_llm_router_loc_conf_t, cooldown),
      NULL },

    { ngx_string("llm_router_cooldown_store"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_str_slot,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_http_llm_router_main_conf_t, cooldown_store),
      NULL },

    { ngx_string("llm_router_redis"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_2MORE,
      ngx_http_llm_router_redis,
      NGX_HTTP_MAIN_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("llm_router_redis_share"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_num_slot,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_http_llm_router_main_conf_t, redis_share),
      &ngx_http_llm_router_share_bounds },

    { ngx_string("llm_router_keywords"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_2MORE,
      ngx_http_llm_router_keywords,
      NGX_HTTP_MAIN_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("llm_router"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_FLAG,
      ngx_http_llm_router_enable,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_llm_router_loc_conf_t, enable),
      NULL },

    { ngx_string("llm_router_api"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_http_llm_router_api,
      NGX_HTTP_LOC_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("llm_router_scan_limit"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_size_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_llm_router_loc_conf_t, scan_limit),
      &ngx_http_llm_router_scan_limit_bounds },

    { ngx_string("llm_router_string_buffer_size"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_size_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_llm_router_loc_conf_t, string_buffer_size),
      &ngx_http_llm_router_string_buffer_bounds },

    { ngx_string("llm_router_history"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_num_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_llm_router_loc_conf_t, history),
      &ngx_http_llm_router_history_bounds },

    { ngx_string("llm_router_rule"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_2MORE,
      ngx_http_llm_router_rule,
      NGX_HTTP_LOC_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("llm_router_default"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_http_llm_router_default,
      NGX_HTTP_LOC_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("llm_router_classifier"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_http_llm_router_classifier,
      NGX_HTTP_LOC_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("llm_router_explain"),
      NGX_HTTP_LOC_CONF|NGX_CONF_NOARGS,
      ngx_http_llm_router_explain,
      NGX_HTTP_LOC_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("llm_router_fallback_status"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_1MORE,
      ngx_http_llm_router_fallback_status,
      NGX_HTTP_LOC_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("llm_router_escalate"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_FLAG,
      ngx_conf_set_flag_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_llm_router_loc_conf_t, escalate),
      NULL },

    { ngx_string("llm_router_escalate_min_length"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_num_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_llm_router_loc_conf_t, escalate_min_length),
      NULL },

    { ngx_string("llm_router_escalate_pattern"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_1MORE,
      ngx_http_llm_router_escalate_pattern,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_llm_router_loc_conf_t, escalate_patterns),
      NULL },

    { ngx_string("llm_router_escalate_require"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_1MORE,
      ngx_http_llm_router_escalate_pattern,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_llm_router_loc_conf_t, escalate_require),
      NULL },

    { ngx_string("llm_router_escalate_json"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_FLAG,
      ngx_conf_set_flag_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_llm_router_loc_conf_t, escalate_json),
      NULL },

    { ngx_string("llm_router_escalate_tool_args"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_FLAG,
      ngx_conf_set_flag_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_llm_router_loc_conf_t, escalate_tool_args),
      NULL },

    { ngx_string("llm_router_escalate_stream"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_FLAG,
      ngx_conf_set_flag_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_llm_router_loc_conf_t, escalate_stream),
      NULL },

    { ngx_string("llm_router_escalate_buffer"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_size_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_llm_router_loc_conf_t, escalate_buffer),
      NULL },

    { ngx_string("llm_router_triage"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_1MORE,
      ngx_http_llm_router_triage,
      NGX_HTTP_LOC_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("llm_router_shadow"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_1MORE,
      ngx_http_llm_router_shadow_directive,
      NGX_HTTP_LOC_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("llm_router_triage_prompt"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_str_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_llm_router_loc_conf_t, triage_prompt),
      NULL },

    { ngx_string("llm_router_pin"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_1MORE,
      ngx_http_llm_router_pin,
      NGX_HTTP_LOC_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("llm_router_pass_header"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_http_llm_router_pass_header,
      NGX_HTTP_LOC_CONF_OFFSET,
      0,
      NULL },

      ngx_null_command
};


static ngx_http_module_t  ngx_http_llm_router_module_ctx = {
    ngx_http_llm_router_preconfiguration,  /* preconfiguration */
    ngx_http_llm_router_postconfiguration, /* postconfiguration */

    ngx_http_llm_router_create_main_conf,  /* create main configuration */
    ngx_http_llm_router_init_main_conf,    /* init main configuration */

    NULL,                                  /* create server configuration */
    NULL,                                  /* merge server configuration */

    ngx_http_llm_router_create_loc_conf,   /* create location configuration */
    ngx_http_llm_router_merge_loc_conf     /* merge location configuration */
};


ngx_module_t  ngx_http_llm_router_module = {
    NGX_MODULE_V1,
    &ngx_http_llm_router_module_ctx,       /* module context */
    ngx_http_llm_router_commands,          /* module directives */
    NGX_HTTP_MODULE,                       /* module type */
    NULL,                                  /* init master */
    ngx_http_llm_router_init_module,       /* init module */
    ngx_http_llm_router_init_process,      /* init process */
    NULL,                                  /* init thread */
    NULL,                                  /* exit thread */
    ngx_http_llm_router_redis_exit,        /* exit process */
    NULL,                                  /* exit master */
    NGX_MODULE_V1_PADDING
};


static char *
ngx_http_llm_router_model_block(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf)
{
    ngx_http_llm_router_main_conf_t *lmcf = conf;

    char                         *rv;
    u_char                       *p;
    size_t                        len;
    ngx_str_t                    *value;
    ngx_conf_t                    save;
    ngx_http_llm_router_model_t  *model;

    value = cf->args->elts;

    if (ngx_http_llm_router_find(&lmcf->models, &value[1]) != NGX_ERROR) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "duplicate llm_router_model \"%V\"", &value[1]);
        return NGX_CONF_ERROR;
    }

    if (ngx_http_llm_router_check_label(cf, &value[1]) != NGX_OK) {
        return NGX_CONF_ERROR;
    }

    model = ngx_array_push(&lmcf->models);
    if (model == NULL) {
        return NGX_CONF_ERROR;
    }

    ngx_memzero(model, sizeof(ngx_http_llm_router_model_t));

    model->name = value[1];
    model->dialect = &llmr_dialects[LLMR_API_CHAT];
    model->auth = NGX_HTTP_LLM_ROUTER_AUTH_BEARER;
    model->hash = ngx_crc32_short(value[1].data, value[1].len) | 1;
    model->file = cf->conf_file->file.name.data;
    model->line = cf->conf_file->line;

    save = *cf;
    cf->handler = ngx_http_llm_router_model_option;
    cf->handler_conf = model;

    rv = ngx_conf_parse(cf, NULL);

    *cf = save;

    if (rv != NGX_CONF_OK) {
        return rv;
    }

    if (model->url.len == 0) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "no \"url\" in llm_router_model \"%V\"",
                           &model->name);
        return NGX_CONF_ERROR;
    }

    /* Anthropic takes its key in x-api-key */

    if (!(model->set & NGX_HTTP_LLM_ROUTER_OPTION_AUTH)
        && model->dialect->api == LLMR_API_MESSAGES)
    {
        model->auth = NGX_HTTP_LLM_ROUTER_AUTH_X_API_KEY;
    }

    if (model->key == NULL && model->auth != NGX_HTTP_LLM_ROUTER_AUTH_NONE) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "no \"key\" or \"key_file\" in llm_router_model "
                           "\"%V\" (use \"auth none\" for a provider "
                           "without credentials)", &model->name);
        return NGX_CONF_ERROR;
    }

    if (model->upstream.len == 0) {
        model->upstream = model->name;
    }

    /* the value written into request bodies, quoted once for all */

    len = llmr_json_escape_size(model->upstream.data, model->upstream.len);

    p = ngx_pnalloc(cf->pool, len + 2);
    if (p == NULL) {
        return NGX_CONF_ERROR;
    }

    model->upstream_json.data = p;

    *p++ = '"';
    p = llmr_json_escape(p, model->upstream.data, model->upstream.len);
    *p++ = '"';

    model->upstream_json.len = p - model->upstream_json.data;

    return NGX_CONF_OK;
}


static char *
ngx_http_llm_router_model_option(ngx_conf_t *cf, ngx_command_t *dummy,
    void *conf)
{
    ngx_http_llm_router_model_t *model = conf;

    char                           *rv;
    ngx_str_t                      *value;
    ngx_http_llm_router_option_t   *opt;

    value = cf->args->elts;

    for (opt = ngx_http_llm_router_options; opt->name.len; opt++) {
        if (opt->name.len == value[0].len
            && ngx_strcmp(opt->name.data, value[0].data) == 0)
        {
            break;
        }
    }

    if (opt->name.len == 0) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "unknown directive \"%V\" in llm_router_model "
                           "\"%V\"", &value[0], &model->name);
        return NGX_CONF_ERROR;
    }

    if (cf->args->nelts - 1 < opt->nargs
        || cf->args->nelts - 1 > opt->max_args)
    {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "invalid number of arguments in \"%V\" of "
                           "llm_router_model \"%V\"", &value[0],
                           &model->name);
        return NGX_CONF_ERROR;
    }

    if (model->set & opt->bit) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"%V\" is duplicate in llm_router_model \"%V\"",
                           &value[0], &model->name);
        return NGX_CONF_ERROR;
    }

    model->set |= opt->bit;

    if (opt->set == NULL) {
        *(ngx_str_t *) ((u_char *) model + opt->offset) = value[1];
        return NGX_CONF_OK;
    }

    rv = opt->set(cf, model, &value[1]);

    if (rv != NGX_CONF_OK && rv != NGX_CONF_ERROR) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "invalid \"%V\" in llm_router_model \"%V\": %s",
                           &value[0], &model->name, rv);
        return NGX_CONF_ERROR;
    }

    return rv;
}


static char *
ngx_http_llm_router_set_url(ngx_conf_t *cf, ngx_http_llm_router_model_t *model,
    ngx_str_t *value)
{
    size_t     skip;
    ngx_url_t  u;

    /*
     * the URL becomes proxy_pass's request line and Host header: a space
     * or a control character would break them, or add a header
     */

    if (ngx_strlchr(value->data, value->data + value->len, ' ')
        || ngx_http_llm_router_has_control(value->data, value->len))
    {
        return "an http:// or https:// URL without spaces or control "
               "characters expected";
    }

    if (ngx_strncasecmp(value->data, (u_char *) "http://", 7) == 0) {
        skip = 7;

    } else if (ngx_strncasecmp(value->data, (u_char *) "https://", 8) == 0) {
        skip = 8;

    } else {
        return "an http:// or https:// URL expected";
    }

    ngx_memzero(&u, sizeof(ngx_url_t));

    u.url.data = value->data + skip;
    u.url.len = value->len - skip;
    u.no_resolve = 1;
    u.uri_part = 1;

    if (ngx_parse_url(cf->pool, &u) != NGX_OK || u.host.len == 0) {
        return "an http:// or https:// URL with a host expected";
    }

    model->url = *value;

    return NGX_CONF_OK;
}


static char *
ngx_http_llm_router_set_auth(ngx_conf_t *cf,
    ngx_http_llm_router_model_t *model, ngx_str_t *value)
{
    ngx_uint_t  i;

    for (i = 0; i < sizeof(ngx_http_llm_router_auth_names)
                    / sizeof(ngx_str_t); i++)
    {
        if (ngx_http_llm_router_auth_names[i].len == value->len
            && ngx_strcmp(ngx_http_llm_router_auth_names[i].data,
                          value->data) == 0)
        {
            model->auth = i;
            return NGX_CONF_OK;
        }
    }

    return "bearer, x-api-key, api-key or none expected";
}


static char *
ngx_http_llm_router_set_key(ngx_conf_t *cf, ngx_http_llm_router_model_t *model,
    ngx_str_t *value)
{
    ngx_http_compile_complex_value_t  ccv;

    /*
     * The key is a header value: a CR or LF would end the header and
     * start one of the client's choosing.  The literal parts are all
     * there is to check here, variable names having no control
     * characters; the computed value is checked per request.
     */

    if (value->len == 0) {
        return "a non-empty key expected";
    }

    if (ngx_http_llm_router_has_control(value->data, value->len)) {
        return "a key without control characters expected";
    }

    model->key = ngx_palloc(cf->pool, sizeof(ngx_http_complex_value_t));
    if (model->key == NULL) {
        return NGX_CONF_ERROR;
    }

    ngx_memzero(&ccv, sizeof(ngx_http_compile_complex_value_t));

    ccv.cf = cf;
    ccv.value = value;
    ccv.complex_value = model->key;

    if (ngx_http_compile_complex_value(&ccv) != NGX_OK) {
        return NGX_CONF_ERROR;
    }

    return NGX_CONF_OK;
}


/* price IN OUT [cached=C] [cache_write=W], USD per million tokens */

static char *
ngx_http_llm_router_set_price(ngx_conf_t *cf,
    ngx_http_llm_router_model_t *model, ngx_str_t *value)
{
    ngx_uint_t  i, n;

    if (llmr_price_parse(value[0].data, value[0].len, &model->price_in)
        != LLMR_OK
        || llmr_price_parse(value[1].data, value[1].len, &model->price_out)
           != LLMR_OK)
    {
        return "two prices in USD per million tokens (input, output) "
               "expected, at most 1000 with 6 decimals";
    }

    n = cf->args->nelts - 1;

    for (i = 2; i < n; i++) {

        if (value[i].len > 7
            && ngx_strncmp(value[i].data, "cached=", 7) == 0
            && !model->cached_set
            && llmr_price_parse(value[i].data + 7, value[i].len - 7,
                                &model->price_cached)
               == LLMR_OK)
        {
            model->cached_set = 1;
            continue;
        }

        if (value[i].len > 12
            && ngx_strncmp(value[i].data, "cache_write=", 12) == 0
            && !model->cache_write_set
            && llmr_price_parse(value[i].data + 12, value[i].len - 12,
                                &model->price_cache_write)
               == LLMR_OK)
        {
            model->cache_write_set = 1;
            continue;
        }

        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "invalid parameter \"%V\" in \"price\" of "
                           "llm_router_model \"%V\": \"cached=USD\" or "
                           "\"cache_write=USD\" expected, once each",
                           &value[i], &model->name);
        return NGX_CONF_ERROR;
    }

    return NGX_CONF_OK;
}


static char *
ngx_http_llm_router_set_context(ngx_conf_t *cf,
    ngx_http_llm_router_model_t *model, ngx_str_t *value)
{
    ngx_int_t  n;

    n = ngx_atoi(value->data, value->len);

    if (n == NGX_ERROR) {
        return "a number of tokens expected";
    }

    model->context = n;

    return NGX_CONF_OK;
}


static char *
ngx_http_llm_router_set_api(ngx_conf_t *cf,
    ngx_http_llm_router_model_t *model, ngx_str_t *value)
{
    model->dialect = llmr_dialect_find(value->data, value->len);

    if (model->dialect == NULL) {
        return "chat, messages or responses expected";
    }

    return NGX_CONF_OK;
}


/* llm_router_api chat | messages | responses | auto */

static char *
ngx_http_llm_router_api(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_llm_router_loc_conf_t *llcf = conf;

    ngx_str_t             *value;
    const llmr_dialect_t  *d;

    if (llcf->api != NGX_CONF_UNSET_UINT) {
        return "is duplicate";
    }

    value = cf->args->elts;

    if (ngx_strcmp(value[1].data, "auto") == 0) {
        llcf->api = LLMR_APIS;

    } else {
        d = llmr_dialect_find(value[1].data, value[1].len);

        if (d == NULL) {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "invalid value \"%V\", \"chat\", "
                               "\"messages\", \"responses\" or \"auto\" "
                               "expected", &value[1]);
            return NGX_CONF_ERROR;
        }

        llcf->api = d->api;
    }

    llcf->api_file = cf->conf_file->file.name.data;
    llcf->api_line = cf->conf_file->line;

    return NGX_CONF_OK;
}


/* llm_router on | off: where, for the errors of locations it reaches */

static char *
ngx_http_llm_router_enable(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_llm_router_loc_conf_t *llcf = conf;

    char  *rv;

    rv = ngx_conf_set_flag_slot(cf, cmd, conf);

    if (rv == NGX_CONF_OK) {
        llcf->enable_file = cf->conf_file->file.name.data;
        llcf->enable_line = cf->conf_file->line;
    }

    return rv;
}


/*
 * llm_router_pin on | off | model ...: names add models to those the
 * location can reach, resolved with them once every model is known
 */

static char *
ngx_http_llm_router_pin(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_llm_router_loc_conf_t *llcf = conf;

    ngx_str_t   *value, *name;
    ngx_uint_t   i;

    if (llcf->pin != NGX_CONF_UNSET) {
        return "is duplicate";
    }

    value = cf->args->elts;

    if (cf->args->nelts == 2) {
        if (ngx_strcmp(value[1].data, "on") == 0) {
            llcf->pin = 1;
            return NGX_CONF_OK;
        }

        if (ngx_strcmp(value[1].data, "off") == 0) {
            llcf->pin = 0;
            return NGX_CONF_OK;
        }
    }

    llcf->pin_names = ngx_array_create(cf->pool, cf->args->nelts - 1,
                                       sizeof(ngx_str_t));
    if (llcf->pin_names == NULL) {
        return NGX_CONF_ERROR;
    }

    for (i = 1; i < cf->args->nelts; i++) {

        if (ngx_strcmp(value[i].data, "on") == 0
            || ngx_strcmp(value[i].data, "off") == 0)
        {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "invalid value \"%V\" in \"llm_router_pin\": "
                               "\"on\", \"off\" or model names expected",
                               &value[i]);
            return NGX_CONF_ERROR;
        }

        name = ngx_array_push(llcf->pin_names);
        if (name == NULL) {
            return NGX_CONF_ERROR;
        }

        *name = value[i];
    }

    llcf->pin = 1;
    llcf->pin_file = cf->conf_file->file.name.data;
    llcf->pin_line = cf->conf_file->line;

    return NGX_CONF_OK;
}


/*
 * Patterns, case-insensitive: of refusal or uncertainty that escalate
 * an answer, or one of which an answer must match
 */

static char *
ngx_http_llm_router_escalate_pattern(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf)
{
#if (NGX_PCRE)
    char  *p = conf;

    u_char               errstr[NGX_MAX_CONF_ERRSTR];
    ngx_str_t           *value;
    ngx_uint_t           i;
    ngx_array_t        **patterns;
    ngx_regex_elt_t     *re;
    ngx_regex_compile_t  rc;

    patterns = (ngx_array_t **) (p + cmd->offset);

    if (*patterns != NGX_CONF_UNSET_PTR) {
        return "is duplicate";
    }

    *patterns = ngx_array_create(cf->pool, cf->args->nelts - 1,
                                 sizeof(ngx_regex_elt_t));
    if (*patterns == NULL) {
        return NGX_CONF_ERROR;
    }

    value = cf->args->elts;

    for (i = 1; i < cf->args->nelts; i++) {
        ngx_memzero(&rc, sizeof(ngx_regex_compile_t));

        rc.pattern = value[i];
        rc.pool = cf->pool;
        rc.options = NGX_REGEX_CASELESS;
        rc.err.len = NGX_MAX_CONF_ERRSTR;
        rc.err.data = errstr;

        if (ngx_regex_compile(&rc) != NGX_OK) {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0, "%V", &rc.err);
            return NGX_CONF_ERROR;
        }

        re = ngx_array_push(*patterns);
        if (re == NULL) {
            return NGX_CONF_ERROR;
        }

        re->regex = rc.regex;
        re->name = value[i].data;
    }

    return NGX_CONF_OK;

#else
    return "requires the PCRE library";
#endif
}


/*
 * The key is read once, by the master, so that workers need no access
 * to the file and the key never sits in nginx.conf.
 */

static char *
ngx_http_llm_router_set_key_file(ngx_conf_t *cf,
    ngx_http_llm_router_model_t *model, ngx_str_t *name)
{
    u_char     *p;
    ngx_str_t   what;

    p = ngx_pnalloc(cf->pool, sizeof("\"key_file\" of llm_router_model \"\"")
                              - 1 + model->name.len);
    if (p == NULL) {
        return NGX_CONF_ERROR;
    }

    what.data = p;
    what.len = ngx_sprintf(p, "\"key_file\" of llm_router_model \"%V\"",
                           &model->name)
               - p;

    model->key = ngx_pcalloc(cf->pool, sizeof(ngx_http_complex_value_t));
    if (model->key == NULL) {
        return NGX_CONF_ERROR;
    }

    return ngx_http_llm_router_read_secret(cf, name, &what,
                                           &model->key->value);
}


/*
 * A secret in a file (a model's key, a Redis password), read by the
 * master: its content less white space around it, without control
 * characters, for it is sent as a header or a command.
 */

char *
ngx_http_llm_router_read_secret(ngx_conf_t *cf, ngx_str_t *name,
    ngx_str_t *what, ngx_str_t *secret)
{
    u_char           *p, *last;
    ssize_t           n;
    ngx_str_t         path;
    ngx_file_t        file;
    ngx_file_info_t   fi;

    path = *name;

    if (ngx_conf_full_name(cf->cycle, &path, 1) != NGX_OK) {
        return NGX_CONF_ERROR;
    }

    ngx_memzero(&file, sizeof(ngx_file_t));

    file.name = path;
    file.log = cf->log;

    file.fd = ngx_open_file(path.data, NGX_FILE_RDONLY, NGX_FILE_OPEN, 0);

    if (file.fd == NGX_INVALID_FILE) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, ngx_errno,
                           "%V: " ngx_open_file_n " \"%s\" failed", what,
                           path.data);
        return NGX_CONF_ERROR;
    }

    n = NGX_ERROR;
    p = NULL;

    if (ngx_fd_info(file.fd, &fi) != NGX_FILE_ERROR
        && ngx_file_size(&fi) <= NGX_HTTP_LLM_ROUTER_KEY_FILE_MAX)
    {
        p = ngx_pnalloc(cf->pool, ngx_file_size(&fi) + 1);

        if (p) {
            n = ngx_read_file(&file, p, ngx_file_size(&fi), 0);
        }
    }

    if (ngx_close_file(file.fd) == NGX_FILE_ERROR) {
        ngx_log_error(NGX_LOG_ALERT, cf->log, ngx_errno,
                      ngx_close_file_n " \"%s\" failed", path.data);
    }

    if (p == NULL || n == NGX_ERROR) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "%V: cannot read \"%s\" (at most %d bytes)",
                           what, path.data, NGX_HTTP_LLM_ROUTER_KEY_FILE_MAX);
        return NGX_CONF_ERROR;
    }

    /* a trailing newline is not part of the secret */

    last = p + n;

    while (last > p && (last[-1] == '\n' || last[-1] == '\r'
                        || last[-1] == ' ' || last[-1] == '\t'))
    {
        last--;
    }

    while (p < last && (*p == ' ' || *p == '\t')) {
        p++;
    }

    if (p == last) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0, "%V: \"%s\" is empty", what,
                           path.data);
        return NGX_CONF_ERROR;
    }

    if (ngx_http_llm_router_has_control(p, last - p)) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "%V: \"%s\" holds a control character (only "
                           "white space around it is removed)", what,
                           path.data);
        return NGX_CONF_ERROR;
    }

    secret->data = p;
    secret->len = last - p;

    return NGX_CONF_OK;
}


static char *
ngx_http_llm_router_keywords(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_llm_router_main_conf_t *lmcf = conf;

    ngx_str_t                       *value, *phrase;
    ngx_uint_t                       i, k;
    ngx_http_llm_router_keywords_t  *list;

    value = cf->args->elts;

    if (ngx_http_llm_router_find(&lmcf->lists, &value[1]) != NGX_ERROR) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "duplicate llm_router_keywords \"%V\"",
                           &value[1]);
        return NGX_CONF_ERROR;
    }

    if (lmcf->lists.nelts == LLMR_KEYWORDS_MAX) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "too many llm_router_keywords lists, "
                           "at most %d", LLMR_KEYWORDS_MAX);
        return NGX_CONF_ERROR;
    }

    list = ngx_array_push(&lmcf->lists);
    if (list == NULL) {
        return NGX_CONF_ERROR;
    }

    list->name = value[1];

    if (ngx_array_init(&list->phrases, cf->pool, cf->args->nelts - 2,
                       sizeof(ngx_str_t))
        != NGX_OK)
    {
        return NGX_CONF_ERROR;
    }

    for (i = 2; i < cf->args->nelts; i++) {

        for (k = 0; k < value[i].len; k++) {
            if (value[i].data[k] != ' ' && value[i].data[k] != '\t'
                && value[i].data[k] != '\r' && value[i].data[k] != '\n')
            {
                break;
            }
        }

        if (k == value[i].len) {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "empty phrase in llm_router_keywords \"%V\"",
                               &value[1]);
            return NGX_CONF_ERROR;
        }

        phrase = ngx_array_push(&list->phrases);
        if (phrase == NULL) {
            return NGX_CONF_ERROR;
        }

        *phrase = value[i];
    }

    return NGX_CONF_OK;
}


static char *
ngx_http_llm_router_rule(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_llm_router_loc_conf_t *llcf = conf;

    char                             err[LLMR_ERROR_MAX];
    ngx_str_t                       *value;
    ngx_uint_t                       i, n;
    llmr_rule_t                     *rule;
    llmr_cond_t                     *cond;
    ngx_http_llm_router_rule_src_t  *src;

    value = cf->args->elts;
    n = cf->args->nelts;

    if (n < 4) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "invalid number of arguments in "
                           "\"llm_router_rule\" directive: "
                           "NAME CONDITION... MODEL expected");
        return NGX_CONF_ERROR;
    }

    if (llcf->rules == NULL) {
        llcf->rules = ngx_array_create(cf->pool, 4, sizeof(llmr_rule_t));
        llcf->sources = ngx_array_create(cf->pool, 4,
                                   sizeof(ngx_http_llm_router_rule_src_t));
        if (llcf->rules == NULL || llcf->sources == NULL) {
            return NGX_CONF_ERROR;
        }
    }

    /* the names the log gives to pinned and default decisions */

    if (ngx_strcmp(value[1].data, "client") == 0
        || ngx_strcmp(value[1].data, "default") == 0
        || ngx_strcmp(value[1].data, "budget") == 0)
    {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "rule name \"%V\" is reserved in "
                           "\"llm_router_rule\"", &value[1]);
        return NGX_CONF_ERROR;
    }

    if (ngx_http_llm_router_check_label(cf, &value[1]) != NGX_OK) {
        return NGX_CONF_ERROR;
    }

    rule = llcf->rules->elts;

    for (i = 0; i < llcf->rules->nelts; i++) {
        if (rule[i].name.len == value[1].len
            && ngx_strncmp(rule[i].name.data, value[1].data, value[1].len)
               == 0)
        {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "duplicate llm_router_rule \"%V\"",
                               &value[1]);
            return NGX_CONF_ERROR;
        }
    }

    rule = ngx_array_push(llcf->rules);
    src = ngx_array_push(llcf->sources);
    cond = ngx_palloc(cf->pool, (n - 3) * sizeof(llmr_cond_t));

    if (rule == NULL || src == NULL || cond == NULL) {
        return NGX_CONF_ERROR;
    }

    rule->name.data = value[1].data;
    rule->name.len = value[1].len;
    rule->conds = cond;
    rule->nconds = n - 3;
    rule->model = 0;

    for (i = 2; i < n - 1; i++, cond++) {

        if (llmr_cond_parse(cond, value[i].data, value[i].len, err,
                            sizeof(err))
            != LLMR_OK)
        {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "invalid condition \"%V\" in "
                               "\"llm_router_rule\": %s", &value[i], err);
            return NGX_CONF_ERROR;
        }

        if (cond->type == LLMR_COND_EXTERNAL
            && ngx_http_llm_router_var_cond(cf, llcf, cond) != NGX_CONF_OK)
        {
            return NGX_CONF_ERROR;
        }
    }

    src->model = value[n - 1];
    src->file = cf->conf_file->file.name.data;
    src->line = cf->conf_file->line;

    return NGX_CONF_OK;
}


/* "$name=value", "$name~regex" or "$name~*regex" */

static char *
ngx_http_llm_router_var_cond(ngx_conf_t *cf,
    ngx_http_llm_router_loc_conf_t *llcf, llmr_cond_t *cond)
{
    u_char                          *p, *last;
    ngx_str_t                        name, text;
    ngx_http_llm_router_var_cond_t  *vc;
#if (NGX_PCRE)
    u_char                           errstr[NGX_MAX_CONF_ERRSTR];
    ngx_regex_compile_t              rc;
#endif

    text.data = (u_char *) cond->name.data;
    text.len = cond->name.len;

    p = text.data + 1;
    last = text.data + text.len;

    while (p < last && (*p == '_' || (*p >= '0' && *p <= '9')
                        || ((*p | 0x20) >= 'a' && (*p | 0x20) <= 'z')))
    {
        p++;
    }

    if (p == last || p == text.data + 1 || (*p != '=' && *p != '~')) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "invalid condition \"%V\" in \"llm_router_rule\":"
                           " $variable=value or $variable~regex expected",
                           &text);
        return NGX_CONF_ERROR;
    }

    if (llcf->vars == NULL) {
        llcf->vars = ngx_array_create(cf->pool, 2,
                                    sizeof(ngx_http_llm_router_var_cond_t));
        if (llcf->vars == NULL) {
            return NGX_CONF_ERROR;
        }
    }

    cond->arg = llcf->vars->nelts;

    vc = ngx_array_push(llcf->vars);
    if (vc == NULL) {
        return NGX_CONF_ERROR;
    }

    ngx_memzero(vc, sizeof(ngx_http_llm_router_var_cond_t));

    name.data = text.data + 1;
    name.len = p - name.data;

    vc->index = ngx_http_get_variable_index(cf, &name);
    if (vc->index == NGX_ERROR) {
        return NGX_CONF_ERROR;
    }

    if (*p++ == '=') {
        vc->value.data = p;
        vc->value.len = last - p;
        return NGX_CONF_OK;
    }

#if (NGX_PCRE)
    ngx_memzero(&rc, sizeof(ngx_regex_compile_t));

    if (p < last && *p == '*') {
        rc.options = NGX_REGEX_CASELESS;
        p++;
    }

    rc.pattern.data = p;
    rc.pattern.len = last - p;
    rc.pool = cf->pool;
    rc.err.len = NGX_MAX_CONF_ERRSTR;
    rc.err.data = errstr;

    vc->regex = ngx_http_regex_compile(cf, &rc);
    if (vc->regex == NULL) {
        return NGX_CONF_ERROR;
    }

    return NGX_CONF_OK;

#else
    ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                       "using regex \"%V\" requires PCRE library", &text);
    return NGX_CONF_ERROR;
#endif
}


static char *
ngx_http_llm_router_default(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_llm_router_loc_conf_t *llcf = conf;

    ngx_str_t  *value;

    if (llcf->default_name.data) {
        return "is duplicate";
    }

    value = cf->args->elts;

    llcf->default_name = value[1];
    llcf->default_file = cf->conf_file->file.name.data;
    llcf->default_line = cf->conf_file->line;

    return NGX_CONF_OK;
}


/*
 * A classifier file is read once per configuration, however many
 * locations use it; a reload reads it again.
 */

static char *
ngx_http_llm_router_classifier(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf)
{
    ngx_http_llm_router_loc_conf_t *llcf = conf;

    char                              *rv;
    ngx_str_t                         *value, path;
    ngx_uint_t                         i;
    ngx_http_llm_router_classifier_t  *c;
    ngx_http_llm_router_main_conf_t   *lmcf;

    if (llcf->classifier != NGX_CONF_UNSET_PTR) {
        return "is duplicate";
    }

    value = cf->args->elts;

    if (ngx_strcmp(value[1].data, "off") == 0) {
        llcf->classifier = NULL;
        return NGX_CONF_OK;
    }

    llcf->classifier_file = cf->conf_file->file.name.data;
    llcf->classifier_line = cf->conf_file->line;

    path = value[1];

    if (ngx_conf_full_name(cf->cycle, &path, 1) != NGX_OK) {
        return NGX_CONF_ERROR;
    }

    lmcf = ngx_http_conf_get_module_main_conf(cf, ngx_http_llm_router_module);

    c = lmcf->classifiers.elts;

    for (i = 0; i < lmcf->classifiers.nelts; i++) {
        if (c[i].path.len == path.len
            && ngx_strncmp(c[i].path.data, path.data, path.len) == 0)
        {
            llcf->classifier = &c[i].classifier;
            return NGX_CONF_OK;
        }
    }

    c = ngx_array_push(&lmcf->classifiers);
    if (c == NULL) {
        return NGX_CONF_ERROR;
    }

    c->path = path;

    rv = ngx_http_llm_router_load_classifier(cf, &path, &c->classifier);
    if (rv != NGX_CONF_OK) {
        return rv;
    }

    llcf->classifier = &c->classifier;

    return NGX_CONF_OK;
}


static char *
ngx_http_llm_router_load_classifier(ngx_conf_t *cf, ngx_str_t *path,
    llmr_classifier_t *c)
{
    char              err[LLMR_ERROR_MAX];
    u_char           *p;
    size_t            size;
    ssize_t           n;
    ngx_file_t        file;
    ngx_file_info_t   fi;

    ngx_memzero(&file, sizeof(ngx_file_t));

    file.name = *path;
    file.log = cf->log;

    file.fd = ngx_open_file(path->data, NGX_FILE_RDONLY, NGX_FILE_OPEN, 0);

    if (file.fd == NGX_INVALID_FILE) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, ngx_errno,
                           "llm_router_classifier: " ngx_open_file_n
                           " \"%s\" failed", path->data);
        return NGX_CONF_ERROR;
    }

    n = NGX_ERROR;
    p = NULL;
    size = 0;

    if (ngx_fd_info(file.fd, &fi) != NGX_FILE_ERROR
        && ngx_file_size(&fi)
           <= (off_t) llmr_classifier_size(LLMR_CLASSIFIER_BITS_MAX))
    {
        size = ngx_file_size(&fi);

        /* aligned for the weights, which are read in place */
        p = ngx_palloc(cf->pool, size + 1);

        if (p) {
            n = ngx_read_file(&file, p, size, 0);
        }
    }

    if (ngx_close_file(file.fd) == NGX_FILE_ERROR) {
        ngx_log_error(NGX_LOG_ALERT, cf->log, ngx_errno,
                      ngx_close_file_n " \"%s\" failed", path->data);
    }

    if (p == NULL || n != (ssize_t) size) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "llm_router_classifier: cannot read \"%s\"",
                           path->data);
        return NGX_CONF_ERROR;
    }

    if (llmr_classifier_load(c, p, size, err, sizeof(err)) != LLMR_OK) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "llm_router_classifier \"%s\": %s",
                           path->data, err);
        return NGX_CONF_ERROR;
    }

    return NGX_CONF_OK;
}


static char *
ngx_http_llm_router_explain(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_llm_router_loc_conf_t *llcf = conf;

    ngx_http_core_loc_conf_t  *clcf;

    if (llcf->explain != NGX_CONF_UNSET) {
        return "is duplicate";
    }

    /* the decision is made as usual, then answered instead of proxied */

    llcf->explain = 1;
    llcf->content = ngx_http_llm_router_explain_handler;

    if (llcf->enable_file == NULL) {
        llcf->enable_file = cf->conf_file->file.name.data;
        llcf->enable_line = cf->conf_file->line;
    }

    clcf = ngx_http_conf_get_module_loc_conf(cf, ngx_http_core_module);
    clcf->handler = llcf->content;

    return NGX_CONF_OK;
}


static char *
ngx_http_llm_router_fallback_status(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf)
{
    ngx_http_llm_router_loc_conf_t *llcf = conf;

    ngx_int_t    status;
    ngx_str_t   *value;
    ngx_uint_t   i, *s;

    if (llcf->fallback_status != NGX_CONF_UNSET_PTR) {
        return "is duplicate";
    }

    llcf->fallback_status = ngx_array_create(cf->pool, cf->args->nelts - 1,
                                             sizeof(ngx_uint_t));
    if (llcf->fallback_status == NULL) {
        return NGX_CONF_ERROR;
    }

    value = cf->args->elts;

    for (i = 1; i < cf->args->nelts; i++) {
        status = ngx_atoi(value[i].data, value[i].len);

        if (status < 400 || status > 599) {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "invalid status \"%V\" in "
                               "\"llm_router_fallback_status\", "
                               "400 to 599 expected", &value[i]);
            return NGX_CONF_ERROR;
        }

        s = ngx_array_push(llcf->fallback_status);
        if (s == NULL) {
            return NGX_CONF_ERROR;
        }

        *s = status;
    }

    return NGX_CONF_OK;
}


static char *
ngx_http_llm_router_status(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_llm_router_loc_conf_t *llcf = conf;

    ngx_http_core_loc_conf_t  *clcf;

    if (llcf->content == ngx_http_llm_router_status_handler) {
        return "is duplicate";
    }

    llcf->content = ngx_http_llm_router_status_handler;

    clcf = ngx_http_conf_get_module_loc_conf(cf, ngx_http_core_module);
    clcf->handler = llcf->content;

    return NGX_CONF_OK;
}


/*
 * Model, rule and budget names label the metrics in the zone, which
 * keeps them whole only up to a bound.
 */

ngx_int_t
ngx_http_llm_router_check_label(ngx_conf_t *cf, ngx_str_t *name)
{
    if (name->len > NGX_HTTP_LLM_ROUTER_LABEL_LEN) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "name \"%V\" is longer than %d bytes", name,
                           NGX_HTTP_LLM_ROUTER_LABEL_LEN);
        return NGX_ERROR;
    }

    return NGX_OK;
}


/*
 * A call the router makes (triage, shadow) goes to a location made for
 * it, internal: not back through the one that serves the clients, under
 * their settings, unrouted.  An exact or a prefix location of the URI's
 * very name takes it (a prefix one, unless an exact one does); the
 * location tree that would tell more is not built yet.
 */

char *
ngx_http_llm_router_check_uri(ngx_conf_t *cf,
    ngx_http_llm_router_loc_conf_t *conf, ngx_str_t *uri,
    const char *directive, u_char *file, ngx_uint_t line)
{
    ngx_http_core_loc_conf_t  *clcf;

    clcf = ngx_http_conf_get_module_loc_conf(cf, ngx_http_core_module);

    if (ngx_http_llm_router_on(conf)
        && !clcf->named && !clcf->noname
#if (NGX_PCRE)
        && clcf->regex == NULL
#endif
        && clcf->name.len == uri->len
        && ngx_strncmp(clcf->name.data, uri->data, uri->len) == 0)
    {
        ngx_log_error(NGX_LOG_EMERG, cf->log, 0,
                      "the URI \"%V\" of \"%s\" is the location that "
                      "routes in %s:%ui", uri, directive, file, line);
        return NGX_CONF_ERROR;
    }

    return NGX_CONF_OK;
}


/* an event of the module's own: a timer, or one it posts */

void
ngx_http_llm_router_event(ngx_event_t *ev, ngx_event_handler_pt handler,
    void *data, ngx_log_t *log)
{
    ev->handler = handler;
    ev->data = data;
    ev->log = log;
}


/* models, keyword lists and budgets alike start with their name */

ngx_int_t
ngx_http_llm_router_find(ngx_array_t *a, ngx_str_t *name)
{
    u_char      *elt;
    ngx_str_t   *s;
    ngx_uint_t   i;

    elt = a->elts;

    for (i = 0; i < a->nelts; i++, elt += a->size) {
        s = (ngx_str_t *) elt;

        if (s->len == name->len
            && ngx_strncmp(s->data, name->data, name->len) == 0)
        {
            return i;
        }
    }

    return NGX_ERROR;
}


/* bytes that a header value or a request line must not hold */

ngx_uint_t
ngx_http_llm_router_has_control(u_char *p, size_t len)
{
    u_char  *last;

    for (last = p + len; p < last; p++) {
        if (*p < 0x20 || *p == 0x7f) {
            return 1;
        }
    }

    return 0;
}


/*
 * The model a "fallback" or an "escalate" names; such a chain ends: a
 * model does not come back in its own.
 */

static ngx_int_t
ngx_http_llm_router_resolve_chain(ngx_conf_t *cf,
    ngx_http_llm_router_main_conf_t *lmcf, ngx_http_llm_router_model_t *model,
    const char *name)
{
    ngx_int_t                      m;
    ngx_str_t                     *target;
    ngx_uint_t                     n, fallback;
    ngx_http_llm_router_model_t   *next, **link;

    fallback = (name[0] == 'f');

    target = fallback ? &model->fallback_name : &model->escalate_name;
    link = fallback ? &model->fallback : &model->escalate;

    if (target->len == 0) {
        return NGX_OK;
    }

    m = ngx_http_llm_router_find(&lmcf->models, target);

    if (m == NGX_ERROR) {
        ngx_log_error(NGX_LOG_EMERG, cf->log, 0,
                      "unknown model \"%V\" in \"%s\" of "
                      "llm_router_model \"%V\" in %s:%ui", target, name,
                      &model->name, model->file, model->line);
        return NGX_ERROR;
    }

    *link = (ngx_http_llm_router_model_t *) lmcf->models.elts + m;

    /* a chain longer than the number of models loops */

    n = 0;

    for (next = *link; next; next = fallback ? next->fallback : next->escalate)
    {
        if (next == model || ++n > lmcf->models.nelts) {
            ngx_log_error(NGX_LOG_EMERG, cf->log, 0,
                          "the %s of llm_router_model \"%V\" "
                          "come back to it in %s:%ui",
                          fallback ? "fallbacks" : "escalate targets",
                          &model->name, model->file, model->line);
            return NGX_ERROR;
        }
    }

    return NGX_OK;
}


static char *
ngx_http_llm_router_check_scan_limit(ngx_conf_t *cf, void *post, void *data)
{
    size_t *sp = data;

    if (*sp != 0 && *sp < 1024) {
        return "must be 0 or at least 1k";
    }

    return NGX_CONF_OK;
}


/*
 * A worker's connections to Redis, and the buffer that a long string's
 * window is decoded into: one for all its requests, for each is decoded
 * and read in one go (see llmr_stand_in()).
 */

static ngx_int_t
ngx_http_llm_router_init_process(ngx_cycle_t *cycle)
{
    ngx_http_llm_router_main_conf_t  *lmcf;

    lmcf = ngx_http_cycle_get_module_main_conf(cycle,
                                               ngx_http_llm_router_module);

    if (lmcf && lmcf->scratch_size) {
        lmcf->scratch = ngx_palloc(cycle->pool, lmcf->scratch_size);
        if (lmcf->scratch == NULL) {
            return NGX_ERROR;
        }
    }

    return ngx_http_llm_router_redis_init(cycle);
}


/* the version, as nginx logs its own at start: "llm_router/0.1.0" */

static ngx_int_t
ngx_http_llm_router_init_module(ngx_cycle_t *cycle)
{
    ngx_log_error(NGX_LOG_NOTICE, cycle->log, 0, "llm_router/" LLMR_VERSION);

    return NGX_OK;
}


static ngx_int_t
ngx_http_llm_router_preconfiguration(ngx_conf_t *cf)
{
    return ngx_http_llm_router_add_variables(cf);
}


static ngx_int_t
ngx_http_llm_router_postconfiguration(ngx_conf_t *cf)
{
    ngx_http_handler_pt              *h;
    ngx_http_core_main_conf_t        *cmcf;
    ngx_http_llm_router_main_conf_t  *lmcf;

    static ngx_str_t  request_id = ngx_string("request_id");

    cmcf = ngx_http_conf_get_module_main_conf(cf, ngx_http_core_module);
    lmcf = ngx_http_conf_get_module_main_conf(cf, ngx_http_llm_router_module);

    /* a shadow samples by it, and its own request logs it */

    lmcf->request_id = ngx_http_get_variable_index(cf, &request_id);
    if (lmcf->request_id == NGX_ERROR) {
        return NGX_ERROR;
    }

    /* after access checks: a request that is not allowed is never read */

    h = ngx_array_push(&cmcf->phases[NGX_HTTP_PRECONTENT_PHASE].handlers);
    if (h == NULL) {
        return NGX_ERROR;
    }

    *h = ngx_http_llm_router_handler;

    h = ngx_array_push(&cmcf->phases[NGX_HTTP_LOG_PHASE].handlers);
    if (h == NULL) {
        return NGX_ERROR;
    }

    *h = ngx_http_llm_router_count;

    if (ngx_http_llm_router_request_body_init(cf) != NGX_OK) {
        return NGX_ERROR;
    }

    return ngx_http_llm_router_filter_init(cf);
}


static void *
ngx_http_llm_router_create_main_conf(ngx_conf_t *cf)
{
    ngx_http_llm_router_main_conf_t  *lmcf;

    lmcf = ngx_pcalloc(cf->pool, sizeof(ngx_http_llm_router_main_conf_t));
    if (lmcf == NULL) {
        return NULL;
    }

    if (ngx_array_init(&lmcf->models, cf->pool, 4,
                       sizeof(ngx_http_llm_router_model_t))
        != NGX_OK
        || ngx_array_init(&lmcf->lists, cf->pool, 4,
                          sizeof(ngx_http_llm_router_keywords_t))
           != NGX_OK
        || ngx_array_init(&lmcf->classifiers, cf->pool, 2,
                          sizeof(ngx_http_llm_router_classifier_t))
           != NGX_OK
        || ngx_array_init(&lmcf->budgets, cf->pool, 2,
                          sizeof(ngx_http_llm_router_budget_t))
           != NGX_OK
        || ngx_array_init(&lmcf->redis, cf->pool, 1,
                          sizeof(ngx_http_llm_router_redis_t))
           != NGX_OK)
    {
        return NULL;
    }

    lmcf->redis_share = NGX_CONF_UNSET_UINT;

    return lmcf;
}


/*
 * The whole http block has been read: the core gets its model table and
 * its compiled keyword lists.
 */

static char *
ngx_http_llm_router_init_main_conf(ngx_conf_t *cf, void *conf)
{
    ngx_http_llm_router_main_conf_t *lmcf = conf;

    u_char                           buf[sizeof("\"llm_router_budget\" \"\"")
                                         + NGX_HTTP_LLM_ROUTER_LABEL_LEN];
    ngx_int_t                        m;
    ngx_str_t                       *text, what;
    ngx_uint_t                       i, k, n;
    llmr_model_t                    *cm;
    ngx_http_llm_router_budget_t    *budget;
    llmr_phrase_t                   *phrases;
    ngx_http_llm_router_model_t     *model;
    ngx_http_llm_router_keywords_t  *list;

    model = lmcf->models.elts;

    cm = ngx_pcalloc(cf->pool, (lmcf->models.nelts + 1) * sizeof(llmr_model_t));
    if (cm == NULL) {
        return NGX_CONF_ERROR;
    }

    for (i = 0; i < lmcf->models.nelts; i++) {
        cm[i].name.data = model[i].name.data;
        cm[i].name.len = model[i].name.len;
        cm[i].upstream.data = model[i].upstream.data;
        cm[i].upstream.len = model[i].upstream.len;
        cm[i].api = model[i].dialect->api;
        cm[i].price_in = model[i].price_in;
        cm[i].price_out = model[i].price_out;
        cm[i].price_cached = model[i].price_cached;
        cm[i].price_cache_write = model[i].price_cache_write;
        cm[i].context = model[i].context;

        llmr_model_prices(&cm[i], model[i].dialect, model[i].cached_set,
                          model[i].cache_write_set);

        model[i].price_cached = cm[i].price_cached;
        model[i].price_cache_write = cm[i].price_cache_write;
    }

    lmcf->core_models = cm;

    for (i = 0; i < NGX_HTTP_LLM_ROUTER_RATES; i++) {
        if (lmcf->alerts[i].set && lmcf->zone == NULL) {
            ngx_log_error(NGX_LOG_EMERG, cf->log, 0,
                          "\"llm_router_alert\" needs \"llm_router_zone\"");
            return NGX_CONF_ERROR;
        }
    }

    ngx_conf_init_uint_value(lmcf->redis_share, 1);

    ngx_str_set(&what, "\"llm_router_cooldown_store\"");

    if (ngx_http_llm_router_redis_resolve(cf, &lmcf->cooldown_store, &what,
                                          &lmcf->cooldown_redis)
        != NGX_OK)
    {
        return NGX_CONF_ERROR;
    }

    if (lmcf->cooldown_redis && lmcf->zone == NULL) {
        ngx_log_error(NGX_LOG_EMERG, cf->log, 0,
                      "\"llm_router_cooldown_store\" needs "
                      "\"llm_router_zone\"");
        return NGX_CONF_ERROR;
    }

    budget = lmcf->budgets.elts;

    for (i = 0; i < lmcf->budgets.nelts; i++) {
        what.data = buf;
        what.len = ngx_snprintf(buf, sizeof(buf),
                                "\"llm_router_budget\" \"%V\"",
                                &budget[i].name)
                   - buf;

        if (ngx_http_llm_router_redis_resolve(cf, &budget[i].store_name,
                                              &what, &budget[i].redis)
            != NGX_OK)
        {
            return NGX_CONF_ERROR;
        }

        if (budget[i].downgrade_name.len == 0) {
            continue;
        }

        m = ngx_http_llm_router_find(&lmcf->models,
                                     &budget[i].downgrade_name);
        if (m == NGX_ERROR) {
            ngx_log_error(NGX_LOG_EMERG, cf->log, 0,
                          "unknown model \"%V\" in \"action=downgrade\" of "
                          "llm_router_budget \"%V\"",
                          &budget[i].downgrade_name, &budget[i].name);
            return NGX_CONF_ERROR;
        }

        budget[i].downgrade = &model[m];
    }

    for (i = 0; i < lmcf->models.nelts; i++) {
        if (ngx_http_llm_router_resolve_chain(cf, lmcf, &model[i],
                                              "fallback")
            != NGX_OK
            || ngx_http_llm_router_resolve_chain(cf, lmcf, &model[i],
                                                 "escalate")
               != NGX_OK)
        {
            return NGX_CONF_ERROR;
        }
    }

    list = lmcf->lists.elts;
    n = 0;

    for (i = 0; i < lmcf->lists.nelts; i++) {
        n += list[i].phrases.nelts;
    }

    phrases = ngx_pcalloc(cf->pool, (n + 1) * sizeof(llmr_phrase_t));
    if (phrases == NULL) {
        return NGX_CONF_ERROR;
    }

    n = 0;

    for (i = 0; i < lmcf->lists.nelts; i++) {
        text = list[i].phrases.elts;

        for (k = 0; k < list[i].phrases.nelts; k++) {
            phrases[n].text = ngx_pnalloc(cf->pool, text[k].len);
            if (phrases[n].text == NULL) {
                return NGX_CONF_ERROR;
            }

            ngx_memcpy(phrases[n].text, text[k].data, text[k].len);
            phrases[n].len = text[k].len;
            phrases[n].list = i;
            n++;
        }
    }

    if (llmr_keywords_init(&lmcf->keywords, phrases, n, lmcf->lists.nelts)
        != LLMR_OK)
    {
        return NGX_CONF_ERROR;
    }

    return NGX_CONF_OK;
}


static void *
ngx_http_llm_router_create_loc_conf(ngx_conf_t *cf)
{
    ngx_http_llm_router_loc_conf_t  *llcf;

    llcf = ngx_pcalloc(cf->pool, sizeof(ngx_http_llm_router_loc_conf_t));
    if (llcf == NULL) {
        return NULL;
    }

    /*
     * set by ngx_pcalloc():
     *
     *     llcf->rules = NULL;
     *     llcf->sources = NULL;
     *     llcf->vars = NULL;
     *     llcf->default_name = { 0, NULL };
     *     llcf->default_model = NULL;
     *     llcf->triage_prompt = { 0, NULL };
     */

    llcf->enable = NGX_CONF_UNSET;
    llcf->explain = NGX_CONF_UNSET;
    llcf->classifier = NGX_CONF_UNSET_PTR;
    llcf->fallback_status = NGX_CONF_UNSET_PTR;
    llcf->budget_names = NGX_CONF_UNSET_PTR;
    llcf->cooldown = NGX_CONF_UNSET_MSEC;
    llcf->escalate = NGX_CONF_UNSET;
    llcf->escalate_json = NGX_CONF_UNSET;
    llcf->escalate_tool_args = NGX_CONF_UNSET;
    llcf->escalate_stream = NGX_CONF_UNSET;
    llcf->escalate_min_length = NGX_CONF_UNSET_UINT;
    llcf->escalate_buffer = NGX_CONF_UNSET_SIZE;
    llcf->escalate_patterns = NGX_CONF_UNSET_PTR;
    llcf->escalate_require = NGX_CONF_UNSET_PTR;
    llcf->pin = NGX_CONF_UNSET;
    llcf->pass_headers = NGX_CONF_UNSET_UINT;
    llcf->history = NGX_CONF_UNSET;
    llcf->string_buffer_size = NGX_CONF_UNSET_SIZE;
    llcf->scan_limit = NGX_CONF_UNSET_SIZE;
    llcf->triage = NGX_CONF_UNSET_PTR;
    llcf->shadow = NGX_CONF_UNSET_PTR;
    llcf->api = NGX_CONF_UNSET_UINT;

    return llcf;
}


static char *
ngx_http_llm_router_merge_loc_conf(ngx_conf_t *cf, void *parent, void *child)
{
    ngx_http_llm_router_loc_conf_t *prev = parent;
    ngx_http_llm_router_loc_conf_t *conf = child;

    size_t                            scratch;
    ngx_flag_t                        enable;
    ngx_http_core_loc_conf_t         *clcf;
    ngx_http_llm_router_main_conf_t  *lmcf;

    /* as set at this level, if it is */
    enable = conf->enable;

    if (conf->enable == NGX_CONF_UNSET && conf->enable_file == NULL) {
        conf->enable_file = prev->enable_file;
        conf->enable_line = prev->enable_line;
    }

    ngx_conf_merge_value(conf->enable, prev->enable, 0);
    /* not inherited: only the location itself answers with its decision */
    if (conf->explain == NGX_CONF_UNSET) {
        conf->explain = 0;
    }

    if (conf->classifier == NGX_CONF_UNSET_PTR) {
        conf->classifier = prev->classifier;
        conf->classifier_file = prev->classifier_file;
        conf->classifier_line = prev->classifier_line;
    }

    if (conf->classifier == NGX_CONF_UNSET_PTR) {
        conf->classifier = NULL;
    }

    if (conf->pin == NGX_CONF_UNSET) {
        conf->pin = (prev->pin == NGX_CONF_UNSET) ? 1 : prev->pin;
        conf->pin_names = prev->pin_names;
        conf->pin_file = prev->pin_file;
        conf->pin_line = prev->pin_line;
    }

    /* like the rules: the headers a level passes replace inherited ones */
    ngx_conf_merge_uint_value(conf->pass_headers, prev->pass_headers, 0);

    ngx_conf_merge_ptr_value(conf->fallback_status, prev->fallback_status,
                             &ngx_http_llm_router_default_fallback);

    if (conf->budget_names == NGX_CONF_UNSET_PTR) {
        conf->budget_names = prev->budget_names;
        conf->budgets = prev->budgets;

    } else if (ngx_http_llm_router_resolve_budgets(cf, conf) != NGX_OK) {
        return NGX_CONF_ERROR;
    }
    ngx_conf_merge_msec_value(conf->cooldown, prev->cooldown, 10000);
    ngx_conf_merge_value(conf->escalate, prev->escalate, 0);
    ngx_conf_merge_value(conf->escalate_json, prev->escalate_json, 0);
    ngx_conf_merge_value(conf->escalate_tool_args, prev->escalate_tool_args,
                         0);
    ngx_conf_merge_value(conf->escalate_stream, prev->escalate_stream, 0);
    ngx_conf_merge_uint_value(conf->escalate_min_length,
                              prev->escalate_min_length, 0);
    ngx_conf_merge_size_value(conf->escalate_buffer, prev->escalate_buffer,
                              1024 * 1024);
    ngx_conf_merge_ptr_value(conf->escalate_patterns, prev->escalate_patterns,
                             NULL);
    ngx_conf_merge_ptr_value(conf->escalate_require, prev->escalate_require,
                             NULL);
    ngx_conf_merge_value(conf->history, prev->history, 6);
    ngx_conf_merge_size_value(conf->string_buffer_size,
                              prev->string_buffer_size, LLMR_HOLD_MAX);
    ngx_conf_merge_size_value(conf->scan_limit, prev->scan_limit,
                              LLMR_SCAN_LIMIT);

    lmcf = ngx_http_conf_get_module_main_conf(cf, ngx_http_llm_router_module);
    scratch = LLMR_SCRATCH_SIZE(conf->scan_limit);

    if (conf->scan_limit && scratch > lmcf->scratch_size) {
        lmcf->scratch_size = scratch;
    }

    if (conf->api == NGX_CONF_UNSET_UINT) {
        conf->api = (prev->api == NGX_CONF_UNSET_UINT) ? LLMR_APIS
                                                       : prev->api;
        conf->api_file = prev->api_file;
        conf->api_line = prev->api_line;
    }

    /* like proxy_set_header: rules of a level replace the inherited ones */

    if (conf->rules == NULL) {
        conf->rules = prev->rules;
        conf->sources = prev->sources;
        conf->vars = prev->vars;
    }

    if (conf->default_name.data == NULL) {
        conf->default_name = prev->default_name;
        conf->default_file = prev->default_file;
        conf->default_line = prev->default_line;
    }

    if (ngx_http_llm_router_merge_triage(cf, prev, conf) != NGX_CONF_OK
        || ngx_http_llm_router_merge_shadow(cf, prev, conf) != NGX_CONF_OK)
    {
        return NGX_CONF_ERROR;
    }

    if (ngx_http_llm_router_resolve(cf, conf) != NGX_OK
        || ngx_http_llm_router_reachable(cf, conf) != NGX_OK
        || ngx_http_llm_router_check_location(cf, conf, enable) != NGX_OK)
    {
        return NGX_CONF_ERROR;
    }

    /* the score counts the window the model was trained with */

    if (ngx_http_llm_router_on(conf) && conf->classifier
        && conf->classifier->history != (ngx_uint_t) conf->history)
    {
        ngx_log_error(NGX_LOG_EMERG, cf->log, 0,
                      "llm_router_classifier was trained with a history "
                      "of %ui messages, but llm_router_history is %i, "
                      "in %s:%ui", (ngx_uint_t) conf->classifier->history,
                      conf->history, conf->classifier_file,
                      conf->classifier_line);
        return NGX_CONF_ERROR;
    }

    /*
     * proxy_pass in the same location would take the request over: it
     * would be forwarded as is, or the status page never shown
     */

    clcf = ngx_http_conf_get_module_loc_conf(cf, ngx_http_core_module);

    if (conf->content && clcf->handler != conf->content) {
        ngx_log_error(NGX_LOG_EMERG, cf->log, 0,
                      "\"%s\" and another content handler such as "
                      "\"proxy_pass\" are in the same location \"%V\"",
                      conf->content == ngx_http_llm_router_explain_handler
                      ? "llm_router_explain" : "llm_router_status",
                      &clcf->name);
        return NGX_CONF_ERROR;
    }

    return NGX_CONF_OK;
}


/*
 * The models a location can route to: by a rule, its default, a
 * budget's downgrade, the models llm_router_pin names, and the
 * fallbacks and escalations of any of these.  A location of one dialect
 * must reach no model of another, and a client pins only these: a name
 * in the body does not open every model of the http block.
 */

static ngx_int_t
ngx_http_llm_router_reachable(ngx_conf_t *cf,
    ngx_http_llm_router_loc_conf_t *conf)
{
    u_char                           *seen;
    ngx_int_t                         m;
    ngx_str_t                        *name;
    ngx_uint_t                        i, on;
    llmr_rule_t                      *rule;
    ngx_http_llm_router_model_t      *model;
    ngx_http_llm_router_budget_t    **budget;
    ngx_http_llm_router_main_conf_t  *lmcf;

    lmcf = ngx_http_conf_get_module_main_conf(cf, ngx_http_llm_router_module);
    model = lmcf->models.elts;

    seen = ngx_pcalloc(cf->temp_pool, lmcf->models.nelts + 1);
    if (seen == NULL) {
        return NGX_ERROR;
    }

    on = ngx_http_llm_router_on(conf);

    if (on
        && ngx_http_llm_router_reaches(cf, conf, conf->default_model, seen,
                                       "llm_router_default")
           != NGX_OK)
    {
        return NGX_ERROR;
    }

    rule = conf->rules ? conf->rules->elts : NULL;

    for (i = 0; on && rule && i < conf->rules->nelts; i++) {
        if (ngx_http_llm_router_reaches(cf, conf, &model[rule[i].model],
                                        seen, "llm_router_rule")
            != NGX_OK)
        {
            return NGX_ERROR;
        }
    }

    budget = conf->budgets ? conf->budgets->elts : NULL;

    for (i = 0; on && budget && i < conf->budgets->nelts; i++) {
        if (ngx_http_llm_router_reaches(cf, conf, budget[i]->downgrade,
                                        seen, "llm_router_budget")
            != NGX_OK)
        {
            return NGX_ERROR;
        }
    }

    /* the names are checked wherever they are inherited, like the rules */

    name = conf->pin_names ? conf->pin_names->elts : NULL;

    for (i = 0; name && i < conf->pin_names->nelts; i++) {
        m = ngx_http_llm_router_find(&lmcf->models, &name[i]);

        if (m == NGX_ERROR) {
            ngx_log_error(NGX_LOG_EMERG, cf->log, 0,
                          "unknown model \"%V\" in \"llm_router_pin\" "
                          "in %s:%ui", &name[i], conf->pin_file,
                          conf->pin_line);
            return NGX_ERROR;
        }

        if (on
            && ngx_http_llm_router_reaches(cf, conf, &model[m], seen,
                                           "llm_router_pin")
               != NGX_OK)
        {
            return NGX_ERROR;
        }
    }

    if (!on || !conf->pin) {
        return NGX_OK;
    }

    return ngx_http_llm_router_pinnable(cf, conf, seen);
}


static ngx_int_t
ngx_http_llm_router_reaches(ngx_conf_t *cf,
    ngx_http_llm_router_loc_conf_t *conf, ngx_http_llm_router_model_t *model,
    u_char *seen, const char *how)
{
    ngx_http_llm_router_main_conf_t  *lmcf;

    lmcf = ngx_http_conf_get_module_main_conf(cf, ngx_http_llm_router_module);

    /* every model once: chains of fallbacks and escalations may cross */

    if (model == NULL
        || seen[model - (ngx_http_llm_router_model_t *) lmcf->models.elts])
    {
        return NGX_OK;
    }

    seen[model - (ngx_http_llm_router_model_t *) lmcf->models.elts] = 1;

    /* with "auto", the dialect is checked per request instead */

    if (conf->api != LLMR_APIS && model->dialect->api != conf->api) {
        ngx_log_error(NGX_LOG_EMERG, cf->log, 0,
                      "\"llm_router_api %V\" can reach model \"%V\" of "
                      "\"api %V\" by %s in %s:%ui",
                      &llmr_dialects[conf->api].name, &model->name,
                      &model->dialect->name, how, conf->api_file,
                      conf->api_line);
        return NGX_ERROR;
    }

    if (ngx_http_llm_router_reaches(cf, conf, model->fallback, seen,
                                    "fallback")
        != NGX_OK)
    {
        return NGX_ERROR;
    }

    return ngx_http_llm_router_reaches(cf, conf, model->escalate, seen,
                                       "escalate");
}


/*
 * The models a client may pin, in the order they are declared, for
 * llmr_model_find(): the first name that matches wins, as among all.
 */

static ngx_int_t
ngx_http_llm_router_pinnable(ngx_conf_t *cf,
    ngx_http_llm_router_loc_conf_t *conf, u_char *seen)
{
    ngx_uint_t                        i, n;
    ngx_http_llm_router_main_conf_t  *lmcf;

    lmcf = ngx_http_conf_get_module_main_conf(cf, ngx_http_llm_router_module);

    n = 0;

    for (i = 0; i < lmcf->models.nelts; i++) {
        n += seen[i];
    }

    conf->pin_models = ngx_pcalloc(cf->pool, (n + 1) * sizeof(llmr_model_t));
    conf->pin_index = ngx_pcalloc(cf->pool, (n + 1) * sizeof(ngx_uint_t));

    if (conf->pin_models == NULL || conf->pin_index == NULL) {
        return NGX_ERROR;
    }

    n = 0;

    for (i = 0; i < lmcf->models.nelts; i++) {
        if (seen[i]) {
            conf->pin_models[n] = lmcf->core_models[i];
            conf->pin_index[n] = i;
            n++;
        }
    }

    conf->npin = n;

    return NGX_OK;
}


/*
 * What a location where the router is on must not be: where a request
 * fails whatever it holds.  Only locations are checked, not the server
 * level, which its locations inherit.
 */

static ngx_int_t
ngx_http_llm_router_check_location(ngx_conf_t *cf,
    ngx_http_llm_router_loc_conf_t *conf, ngx_flag_t enable)
{
    ngx_http_core_loc_conf_t  *clcf;

    clcf = ngx_http_conf_get_module_loc_conf(cf, ngx_http_core_module);

    if (clcf->name.len == 0 || !ngx_http_llm_router_on(conf)) {
        return NGX_OK;
    }

    /* llm_router_explain turns the router on itself: one of them errs */

    if (conf->content == ngx_http_llm_router_explain_handler && enable == 1) {
        ngx_log_error(NGX_LOG_EMERG, cf->log, 0,
                      "\"llm_router on\" and \"llm_router_explain\" are in "
                      "the same location \"%V\" in %s:%ui", &clcf->name,
                      conf->enable_file, conf->enable_line);
        return NGX_ERROR;
    }

    /* the router would read the status requests, and refuse them */

    if (conf->content == ngx_http_llm_router_status_handler) {
        if (enable == 1) {
            ngx_log_error(NGX_LOG_EMERG, cf->log, 0,
                          "\"llm_router on\" and \"llm_router_status\" are "
                          "in the same location \"%V\" in %s:%ui",
                          &clcf->name, conf->enable_file, conf->enable_line);

        } else {
            ngx_log_error(NGX_LOG_EMERG, cf->log, 0,
                          "\"llm_router on\" and \"llm_router_status\" are "
                          "in the same location \"%V\": the router is on "
                          "by %s:%ui, \"llm_router off\" is needed in the "
                          "location", &clcf->name, conf->enable_file,
                          conf->enable_line);
        }

        return NGX_ERROR;
    }

    /* a rule always has conditions, which a request may match none of */

    if (conf->default_model == NULL) {
        ngx_log_error(NGX_LOG_EMERG, cf->log, 0,
                      "%s in location \"%V\" without "
                      "\"llm_router_default\"%s, in %s:%ui",
                      conf->enable ? "\"llm_router\" is on"
                                   : "\"llm_router_explain\" is",
                      &clcf->name,
                      conf->rules ? ": a request that no rule matches "
                                    "would be answered 500"
                                  : " or \"llm_router_rule\": every "
                                    "request would be answered 500",
                      conf->enable_file, conf->enable_line);
        return NGX_ERROR;
    }

    return NGX_OK;
}


/* the budgets a level applies, by name, once all are defined */

static ngx_int_t
ngx_http_llm_router_resolve_budgets(ngx_conf_t *cf,
    ngx_http_llm_router_loc_conf_t *conf)
{
    ngx_int_t                         b;
    ngx_str_t                        *name;
    ngx_uint_t                        i;
    ngx_http_llm_router_budget_t    **p;
    ngx_http_llm_router_main_conf_t  *lmcf;

    lmcf = ngx_http_conf_get_module_main_conf(cf, ngx_http_llm_router_module);

    if (lmcf->zone == NULL) {
        ngx_log_error(NGX_LOG_EMERG, cf->log, 0,
                      "\"llm_router_budget\" needs \"llm_router_zone\"");
        return NGX_ERROR;
    }

    if (conf->budget_names->nelts > NGX_HTTP_LLM_ROUTER_BUDGETS_MAX) {
        ngx_log_error(NGX_LOG_EMERG, cf->log, 0,
                      "at most %d \"llm_router_budget\" apply to one "
                      "location", NGX_HTTP_LLM_ROUTER_BUDGETS_MAX);
        return NGX_ERROR;
    }

    conf->budgets = ngx_array_create(cf->pool, conf->budget_names->nelts,
                                     sizeof(ngx_http_llm_router_budget_t *));
    if (conf->budgets == NULL) {
        return NGX_ERROR;
    }

    name = conf->budget_names->elts;

    for (i = 0; i < conf->budget_names->nelts; i++) {
        b = ngx_http_llm_router_find(&lmcf->budgets, &name[i]);

        if (b == NGX_ERROR) {
            ngx_log_error(NGX_LOG_EMERG, cf->log, 0,
                          "unknown budget \"%V\" in \"llm_router_budget\"",
                          &name[i]);
            return NGX_ERROR;
        }

        p = ngx_array_push(conf->budgets);
        if (p == NULL) {
            return NGX_ERROR;
        }

        *p = (ngx_http_llm_router_budget_t *) lmcf->budgets.elts + b;
    }

    return NGX_OK;
}


/*
 * Models and keyword lists may be declared anywhere in the http block,
 * so names are resolved here, once everything has been read; errors
 * point at the line that used the name.
 */

static ngx_int_t
ngx_http_llm_router_resolve(ngx_conf_t *cf,
    ngx_http_llm_router_loc_conf_t *conf)
{
    ngx_int_t                         m, l;
    ngx_str_t                         name;
    ngx_uint_t                        i, k;
    llmr_rule_t                      *rule;
    llmr_cond_t                      *cond;
    ngx_http_llm_router_model_t      *model;
    ngx_http_llm_router_rule_src_t   *src;
    ngx_http_llm_router_main_conf_t  *lmcf;

    lmcf = ngx_http_conf_get_module_main_conf(cf, ngx_http_llm_router_module);

    model = lmcf->models.elts;

    if (conf->default_name.data) {
        m = ngx_http_llm_router_find(&lmcf->models, &conf->default_name);

        if (m == NGX_ERROR) {
            ngx_log_error(NGX_LOG_EMERG, cf->log, 0,
                          "unknown model \"%V\" in \"llm_router_default\" "
                          "in %s:%ui", &conf->default_name,
                          conf->default_file, conf->default_line);
            return NGX_ERROR;
        }

        conf->default_model = &model[m];
    }

    if (conf->rules == NULL) {
        return NGX_OK;
    }

    rule = conf->rules->elts;
    src = conf->sources->elts;

    for (i = 0; i < conf->rules->nelts; i++) {

        m = ngx_http_llm_router_find(&lmcf->models, &src[i].model);

        if (m == NGX_ERROR) {
            ngx_log_error(NGX_LOG_EMERG, cf->log, 0,
                          "unknown model \"%V\" in \"llm_router_rule\" "
                          "in %s:%ui", &src[i].model, src[i].file,
                          src[i].line);
            return NGX_ERROR;
        }

        rule[i].model = m;

        for (k = 0; k < rule[i].nconds; k++) {
            cond = &rule[i].conds[k];

            if ((cond->type == LLMR_COND_SCORE_GT
                 || cond->type == LLMR_COND_SCORE_LT)
                && ngx_http_llm_router_on(conf) && conf->classifier == NULL)
            {
                ngx_log_error(NGX_LOG_EMERG, cf->log, 0,
                              "a \"score\" condition needs "
                              "\"llm_router_classifier\" in "
                              "\"llm_router_rule\" in %s:%ui",
                              src[i].file, src[i].line);
                return NGX_ERROR;
            }

            if (cond->type == LLMR_COND_TRIAGE
                && ngx_http_llm_router_on(conf) && conf->triage == NULL)
            {
                ngx_log_error(NGX_LOG_EMERG, cf->log, 0,
                              "a \"triage\" condition needs "
                              "\"llm_router_triage\" in "
                              "\"llm_router_rule\" in %s:%ui",
                              src[i].file, src[i].line);
                return NGX_ERROR;
            }

            if (cond->type != LLMR_COND_KEYWORDS) {
                continue;
            }

            name.data = (u_char *) cond->name.data;
            name.len = cond->name.len;

            l = ngx_http_llm_router_find(&lmcf->lists, &name);

            if (l == NGX_ERROR) {
                ngx_log_error(NGX_LOG_EMERG, cf->log, 0,
                              "unknown keywords list \"%V\" in "
                              "\"llm_router_rule\" in %s:%ui",
                              &name, src[i].file, src[i].line);
                return NGX_ERROR;
            }

            cond->arg = l;
        }
    }

    return NGX_OK;
}
