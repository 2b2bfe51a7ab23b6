
/*
 * Copyright (C) the ngx_http_llm_router_module authors
 *
 * Triage by a small model: the request, in the model's own dialect, that
 * asks it to judge the current user message, with a bounded slice of the
 * conversation before it, and the label read from its answer.
 */


#include <stdio.h>
#include <string.h>

#include "llmr.h"


typedef struct {
    unsigned char         *p;               /* NULL: only count */
    size_t                 size;
} llmr_out_t;


typedef struct {
    const llmr_str_t      *field;
    unsigned               depth;
    unsigned               matched:1;       /* the key was the field */
    unsigned               found:1;
    int                    rc;              /* of the value's first word */
    unsigned char         *label;
    size_t                *label_len;
} llmr_field_t;


static size_t llmr_triage_write(const llmr_request_t *rq,
    const llmr_triage_t *t, unsigned char *out);
static unsigned llmr_triage_history(const llmr_capture_t *c, size_t budget,
    unsigned *slots, size_t *lens);
static void llmr_put(llmr_out_t *o, const void *data, size_t len);
static void llmr_put_escaped(llmr_out_t *o, const unsigned char *data,
    size_t len);
static size_t llmr_utf8_cut(const unsigned char *p, size_t len, size_t max);
static int llmr_first_word(const unsigned char *p, size_t len,
    unsigned char *label, size_t *label_len);
static int llmr_json_field(const unsigned char *p, size_t len,
    const llmr_str_t *field, unsigned char *label, size_t *label_len);

static int llmr_f_scalar(void *ctx);
static int llmr_f_boolean(void *ctx, int v);
static int llmr_f_number(void *ctx, const char *p, size_t len);
static int llmr_f_string(void *ctx, const unsigned char *p, size_t len);
static int llmr_f_start(void *ctx);
static int llmr_f_key(void *ctx, const unsigned char *p, size_t len);
static int llmr_f_end(void *ctx);


static const yajl_callbacks  llmr_field_callbacks = {
    llmr_f_scalar,
    llmr_f_boolean,
    NULL,
    NULL,
    llmr_f_number,
    llmr_f_string,
    llmr_f_start,
    llmr_f_key,
    llmr_f_end,
    llmr_f_start,
    llmr_f_end
};


#define llmr_put_literal(o, s)  llmr_put(o, s, sizeof(s) - 1)


static const char  *llmr_role_names[] = {
    "message", "user", "assistant", "system", "tool"
};


size_t
llmr_triage_body_size(const llmr_request_t *rq, const llmr_triage_t *t)
{
    return llmr_triage_write(rq, t, NULL);
}


unsigned char *
llmr_triage_body(const llmr_request_t *rq, const llmr_triage_t *t,
    unsigned char *out)
{
    return out + llmr_triage_write(rq, t, out);
}


/*
 * One writer for the size and the bytes, so that they cannot disagree.
 * The user message is the current one alone, or, with history:
 *
 *     Conversation so far:
 *     user: ...
 *     assistant: ...
 *
 *     Request:
 *     ...
 */

static size_t
llmr_triage_write(const llmr_request_t *rq, const llmr_triage_t *t,
    unsigned char *out)
{
    char                   num[24];
    size_t                 lens[LLMR_SLOTS_MAX];
    unsigned               i, n, slots[LLMR_SLOTS_MAX], max_tokens;
    llmr_out_t             o;
    const char            *role, *const *part;
    const llmr_slot_t     *s;
    const llmr_capture_t  *c;

    o.p = out;
    o.size = 0;

    c = rq->capture;
    part = t->dialect->triage;

    llmr_put(&o, part[0], strlen(part[0]));
    llmr_put_escaped(&o, t->model.data, t->model.len);
    llmr_put(&o, part[1], strlen(part[1]));
    llmr_put_escaped(&o, t->prompt.data, t->prompt.len);
    llmr_put(&o, part[2], strlen(part[2]));

    n = (c && c->current >= 0)
        ? llmr_triage_history(c, t->history, slots, lens) : 0;

    if (n) {
        llmr_put_literal(&o, "Conversation so far:\\n");

        for (i = 0; i < n; i++) {
            s = &c->slot[slots[i]];
            role = llmr_role_names[s->role];

            llmr_put(&o, role, strlen(role));
            llmr_put_literal(&o, ": ");
            llmr_put_escaped(&o, s->text, lens[i]);
            llmr_put_literal(&o, "\\n");
        }

        llmr_put_literal(&o, "\\nRequest:\\n");
    }

    if (c && c->current >= 0) {
        s = &c->slot[c->current];
        llmr_put_escaped(&o, s->text, s->len);
    }

    max_tokens = (t->max_tokens > t->dialect->triage_min_tokens)
                 ? t->max_tokens : t->dialect->triage_min_tokens;

    llmr_put(&o, part[3], strlen(part[3]));
    llmr_put(&o, num, snprintf(num, sizeof(num), "%u", max_tokens));
    llmr_put(&o, part[4], strlen(part[4]));

    return o.size;
}


/*
 * The messages before the current one that the ring still holds, newest
 * first while the budget lasts, then put in the order of the
 * conversation.
 */

static unsigned
llmr_triage_history(const llmr_capture_t *c, size_t budget, unsigned *slots,
    size_t *lens)
{
    size_t              len;
    uint32_t            before;
    unsigned            i, k, n, best, t;
    const llmr_slot_t  *s;

    n = 0;
    before = c->slot[c->current].message;

    while (budget) {
        best = c->nslots;

        for (i = 0; i < c->nslots; i++) {
            s = &c->slot[i];

            if ((int) i == c->current || s->len == 0
                || s->message >= before)
            {
                continue;
            }

            if (best == c->nslots || s->message > c->slot[best].message) {
                best = i;
            }
        }

        if (best == c->nslots) {
            break;
        }

        len = llmr_utf8_cut(c->slot[best].text, c->slot[best].len, budget);

        /* the last message may be cut; older ones come whole or not */

        if (len == 0 || (n && len < c->slot[best].len)) {
            break;
        }

        slots[n] = best;
        lens[n] = len;
        n++;

        budget -= len;
        before = c->slot[best].message;
    }

    /* newest first: reversed into the order of the conversation */

    for (i = 0, k = n; i < k / 2; i++) {
        t = slots[i];
        slots[i] = slots[k - 1 - i];
        slots[k - 1 - i] = t;

        len = lens[i];
        lens[i] = lens[k - 1 - i];
        lens[k - 1 - i] = len;
    }

    return n;
}


static void
llmr_put(llmr_out_t *o, const void *data, size_t len)
{
    if (o->p) {
        memcpy(o->p + o->size, data, len);
    }

    o->size += len;
}


static void
llmr_put_escaped(llmr_out_t *o, const unsigned char *data, size_t len)
{
    unsigned char  *end;

    if (o->p == NULL) {
        o->size += llmr_json_escape_size(data, len);
        return;
    }

    end = llmr_json_escape(o->p + o->size, data, len);
    o->size = end - o->p;
}


/* at most max bytes of the text, not splitting a UTF-8 sequence */

static size_t
llmr_utf8_cut(const unsigned char *p, size_t len, size_t max)
{
    if (len <= max) {
        return len;
    }

    len = max;

    while (len && (llmr_ctype[p[len]] & LLMR_CT_CONT)) {
        len--;
    }

    return len;
}


/*
 * The label of a triage answer: its first word, in lower case, or the
 * first word of a string field of a JSON object in it (a model may wrap
 * the object in a code fence or in words).
 */

int
llmr_triage_label(const unsigned char *content, size_t len,
    const llmr_str_t *field, unsigned char *label, size_t *label_len)
{
    if (field && field->len) {
        return llmr_json_field(content, len, field, label, label_len);
    }

    return llmr_first_word(content, len, label, label_len);
}


static int
llmr_first_word(const unsigned char *p, size_t len, unsigned char *label,
    size_t *label_len)
{
    size_t  i, n;

    for (i = 0; i < len && !llmr_is_word(p[i]); i++) {
        /* void */
    }

    for (n = 0; i < len && (llmr_is_word(p[i]) || p[i] == '-'); i++, n++) {
        if (n == LLMR_LABEL_MAX) {
            return LLMR_ERROR;
        }

        label[n] = llmr_lower(p[i]);
    }

    if (n == 0) {
        return LLMR_ERROR;
    }

    *label_len = n;

    return LLMR_OK;
}


int
llmr_label_valid(const unsigned char *p, size_t len)
{
    size_t  i;

    if (len == 0 || len > LLMR_LABEL_MAX) {
        return 0;
    }

    for (i = 0; i < len; i++) {
        if (!(llmr_ctype[p[i]] & (LLMR_CT_ALPHA | LLMR_CT_DIGIT))
            && p[i] != '_' && p[i] != '-')
        {
            return 0;
        }
    }

    return 1;
}


static int
llmr_json_field(const unsigned char *p, size_t len, const llmr_str_t *field,
    unsigned char *label, size_t *label_len)
{
    yajl_handle           y;
    llmr_field_t          f;
    const unsigned char  *start, *end;

    start = memchr(p, '{', len);
    end = p + len;

    while (end > p && end[-1] != '}') {
        end--;
    }

    if (start == NULL || end <= start) {
        return LLMR_ERROR;
    }

    memset(&f, 0, sizeof(llmr_field_t));
    f.field = field;
    f.label = label;
    f.label_len = label_len;

    y = yajl_alloc(&llmr_field_callbacks, NULL, &f);
    if (y == NULL) {
        return LLMR_ERROR;
    }

    /* the parse stops at the field: what follows may be anything */

    (void) yajl_parse(y, start, end - start);

    yajl_free(y);

    return f.found ? f.rc : LLMR_ERROR;
}


static int
llmr_f_scalar(void *ctx)
{
    llmr_field_t  *f = ctx;

    f->matched = 0;

    return 1;
}


static int
llmr_f_boolean(void *ctx, int v)
{
    (void) v;

    return llmr_f_scalar(ctx);
}


static int
llmr_f_number(void *ctx, const char *p, size_t len)
{
    (void) p;
    (void) len;

    return llmr_f_scalar(ctx);
}


static int
llmr_f_string(void *ctx, const unsigned char *p, size_t len)
{
    llmr_field_t  *f = ctx;

    if (f->matched && f->depth == 1) {
        /* an escaped string is in yajl's buffer only during the call */
        f->found = 1;
        f->rc = llmr_first_word(p, len, f->label, f->label_len);
        return 0;
    }

    f->matched = 0;

    return 1;
}


static int
llmr_f_start(void *ctx)
{
    llmr_field_t  *f = ctx;

    f->matched = 0;
    f->depth++;

    return f->depth <= LLMR_DEPTH_MAX;
}


static int
llmr_f_key(void *ctx, const unsigned char *p, size_t len)
{
    llmr_field_t  *f = ctx;

    f->matched = f->depth == 1 && len == f->field->len
                 && memcmp(p, f->field->data, len) == 0;

    return 1;
}


static int
llmr_f_end(void *ctx)
{
    llmr_field_t  *f = ctx;

    f->depth--;

    return 1;
}
