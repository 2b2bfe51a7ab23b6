
/*
 * Copyright (C) the ngx_http_llm_router_module authors
 *
 * Unit tests of the dialects, in TAP: Anthropic Messages and OpenAI
 * Responses requests, the chat stream's usage, usage and cost of cached
 * and reasoning tokens, answers, errors and triage requests.
 */


#include <stdlib.h>

#include "llmr.h"
#include "tap.h"
#include "feed.h"


#define CHAT       (&llmr_dialects[LLMR_API_CHAT])
#define MESSAGES   (&llmr_dialects[LLMR_API_MESSAGES])
#define RESPONSES  (&llmr_dialects[LLMR_API_RESPONSES])


/* a request parsed in buffers of `chunk` bytes (0: whole); rq is kept */

static int
parse(llmr_request_t *rq, const llmr_dialect_t *d, const char *body,
    size_t chunk)
{
    if (llmr_request_init(rq, d, NULL, 6) != LLMR_OK) {
        return LLMR_ERROR;
    }

    return feed_request(rq, body, chunk);
}


/* the body the provider gets: the edits spliced into the client's */

static char *
rewrite(const llmr_dialect_t *d, const char *body, size_t chunk)
{
    size_t           n;
    unsigned         i, k;
    llmr_str_t       up;
    llmr_edit_t      edits[LLMR_EDITS_MAX];
    unsigned char    repl[256];
    llmr_request_t   rq;

    if (parse(&rq, d, body, chunk) != LLMR_OK) {
        return NULL;
    }

    up.data = (const unsigned char *) "\"up\"";
    up.len = 4;

    k = llmr_rewrite(&rq.f, &up, repl, edits);

    for (n = 0, i = 0; i < k; i++) {
        n += edits[i].len;
    }

    if (n > llmr_rewrite_size(&rq.f, up.len)) {
        return NULL;
    }

    return splice(body, edits, k);
}


static void
is_rewrite(const llmr_dialect_t *d, const char *body, const char *expected,
    const char *name)
{
    char    *out;
    size_t   chunk;

    /* every cut of the body gives the same edits */

    for (chunk = 0; chunk < 8; chunk++) {
        out = rewrite(d, body, chunk);

        if (out == NULL || strcmp(out, expected) != 0) {
            break;
        }

        free(out);
    }

    if (chunk < 8) {
        tap_is_str(out, out ? strlen(out) : 0, expected, name);
        free(out);
        return;
    }

    tap_ok(1, name);
}


static int
has_tool(const llmr_features_t *f, const char *name)
{
    unsigned  i;
    uint32_t  h;

    h = llmr_tool_hash((const unsigned char *) name, strlen(name));

    for (i = 0; i < f->ntools; i++) {
        if (f->tool[i] == h) {
            return 1;
        }
    }

    return 0;
}


static void
test_paths(void)
{
#define path_is(p, api)                                                       \
    tap_is(llmr_dialect_of_path((const unsigned char *) (p), strlen(p))        \
           == &llmr_dialects[api], 1, "path: " p)

    path_is("/v1/chat/completions", LLMR_API_CHAT);
    path_is("/v1/messages", LLMR_API_MESSAGES);
    path_is("/anthropic/v1/messages", LLMR_API_MESSAGES);
    path_is("/v1/responses", LLMR_API_RESPONSES);

#undef path_is

    tap_is(llmr_dialect_of_path((const unsigned char *) "/v1/models", 10)
           == NULL, 1, "path: another API");
    tap_is(llmr_dialect_find((const unsigned char *) "messages", 8)
           == MESSAGES, 1, "dialect: by name");
    tap_is(llmr_dialect_find((const unsigned char *) "auto", 4) == NULL, 1,
           "dialect: auto is not one");
}


static void
test_messages(void)
{
    size_t           chunk;
    llmr_request_t   rq;
    const char      *body;

    body = "{\"model\":\"claude-sonnet-4-5\",\"max_tokens\":1024,"
           "\"system\":[{\"type\":\"text\",\"text\":\"You are terse. "
           "Answer in one line.\",\"cache_control\":{\"type\":"
           "\"ephemeral\"}}],"
           "\"thinking\":{\"type\":\"enabled\",\"budget_tokens\":2048},"
           "\"tools\":[{\"name\":\"get_weather\",\"description\":\"Weather "
           "of a city\",\"input_schema\":{\"type\":\"object\"}},"
           "{\"type\":\"web_search_20250305\",\"name\":\"web_search\"}],"
           "\"messages\":["
           "{\"role\":\"user\",\"content\":\"What is the weather?\"},"
           "{\"role\":\"assistant\",\"content\":[{\"type\":\"thinking\","
           "\"thinking\":\"The user wants weather\",\"signature\":\"c2ln\"},"
           "{\"type\":\"tool_use\",\"id\":\"toolu_1\",\"name\":"
           "\"get_weather\",\"input\":{\"city\":\"Paris\"}}]},"
           "{\"role\":\"user\",\"content\":[{\"type\":\"tool_result\","
           "\"tool_use_id\":\"toolu_1\",\"content\":[{\"type\":\"text\","
           "\"text\":\"def f(x):\\n    return x + 1\\n\"}]},"
           "{\"type\":\"image\",\"source\":{\"type\":\"base64\","
           "\"media_type\":\"image/png\",\"data\":\"iVBORw0KGgo=\"}}]}],"
           "\"stream\":true}";

    for (chunk = 0; chunk < 9; chunk++) {
        if (parse(&rq, MESSAGES, body, chunk) != LLMR_OK
            || rq.f.messages != 3 || !rq.f.thinking || !rq.f.images
            || !rq.f.tools || !rq.f.stream || !rq.f.code
            || rq.f.max_tokens != 1024 || rq.f.current != 2)
        {
            break;
        }
    }

    tap_is(chunk, 9, "messages: features, whatever the buffer split");
    tap_is(rq.f.api, LLMR_API_MESSAGES, "messages: the dialect");
    tap_is_str((char *) rq.f.model, rq.f.model_len, "claude-sonnet-4-5",
               "messages: the requested model");
    tap_ok(has_tool(&rq.f, "get_weather"), "messages: a declared tool");
    tap_ok(has_tool(&rq.f, "web_search"), "messages: a built-in tool");
    tap_ok(has_tool(&rq.f, "web_search_20250305"),
           "messages: a built-in tool by its type");
    tap_ok(!has_tool(&rq.f, "web"), "messages: no tool by a prefix");

    /* the system prompt and tools are prompt, not the current turn */

    tap_ok(rq.f.prompt_tokens > rq.f.est_tokens + 15,
           "messages: system and tools in the prompt estimate");

    tap_is(parse(&rq, MESSAGES, "{\"model\":\"x\",\"system\":\"a b c d e f "
                 "g h\",\"messages\":[{\"role\":\"user\",\"content\":"
                 "\"hi\"}]}", 0), LLMR_OK, "messages: system as a string");
    tap_ok(rq.f.prompt_tokens > 9, "  counted in the prompt");

    parse(&rq, MESSAGES, "{\"thinking\":{\"type\":\"disabled\"},\"messages\":"
          "[{\"role\":\"user\",\"content\":\"hi\"}]}", 0);
    tap_is(rq.f.thinking, 0, "messages: thinking disabled");

    tap_is(parse(&rq, MESSAGES, "{\"model\":\"x\",\"max_tokens\":5}", 0),
           LLMR_ERROR, "messages: without messages");
    tap_is_str(rq.error, strlen(rq.error),
               "missing required parameter: 'messages'",
               "  the error names them");

    /* no stream_options in any Messages body: the API refuses it */

    is_rewrite(MESSAGES, "{\"model\":\"a\",\"stream\":true,\"messages\":"
               "[{\"role\":\"user\",\"content\":\"hi\"}]}",
               "{\"model\":\"up\",\"stream\":true,\"messages\":"
               "[{\"role\":\"user\",\"content\":\"hi\"}]}",
               "messages: a stream is rewritten without stream_options");
}


static void
test_responses(void)
{
    size_t           chunk;
    llmr_request_t   rq;
    const char      *body;

    body = "{\"model\":\"gpt-5\",\"instructions\":\"Be brief and exact.\","
           "\"reasoning\":{\"effort\":\"high\",\"summary\":\"auto\"},"
           "\"text\":{\"format\":{\"type\":\"json_schema\",\"name\":\"x\"}},"
           "\"tools\":[{\"type\":\"function\",\"name\":\"lookup\","
           "\"parameters\":{}},{\"type\":\"web_search_preview\"}],"
           "\"input\":[{\"role\":\"user\",\"content\":\"Find it\"},"
           "{\"type\":\"reasoning\",\"id\":\"rs_1\",\"summary\":[{\"type\":"
           "\"summary_text\",\"text\":\"thinking about it\"}]},"
           "{\"type\":\"function_call\",\"call_id\":\"c1\",\"name\":"
           "\"lookup\",\"arguments\":\"{\\\"q\\\":1}\"},"
           "{\"type\":\"function_call_output\",\"call_id\":\"c1\","
           "\"output\":\"#include <stdio.h>\\nint main(void) { return 0; }\"},"
           "{\"role\":\"user\",\"content\":[{\"type\":\"input_text\","
           "\"text\":\"and this?\"},{\"type\":\"input_image\",\"image_url\":"
           "\"data:image/png;base64,iVBO\"}]}],"
           "\"max_output_tokens\":300}";

    for (chunk = 0; chunk < 9; chunk++) {
        if (parse(&rq, RESPONSES, body, chunk) != LLMR_OK
            || rq.f.messages != 5 || !rq.f.thinking || !rq.f.images
            || !rq.f.json_mode || rq.f.max_tokens != 300 || !rq.f.code
            || rq.f.current != 4)
        {
            break;
        }
    }

    tap_is(chunk, 9, "responses: features, whatever the buffer split");
    tap_ok(has_tool(&rq.f, "lookup"), "responses: a function tool");
    tap_ok(has_tool(&rq.f, "web_search"), "responses: a preview tool");

    tap_is(parse(&rq, RESPONSES, "{\"model\":\"m\",\"input\":\"Write a "
                 "haiku\"}", 0), LLMR_OK, "responses: input as a string");
    tap_is(rq.f.messages, 1, "  one message");
    tap_is(rq.f.est_tokens, llmr_estimate_tokens((const unsigned char *)
                                                 "Write a haiku", 13)
                            + llmr_estimate_tokens((const unsigned char *)
                                                   "user", 4),
           "  its tokens, as those of a user message");

    parse(&rq, RESPONSES, "{\"reasoning\":{\"effort\":\"minimal\"},"
          "\"input\":\"x\"}", 0);
    tap_is(rq.f.thinking, 0, "responses: minimal effort is no thinking");

    tap_is(parse(&rq, RESPONSES, "{\"model\":\"m\"}", 0), LLMR_ERROR,
           "responses: without input");
    tap_is_str(rq.error, strlen(rq.error),
               "missing required parameter: 'input'", "  the error names it");

    tap_is(parse(&rq, RESPONSES, "{\"model\":\"m\",\"previous_response_id\":"
                 "\"resp_1\"}", 0), LLMR_OK,
           "responses: a stored conversation goes on without input");

    tap_is(parse(&rq, RESPONSES, "{\"input\":5}", 0), LLMR_ERROR,
           "responses: input of another type");

    is_rewrite(RESPONSES, "{\"input\":\"hi\",\"stream\":true}",
               "{\"model\":\"up\",\"input\":\"hi\",\"stream\":true}",
               "responses: a stream is rewritten without stream_options");
}


/*
 * A body with a long string, fed in chunks, with a small string bound
 * and no window (0), or with a window and no bound: what a cut string
 * holds is bounded by either.
 */

static int
parse_bounded(llmr_request_t *rq, const char *body, size_t chunk,
    size_t bound)
{
    int     rc;
    size_t  len, off, n;

    llmr_request_init(rq, CHAT, NULL, 6);

    if (bound) {
        rq->hold_max = bound;
        rq->scan_limit = 0;

    } else {
        rq->hold_max = 1 << 30;
        bound = rq->scan_limit;
    }

    len = strlen(body);
    rc = LLMR_OK;

    for (off = 0; off < len && rc == LLMR_OK; off += n) {
        n = (len - off > chunk) ? chunk : len - off;
        rc = llmr_request_feed(rq, (const unsigned char *) body + off, n);

        if ((rq->hold_size > bound + 256 && rq->hold_size > 512)
            || rq->tail_size > bound / 2 + 1)
        {
            rc = -100;
        }
    }

    if (rc == LLMR_OK) {
        rc = llmr_request_finish(rq);
    }

    llmr_request_free(rq);

    return rc;
}


/* a chat body whose message is n bytes of code and then of piece */

static char *
long_body(size_t n, const char *piece)
{
    char  *body, *p;

    body = malloc(n + 200);
    if (body == NULL) {
        return NULL;
    }

    p = body + sprintf(body, "{\"messages\":[{\"role\":\"user\",\"content\":"
                       "\"def f(x):\\n    return x + 1\\n ");

    while ((size_t) (p - body) < n) {
        p += sprintf(p, "%s", piece);
    }

    sprintf(p, "\"}],\"model\":\"auto\",\"stream\":true}");

    return body;
}


static void
test_bound(void)
{
    int              ok;
    char            *body, *p;
    size_t           chunk;
    llmr_request_t   whole, rq;

    /* a message of 20000 bytes, code at its head, multi-byte and escaped */

    body = long_body(20000, "caf\xc3\xa9 \\u00e9\\\" word ");

    parse_bounded(&whole, body, strlen(body), 1 << 20);

    ok = 1;

    for (chunk = 7; chunk < 4000; chunk = chunk * 3 + 1) {
        if (parse_bounded(&rq, body, chunk, 1024) != LLMR_OK
            || rq.f.model_start != whole.f.model_start
            || rq.f.model_end != whole.f.model_end
            || rq.f.body_len != whole.f.body_len
            || !rq.f.code || !rq.f.stream || rq.f.messages != 1)
        {
            ok = 0;
            break;
        }
    }

    tap_ok(ok, "bound: a long string cut: the offsets and features hold");
    tap_ok(rq.f.est_tokens > whole.f.est_tokens * 8 / 10
           && rq.f.est_tokens < whole.f.est_tokens * 12 / 10,
           "bound: the tokens of what is not kept are estimated");
    tap_is(parse_bounded(&rq, body, 100, 1024), LLMR_OK,
           "bound: the memory held stays within the bound");

    /* what yajl refuses is refused in the bytes not kept */

    p = strstr(body, "word ") + 3000;
    *p = '\x01';
    tap_is(parse_bounded(&rq, body, 100, 1024), LLMR_ERROR,
           "bound: a control character not kept is refused");
    *p = '\xff';
    tap_is(parse_bounded(&rq, body, 100, 1024), LLMR_ERROR,
           "bound: invalid UTF-8 not kept is refused");
    tap_ok(strstr(rq.error, "UTF-8") != NULL, "  as UTF-8");
    p[0] = '\\';
    p[1] = 'q';
    tap_is(parse_bounded(&rq, body, 100, 1024), LLMR_ERROR,
           "bound: an invalid escape not kept is refused");

    free(body);

    body = malloc(10100);
    p = body + sprintf(body, "{\"messages\":[{}],\"max_tokens\":");
    memset(p, '7', 10000);
    strcpy(p + 10000, "}");
    tap_is(parse_bounded(&rq, body, 100, 1024), LLMR_ERROR,
           "bound: a number cut and longer than the bound is refused");
    memset(p, '7', 4000);
    strcpy(p + 4000, "}");
    tap_is(parse_bounded(&rq, body, 100, 1024), LLMR_OK,
           "bound: a shorter one is only a number");
    free(body);

    tap_is(parse_bounded(&rq, "{\"messages\":[{}],\"model\":\"aaaaaaaaaaaa"
                         "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
                         "aaaaaaaaaaaaaaaa\"}", 10, 32), LLMR_ERROR,
           "bound: a model longer than the bound is refused");
}


/*
 * With a window, a string cut by chunks holds its head and the ring of
 * its tail, and reads as it does whole in one chunk: a text of 20 KB
 * (over the window) and one of 12 KB (under it), cut everywhere.
 */

static void
test_bound_window(void)
{
    int              ok;
    char            *body;
    size_t           chunk, sizes[] = { 20000, 12000 };
    unsigned         k;
    llmr_request_t   whole, rq;

    for (k = 0; k < 2; k++) {
        body = long_body(sizes[k],
                         "caf\xc3\xa9 \\u00e9\\\" \\ud83d\\ude00 word ");

        parse_bounded(&whole, body, strlen(body), 0);

        ok = (whole.f.est_tokens > 0);

        for (chunk = 7; ok && chunk < 9000; chunk = chunk * 3 + 1) {
            ok = parse_bounded(&rq, body, chunk, 0) == LLMR_OK
                 && rq.f.model_start == whole.f.model_start
                 && rq.f.model_end == whole.f.model_end
                 && rq.f.body_len == whole.f.body_len
                 && rq.f.est_tokens == whole.f.est_tokens
                 && rq.f.code && rq.f.stream && rq.f.messages == 1;
        }

        tap_ok(ok, k ? "window: a string under the window, cut, reads whole"
                     : "window: a string over the window, cut, reads whole");

        free(body);
    }
}


static void
test_aliases(void)
{
    llmr_request_t  rq;

#define refused(d, key, name)                                                 \
    tap_is(parse(&rq, d, "{\"model\":\"m\",\"messages\":[{}],\"input\":\"x\"," \
                 key ":1}", 0), LLMR_ERROR, name)

    refused(CHAT, "\"MODEL\"", "alias: MODEL");
    refused(CHAT, "\"Model\"", "alias: Model");
    refused(CHAT, "\"\xc5\xbftream\"", "alias: a long s");
    refused(CHAT, "\"model\\u0000x\"", "alias: a NUL");
    refused(CHAT, "\"Messages\"", "alias: Messages");
    refused(CHAT, "\"STREAM_OPTIONS\"", "alias: STREAM_OPTIONS");
    refused(MESSAGES, "\"System\"", "alias: a Messages key");
    refused(RESPONSES, "\"INPUT\"", "alias: a Responses key");
    refused(RESPONSES, "\"Previous_Response_Id\"", "alias: of any key read");

#undef refused

    tap_is_str(rq.error, strlen(rq.error), "a key that a provider may read "
               "as 'previous_response_id' is not accepted in request body",
               "  the error names the key");

    tap_is(parse(&rq, CHAT, "{\"model\":\"m\",\"messages\":[{}],"
                 "\"Modell\":1,\"metadata\":{\"MODEL\":1}}", 0), LLMR_OK,
           "alias: other keys, and nested ones, pass");
    tap_is(parse(&rq, MESSAGES, "{\"messages\":[{}],\"Stream_Options\":1}",
                 0), LLMR_OK, "alias: only of the dialect's keys");
}


static void
test_chat(void)
{
    llmr_request_t  rq;

    parse(&rq, CHAT, "{\"reasoning_effort\":\"medium\",\"tools\":[{\"type\":"
          "\"function\",\"function\":{\"name\":\"run_sql\"}}],\"messages\":"
          "[{\"role\":\"user\",\"content\":[{\"type\":\"text\",\"text\":"
          "\"see\"},{\"type\":\"image_url\",\"image_url\":{\"url\":"
          "\"https://x/y.png\"}}]}]}", 0);

    tap_ok(rq.f.thinking && rq.f.images && has_tool(&rq.f, "run_sql"),
           "chat: thinking, images and a tool");

    /* the usage of a stream is asked for, whatever the client said */

    is_rewrite(CHAT, "{\"model\":\"a\",\"stream\":true,\"messages\":[{}]}",
               "{\"model\":\"up\",\"stream_options\":{\"include_usage\":true},"
               "\"stream\":true,\"messages\":[{}]}",
               "chat: stream_options added");

    is_rewrite(CHAT, "{\"stream\":true,\"stream_options\":{\"include_usage\""
               ":false},\"model\":\"a\",\"messages\":[{}]}",
               "{\"stream\":true,\"stream_options\":{\"include_usage\""
               ":true},\"model\":\"up\",\"messages\":[{}]}",
               "chat: include_usage false made true");

    is_rewrite(CHAT, "{\"model\":\"a\",\"stream\":true,\"stream_options\":"
               "{ },\"messages\":[{}]}",
               "{\"model\":\"up\",\"stream\":true,\"stream_options\":"
               "{\"include_usage\":true },\"messages\":[{}]}",
               "chat: include_usage added to empty options");

    is_rewrite(CHAT, "{\"model\":\"a\",\"stream\":true,\"stream_options\":"
               "{\"include_obfuscation\":false},\"messages\":[{}]}",
               "{\"model\":\"up\",\"stream\":true,\"stream_options\":"
               "{\"include_usage\":true,\"include_obfuscation\":false},"
               "\"messages\":[{}]}",
               "chat: include_usage added to other options");

    is_rewrite(CHAT, "{\"messages\":[{}],\"stream\":true,\"stream_options\":"
               " null}",
               "{\"model\":\"up\",\"messages\":[{}],\"stream\":true,"
               "\"stream_options\": {\"include_usage\":true}}",
               "chat: null options replaced");

    is_rewrite(CHAT, "{\"model\":\"a\",\"stream\":true,\"stream_options\":"
               "{\"include_usage\":true},\"messages\":[{}]}",
               "{\"model\":\"up\",\"stream\":true,\"stream_options\":"
               "{\"include_usage\":true},\"messages\":[{}]}",
               "chat: the client's own include_usage kept");

    is_rewrite(CHAT, "{\"model\":\"a\",\"stream\":false,\"stream_options\":"
               "{\"include_usage\":false},\"messages\":[{}]}",
               "{\"model\":\"up\",\"stream\":false,\"stream_options\":"
               "{\"include_usage\":false},\"messages\":[{}]}",
               "chat: no stream, nothing asked");

    tap_is(parse(&rq, CHAT, "{\"stream\":true,\"stream_options\":[],"
                 "\"messages\":[{}]}", 0), LLMR_ERROR,
           "chat: options of another type are refused");
    tap_is(parse(&rq, CHAT, "{\"stream\":true,\"stream_options\":"
                 "{\"include_usage\":{}},\"messages\":[{}]}", 0), LLMR_ERROR,
           "chat: include_usage of another type is refused");

    parse(&rq, CHAT, "{\"tools\":[{\"type\":\"function\",\"function\":"
          "{\"name\":\"a\"}},{\"type\":\"function\",\"function\":"
          "{\"name\":\"a\"}}],\"messages\":[{}]}", 0);
    tap_ok(rq.f.ntools == 1 && !has_tool(&rq.f, "function"),
           "chat: a tool once, and not by the type of every function");

    tap_is(parse(&rq, CHAT, "{\"stream_options\":{\"include_usage\":true,"
                 "\"include_usage\":false},\"messages\":[{\"role\":\"user\","
                 "\"content\":\"x\"}]}", 0), LLMR_ERROR,
           "chat: include_usage twice is refused");
}


static void
test_usage(void)
{
    size_t          chunk;
    llmr_usage_t    u;
    llmr_tokens_t   t;
    const char     *text;

    /* the older form: message_delta has output_tokens alone */

    text = "event: message_start\n"
           "data: {\"type\":\"message_start\",\"message\":{\"id\":\"m\","
           "\"content\":[],\"usage\":{\"input_tokens\":472,"
           "\"cache_creation_input_tokens\":1000,"
           "\"cache_read_input_tokens\":5000,\"output_tokens\":1}}}\n\n"
           "event: content_block_delta\n"
           "data: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":"
           "{\"type\":\"text_delta\",\"text\":\"Hello there\"}}\n\n"
           "event: message_delta\n"
           "data: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":"
           "\"end_turn\"},\"usage\":{\"output_tokens\":503}}\n\n"
           "event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n";

    for (chunk = 0; chunk < 9; chunk++) {
        feed_usage(&u, MESSAGES, 1, text, chunk);

        if (!llmr_usage_tokens(&u, &t) || t.prompt != 6472
            || t.completion != 503 || t.cached != 5000
            || t.cache_write != 1000)
        {
            break;
        }
    }

    tap_is(chunk, 9, "usage: Messages stream, cache counted in the prompt");
    tap_is(u.content_bytes, 11, "usage: Messages text counted");

    /* the newer form repeats every count in message_delta */

    feed_usage(&u, MESSAGES, 1,
               "data: {\"type\":\"message_start\",\"message\":{\"usage\":"
               "{\"input_tokens\":10,\"output_tokens\":1}}}\n\n"
               "data: {\"type\":\"message_delta\",\"usage\":"
               "{\"input_tokens\":10,\"cache_read_input_tokens\":20,"
               "\"output_tokens\":7}}\n\n", 0);
    tap_ok(llmr_usage_tokens(&u, &t) && t.prompt == 30 && t.cached == 20
           && t.completion == 7, "usage: Messages stream, newer form");

    feed_usage(&u, MESSAGES, 0, "{\"type\":\"message\",\"content\":[{\"type\":"
               "\"text\",\"text\":\"hi\"}],\"usage\":{\"input_tokens\":3,"
               "\"cache_creation_input_tokens\":0,"
               "\"cache_read_input_tokens\":9,\"output_tokens\":2}}", 0);
    tap_ok(llmr_usage_tokens(&u, &t) && t.prompt == 12 && t.cached == 9,
           "usage: Messages JSON");

    text = "event: response.created\n"
           "data: {\"type\":\"response.created\",\"response\":{\"id\":\"r\","
           "\"status\":\"in_progress\",\"usage\":null}}\n\n"
           "event: response.output_text.delta\n"
           "data: {\"type\":\"response.output_text.delta\",\"delta\":"
           "\"abcd\"}\n\n"
           "event: response.completed\n"
           "data: {\"type\":\"response.completed\",\"response\":{\"output\":"
           "[{\"type\":\"message\",\"content\":[{\"type\":\"output_text\","
           "\"text\":\"abcd\"}]}],\"usage\":{\"input_tokens\":100,"
           "\"input_tokens_details\":{\"cached_tokens\":64},"
           "\"output_tokens\":50,\"output_tokens_details\":"
           "{\"reasoning_tokens\":30},\"total_tokens\":150}}}\n\n";

    for (chunk = 0; chunk < 9; chunk++) {
        feed_usage(&u, RESPONSES, 1, text, chunk);

        if (!llmr_usage_tokens(&u, &t) || t.prompt != 100 || t.cached != 64
            || t.completion != 50 || t.reasoning != 30)
        {
            break;
        }
    }

    tap_is(chunk, 9, "usage: Responses stream with details");
    tap_is(u.content_bytes, 4, "usage: Responses deltas counted once");

    feed_usage(&u, CHAT, 0, "{\"choices\":[],\"usage\":{\"prompt_tokens\":2006,"
               "\"completion_tokens\":300,\"prompt_tokens_details\":"
               "{\"cached_tokens\":1920,\"audio_tokens\":0},"
               "\"completion_tokens_details\":{\"reasoning_tokens\":192}}}", 0);
    tap_ok(llmr_usage_tokens(&u, &t) && t.prompt == 2006 && t.cached == 1920
           && t.reasoning == 192, "usage: chat details");

    feed_usage(&u, CHAT, 0, "{\"usage\":{\"prompt_tokens\":10,"
               "\"completion_tokens\":1,\"prompt_tokens_details\":"
               "{\"cached_tokens\":50}}}", 0);
    tap_ok(llmr_usage_tokens(&u, &t) && t.cached == 10,
           "usage: cached tokens are never more than the prompt");

    feed_usage(&u, MESSAGES, 0,
               "{\"usage\":{\"input_tokens\":1,\"output_tokens\":2,"
               "\"output_tokens_details\":{\"reasoning_tokens\":9}}}", 0);
    tap_ok(llmr_usage_tokens(&u, &t) && t.reasoning == 2,
           "usage: reasoning is never more than the completion");

    feed_usage(&u, CHAT, 0, "{\"choices\":[{\"message\":{\"usage\":{"
               "\"prompt_tokens\":1,\"completion_tokens\":2}}}]}", 0);
    tap_is(llmr_usage_tokens(&u, &t), 0, "usage: not in a message's text");
}


/* the text of an answer, kept as valid JSON string bodies */

typedef struct {
    const llmr_dialect_t  *dialect;
    int                    sse;
    const char            *answer;
    const char            *text;
    const char            *name;
} answer_text_t;


static void
test_answer_text(void)
{
    size_t          chunk, n;
    unsigned char   buf[64];
    llmr_usage_t    u;
    answer_text_t  *a;

    static answer_text_t  answers[] = {
        { CHAT, 0, "{\"choices\":[{\"message\":{\"role\":\"assistant\","
                   "\"content\":\"Hi \\\"you\\\"\\n\\u00e9\"}}]}",
          "Hi \\\"you\\\"\\n\\u00e9", "chat JSON, escapes as sent" },
        { CHAT, 1, "data: {\"choices\":[{\"delta\":{\"role\":\"assistant\"}}]}"
                   "\n\ndata: {\"choices\":[{\"delta\":{\"content\":\"Hel\"}}]}"
                   "\n\ndata: {\"choices\":[{\"delta\":{\"content\":\"lo\"}}]}"
                   "\n\ndata: [DONE]\n\n",
          "Hello", "chat stream, deltas assembled" },
        { MESSAGES, 0, "{\"type\":\"message\",\"content\":[{\"type\":\"text\","
                       "\"text\":\"a\"},{\"type\":\"text\",\"text\":\"b\"}]}",
          "ab", "Messages JSON, text blocks" },
        { MESSAGES, 1, "event: content_block_delta\ndata: {\"type\":"
                       "\"content_block_delta\",\"delta\":{\"type\":"
                       "\"text_delta\",\"text\":\"x\"}}\n\n"
                       "event: content_block_delta\ndata: {\"type\":"
                       "\"content_block_delta\",\"delta\":{\"type\":"
                       "\"text_delta\",\"text\":\"y\"}}\n\n",
          "xy", "Messages stream" },
        { RESPONSES, 1, "data: {\"type\":\"response.output_text.delta\","
                        "\"delta\":\"ab\"}\n\ndata: {\"type\":"
                        "\"response.completed\",\"response\":{\"output\":[{"
                        "\"content\":[{\"type\":\"output_text\",\"text\":"
                        "\"ab\"}]}]}}\n\n",
          "ab", "Responses stream, the deltas once" },
        { RESPONSES, 0, "{\"output\":[{\"type\":\"message\",\"content\":[{"
                        "\"type\":\"output_text\",\"text\":\"ok\"}]}],"
                        "\"text\":{\"format\":{\"type\":\"text\"}}}",
          "ok", "Responses JSON" },
        { CHAT, 0, "{\"choices\":[{\"message\":{\"content\":\"a\tb\"}}]}",
          "a b", "a raw control character is a space" }
    };

    for (a = answers; a < answers + sizeof(answers) / sizeof(answers[0]); a++)
    {
        for (chunk = 0; chunk < 8; chunk++) {
            feed_usage_text(&u, a->dialect, a->sse, a->answer, chunk, buf,
                            sizeof(buf));

            n = llmr_usage_text(&u);

            if (n != strlen(a->text) || memcmp(buf, a->text, n) != 0) {
                break;
            }
        }

        tap_is(chunk, 8, a->name);
    }

    /* cut where a byte does not fit: before the character it is part of */

    feed_usage_text(&u, CHAT, 0, "{\"content\":\"abc\\u00e9d\"}", 0, buf, 5);
    tap_is(llmr_usage_text(&u), 3, "text: cut before an escape");

    feed_usage_text(&u, CHAT, 0, "{\"content\":\"a\\nb\"}", 0, buf, 2);
    tap_is(llmr_usage_text(&u), 1, "text: cut before a short escape");

    feed_usage_text(&u, CHAT, 0, "{\"content\":\"a\xc3\xa9z\"}", 0, buf, 2);
    tap_is(llmr_usage_text(&u), 1, "text: cut before a UTF-8 character");

    feed_usage_text(&u, CHAT, 0, "{\"content\":\"abcd\"}", 0, buf, 4);
    tap_is(llmr_usage_text(&u), 4, "text: a text that fits exactly");

    feed_usage_text(&u, CHAT, 0, "{\"content\":\"abcde\"}", 0, buf, 4);
    tap_is(llmr_usage_text(&u), 4, "text: cut, the rest dropped");

    feed_usage_text(&u, CHAT, 1, "data: {\"content\":\"ab\\u00\n"
                    "data: {\"content\":\"cd\"}\n", 0, buf, sizeof(buf));
    tap_is_str((char *) buf, llmr_usage_text(&u), "abcd",
               "text: what a line cut off in a string is dropped");
}

static void
test_cost(void)
{
    llmr_model_t   m;
    llmr_tokens_t  t;

    memset(&m, 0, sizeof(llmr_model_t));
    memset(&t, 0, sizeof(llmr_tokens_t));

    /* $3 and $15 a million: reads at a tenth, writes at 1.25 times */

    m.price_in = 3000000;
    m.price_out = 15000000;
    llmr_model_prices(&m, MESSAGES, 0, 0);

    tap_is(m.price_cached, 300000, "cost: Anthropic cache reads");
    tap_is(m.price_cache_write, 3750000, "cost: Anthropic cache writes");

    t.prompt = 6472;
    t.cached = 5000;
    t.cache_write = 1000;
    t.completion = 503;

    tap_is(llmr_cost(&m, &t), 472LL * 3000000 + 5000LL * 300000
                              + 1000LL * 3750000 + 503LL * 15000000,
           "cost: each kind at its price");

    llmr_model_prices(&m, CHAT, 0, 0);
    tap_is(m.price_cached, 1500000, "cost: OpenAI cached at half");
    tap_is(m.price_cache_write, 3000000, "cost: OpenAI writes at input");

    m.price_cached = 7;
    llmr_model_prices(&m, CHAT, 1, 0);
    tap_is(m.price_cached, 7, "cost: cached= is kept");

    t.cached = 7000;
    t.cache_write = 0;
    tap_is(llmr_cost(&m, &t), 7000LL * 7 + 503LL * 15000000,
           "cost: parts above the prompt count no fresh tokens");
}


static llmr_verdict_e
verdict(const llmr_dialect_t *d, const char *answer, int sse, char *text)
{
    llmr_verdict_e   v;
    llmr_answer_t    a;
    llmr_criteria_t  c;
    unsigned char    buf[256];

    memset(&c, 0, sizeof(llmr_criteria_t));
    c.finish = 1;
    c.empty = 1;
    c.tool_args = 1;

    llmr_answer_init(&a, d, &c, buf, sizeof(buf));
    v = llmr_answer_check(&a, (const unsigned char *) answer, strlen(answer),
                          sse);

    if (text) {
        memcpy(text, a.content, a.content_len);
        text[a.content_len] = '\0';
    }

    return v;
}


static void
test_answers(void)
{
    char  text[256];

    tap_is(verdict(MESSAGES, "{\"type\":\"message\",\"content\":[{\"type\":"
                   "\"thinking\",\"thinking\":\"hmm\"},{\"type\":\"text\","
                   "\"text\":\"Paris.\"}],\"stop_reason\":\"end_turn\"}", 0,
                   text), LLMR_VERDICT_OK, "answer: Messages");
    tap_is_str(text, strlen(text), "Paris.", "  its text, not its thinking");

    tap_is(verdict(MESSAGES, "{\"content\":[{\"type\":\"text\",\"text\":"
                   "\"Par\"}],\"stop_reason\":\"max_tokens\"}", 0, NULL),
           LLMR_VERDICT_LENGTH, "answer: Messages max_tokens is length");

    tap_is(verdict(MESSAGES, "{\"content\":[],\"stop_reason\":\"refusal\"}",
                   0, NULL),
           LLMR_VERDICT_CONTENT_FILTER, "answer: Messages refusal");

    tap_is(verdict(MESSAGES, "{\"content\":[{\"type\":\"text\",\"text\":"
                   "\"  \"}],\"stop_reason\":\"end_turn\"}", 0, NULL),
           LLMR_VERDICT_EMPTY, "answer: Messages empty");

    tap_is(verdict(MESSAGES, "{\"content\":[{\"type\":\"tool_use\",\"id\":"
                   "\"t\",\"name\":\"f\",\"input\":{}}],\"stop_reason\":"
                   "\"tool_use\"}", 0, NULL),
           LLMR_VERDICT_OK, "answer: Messages tool use is no empty answer");

    tap_is(verdict(MESSAGES,
                   "event: content_block_delta\n"
                   "data: {\"type\":\"content_block_delta\",\"index\":0,"
                   "\"delta\":{\"type\":\"text_delta\",\"text\":\"Hel\"}}\n\n"
                   "data: {\"type\":\"content_block_delta\",\"index\":0,"
                   "\"delta\":{\"type\":\"text_delta\",\"text\":\"lo\"}}\n\n"
                   "data: {\"type\":\"message_delta\",\"delta\":"
                   "{\"stop_reason\":\"max_tokens\"},\"usage\":"
                   "{\"output_tokens\":2}}\n\n", 1, text),
           LLMR_VERDICT_LENGTH, "answer: Messages stream cut by max_tokens");
    tap_is_str(text, strlen(text), "Hello", "  its text");

    tap_is(verdict(MESSAGES,
                   "data: {\"type\":\"content_block_start\",\"index\":1,"
                   "\"content_block\":{\"type\":\"tool_use\",\"id\":\"t\","
                   "\"name\":\"f\",\"input\":{}}}\n\n"
                   "data: {\"type\":\"content_block_delta\",\"index\":1,"
                   "\"delta\":{\"type\":\"input_json_delta\",\"partial_json\":"
                   "\"{\\\"a\\\":\"}}\n\n"
                   "data: {\"type\":\"message_delta\",\"delta\":"
                   "{\"stop_reason\":\"tool_use\"}}\n\n", 1, NULL),
           LLMR_VERDICT_TOOL_ARGS, "answer: Messages tool input cut short");

    tap_is(verdict(RESPONSES, "{\"object\":\"response\",\"status\":"
                   "\"completed\",\"output\":[{\"type\":\"reasoning\","
                   "\"summary\":[]},{\"type\":\"message\",\"content\":"
                   "[{\"type\":\"output_text\",\"text\":\"42\"}]}]}", 0,
                   text), LLMR_VERDICT_OK, "answer: Responses");
    tap_is_str(text, strlen(text), "42", "  its text");

    tap_is(verdict(RESPONSES, "{\"status\":\"incomplete\","
                   "\"incomplete_details\":{\"reason\":"
                   "\"max_output_tokens\"},\"output\":[{\"type\":\"message\","
                   "\"content\":[{\"type\":\"output_text\",\"text\":\"4\"}]}]}",
                   0, NULL),
           LLMR_VERDICT_LENGTH, "answer: Responses incomplete is length");

    tap_is(verdict(RESPONSES, "{\"status\":\"incomplete\","
                   "\"incomplete_details\":{\"reason\":\"content_filter\"},"
                   "\"output\":[]}", 0, NULL),
           LLMR_VERDICT_CONTENT_FILTER, "answer: Responses content filter");

    tap_is(verdict(RESPONSES, "{\"status\":\"completed\",\"output\":"
                   "[{\"type\":\"function_call\",\"name\":\"f\","
                   "\"arguments\":\"{\\\"a\\\"\"}]}", 0, NULL),
           LLMR_VERDICT_TOOL_ARGS, "answer: Responses call arguments");

    tap_is(verdict(RESPONSES,
                   "event: response.output_text.delta\n"
                   "data: {\"type\":\"response.output_text.delta\","
                   "\"output_index\":0,\"delta\":\"fo\"}\n\n"
                   "data: {\"type\":\"response.output_text.delta\","
                   "\"output_index\":0,\"delta\":\"ur\"}\n\n"
                   "data: {\"type\":\"response.output_text.done\","
                   "\"text\":\"four\"}\n\n"
                   "data: {\"type\":\"response.completed\",\"response\":"
                   "{\"status\":\"completed\",\"output\":[{\"type\":"
                   "\"message\",\"content\":[{\"type\":\"output_text\","
                   "\"text\":\"four\"}]}]}}\n\n", 1, text),
           LLMR_VERDICT_OK, "answer: Responses stream");
    tap_is_str(text, strlen(text), "four", "  its text, once");

    {
        char  deep[256];

        /* a string 101 levels deep, past the readers' key stacks */

        memcpy(deep, "{\"content\":", 11);
        memset(deep + 11, '[', 100);
        memcpy(deep + 111, "\"x\"", 3);
        memset(deep + 114, ']', 100);
        strcpy(deep + 214, "}");

        tap_is(verdict(MESSAGES, deep, 0, NULL), LLMR_VERDICT_EMPTY,
               "answer: Messages nested past the reader's depth");
        tap_is(verdict(RESPONSES, deep, 0, NULL), LLMR_VERDICT_EMPTY,
               "answer: Responses nested past the reader's depth");
    }

    tap_is(verdict(RESPONSES,
                   "data: {\"type\":\"response.incomplete\",\"response\":"
                   "{\"status\":\"incomplete\",\"output\":[]}}\n\n", 1, NULL),
           LLMR_VERDICT_LENGTH, "answer: Responses stream incomplete");
}


static void
is_unasked(const char *line, const char *expected, int dropped,
    const char *name)
{
    int             drop;
    size_t          n;
    unsigned char   out[256];

    n = llmr_usage_unasked((const unsigned char *) line, strlen(line), 1, out,
                           &drop);

    if (dropped) {
        tap_ok(drop && n == 0, name);
        return;
    }

    tap_is_str((char *) out, drop ? 0 : n, expected, name);
}


static void
test_unasked(void)
{
    int             drop;
    size_t          n;
    unsigned char   out[64];

    is_unasked("data: {\"id\":\"c\",\"choices\":[{\"delta\":{\"content\":"
               "\"hi\"}}],\"usage\":null}\n",
               "data: {\"id\":\"c\",\"choices\":[{\"delta\":{\"content\":"
               "\"hi\"}}]}\n", 0, "stream: usage null taken out");

    is_unasked("data: {\"usage\": null, \"id\":\"c\"}\n",
               "data: {\"id\":\"c\"}\n", 0, "stream: usage null first");

    is_unasked("data: {\"id\":\"c\",\"choices\":[],\"usage\":{"
               "\"prompt_tokens\":1,\"completion_tokens\":2}}\n", NULL, 1,
               "stream: the usage chunk dropped");

    is_unasked("data: {\"choices\":[{\"delta\":{\"content\":\"a \\\"usage\\\""
               ":null\"}}]}\n",
               "data: {\"choices\":[{\"delta\":{\"content\":\"a \\\"usage\\\""
               ":null\"}}]}\n", 0, "stream: text that looks like usage");

    is_unasked("data: [DONE]\n", "data: [DONE]\n", 0, "stream: done kept");

    is_unasked("data: {\"a\":1,\r\"usage\":null}\n", "data: {\"a\":1}\n", 0,
               "stream: usage null after a carriage return");
    is_unasked("data: {\"\\\"usage\":null}\n", "data: {\"\\\"usage\":null}\n",
               0, "stream: a key that ends with usage stays");

    n = llmr_usage_unasked((const unsigned char *) "sum\"}}],\"usage\":null}"
                           "\n", 22, 0, out, &drop);
    tap_is_str((char *) out, n, "sum\"}}]}\n",
               "stream: the end of a long line");
    is_unasked(": ping\n", ": ping\n", 0, "stream: comments kept");
}


static void
test_errors(void)
{
    size_t          n;
    unsigned char   buf[256];

    n = llmr_error_json(MESSAGES, 429, (const unsigned char *) "spent \"x\"",
                        9, buf) - buf;
    tap_is_str((char *) buf, n, "{\"type\":\"error\",\"error\":{\"type\":"
               "\"rate_limit_error\",\"message\":\"spent \\\"x\\\"\"}}\n",
               "error: Messages shape");
    tap_ok(n <= llmr_error_json_size((const unsigned char *) "spent \"x\"",
                                     9), "  within its size");

    n = llmr_error_json(RESPONSES, 400, (const unsigned char *) "bad", 3,
                        buf) - buf;
    tap_is_str((char *) buf, n, "{\"error\":{\"message\":\"bad\",\"type\":"
               "\"invalid_request_error\",\"param\":null,\"code\":null}}\n",
               "error: OpenAI shape");

    n = llmr_error_json(MESSAGES, 502, (const unsigned char *) "x", 1, buf)
        - buf;
    tap_ok(strstr((char *) buf, "\"api_error\"") != NULL,
           "error: Messages server error type");
}


static void
test_triage(void)
{
    char             body[512];
    size_t           n;
    const char      *body_of;
    llmr_triage_t    t;
    llmr_capture_t   c;
    llmr_request_t   rq;
    unsigned char    slots[4 * 64];

    memset(&t, 0, sizeof(llmr_triage_t));
    t.model.data = (const unsigned char *) "small";
    t.model.len = 5;
    t.prompt.data = (const unsigned char *) "Label it";
    t.prompt.len = 8;
    t.max_tokens = 8;

    llmr_request_init(&rq, MESSAGES, NULL, 6);
    llmr_capture_init(&c, slots, 64, 4);
    rq.capture = &c;
    body_of = "{\"messages\":[{\"role\":\"user\",\"content\":[{\"type\":"
              "\"text\",\"text\":\"why?\"}]}]}";
    llmr_request_feed(&rq, (const unsigned char *) body_of, strlen(body_of));
    llmr_request_finish(&rq);

    t.dialect = MESSAGES;
    n = llmr_triage_body(&rq, &t, (unsigned char *) body)
        - (unsigned char *) body;
    tap_is_str(body, n, "{\"model\":\"small\",\"system\":\"Label it\","
               "\"messages\":[{\"role\":\"user\",\"content\":\"why?\"}],"
               "\"max_tokens\":8,\"temperature\":0,\"stream\":false}",
               "triage: a Messages request");
    tap_is(n, llmr_triage_body_size(&rq, &t), "  of its size");

    t.dialect = RESPONSES;
    n = llmr_triage_body(&rq, &t, (unsigned char *) body)
        - (unsigned char *) body;
    tap_is_str(body, n, "{\"model\":\"small\",\"instructions\":\"Label it\","
               "\"input\":\"why?\",\"max_output_tokens\":16,"
               "\"stream\":false}",
               "triage: a Responses request, at least 16 tokens");

    llmr_request_free(&rq);
}


int
main(void)
{
    test_paths();
    test_messages();
    test_responses();
    test_chat();
    test_aliases();
    test_bound();
    test_bound_window();
    test_usage();
    test_answer_text();
    test_cost();
    test_answers();
    test_unasked();
    test_errors();
    test_triage();

    return tap_done();
}
