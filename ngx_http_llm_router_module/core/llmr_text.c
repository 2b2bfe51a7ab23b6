
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


/* character classes, and lower case, of a byte: no branches in loops */

const unsigned char  llmr_ctype[256] = {
    0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
    0x00, 0x08, 0x08, 0x00, 0x00, 0x08, 0x00, 0x00,
    0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
    0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
    0x08, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
    0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
    0x06, 0x06, 0x06, 0x06, 0x06, 0x06, 0x06, 0x06,
    0x06, 0x06, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
    0x00, 0x05, 0x05, 0x05, 0x05, 0x05, 0x05, 0x05,
    0x05, 0x05, 0x05, 0x05, 0x05, 0x05, 0x05, 0x05,
    0x05, 0x05, 0x05, 0x05, 0x05, 0x05, 0x05, 0x05,
    0x05, 0x05, 0x05, 0x00, 0x00, 0x00, 0x00, 0x04,
    0x00, 0x05, 0x05, 0x05, 0x05, 0x05, 0x05, 0x05,
    0x05, 0x05, 0x05, 0x05, 0x05, 0x05, 0x05, 0x05,
    0x05, 0x05, 0x05, 0x05, 0x05, 0x05, 0x05, 0x05,
    0x05, 0x05, 0x05, 0x00, 0x00, 0x00, 0x00, 0x00,
    0x14, 0x14, 0x14, 0x14, 0x14, 0x14, 0x14, 0x14,
    0x14, 0x14, 0x14, 0x14, 0x14, 0x14, 0x14, 0x14,
    0x14, 0x14, 0x14, 0x14, 0x14, 0x14, 0x14, 0x14,
    0x14, 0x14, 0x14, 0x14, 0x14, 0x14, 0x14, 0x14,
    0x14, 0x14, 0x14, 0x14, 0x14, 0x14, 0x14, 0x14,
    0x14, 0x14, 0x14, 0x14, 0x14, 0x14, 0x14, 0x14,
    0x14, 0x14, 0x14, 0x14, 0x14, 0x14, 0x14, 0x14,
    0x14, 0x14, 0x14, 0x14, 0x14, 0x14, 0x14, 0x14,
    0x04, 0x04, 0x04, 0x04, 0x04, 0x04, 0x04, 0x04,
    0x04, 0x04, 0x04, 0x04, 0x04, 0x04, 0x04, 0x04,
    0x04, 0x04, 0x04, 0x04, 0x04, 0x04, 0x04, 0x04,
    0x04, 0x04, 0x04, 0x04, 0x04, 0x04, 0x04, 0x04,
    0x04, 0x04, 0x04, 0x04, 0x04, 0x04, 0x04, 0x04,
    0x04, 0x04, 0x04, 0x04, 0x04, 0x04, 0x04, 0x04,
    0x04, 0x04, 0x04, 0x04, 0x04, 0x04, 0x04, 0x04,
    0x04, 0x04, 0x04, 0x04, 0x04, 0x04, 0x04, 0x04,
};


const unsigned char  llmr_tolower[256] = {
    0x00, 0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07,
    0x08, 0x09, 0x0a, 0x0b, 0x0c, 0x0d, 0x0e, 0x0f,
    0x10, 0x11, 0x12, 0x13, 0x14, 0x15, 0x16, 0x17,
    0x18, 0x19, 0x1a, 0x1b, 0x1c, 0x1d, 0x1e, 0x1f,
    0x20, 0x21, 0x22, 0x23, 0x24, 0x25, 0x26, 0x27,
    0x28, 0x29, 0x2a, 0x2b, 0x2c, 0x2d, 0x2e, 0x2f,
    0x30, 0x31, 0x32, 0x33, 0x34, 0x35, 0x36, 0x37,
    0x38, 0x39, 0x3a, 0x3b, 0x3c, 0x3d, 0x3e, 0x3f,
    0x40, 0x61, 0x62, 0x63, 0x64, 0x65, 0x66, 0x67,
    0x68, 0x69, 0x6a, 0x6b, 0x6c, 0x6d, 0x6e, 0x6f,
    0x70, 0x71, 0x72, 0x73, 0x74, 0x75, 0x76, 0x77,
    0x78, 0x79, 0x7a, 0x5b, 0x5c, 0x5d, 0x5e, 0x5f,
    0x60, 0x61, 0x62, 0x63, 0x64, 0x65, 0x66, 0x67,
    0x68, 0x69, 0x6a, 0x6b, 0x6c, 0x6d, 0x6e, 0x6f,
    0x70, 0x71, 0x72, 0x73, 0x74, 0x75, 0x76, 0x77,
    0x78, 0x79, 0x7a, 0x7b, 0x7c, 0x7d, 0x7e, 0x7f,
    0x80, 0x81, 0x82, 0x83, 0x84, 0x85, 0x86, 0x87,
    0x88, 0x89, 0x8a, 0x8b, 0x8c, 0x8d, 0x8e, 0x8f,
    0x90, 0x91, 0x92, 0x93, 0x94, 0x95, 0x96, 0x97,
    0x98, 0x99, 0x9a, 0x9b, 0x9c, 0x9d, 0x9e, 0x9f,
    0xa0, 0xa1, 0xa2, 0xa3, 0xa4, 0xa5, 0xa6, 0xa7,
    0xa8, 0xa9, 0xaa, 0xab, 0xac, 0xad, 0xae, 0xaf,
    0xb0, 0xb1, 0xb2, 0xb3, 0xb4, 0xb5, 0xb6, 0xb7,
    0xb8, 0xb9, 0xba, 0xbb, 0xbc, 0xbd, 0xbe, 0xbf,
    0xc0, 0xc1, 0xc2, 0xc3, 0xc4, 0xc5, 0xc6, 0xc7,
    0xc8, 0xc9, 0xca, 0xcb, 0xcc, 0xcd, 0xce, 0xcf,
    0xd0, 0xd1, 0xd2, 0xd3, 0xd4, 0xd5, 0xd6, 0xd7,
    0xd8, 0xd9, 0xda, 0xdb, 0xdc, 0xdd, 0xde, 0xdf,
    0xe0, 0xe1, 0xe2, 0xe3, 0xe4, 0xe5, 0xe6, 0xe7,
    0xe8, 0xe9, 0xea, 0xeb, 0xec, 0xed, 0xee, 0xef,
    0xf0, 0xf1, 0xf2, 0xf3, 0xf4, 0xf5, 0xf6, 0xf7,
    0xf8, 0xf9, 0xfa, 0xfb, 0xfc, 0xfd, 0xfe, 0xff,
};


static int llmr_phrase_cmp(const void *one, const void *two);
static uint64_t llmr_keywords_at(const llmr_keywords_t *kw,
    const unsigned char *q, const unsigned char *end, uint64_t found);
static size_t llmr_phrase_match(const llmr_phrase_t *ph,
    const unsigned char *p, const unsigned char *end);
static int llmr_code_line(const unsigned char *p, const unsigned char *end);


/*
 * One pass over a string gives both the token estimate and, when rq is
 * given, the classifier's word features (see llmr_score.c).
 *
 * The estimate is close to BPE counts for English and code without a
 * tokenizer: a run of up to four letters is one token, a longer one a
 * token more for every four letters after the second; digits go in
 * threes; a run of line breaks, punctuation, '_' and each non-ASCII
 * character are a token; spaces join the following word.
 *
 * A word, for the features, is a run of letters, digits, '_' and
 * non-ASCII bytes, lower-cased; a word that starts with a digit is
 * replaced by its length class, so that "17 apples" and "42 apples"
 * look alike; every other visible character is a word of its own.
 *
 * With kw, the same pass looks for the keyword lists not yet in *found,
 * as llmr_keywords_match() does: a phrase starts where a word starts or
 * at a character that is neither a word's nor white space, and the scan
 * visits each of those places once anyway.
 */

uint32_t
llmr_text_scan(llmr_request_t *rq, const llmr_keywords_t *kw,
    uint64_t *found, const unsigned char *p, size_t len)
{
    size_t                run;
    uint32_t              tokens, h, prev;
    uint64_t              keywords, all;
    unsigned              t;
    const unsigned char  *end, *start, *word;

    tokens = 0;
    prev = 0;
    end = p + len;

    keywords = found ? *found : 0;
    all = 0;

    if (kw && kw->nphrases && found) {
        all = (kw->nlists >= 64) ? ~(uint64_t) 0
                                 : ((uint64_t) 1 << kw->nlists) - 1;
    }

    if (all == 0 || keywords == all) {
        kw = NULL;
    }

    while (p < end) {
        t = llmr_ctype[*p];

        if (kw && !(t & LLMR_CT_SPACE)
            && (p + 1 == end || llmr_keywords_pair(kw, p[0], p[1])))
        {
            keywords = llmr_keywords_at(kw, p, end, keywords);

            if (keywords == all) {
                kw = NULL;
            }
        }

        if (t & LLMR_CT_WORD) {
            word = p;
            h = LLMR_FNV_OFFSET;

            do {
                start = p;

                if ((t & LLMR_CT_ALPHA) && rq == NULL) {
                    /* the token estimate only: no word hash */
                    while (++p < end && llmr_is_alpha(*p)) {
                        /* void */
                    }

                    run = p - start;
                    tokens += (run <= 4) ? 1 : 1 + (uint32_t) ((run - 2) / 4);

                } else if (t & LLMR_CT_ALPHA) {
                    do {
                        h = (h ^ llmr_tolower[*p]) * LLMR_FNV_PRIME;
                    } while (++p < end && llmr_is_alpha(*p));

                    run = p - start;
                    tokens += (run <= 4) ? 1 : 1 + (uint32_t) ((run - 2) / 4);

                } else if (t & LLMR_CT_DIGIT) {
                    do {
                        h = (h ^ *p) * LLMR_FNV_PRIME;
                    } while (++p < end && llmr_is_digit(*p));

                    tokens += (uint32_t) ((p - start + 2) / 3);

                } else {
                    /* '_' or a UTF-8 byte: a token for each character */
                    tokens += !(t & LLMR_CT_CONT);
                    h = (h ^ *p++) * LLMR_FNV_PRIME;
                }

            } while (p < end && ((t = llmr_ctype[*p]) & LLMR_CT_WORD));

            if (rq) {
                if (llmr_is_digit(*word)) {
                    h = llmr_number_hash(p - word);
                    rq->msg.numbers++;
                }

                llmr_word(rq, h, &prev);
            }

            continue;
        }

        if (*p == '\n') {
            do {
                if (rq && *p == '\n') {
                    rq->msg.lines++;
                }
            } while (++p < end && (*p == '\n' || *p == '\r'));

            tokens++;
            continue;
        }

        if (t & LLMR_CT_SPACE || *p < ' ' || *p == 0x7f) {
            /* spaces, and control characters for the features */
            tokens += !(t & LLMR_CT_SPACE);
            p++;
            continue;
        }

        tokens++;

        if (rq) {
            rq->msg.questions += (*p == '?');
            llmr_word(rq, (LLMR_FNV_OFFSET ^ *p) * LLMR_FNV_PRIME, &prev);
        }

        p++;
    }

    if (found) {
        *found = keywords;
    }

    return tokens;
}


uint32_t
llmr_estimate_tokens(const unsigned char *p, size_t len)
{
    return llmr_text_scan(NULL, NULL, NULL, p, len);
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

    for (q = p; (q = memchr(q, '`', end - q)) != NULL; q++) {
        if (q + 2 < end && q[1] == '`' && q[2] == '`') {
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

        if (*p != (unsigned char) prefix[0]) {
            continue;
        }

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

    /*
     * The pairs: the first two bytes of each phrase, any byte after a
     * phrase of one byte, any white space for a space.
     */

    memset(kw->pair, 0, sizeof(kw->pair));

    for (k = 0; k < nphrases; k++) {
        t = phrases[k].text;

        for (b = 0; b < 256; b++) {
            if (phrases[k].len == 1
                || (t[1] == ' ' && llmr_is_space(b))
                || t[1] == llmr_lower(b))
            {
                kw->pair[(t[0] << 5) | (b >> 3)] |= 1 << (b & 7);
            }
        }
    }

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
    uint64_t              found, all;
    const unsigned char  *q, *end;

    found = 0;
    end = p + len;

    if (kw == NULL || kw->nphrases == 0) {
        return 0;
    }

    all = (kw->nlists >= 64) ? ~(uint64_t) 0
                             : ((uint64_t) 1 << kw->nlists) - 1;

    for (q = p; q < end; /* void */) {

        if (q + 1 == end || llmr_keywords_pair(kw, q[0], q[1])) {
            found = llmr_keywords_at(kw, q, end, found);

            if (found == all) {
                return found;
            }
        }

        /* a word must start at a word boundary: the rest is skipped */

        if (llmr_is_word(*q++)) {
            while (q < end && llmr_is_word(*q)) {
                q++;
            }
        }
    }

    return found;
}


/* the lists, not yet found, with a phrase that starts at q */

static uint64_t
llmr_keywords_at(const llmr_keywords_t *kw, const unsigned char *q,
    const unsigned char *end, uint64_t found)
{
    size_t                n;
    uint32_t              k, last;
    uint64_t              bit;
    const llmr_phrase_t  *ph;

    last = kw->first[llmr_lower(*q) + 1];

    for (k = kw->first[llmr_lower(*q)]; k < last; k++) {
        ph = &kw->phrases[k];
        bit = (uint64_t) 1 << ph->list;

        if (found & bit) {
            continue;
        }

        /* most candidates differ at the second byte */

        if (ph->len > 1 && ph->text[1] != ' '
            && (q + 1 == end || llmr_lower(q[1]) != ph->text[1]))
        {
            continue;
        }

        n = llmr_phrase_match(ph, q, end);

        if (n && (q + n == end || !llmr_is_word(q[n])
                  || !llmr_is_word(ph->text[ph->len - 1])))
        {
            found |= bit;
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
