
/*
 * Copyright (C) the ngx_http_llm_router_module authors
 *
 * llm-router cascade: what escalation would do on outcome data.  The
 * weak model answers every request; an answer that fails the checks of
 * llm_router_escalate (the same core code) goes to the strong model.
 * Prints the strong-call share and the quality, and the share of the
 * weak-to-strong gap it recovers.
 */


#include <regex.h>
#include <stdlib.h>
#include <string.h>

#include "llm_router.h"


typedef struct {
    regex_t          *re;
    size_t            n;
    unsigned char    *text;         /* the content, NUL-terminated */
} lr_patterns_t;


static int lr_patterns_compile(lr_patterns_t *p, const lr_list_t *list);
static void lr_patterns_free(lr_patterns_t *p);
static int lr_match(void *data, const unsigned char *p, size_t len);


typedef struct {
    lr_patterns_t     refuse;
    lr_patterns_t     require;
} lr_cascade_t;


int
lr_cmd_cascade(int argc, char **argv)
{
    int              n, rc, json;
    size_t           rows, escalated, size;
    double           weak, strong, quality, pgr;
    unsigned         min_length;
    lr_row_t         row;
    lr_read_t        how;
    lr_list_t        patterns, required;
    lr_input_t       in;
    llmr_str_t       answer;
    lr_record_t      rec;
    lr_cascade_t     cc;
    unsigned char   *content;
    llmr_answer_t    a;
    llmr_verdict_e   v;
    llmr_criteria_t  c;
    char             err[LLMR_ERROR_MAX];
    lr_option_t      opts[] = {
        { "pattern", LR_OPT_LIST, &patterns, 0, 0 },
        { "require", LR_OPT_LIST, &required, 0, 0 },
        { "min-length", LR_OPT_UINT, &min_length, 0, 1000000 },
        { "json", LR_OPT_FLAG, &json, 0, 0 }
    };

    memset(&patterns, 0, sizeof(lr_list_t));
    memset(&required, 0, sizeof(lr_list_t));
    memset(&cc, 0, sizeof(lr_cascade_t));
    min_length = 0;
    json = 0;

    n = lr_options_parse(argc, argv, opts, lr_nelts(opts));

    rc = (n == 1
          && lr_patterns_compile(&cc.refuse, &patterns) == LLMR_OK
          && lr_patterns_compile(&cc.require, &required) == LLMR_OK)
         ? LLMR_OK : LLMR_ERROR;

    /* compiled, the patterns no longer need the lists of arguments */

    free(patterns.items);
    free(required.items);

    if (n != 1) {
        if (n >= 0) {
            lr_error("cascade: one DATA.jsonl expected");
        }

        return LR_EXIT_USAGE;
    }

    if (rc != LLMR_OK || lr_input_open(&in, argv[0]) != LLMR_OK) {
        lr_patterns_free(&cc.refuse);
        lr_patterns_free(&cc.require);
        return LR_EXIT_FAILURE;
    }

    /* the checks of llm_router_escalate, with these options */

    memset(&c, 0, sizeof(llmr_criteria_t));
    c.finish = 1;
    c.empty = 1;
    c.min_length = min_length;
    c.pattern = cc.refuse.n ? lr_match : NULL;
    c.pattern_data = &cc.refuse;
    c.require = cc.require.n ? lr_match : NULL;
    c.require_data = &cc.require;

    how.need = LR_NEED_OUTCOMES;
    how.history = 0;
    how.classifier = NULL;

    rows = 0;
    escalated = 0;
    weak = 0;
    strong = 0;
    quality = 0;
    content = NULL;

    while ((rc = lr_row_read(&in, &how, &rec, &row, NULL)) == LLMR_OK) {

        if (lr_record_object(&rec, LR_FIELD_ANSWER, &answer, err,
                             sizeof(err))
            != LLMR_OK)
        {
            lr_input_error(&in, "%s", err);
            rc = LLMR_ERROR;
            break;
        }

        size = answer.len + 1;
        free(content);
        content = malloc(size);

        if (content == NULL) {
            lr_error("out of memory");
            rc = LLMR_ERROR;
            break;
        }

        cc.refuse.text = content;
        cc.require.text = content;

        /* the answer is read in the dialect of its request */

        llmr_answer_init(&a, row.dialect, &c, content, size - 1);
        v = llmr_answer_check(&a, answer.data, answer.len, 0);

        rows++;
        weak += row.weak;
        strong += row.strong;

        if (v != LLMR_VERDICT_OK) {
            escalated++;
            quality += row.strong;

        } else {
            quality += row.weak;
        }
    }

    free(content);
    lr_input_close(&in);
    lr_patterns_free(&cc.refuse);
    lr_patterns_free(&cc.require);

    if (rc == LLMR_ERROR) {
        return LR_EXIT_FAILURE;
    }

    if (rows == 0) {
        lr_error("%s: no data", argv[0]);
        return LR_EXIT_FAILURE;
    }

    pgr = (strong != weak) ? (quality - weak) / (strong - weak) : 0;

    if (json) {
        printf("{\"rows\":%zu,\"weak_accuracy\":%.6f,\"strong_accuracy\":%.6f,"
               "\"strong_share\":%.6f,\"quality\":%.6f,\"pgr\":%.6f}\n", rows,
               weak / rows, strong / rows, (double) escalated / rows,
               quality / rows, pgr);

    } else {
        printf("rows %zu, weak %.3f, strong %.3f\n"
               "escalated %zu (%.1f%% strong calls): quality %.3f, "
               "PGR %.3f\n", rows, weak / rows, strong / rows, escalated,
               100.0 * escalated / rows, quality / rows, pgr);
    }

    return 0;
}


/* POSIX extended expressions, case-insensitive like the module's */

static int
lr_patterns_compile(lr_patterns_t *p, const lr_list_t *list)
{
    int     rc;
    char    err[LLMR_ERROR_MAX];
    size_t  i;

    p->n = 0;
    p->re = calloc(list->n ? list->n : 1, sizeof(regex_t));

    if (p->re == NULL) {
        lr_error("out of memory");
        return LLMR_ERROR;
    }

    for (i = 0; i < list->n; i++) {
        rc = regcomp(&p->re[i], list->items[i],
                     REG_EXTENDED | REG_ICASE | REG_NOSUB);

        if (rc != 0) {
            regerror(rc, &p->re[i], err, sizeof(err));
            lr_error("cascade: invalid pattern \"%s\": %s", list->items[i],
                     err);
            return LLMR_ERROR;
        }

        p->n++;
    }

    return LLMR_OK;
}


static void
lr_patterns_free(lr_patterns_t *p)
{
    size_t  i;

    for (i = 0; i < p->n; i++) {
        regfree(&p->re[i]);
    }

    free(p->re);
    p->re = NULL;
    p->n = 0;
}


static int
lr_match(void *data, const unsigned char *p, size_t len)
{
    lr_patterns_t  *ps = data;
    size_t          i;

    (void) p;

    ps->text[len] = '\0';

    for (i = 0; i < ps->n; i++) {
        if (regexec(&ps->re[i], (const char *) ps->text, 0, NULL, 0) == 0) {
            return 1;
        }
    }

    return 0;
}
