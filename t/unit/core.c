
/*
 * Copyright (C) the ngx_http_llm_router_module authors
 *
 * Unit tests of the routing core, in TAP.
 */


#include <math.h>
#include <stdlib.h>

#include "llmr.h"
#include "tap.h"
#include "feed.h"


static llmr_keywords_t  kw;


#define CHAT       (&llmr_dialects[LLMR_API_CHAT])

#define PROMPT(u)      ((u).tokens[LLMR_USAGE_PROMPT])
#define COMPLETION(u)  ((u).tokens[LLMR_USAGE_COMPLETION])


static int
parse(llmr_request_t *rq, const char *body, size_t chunk, unsigned history)
{
    if (llmr_request_init(rq, CHAT, &kw, history) != LLMR_OK) {
        return LLMR_ERROR;
    }

    return feed_request(rq, body, chunk);
}


/* the body the provider gets, built from the splice the core returns */

static char *
rewrite(const char *body, const char *upstream, size_t chunk)
{
    size_t           n;
    unsigned         i, k;
    llmr_str_t       up;
    llmr_edit_t      edits[LLMR_EDITS_MAX];
    unsigned char    repl[512];
    llmr_request_t   rq;

    if (parse(&rq, body, chunk, 6) != LLMR_OK) {
        return NULL;
    }

    up.data = (const unsigned char *) upstream;
    up.len = strlen(upstream);

    k = llmr_rewrite(&rq.f, &up, repl, edits);

    for (n = 0, i = 0; i < k; i++) {
        n += edits[i].len;
    }

    if (n > llmr_rewrite_size(&rq.f, up.len)
        || (k == 2 && edits[0].end > edits[1].start))
    {
        return NULL;
    }

    return splice(body, edits, k);
}


static void
test_tokens(void)
{
    const unsigned char  *s;

    tap_is(llmr_estimate_tokens((const unsigned char *) "", 0), 0,
           "tokens: empty");

    s = (const unsigned char *) "hello world";
    tap_is(llmr_estimate_tokens(s, 11), 2, "tokens: two short words");

    s = (const unsigned char *) "internationalization";
    tap_is(llmr_estimate_tokens(s, 20), 5, "tokens: a long word");

    s = (const unsigned char *) "1234567";
    tap_is(llmr_estimate_tokens(s, 7), 3, "tokens: digits in threes");

    s = (const unsigned char *) "a, b!\n\nc";
    tap_is(llmr_estimate_tokens(s, 8), 6, "tokens: punctuation, newlines");

    s = (const unsigned char *) "\xe4\xbd\xa0\xe5\xa5\xbd";
    tap_is(llmr_estimate_tokens(s, 6), 2, "tokens: a token a CJK character");
}


static void
test_code(void)
{
    const char  *s;

    s = "look:\n```\nx = 1\n```";
    tap_is(llmr_looks_like_code((const unsigned char *) s, strlen(s)), 1,
           "code: a fence");

    s = "int main() {\n    return 0;\n}";
    tap_is(llmr_looks_like_code((const unsigned char *) s, strlen(s)), 1,
           "code: C lines");

    s = "def f(x):\n    return x";
    tap_is(llmr_looks_like_code((const unsigned char *) s, strlen(s)), 1,
           "code: python keywords");

    s = "What is the capital of France? Tell me; quickly.";
    tap_is(llmr_looks_like_code((const unsigned char *) s, strlen(s)), 0,
           "code: prose");

    s = "x = 1;";
    tap_is(llmr_looks_like_code((const unsigned char *) s, strlen(s)), 0,
           "code: one line is not enough");
}


static void
test_keywords(void)
{
    const char  *s;

#define match(text)                                                           \
    llmr_keywords_match(&kw, (const unsigned char *) (text), strlen(text))

    tap_is(match("Please ANALYZE this"), 1, "keywords: case-insensitive");
    tap_is(match("the analyzer"), 0, "keywords: whole words only");
    tap_is(match("reanalyze"), 0, "keywords: word start only");
    tap_is(match("explain\n  why it fails"), 1, "keywords: phrase spacing");
    tap_is(match("explain it"), 0, "keywords: phrase needs all words");
    tap_is(match("write a poem, then analyze"), 3, "keywords: two lists");
    tap_is(match("analyze."), 1, "keywords: at the end, before a dot");

    s = "c++ is fun";
    tap_is(llmr_keywords_match(&kw, (const unsigned char *) s, strlen(s)), 4,
           "keywords: a phrase of symbols");

#undef match
}


static void
test_features(void)
{
    size_t           chunk;
    llmr_request_t   rq, whole;
    const char      *body;

    body = "{\"model\":\"auto\",\"messages\":["
           "{\"role\":\"system\",\"content\":\"You are terse.\"},"
           "{\"role\":\"user\",\"content\":\"Please analyze this code\"},"
           "{\"role\":\"assistant\",\"content\":\"int x = 1;\\nx++;\"},"
           "{\"content\":[{\"type\":\"text\",\"text\":\"compare it\"},"
           "{\"type\":\"image_url\",\"image_url\":{\"url\":\"data:xx\"}}],"
           "\"role\":\"user\"}],"
           "\"stream\":true,\"max_tokens\":300,"
           "\"tools\":[{\"type\":\"function\"}]}";

    tap_is(parse(&whole, body, 0, 6), LLMR_OK, "features: parses");
    tap_is(whole.f.messages, 4, "features: messages");
    tap_is(whole.f.stream, 1, "features: stream");
    tap_is(whole.f.tools, 1, "features: tools");
    tap_is(whole.f.max_tokens, 300, "features: max_tokens");
    tap_is(whole.f.code, 1, "features: code in the history window");
    tap_is(whole.f.keywords, 0, "features: keywords of the current only");
    tap_is_str((char *) whole.f.model, whole.f.model_len, "auto",
               "features: model");

    /* "compare it" + "Please analyze this code" + ... : role is counted */
    tap_ok(whole.f.est_tokens > 10, "features: window tokens counted");

    for (chunk = 1; chunk < 9; chunk++) {
        parse(&rq, body, chunk, 6);

        if (memcmp(&rq.f, &whole.f, sizeof(llmr_features_t)) != 0) {
            break;
        }
    }

    tap_is(chunk, 9, "features: identical whatever the buffer split");

    parse(&rq, body, 0, 0);
    tap_is(rq.f.code, 0, "features: no history, no code from it");
    tap_ok(rq.f.est_tokens < whole.f.est_tokens,
           "features: no history, fewer tokens");

    body = "{\"messages\":[{\"role\":\"user\",\"content\":\"Analyze it\"},"
           "{\"role\":\"assistant\",\"content\":\"ok\"}]}";

    parse(&rq, body, 0, 6);
    tap_is(rq.f.keywords, 1, "features: current is the last user message");
    tap_is(rq.f.model_present, 0, "features: no model");
    tap_is(rq.f.max_tokens, -1, "features: no max_tokens");

    body = "{\"messages\":[{\"role\":\"user\",\"content\":\"hi\"},"
           "{\"role\":\"assistant\",\"tool_calls\":[{\"function\":"
           "{\"arguments\":\"{}\"}}]},"
           "{\"role\":\"tool\",\"content\":\"```\\nlong output\\n```\"}]}";

    parse(&rq, body, 0, 0);
    tap_is(rq.f.code, 1, "features: the turn includes tool results");
    tap_ok(rq.f.est_tokens > 5, "features: the turn's tokens add up");

    body = "{\"messages\":[{\"role\":\"system\",\"content\":\"analyze\"}]}";

    parse(&rq, body, 0, 6);
    tap_is(rq.f.keywords, 1, "features: without a user, the last message");

    body = "{\"messages\":[{\"role\":\"user\",\"content\":null}],"
           "\"tools\":[]}";

    tap_is(parse(&rq, body, 0, 6), LLMR_OK, "features: null content");
    tap_is(rq.f.tools, 0, "features: empty tools");
}


static void
test_rewrite(void)
{
    char  *out;

#define check(body, expected, name)                                           \
    out = rewrite(body, "\"gpt-x\"", 0);                                      \
    tap_is_str(out, out ? strlen(out) : 0, expected, name);                   \
    free(out);                                                                \
    out = rewrite(body, "\"gpt-x\"", 1);                                      \
    tap_is_str(out, out ? strlen(out) : 0, expected, name " (byte by byte)"); \
    free(out)

    check("{\"model\":\"auto\",\"messages\":[{}]}",
          "{\"model\":\"gpt-x\",\"messages\":[{}]}",
          "rewrite: model replaced");

    check("{ \"messages\" : [ {} ] , \"model\" \n:\t \"a\\\"b\" }",
          "{ \"messages\" : [ {} ] , \"model\" \n:\t \"gpt-x\" }",
          "rewrite: white space kept, escaped value");

    /* found by fuzz/request.c: the value was spliced from the '\v' */

    check("{\"model\"\v:\f\"a\",\"messages\":[{}]}",
          "{\"model\"\v:\f\"gpt-x\",\"messages\":[{}]}",
          "rewrite: '\\v' and '\\f' are white space, as for yajl");

    check("{\"messages\":[{}]}",
          "{\"model\":\"gpt-x\",\"messages\":[{}]}",
          "rewrite: model inserted");

    check("{\"model\":null,\"messages\":[{}],\"stream\":true}",
          "{\"model\":\"gpt-x\",\"stream_options\":{\"include_usage\":true},"
          "\"messages\":[{}],\"stream\":true}",
          "rewrite: stream options injected");

    check("{\"stream\":true,\"messages\":[{}]}",
          "{\"model\":\"gpt-x\",\"stream_options\":{\"include_usage\":true},"
          "\"stream\":true,\"messages\":[{}]}",
          "rewrite: inserted with stream options");

    check("{\"model\":\"m\",\"stream\":true,\"stream_options\":{},"
          "\"messages\":[{}]}",
          "{\"model\":\"gpt-x\",\"stream\":true,\"stream_options\":"
          "{\"include_usage\":true},\"messages\":[{}]}",
          "rewrite: client stream options ask for usage");

    check("{\"model\":\"m\",\"stream\":false,\"messages\":[{}]}",
          "{\"model\":\"gpt-x\",\"stream\":false,\"messages\":[{}]}",
          "rewrite: no stream options without a stream");

#undef check
}


static void
test_errors(void)
{
    int              i;
    char             deep[200];
    llmr_request_t   rq;

    static const struct {
        const char  *body;
        const char  *error;
    } bad[] = {
        { "", "request body is empty" },
        { "{\"messages\":[{}]", "request body is not valid JSON (at byte 16)"
                                ": parse error: premature EOF" },
        { "{\"messages\":[{\"content\":\"\xff\"}]}",
          "request body is not valid UTF-8 (at byte 26)" },
        { "[1]", "request body must be a JSON object" },
        { "\"x\"", "request body must be a JSON object" },
        { "{}", "missing required parameter: 'messages'" },
        { "{\"messages\":{}}",
          "invalid type for 'messages': expected an array of objects" },
        { "{\"messages\":[1]}",
          "invalid type for 'messages': expected an array of objects" },
        { "{\"messages\":[]}", "'messages' must be a non-empty array" },
        { "{\"model\":1,\"messages\":[{}]}",
          "invalid type for 'model': expected a string" },
        { "{\"stream\":\"yes\",\"messages\":[{}]}",
          "invalid type for 'stream': expected a boolean" },
        { "{\"model\":\"a\",\"model\":\"b\",\"messages\":[{}]}",
          "duplicate key 'model' in request body" },
        { "{\"messages\":[{}]} x", "request body is not valid JSON (at byte 19)"
                                   ": parse error: trailing garbage" },
        { NULL, NULL }
    };

    for (i = 0; bad[i].body; i++) {
        tap_is(parse(&rq, bad[i].body, 0, 6), LLMR_ERROR, bad[i].error);
        tap_is_str(rq.error, strlen(rq.error), bad[i].error, "  message");
    }

    memset(deep, '[', sizeof(deep));
    memcpy(deep, "{\"x\":", 5);
    deep[sizeof(deep) - 1] = '\0';

    tap_is(parse(&rq, deep, 0, 6), LLMR_ERROR, "errors: deep nesting");
    tap_is_str(rq.error, strlen(rq.error),
               "request body is nested too deeply", "  message");
}


static int
external(void *data, const llmr_cond_t *cond)
{
    (void) data;

    return cond->name.len == 7 && memcmp(cond->name.data, "$x=gold", 7) == 0;
}


/* a condition parsed, its error in the caller's err[] */

#define cond(c, text)                                                         \
    llmr_cond_parse(c, (const unsigned char *) (text), strlen(text), err,     \
                    sizeof(err))


static void
test_rules(void)
{
    char              err[LLMR_ERROR_MAX];
    llmr_cond_t       c[6];
    llmr_rule_t       rules[3];
    llmr_features_t   f;

    tap_is(cond(&c[0], "tokens>100"), LLMR_OK, "cond: tokens>");
    tap_is(c[0].type == LLMR_COND_TOKENS_GT && c[0].arg == 100, 1,
           "  type and number");
    tap_is(cond(&c[1], "!code"), LLMR_OK, "cond: negation");
    tap_is(c[1].type == LLMR_COND_CODE && c[1].negate, 1, "  negated code");
    tap_is(cond(&c[2], "keywords=complex"), LLMR_OK, "cond: keywords");
    tap_is_str((char *) c[2].name.data, c[2].name.len, "complex",
               "  list name");
    tap_is(cond(&c[3], "$x=gold"), LLMR_OK, "cond: a variable");
    tap_is(c[3].type, LLMR_COND_EXTERNAL, "  is external");
    tap_is(cond(&c[4], "messages<3"), LLMR_OK, "cond: messages<");
    tap_is(cond(&c[5], "tools"), LLMR_OK, "cond: tools");

    tap_is(cond(&c[0], "tokens>1k"), LLMR_ERROR, "cond: bad number");
    tap_is_str(err, strlen(err), "invalid number \"1k\"", "  message");
    tap_is(cond(&c[0], "longish"), LLMR_ERROR, "cond: unknown");
    tap_is_str(err, strlen(err), "unknown condition \"longish\"",
               "  message");
    tap_is(cond(&c[0], "!"), LLMR_ERROR, "cond: empty");
    tap_is(cond(&c[0], "keywords="), LLMR_ERROR, "cond: no list name");

    cond(&c[0], "tokens>100");
    cond(&c[1], "!code");
    cond(&c[2], "keywords=complex");
    c[2].arg = 1;
    cond(&c[3], "$x=gold");

    rules[0].conds = &c[0];
    rules[0].nconds = 2;
    rules[1].conds = &c[2];
    rules[1].nconds = 1;
    rules[2].conds = &c[3];
    rules[2].nconds = 1;

    memset(&f, 0, sizeof(f));

    tap_is(llmr_rules_eval(rules, 3, &f, external, NULL), 2,
           "rules: the external condition");
    tap_is(llmr_rules_eval(rules, 3, &f, NULL, NULL), -1,
           "rules: nothing matches");

    f.est_tokens = 101;
    tap_is(llmr_rules_eval(rules, 3, &f, NULL, NULL), 0,
           "rules: conditions ANDed");
    f.code = 1;
    tap_is(llmr_rules_eval(rules, 3, &f, NULL, NULL), -1,
           "rules: negation fails the rule");
    f.keywords = 2;
    tap_is(llmr_rules_eval(rules, 3, &f, NULL, NULL), 1,
           "rules: keywords by list bit");
    f.code = 0;
    tap_is(llmr_rules_eval(rules, 3, &f, NULL, NULL), 0,
           "rules: first match wins");

}


static void
test_money(void)
{
    size_t          n;
    uint64_t        price;
    llmr_model_t    models[2];
    llmr_tokens_t   t;
    unsigned char   buf[LLMR_USD_MAX];

#define price_ok(text)                                                        \
    llmr_price_parse((const unsigned char *) (text), strlen(text), &price)

    tap_is(price_ok("0.15"), LLMR_OK, "price: 0.15");
    tap_is(price, 150000, "  pico-USD per token");
    tap_is(price_ok("10"), LLMR_OK, "price: 10");
    tap_is(price, 10000000, "  pico-USD per token");
    tap_is(price_ok("0.000001"), LLMR_OK, "price: six decimals");
    tap_is(price, 1, "  one pico-USD");
    tap_is(price_ok("1000"), LLMR_OK, "price: the maximum");
    tap_is(price_ok("1000.000001"), LLMR_ERROR, "price: over the maximum");
    tap_is(price_ok("0.0000001"), LLMR_ERROR, "price: seven decimals");
    tap_is(price_ok("-1"), LLMR_ERROR, "price: negative");
    tap_is(price_ok(".5"), LLMR_ERROR, "price: no integer part");
    tap_is(price_ok("5."), LLMR_ERROR, "price: no decimals");
    tap_is(price_ok("1.2.3"), LLMR_ERROR, "price: two dots");
    tap_is(price_ok(""), LLMR_ERROR, "price: empty");

#undef price_ok

    memset(models, 0, sizeof(models));
    models[0].name.data = (const unsigned char *) "mini";
    models[0].name.len = 4;
    models[0].upstream.data = (const unsigned char *) "gpt-4o-mini";
    models[0].upstream.len = 11;
    models[0].price_in = 150000;
    models[0].price_out = 600000;
    models[1].name.data = (const unsigned char *) "large";
    models[1].name.len = 5;
    models[1].upstream.data = (const unsigned char *) "gpt-4o";
    models[1].upstream.len = 6;

#define find(name)                                                            \
    llmr_model_find(models, 2, LLMR_API_CHAT, (const unsigned char *) name,   \
                    strlen(name))

    tap_is(find("large"), 1, "model: by name");
    tap_is(find("gpt-4o-mini"), 0, "model: by upstream name");
    tap_is(find("gpt-4"), -1, "model: unknown");

    models[1].api = LLMR_API_MESSAGES;
    tap_is(find("large"), -1, "model: of another dialect");
    models[1].api = LLMR_API_CHAT;

#undef find

    memset(&t, 0, sizeof(llmr_tokens_t));
    t.prompt = 9;
    t.completion = 17;
    llmr_model_prices(&models[0], CHAT, 0, 0);
    tap_is(llmr_cost(&models[0], &t), 11550000, "cost: 9 in, 17 out");

    n = llmr_usd_format(buf, 11550000);
    tap_is_str((char *) buf, n, "0.00001155", "usd: small");
    n = llmr_usd_format(buf, 0);
    tap_is_str((char *) buf, n, "0", "usd: zero");
    n = llmr_usd_format(buf, 2500000000000ULL);
    tap_is_str((char *) buf, n, "2.5", "usd: dollars");
    n = llmr_usd_format(buf, UINT64_MAX);
    tap_is_str((char *) buf, n, "18446744.073709551615", "usd: the maximum");
}


static void
test_usage(void)
{
    size_t          chunk;
    llmr_usage_t    u;
    llmr_tokens_t   t;
    const char     *text;

    text = "{\"id\":\"x\",\"choices\":[{\"message\":{\"content\":\"Hi "
           "\\\"usage\\\": you\"}}],\"usage\":{\"prompt_tokens\":12,"
           "\"completion_tokens\":7,\"total_tokens\":19}}";

    for (chunk = 0; chunk < 5; chunk++) {
        feed_usage(&u, CHAT, 0, text, chunk);

        if (PROMPT(u) != 12 || COMPLETION(u) != 7) {
            break;
        }
    }

    tap_is(chunk, 5, "usage: JSON, whatever the buffer split");
    tap_is(u.content_bytes, 15, "usage: decoded content bytes counted");

    text = "data: {\"choices\":[{\"delta\":{\"content\":\"ab\"}}],"
           "\"usage\":null}\n\n"
           "data: {\"choices\":[],\"usage\":{\"prompt_tokens\":5,"
           "\"completion_tokens\":3}}\r\n\r\n"
           "data: [DONE]\n\n";

    for (chunk = 0; chunk < 7; chunk++) {
        feed_usage(&u, CHAT, 1, text, chunk);

        if (PROMPT(u) != 5 || COMPLETION(u) != 3) {
            break;
        }
    }

    tap_is(chunk, 7, "usage: SSE, whatever the buffer split");
    tap_is(u.content_bytes, 2, "usage: SSE content bytes");

    feed_usage(&u, CHAT, 1,
               "data: {\"choices\":[{\"delta\":{\"content\":\"abcdefgh\"}}]}"
               "\n\ndata: [DONE]\n\n", 0);
    tap_is(PROMPT(u), -1, "usage: SSE without usage");
    tap_is(llmr_usage_content_tokens(&u), 2, "usage: content estimate");

    feed_usage(&u, CHAT, 0, "{\"x\":{\"usage\":{\"prompt_tokens\":1,"
               "\"completion_tokens\":2}}}", 0);
    tap_is(PROMPT(u), -1, "usage: only at the top level");

    feed_usage(&u, CHAT, 0,
               "{\"usage\":{\"input_tokens\":4,\"output_tokens\":6}}", 0);
    tap_is(PROMPT(u) == 4 && COMPLETION(u) == 6, 1,
           "usage: input and output tokens");

    feed_usage(&u, CHAT, 0, "{\"usage\":{\"prompt_tokens\":4}}", 0);
    tap_is(llmr_usage_tokens(&u, &t), 0, "usage: incomplete usage is ignored");

    feed_usage(&u, CHAT, 1,
               "event: x\n: comment\ndata: {\"usage\":{\"prompt_tokens\":"
               "99999999999999,\"completion_tokens\":1}}\n", 0);
    tap_is(PROMPT(u), 1000000000, "usage: numbers are bounded");
}


typedef struct {
    unsigned   n;
    unsigned   message[256];
    uint32_t   hash[256];
} collected_t;


static void
collect(void *data, unsigned message, uint32_t hash)
{
    collected_t  *c = data;

    if (c->n < 256) {
        c->message[c->n] = message;
        c->hash[c->n] = hash;
        c->n++;
    }
}


typedef struct {
    double                     z;
    const llmr_classifier_t   *c;
} dense_sum_t;


static void
collect_dense(void *data, unsigned message, uint32_t hash)
{
    dense_sum_t  *sum = data;

    (void) message;

    sum->z += sum->c->weights[hash & sum->c->mask];
}


static int
features_of(const char *text, collected_t *c)
{
    char            body[256];
    llmr_request_t  rq;

    snprintf(body, sizeof(body),
             "{\"messages\":[{\"role\":\"user\",\"content\":\"%s\"}]}",
             text);

    memset(c, 0, sizeof(collected_t));

    if (llmr_request_init(&rq, CHAT, NULL, 6) != LLMR_OK) {
        return LLMR_ERROR;
    }

    rq.feature = collect;
    rq.feature_data = c;

    llmr_request_feed(&rq, (const unsigned char *) body, strlen(body));
    llmr_request_finish(&rq);
    llmr_request_free(&rq);

    return LLMR_OK;
}


/*
 * A long string read without yajl (llmr_stand_in()) reads as yajl reads
 * it: scan_limit 0 has yajl read every string.  Every escape is there,
 * surrogates paired and lone, UTF-8 and \u0000.
 */

typedef struct {
    uint32_t   n;
    uint64_t   sum;
} hashed_t;


static void
hash_features(void *data, unsigned message, uint32_t hash)
{
    hashed_t  *h = data;

    h->n++;
    h->sum = h->sum * 31 + hash + message;
}


static int
stand_in_parse(const char *body, size_t limit, size_t chunk,
    llmr_features_t *f, hashed_t *h, char *error)
{
    int             rc;
    llmr_request_t  rq;

    if (llmr_request_init(&rq, CHAT, &kw, 6) != LLMR_OK) {
        return LLMR_ERROR;
    }

    memset(h, 0, sizeof(hashed_t));
    rq.scan_limit = limit;
    rq.feature = hash_features;
    rq.feature_data = h;

    rc = feed_request(&rq, body, chunk);

    *f = rq.f;
    memcpy(error, rq.error, LLMR_ERROR_MAX);

    return rc;
}


static void
test_stand_in(void)
{
    int              i, rc0, rc1;
    char             body[8192], e0[LLMR_ERROR_MAX], e1[LLMR_ERROR_MAX];
    char            *p;
    size_t           chunks[] = { 0, 7, 300 };
    unsigned         k;
    hashed_t         h0, h1;
    llmr_features_t  f0, f1;

    static const char  *piece =
        "Explain why, step by step: \\\"quoted\\\" \\\\ back\\/slash "
        "caf\\u00e9 \\u4E2D\\u6587 \\ud83d\\ude00 lone \\ud800 low "
        "\\udc00 nul \\u0000 \\b\\f\\r\\n\\tdef f(x):\\n    return x;\\n}\\n "
        "caf\xc3\xa9 \xe4\xb8\xad 42 analyze ";

    static const char  *bad[] = {
        "tab\there", "x\\x", "\\u12G4", "\xc3(", "\xff", "\xe4\xb8",
        "\\u00"
    };

    p = body;
    p += sprintf(p, "{\"messages\":[{\"role\":\"user\",\"content\":\"");

    for (i = 0; i < 12; i++) {
        p += sprintf(p, "%s", piece);
    }

    sprintf(p, "\"}],\"model\":\"gpt-4o\"}");

    for (k = 0; k < 3; k++) {
        rc0 = stand_in_parse(body, 0, chunks[k], &f0, &h0, e0);
        rc1 = stand_in_parse(body, LLMR_SCAN_LIMIT, chunks[k], &f1, &h1, e1);

        tap_ok(rc0 == LLMR_OK && rc1 == LLMR_OK,
               "stand-in: a long string with every escape");
        tap_is(f1.est_tokens, f0.est_tokens, "stand-in: the same tokens");
        tap_ok(h1.n == h0.n && h1.sum == h0.sum && h0.n > 100,
               "stand-in: the same words, decoded as yajl does");
        tap_ok(f1.code == f0.code && f0.code
               && f1.keywords == f0.keywords && f0.keywords == 1,
               "stand-in: the same code and keywords");
        tap_ok(f1.model_start == f0.model_start
               && f1.model_end == f0.model_end
               && f1.body_len == f0.body_len
               && f1.model_end == strlen(body) - 1,
               "stand-in: the same offsets after it");
    }

    /* what yajl refuses in a string, refused in a long one */

    for (k = 0; k < 2 * sizeof(bad) / sizeof(bad[0]); k++) {
        p = body;
        p += sprintf(p, "{\"messages\":[{\"role\":\"user\",\"content\":\"");

        for (i = 0; i < 300; i++) {
            *p++ = 'a';
        }

        /* in the middle of the string, and at its end */
        sprintf(p, "%s%s\"}]}", bad[k / 2], (k & 1) ? "" : " and more");

        rc0 = stand_in_parse(body, 0, 0, &f0, &h0, e0);
        rc1 = stand_in_parse(body, LLMR_SCAN_LIMIT, 0, &f1, &h1, e1);

        tap_ok(rc0 == LLMR_ERROR && rc1 == LLMR_ERROR
               && (strstr(e0, "UTF-8") != NULL)
                  == (strstr(e1, "UTF-8") != NULL)
               && strncmp(e1, "request body is not valid", 25) == 0,
               "stand-in: refuses a bad string as yajl does");
    }
}


static void
test_classifier(void)
{
    char                err[LLMR_ERROR_MAX];
    size_t              i, len, chunk;
    double              expect, scale;
    float              *w;
    unsigned char      *file;
    dense_sum_t         sum;
    collected_t         a, b, col;
    llmr_cond_t         cond;
    llmr_request_t      rq;
    llmr_classifier_t   c;
    const char         *body;

    features_of("17 Apples?", &a);
    features_of("42 apples?", &b);
    tap_ok(a.n == 6 && a.n == b.n
           && memcmp(a.hash, b.hash, a.n * sizeof(uint32_t)) == 0,
           "classifier: numbers and case fold to the same features");
    features_of("apples 17?", &b);
    tap_ok(memcmp(a.hash, b.hash, a.n * sizeof(uint32_t)) != 0,
           "classifier: word order makes other pairs");

    w = malloc(sizeof(float) << 10);
    for (i = 0; i < 1024; i++) {
        w[i] = (float) (sin((double) i) * 0.5);
    }

    len = llmr_classifier_size(10);
    tap_is(len, 24 + 4096 + 4, "classifier: file size");

    file = malloc(len);
    llmr_classifier_write(file, 10, 6, 0.25f, w);

    tap_is(llmr_classifier_load(&c, file, len, err, sizeof(err)), LLMR_OK,
           "classifier: loads what was written");
    tap_ok(c.bits == 10 && c.bias == 0.25f && c.weights[7] == w[7],
           "classifier: bits, bias and weights");

    tap_is(llmr_classifier_load(&c, file, len - 1, err, sizeof(err)),
           LLMR_ERROR, "classifier: truncated");
    tap_is_str(err, strlen(err), "truncated classifier file: 4123 bytes, "
               "4124 expected", "  message");

    file[100] ^= 1;
    tap_is(llmr_classifier_load(&c, file, len, err, sizeof(err)),
           LLMR_ERROR, "classifier: corrupt");
    tap_is_str(err, strlen(err), "corrupt classifier file: bad checksum",
               "  message");
    file[100] ^= 1;

    file[8] = 2;
    tap_is(llmr_classifier_load(&c, file, len, err, sizeof(err)),
           LLMR_ERROR, "classifier: another version");
    tap_is_str(err, strlen(err), "classifier file version 2, version 1 "
               "expected", "  message");
    file[8] = 1;

    tap_is(llmr_classifier_load(&c, (const unsigned char *) "hello", 5,
                                err, sizeof(err)),
           LLMR_ERROR, "classifier: not a classifier");

    /* found by fuzz/model.c: a NaN made every score NaN */

    w[7] = NAN;
    llmr_classifier_write(file, 10, 6, 0.25f, w);
    tap_is(llmr_classifier_load(&c, file, len, err, sizeof(err)),
           LLMR_ERROR, "classifier: a NaN weight is refused");
    tap_is_str(err, strlen(err), "invalid classifier file: weight 7 is not "
               "a finite number", "  message");
    w[7] = (float) (sin(7.0) * 0.5);

    llmr_classifier_write(file, 10, 6, INFINITY, w);
    tap_is(llmr_classifier_load(&c, file, len, err, sizeof(err)),
           LLMR_ERROR, "classifier: an infinite bias is refused");
    tap_is_str(err, strlen(err), "invalid classifier file: the bias is not "
               "a finite number", "  message");

    llmr_classifier_write(file, 10, 6, 0.25f, w);
    llmr_classifier_load(&c, file, len, err, sizeof(err));

    body = "{\"messages\":[{\"role\":\"system\",\"content\":\"Be brief.\"},"
           "{\"role\":\"user\",\"content\":\"What is 2+2?\"},"
           "{\"role\":\"assistant\",\"content\":\"4\"},"
           "{\"role\":\"user\",\"content\":\"Prove that it is 4.\"}],"
           "\"max_tokens\":100}";

    /* the score, and the same sum taken over the collected features */

    llmr_request_init(&rq, CHAT, NULL, 6);
    rq.classifier = &c;
    rq.feature = collect;
    rq.feature_data = &col;
    memset(&col, 0, sizeof(col));
    llmr_request_feed(&rq, (const unsigned char *) body, strlen(body));
    tap_is(llmr_request_finish(&rq), LLMR_OK, "classifier: scores");

    scale = llmr_text_scale(&rq);
    sum.z = c.bias;
    sum.c = &c;

    for (i = 0; i < col.n; i++) {
        sum.z += llmr_message_factor(&rq, col.message[i]) * scale
                 * c.weights[col.hash[i] & c.mask];
    }

    llmr_dense_features(&rq, collect_dense, &sum);

    expect = 1.0 / (1.0 + exp(-sum.z));
    llmr_request_free(&rq);

    tap_ok(fabs(rq.f.score - expect) < 1e-9,
           "classifier: the score is the model on the features");
    tap_ok(llmr_message_factor(&rq, 3) == 1.0
           && llmr_message_factor(&rq, 1) == LLMR_HISTORY_FACTOR,
           "classifier: turn and window factors");

    for (chunk = 1; chunk < 7; chunk++) {
        llmr_request_t  r2;

        llmr_request_init(&r2, CHAT, NULL, 6);
        r2.classifier = &c;
        (void) feed_request(&r2, body, chunk);

        if (memcmp(&r2.f.score, &rq.f.score, sizeof(double)) != 0) {
            break;
        }
    }

    tap_is(chunk, 7, "classifier: the same bits whatever the buffer split");

#define cond_parse(text)                                                      \
    llmr_cond_parse(&cond, (const unsigned char *) (text), strlen(text), err, \
                    sizeof(err))

    tap_is(cond_parse("score>0.62"), LLMR_OK, "cond: score>");
    tap_ok(cond.type == LLMR_COND_SCORE_GT && fabs(cond.score - 0.62) < 1e-12,
           "  threshold");
    tap_is(cond_parse("score<1"), LLMR_OK, "cond: score<1");
    tap_is(cond_parse("score>1.5"), LLMR_ERROR, "cond: score over 1");
    tap_is(cond_parse("score>.5"), LLMR_ERROR, "cond: score without 0");

#undef cond_parse

    free(file);
    free(w);
}


static int
refusal(void *data, const unsigned char *p, size_t len)
{
    (void) data;

    return len >= 8 && memcmp(p, "I cannot", 8) == 0;
}


static llmr_verdict_e
verdict(llmr_criteria_t *c, const char *answer, int sse, char *content)
{
    llmr_verdict_e  v;
    llmr_answer_t   a;
    unsigned char   buf[512];

    llmr_answer_init(&a, CHAT, c, buf, sizeof(buf));
    v = llmr_answer_check(&a, (const unsigned char *) answer, strlen(answer),
                          sse);

    if (content) {
        memcpy(content, a.content, a.content_len);
        content[a.content_len] = '\0';
    }

    return v;
}


static void
test_answer(void)
{
    char             content[512];
    llmr_criteria_t  c;

#define answer(content, finish)                                               \
    "{\"choices\":[{\"index\":0,\"message\":{\"role\":\"assistant\","        \
    "\"content\":" content "},\"finish_reason\":\"" finish "\"}],"            \
    "\"usage\":{\"prompt_tokens\":1}}"

    memset(&c, 0, sizeof(c));
    c.finish = 1;
    c.empty = 1;

    tap_is(verdict(&c, answer("\"Paris.\"", "stop"), 0, content),
           LLMR_VERDICT_OK, "answer: a good one");
    tap_is_str(content, strlen(content), "Paris.", "  its content");
    tap_is(verdict(&c, answer("\"Par\"", "length"), 0, NULL),
           LLMR_VERDICT_LENGTH, "answer: cut by the length limit");
    tap_is(verdict(&c, answer("\"\"", "content_filter"), 0, NULL),
           LLMR_VERDICT_CONTENT_FILTER, "answer: filtered");
    tap_is(verdict(&c, answer("\" \\n\\t \"", "stop"), 0, NULL),
           LLMR_VERDICT_EMPTY, "answer: white space only");
    tap_is(verdict(&c, answer("null", "stop"), 0, NULL),
           LLMR_VERDICT_EMPTY, "answer: null content");
    tap_is(verdict(&c, "{\"choices\":[", 0, NULL),
           LLMR_VERDICT_UNREADABLE, "answer: unreadable");

    c.min_length = 10;
    tap_is(verdict(&c, answer("\"caf\\u00e9 caf\\u00e9\"", "stop"), 0, NULL),
           LLMR_VERDICT_SHORT, "answer: 9 characters are fewer than 10");
    tap_is(verdict(&c, answer("\"caf\\u00e9, caf\\u00e9\"", "stop"), 0,
                   NULL),
           LLMR_VERDICT_OK, "answer: 10 characters are enough");
    c.min_length = 0;

    c.pattern = refusal;
    tap_is(verdict(&c, answer("\"I cannot help with that.\"", "stop"), 0,
                   NULL),
           LLMR_VERDICT_PATTERN, "answer: a refusal pattern");
    c.pattern = NULL;

    c.require = refusal;
    c.require_data = NULL;
    tap_is(verdict(&c, answer("\"Here it is.\"", "stop"), 0, NULL),
           LLMR_VERDICT_REQUIRED, "answer: a required pattern is missing");
    tap_is(verdict(&c, answer("\"I cannot say.\"", "stop"), 0, NULL),
           LLMR_VERDICT_OK, "answer: the required pattern is there");
    tap_is_str(llmr_verdict_name(LLMR_VERDICT_REQUIRED), 8, "required",
               "  its name");
    c.require = NULL;

    c.json = 1;
    tap_is(verdict(&c, answer("\"{\\\"a\\\": [1, 2]}\"", "stop"), 0, NULL),
           LLMR_VERDICT_OK, "answer: JSON asked, JSON given");
    tap_is(verdict(&c, answer("\"{\\\"a\\\": [1, 2\"", "stop"), 0, NULL),
           LLMR_VERDICT_JSON, "answer: JSON asked, broken JSON given");
    c.json = 0;

    c.tool_args = 1;
    tap_is(verdict(&c, "{\"choices\":[{\"message\":{\"content\":null,"
                   "\"tool_calls\":[{\"function\":{\"name\":\"f\","
                   "\"arguments\":\"{\\\"x\\\": 1}\"}},{\"function\":{"
                   "\"arguments\":\"{\\\"y\\\":\"}}]},"
                   "\"finish_reason\":\"tool_calls\"}]}", 0, NULL),
           LLMR_VERDICT_TOOL_ARGS, "answer: a second tool call is broken");

    tap_is(verdict(&c, "data: {\"choices\":[{\"index\":0,\"delta\":{"
                   "\"tool_calls\":[{\"index\":0,\"function\":{"
                   "\"arguments\":\"{\\\"x\\\"\"}}]}}]}\n\n"
                   "data: {\"choices\":[{\"index\":0,\"delta\":{"
                   "\"tool_calls\":[{\"index\":0,\"function\":{"
                   "\"arguments\":\": 1}\"}}]},\"finish_reason\":"
                   "\"tool_calls\"}]}\n\ndata: [DONE]\n\n", 1, NULL),
           LLMR_VERDICT_OK, "answer: streamed tool arguments joined");

    tap_is(verdict(&c, "data: {\"choices\":[{\"delta\":{\"role\":"
                   "\"assistant\",\"content\":\"\"}}]}\n\n"
                   "data: {\"choices\":[{\"delta\":{\"content\":\"Hel\"}}]}"
                   "\r\n\r\ndata: {\"choices\":[{\"delta\":{\"content\":"
                   "\"lo\"},\"finish_reason\":null}]}\n\n"
                   "data: {\"choices\":[{\"delta\":{},\"finish_reason\":"
                   "\"length\"}]}\n\ndata: {\"choices\":[],\"usage\":{}}\n\n"
                   "data: [DONE]\n\n", 1, content),
           LLMR_VERDICT_LENGTH, "answer: a stream cut by the length limit");
    tap_is_str(content, strlen(content), "Hello", "  its content joined");

#undef answer
}


/* the triage request, from the text kept while parsing */

static size_t
triage_body(llmr_request_t *rq, const char *body, size_t chunk,
    unsigned char *buf, size_t slot, unsigned slots, size_t history,
    char *out)
{
    llmr_triage_t   t;
    llmr_capture_t  c;
    unsigned char  *end;

    llmr_request_init(rq, CHAT, &kw, 6);
    llmr_capture_init(&c, buf, slot, slots);
    rq->capture = &c;
    (void) feed_request(rq, body, chunk);

    t.dialect = CHAT;
    t.model.data = (const unsigned char *) "nano";
    t.model.len = 4;
    t.prompt.data = (const unsigned char *) "Judge \"it\".";
    t.prompt.len = 11;
    t.max_tokens = 8;
    t.history = history;

    end = llmr_triage_body(rq, &t, (unsigned char *) out);
    *end = '\0';

    llmr_request_free(rq);

    if ((size_t) (end - (unsigned char *) out)
        != llmr_triage_body_size(rq, &t))
    {
        return 0;
    }

    return end - (unsigned char *) out;
}


static void
test_triage(void)
{
    char             out[2048], label[LLMR_LABEL_MAX], err[LLMR_ERROR_MAX];
    size_t           n;
    unsigned char    buf[8 * 64];
    llmr_str_t       field;
    llmr_cond_t      c[3];
    llmr_rule_t      rules[2];
    llmr_request_t   rq;
    llmr_features_t  f;
    const char      *body;

    body = "{\"messages\":["
           "{\"role\":\"system\",\"content\":\"Be brief.\"},"
           "{\"role\":\"user\",\"content\":\"first\"},"
           "{\"role\":\"assistant\",\"content\":\"answer one\"},"
           "{\"content\":[{\"type\":\"text\",\"text\":\"compare\"},"
           "{\"type\":\"image_url\",\"image_url\":{\"url\":\"x\"}},"
           "{\"type\":\"text\",\"text\":\"th\\u00e9se\"}],\"role\":\"user\"},"
           "{\"role\":\"tool\",\"content\":\"42\"}]}";

#define expect(prefix, user)                                                  \
    "{\"model\":\"nano\",\"messages\":[{\"role\":\"system\",\"content\":"      \
    "\"Judge \\\"it\\\".\"},{\"role\":\"user\",\"content\":\"" prefix user     \
    "\"}],\"max_tokens\":8,\"temperature\":0,\"stream\":false}"

    /* text parts are joined by a newline, escaped as any control */

    n = triage_body(&rq, body, 7, buf, 64, 8, 1000, out);
    tap_is_str(out, n, expect("Conversation so far:\\nsystem: Be brief.\\n"
                              "user: first\\nassistant: answer one\\n"
                              "\\nRequest:\\n", "compare\\u000ath\xc3\xa9se"),
               "triage: history, then the current user message");

    n = triage_body(&rq, body, 3, buf, 64, 8, 12, out);
    tap_is_str(out, n, expect("Conversation so far:\\nassistant: answer one"
                              "\\n\\nRequest:\\n",
                              "compare\\u000ath\xc3\xa9se"),
               "triage: older messages only whole");

    n = triage_body(&rq, body, 64, buf, 64, 8, 4, out);
    tap_is_str(out, n, expect("Conversation so far:\\nassistant: answ"
                              "\\n\\nRequest:\\n",
                              "compare\\u000ath\xc3\xa9se"),
               "triage: the last message may be cut");

    n = triage_body(&rq, body, 64, buf, 64, 2, 1000, out);
    tap_is_str(out, n, expect("", "compare\\u000ath\xc3\xa9se"),
               "triage: two slots, no history");

    n = triage_body(&rq, body, 5, buf, 11, 2, 1000, out);
    tap_is_str(out, n, expect("", "compare\\u000ath"),
               "triage: a cut keeps UTF-8 whole");

    /* three slots: the tool messages after it do not push it out */

    body = "{\"messages\":[{\"role\":\"user\",\"content\":\"q\"},"
           "{\"role\":\"tool\",\"content\":\"1\"},"
           "{\"role\":\"tool\",\"content\":\"2\"},"
           "{\"role\":\"tool\",\"content\":\"3\"}]}";

    n = triage_body(&rq, body, 64, buf, 64, 3, 1000, out);
    tap_is_str(out, n, expect("", "q"),
               "triage: the current message stays in the ring");

#undef expect

    /* labels */

#define label_of(s, fld)                                                      \
    (field.data = (const unsigned char *) (fld), field.len = strlen(fld),    \
     llmr_triage_label((const unsigned char *) (s), strlen(s), &field,       \
                       (unsigned char *) label, &n))

    tap_is(label_of("Complex.", ""), LLMR_OK, "label: first word");
    tap_is_str(label, n, "complex", "  in lower case");
    tap_is(label_of("  **simple** because", ""), LLMR_OK,
           "label: after punctuation");
    tap_is_str(label, n, "simple", "  the word");
    tap_is(label_of("multi-step", ""), LLMR_OK, "label: a dash");
    tap_is_str(label, n, "multi-step", "  kept");
    tap_is(label_of("?! ...", ""), LLMR_ERROR, "label: no word");
    tap_is(label_of("abcdefghijklmnopqrstuvwxyz0123456", ""), LLMR_ERROR,
           "label: a word too long");
    tap_is(label_of("```json\n{\"why\":\"x\",\"label\":\"H\\u0041rd\"}\n```",
                    "label"), LLMR_OK, "label: a JSON field in a fence");
    tap_is_str(label, n, "hard", "  unescaped, in lower case");
    tap_is(label_of("{\"x\":{\"label\":\"deep\"}}", "label"), LLMR_ERROR,
           "label: a field of the top object only");
    tap_is(label_of("{\"label\":3}", "label"), LLMR_ERROR,
           "label: a string field");
    tap_is(label_of("complex", "label"), LLMR_ERROR,
           "label: no object, no field");

#undef label_of

    /* conditions and the walk */

    tap_is(cond(&c[0], "triage=a.b"), LLMR_ERROR, "triage: bad label");
    tap_is(cond(&c[0], "triage=Complex"), LLMR_OK, "triage: condition");
    tap_is(c[0].type, LLMR_COND_TRIAGE, "  its type");
    cond(&c[1], "code");
    cond(&c[2], "!triage=simple");

    rules[0].conds = &c[1];
    rules[0].nconds = 1;
    rules[1].conds = &c[0];
    rules[1].nconds = 1;

    memset(&f, 0, sizeof(f));
    f.code = 1;

    tap_is(llmr_rules_eval(rules, 2, &f, NULL, NULL), 0,
           "triage: a rule before it matches, no verdict needed");

    f.code = 0;
    tap_is(llmr_rules_eval(rules, 2, &f, NULL, NULL), LLMR_RULES_PENDING,
           "triage: the walk waits for the verdict");

    f.triage = LLMR_TRIAGE_DONE;
    memcpy(f.triage_label, "complex", 7);
    f.triage_len = 7;
    tap_is(llmr_rules_eval(rules, 2, &f, NULL, NULL), 1,
           "triage: the verdict matches, case-insensitively");

    rules[1].conds = &c[2];
    tap_is(llmr_rules_eval(rules, 2, &f, NULL, NULL), 1,
           "triage: a negated condition");

    f.triage = LLMR_TRIAGE_FAILED;
    tap_is(llmr_rules_eval(rules, 2, &f, NULL, NULL), -1,
           "triage: failed, even a negated condition is false");
}



/* RESP: commands as Redis reads them, replies whole or not yet */

static int
resp(const char *text, llmr_resp_t *reply)
{
    int     rc;
    size_t  used, len;

    len = strlen(text);
    used = 0;

    rc = llmr_resp_parse((const unsigned char *) text, len, reply, &used);

    return (rc == LLMR_OK && used != len) ? LLMR_ERROR : rc;
}


static void
test_resp(void)
{
    size_t          i, n, used;
    llmr_str_t      argv[3];
    llmr_resp_t     r;
    unsigned char   buf[128], *end;

    static const char  *whole = "*3\r\n:1\r\n:-5\r\n:9223372036854775807\r\n";

    argv[0].data = (const unsigned char *) "HGET";
    argv[0].len = 4;
    argv[1].data = (const unsigned char *) "k\r\n:1";
    argv[1].len = 5;
    argv[2].data = (const unsigned char *) "";
    argv[2].len = 0;

    end = llmr_resp_command(buf, 3, argv);
    tap_is_str((char *) buf, end - buf,
               "*3\r\n$4\r\nHGET\r\n$5\r\nk\r\n:1\r\n$0\r\n\r\n",
               "resp: a command, binary safe");
    tap_ok((size_t) (end - buf) <= llmr_resp_command_size(3, argv),
           "resp: the command fits its size");

    tap_ok(resp("+OK\r\n", &r) == LLMR_OK && r.type == LLMR_RESP_STATUS
           && r.text.len == 2, "resp: a status");
    tap_ok(resp("-NOAUTH Authentication required.\r\n", &r) == LLMR_OK
           && r.type == LLMR_RESP_ERROR && r.text.len == 31,
           "resp: an error");
    tap_ok(resp(":-42\r\n", &r) == LLMR_OK && r.integer == -42,
           "resp: an integer");
    tap_ok(resp("$3\r\na\r\n\r\n", &r) == LLMR_OK && r.text.len == 3
           && memcmp(r.text.data, "a\r\n", 3) == 0, "resp: a bulk string");
    tap_ok(resp("$-1\r\n", &r) == LLMR_OK && r.nil, "resp: nil");
    tap_ok(resp(whole, &r) == LLMR_OK && r.nitems == 3 && r.items[0] == 1
           && r.items[1] == -5 && r.items[2] == INT64_MAX,
           "resp: an array of integers");

    /* every prefix of a reply is not whole yet */

    for (i = 0; i < strlen(whole); i++) {
        if (llmr_resp_parse((const unsigned char *) whole, i, &r, &used)
            != LLMR_AGAIN)
        {
            break;
        }
    }

    tap_is(i, strlen(whole), "resp: a reply cut anywhere waits");

    n = strlen("+OK\r\n");
    tap_ok(llmr_resp_parse((const unsigned char *) "+OK\r\n:1\r\n",
                           n + 4, &r, &used)
           == LLMR_OK && used == n, "resp: one reply of two");

    tap_is(resp(":9223372036854775808\r\n", &r), LLMR_ERROR,
           "resp: an integer past int64");
    tap_is(resp(":-9223372036854775808\r\n", &r), LLMR_OK,
           "resp: the least int64");
    tap_is(resp(":1x\r\n", &r), LLMR_ERROR, "resp: not a number");
    tap_is(resp(":\r\n", &r), LLMR_ERROR, "resp: no number");
    tap_is(resp("*1\r\n+OK\r\n", &r), LLMR_ERROR,
           "resp: an array of other than integers");
    tap_is(resp("*129\r\n", &r), LLMR_ERROR, "resp: an array too long");
    tap_is(resp("$2\r\nabcd\r\n", &r), LLMR_ERROR, "resp: a bulk too long");
    tap_is(resp("+OK\n", &r), LLMR_AGAIN, "resp: LF alone is no line end");
    tap_is(resp("+OK\rX", &r), LLMR_ERROR, "resp: CR without LF");
    tap_is(resp("!3\r\n", &r), LLMR_ERROR, "resp: an unknown type");

    memset(buf, 'a', sizeof(buf));
    buf[0] = '+';
    tap_is(llmr_resp_parse(buf, sizeof(buf), &r, &used), LLMR_AGAIN,
           "resp: a line not ended yet");
}

int
main(void)
{
    static unsigned char  t0[] = "analyze", t1[] = "explain   why",
                          t2[] = "Poem", t3[] = "c++";
    static llmr_phrase_t  phrases[] = {
        { t0, 7, 0 }, { t1, 13, 0 }, { t2, 4, 1 }, { t3, 3, 2 }
    };

    if (llmr_keywords_init(&kw, phrases, 4, 3) != LLMR_OK) {
        printf("Bail out! keywords\n");
        return 1;
    }

    test_tokens();
    test_code();
    test_keywords();
    test_features();
    test_rewrite();
    test_errors();
    test_rules();
    test_money();
    test_usage();
    test_classifier();
    test_answer();
    test_triage();
    test_resp();
    test_stand_in();

    return tap_done();
}
