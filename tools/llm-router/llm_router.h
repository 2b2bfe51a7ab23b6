
/*
 * Copyright (C) the ngx_http_llm_router_module authors
 *
 * llm-router: trains, scores, calibrates, evaluates and replays with the
 * routing core that the nginx module links.
 */


#ifndef _LLM_ROUTER_H_INCLUDED_
#define _LLM_ROUTER_H_INCLUDED_


#include <stdio.h>
#include <curl/curl.h>

#include "llmr.h"


/* an HTTP POST of replay or judge: the start of its answer, and its length */

typedef struct {
    CURL              *easy;
    unsigned char     *answer;
    size_t             len;
    size_t             max;
    char               error[CURL_ERROR_SIZE];
} lr_http_t;

int lr_http_header(struct curl_slist **headers, const char *header);
int lr_http_init(lr_http_t *h, struct curl_slist *headers, size_t max,
    long timeout, void *owner);
int lr_http_post(CURLM *multi, lr_http_t *h, const char *url,
    const void *body, size_t len);
void lr_http_free(CURLM *multi, lr_http_t *h, int busy);


/* a training example: hashed features, each with the value it counts */

typedef struct {
    uint32_t          hash;
    float             value;
} lr_feature_t;

typedef struct {
    lr_feature_t     *x;
    uint32_t          n;
    float             label;        /* 1 when the strong model is needed */
    float             weight;
} lr_example_t;

typedef struct {
    unsigned          bits;         /* hash space: 1 << bits weights */
    unsigned          epochs;
    double            rate;         /* AdaGrad learning rate */
    double            l2;
    unsigned          history;      /* messages before the current turn */
    uint64_t          seed;
} lr_options_t;

#define LR_OPTIONS_DEFAULT  { 15, 20, 0.01, 1e-6, 6, 1 }


/*
 * Turns a request body of a dialect into an example's features: the
 * same parse pass, hashes and weights as the scoring inside nginx.
 */
int lr_vectorize(const unsigned char *body, size_t len,
    const llmr_dialect_t *d, unsigned history, lr_example_t *ex, char *err,
    size_t errlen);
void lr_example_free(lr_example_t *ex);

/* fits weights (1 << bits of them) and bias; returns the mean log loss */
double lr_train(lr_example_t *ex, size_t n, const lr_options_t *opt,
    float *weights, float *bias);

/* the probability for an example, from its features */
double lr_predict(const lr_example_t *ex, const float *weights, float bias,
    uint32_t mask);


/*
 * ------------------------------------------------------------------------
 * The command itself: input, options, models, metrics, the subcommands.
 * ------------------------------------------------------------------------
 */


#define LR_DONE           1             /* no more input */
#define LR_ABSENT         2             /* no such field */
#define LR_EXIT_FAILURE   1
#define LR_EXIT_USAGE     2

#define LR_HOLDOUT_DEFAULT      0.2
#define LR_CONCURRENCY_DEFAULT  8
#define LR_RETRIES_DEFAULT      3
#define LR_TIMEOUT_DEFAULT      60

#define lr_nelts(a)             (sizeof(a) / sizeof((a)[0]))


void lr_error(const char *fmt, ...);
void lr_usage(FILE *out);


/* the dialect of a request whose record does not name one: --api */

#define LR_API_NAMES  "\"chat\", \"messages\" or \"responses\""

extern const llmr_dialect_t  *lr_api;


/* options: "--name value", "--name=value", or "--name" for a flag */

typedef enum {
    LR_OPT_FLAG = 0,                    /* int, set to 1 */
    LR_OPT_UINT,                        /* unsigned, from min to max */
    LR_OPT_UINT64,                      /* uint64_t, from min */
    LR_OPT_DOUBLE,                      /* double, from min to max */
    LR_OPT_STRING,                      /* const char * */
    LR_OPT_LIST,                        /* lr_list_t, may repeat */
    LR_OPT_API                          /* const llmr_dialect_t *, by name */
} lr_opt_type_e;

typedef struct {
    const char       *name;             /* without the "--" */
    lr_opt_type_e     type;
    void             *value;
    double            min;
    double            max;
} lr_option_t;

typedef struct {
    const char      **items;
    size_t            n;
} lr_list_t;

int lr_http_options(struct curl_slist **headers, lr_list_t *given,
    const llmr_dialect_t *d, const char *command);

/* the training options, for the tables of train and eval --cv */
#define LR_TRAIN_OPTIONS(o)                                                   \
    { "bits", LR_OPT_UINT, &(o)->bits, LLMR_CLASSIFIER_BITS_MIN,              \
      LLMR_CLASSIFIER_BITS_MAX },                                             \
    { "epochs", LR_OPT_UINT, &(o)->epochs, 1, 100000 },                       \
    { "rate", LR_OPT_DOUBLE, &(o)->rate, 1e-9, 1e9 },                         \
    { "l2", LR_OPT_DOUBLE, &(o)->l2, 0, 1e9 },                                \
    { "seed", LR_OPT_UINT64, &(o)->seed, 0, 0 },                              \
    { "history", LR_OPT_UINT, &(o)->history, 0, LLMR_HISTORY_MAX }


/*
 * Moves the arguments that are not options to the front of argv;
 * returns their number, or -1 after a message for the usage.  Every
 * command takes --api too.
 */
int lr_options_parse(int argc, char **argv, const lr_option_t *opts,
    size_t nopts);


/* input: lines of JSON, with the place of each for messages */

typedef struct {
    const char       *name;             /* "-" is the standard input */
    FILE             *file;
    char             *line;
    size_t            size;
    size_t            len;
    unsigned long     number;
} lr_input_t;

int lr_input_open(lr_input_t *in, const char *path);
int lr_input_next(lr_input_t *in);
void lr_input_close(lr_input_t *in);
void lr_input_error(const lr_input_t *in, const char *fmt, ...);


/* the fields of a line: raw JSON values, data is NULL when absent */

enum {
    LR_FIELD_ID = 0,
    LR_FIELD_REQUEST,
    LR_FIELD_LABEL,
    LR_FIELD_WEIGHT,
    LR_FIELD_WEAK,
    LR_FIELD_STRONG,
    LR_FIELD_ANSWER,
    LR_FIELD_API,

    /* of the shadow pairs of nginx, and of judge's labels */
    LR_FIELD_RULE,
    LR_FIELD_MODEL,
    LR_FIELD_SHADOW_MODEL,
    LR_FIELD_SHADOW_ANSWER,
    LR_FIELD_SHADOW_STATUS,
    LR_FIELD_SHADOW_COST,
    LR_FIELD_COST,
    LR_FIELD_ESCALATED,
    LR_FIELD_MAX
};

typedef struct {
    llmr_str_t        field[LR_FIELD_MAX];
} lr_record_t;

int lr_record_parse(lr_record_t *rec, const unsigned char *p, size_t len,
    char *err, size_t errlen);
int lr_record_object(const lr_record_t *rec, unsigned field,
    llmr_str_t *value, char *err, size_t errlen);
int lr_record_number(const lr_record_t *rec, unsigned field, int required,
    double max, double *value, char *err, size_t errlen);
int lr_record_bool(const lr_record_t *rec, unsigned field, int required,
    unsigned *value, char *err, size_t errlen);
int lr_record_dialect(const lr_record_t *rec, const llmr_dialect_t **d,
    char *err, size_t errlen);
int lr_record_string(const lr_record_t *rec, unsigned field,
    unsigned char **value, size_t *len, char *err, size_t errlen);


/* a model file, loaded as nginx loads it, and the score nginx computes */

typedef struct {
    unsigned char    *data;
    llmr_classifier_t classifier;
} lr_model_t;

unsigned char *lr_file_read(FILE *file, size_t max, size_t *len);
int lr_model_load(lr_model_t *m, const char *path);
void lr_model_free(lr_model_t *m);
int lr_model_write(const char *path, unsigned bits, unsigned history,
    float bias, const float *weights);
int lr_request_check(const llmr_str_t *body, const llmr_dialect_t *d,
    unsigned history, const llmr_classifier_t *classifier, double *score,
    char *err, size_t errlen);


/* rows of data: what the subcommands need of each line */

#define LR_NEED_LABEL     0x01
#define LR_NEED_OUTCOMES  0x02
#define LR_VECTORIZE      0x04          /* lr_vectorize() each request */

#define LR_FOLD_ALL       ((unsigned) -1)

typedef struct {
    unsigned                  need;
    unsigned                  history;
    const llmr_classifier_t  *classifier;   /* to score, or NULL */
} lr_read_t;

typedef struct {
    double                 score;
    const llmr_dialect_t  *dialect;     /* of its request and answer */
    uint64_t               key;         /* of the id, or the line number */
    unsigned               fold;
    unsigned               outcomes:1;
    unsigned               weak:1;
    unsigned               strong:1;
} lr_row_t;

typedef struct {
    lr_row_t         *rows;
    lr_example_t     *ex;               /* with LR_VECTORIZE */
    size_t            n;
    size_t            size;
} lr_data_t;

int lr_row_read(lr_input_t *in, const lr_read_t *how, lr_record_t *rec,
    lr_row_t *row, lr_example_t *ex);
int lr_data_load(lr_data_t *d, const char *path, const lr_read_t *how);
void lr_data_free(lr_data_t *d);
double lr_row_unit(const lr_row_t *row, uint64_t seed);
double lr_data_train(lr_data_t *d, unsigned fold, const lr_options_t *opt,
    float *weights, float *bias, size_t *trained);


/* routing quality over the strong share, as routing-eval measures it */

typedef struct {
    double            score;
    double            weak;             /* quality of each answer, 0..1 */
    double            strong;
} lr_outcome_t;

typedef struct {
    size_t            n;
    double           *quality;          /* n + 1: expected, k sent strong */
} lr_curve_t;

int lr_curve_init(lr_curve_t *c, lr_outcome_t *o, size_t n);
void lr_curve_free(lr_curve_t *c);
double lr_curve_quality(const lr_curve_t *c, double share);
double lr_curve_pgr(const lr_curve_t *c, double share);
double lr_curve_apgr(const lr_curve_t *c);
double lr_curve_cpt(const lr_curve_t *c, double pgr);
void lr_scores_sort(double *scores, size_t n);
double lr_threshold(const double *sorted, size_t n, double share);


int lr_data_curve(lr_curve_t *c, const lr_data_t *d, unsigned fold);


/* the subcommands: each returns the exit status */

int lr_cmd_train(int argc, char **argv);
int lr_cmd_score(int argc, char **argv);
int lr_cmd_calibrate(int argc, char **argv);
int lr_cmd_eval(int argc, char **argv);
int lr_cmd_replay(int argc, char **argv);
int lr_cmd_cascade(int argc, char **argv);
int lr_cmd_judge(int argc, char **argv);
int lr_cmd_report(int argc, char **argv);


#endif /* _LLM_ROUTER_H_INCLUDED_ */
