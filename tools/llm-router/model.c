
/*
 * Copyright (C) the ngx_http_llm_router_module authors
 *
 * Model files and scores, by the calls the nginx module makes: a score
 * printed here is the score a request gets inside nginx.
 */


#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "llm_router.h"


static int lr_file_write(const char *path, const unsigned char *p,
    size_t len);


int
lr_model_load(lr_model_t *m, const char *path)
{
    FILE    *file;
    char     err[LLMR_ERROR_MAX];
    size_t   len, max;

    memset(m, 0, sizeof(lr_model_t));

    file = fopen(path, "rb");

    if (file == NULL) {
        lr_error("%s: %s", path, strerror(errno));
        return LLMR_ERROR;
    }

    /* a byte more than the largest model: enough to tell it is too big */

    max = llmr_classifier_size(LLMR_CLASSIFIER_BITS_MAX) + 1;

    m->data = lr_file_read(file, max, &len);

    if (m->data == NULL) {
        lr_error("%s: %s", path, strerror(errno));
        fclose(file);
        return LLMR_ERROR;
    }

    fclose(file);

    if (len == max) {
        lr_error("%s: not a classifier file: more than %zu bytes", path,
                 max - 1);
        lr_model_free(m);
        return LLMR_ERROR;
    }

    /* malloc() aligns the buffer as the weights need */

    if (llmr_classifier_load(&m->classifier, m->data, len, err, sizeof(err))
        != LLMR_OK)
    {
        lr_error("%s: %s", path, err);
        lr_model_free(m);
        return LLMR_ERROR;
    }

    return LLMR_OK;
}


/* up to max bytes; errno tells why on NULL */

unsigned char *
lr_file_read(FILE *file, size_t max, size_t *len)
{
    size_t          size, n;
    unsigned char  *buf, *p;

    buf = NULL;
    size = 0;
    *len = 0;

    do {
        if (*len == size) {
            size = size ? 2 * size : 65536;
            size = size < max ? size : max;

            p = realloc(buf, size);
            if (p == NULL) {
                free(buf);
                return NULL;
            }

            buf = p;
        }

        n = fread(buf + *len, 1, size - *len, file);
        *len += n;

    } while (n > 0 && *len < max);

    if (ferror(file)) {
        free(buf);
        return NULL;
    }

    return buf;
}


void
lr_model_free(lr_model_t *m)
{
    free(m->data);
    m->data = NULL;
}


/* written aside and renamed: nginx never reads half a model */

int
lr_model_write(const char *path, unsigned bits, unsigned history,
    float bias, const float *weights)
{
    int             rc;
    char           *tmp;
    size_t          size;
    unsigned char  *buf;

    size = llmr_classifier_size(bits);

    buf = malloc(size);
    tmp = malloc(strlen(path) + sizeof(".tmp"));

    if (buf == NULL || tmp == NULL) {
        lr_error("out of memory");
        free(buf);
        free(tmp);
        return LLMR_ERROR;
    }

    llmr_classifier_write(buf, bits, history, bias, weights);
    sprintf(tmp, "%s.tmp", path);

    rc = lr_file_write(tmp, buf, size);

    if (rc == LLMR_OK && rename(tmp, path) != 0) {
        lr_error("%s: %s", path, strerror(errno));
        rc = LLMR_ERROR;
    }

    if (rc != LLMR_OK) {
        remove(tmp);
    }

    free(buf);
    free(tmp);

    return rc;
}


static int
lr_file_write(const char *path, const unsigned char *p, size_t len)
{
    FILE  *file;

    file = fopen(path, "wb");

    if (file == NULL) {
        lr_error("%s: %s", path, strerror(errno));
        return LLMR_ERROR;
    }

    if (fwrite(p, 1, len, file) != len) {
        lr_error("%s: %s", path, strerror(errno));
        fclose(file);
        return LLMR_ERROR;
    }

    if (fclose(file) != 0) {
        lr_error("%s: %s", path, strerror(errno));
        return LLMR_ERROR;
    }

    return LLMR_OK;
}


/*
 * A request through the core as nginx parses it in its dialect: the
 * core's error, or the score (-1 without a classifier).
 */

int
lr_request_check(const llmr_str_t *body, const llmr_dialect_t *d,
    unsigned history, const llmr_classifier_t *classifier, double *score,
    char *err, size_t errlen)
{
    int             rc;
    llmr_request_t  rq;

    if (llmr_request_init(&rq, d, NULL, history) != LLMR_OK) {
        snprintf(err, errlen, "out of memory");
        return LLMR_ERROR;
    }

    rq.classifier = classifier;

    rc = llmr_request_feed(&rq, body->data, body->len);

    if (rc == LLMR_OK) {
        rc = llmr_request_finish(&rq);
    }

    if (rc == LLMR_OK) {
        *score = rq.f.score;

    } else {
        snprintf(err, errlen, "%s", rq.error);
    }

    llmr_request_free(&rq);

    return rc;
}
