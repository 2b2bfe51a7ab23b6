
/*
 * Copyright (C) the ngx_http_llm_router_module authors
 *
 * Text features of a message: a token estimate, code detection and
 * keyword lists.  Each works on one decoded JSON string, in one pass,
 * without allocating.
 */


#include <stdlib.h>
#include <string.h>

#include "llmr.h"


#define llmr_lower(c)  (((c) >= 'A' && (c) <= 'Z') ? ((c) | 0x20) : (c))
#define llmr_is_alpha(c)                                                      \
    (((c) >= 'a' && (c) <= 'z') || ((c) >= 'A' && (c) <= 'Z'))
#define llmr_is_digit(c)  ((c) >= '0' && (c) <= '9')
#define llmr_is_space(c)                                                      \
    ((c) == ' ' || (c) == '\t' || (c) == '\n' || (c) == '\r')

/* UTF-8 bytes count as letters so that words in any script stay whole */
#define llmr_is_word(c)                                                       \
    (llmr_is_alpha(c) || llmr_is_digit(c) || (c) == '_' || (c) >= 0x80)


static int llmr_phrase_cmp(const void *one, const void *two);
static size_t llmr_phrase_match(const llmr_phrase_t *ph,
    const unsigned char *p, const unsigned char *end);
static int llmr_code_line(const unsigned char *p, const unsigned char *end);


/*
 * A tokenizer-free estimate close to BPE counts for English and code:
 * short words are one token, longer ones one per four letters, digits
 * go in groups of three, punctuation and each non-ASCII character are
 * a token, spaces join the following word.
 */

uint32_t
llmr_estimate_tokens(const unsigned char *p, size_t len)
{
    size_t                run;
    uint32_t              tokens;
    const unsigned char  *end, *start;

    tokens = 0;
    end = p + len;

    while (p < end) {

        if (llmr_is_alpha(*p)) {
            start = p;
            while (p < end && llmr_is_alpha(*p)) {
                p++;
            }

            run = p - start;
            tokens += (run <= 4) ? 1 : 1 + (uint32_t) ((run - 2) / 4);
            continue;
        }

        if (llmr_is_digit(*p)) {
            start = p;
            while (p < end && llmr_is_digit(*p)) {
                p++;
            }

            tokens += (uint32_t) ((p - start + 2) / 3);
            continue;
        }

        if (*p == '\n') {
            while (p < end && (*p == '\n' || *p == '\r')) {
                p++;
            }

            tokens++;
            continue;
        }

        if (*p == ' ' || *p == '\t' || *p == '\r' || (*p & 0xc0) == 0x80) {
            p++;
            continue;
        }

        tokens++;
        p++;
    }

    return tokens;
}


/*
 * Code is a ``` fence, or at least two lines that look like code: lines
 * ending in ";", "{" or "}", or starting with a keyword of a common
 * language.  Two lines keep single prose sentences out.
 */

int
llmr_looks_like_code(const unsigned char *p, size_t len)
{
    unsigned              lines;
    const unsigned char  *end, *eol, *q;

    end = p + len;
    lines = 0;

    for (q = p; q + 2 < end; q++) {
        if (q[0] == '`' && q[1] == '`' && q[2] == '`') {
            return 1;
        }
    }

    while (p < end) {
        eol = memchr(p, '\n', end - p);
        if (eol == NULL) {
            eol = end;
        }

        if (llmr_code_line(p, eol) && ++lines == 2) {
            return 1;
        }

        p = eol + 1;
    }

    return 0;
}


static int
llmr_code_line(const unsigned char *p, const unsigned char *end)
{
    size_t       n;
    unsigned     i;
    const char  *prefix;

    static const char  *prefixes[] = {
        "def ", "class ", "import ", "from ", "#include", "#define",
        "function ", "return ", "const ", "let ", "var ", "public ",
        "private ", "static ", "if (", "for (", "while (", "fn ", "func ",
        "package ", "#!/", "print(", "console.", "} else", "SELECT ",
        "select ", "INSERT ", "CREATE ", "<?php", "</", "@@ ",
        NULL
    };

    while (p < end && llmr_is_space(*p)) {
        p++;
    }

    while (end > p && llmr_is_space(end[-1])) {
        end--;
    }

    if (p == end) {
        return 0;
    }

    if (end[-1] == ';' || end[-1] == '{' || end[-1] == '}') {
        return 1;
    }

    for (i = 0; prefixes[i]; i++) {
        prefix = prefixes[i];
        n = strlen(prefix);

        if ((size_t) (end - p) >= n && memcmp(p, prefix, n) == 0) {
            return 1;
        }
    }

    return 0;
}


/*
 * Phrases are lower-cased, with inner white space folded to one space;
 * a space in a phrase matches any run of white space in the text.
 */

int
llmr_keywords_init(llmr_keywords_t *kw, llmr_phrase_t *phrases,
    unsigned nphrases, unsigned nlists)
{
    size_t          i, n;
    unsigned        k, b;
    unsigned char  *t;

    if (nlists > LLMR_KEYWORDS_MAX) {
        return LLMR_ERROR;
    }

    for (k = 0; k < nphrases; k++) {
        t = phrases[k].text;
        n = 0;

        for (i = 0; i < phrases[k].len; i++) {
            if (llmr_is_space(t[i])) {
                if (n && t[n - 1] != ' ') {
                    t[n++] = ' ';
                }
                continue;
            }

            t[n++] = llmr_lower(t[i]);
        }

        if (n && t[n - 1] == ' ') {
            n--;
        }

        if (n == 0) {
            return LLMR_ERROR;
        }

        phrases[k].len = n;
    }

    qsort(phrases, nphrases, sizeof(llmr_phrase_t), llmr_phrase_cmp);

    kw->phrases = phrases;
    kw->nphrases = nphrases;
    kw->nlists = nlists;

    k = 0;
    for (b = 0; b < 256; b++) {
        kw->first[b] = k;
        while (k < nphrases && phrases[k].text[0] == b) {
            k++;
        }
    }

    kw->first[256] = k;

    return LLMR_OK;
}


static int
llmr_phrase_cmp(const void *one, const void *two)
{
    const llmr_phrase_t  *a = one, *b = two;

    if (a->text[0] != b->text[0]) {
        return (int) a->text[0] - (int) b->text[0];
    }

    /* a total order keeps the table the same on every platform */

    if (a->list != b->list) {
        return (a->list < b->list) ? -1 : 1;
    }

    if (a->len != b->len) {
        return (a->len < b->len) ? -1 : 1;
    }

    return memcmp(a->text, b->text, a->len);
}


uint64_t
llmr_keywords_match(const llmr_keywords_t *kw, const unsigned char *p,
    size_t len)
{
    size_t                n;
    uint32_t              k;
    uint64_t              found, bit;
    const unsigned char  *q, *end;
    const llmr_phrase_t  *ph;

    found = 0;
    end = p + len;

    if (kw == NULL || kw->nphrases == 0) {
        return 0;
    }

    for (q = p; q < end; q++) {

        /* a word must start at a word boundary */
        if (llmr_is_word(*q) && q > p && llmr_is_word(q[-1])) {
            continue;
        }

        for (k = kw->first[llmr_lower(*q)];
             k < kw->first[llmr_lower(*q) + 1];
             k++)
        {
            ph = &kw->phrases[k];
            bit = (uint64_t) 1 << ph->list;

            if (found & bit) {
                continue;
            }

            n = llmr_phrase_match(ph, q, end);

            if (n && (q + n == end || !llmr_is_word(q[n])
                      || !llmr_is_word(ph->text[ph->len - 1])))
            {
                found |= bit;
            }
        }
    }

    return found;
}


static size_t
llmr_phrase_match(const llmr_phrase_t *ph, const unsigned char *p,
    const unsigned char *end)
{
    size_t                i;
    const unsigned char  *start;

    start = p;

    for (i = 0; i < ph->len; i++) {

        if (p == end) {
            return 0;
        }

        if (ph->text[i] == ' ') {
            if (!llmr_is_space(*p)) {
                return 0;
            }

            while (p < end && llmr_is_space(*p)) {
                p++;
            }

            continue;
        }

        if (llmr_lower(*p) != ph->text[i]) {
            return 0;
        }

        p++;
    }

    return p - start;
}
