
/*
 * Copyright (C) the ngx_http_llm_router_module authors
 *
 * llm_router_status: the metrics of the shared zone in the Prometheus
 * text format, or as JSON with ?format=json.  Labels come from the
 * configuration (models, rules, reasons, statuses), never from requests,
 * but for the keys of budgets.  Both are UTF-8, whatever bytes a label
 * holds.
 */


#include "ngx_http_llm_router_module.h"


typedef struct {
    ngx_uint_t                     kind;
    const char                    *name;
    const char                    *help;
    const char                    *labels[3];
} ngx_http_llm_router_metric_t;


/*
 * The entries ready when the scrape began: the answer lists those and
 * no other, so that its buffer, sized for them, is always enough.
 */

typedef struct {
    ngx_http_llm_router_shm_t     *shm;
    ngx_uint_t                     nmodels;
    ngx_uint_t                     nseries;
    u_char                         model[NGX_HTTP_LLM_ROUTER_ZONE_MODELS];
    u_char                         series[NGX_HTTP_LLM_ROUTER_ZONE_SERIES];
} ngx_http_llm_router_view_t;


static u_char *ngx_http_llm_router_prometheus(u_char *p,
    ngx_http_llm_router_view_t *view, ngx_http_request_t *r);
static u_char *ngx_http_llm_router_json_status(u_char *p,
    ngx_http_llm_router_view_t *view, ngx_http_request_t *r);
static u_char *ngx_http_llm_router_rates(u_char *p,
    ngx_http_llm_router_view_t *view, ngx_http_request_t *r);
static u_char *ngx_http_llm_router_histogram(u_char *p, const char *name,
    ngx_http_llm_router_label_t *model, ngx_atomic_t *buckets,
    ngx_msec_t *bounds, ngx_atomic_t sum, ngx_uint_t scale);
static u_char *ngx_http_llm_router_prom_label(u_char *p,
    ngx_http_llm_router_label_t *l);
static u_char *ngx_http_llm_router_json_label(u_char *p,
    ngx_http_llm_router_label_t *l);
static u_char *ngx_http_llm_router_utf8_escape(u_char *p, u_char *data,
    size_t len, u_char *(*escape)(u_char *p, u_char *data, size_t len));
static u_char *ngx_http_llm_router_prom_ascii(u_char *p, u_char *data,
    size_t len);
static u_char *ngx_http_llm_router_json_ascii(u_char *p, u_char *data,
    size_t len);
static size_t ngx_http_llm_router_utf8(u_char *p, u_char *last);
static ngx_msec_int_t ngx_http_llm_router_cooldown_left(
    ngx_http_llm_router_shm_model_t *e);


static ngx_http_llm_router_metric_t  ngx_http_llm_router_metrics[] = {
    { NGX_HTTP_LLM_ROUTER_SERIES_RULE, "llm_router_requests_total",
      "Requests routed, by model and rule.", { "model", "rule", NULL } },
    { NGX_HTTP_LLM_ROUTER_SERIES_FALLBACK, "llm_router_fallbacks_total",
      "Failed tries followed by another model.",
      { "from", "to", "reason" } },
    { NGX_HTTP_LLM_ROUTER_SERIES_ESCALATION, "llm_router_escalations_total",
      "Answers escalated to a stronger model.", { "from", "to", "reason" } },
    { NGX_HTTP_LLM_ROUTER_SERIES_ERROR, "llm_router_upstream_errors_total",
      "Answers of tries with a status of 400 or more.",
      { "model", "status", NULL } },
    { NGX_HTTP_LLM_ROUTER_SERIES_BUDGET, "llm_router_budget_actions_total",
      "Requests a budget downgraded or rejected.",
      { "budget", "action", NULL } },
    { NGX_HTTP_LLM_ROUTER_SERIES_TRIAGE, "llm_router_triage_total",
      "Triage verdicts asked of a small model, by model and result.",
      { "model", "result", NULL } },
    { NGX_HTTP_LLM_ROUTER_SERIES_SHADOW, "llm_router_shadow_total",
      "Shadow calls of a stronger model, by the model and rule routed to "
      "and result.", { "model", "rule", "result" } },
    { 0, NULL, NULL, { NULL, NULL, NULL } }
};


/*
 * A line of a series at most: three labels, their names, a number; a
 * label escaped for JSON is at most six times as long (\u0001), and a
 * byte that is not UTF-8 takes five (\\xFF).
 */

#define NGX_HTTP_LLM_ROUTER_LINE                                              \
    (64 + 3 * (16 + 6 * NGX_HTTP_LLM_ROUTER_LABEL_LEN) + NGX_ATOMIC_T_LEN)


ngx_int_t
ngx_http_llm_router_status_handler(ngx_http_request_t *r)
{
    size_t                            size;
    ngx_int_t                         rc;
    ngx_buf_t                        *b;
    ngx_str_t                         format, type;
    ngx_uint_t                        i, json;
    ngx_http_llm_router_shm_t        *shm;
    ngx_http_llm_router_view_t       *view;
    ngx_http_llm_router_main_conf_t  *lmcf;

    if (!(r->method & (NGX_HTTP_GET|NGX_HTTP_HEAD))) {
        return NGX_HTTP_NOT_ALLOWED;
    }

    rc = ngx_http_discard_request_body(r);
    if (rc != NGX_OK) {
        return rc;
    }

    lmcf = ngx_http_get_module_main_conf(r, ngx_http_llm_router_module);
    shm = lmcf->shm;

    if (shm == NULL) {
        ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                      "llm_router_status needs \"llm_router_zone\"");
        return NGX_HTTP_SERVICE_UNAVAILABLE;
    }

    json = ngx_http_arg(r, (u_char *) "format", 6, &format) == NGX_OK
           && format.len == 4 && ngx_strncmp(format.data, "json", 4) == 0;

    view = ngx_palloc(r->pool, sizeof(ngx_http_llm_router_view_t));
    if (view == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    view->shm = shm;
    view->nmodels = 0;
    view->nseries = 0;

    for (i = 0; i < NGX_HTTP_LLM_ROUTER_ZONE_MODELS; i++) {
        view->model[i] = (u_char) shm->models[i].ready;
        view->nmodels += view->model[i];
    }

    for (i = 0; i < NGX_HTTP_LLM_ROUTER_ZONE_SERIES; i++) {
        view->series[i] = (u_char) shm->series[i].ready;
        view->nseries += view->series[i];
    }

    /* the names of the entries are read after their flags */

    ngx_memory_barrier();

    /* the lines of each model, with its histograms, and of each series */

    size = (view->nmodels * (8 + 4 * NGX_HTTP_LLM_ROUTER_BUCKETS)
            + view->nseries + 64 + 42 * lmcf->budgets.nelts
            + 4 * lmcf->redis.nelts)
           * NGX_HTTP_LLM_ROUTER_LINE;

    b = ngx_create_temp_buf(r->pool, size);
    if (b == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    b->last = json ? ngx_http_llm_router_json_status(b->last, view, r)
                   : ngx_http_llm_router_prometheus(b->last, view, r);

    if (json) {
        ngx_str_set(&type, "application/json");

    } else {
        ngx_str_set(&type, "text/plain; version=0.0.4; charset=utf-8");
    }

    return ngx_http_llm_router_send_buf(r, b, &type);
}


/* a whole answer, made in one buffer: 200 and that */

ngx_int_t
ngx_http_llm_router_send_buf(ngx_http_request_t *r, ngx_buf_t *b,
    ngx_str_t *type)
{
    ngx_int_t    rc;
    ngx_chain_t  out;

    b->last_buf = (r == r->main);
    b->last_in_chain = 1;

    r->headers_out.status = NGX_HTTP_OK;
    r->headers_out.content_length_n = b->last - b->pos;
    r->headers_out.content_type = *type;
    r->headers_out.content_type_len = type->len;

    rc = ngx_http_send_header(r);

    if (rc == NGX_ERROR || rc > NGX_OK || r->header_only) {
        return rc;
    }

    out.buf = b;
    out.next = NULL;

    return ngx_http_output_filter(r, &out);
}


static u_char *
ngx_http_llm_router_prometheus(u_char *p, ngx_http_llm_router_view_t *view,
    ngx_http_request_t *r)
{
    ngx_uint_t                         i, k;
    ngx_http_llm_router_shm_t         *shm;
    ngx_http_llm_router_metric_t      *m;
    ngx_http_llm_router_shm_model_t   *e;
    ngx_http_llm_router_shm_series_t  *s;

    shm = view->shm;

    for (m = ngx_http_llm_router_metrics; m->name; m++) {
        p = ngx_sprintf(p, "# HELP %s %s\n# TYPE %s counter\n",
                        m->name, m->help, m->name);

        for (i = 0; i < NGX_HTTP_LLM_ROUTER_ZONE_SERIES; i++) {
            s = &shm->series[i];

            if (!view->series[i] || s->kind != m->kind) {
                continue;
            }

            p = ngx_sprintf(p, "%s{", m->name);

            for (k = 0; k < 3 && m->labels[k]; k++) {
                p = ngx_sprintf(p, "%s%s=\"", k ? "," : "", m->labels[k]);
                p = ngx_http_llm_router_prom_label(p, &s->label[k]);
                *p++ = '"';
            }

            p = ngx_sprintf(p, "} %uA\n", s->value);
        }
    }

#define ngx_http_llm_router_model_metric(name, help, type)                    \
    p = ngx_sprintf(p, "# HELP " name " " help "\n# TYPE " name " " type      \
                    "\n")

    ngx_http_llm_router_model_metric("llm_router_prompt_tokens_total",
                                     "Prompt tokens, by model.", "counter");

    for (i = 0; i < NGX_HTTP_LLM_ROUTER_ZONE_MODELS; i++) {
        e = &shm->models[i];

        if (view->model[i]) {
            p = ngx_sprintf(p, "llm_router_prompt_tokens_total{model=\"");
            p = ngx_http_llm_router_prom_label(p, &e->name);
            p = ngx_sprintf(p, "\"} %uA\n", e->prompt);
        }
    }

    ngx_http_llm_router_model_metric("llm_router_completion_tokens_total",
                                     "Completion tokens, by model.",
                                     "counter");

    for (i = 0; i < NGX_HTTP_LLM_ROUTER_ZONE_MODELS; i++) {
        e = &shm->models[i];

        if (view->model[i]) {
            p = ngx_sprintf(p, "llm_router_completion_tokens_total{model=\"");
            p = ngx_http_llm_router_prom_label(p, &e->name);
            p = ngx_sprintf(p, "\"} %uA\n", e->completion);
        }
    }

    ngx_http_llm_router_model_metric("llm_router_cost_usd_total",
                                     "Cost in USD, by model.", "counter");

    for (i = 0; i < NGX_HTTP_LLM_ROUTER_ZONE_MODELS; i++) {
        e = &shm->models[i];

        if (view->model[i]) {
            p = ngx_sprintf(p, "llm_router_cost_usd_total{model=\"");
            p = ngx_http_llm_router_prom_label(p, &e->name);
            p = ngx_cpymem(p, "\"} ", 3);
            p += llmr_usd_format(p, e->cost);
            *p++ = '\n';
        }
    }

    ngx_http_llm_router_model_metric("llm_router_cooldown_seconds",
                                     "Seconds a model stays skipped after "
                                     "a 429.", "gauge");

    for (i = 0; i < NGX_HTTP_LLM_ROUTER_ZONE_MODELS; i++) {
        e = &shm->models[i];

        if (view->model[i]) {
            p = ngx_sprintf(p, "llm_router_cooldown_seconds{model=\"");
            p = ngx_http_llm_router_prom_label(p, &e->name);
            p = ngx_sprintf(p, "\"} %.3f\n",
                      (double) ngx_http_llm_router_cooldown_left(e) / 1000);
        }
    }

    p = ngx_http_llm_router_rates(p, view, r);

    ngx_http_llm_router_model_metric("llm_router_latency_seconds",
                                     "Time from the request to its log "
                                     "record, by model.", "histogram");

    for (i = 0; i < NGX_HTTP_LLM_ROUTER_ZONE_MODELS; i++) {
        e = &shm->models[i];

        if (view->model[i]) {
            p = ngx_http_llm_router_histogram(p, "llm_router_latency_seconds",
                                        &e->name, e->latency,
                                        ngx_http_llm_router_latency_buckets,
                                        e->latency_ms, 1000);
        }
    }

    ngx_http_llm_router_model_metric("llm_router_ttfb_seconds",
                                     "Time from the request to the header "
                                     "of its answer, by model.",
                                     "histogram");

    for (i = 0; i < NGX_HTTP_LLM_ROUTER_ZONE_MODELS; i++) {
        e = &shm->models[i];

        if (view->model[i]) {
            p = ngx_http_llm_router_histogram(p, "llm_router_ttfb_seconds",
                                        &e->name, e->ttfb,
                                        ngx_http_llm_router_latency_buckets,
                                        e->ttfb_ms, 1000);
        }
    }

    ngx_http_llm_router_model_metric("llm_router_decision_seconds",
                                     "Time to parse the rest of the body "
                                     "and decide.", "histogram");

    p = ngx_http_llm_router_histogram(p, "llm_router_decision_seconds", NULL,
                                      shm->decision,
                                      ngx_http_llm_router_decision_buckets,
                                      shm->decision_us, 1000000);

    p = ngx_http_llm_router_budget_status(p, r, 0);
    p = ngx_http_llm_router_redis_status(p,
                      ngx_http_get_module_main_conf(r,
                                                    ngx_http_llm_router_module),
                      0);

#undef ngx_http_llm_router_model_metric

    return p;
}


/*
 * The rates the alerts watch, over their windows (five minutes without
 * an alert), and whether each alert is firing.
 */

static u_char *
ngx_http_llm_router_rates(u_char *p, ngx_http_llm_router_view_t *view,
    ngx_http_request_t *r)
{
    ngx_uint_t                        i, total, v;
    ngx_msec_t                        window[NGX_HTTP_LLM_ROUTER_RATES];
    ngx_http_llm_router_shm_t        *shm;
    ngx_http_llm_router_rate_t       *rate;
    ngx_http_llm_router_shm_model_t  *e;
    ngx_http_llm_router_main_conf_t  *lmcf;

    lmcf = ngx_http_get_module_main_conf(r, ngx_http_llm_router_module);
    shm = view->shm;

    for (i = 0; i < NGX_HTTP_LLM_ROUTER_RATES; i++) {
        window[i] = lmcf->alerts[i].set ? lmcf->alerts[i].window : 300000;
    }

    p = ngx_sprintf(p, "# HELP llm_router_rate Share of requests over the "
                    "window of its alert: escalated, failed over, or, by "
                    "model, failed.\n# TYPE llm_router_rate gauge\n");

    for (i = 0; i < 2; i++) {
        rate = i ? &shm->fallbacks : &shm->escalations;
        v = ngx_http_llm_router_rate(rate, window[i], &total);
        p = ngx_sprintf(p, "llm_router_rate{rate=\"%V\"} %ui.%03ui\n",
                        &ngx_http_llm_router_rate_names[i], v / 1000,
                        v % 1000);
    }

    for (i = 0; i < NGX_HTTP_LLM_ROUTER_ZONE_MODELS; i++) {
        e = &shm->models[i];

        if (view->model[i]) {
            v = ngx_http_llm_router_rate(&e->errors,
                             window[NGX_HTTP_LLM_ROUTER_ERROR_RATE], &total);
            p = ngx_sprintf(p, "llm_router_rate{rate=\"error_rate\","
                            "model=\"");
            p = ngx_http_llm_router_prom_label(p, &e->name);
            p = ngx_sprintf(p, "\"} %ui.%03ui\n", v / 1000, v % 1000);
        }
    }

    p = ngx_sprintf(p, "# HELP llm_router_alert_firing 1 while an alert's "
                    "rate is above its threshold.\n"
                    "# TYPE llm_router_alert_firing gauge\n");

    for (i = 0; i < 2; i++) {
        if (lmcf->alerts[i].set) {
            rate = i ? &shm->fallbacks : &shm->escalations;
            p = ngx_sprintf(p, "llm_router_alert_firing{alert=\"%V\"} %uA\n",
                            &ngx_http_llm_router_rate_names[i], rate->firing);
        }
    }

    for (i = 0; lmcf->alerts[NGX_HTTP_LLM_ROUTER_ERROR_RATE].set
                && i < NGX_HTTP_LLM_ROUTER_ZONE_MODELS; i++)
    {
        e = &shm->models[i];

        if (view->model[i]) {
            p = ngx_sprintf(p, "llm_router_alert_firing{alert=\"error_rate\","
                            "model=\"");
            p = ngx_http_llm_router_prom_label(p, &e->name);
            p = ngx_sprintf(p, "\"} %uA\n", e->errors.firing);
        }
    }

    return p;
}


/* buckets kept apart, written cumulative, as Prometheus wants them */

static u_char *
ngx_http_llm_router_histogram(u_char *p, const char *name,
    ngx_http_llm_router_label_t *model, ngx_atomic_t *buckets,
    ngx_msec_t *bounds, ngx_atomic_t sum, ngx_uint_t scale)
{
    ngx_uint_t  i;
    ngx_uint_t  count;

    count = 0;

    for (i = 0; i < NGX_HTTP_LLM_ROUTER_BUCKETS; i++) {
        count += buckets[i];

        p = ngx_sprintf(p, "%s_bucket{", name);

        if (model) {
            p = ngx_cpymem(p, "model=\"", 7);
            p = ngx_http_llm_router_prom_label(p, model);
            p = ngx_cpymem(p, "\",", 2);
        }

        if (i + 1 < NGX_HTTP_LLM_ROUTER_BUCKETS) {
            p = ngx_sprintf(p, "le=\"%.6f\"} %ui\n",
                            (double) bounds[i] / scale, count);

        } else {
            p = ngx_sprintf(p, "le=\"+Inf\"} %ui\n", count);
        }
    }

    p = ngx_sprintf(p, "%s_sum", name);

    if (model) {
        p = ngx_cpymem(p, "{model=\"", 8);
        p = ngx_http_llm_router_prom_label(p, model);
        p = ngx_cpymem(p, "\"}", 2);
    }

    p = ngx_sprintf(p, " %.6f\n%s_count", (double) sum / scale, name);

    if (model) {
        p = ngx_cpymem(p, "{model=\"", 8);
        p = ngx_http_llm_router_prom_label(p, model);
        p = ngx_cpymem(p, "\"}", 2);
    }

    return ngx_sprintf(p, " %ui\n", count);
}


static u_char *
ngx_http_llm_router_json_status(u_char *p, ngx_http_llm_router_view_t *view,
    ngx_http_request_t *r)
{
    ngx_uint_t                         i, k, first, n;
    ngx_http_llm_router_shm_t         *shm;
    ngx_http_llm_router_metric_t      *m;
    ngx_http_llm_router_shm_model_t   *e;
    ngx_http_llm_router_shm_series_t  *s;

    shm = view->shm;

    p = ngx_cpymem(p, "{\"models\":{", sizeof("{\"models\":{") - 1);

    first = 1;

    for (i = 0; i < NGX_HTTP_LLM_ROUTER_ZONE_MODELS; i++) {
        e = &shm->models[i];

        if (!view->model[i]) {
            continue;
        }

        if (!first) {
            *p++ = ',';
        }

        first = 0;

        for (n = 0, k = 0; k < NGX_HTTP_LLM_ROUTER_BUCKETS; k++) {
            n += e->latency[k];
        }

        p = ngx_http_llm_router_json_label(p, &e->name);
        p = ngx_sprintf(p, ":{\"requests\":%ui,\"prompt_tokens\":%uA,"
                        "\"completion_tokens\":%uA,\"cost_usd\":",
                        n, e->prompt, e->completion);
        p += llmr_usd_format(p, e->cost);
        p = ngx_sprintf(p, ",\"latency_ms_sum\":%uA,\"ttfb_ms_sum\":%uA,"
                        "\"cooldown_ms\":%M}", e->latency_ms, e->ttfb_ms,
                        ngx_http_llm_router_cooldown_left(e));
    }

    *p++ = '}';

    for (m = ngx_http_llm_router_metrics; m->name; m++) {

        /* "llm_router_requests_total" is "requests" in JSON */
        p = ngx_sprintf(p, ",\"%*s\":[",
                        ngx_strlen(m->name) - sizeof("llm_router_") + 1
                        - sizeof("_total") + 1,
                        m->name + sizeof("llm_router_") - 1);

        first = 1;

        for (i = 0; i < NGX_HTTP_LLM_ROUTER_ZONE_SERIES; i++) {
            s = &shm->series[i];

            if (!view->series[i] || s->kind != m->kind) {
                continue;
            }

            p = ngx_cpymem(p, first ? "{" : ",{", first ? 1 : 2);
            first = 0;

            for (k = 0; k < 3 && m->labels[k]; k++) {
                p = ngx_sprintf(p, "\"%s\":", m->labels[k]);
                p = ngx_http_llm_router_json_label(p, &s->label[k]);
                *p++ = ',';
            }

            p = ngx_sprintf(p, "\"value\":%uA}", s->value);
        }

        *p++ = ']';
    }

    p = ngx_http_llm_router_budget_status(p, r, 1);
    p = ngx_http_llm_router_redis_status(p,
                      ngx_http_get_module_main_conf(r,
                                                    ngx_http_llm_router_module),
                      1);

    return ngx_cpymem(p, "}\n", 2);
}


/* label values: backslash, quote and line feed escaped */

static u_char *
ngx_http_llm_router_prom_label(u_char *p, ngx_http_llm_router_label_t *l)
{
    return ngx_http_llm_router_prom_escape(p, l->data, l->len);
}


u_char *
ngx_http_llm_router_prom_escape(u_char *p, u_char *data, size_t len)
{
    return ngx_http_llm_router_utf8_escape(p, data, len,
                                           ngx_http_llm_router_prom_ascii);
}


static u_char *
ngx_http_llm_router_prom_ascii(u_char *p, u_char *data, size_t len)
{
    size_t  i;

    for (i = 0; i < len; i++) {
        if (data[i] == '\\' || data[i] == '"') {
            *p++ = '\\';

        } else if (data[i] == '\n') {
            *p++ = '\\';
            *p++ = 'n';
            continue;
        }

        *p++ = data[i];
    }

    return p;
}


static u_char *
ngx_http_llm_router_json_label(u_char *p, ngx_http_llm_router_label_t *l)
{
    return ngx_http_llm_router_json_string(p, l->data, l->len);
}


/* a JSON string of bytes that may not be UTF-8: see below */

u_char *
ngx_http_llm_router_json_string(u_char *p, u_char *data, size_t len)
{
    *p++ = '"';
    p = ngx_http_llm_router_utf8_escape(p, data, len,
                                        ngx_http_llm_router_json_ascii);
    *p++ = '"';

    return p;
}


static u_char *
ngx_http_llm_router_json_ascii(u_char *p, u_char *data, size_t len)
{
    return llmr_json_escape(p, data, len);
}


/*
 * A scrape with one byte that is not UTF-8 is refused whole by
 * Prometheus, and is not JSON: such a byte, from a key a client sent or
 * from nginx.conf, is written as the text \xFF, its backslash escaped as
 * both formats escape one.  Well-formed characters are escaped by the
 * format's function, which leaves the bytes above 0x7f as they are.
 */

static u_char *
ngx_http_llm_router_utf8_escape(u_char *p, u_char *data, size_t len,
    u_char *(*escape)(u_char *p, u_char *data, size_t len))
{
    size_t         n;
    u_char        *run, *last;
    static u_char  hex[] = "0123456789ABCDEF";

    run = data;
    last = data + len;

    while (data < last) {
        n = (*data < 0x80) ? 1 : ngx_http_llm_router_utf8(data, last);

        if (n) {
            data += n;
            continue;
        }

        p = escape(p, run, data - run);

        *p++ = '\\';
        *p++ = '\\';
        *p++ = 'x';
        *p++ = hex[*data >> 4];
        *p++ = hex[*data & 0xf];

        run = ++data;
    }

    return escape(p, run, data - run);
}


/*
 * The length of the well-formed UTF-8 character at p, or 0: not overlong,
 * not a surrogate, not above U+10FFFF, not cut by the end.
 */

static size_t
ngx_http_llm_router_utf8(u_char *p, u_char *last)
{
    size_t    i, n;
    uint32_t  c, min;

    c = *p;

    if (c >= 0xc2 && c <= 0xdf) {
        n = 2;
        c &= 0x1f;
        min = 0x80;

    } else if (c >= 0xe0 && c <= 0xef) {
        n = 3;
        c &= 0x0f;
        min = 0x800;

    } else if (c >= 0xf0 && c <= 0xf4) {
        n = 4;
        c &= 0x07;
        min = 0x10000;

    } else {
        return 0;
    }

    if ((size_t) (last - p) < n) {
        return 0;
    }

    for (i = 1; i < n; i++) {
        if ((p[i] & 0xc0) != 0x80) {
            return 0;
        }

        c = (c << 6) | (p[i] & 0x3f);
    }

    if (c < min || c > 0x10ffff || (c >= 0xd800 && c <= 0xdfff)) {
        return 0;
    }

    return n;
}


static ngx_msec_int_t
ngx_http_llm_router_cooldown_left(ngx_http_llm_router_shm_model_t *e)
{
    ngx_msec_int_t  left;

    left = (ngx_msec_int_t) (e->until - ngx_current_msec);

    return (e->until && left > 0) ? left : 0;
}
