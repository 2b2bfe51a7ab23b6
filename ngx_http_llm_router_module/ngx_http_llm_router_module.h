
/*
 * Copyright (C) the ngx_http_llm_router_module authors
 */


#ifndef _NGX_HTTP_LLM_ROUTER_MODULE_H_INCLUDED_
#define _NGX_HTTP_LLM_ROUTER_MODULE_H_INCLUDED_


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>

#include "llmr.h"


#define NGX_HTTP_LLM_ROUTER_AUTH_NONE      0
#define NGX_HTTP_LLM_ROUTER_AUTH_BEARER    1
#define NGX_HTTP_LLM_ROUTER_AUTH_X_API_KEY 2
#define NGX_HTTP_LLM_ROUTER_AUTH_API_KEY   3


/* models and keyword lists start with their name, for lookups by name */

typedef struct ngx_http_llm_router_model_s  ngx_http_llm_router_model_t;

struct ngx_http_llm_router_model_s {
    ngx_str_t                      name;
    ngx_str_t                      url;
    ngx_str_t                      upstream;      /* the body's "model" */
    ngx_str_t                      upstream_json; /* as a JSON string */
    const llmr_dialect_t          *dialect;       /* what its url speaks */
    ngx_uint_t                     auth;
    ngx_http_complex_value_t      *key;
    uint64_t                       price_in;
    uint64_t                       price_out;
    uint64_t                       price_cached;
    uint64_t                       price_cache_write;
    unsigned                       cached_set:1;
    unsigned                       cache_write_set:1;
    ngx_uint_t                     context;
    ngx_str_t                      fallback_name;
    ngx_http_llm_router_model_t   *fallback;
    ngx_str_t                      escalate_name;
    ngx_http_llm_router_model_t   *escalate;
    ngx_atomic_uint_t              hash;          /* of the name, not 0 */
    u_char                        *file;          /* where it is declared */
    ngx_uint_t                     line;
    ngx_uint_t                     set;        /* options seen, a bit each */
};


typedef struct {
    ngx_str_t                      name;
    ngx_array_t                    phrases;       /* ngx_str_t */
} ngx_http_llm_router_keywords_t;


/*
 * The shared zone: per model, its cooldown, counters and latency
 * histograms; labelled series for requests by rule, fallbacks,
 * escalations and upstream errors.  Everything is found by hash and
 * counted with atomics, so that workers never lock to count.
 */

#define NGX_HTTP_LLM_ROUTER_ZONE_MODELS   128
#define NGX_HTTP_LLM_ROUTER_ZONE_SERIES   512
#define NGX_HTTP_LLM_ROUTER_LABEL_LEN     63
#define NGX_HTTP_LLM_ROUTER_BUCKETS       12     /* the last is +Inf */

enum {
    NGX_HTTP_LLM_ROUTER_SERIES_RULE = 1,         /* model, rule */
    NGX_HTTP_LLM_ROUTER_SERIES_FALLBACK,         /* from, to, reason */
    NGX_HTTP_LLM_ROUTER_SERIES_ESCALATION,       /* from, to, reason */
    NGX_HTTP_LLM_ROUTER_SERIES_ERROR,            /* model, status */
    NGX_HTTP_LLM_ROUTER_SERIES_BUDGET,           /* budget, action */
    NGX_HTTP_LLM_ROUTER_SERIES_TRIAGE,           /* model, result */
    NGX_HTTP_LLM_ROUTER_SERIES_SHADOW            /* model, rule, result */
};


typedef struct {
    u_char                         len;
    u_char                         data[NGX_HTTP_LLM_ROUTER_LABEL_LEN];
} ngx_http_llm_router_label_t;


/* a rate over a sliding window: slots of a sixteenth of it */

#define NGX_HTTP_LLM_ROUTER_SLOTS         16

typedef struct {
    ngx_atomic_t                   id;            /* time / slot width */
    ngx_atomic_t                   total;
    ngx_atomic_t                   hits;
} ngx_http_llm_router_slot_t;

typedef struct {
    ngx_http_llm_router_slot_t     slot[NGX_HTTP_LLM_ROUTER_SLOTS];
    ngx_atomic_t                   firing;
} ngx_http_llm_router_rate_t;

enum {
    NGX_HTTP_LLM_ROUTER_ESCALATION_RATE = 0,
    NGX_HTTP_LLM_ROUTER_FALLBACK_RATE,
    NGX_HTTP_LLM_ROUTER_ERROR_RATE,               /* by model */
    NGX_HTTP_LLM_ROUTER_RATES
};

typedef struct {
    ngx_uint_t                     threshold;     /* per mille */
    ngx_msec_t                     window;
    ngx_uint_t                     min;           /* requests to judge */
    ngx_uint_t                     set;
} ngx_http_llm_router_alert_t;


typedef struct {
    ngx_atomic_t                   hash;          /* of the name, 0: free */
    ngx_atomic_t                   ready;         /* the name is there */
    ngx_http_llm_router_label_t    name;
    ngx_http_llm_router_rate_t     errors;
    ngx_atomic_t                   until;         /* cooldown */
    ngx_atomic_t                   prompt;
    ngx_atomic_t                   completion;
    ngx_atomic_t                   cost;          /* pico-USD */
    ngx_atomic_t                   latency[NGX_HTTP_LLM_ROUTER_BUCKETS];
    ngx_atomic_t                   latency_ms;
    ngx_atomic_t                   ttfb[NGX_HTTP_LLM_ROUTER_BUCKETS];
    ngx_atomic_t                   ttfb_ms;
} ngx_http_llm_router_shm_model_t;


/*
 * llm_router_redis: a Redis server the workers share state through, by a
 * client of the module's own on nginx's event loop (see redis.c).  The
 * fields after the configuration's are each worker's.
 */

#define NGX_HTTP_LLM_ROUTER_REDIS_MAX  8

typedef struct ngx_http_llm_router_redis_s      ngx_http_llm_router_redis_t;
typedef struct ngx_http_llm_router_redis_cmd_s  ngx_http_llm_router_redis_cmd_t;

typedef void (*ngx_http_llm_router_redis_pt)(
    ngx_http_llm_router_redis_cmd_t *cmd, llmr_resp_t *reply);

typedef struct {
    ngx_http_llm_router_redis_t   *redis;
    ngx_peer_connection_t          peer;
    ngx_buf_t                     *in;
    ngx_queue_t                    out;           /* to write */
    ngx_queue_t                    sent;          /* waiting for replies */
} ngx_http_llm_router_redis_conn_t;

struct ngx_http_llm_router_redis_s {
    ngx_str_t                      name;          /* first, for lookups */
    ngx_uint_t                     index;         /* in the zone */
    ngx_addr_t                    *addr;
    ngx_str_t                      password;
    ngx_uint_t                     db;
    ngx_msec_t                     timeout;
    ngx_uint_t                     keepalive;

    ngx_http_llm_router_redis_conn_t  *conns;
    ngx_event_t                    poll;          /* each second */
    ngx_uint_t                     next;
    ngx_msec_t                     retry;         /* down: not before */
    time_t                         logged;
    unsigned                       down:1;
};

/*
 * A command, and what its reply is for: handler is called once, with
 * the reply, or with NULL when none will come.  data is its waiter's,
 * NULL once the waiter is gone.
 */

struct ngx_http_llm_router_redis_cmd_s {
    ngx_queue_t                    queue;
    ngx_http_llm_router_redis_t   *redis;
    ngx_http_llm_router_redis_pt   handler;
    void                          *data;
    u_char                        *pos;           /* not written yet */
    u_char                        *last;

    /* a budget's command: what settles it, or undoes it */
    struct ngx_http_llm_router_budget_s  *budget;
    ngx_str_t                      key;           /* the zone's */
    ngx_uint_t                     period;
    uint64_t                       release;
    uint64_t                       cost;
    uint64_t                       worst[2];
};


/* a spend limit per key */

typedef struct ngx_http_llm_router_budget_s {
    ngx_str_t                      name;          /* first, for lookups */
    ngx_uint_t                     hash;
    ngx_http_complex_value_t      *key;
    uint64_t                       limit;         /* pico-USD */
    time_t                         period;        /* seconds */
    ngx_str_t                      downgrade_name;
    struct ngx_http_llm_router_model_s  *downgrade;
    ngx_int_t                      max_tokens;    /* without max_tokens */
    ngx_str_t                      store_name;
    ngx_http_llm_router_redis_t   *redis;         /* store=redis:NAME */
    unsigned                       action_set:1;
    unsigned                       fail_open:1;   /* a full zone lets go */
} ngx_http_llm_router_budget_t;

#define NGX_HTTP_LLM_ROUTER_BUDGETS_MAX   4

typedef struct {
    ngx_http_llm_router_budget_t  *budget;
    void                          *spend;         /* in the zone, or NULL */
    ngx_uint_t                     period;
    uint64_t                       reserved;
    ngx_str_t                      key;           /* the zone's */
    uint64_t                       fleet_reserved;  /* in Redis */
} ngx_http_llm_router_reservation_t;


/* a request waits for Redis's verdict on a budget */

typedef struct {
    ngx_http_request_t            *request;
    ngx_http_llm_router_redis_cmd_t  *cmd;
    ngx_event_t                    timer;
    ngx_event_t                    wake;
    ngx_int_t                      pick;          /* -1: no verdict */
    uint64_t                       fleet_spent;
    unsigned                       done:1;
} ngx_http_llm_router_fleet_t;


typedef struct {
    ngx_atomic_t                   hash;          /* 0: free */
    ngx_atomic_t                   ready;
    ngx_atomic_t                   kind;
    ngx_http_llm_router_label_t    label[3];
    ngx_atomic_t                   value;
} ngx_http_llm_router_shm_series_t;


typedef struct {
    ngx_http_llm_router_shm_model_t   models[NGX_HTTP_LLM_ROUTER_ZONE_MODELS];
    ngx_http_llm_router_shm_series_t  series[NGX_HTTP_LLM_ROUTER_ZONE_SERIES];
    ngx_atomic_t                   redis_up[NGX_HTTP_LLM_ROUTER_REDIS_MAX];
    ngx_atomic_t                   redis_errors[NGX_HTTP_LLM_ROUTER_REDIS_MAX];
    ngx_atomic_t                   redis_polled[NGX_HTTP_LLM_ROUTER_REDIS_MAX];
    ngx_atomic_t                   decision[NGX_HTTP_LLM_ROUTER_BUCKETS];
    ngx_atomic_t                   decision_us;
    ngx_http_llm_router_rate_t     escalations;
    ngx_http_llm_router_rate_t     fallbacks;
    ngx_rbtree_t                   spends;        /* of budgets, by key */
    ngx_rbtree_node_t              sentinel;
    ngx_rbtree_t                   verdicts;      /* of triage, by hash */
    ngx_rbtree_node_t              verdict_sentinel;
    ngx_queue_t                    verdict_lru;   /* the last used first */
    ngx_uint_t                     nverdicts;
} ngx_http_llm_router_shm_t;


extern ngx_msec_t  ngx_http_llm_router_latency_buckets[];   /* ms */
extern ngx_msec_t  ngx_http_llm_router_decision_buckets[];  /* us */


typedef struct {
    ngx_str_t                      path;
    llmr_classifier_t              classifier;
} ngx_http_llm_router_classifier_t;


typedef struct {
    ngx_array_t                    models;    /* ngx_http_llm_router_model_t */
    ngx_array_t                    lists;  /* ngx_http_llm_router_keywords_t */
    ngx_array_t                    classifiers;
                                       /* ngx_http_llm_router_classifier_t */

    llmr_model_t                  *core_models;
    llmr_keywords_t                keywords;

    ngx_shm_zone_t                *zone;
    void                          *shm;
    ngx_array_t                    budgets; /* ngx_http_llm_router_budget_t */
    ngx_http_llm_router_alert_t    alerts[NGX_HTTP_LLM_ROUTER_RATES];
    ngx_int_t                      request_id;    /* the variable's index */

    ngx_array_t                    redis;   /* ngx_http_llm_router_redis_t */
    ngx_uint_t                     redis_share;
    ngx_str_t                      cooldown_store;
    ngx_http_llm_router_redis_t   *cooldown_redis;

    /* a worker's buffer for the window of a long string */
    u_char                        *scratch;
    size_t                         scratch_size;
} ngx_http_llm_router_main_conf_t;


/* llm_router_triage: the location that reaches a small model */

typedef struct {
    ngx_str_t                      uri;
    ngx_str_t                      model_name;
    ngx_http_llm_router_model_t   *model;
    ngx_msec_t                     timeout;
    ngx_uint_t                     max_tokens;
    size_t                         history;       /* bytes */
    ngx_str_t                      field;         /* JSON, or first word */
    time_t                         cache;         /* seconds, 0: off */
    u_char                        *file;
    ngx_uint_t                     line;
} ngx_http_llm_router_triage_t;


/* llm_router_shadow: the location that reaches a stronger model */

typedef struct {
    ngx_str_t                      uri;
    ngx_str_t                      model_name;
    ngx_http_llm_router_model_t   *model;
    ngx_uint_t                     sample;        /* of 10000 requests */
    size_t                         max_answer;
    ngx_msec_t                     timeout;
    u_char                        *file;
    ngx_uint_t                     line;
} ngx_http_llm_router_shadow_conf_t;

/* a rule condition on a variable: "$var=value" or "$var~regex" */

typedef struct {
    ngx_int_t                      index;
    ngx_str_t                      value;
#if (NGX_PCRE)
    ngx_http_regex_t              *regex;
#endif
} ngx_http_llm_router_var_cond_t;


/* what the configuration named, resolved once all models are known */

typedef struct {
    ngx_str_t                      model;
    u_char                        *file;
    ngx_uint_t                     line;
} ngx_http_llm_router_rule_src_t;


typedef struct {
    /* llmr_rule_t, and where each came from: rule_src_t */
    ngx_array_t                   *rules;
    ngx_array_t                   *sources;
    ngx_array_t                   *vars;   /* ngx_http_llm_router_var_cond_t */

    ngx_str_t                      default_name;
    u_char                        *default_file;
    ngx_uint_t                     default_line;
    ngx_http_llm_router_model_t   *default_model;

    ngx_array_t                   *fallback_status;      /* ngx_uint_t */
    ngx_array_t                   *budget_names;         /* ngx_str_t */
    ngx_array_t                   *budgets;  /* pointers to the budgets */
    ngx_msec_t                     cooldown;

    ngx_flag_t                     escalate;
    ngx_flag_t                     escalate_json;
    ngx_flag_t                     escalate_tool_args;
    ngx_flag_t                     escalate_stream;
    ngx_uint_t                     escalate_min_length;
    size_t                         escalate_buffer;
    ngx_array_t                   *escalate_patterns;   /* ngx_regex_elt_t */
    ngx_array_t                   *escalate_require;    /* ngx_regex_elt_t */

    llmr_classifier_t             *classifier;
    u_char                        *classifier_file;
    ngx_uint_t                     classifier_line;

    ngx_http_llm_router_triage_t  *triage;
    ngx_str_t                      triage_prompt;

    ngx_http_llm_router_shadow_conf_t  *shadow;

    ngx_http_handler_pt            content;      /* explain or status */

    ngx_uint_t                     api;      /* llmr_api_e, or LLMR_APIS */
    u_char                        *api_file;
    ngx_uint_t                     api_line;

    ngx_flag_t                     enable;
    u_char                        *enable_file;  /* where it was turned on */
    ngx_uint_t                     enable_line;
    ngx_flag_t                     explain;
    ngx_int_t                      history;
    size_t                         string_buffer_size;
    size_t                         scan_limit;

    /* the models a client may pin: those the location can reach */
    ngx_flag_t                     pin;
    ngx_array_t                   *pin_names;    /* ngx_str_t, widening */
    u_char                        *pin_file;
    ngx_uint_t                     pin_line;
    llmr_model_t                  *pin_models;   /* in the order declared */
    ngx_uint_t                    *pin_index;    /* of each in the models */
    ngx_uint_t                     npin;

    ngx_uint_t                     pass_headers; /* kept, a bit each */
} ngx_http_llm_router_loc_conf_t;


#define NGX_HTTP_LLM_ROUTER_ATTEMPTS_MAX  8


/*
 * A shadow call: the request of the module's own that makes it, and the
 * pair of answers, kept until both the client's request and the call
 * have ended.  It lives in the pool of that request.
 */

typedef struct {
    ngx_http_request_t                 *request;
    ngx_http_request_t                 *sr;       /* to the shadow location */
    ngx_http_llm_router_shadow_conf_t  *conf;

    /* the client's request, and its answer */
    ngx_str_t                           id;
    ngx_str_t                           body;
    const llmr_dialect_t               *dialect;
    ngx_http_llm_router_model_t        *routed;   /* for the metrics */
    ngx_str_t                           rule;
    uint32_t                            prompt_tokens;   /* the estimate */
    ngx_http_llm_router_model_t        *answered;
    ngx_uint_t                          status;
    uint64_t                            cost;
    u_char                             *answer;
    size_t                              answer_len;

    /* the shadow call */
    llmr_usage_t                        usage;
    u_char                             *shadow_answer;
    ngx_uint_t                          shadow_status;
    ngx_msec_t                          start;
    ngx_msec_t                          latency;
    llmr_tokens_t                       tokens;
    uint64_t                            shadow_cost;
    ngx_table_elt_t                    *key_header;
    ngx_http_llm_router_reservation_t
                             reservations[NGX_HTTP_LLM_ROUTER_BUDGETS_MAX];
    ngx_uint_t                          nreservations;

    ngx_event_t                         start_event;
    ngx_event_t                         finish_event;
    ngx_event_t                         timer;

    unsigned                            scanned:1;    /* its answer began */
    unsigned                            done:1;
    unsigned                            timed_out:1;
    unsigned                            client_done:1;
    unsigned                            escalated:1;
} ngx_http_llm_router_shadow_t;


/* one try of a model, for the log */

typedef struct {
    ngx_http_llm_router_model_t   *model;
    ngx_uint_t                     status;
    ngx_msec_t                     start;
    ngx_msec_t                     latency;
    llmr_tokens_t                  tokens;        /* of an escalated answer */
    uint64_t                       cost;          /* pico-USD */
    const char                    *reason;        /* why another came */
    unsigned                       failed:1;
} ngx_http_llm_router_attempt_t;


/*
 * A chat stream whose client did not ask for usage: the usage chunk and
 * the "usage":null members that asking made the provider send are taken
 * out, line by line.
 */

#define NGX_HTTP_LLM_ROUTER_STRIP_LINE  16384
#define NGX_HTTP_LLM_ROUTER_STRIP_TAIL  64

typedef struct {
    u_char                        *line;          /* a line not yet whole */
    size_t                         len;
    ngx_chain_t                   *free;          /* the output buffers */
    ngx_chain_t                   *busy;
    unsigned                       drop_blank:1;  /* after a dropped event */
    unsigned                       long_line:1;   /* passed on but its end */
} ngx_http_llm_router_strip_t;


typedef struct {
    const llmr_dialect_t          *dialect;       /* the request's */
    llmr_request_t                 request;
    llmr_usage_t                   usage;
    ngx_http_llm_router_strip_t   *strip;

    ngx_http_llm_router_model_t   *model;
    ngx_str_t                      rule;

    /* the client's body and headers, without its credentials */
    ngx_chain_t                   *client_bufs;
    ngx_list_t                     headers;

    /* the provider's key, hidden once the request to it is made */
    ngx_table_elt_t               *key_header;

    /* failover: the attempt running, and those made */
    ngx_http_request_t            *sr;
    ngx_http_llm_router_attempt_t  attempts[NGX_HTTP_LLM_ROUTER_ATTEMPTS_MAX];
    ngx_uint_t                     nattempts;
    ngx_uint_t                     final_status;

    /* escalation: the answer held back until it is checked */
    ngx_http_headers_out_t         held_headers;
    ngx_http_request_t            *held_sr;
    ngx_buf_t                     *held;
    const char                    *escalation_reason;

    /* the escalated answer, should every stronger model fail */
    ngx_http_headers_out_t         kept_headers;
    ngx_http_request_t            *kept_sr;
    ngx_buf_t                     *kept;
    ngx_http_llm_router_model_t   *kept_model;
    ngx_uint_t                     kept_attempt;

    ngx_uint_t                     answered;      /* the try answering */

    ngx_msec_t                     ttfb;          /* the answer's header */
    ngx_uint_t                     decision_us;

    ngx_http_llm_router_reservation_t
                             reservations[NGX_HTTP_LLM_ROUTER_BUDGETS_MAX];
    ngx_uint_t                     nreservations;
    time_t                         retry_after;   /* of a budget's 429 */

    /* triage: the small model's verdict, asked once */
    ngx_http_request_t            *triage_sr;
    ngx_event_t                    triage_timer;
    ngx_buf_t                     *triage_answer;
    ngx_msec_t                     triage_start;
    ngx_msec_t                     triage_latency;
    llmr_tokens_t                  triage_tokens;
    uint64_t                       triage_cost;   /* pico-USD */
    uint32_t                       triage_hash[2];
    const char                    *triage_error;
    ngx_uint_t                     triage_status;

    /* the shadow call of this request, or of the module's own request */
    ngx_http_llm_router_shadow_t  *shadow;

    /* budgets: the next to reserve in, and a verdict waited for */
    ngx_uint_t                     budget_next;
    ngx_http_llm_router_fleet_t   *fleet;

    /* the phase handler's answer once the body is read */
    ngx_int_t                      status;
    ngx_str_t                      error;
    ngx_buf_t                     *error_buf;

    unsigned                       parsing:1;
    unsigned                       parsed:1;
    unsigned                       routed:1;
    unsigned                       triage_waiting:1;
    unsigned                       triage_cached:1;
    unsigned                       triage_too_large:1;
    unsigned                       failover:1;
    unsigned                       sr_failed:1;
    unsigned                       sr_complete:1;
    unsigned                       hold:1;
    unsigned                       escalated:1;
    unsigned                       scan_usage:1;
    unsigned                       json_error:1;
    unsigned                       json_error_sent:1;
    unsigned                       no_retry:1;    /* retrying cannot help */
    unsigned                       shadow_skipped:1;
    unsigned                       reserving:1;   /* decided, in budgets */
} ngx_http_llm_router_ctx_t;


typedef struct {
    llmr_tokens_t              tokens;
    uint64_t                   cost;
    ngx_str_t                  source;
} ngx_http_llm_router_account_t;


ngx_int_t ngx_http_llm_router_handler(ngx_http_request_t *r);
ngx_int_t ngx_http_llm_router_request_body_init(ngx_conf_t *cf);
ngx_int_t ngx_http_llm_router_filter_init(ngx_conf_t *cf);
ngx_int_t ngx_http_llm_router_add_variables(ngx_conf_t *cf);

ngx_int_t ngx_http_llm_router_explain_handler(ngx_http_request_t *r);
ngx_int_t ngx_http_llm_router_prepare(ngx_http_request_t *r,
    ngx_http_llm_router_ctx_t *ctx);
ngx_int_t ngx_http_llm_router_attempt(ngx_http_request_t *r,
    ngx_http_llm_router_ctx_t *ctx);
ngx_int_t ngx_http_llm_router_attempt_header(ngx_http_request_t *r,
    ngx_http_llm_router_ctx_t *ctx);

ngx_http_llm_router_ctx_t *ngx_http_llm_router_create_ctx(
    ngx_http_request_t *r);

size_t ngx_http_llm_router_decision_size(ngx_http_llm_router_ctx_t *ctx);
u_char *ngx_http_llm_router_decision(u_char *p,
    ngx_http_llm_router_ctx_t *ctx);
void ngx_http_llm_router_account(ngx_http_request_t *r,
    ngx_http_llm_router_ctx_t *ctx, ngx_http_llm_router_account_t *a);
uint64_t ngx_http_llm_router_total_cost(ngx_http_llm_router_ctx_t *ctx,
    ngx_http_llm_router_account_t *a);
char *ngx_http_llm_router_zone(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
char *ngx_http_llm_router_alert(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
ngx_uint_t ngx_http_llm_router_rate(ngx_http_llm_router_rate_t *rate,
    ngx_msec_t window, ngx_uint_t *total);

extern ngx_str_t  ngx_http_llm_router_rate_names[];
ngx_uint_t ngx_http_llm_router_cooling(ngx_http_request_t *r,
    ngx_http_llm_router_model_t *m);
void ngx_http_llm_router_cool(ngx_http_request_t *r,
    ngx_http_llm_router_model_t *m, ngx_msec_t time);
ngx_int_t ngx_http_llm_router_count(ngx_http_request_t *r);
void ngx_http_llm_router_series(ngx_http_llm_router_shm_t *shm,
    ngx_uint_t kind, ngx_str_t *a, ngx_str_t *b, ngx_str_t *c);
char *ngx_http_llm_router_budget(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
ngx_int_t ngx_http_llm_router_reserve(ngx_http_request_t *r,
    ngx_http_llm_router_ctx_t *ctx);
void ngx_http_llm_router_settle(ngx_http_request_t *r,
    ngx_http_llm_router_reservation_t *reservations, ngx_uint_t *n,
    uint64_t cost);
ngx_int_t ngx_http_llm_router_reserve_call(ngx_http_request_t *r,
    ngx_http_llm_router_ctx_t *ctx, ngx_http_llm_router_model_t *m,
    ngx_http_llm_router_reservation_t *reservations, ngx_uint_t *n,
    ngx_pool_t *pool);
char *ngx_http_llm_router_read_secret(ngx_conf_t *cf, ngx_str_t *name,
    ngx_str_t *what, ngx_str_t *secret);
char *ngx_http_llm_router_redis(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
ngx_int_t ngx_http_llm_router_redis_resolve(ngx_conf_t *cf,
    ngx_str_t *store, ngx_str_t *what, ngx_http_llm_router_redis_t **redis);
ngx_int_t ngx_http_llm_router_redis_init(ngx_cycle_t *cycle);
void ngx_http_llm_router_redis_exit(ngx_cycle_t *cycle);
ngx_int_t ngx_http_llm_router_redis_available(
    ngx_http_llm_router_redis_t *redis);
ngx_http_llm_router_redis_cmd_t *ngx_http_llm_router_redis_command(
    ngx_http_llm_router_redis_t *redis, ngx_uint_t argc, llmr_str_t *argv,
    size_t extra);
ngx_int_t ngx_http_llm_router_redis_send(ngx_http_llm_router_redis_cmd_t *cmd);
void ngx_http_llm_router_redis_ignore(ngx_http_llm_router_redis_cmd_t *cmd,
    llmr_resp_t *reply);
void ngx_http_llm_router_redis_error(ngx_http_llm_router_redis_t *redis,
    const char *reason, ngx_str_t *answer);
u_char *ngx_http_llm_router_redis_status(u_char *p,
    ngx_http_llm_router_main_conf_t *lmcf, ngx_uint_t json);
void ngx_http_llm_router_reconcile(ngx_http_llm_router_redis_t *redis);
void ngx_http_llm_router_cooldown_refresh(
    ngx_http_llm_router_main_conf_t *lmcf);
void ngx_http_llm_router_spend_refresh(ngx_http_llm_router_redis_t *redis);
void ngx_http_llm_router_wake(ngx_http_request_t *r);
void ngx_http_llm_router_bill(ngx_http_llm_router_main_conf_t *lmcf,
    ngx_http_llm_router_model_t *model, llmr_tokens_t *tokens,
    uint64_t cost);
u_char *ngx_http_llm_router_budget_status(u_char *p, ngx_http_request_t *r,
    ngx_uint_t json);
u_char *ngx_http_llm_router_json_string(u_char *p, u_char *data, size_t len);
u_char *ngx_http_llm_router_prom_escape(u_char *p, u_char *data,
    size_t len);
ngx_int_t ngx_http_llm_router_check_label(ngx_conf_t *cf, ngx_str_t *name);
ngx_int_t ngx_http_llm_router_find(ngx_array_t *a, ngx_str_t *name);
ngx_uint_t ngx_http_llm_router_has_control(u_char *p, size_t len);
char *ngx_http_llm_router_pass_header(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
ngx_int_t ngx_http_llm_router_status_handler(ngx_http_request_t *r);
char *ngx_http_llm_router_triage(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
char *ngx_http_llm_router_merge_triage(ngx_conf_t *cf,
    ngx_http_llm_router_loc_conf_t *prev,
    ngx_http_llm_router_loc_conf_t *conf);
ngx_int_t ngx_http_llm_router_capture(ngx_http_request_t *r,
    ngx_http_llm_router_ctx_t *ctx);
ngx_int_t ngx_http_llm_router_ask(ngx_http_request_t *r,
    ngx_http_llm_router_ctx_t *ctx);
ngx_int_t ngx_http_llm_router_triage_header(ngx_http_request_t *sr,
    ngx_http_llm_router_ctx_t *ctx);
ngx_int_t ngx_http_llm_router_triage_body(ngx_http_request_t *sr,
    ngx_http_llm_router_ctx_t *ctx, ngx_chain_t *in);
void ngx_http_llm_router_triage_cleanup(ngx_http_llm_router_ctx_t *ctx);
void ngx_http_llm_router_resume(ngx_http_request_t *r);
void ngx_http_llm_router_hide_key(ngx_table_elt_t **key_header);
void ngx_http_llm_router_event(ngx_event_t *ev, ngx_event_handler_pt handler,
    void *data, ngx_log_t *log);
ngx_int_t ngx_http_llm_router_auth(ngx_http_request_t *r,
    ngx_http_llm_router_model_t *model, ngx_str_t *value);
ngx_int_t ngx_http_llm_router_call_headers(ngx_http_request_t *r,
    ngx_http_llm_router_ctx_t *ctx, ngx_http_llm_router_model_t *model,
    ngx_str_t *auth, ngx_list_t *list, ngx_pool_t *pool);
ngx_int_t ngx_http_llm_router_rewrite(ngx_http_request_t *r,
    ngx_http_llm_router_ctx_t *ctx, ngx_http_llm_router_model_t *model,
    ngx_chain_t *in, ngx_chain_t **out, off_t *len);
char *ngx_http_llm_router_check_uri(ngx_conf_t *cf,
    ngx_http_llm_router_loc_conf_t *conf, ngx_str_t *uri,
    const char *directive, u_char *file, ngx_uint_t line);

char *ngx_http_llm_router_shadow_directive(ngx_conf_t *cf,
    ngx_command_t *cmd, void *conf);
char *ngx_http_llm_router_merge_shadow(ngx_conf_t *cf,
    ngx_http_llm_router_loc_conf_t *prev,
    ngx_http_llm_router_loc_conf_t *conf);
void ngx_http_llm_router_shadow(ngx_http_request_t *r,
    ngx_http_llm_router_ctx_t *ctx);
ngx_int_t ngx_http_llm_router_shadow_header(ngx_http_request_t *sr,
    ngx_http_llm_router_shadow_t *s);
ngx_int_t ngx_http_llm_router_shadow_body(ngx_http_request_t *sr,
    ngx_http_llm_router_shadow_t *s, ngx_chain_t *in);
void ngx_http_llm_router_shadow_keep(ngx_http_llm_router_shadow_t *s,
    llmr_usage_t *u);
ngx_int_t ngx_http_llm_router_shadow_variable(ngx_http_request_t *r,
    ngx_http_variable_value_t *v, uintptr_t data);
size_t ngx_http_llm_router_shadow_log_size(ngx_http_request_t *r,
    ngx_http_llm_router_ctx_t *ctx);
u_char *ngx_http_llm_router_shadow_log(u_char *p, ngx_http_request_t *r,
    ngx_http_llm_router_ctx_t *ctx);
ngx_uint_t ngx_http_llm_router_sse(ngx_http_request_t *r);
void ngx_http_llm_router_consume(ngx_chain_t *in);
ngx_int_t ngx_http_llm_router_send_buf(ngx_http_request_t *r, ngx_buf_t *b,
    ngx_str_t *type);
const llmr_dialect_t *ngx_http_llm_router_dialect(ngx_http_request_t *r);
uint64_t ngx_http_llm_router_model_cost(ngx_http_request_t *r,
    ngx_http_llm_router_model_t *model, llmr_tokens_t *tokens);
ngx_int_t ngx_http_llm_router_hold(ngx_http_request_t *sr,
    ngx_http_llm_router_ctx_t *ctx, ngx_chain_t *in);
size_t ngx_http_llm_router_json_size(ngx_str_t *s);
u_char *ngx_http_llm_router_json(u_char *p, ngx_str_t *s);


/* a location routes when the router is on, or when it explains */
#define ngx_http_llm_router_on(llcf)  ((llcf)->enable || (llcf)->explain)


extern ngx_module_t  ngx_http_llm_router_module;


#endif /* _NGX_HTTP_LLM_ROUTER_MODULE_H_INCLUDED_ */
