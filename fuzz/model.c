
/*
 * Copyright (C) the ngx_http_llm_router_module authors
 *
 * libFuzzer target: classifier files, as llm_router_classifier and
 * llm-router load them (read whole into an aligned heap block).  A file
 * that loads must be written back byte for byte by
 * llmr_classifier_write(), and must score requests within [0, 1].  The
 * input also makes a model of its own, through llmr_classifier_write():
 * its checksum is right, so its weights, bias and history are what the
 * loader and the score see.
 */


#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "llmr.h"


#define fuzz_assert(e)  do { if (!(e)) abort(); } while (0)


int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static int fuzz_load(const unsigned char *p, size_t len);
static void fuzz_score(const llmr_classifier_t *c);
static void fuzz_make(const uint8_t *data, size_t size);


/* the dialect of each: LLMR_API_* */
static const unsigned  fuzz_apis[] = {
    LLMR_API_CHAT, LLMR_API_CHAT, LLMR_API_MESSAGES, LLMR_API_RESPONSES
};

static const char  *fuzz_bodies[] = {
    "{\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}]}",

    "{\"model\":\"auto\",\"messages\":[{\"role\":\"system\",\"content\":"
    "\"Be brief.\"},{\"role\":\"user\",\"content\":\"What is 2+2?\"},"
    "{\"role\":\"assistant\",\"content\":\"4\"},{\"role\":\"user\","
    "\"content\":\"Prove it, step by step:\\n```\\nx = 2 + 2;\\n```\"}],"
    "\"tools\":[{\"type\":\"function\"}],\"max_tokens\":100}",

    "{\"model\":\"auto\",\"system\":\"Be brief.\",\"max_tokens\":100,"
    "\"messages\":[{\"role\":\"user\",\"content\":[{\"type\":\"text\","
    "\"text\":\"Prove it, step by step\"}]},{\"role\":\"assistant\","
    "\"content\":\"4\"},{\"role\":\"user\",\"content\":\"Why?\"}]}",

    "{\"model\":\"auto\",\"instructions\":\"Be brief.\","
    "\"input\":[{\"role\":\"user\",\"content\":\"What is 2+2?\"},"
    "{\"type\":\"function_call\",\"name\":\"calc\",\"arguments\":\"{}\"},"
    "{\"type\":\"function_call_output\",\"output\":\"4\"}]}",

    NULL
};


int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    (void) fuzz_load(data, size);

    fuzz_make(data, size);

    return 0;
}


static int
fuzz_load(const unsigned char *p, size_t len)
{
    int                 rc;
    char                err[48];
    unsigned char      *file, *again;
    llmr_classifier_t   c;

    /* malloc() aligns the weights, as the module and llm-router do */

    file = malloc(len ? len : 1);
    fuzz_assert(file != NULL);
    memcpy(file, p, len);

    rc = llmr_classifier_load(&c, file, len, err, sizeof(err));

    if (rc != LLMR_OK) {
        fuzz_assert(rc == LLMR_ERROR && err[0] != '\0'
                    && memchr(err, '\0', sizeof(err)) != NULL);
        free(file);
        return rc;
    }

    fuzz_assert(c.bits >= LLMR_CLASSIFIER_BITS_MIN
                && c.bits <= LLMR_CLASSIFIER_BITS_MAX);
    fuzz_assert(c.mask == ((uint32_t) 1 << c.bits) - 1);
    fuzz_assert(c.history <= LLMR_HISTORY_MAX);
    fuzz_assert(len == llmr_classifier_size(c.bits));
    fuzz_assert((const unsigned char *) c.weights == file + 24);

    again = malloc(len);
    fuzz_assert(again != NULL);

    llmr_classifier_write(again, c.bits, c.history, c.bias, c.weights);
    fuzz_assert(memcmp(again, file, len) == 0);

    free(again);

    fuzz_score(&c);

    free(file);

    return rc;
}


/* the score is a probability, and its text a JSON number */

static void
fuzz_score(const llmr_classifier_t *c)
{
    int              rc;
    size_t           i, n;
    unsigned         k;
    llmr_request_t   rq;
    unsigned char    text[LLMR_SCORE_MAX];

    for (k = 0; fuzz_bodies[k]; k++) {
        fuzz_assert(llmr_request_init(&rq, &llmr_dialects[fuzz_apis[k]],
                                      NULL, c->history)
                    == LLMR_OK);
        rq.classifier = c;

        rc = llmr_request_feed(&rq, (const unsigned char *) fuzz_bodies[k],
                               strlen(fuzz_bodies[k]));
        if (rc == LLMR_OK) {
            rc = llmr_request_finish(&rq);
        }

        llmr_request_free(&rq);

        fuzz_assert(rc == LLMR_OK);
        fuzz_assert(rq.f.score >= 0 && rq.f.score <= 1);

        n = llmr_score_format(text, rq.f.score);
        fuzz_assert(n == 8 && (text[0] == '0' || text[0] == '1')
                    && text[1] == '.');

        for (i = 2; i < n; i++) {
            fuzz_assert(text[i] >= '0' && text[i] <= '9');
        }
    }
}


/*
 * The input as a model: bits from its first byte, history from the
 * second, the bias from the next four, the weights from the rest,
 * repeated; the file loads unless the history is too long.
 */

static void
fuzz_make(const uint8_t *data, size_t size)
{
    int             rc;
    size_t          i, n, len;
    float          *w;
    unsigned        bits, history;
    float           bias;
    unsigned char  *file;

    if (size < 7) {
        return;
    }

    bits = LLMR_CLASSIFIER_BITS_MIN + data[0] % 3;
    history = data[1] % (LLMR_HISTORY_MAX + 8);
    memcpy(&bias, data + 2, sizeof(float));

    n = (size_t) 1 << bits;

    w = malloc(n * sizeof(float));
    fuzz_assert(w != NULL);

    for (i = 0; i < n * sizeof(float); i++) {
        ((unsigned char *) w)[i] = data[6 + i % (size - 6)];
    }

    len = llmr_classifier_size(bits);

    file = malloc(len);
    fuzz_assert(file != NULL);

    llmr_classifier_write(file, bits, history, bias, w);

    rc = fuzz_load(file, len);

    if (history > LLMR_HISTORY_MAX) {
        fuzz_assert(rc == LLMR_ERROR);
    }

    free(file);
    free(w);
}
