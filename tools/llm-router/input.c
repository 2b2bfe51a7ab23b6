
/*
 * Copyright (C) the ngx_http_llm_router_module authors
 *
 * Lines of JSON.  A line is parsed once, with yajl callbacks that keep
 * the raw bytes of the fields the command reads: a request reaches the
 * core exactly as it was written, and an id is echoed as it was.
 */


#include <errno.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#include "llm_router.h"


typedef struct {
    lr_record_t          *rec;
    yajl_handle           yajl;
    const unsigned char  *p;
    size_t                len;
    unsigned              depth;
    llmr_str_t           *field;            /* the value being read */
    const char           *error;
} lr_parse_t;


static int lr_null(void *ctx);
static int lr_boolean(void *ctx, int value);
static int lr_number(void *ctx, const char *p, size_t len);
static int lr_string(void *ctx, const unsigned char *p, size_t len);
static int lr_start_map(void *ctx);
static int lr_map_key(void *ctx, const unsigned char *p, size_t len);
static int lr_start_array(void *ctx);
static int lr_end(void *ctx);
static int lr_value(lr_parse_t *ps);
static int lr_record_field(const lr_record_t *rec, unsigned field,
    int required, const llmr_str_t **f, char *err, size_t errlen);
static void lr_parse_error(lr_parse_t *ps, yajl_status status, char *err,
    size_t errlen);
static size_t lr_unescape(const unsigned char *p, size_t len,
    unsigned char *out);
static unsigned lr_hex4(const unsigned char *p);


static const yajl_callbacks  lr_callbacks = {
    lr_null,
    lr_boolean,
    NULL,
    NULL,
    lr_number,
    lr_string,
    lr_start_map,
    lr_map_key,
    lr_end,
    lr_start_array,
    lr_end
};

static const char  *lr_field_names[LR_FIELD_MAX] = {
    "id", "request", "label", "weight", "weak_correct", "strong_correct",
    "answer", "api", "rule", "model", "shadow_model", "shadow_answer",
    "shadow_status", "shadow_cost_usd", "cost_usd", "escalated"
};


int
lr_input_open(lr_input_t *in, const char *path)
{
    memset(in, 0, sizeof(lr_input_t));

    if (strcmp(path, "-") == 0) {
        in->name = "stdin";
        in->file = stdin;
        return LLMR_OK;
    }

    in->name = path;
    in->file = fopen(path, "r");

    if (in->file == NULL) {
        lr_error("%s: %s", path, strerror(errno));
        return LLMR_ERROR;
    }

    return LLMR_OK;
}


/* the next line that is not blank, without its end of line */

int
lr_input_next(lr_input_t *in)
{
    ssize_t  n;

    for ( ;; ) {
        n = getline(&in->line, &in->size, in->file);

        if (n == -1) {
            if (ferror(in->file)) {
                lr_error("%s: %s", in->name, strerror(errno));
                return LLMR_ERROR;
            }

            return LR_DONE;
        }

        in->number++;

        while (n > 0 && (in->line[n - 1] == '\n' || in->line[n - 1] == '\r')) {
            n--;
        }

        if (strspn(in->line, " \t") != (size_t) n) {
            in->len = (size_t) n;
            return LLMR_OK;
        }
    }
}


void
lr_input_close(lr_input_t *in)
{
    if (in->file && in->file != stdin) {
        fclose(in->file);
    }

    free(in->line);
    in->file = NULL;
    in->line = NULL;
}


void
lr_input_error(const lr_input_t *in, const char *fmt, ...)
{
    va_list  args;

    fprintf(stderr, "llm-router: %s:%lu: ", in->name, in->number);

    va_start(args, fmt);
    vfprintf(stderr, fmt, args);
    va_end(args);

    fputc('\n', stderr);
}


int
lr_record_parse(lr_record_t *rec, const unsigned char *p, size_t len,
    char *err, size_t errlen)
{
    yajl_status  status;
    lr_parse_t   ps;

    memset(rec, 0, sizeof(lr_record_t));
    memset(&ps, 0, sizeof(lr_parse_t));

    ps.rec = rec;
    ps.p = p;
    ps.len = len;

    ps.yajl = yajl_alloc(&lr_callbacks, NULL, &ps);

    if (ps.yajl == NULL) {
        snprintf(err, errlen, "out of memory");
        return LLMR_ERROR;
    }

    status = yajl_parse(ps.yajl, p, len);

    if (status == yajl_status_ok) {
        status = yajl_complete_parse(ps.yajl);
    }

    if (status != yajl_status_ok) {
        lr_parse_error(&ps, status, err, errlen);
    }

    yajl_free(ps.yajl);

    return (status == yajl_status_ok) ? LLMR_OK : LLMR_ERROR;
}


static void
lr_parse_error(lr_parse_t *ps, yajl_status status, char *err, size_t errlen)
{
    size_t          n;
    unsigned char  *text;

    if (status == yajl_status_client_canceled) {
        snprintf(err, errlen, "%s", ps->error);
        return;
    }

    text = yajl_get_error(ps->yajl, 0, NULL, 0);
    n = text ? strcspn((char *) text, "\n") : 0;

    snprintf(err, errlen, "not valid JSON (at byte %zu): %.*s",
             yajl_get_bytes_consumed(ps->yajl), (int) n,
             text ? (char *) text : "");

    if (text) {
        yajl_free_error(ps->yajl, text);
    }
}


static int
lr_null(void *ctx)
{
    return lr_value(ctx);
}


static int
lr_boolean(void *ctx, int value)
{
    (void) value;

    return lr_value(ctx);
}


static int
lr_number(void *ctx, const char *p, size_t len)
{
    (void) p;
    (void) len;

    return lr_value(ctx);
}


static int
lr_string(void *ctx, const unsigned char *p, size_t len)
{
    (void) p;
    (void) len;

    return lr_value(ctx);
}


static int
lr_start_map(void *ctx)
{
    lr_parse_t  *ps = ctx;

    ps->depth++;

    return 1;
}


static int
lr_start_array(void *ctx)
{
    lr_parse_t  *ps = ctx;

    if (ps->depth == 0) {
        ps->error = "not a JSON object";
        return 0;
    }

    ps->depth++;

    return 1;
}


static int
lr_end(void *ctx)
{
    lr_parse_t  *ps = ctx;

    if (--ps->depth == 0) {
        return 1;
    }

    return lr_value(ps);
}


/*
 * A key of the line's object: the value of a field starts after the
 * key, the colon and the white space around it.
 */

static int
lr_map_key(void *ctx, const unsigned char *p, size_t len)
{
    size_t       off;
    unsigned     i;
    lr_parse_t  *ps = ctx;

    if (ps->depth != 1) {
        return 1;
    }

    ps->field = NULL;

    for (i = 0; i < LR_FIELD_MAX; i++) {
        if (strlen(lr_field_names[i]) == len
            && memcmp(lr_field_names[i], p, len) == 0)
        {
            break;
        }
    }

    if (i == LR_FIELD_MAX) {
        return 1;
    }

    off = yajl_get_bytes_consumed(ps->yajl);

    while (off < ps->len
           && (ps->p[off] == ' ' || ps->p[off] == '\t' || ps->p[off] == '\r'
               || ps->p[off] == '\n' || ps->p[off] == ':'))
    {
        off++;
    }

    ps->field = &ps->rec->field[i];
    ps->field->data = ps->p + off;
    ps->field->len = 0;

    return 1;
}


/* a value is complete: the end of a field when at the top level */

static int
lr_value(lr_parse_t *ps)
{
    if (ps->depth == 0) {
        ps->error = "not a JSON object";
        return 0;
    }

    if (ps->depth == 1 && ps->field) {
        ps->field->len = ps->p + yajl_get_bytes_consumed(ps->yajl)
                         - ps->field->data;
        ps->field = NULL;
    }

    return 1;
}


/* the values of fields */

int
lr_record_object(const lr_record_t *rec, unsigned field, llmr_str_t *value,
    char *err, size_t errlen)
{
    const llmr_str_t  *f;

    f = &rec->field[field];

    if (f->data == NULL) {
        snprintf(err, errlen, "missing \"%s\"", lr_field_names[field]);
        return LLMR_ERROR;
    }

    if (f->data[0] != '{') {
        snprintf(err, errlen, "\"%s\" is not an object",
                 lr_field_names[field]);
        return LLMR_ERROR;
    }

    *value = *f;

    return LLMR_OK;
}


/* a field of the record, or why there is none */

static int
lr_record_field(const lr_record_t *rec, unsigned field, int required,
    const llmr_str_t **f, char *err, size_t errlen)
{
    *f = &rec->field[field];

    if ((*f)->data) {
        return LLMR_OK;
    }

    if (!required) {
        return LR_ABSENT;
    }

    snprintf(err, errlen, "missing \"%s\"", lr_field_names[field]);

    return LLMR_ERROR;
}


int
lr_record_number(const lr_record_t *rec, unsigned field, int required,
    double max, double *value, char *err, size_t errlen)
{
    int                rc;
    const llmr_str_t  *f;

    rc = lr_record_field(rec, field, required, &f, err, errlen);
    if (rc != LLMR_OK) {
        return rc;
    }

    /* the bytes are a JSON number, and end where a number cannot go on */

    if ((f->data[0] >= '0' && f->data[0] <= '9') || f->data[0] == '-') {
        *value = strtod((const char *) f->data, NULL);

        if (*value >= 0 && *value <= max) {
            return LLMR_OK;
        }
    }

    snprintf(err, errlen, "\"%s\" must be a number from 0 to %g",
             lr_field_names[field], max);

    return LLMR_ERROR;
}


int
lr_record_bool(const lr_record_t *rec, unsigned field, int required,
    unsigned *value, char *err, size_t errlen)
{
    int                rc;
    const llmr_str_t  *f;

    rc = lr_record_field(rec, field, required, &f, err, errlen);
    if (rc != LLMR_OK) {
        return rc;
    }

    if ((f->len == 4 && memcmp(f->data, "true", 4) == 0)
        || (f->len == 1 && f->data[0] == '1'))
    {
        *value = 1;
        return LLMR_OK;
    }

    if ((f->len == 5 && memcmp(f->data, "false", 5) == 0)
        || (f->len == 1 && f->data[0] == '0'))
    {
        *value = 0;
        return LLMR_OK;
    }

    snprintf(err, errlen, "\"%s\" must be true, false, 0 or 1",
             lr_field_names[field]);

    return LLMR_ERROR;
}


/*
 * The dialect of the line's request and answer: its "api", or --api
 * where it has none (or null, as the log has for a request not read).
 */

int
lr_record_dialect(const lr_record_t *rec, const llmr_dialect_t **d,
    char *err, size_t errlen)
{
    const llmr_str_t  *f;

    f = &rec->field[LR_FIELD_API];

    if (f->data == NULL || (f->len == 4 && memcmp(f->data, "null", 4) == 0)) {
        *d = lr_api;
        return LLMR_OK;
    }

    /* the raw string, quotes included */

    *d = (f->len > 2 && f->data[0] == '"')
         ? llmr_dialect_find(f->data + 1, f->len - 2) : NULL;

    if (*d == NULL) {
        snprintf(err, errlen, "\"api\" must be " LR_API_NAMES);
        return LLMR_ERROR;
    }

    return LLMR_OK;
}


/*
 * A string field, decoded, in a new NUL-terminated buffer that the
 * caller frees; LR_ABSENT when the line has none, or null.
 */

int
lr_record_string(const lr_record_t *rec, unsigned field,
    unsigned char **value, size_t *len, char *err, size_t errlen)
{
    const llmr_str_t  *f;

    f = &rec->field[field];

    if (f->data == NULL || (f->len == 4 && memcmp(f->data, "null", 4) == 0)) {
        return LR_ABSENT;
    }

    if (f->len < 2 || f->data[0] != '"') {
        snprintf(err, errlen, "\"%s\" must be a string",
                 lr_field_names[field]);
        return LLMR_ERROR;
    }

    /* the decoded string is never longer than its JSON */

    *value = malloc(f->len);

    if (*value == NULL) {
        snprintf(err, errlen, "out of memory");
        return LLMR_ERROR;
    }

    *len = lr_unescape(f->data + 1, f->len - 2, *value);
    (*value)[*len] = '\0';

    return LLMR_OK;
}


/*
 * The bytes between the quotes of a string that yajl has checked; a
 * lone surrogate becomes U+FFFD, as yajl makes it.
 */

static size_t
lr_unescape(const unsigned char *p, size_t len, unsigned char *out)
{
    uint32_t              c, low;
    unsigned char        *o;
    const unsigned char  *end;

    o = out;
    end = p + len;

    while (p < end) {
        if (*p != '\\' || p + 1 == end) {
            *o++ = *p++;
            continue;
        }

        p++;

        if (*p != 'u') {
            switch (*p) {

            case 'b':
                *o++ = '\b';
                break;

            case 'f':
                *o++ = '\f';
                break;

            case 'n':
                *o++ = '\n';
                break;

            case 'r':
                *o++ = '\r';
                break;

            case 't':
                *o++ = '\t';
                break;

            default: /* '"', '\\', '/' */
                *o++ = *p;
                break;
            }

            p++;
            continue;
        }

        if (end - p < 5) {
            break;
        }

        c = lr_hex4(p + 1);
        p += 5;

        if (c >= 0xd800 && c <= 0xdbff && end - p >= 6 && p[0] == '\\'
            && p[1] == 'u')
        {
            low = lr_hex4(p + 2);

            if (low >= 0xdc00 && low <= 0xdfff) {
                c = 0x10000 + ((c - 0xd800) << 10) + (low - 0xdc00);
                p += 6;
            }
        }

        if (c >= 0xd800 && c <= 0xdfff) {
            c = 0xfffd;
        }

        o = llmr_utf8_encode(o, c);
    }

    return (size_t) (o - out);
}


static unsigned
lr_hex4(const unsigned char *p)
{
    unsigned  i, c, v;

    v = 0;

    for (i = 0; i < 4; i++) {
        c = p[i];
        v = v * 16 + ((c >= '0' && c <= '9') ? c - '0'
                      : ((c | 0x20) >= 'a' && (c | 0x20) <= 'f')
                        ? (c | 0x20) - 'a' + 10 : 0);
    }

    return v;
}
