/*
 * Copyright (C) the ngx_http_llm_router_module authors
 *
 * libFuzzer target: a provider response goes through what the module
 * does with it, in the dialect of its first byte modulo 3 ('{' or "id:"
 * chat, '\n', ':' or "data:" Messages, ' ' or "event:" Responses).  The
 * usage scanner reads it as a JSON body and as an SSE stream, in buffers
 * cut where a hash of the input says (or of a few bytes each), each a
 * heap block of its own, and must find what it finds in one piece; the
 * tokens it gives are consistent and priced exactly; the answer checker
 * judges it with every criterion on; each of its lines goes through
 * llmr_usage_unasked(), as the response filter of a chat stream does;
 * the label of a triage answer is read from it and from the content the
 * checker gathered.  The text the scanner keeps is the same in pieces
 * and whole, and, of an answer that is JSON, a JSON string's body.  The
 * input is read as Redis's replies too: each within the input, and a
 * prefix of a whole reply never taken for another.
 */


#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "llmr.h"
#include "fuzz.h"


#define FUZZ_TOKENS_MAX  1000000000
#define FUZZ_PRICE_MAX   1000000000

#define fuzz_assert(e)  do { if (!(e)) abort(); } while (0)


int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void fuzz_usage(const llmr_dialect_t *d, const uint8_t *data,
    size_t size, uint32_t h, int sse);
static void fuzz_tokens(const llmr_dialect_t *d, const llmr_usage_t *u,
    uint32_t h);
static void fuzz_text(const llmr_usage_t *u, const llmr_usage_t *whole,
    const uint8_t *data, size_t size, int sse);
static void fuzz_answer(const llmr_dialect_t *d, const uint8_t *data,
    size_t size, uint32_t h, int sse);
static void fuzz_unasked(const uint8_t *data, size_t size, uint32_t h);
static void fuzz_label(const unsigned char *p, size_t len);
static void fuzz_resp(const uint8_t *data, size_t size);
static int fuzz_find(void *data, const unsigned char *p, size_t len);


int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    uint32_t               h;
    const llmr_dialect_t  *d;

    h = fuzz_hash(data, size);
    d = &llmr_dialects[size ? data[0] % LLMR_APIS : 0];

    fuzz_usage(d, data, size, h, 0);
    fuzz_usage(d, data, size, h, 1);

    fuzz_answer(d, data, size, h, 0);
    fuzz_answer(d, data, size, h, 1);

    fuzz_unasked(data, size, h);

    fuzz_label(data, size);

    fuzz_resp(data, size);

    return 0;
}


static void
fuzz_resp(const uint8_t *data, size_t size)
{
    int             rc;
    size_t          off, used, cut;
    unsigned char  *buf;
    llmr_resp_t     reply, part;

    for (off = 0; off < size; off += used) {
        buf = malloc(size - off);
        fuzz_assert(buf != NULL);
        memcpy(buf, data + off, size - off);

        used = 0;
        rc = llmr_resp_parse(buf, size - off, &reply, &used);

        if (rc != LLMR_OK) {
            fuzz_assert(rc == LLMR_AGAIN || rc == LLMR_ERROR);
            free(buf);
            break;
        }

        fuzz_assert(used > 0 && used <= size - off);
        fuzz_assert(reply.nitems <= LLMR_RESP_ITEMS);
        fuzz_assert(reply.text.len == 0
                    || (reply.text.data >= buf
                        && reply.text.data + reply.text.len <= buf + used));

        /* what comes before its end is not whole yet */

        cut = used - 1;
        fuzz_assert(llmr_resp_parse(buf, cut, &part, &cut) == LLMR_AGAIN);

        free(buf);
    }
}


/*
 * In up to three buffers, or one input in eight in buffers of one to
 * eight bytes, then in one: the same usage.
 */

static void
fuzz_usage(const llmr_dialect_t *d, const uint8_t *data, size_t size,
    uint32_t h, int sse)
{
    size_t          cut[4], i, n, off, piece, room;
    unsigned        k;
    unsigned char  *buf, *text, *whole_text;
    llmr_usage_t    u, whole;

    /* the text kept: as much as the response, or a few bytes */

    room = (h & 0x800) ? size : (h >> 12) % 32;

    text = malloc(room ? room : 1);
    whole_text = malloc(room ? room : 1);
    fuzz_assert(text != NULL && whole_text != NULL);

    llmr_usage_init(&u, d, sse);
    llmr_usage_keep_text(&u, text, room);

    if (((h >> 24) & 7) == 0) {
        piece = 1 + (h >> 28) % 8;

        for (off = 0; off < size; off += n) {
            n = (size - off < piece) ? size - off : piece;

            buf = malloc(n);
            fuzz_assert(buf != NULL);
            memcpy(buf, data + off, n);

            llmr_usage_feed(&u, buf, n);

            free(buf);
        }

    } else {
        cut[0] = 0;
        cut[1] = h % (size + 1);
        cut[2] = cut[1] + (h >> 8) % (size - cut[1] + 1);
        cut[3] = size;

        for (i = 0; i < 3; i++) {
            n = cut[i + 1] - cut[i];

            buf = malloc(n ? n : 1);
            fuzz_assert(buf != NULL);
            memcpy(buf, data + cut[i], n);

            llmr_usage_feed(&u, buf, n);

            free(buf);
        }
    }

    llmr_usage_init(&whole, d, sse);
    llmr_usage_keep_text(&whole, whole_text, room);
    llmr_usage_feed(&whole, data, size);

    fuzz_assert(u.dialect == d);
    fuzz_assert(u.content_bytes == whole.content_bytes);

    for (k = 0; k < LLMR_USAGE_FIELDS; k++) {
        fuzz_assert(u.tokens[k] == whole.tokens[k]);
        fuzz_assert(u.tokens[k] >= -1 && u.tokens[k] <= FUZZ_TOKENS_MAX);
    }

    fuzz_assert(u.content_bytes <= size);
    fuzz_assert(llmr_usage_content_tokens(&u) <= (size + 3) / 4);

    fuzz_tokens(d, &u, h);
    fuzz_text(&u, &whole, data, size, sse);

    free(text);
    free(whole_text);
}


static void
fuzz_text(const llmr_usage_t *u, const llmr_usage_t *whole,
    const uint8_t *data, size_t size, int sse)
{
    size_t          n;
    unsigned char  *quoted;

    n = llmr_usage_text(u);

    fuzz_assert(n <= u->text_size && n <= u->text_len);
    fuzz_assert(n == llmr_usage_text(whole));
    fuzz_assert(memcmp(u->text, whole->text, n) == 0);

    if (sse || !fuzz_json_valid(data, size)) {
        return;
    }

    quoted = malloc(n + 2);
    fuzz_assert(quoted != NULL);

    quoted[0] = '"';
    memcpy(quoted + 1, u->text, n);
    quoted[n + 1] = '"';

    fuzz_assert(fuzz_json_valid(quoted, n + 2));

    free(quoted);
}


/*
 * The tokens of a usage: known when the prompt and the completion are;
 * parts never more than their whole; every prompt token in the prompt
 * whatever the dialect; and priced exactly, with prices from the hash:
 * counts and prices are at most a billion, so nothing overflows here.
 */

static void
fuzz_tokens(const llmr_dialect_t *d, const llmr_usage_t *u, uint32_t h)
{
    int             rc, cached_set, write_set;
    uint32_t        x;
    uint64_t        v[LLMR_USAGE_FIELDS], fresh, cost, price[4];
    unsigned        k;
    llmr_model_t    m;
    llmr_tokens_t   t;

    memset(&t, 0xa5, sizeof(llmr_tokens_t));

    rc = llmr_usage_tokens(u, &t);

    fuzz_assert(rc == (u->tokens[LLMR_USAGE_PROMPT] >= 0
                       && u->tokens[LLMR_USAGE_COMPLETION] >= 0));

    if (!rc) {
        return;
    }

    for (k = 0; k < LLMR_USAGE_FIELDS; k++) {
        v[k] = (u->tokens[k] > 0) ? (uint64_t) u->tokens[k] : 0;
    }

    fuzz_assert(t.cached + t.cache_write <= t.prompt);
    fuzz_assert(t.reasoning <= t.completion);
    fuzz_assert(t.completion == v[LLMR_USAGE_COMPLETION]);

    if (d->cache_apart) {
        /* input_tokens counts neither cache reads nor cache writes */
        fuzz_assert(t.prompt == v[LLMR_USAGE_PROMPT] + v[LLMR_USAGE_CACHED]
                                + v[LLMR_USAGE_CACHE_WRITE]);
        fuzz_assert(t.cached == v[LLMR_USAGE_CACHED]
                    && t.cache_write == v[LLMR_USAGE_CACHE_WRITE]);

    } else {
        fuzz_assert(t.prompt == v[LLMR_USAGE_PROMPT]);
        fuzz_assert(t.cached <= v[LLMR_USAGE_CACHED]
                    && t.cache_write <= v[LLMR_USAGE_CACHE_WRITE]);
    }

    /* prices from an LCG seeded by the hash */

    x = h;

    for (k = 0; k < 4; k++) {
        x = x * 1103515245u + 12345u;
        price[k] = ((uint64_t) x * 2654435761u) % (FUZZ_PRICE_MAX + 1);
    }

    memset(&m, 0, sizeof(llmr_model_t));

    cached_set = (h >> 14) & 1;
    write_set = (h >> 15) & 1;

    m.price_in = price[0];
    m.price_out = price[1];
    m.price_cached = cached_set ? price[2] : 0;
    m.price_cache_write = write_set ? price[3] : 0;

    llmr_model_prices(&m, d, cached_set, write_set);

    fuzz_assert(m.price_in == price[0] && m.price_out == price[1]);
    fuzz_assert(m.price_cached == (cached_set ? price[2]
                                   : price[0] * d->cached_permille / 1000));
    fuzz_assert(m.price_cache_write
                == (write_set ? price[3]
                    : price[0] * d->cache_write_permille / 1000));

    fresh = t.prompt - t.cached - t.cache_write;

    cost = llmr_cost(&m, &t);

    fuzz_assert(cost == fresh * m.price_in + t.cached * m.price_cached
                        + t.cache_write * m.price_cache_write
                        + t.completion * m.price_out);

    /* at one input price, the cache changes nothing */

    m.price_cached = m.price_in;
    m.price_cache_write = m.price_in;

    fuzz_assert(llmr_cost(&m, &t)
                == t.prompt * m.price_in + t.completion * m.price_out);
}


/*
 * Every criterion on; the content buffer is as large as the response,
 * as the module has it, or a few bytes only, to cut the content.
 */

static void
fuzz_answer(const llmr_dialect_t *d, const uint8_t *data, size_t size,
    uint32_t h, int sse)
{
    size_t            room;
    const char       *name;
    unsigned char    *content;
    llmr_answer_t     a;
    llmr_verdict_e    v;
    llmr_criteria_t   c;

    memset(&c, 0, sizeof(llmr_criteria_t));

    c.finish = 1;
    c.empty = (h >> 1) & 1;
    c.json = (h >> 2) & 1;
    c.tool_args = 1;
    c.min_length = (h >> 3) % 24;
    c.pattern = (h & 0x100) ? fuzz_find : NULL;
    c.pattern_data = "I cannot";
    c.require = (h & 0x200) ? fuzz_find : NULL;
    c.require_data = "ok";

    room = (h & 0x400) ? size : (h >> 11) % 16;

    content = malloc(room ? room : 1);
    fuzz_assert(content != NULL);

    fuzz_assert(llmr_answer_init(&a, d, &c, content, room) == LLMR_OK);

    v = llmr_answer_check(&a, data, size, sse);

    fuzz_assert(v >= LLMR_VERDICT_OK && v <= LLMR_VERDICT_UNREADABLE);
    fuzz_assert(a.content_len <= room);
    fuzz_assert(memchr(a.finish, '\0', sizeof(a.finish)) != NULL);
    fuzz_assert(a.dialect == d);

    name = llmr_verdict_name(v);
    fuzz_assert(name != NULL && name[0] != '\0');

    /* the triage answer's label comes from the content */
    fuzz_label(a.content, a.content_len);

    free(content);
}


/*
 * Each line of the input, with its '\n', as the response filter of a
 * chat stream whose client did not ask for usage passes it: whole, and
 * its end only, from where the hash says, as a line too long to hold is
 * passed.  Never longer; a line without "usage" as it was; a dropped
 * line is nothing, and only a whole line is dropped; a whole data line
 * that was JSON stays a data line of JSON.
 */

static void
fuzz_unasked(const uint8_t *data, size_t size, uint32_t h)
{
    int                   drop, whole;
    size_t                len, n, from;
    unsigned char        *line, *out;
    const unsigned char  *p, *end, *eol;

    end = data + size;

    for (p = data; p < end; p = eol) {
        eol = memchr(p, '\n', end - p);
        eol = eol ? eol + 1 : end;

        for (whole = 1; whole >= 0; whole--) {
            from = whole ? 0 : h % (eol - p + 1);
            len = eol - p - from;

            /* blocks of their own: a read or a write past is caught */

            line = malloc(len ? len : 1);
            out = malloc(len ? len : 1);
            fuzz_assert(line != NULL && out != NULL);
            memcpy(line, p + from, len);

            drop = -1;
            n = llmr_usage_unasked(line, len, whole, out, &drop);

            fuzz_assert(drop == 0 || (drop == 1 && whole));
            fuzz_assert(n <= len);
            fuzz_assert(!drop || n == 0);

            if (!fuzz_find("usage", line, len)) {
                fuzz_assert(!drop && n == len
                            && memcmp(out, line, len) == 0);
            }

            if (whole && !drop && len >= 5 && memcmp(line, "data:", 5) == 0
                && fuzz_json_valid(line + 5, len - 5))
            {
                fuzz_assert(n >= 5 && memcmp(out, "data:", 5) == 0);
                fuzz_assert(fuzz_json_valid(out + 5, n - 5));
            }

            free(line);
            free(out);
        }
    }
}


static void
fuzz_label(const unsigned char *p, size_t len)
{
    size_t          n;
    unsigned        i;
    llmr_str_t      field[3];
    unsigned char  *label;

    field[0].data = (const unsigned char *) "";
    field[0].len = 0;
    field[1].data = (const unsigned char *) "label";
    field[1].len = 5;
    field[2].data = (const unsigned char *) "complexity";
    field[2].len = 10;

    label = malloc(LLMR_LABEL_MAX);
    fuzz_assert(label != NULL);

    for (i = 0; i < 4; i++) {
        n = 0;

        if (llmr_triage_label(p, len, i < 3 ? &field[i] : NULL, label, &n)
            == LLMR_OK)
        {
            fuzz_assert(n > 0 && n <= LLMR_LABEL_MAX);
        }
    }

    free(label);
}


/* a pattern: the text is in the content */

static int
fuzz_find(void *data, const unsigned char *p, size_t len)
{
    size_t       i, n;
    const char  *s = data;

    n = strlen(s);

    for (i = 0; i + n <= len; i++) {
        if (memcmp(p + i, s, n) == 0) {
            return 1;
        }
    }

    return 0;
}


