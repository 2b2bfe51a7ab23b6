
/*
 * Copyright (C) the ngx_http_llm_router_module authors
 *
 * libFuzzer target: a provider response goes through what the module
 * does with it.  The usage scanner reads it as a JSON body and as an SSE
 * stream, in buffers cut where a hash of the input says, each a heap
 * block of its own, and must find what it finds in one piece; the answer
 * checker judges it with every criterion on; the label of a triage
 * answer is read from it and from the content the checker gathered.
 */


#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "llmr.h"
#include "fuzz.h"


#define fuzz_assert(e)  do { if (!(e)) abort(); } while (0)


int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void fuzz_usage(const uint8_t *data, size_t size, uint32_t h,
    int sse);
static void fuzz_answer(const uint8_t *data, size_t size, uint32_t h,
    int sse);
static void fuzz_label(const unsigned char *p, size_t len);
static int fuzz_find(void *data, const unsigned char *p, size_t len);


int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    uint32_t  h;

    h = fuzz_hash(data, size);

    fuzz_usage(data, size, h, 0);
    fuzz_usage(data, size, h, 1);

    fuzz_answer(data, size, h, 0);
    fuzz_answer(data, size, h, 1);

    fuzz_label(data, size);

    return 0;
}


/* in up to three buffers, then in one: the same usage */

static void
fuzz_usage(const uint8_t *data, size_t size, uint32_t h, int sse)
{
    size_t          cut[4], i, n;
    unsigned char  *buf;
    llmr_usage_t    u, whole;

    cut[0] = 0;
    cut[1] = h % (size + 1);
    cut[2] = cut[1] + (h >> 8) % (size - cut[1] + 1);
    cut[3] = size;

    llmr_usage_init(&u, sse);

    for (i = 0; i < 3; i++) {
        n = cut[i + 1] - cut[i];

        buf = malloc(n ? n : 1);
        fuzz_assert(buf != NULL);
        memcpy(buf, data + cut[i], n);

        llmr_usage_feed(&u, buf, n);

        free(buf);
    }

    llmr_usage_init(&whole, sse);
    llmr_usage_feed(&whole, data, size);

    fuzz_assert(u.prompt_tokens == whole.prompt_tokens
                && u.completion_tokens == whole.completion_tokens
                && u.content_bytes == whole.content_bytes);

    fuzz_assert(u.prompt_tokens >= -1 && u.prompt_tokens <= 1000000000);
    fuzz_assert(u.completion_tokens >= -1
                && u.completion_tokens <= 1000000000);
    fuzz_assert((u.prompt_tokens < 0) == (u.completion_tokens < 0));
    fuzz_assert(u.content_bytes <= size);
    fuzz_assert(llmr_usage_content_tokens(&u) <= (size + 3) / 4);
}


/*
 * Every criterion on; the content buffer is as large as the response,
 * as the module has it, or a few bytes only, to cut the content.
 */

static void
fuzz_answer(const uint8_t *data, size_t size, uint32_t h, int sse)
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

    fuzz_assert(llmr_answer_init(&a, &c, content, room) == LLMR_OK);

    v = llmr_answer_check(&a, data, size, sse);

    fuzz_assert(v >= LLMR_VERDICT_OK && v <= LLMR_VERDICT_UNREADABLE);
    fuzz_assert(a.content_len <= room);
    fuzz_assert(memchr(a.finish, '\0', sizeof(a.finish)) != NULL);

    name = llmr_verdict_name(v);
    fuzz_assert(name != NULL && name[0] != '\0');

    /* the triage answer's label comes from the content */
    fuzz_label(a.content, a.content_len);

    free(content);
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
