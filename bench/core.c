
/*
 * Copyright (C) the ngx_http_llm_router_module authors
 *
 * The cost of the core on one request: parse and decide, with and
 * without the classifier, against a plain yajl parse of the same bytes.
 * Prints nanoseconds a request and MB/s; `make bench` runs it.  Bodies
 * of about 1 KB, 4 KB, 64 KB and 1 MB; the rules also with the keyword
 * lists of bench/http, and fed in 16 KB pieces, as nginx passes a body
 * that arrives in pieces; and the same request as a Messages and as a
 * Responses body.
 */


#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <math.h>
#include <time.h>

#include "llmr.h"


#define BENCH_BITS   15
#define BENCH_RUNS   5
#define BENCH_PIECE  16384


/* the keyword lists of the "rules" row of bench/http */

static const char  *bench_keywords[][2] = {
    { "analyze", "0" }, { "analyse", "0" }, { "explain why", "0" },
    { "compare", "0" }, { "design", "0" }, { "prove", "0" },
    { "step by step", "0" }, { "trade-off", "0" }, { "root cause", "0" },
    { "optimize", "0" }, { "architecture", "0" },
    { "contract", "1" }, { "liability", "1" }, { "indemnify", "1" },
    { "gdpr", "1" }, { "lawsuit", "1" }, { "terms of service", "1" },
    { "compliance", "1" },
    { NULL, NULL }
};


static double
now(void)
{
    struct timespec  ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);

    return ts.tv_sec + ts.tv_nsec / 1e9;
}


/*
 * A request whose user message is about `size` bytes of prose, after a
 * system prompt, in the words of each dialect
 */

static const char  *body_head[LLMR_APIS] = {
    "{\"model\":\"auto\",\"messages\":["
    "{\"role\":\"system\",\"content\":\"Be brief.\"},"
    "{\"role\":\"user\",\"content\":\"",

    "{\"model\":\"auto\",\"system\":\"Be brief.\",\"messages\":["
    "{\"role\":\"user\",\"content\":\"",

    "{\"model\":\"auto\",\"instructions\":\"Be brief.\",\"input\":["
    "{\"role\":\"user\",\"content\":\""
};

static const char  *body_tail[LLMR_APIS] = {
    "\"}],\"max_tokens\":256}",
    "\"}],\"max_tokens\":256}",
    "\"}],\"max_output_tokens\":256}"
};


static char *
make_body(size_t size, llmr_api_e api)
{
    char        *body, *p;
    size_t       n;
    const char  *words[] = { "the", "router", "reads", "each", "request",
                             "and", "explains", "why", "42", "models",
                             "compare", "latency,", "cost", "quality." };

    body = malloc(size + 256);
    p = body + sprintf(body, "%s", body_head[api]);

    for (n = 0; (size_t) (p - body) < size; n++) {
        p += sprintf(p, "%s ", words[(n * 7 + n / 3) % 14]);
    }

    strcpy(p, body_tail[api]);

    return body;
}


static int
null_cb(void *ctx)
{
    (void) ctx;
    return 1;
}


static int
bool_cb(void *ctx, int v)
{
    (void) ctx;
    (void) v;
    return 1;
}


static int
str_cb(void *ctx, const unsigned char *s, size_t len)
{
    (void) ctx;
    (void) s;
    (void) len;
    return 1;
}


static int
num_cb(void *ctx, const char *s, size_t len)
{
    (void) ctx;
    (void) s;
    (void) len;
    return 1;
}


static const yajl_callbacks  plain_callbacks = {
    null_cb, bool_cb, NULL, NULL, num_cb, str_cb,
    null_cb, str_cb, null_cb, null_cb, null_cb
};


static int
cmp_double(const void *one, const void *two)
{
    const double  *a = one, *b = two;

    return (*a > *b) - (*a < *b);
}


/* the median of BENCH_RUNS runs of n requests: other load only adds */

static double
run(const char *name, const char *body, size_t len, unsigned n,
    llmr_api_e api, const llmr_keywords_t *kw, const llmr_classifier_t *c,
    size_t piece, int plain)
{
    size_t           off, size;
    double           t, ns[BENCH_RUNS];
    unsigned         i, k;
    yajl_handle      y;
    llmr_request_t   rq;

    for (k = 0; k < BENCH_RUNS; k++) {
        t = now();

        for (i = 0; i < n; i++) {
            if (plain) {
                y = yajl_alloc(&plain_callbacks, NULL, NULL);
                yajl_parse(y, (const unsigned char *) body, len);
                yajl_complete_parse(y);
                yajl_free(y);
                continue;
            }

            llmr_request_init(&rq, &llmr_dialects[api], kw, 6);
            rq.classifier = c;

            for (off = 0; off < len; off += size) {
                size = (piece && len - off > piece) ? piece : len - off;
                llmr_request_feed(&rq, (const unsigned char *) body + off,
                                  size);
            }

            if (llmr_request_finish(&rq) != LLMR_OK) {
                fprintf(stderr, "bench: %s\n", rq.error);
                exit(1);
            }

            llmr_request_free(&rq);
        }

        ns[k] = (now() - t) / n * 1e9;
    }

    qsort(ns, BENCH_RUNS, sizeof(double), cmp_double);

    printf("  %-34s %9.0f ns %8.1f MB/s\n", name, ns[BENCH_RUNS / 2],
           len / ns[BENCH_RUNS / 2] * 1e3);

    return ns[BENCH_RUNS / 2];
}


int
main(void)
{
    char               err[LLMR_ERROR_MAX], *body;
    size_t             i, len, sizes[] = { 1024, 4096, 65536, 1048576 };
    float             *w;
    unsigned           k, n;
    unsigned char     *file;
    llmr_phrase_t      phrases[32];
    llmr_keywords_t    kw;
    llmr_classifier_t  c;

    for (k = 0; bench_keywords[k][0]; k++) {
        phrases[k].len = strlen(bench_keywords[k][0]);
        phrases[k].text = malloc(phrases[k].len);
        memcpy(phrases[k].text, bench_keywords[k][0], phrases[k].len);
        phrases[k].list = bench_keywords[k][1][0] - '0';
    }

    if (llmr_keywords_init(&kw, phrases, k, 2) != LLMR_OK) {
        fprintf(stderr, "bench: bad keywords\n");
        return 1;
    }

    w = malloc(sizeof(float) << BENCH_BITS);

    for (i = 0; i < ((size_t) 1 << BENCH_BITS); i++) {
        w[i] = (float) sin((double) i) * 0.1f;
    }

    file = malloc(llmr_classifier_size(BENCH_BITS));
    llmr_classifier_write(file, BENCH_BITS, 6, 0.0f, w);

    if (llmr_classifier_load(&c, file, llmr_classifier_size(BENCH_BITS),
                             err, sizeof(err))
        != LLMR_OK)
    {
        fprintf(stderr, "bench: %s\n", err);
        return 1;
    }

    printf("core: one request, parse and decide, median of %d runs; "
           "classifier of %d bits\n", BENCH_RUNS, BENCH_BITS);

    for (k = 0; k < sizeof(sizes) / sizeof(sizes[0]); k++) {
        body = make_body(sizes[k], LLMR_API_CHAT);
        len = strlen(body);
        n = (unsigned) (40000000 / len);

        printf("%zu-byte body\n", len);
        run("yajl parse, no callbacks work", body, len, n, LLMR_API_CHAT,
            NULL, NULL, 0, 1);
        run("llmr parse + features + rules", body, len, n, LLMR_API_CHAT,
            NULL, NULL, 0, 0);
        run("  + keyword lists (18 phrases)", body, len, n, LLMR_API_CHAT,
            &kw, NULL, 0, 0);
        run("  + keyword lists, 16 KB pieces", body, len, n, LLMR_API_CHAT,
            &kw, NULL, BENCH_PIECE, 0);
        run("llmr parse + learned score", body, len, n, LLMR_API_CHAT,
            NULL, &c, 0, 0);

        free(body);

        /* the same request in the other dialects, of about the same size */

        body = make_body(sizes[k], LLMR_API_MESSAGES);
        run("  as Messages: parse + rules", body, strlen(body), n,
            LLMR_API_MESSAGES, NULL, NULL, 0, 0);
        free(body);

        body = make_body(sizes[k], LLMR_API_RESPONSES);
        run("  as Responses: parse + rules", body, strlen(body), n,
            LLMR_API_RESPONSES, NULL, NULL, 0, 0);
        free(body);
    }

    free(file);
    free(w);

    for (i = 0; bench_keywords[i][0]; i++) {
        free(phrases[i].text);
    }

    return 0;
}
