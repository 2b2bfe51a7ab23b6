
/*
 * Copyright (C) the ngx_http_llm_router_module authors
 *
 * llm-router replay: a log of requests POSTed to a URL, a number at a
 * time (libcurl's multi interface), and a summary of the answers.  A
 * location with llm_router_explain answers each with its decision
 * record; those are tallied: APIs, models, rules, cost and score.
 */


#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <curl/curl.h>
#include <yajl/yajl_tree.h>

#include "llm_router.h"


#define LR_ANSWER_MAX    16384      /* decision records are far smaller */
#define LR_STATUS_MAX    600


typedef struct {
    char              *name;
    size_t             count;
} lr_tally_t;

typedef struct {
    lr_tally_t        *items;
    size_t             n;
} lr_tallies_t;

typedef struct {
    unsigned char     *data;
    size_t             len;
    const char        *url;                 /* that of its dialect */
} lr_body_t;

typedef struct {
    const char        *url;
    const char        *log;
    struct curl_slist *headers;
    unsigned           concurrency;
    uint64_t           limit;

    /* the URL for the bodies of each dialect */
    char              *urls[LLMR_APIS];

    lr_body_t         *bodies;
    size_t             n;
    size_t             size;

    size_t             sent;
    size_t             failed;
    char               error[CURL_ERROR_SIZE];     /* the first failure */
    size_t             status[LR_STATUS_MAX];      /* 0: any other */
    size_t             decisions;
    size_t             forwarded;
    lr_tallies_t       apis;
    lr_tallies_t       models;
    lr_tallies_t       rules;
    double             cost;
    size_t             costs;
    double             score;
    size_t             scores;
} lr_replay_t;


static int lr_replay_options(lr_replay_t *r, int argc, char **argv);
static int lr_replay(lr_replay_t *r);
static int lr_replay_urls(lr_replay_t *r);
static int lr_replay_load(lr_replay_t *r);
static int lr_body_add(lr_replay_t *r, const llmr_str_t *body,
    const char *url);
static int lr_body(const lr_input_t *in, llmr_str_t *body,
    const llmr_dialect_t **d, char *err, size_t errlen);
static int lr_replay_run(lr_replay_t *r);
static int lr_transfer_start(CURLM *multi, lr_http_t *t,
    const lr_body_t *body);
static int lr_replay_done(lr_replay_t *r, lr_http_t *t,
    CURLcode result);
static int lr_decision_add(lr_replay_t *r, lr_http_t *t);
static int lr_tally(lr_tallies_t *tallies, const char *name);
static int lr_tally_cmp(const void *one, const void *two);
static void lr_tallies_print(lr_tallies_t *tallies, const char *what,
    size_t total);
static void lr_tallies_free(lr_tallies_t *tallies);
static void lr_replay_print(lr_replay_t *r);
static void lr_replay_free(lr_replay_t *r);


int
lr_cmd_replay(int argc, char **argv)
{
    int          status;
    lr_replay_t  r;

    memset(&r, 0, sizeof(lr_replay_t));

    status = lr_replay_options(&r, argc, argv);

    if (status == 0) {
        status = lr_replay(&r);
    }

    lr_replay_free(&r);

    return status;
}


static int
lr_replay_options(lr_replay_t *r, int argc, char **argv)
{
    int           n;
    lr_list_t     headers;
    lr_option_t   opts[] = {
        { "url", LR_OPT_STRING, &r->url, 0, 0 },
        { "concurrency", LR_OPT_UINT, &r->concurrency, 1, 1000 },
        { "header", LR_OPT_LIST, &headers, 0, 0 },
        { "limit", LR_OPT_UINT64, &r->limit, 1, 0 }
    };

    memset(&headers, 0, sizeof(lr_list_t));
    r->concurrency = LR_CONCURRENCY_DEFAULT;
    r->limit = UINT64_MAX;

    n = lr_options_parse(argc, argv, opts, lr_nelts(opts));

    if (n >= 0 && (r->url == NULL || n != 1)) {
        lr_error("replay: --url URL and one LOG.jsonl expected");
        n = -1;
    }

    r->log = argv[0];

    if (n < 0) {
        free(headers.items);
        return LR_EXIT_USAGE;
    }

    return lr_http_options(&r->headers, &headers, NULL, "replay");
}


static int
lr_replay(lr_replay_t *r)
{
    int  rc;

    if (lr_replay_urls(r) != LLMR_OK) {
        lr_error("out of memory");
        return LR_EXIT_FAILURE;
    }

    if (lr_replay_load(r) != LLMR_OK) {
        return LR_EXIT_FAILURE;
    }

    if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) {
        lr_error("replay: libcurl failed to initialise");
        return LR_EXIT_FAILURE;
    }

    rc = lr_replay_run(r);

    curl_global_cleanup();

    if (rc != LLMR_OK) {
        return LR_EXIT_FAILURE;
    }

    lr_replay_print(r);

    if (r->failed) {
        lr_error("%s: %zu of %zu requests failed, the first: %s", r->url,
                 r->failed, r->sent, r->error);
        return LR_EXIT_FAILURE;
    }

    return 0;
}


/*
 * A URL whose path ends as a dialect's ("/v1/chat/completions") is an
 * API's, which nginx reads by the path with llm_router_api auto: each
 * body goes to the path of its own dialect ("/v1/messages").  Any other
 * URL, as a location of one dialect, takes every body as it is.
 */

static int
lr_replay_urls(lr_replay_t *r)
{
    char                    *url;
    size_t                   prefix;
    unsigned                 i;
    const char              *host, *path, *query;
    const llmr_str_t        *end;
    const llmr_dialect_t    *d;
    static const llmr_str_t  none = { 0, (const unsigned char *) "" };

    host = strstr(r->url, "://");
    host = host ? host + 3 : r->url;
    path = host + strcspn(host, "/?#");
    query = path + strcspn(path, "?#");

    d = llmr_dialect_of_path((const unsigned char *) path,
                             (size_t) (query - path));

    prefix = (size_t) (query - r->url) - (d ? d->path.len : 0);

    for (i = 0; i < LLMR_APIS; i++) {
        end = d ? &llmr_dialects[i].path : &none;

        url = malloc(prefix + end->len + strlen(query) + 1);
        if (url == NULL) {
            return LLMR_ERROR;
        }

        memcpy(url, r->url, prefix);
        memcpy(url + prefix, end->data, end->len);
        strcpy(url + prefix + end->len, query);

        r->urls[i] = url;
    }

    return LLMR_OK;
}


/* every line is checked before the first request is sent */

static int
lr_replay_load(lr_replay_t *r)
{
    int                    rc;
    char                   err[LLMR_ERROR_MAX];
    lr_input_t             in;
    llmr_str_t             body;
    const llmr_dialect_t  *d;

    if (lr_input_open(&in, r->log) != LLMR_OK) {
        return LLMR_ERROR;
    }

    rc = LR_DONE;

    while (r->n < r->limit && (rc = lr_input_next(&in)) == LLMR_OK) {

        if (lr_body(&in, &body, &d, err, sizeof(err)) != LLMR_OK) {
            lr_input_error(&in, "%s", err);
            rc = LLMR_ERROR;
            break;
        }

        if (lr_body_add(r, &body, r->urls[d->api]) != LLMR_OK) {
            lr_error("out of memory");
            rc = LLMR_ERROR;
            break;
        }
    }

    lr_input_close(&in);

    if (rc != LLMR_ERROR && r->n == 0) {
        lr_error("%s: no data", in.name);
        rc = LLMR_ERROR;
    }

    return (rc == LLMR_ERROR) ? LLMR_ERROR : LLMR_OK;
}


static int
lr_body_add(lr_replay_t *r, const llmr_str_t *body, const char *url)
{
    size_t          size;
    lr_body_t      *bodies;
    unsigned char  *p;

    if (r->n == r->size) {
        size = r->size ? 2 * r->size : 256;

        bodies = realloc(r->bodies, size * sizeof(lr_body_t));
        if (bodies == NULL) {
            return LLMR_ERROR;
        }

        r->bodies = bodies;
        r->size = size;
    }

    p = malloc(body->len);
    if (p == NULL) {
        return LLMR_ERROR;
    }

    memcpy(p, body->data, body->len);

    r->bodies[r->n].data = p;
    r->bodies[r->n].len = body->len;
    r->bodies[r->n].url = url;
    r->n++;

    return LLMR_OK;
}


/* a request body, or a line that has one as its "request" */

static int
lr_body(const lr_input_t *in, llmr_str_t *body, const llmr_dialect_t **d,
    char *err, size_t errlen)
{
    double       score;
    lr_record_t  rec;

    if (lr_record_parse(&rec, (unsigned char *) in->line, in->len, err,
                        errlen)
        != LLMR_OK)
    {
        return LLMR_ERROR;
    }

    if (rec.field[LR_FIELD_REQUEST].data) {
        if (lr_record_object(&rec, LR_FIELD_REQUEST, body, err, errlen)
            != LLMR_OK)
        {
            return LLMR_ERROR;
        }

    } else {
        body->data = (unsigned char *) in->line;
        body->len = in->len;
    }

    if (lr_record_dialect(&rec, d, err, errlen) != LLMR_OK) {
        return LLMR_ERROR;
    }

    return lr_request_check(body, *d, 0, NULL, &score, err, errlen);
}


/* a finished transfer's handle takes the next body */

static int
lr_replay_run(lr_replay_t *r)
{
    int             rc, running, left;
    void           *data;
    size_t          i, next, active;
    CURLM          *multi;
    CURLMsg        *msg;
    CURLMcode       code;
    CURLcode        result;
    lr_http_t  *t, *transfers;

    multi = curl_multi_init();
    transfers = calloc(r->concurrency, sizeof(lr_http_t));

    rc = (multi && transfers) ? LLMR_OK : LLMR_ERROR;
    code = CURLM_OK;

    for (next = 0; rc == LLMR_OK && next < r->concurrency && next < r->n;
         next++)
    {
        rc = lr_http_init(&transfers[next], r->headers, LR_ANSWER_MAX, 0,
                          &transfers[next]);

        if (rc == LLMR_OK) {
            rc = lr_transfer_start(multi, &transfers[next], &r->bodies[next]);
        }
    }

    if (rc != LLMR_OK) {
        lr_error("replay: out of memory");
    }

    active = next;

    while (rc == LLMR_OK && active) {

        code = curl_multi_perform(multi, &running);

        while (code == CURLM_OK && rc == LLMR_OK
               && (msg = curl_multi_info_read(multi, &left)))
        {
            if (msg->msg != CURLMSG_DONE) {
                continue;
            }

            result = msg->data.result;
            curl_easy_getinfo(msg->easy_handle, CURLINFO_PRIVATE, &data);
            t = data;

            curl_multi_remove_handle(multi, t->easy);
            rc = lr_replay_done(r, t, result);

            if (rc == LLMR_OK && next < r->n) {
                rc = lr_transfer_start(multi, t, &r->bodies[next++]);

            } else {
                active--;
            }
        }

        if (code == CURLM_OK && rc == LLMR_OK && active) {
            code = curl_multi_wait(multi, NULL, 0, 1000, NULL);
        }

        if (code != CURLM_OK) {
            lr_error("replay: %s", curl_multi_strerror(code));
            rc = LLMR_ERROR;

        } else if (rc != LLMR_OK) {
            lr_error("replay: out of memory");
        }
    }

    for (i = 0; transfers && i < r->concurrency; i++) {
        lr_http_free(multi, &transfers[i], 1);
    }

    free(transfers);

    if (multi) {
        curl_multi_cleanup(multi);
    }

    return rc;
}


static int
lr_transfer_start(CURLM *multi, lr_http_t *t, const lr_body_t *body)
{
    return lr_http_post(multi, t, body->url, body->data, body->len);
}


static int
lr_replay_done(lr_replay_t *r, lr_http_t *t, CURLcode result)
{
    long  status;

    r->sent++;

    if (result != CURLE_OK) {
        if (r->failed++ == 0) {
            snprintf(r->error, sizeof(r->error), "%s",
                     t->error[0] ? t->error : curl_easy_strerror(result));
        }

        return LLMR_OK;
    }

    status = 0;
    curl_easy_getinfo(t->easy, CURLINFO_RESPONSE_CODE, &status);

    r->status[(status > 0 && status < LR_STATUS_MAX) ? status : 0]++;

    if (status < 200 || status > 299) {
        return LLMR_OK;
    }

    if (t->len > LR_ANSWER_MAX) {
        r->forwarded++;
        return LLMR_OK;
    }

    return lr_decision_add(r, t);
}


/* a decision record is an object with a "model" string */

static int
lr_decision_add(lr_replay_t *r, lr_http_t *t)
{
    int                  rc;
    yajl_val             root, model, rule, v;
    static const char   *api_path[] = { "api", NULL };
    static const char   *model_path[] = { "model", NULL };
    static const char   *rule_path[] = { "rule", NULL };
    static const char   *cost_path[] = { "est_cost_usd", NULL };
    static const char   *score_path[] = { "score", NULL };

    t->answer[t->len] = '\0';

    root = yajl_tree_parse((char *) t->answer, NULL, 0);
    model = yajl_tree_get(root, model_path, yajl_t_string);

    if (model == NULL) {
        yajl_tree_free(root);
        r->forwarded++;
        return LLMR_OK;
    }

    r->decisions++;

    rule = yajl_tree_get(root, rule_path, yajl_t_string);
    v = yajl_tree_get(root, api_path, yajl_t_string);

    /* records of a module older than the dialects have no "api" */

    rc = v ? lr_tally(&r->apis, YAJL_GET_STRING(v)) : LLMR_OK;

    if (rc == LLMR_OK) {
        rc = lr_tally(&r->models, YAJL_GET_STRING(model));
    }

    if (rc == LLMR_OK) {
        rc = lr_tally(&r->rules, rule ? YAJL_GET_STRING(rule) : "(none)");
    }

    v = yajl_tree_get(root, cost_path, yajl_t_number);

    if (v && YAJL_IS_DOUBLE(v)) {
        r->cost += YAJL_GET_DOUBLE(v);
        r->costs++;
    }

    v = yajl_tree_get(root, score_path, yajl_t_number);

    if (v && YAJL_IS_DOUBLE(v)) {
        r->score += YAJL_GET_DOUBLE(v);
        r->scores++;
    }

    yajl_tree_free(root);

    return rc;
}


static int
lr_tally(lr_tallies_t *tallies, const char *name)
{
    size_t       i;
    lr_tally_t  *items;

    for (i = 0; i < tallies->n; i++) {
        if (strcmp(tallies->items[i].name, name) == 0) {
            tallies->items[i].count++;
            return LLMR_OK;
        }
    }

    items = realloc(tallies->items, (tallies->n + 1) * sizeof(lr_tally_t));
    if (items == NULL) {
        return LLMR_ERROR;
    }

    tallies->items = items;

    items[i].name = malloc(strlen(name) + 1);
    if (items[i].name == NULL) {
        return LLMR_ERROR;
    }

    strcpy(items[i].name, name);
    items[i].count = 1;
    tallies->n++;

    return LLMR_OK;
}


/* the most frequent first, then by name */

static int
lr_tally_cmp(const void *one, const void *two)
{
    const lr_tally_t  *a = one, *b = two;

    if (a->count != b->count) {
        return (a->count < b->count) - (a->count > b->count);
    }

    return strcmp(a->name, b->name);
}


static void
lr_tallies_print(lr_tallies_t *tallies, const char *what, size_t total)
{
    size_t  i;

    if (tallies->n == 0) {
        return;
    }

    qsort(tallies->items, tallies->n, sizeof(lr_tally_t), lr_tally_cmp);

    for (i = 0; i < tallies->n; i++) {
        printf("%s %s: %zu", what, tallies->items[i].name,
               tallies->items[i].count);

        if (total) {
            printf(" (%.1f%%)", 100.0 * tallies->items[i].count / total);
        }

        printf("\n");
    }
}


static void
lr_tallies_free(lr_tallies_t *tallies)
{
    size_t  i;

    for (i = 0; i < tallies->n; i++) {
        free(tallies->items[i].name);
    }

    free(tallies->items);
}


static void
lr_replay_print(lr_replay_t *r)
{
    size_t  i;

    printf("requests %zu, failed %zu\n", r->sent, r->failed);

    for (i = 1; i < LR_STATUS_MAX; i++) {
        if (r->status[i]) {
            printf("HTTP %zu: %zu\n", i, r->status[i]);
        }
    }

    if (r->status[0]) {
        printf("HTTP other: %zu\n", r->status[0]);
    }

    printf("decisions %zu, forwarded %zu\n", r->decisions, r->forwarded);

    lr_tallies_print(&r->apis, "api", r->decisions);
    lr_tallies_print(&r->models, "model", r->decisions);
    lr_tallies_print(&r->rules, "rule", 0);

    if (r->costs) {
        printf("est_cost_usd total %.8f, mean %.8f\n", r->cost,
               r->cost / r->costs);
    }

    if (r->scores) {
        printf("score mean %.4f (%zu decisions with a score)\n",
               r->score / r->scores, r->scores);
    }
}


static void
lr_replay_free(lr_replay_t *r)
{
    size_t  i;

    for (i = 0; i < r->n; i++) {
        free(r->bodies[i].data);
    }

    for (i = 0; i < LLMR_APIS; i++) {
        free(r->urls[i]);
    }

    free(r->bodies);
    curl_slist_free_all(r->headers);
    lr_tallies_free(&r->apis);
    lr_tallies_free(&r->models);
    lr_tallies_free(&r->rules);
}
