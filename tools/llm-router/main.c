
/*
 * Copyright (C) the ngx_http_llm_router_module authors
 *
 * llm-router: the subcommands, their options and the messages.  Usage
 * errors exit with 2, bad input and failures with 1.
 */


#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#include "llm_router.h"


typedef struct {
    const char       *name;
    int             (*run)(int argc, char **argv);
} lr_command_t;


static const lr_option_t *lr_option_find(const lr_option_t *opts,
    size_t nopts, const char *name, size_t len);
static int lr_option_set(const lr_option_t *o, const char *value);
static int lr_number_parse(const lr_option_t *o, const char *value,
    double *number);
static void lr_option_error(const char *cmd, const lr_option_t *o,
    const char *value);


const llmr_dialect_t  *lr_api = &llmr_dialects[LLMR_API_CHAT];

/* the options every command takes, after its own */

static const lr_option_t  lr_global_options[] = {
    { "api", LR_OPT_API, &lr_api, 0, 0 }
};


static const lr_command_t  lr_commands[] = {
    { "train", lr_cmd_train },
    { "score", lr_cmd_score },
    { "calibrate", lr_cmd_calibrate },
    { "eval", lr_cmd_eval },
    { "replay", lr_cmd_replay },
    { "cascade", lr_cmd_cascade },
    { "judge", lr_cmd_judge },
    { "report", lr_cmd_report },
    { NULL, NULL }
};


int
main(int argc, char **argv)
{
    int                  i, status;
    const lr_command_t  *cmd;

    if (argc < 2 || strcmp(argv[1], "help") == 0) {
        lr_usage(stdout);
        return 0;
    }

    if (strcmp(argv[1], "--version") == 0) {
        puts("llm-router " LLMR_VERSION);
        return 0;
    }

    for (i = 1; i < argc && strcmp(argv[i], "--") != 0; i++) {
        if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
            lr_usage(stdout);
            return 0;
        }
    }

    for (cmd = lr_commands; cmd->name; cmd++) {
        if (strcmp(argv[1], cmd->name) == 0) {
            break;
        }
    }

    if (cmd->name == NULL) {
        lr_error("unknown command \"%s\"", argv[1]);
        status = LR_EXIT_USAGE;

    } else {
        status = cmd->run(argc - 1, argv + 1);
    }

    if (status == LR_EXIT_USAGE) {
        lr_usage(stderr);
    }

    /* scores lost to a full disk or a closed pipe are a failure too */

    if ((fflush(stdout) != 0 || ferror(stdout)) && status == 0) {
        lr_error("standard output: %s", strerror(errno));
        status = LR_EXIT_FAILURE;
    }

    return status;
}


void
lr_usage(FILE *out)
{
    lr_options_t  def = LR_OPTIONS_DEFAULT;

    fputs(
"usage: llm-router COMMAND [OPTIONS] ARGUMENTS\n"
"       llm-router --version\n"
"\n"
"  train --out FILE [--bits N] [--epochs N] [--rate R] [--l2 L]\n"
"        [--history N] [--seed N] [--holdout F] DATA.jsonl\n"
"      learn a classifier from lines {\"request\": {...}, \"label\": 0..1},\n"
"      1 when the strong model is needed; optional \"weight\", \"id\",\n"
"      \"weak_correct\" and \"strong_correct\"\n"
"  score --model FILE [DATA.jsonl | -]\n"
"      one {\"id\": ..., \"score\": x} for each line with a \"request\"\n"
"  calibrate --model FILE --strong-share S DATA.jsonl\n"
"      the threshold T at which \"score>T\" sends the share S (0 to 1)\n"
"      of the requests to the strong model\n"
"  eval (--model FILE | --cv K [train options]) [--json]\n"
"        DATA.jsonl\n"
"      routing quality on lines that have \"weak_correct\" and\n"
"      \"strong_correct\": the quality/cost curve, APGR, CPT(50%),\n"
"      CPT(80%) (interpolated between the points of the curve);\n"
"      --cv K trains K models, each scoring the rows it has not seen,\n"
"      on \"label\" where given, else 1 where only the strong model is\n"
"      right\n"
"  replay --url URL [--concurrency N] [--header 'K: V' ...] [--limit N]\n"
"        LOG.jsonl\n"
"      POST request bodies (or the \"request\" of each line) to URL and\n"
"      summarise the answers: statuses, and the APIs, models and rules\n"
"      of an llm_router_explain location.  When the path of URL ends as\n"
"      an API's does (/chat/completions, /messages, /responses), a body\n"
"      goes to the path of its own API (for llm_router_api auto); any\n"
"      other URL gets every body as it is\n"
"  cascade [--pattern RE ...] [--require RE ...] [--min-length N]\n"
"        [--json] DATA.jsonl\n"
"      escalation on outcome lines that also hold \"answer\", the weak\n"
"      model's answer (a chat.completion, a message or a response): the\n"
"      checks of llm_router_escalate (and its _pattern, _require,\n"
"      _min_length), the strong-call share, quality and PGR\n"
"  judge --url URL --model M [--api API] [--key-file F]\n"
"        [--header 'K: V' ...] [--concurrency N] [--retries N]\n"
"        [--timeout S] [--prompt FILE] PAIRS.jsonl\n"
"      labels for train from shadow pairs (lines with \"request\", the\n"
"      cheap \"answer\" and the strong \"shadow_answer\"): the judge\n"
"      model M at URL, in its API (--api here; chat pairs by default),\n"
"      says which answer is better, twice, the answers swapped; prints\n"
"      {\"id\", \"request\", \"label\", \"rule\", \"model\", \"verdict\"}:\n"
"      1 \"strong\" when the strong answer wins both times, 0 \"cheap\"\n"
"      when the cheap one is as good both times (or ties), 0.5 \"split\";\n"
"      --prompt replaces the question to the judge, with {question},\n"
"      {a} and {b}.  Pairs whose shadow_status is not 2xx or without\n"
"      both answers are skipped; a call without A, B or TIE is retried\n"
"      at once, a 429, 5xx or network error after 0.2 s, 0.4 s, ...;\n"
"      a pair still without a verdict is left out, and counted\n"
"  report [--json] LABELS-OR-PAIRS.jsonl ...\n"
"      the quality loss (the share of labelled requests whose strong\n"
"      answer was better, a label 0.5 counting half) overall, per rule\n"
"      and per model, with its 95% Wilson score interval; of pair lines,\n"
"      the cost saved (\"shadow_cost_usd\" less \"cost_usd\") against\n"
"      sending every request to the strong model, and the share of\n"
"      \"escalated\" ones\n"
"  help\n"
"\n"
"Every command takes --api chat|messages|responses, the API (OpenAI Chat\n"
"Completions, Anthropic Messages, OpenAI Responses) of the requests and\n"
"answers of lines without an \"api\" field like $llm_router_log's; but\n"
"judge's --api is the judge's API.\n",
          out);

    fprintf(out, "\nDefaults: --bits %u, --epochs %u, --rate %g, --l2 %g, "
            "--history %u\n(as llm_router_history; the model keeps it "
            "for score, calibrate, eval\nand nginx), --seed %llu, "
            "--holdout %g, --concurrency %u, --retries %u,\n--timeout %u "
            "(seconds a call may take), --api chat.\n", def.bits,
            def.epochs, def.rate, def.l2, def.history,
            (unsigned long long) def.seed, LR_HOLDOUT_DEFAULT,
            LR_CONCURRENCY_DEFAULT, LR_RETRIES_DEFAULT, LR_TIMEOUT_DEFAULT);
}


void
lr_error(const char *fmt, ...)
{
    va_list  args;

    fputs("llm-router: ", stderr);

    va_start(args, fmt);
    vfprintf(stderr, fmt, args);
    va_end(args);

    fputc('\n', stderr);
}


int
lr_options_parse(int argc, char **argv, const lr_option_t *opts,
    size_t nopts)
{
    int                 i, n;
    size_t              len;
    const char         *cmd, *name, *value, *eq;
    const lr_option_t  *o;

    /* cmd, the command, is overwritten by the first argument */

    cmd = argv[0];
    n = 0;

    for (i = 1; i < argc; i++) {

        if (strcmp(argv[i], "--") == 0) {
            while (++i < argc) {
                argv[n++] = argv[i];
            }

            break;
        }

        /* "-" is the standard input */

        if (argv[i][0] != '-' || argv[i][1] == '\0') {
            argv[n++] = argv[i];
            continue;
        }

        name = argv[i] + 2;
        eq = strchr(name, '=');
        len = eq ? (size_t) (eq - name) : strlen(name);

        o = NULL;

        if (argv[i][1] == '-') {
            o = lr_option_find(opts, nopts, name, len);

            if (o == NULL) {
                o = lr_option_find(lr_global_options,
                                   lr_nelts(lr_global_options), name, len);
            }
        }

        if (o == NULL) {
            lr_error("%s: unknown option \"%.*s\"", cmd,
                     (int) (len + 2), argv[i]);
            return -1;
        }

        if (o->type == LR_OPT_FLAG) {
            if (eq) {
                lr_error("%s: --%s takes no value", cmd, o->name);
                return -1;
            }

            *(int *) o->value = 1;
            continue;
        }

        if (eq) {
            value = eq + 1;

        } else if (i + 1 < argc) {
            value = argv[++i];

        } else {
            lr_error("%s: --%s needs a value", cmd, o->name);
            return -1;
        }

        if (lr_option_set(o, value) != LLMR_OK) {
            lr_option_error(cmd, o, value);
            return -1;
        }
    }

    return n;
}


static const lr_option_t *
lr_option_find(const lr_option_t *opts, size_t nopts, const char *name,
    size_t len)
{
    size_t  i;

    for (i = 0; i < nopts; i++) {
        if (strlen(opts[i].name) == len
            && memcmp(opts[i].name, name, len) == 0)
        {
            return &opts[i];
        }
    }

    return NULL;
}


static int
lr_option_set(const lr_option_t *o, const char *value)
{
    double                 number;
    lr_list_t             *list;
    const char           **items;
    const llmr_dialect_t  *d;

    switch (o->type) {

    case LR_OPT_STRING:
        *(const char **) o->value = value;
        return LLMR_OK;

    case LR_OPT_API:
        d = llmr_dialect_find((const unsigned char *) value, strlen(value));

        if (d == NULL) {
            return LLMR_ERROR;
        }

        *(const llmr_dialect_t **) o->value = d;
        return LLMR_OK;

    case LR_OPT_LIST:
        list = o->value;
        items = realloc(list->items, (list->n + 1) * sizeof(const char *));

        if (items == NULL) {
            return LLMR_ERROR;
        }

        items[list->n++] = value;
        list->items = items;
        return LLMR_OK;

    default:
        break;
    }

    if (lr_number_parse(o, value, &number) != LLMR_OK) {
        return LLMR_ERROR;
    }

    switch (o->type) {

    case LR_OPT_UINT:
        *(unsigned *) o->value = (unsigned) number;
        break;

    case LR_OPT_UINT64:
        errno = 0;
        *(uint64_t *) o->value = strtoull(value, NULL, 10);

        if (errno) {
            return LLMR_ERROR;
        }

        break;

    default:
        *(double *) o->value = number;
        break;
    }

    return LLMR_OK;
}


/* integers are plain digits; the bounds hold, max 0 is none */

static int
lr_number_parse(const lr_option_t *o, const char *value, double *number)
{
    char  *end;

    if (o->type != LR_OPT_DOUBLE
        && (*value == '\0' || strspn(value, "0123456789") != strlen(value)))
    {
        return LLMR_ERROR;
    }

    errno = 0;
    *number = strtod(value, &end);

    if (*value == '\0' || *end != '\0' || errno || !isfinite(*number)
        || *number < o->min || (o->max != 0 && *number > o->max))
    {
        return LLMR_ERROR;
    }

    return LLMR_OK;
}


static void
lr_option_error(const char *cmd, const lr_option_t *o, const char *value)
{
    const char  *what;

    if (o->type == LR_OPT_LIST) {
        lr_error("out of memory");
        return;
    }

    if (o->type == LR_OPT_API) {
        lr_error("%s: --%s \"%s\": " LR_API_NAMES " expected", cmd,
                 o->name, value);
        return;
    }

    what = (o->type == LR_OPT_DOUBLE) ? "a number" : "an integer";

    if (o->max != 0) {
        lr_error("%s: --%s \"%s\": %s from %g to %g expected", cmd, o->name,
                 value, what, o->min, o->max);

    } else {
        lr_error("%s: --%s \"%s\": %s from %g expected", cmd, o->name,
                 value, what, o->min);
    }
}
