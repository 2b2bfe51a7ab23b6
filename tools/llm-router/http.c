
/*
 * Copyright (C) the ngx_http_llm_router_module authors
 *
 * One POST at a time on an easy handle of a libcurl multi handle, as
 * replay and judge make them: the start of each answer is kept, and its
 * whole length tells when it was longer.
 */


#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "llm_router.h"


static size_t lr_http_write(char *p, size_t size, size_t n, void *data);
static int lr_http_headers(struct curl_slist **headers,
    const lr_list_t *given, const llmr_dialect_t *d);
static int lr_http_given(const lr_list_t *given, const unsigned char *name,
    size_t len);


/*
 * The --header options of a command, checked and made its headers; the
 * list of them is freed.  Returns 0 or an exit status.
 */

int
lr_http_options(struct curl_slist **headers, lr_list_t *given,
    const llmr_dialect_t *d, const char *command)
{
    int     rc;
    size_t  i;

    for (i = 0; i < given->n; i++) {
        if (strchr(given->items[i], ':') == NULL) {
            lr_error("%s: --header \"%s\": 'Name: value' expected",
                     command, given->items[i]);
            free(given->items);
            return LR_EXIT_USAGE;
        }
    }

    rc = lr_http_headers(headers, given, d);

    free(given->items);

    if (rc != LLMR_OK) {
        lr_error("out of memory");
        return LR_EXIT_FAILURE;
    }

    return 0;
}


int
lr_http_header(struct curl_slist **headers, const char *header)
{
    struct curl_slist  *list;

    list = curl_slist_append(*headers, header);

    if (list == NULL) {
        return LLMR_ERROR;
    }

    *headers = list;

    return LLMR_OK;
}


/*
 * The headers given, then those of the body where not given: JSON, and
 * the header an API requires (the version Anthropic asks for), if d is
 * given; "Expect:" keeps curl from waiting for a 100 Continue before a
 * large body, as clients do not.
 */

static int
lr_http_headers(struct curl_slist **headers, const lr_list_t *given,
    const llmr_dialect_t *d)
{
    size_t  i;
    char    header[64];

    for (i = 0; i < given->n; i++) {
        if (lr_http_header(headers, given->items[i]) != LLMR_OK) {
            return LLMR_ERROR;
        }
    }

    if (lr_http_header(headers, "Expect:") != LLMR_OK
        || (!lr_http_given(given, (const unsigned char *) "Content-Type", 12)
            && lr_http_header(headers, "Content-Type: application/json")
               != LLMR_OK))
    {
        return LLMR_ERROR;
    }

    if (d == NULL || d->header.len == 0
        || lr_http_given(given, d->header.data, d->header.len))
    {
        return LLMR_OK;
    }

    snprintf(header, sizeof(header), "%.*s: %.*s", (int) d->header.len,
             d->header.data, (int) d->header_value.len, d->header_value.data);

    return lr_http_header(headers, header);
}


static int
lr_http_given(const lr_list_t *given, const unsigned char *name, size_t len)
{
    size_t  i;

    for (i = 0; i < given->n; i++) {
        if (strcspn(given->items[i], ":") == len
            && strncasecmp(given->items[i], (const char *) name, len) == 0)
        {
            return 1;
        }
    }

    return 0;
}


/* owner is what CURLINFO_PRIVATE gives back when the transfer is done */

int
lr_http_init(lr_http_t *h, struct curl_slist *headers, size_t max,
    long timeout, void *owner)
{
    h->easy = curl_easy_init();
    h->answer = malloc(max + 1);
    h->max = max;

    if (h->easy == NULL || h->answer == NULL) {
        return LLMR_ERROR;
    }

    if (curl_easy_setopt(h->easy, CURLOPT_HTTPHEADER, headers) != CURLE_OK
        || curl_easy_setopt(h->easy, CURLOPT_WRITEFUNCTION, lr_http_write)
           != CURLE_OK
        || curl_easy_setopt(h->easy, CURLOPT_WRITEDATA, h) != CURLE_OK
        || curl_easy_setopt(h->easy, CURLOPT_PRIVATE, owner) != CURLE_OK
        || curl_easy_setopt(h->easy, CURLOPT_ERRORBUFFER, h->error)
           != CURLE_OK
        || curl_easy_setopt(h->easy, CURLOPT_TIMEOUT, timeout) != CURLE_OK
        || curl_easy_setopt(h->easy, CURLOPT_NOSIGNAL, 1L) != CURLE_OK)
    {
        return LLMR_ERROR;
    }

    return LLMR_OK;
}


int
lr_http_post(CURLM *multi, lr_http_t *h, const char *url, const void *body,
    size_t len)
{
    h->len = 0;
    h->error[0] = '\0';

    if (curl_easy_setopt(h->easy, CURLOPT_URL, url) != CURLE_OK
        || curl_easy_setopt(h->easy, CURLOPT_POSTFIELDSIZE_LARGE,
                            (curl_off_t) len)
           != CURLE_OK
        || curl_easy_setopt(h->easy, CURLOPT_POSTFIELDS, body) != CURLE_OK
        || curl_multi_add_handle(multi, h->easy) != CURLM_OK)
    {
        return LLMR_ERROR;
    }

    return LLMR_OK;
}


void
lr_http_free(CURLM *multi, lr_http_t *h, int busy)
{
    if (h->easy) {
        if (busy) {
            curl_multi_remove_handle(multi, h->easy);
        }

        curl_easy_cleanup(h->easy);
    }

    free(h->answer);
}


static size_t
lr_http_write(char *p, size_t size, size_t n, void *data)
{
    lr_http_t  *h = data;

    n *= size;

    if (h->len + n <= h->max) {
        memcpy(h->answer + h->len, p, n);
    }

    h->len += n;

    return n;
}
