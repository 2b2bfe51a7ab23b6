
/*
 * Copyright (C) the ngx_http_llm_router_module authors
 *
 * The API dialects, a row each: OpenAI Chat Completions, Anthropic
 * Messages and OpenAI Responses.  A row says which keys of a request
 * matter, what each string of it is to the router, how usage is counted
 * and priced, what an error looks like, how an answer is read and how a
 * triage model is asked.
 */


#include <string.h>

#include "llmr.h"


static llmr_text_e llmr_chat_text(const llmr_request_t *rq);
static llmr_text_e llmr_messages_text(const llmr_request_t *rq);
static llmr_text_e llmr_responses_text(const llmr_request_t *rq);
static llmr_text_e llmr_tools_text(const llmr_request_t *rq);
static unsigned char *llmr_openai_error(unsigned char *out, const char *type,
    const unsigned char *message, size_t len);
static unsigned char *llmr_anthropic_error(unsigned char *out,
    const char *type, const unsigned char *message, size_t len);
static const char *llmr_openai_error_type(unsigned status);
static const char *llmr_anthropic_error_type(unsigned status);


static const llmr_key_name_t  llmr_chat_keys[] = {
    { "model", LLMR_KEY_MODEL },
    { "messages", LLMR_KEY_MESSAGES },
    { "stream", LLMR_KEY_STREAM },
    { "stream_options", LLMR_KEY_STREAM_OPTIONS },
    { "tools", LLMR_KEY_TOOLS },
    { "functions", LLMR_KEY_TOOLS },
    { "max_tokens", LLMR_KEY_MAX_TOKENS },
    { "max_completion_tokens", LLMR_KEY_MAX_TOKENS },
    { "response_format", LLMR_KEY_FORMAT },
    { "reasoning_effort", LLMR_KEY_REASONING },
    { NULL, 0 }
};

static const llmr_key_name_t  llmr_messages_keys[] = {
    { "model", LLMR_KEY_MODEL },
    { "messages", LLMR_KEY_MESSAGES },
    { "stream", LLMR_KEY_STREAM },
    { "system", LLMR_KEY_SYSTEM },
    { "tools", LLMR_KEY_TOOLS },
    { "max_tokens", LLMR_KEY_MAX_TOKENS },
    { "thinking", LLMR_KEY_THINKING },
    { NULL, 0 }
};

static const llmr_key_name_t  llmr_responses_keys[] = {
    { "model", LLMR_KEY_MODEL },
    { "input", LLMR_KEY_MESSAGES },
    { "stream", LLMR_KEY_STREAM },
    { "instructions", LLMR_KEY_SYSTEM },
    { "tools", LLMR_KEY_TOOLS },
    { "max_output_tokens", LLMR_KEY_MAX_TOKENS },
    { "text", LLMR_KEY_FORMAT },
    { "reasoning", LLMR_KEY_REASONING },
    { "previous_response_id", LLMR_KEY_PREVIOUS },
    { NULL, 0 }
};


/* the text of answers: each counted once, in JSON and in streams */

static const char *const  llmr_chat_text_keys[] = {
    "content", "arguments", NULL
};

static const char *const  llmr_messages_text_keys[] = {
    "text", "partial_json", NULL
};

static const char *const  llmr_responses_text_keys[] = {
    "text", "arguments", NULL
};

static const char *const  llmr_responses_stream_text_keys[] = {
    "delta", NULL
};


/*
 * Prices of cached tokens where nginx.conf gives none, as the providers
 * bill them: OpenAI reads a cached prefix at half the input price (the
 * discount of its first caching models; newer ones give more) and
 * writes it at the input price, nothing more; Anthropic reads at a tenth
 * and writes at 1.25 times the input price (the five-minute cache).
 */

const llmr_dialect_t  llmr_dialects[LLMR_APIS] = {

    { LLMR_API_CHAT,
      { 4, (const unsigned char *) "chat" },
      { 17, (const unsigned char *) "/chat/completions" },
      "messages", llmr_chat_keys, llmr_chat_text,
      0, 1, 0, 500, 1000,
      llmr_openai_error, llmr_openai_error_type,
      &llmr_chat_answer, llmr_chat_text_keys, llmr_chat_text_keys,
      { "{\"model\":\"",
        "\",\"messages\":[{\"role\":\"system\",\"content\":\"",
        "\"},{\"role\":\"user\",\"content\":\"",
        "\"}],\"max_tokens\":",
        ",\"temperature\":0,\"stream\":false}" },
      1, { 0, NULL }, { 0, NULL } },

    { LLMR_API_MESSAGES,
      { 8, (const unsigned char *) "messages" },
      { 9, (const unsigned char *) "/messages" },
      "messages", llmr_messages_keys, llmr_messages_text,
      0, 0, 1, 100, 1250,
      llmr_anthropic_error, llmr_anthropic_error_type,
      &llmr_messages_answer, llmr_messages_text_keys,
      llmr_messages_text_keys,
      { "{\"model\":\"",
        "\",\"system\":\"",
        "\",\"messages\":[{\"role\":\"user\",\"content\":\"",
        "\"}],\"max_tokens\":",
        ",\"temperature\":0,\"stream\":false}" },
      1,
      { 17, (const unsigned char *) "anthropic-version" },
      { 10, (const unsigned char *) "2023-06-01" } },

    /* a Responses model takes no fewer than 16 output tokens */

    { LLMR_API_RESPONSES,
      { 9, (const unsigned char *) "responses" },
      { 10, (const unsigned char *) "/responses" },
      "input", llmr_responses_keys, llmr_responses_text,
      1, 0, 0, 500, 1000,
      llmr_openai_error, llmr_openai_error_type,
      &llmr_responses_answer, llmr_responses_text_keys,
      llmr_responses_stream_text_keys,
      { "{\"model\":\"",
        "\",\"instructions\":\"",
        "\",\"input\":\"",
        "\",\"max_output_tokens\":",
        ",\"stream\":false}" },
      16, { 0, NULL }, { 0, NULL } }
};


const llmr_dialect_t *
llmr_dialect_find(const unsigned char *name, size_t len)
{
    unsigned  i;

    for (i = 0; i < LLMR_APIS; i++) {
        if (llmr_dialects[i].name.len == len
            && memcmp(llmr_dialects[i].name.data, name, len) == 0)
        {
            return &llmr_dialects[i];
        }
    }

    return NULL;
}


/* "/v1/messages", "/openai/v1/chat/completions": by the end of the path */

const llmr_dialect_t *
llmr_dialect_of_path(const unsigned char *path, size_t len)
{
    unsigned           i;
    const llmr_str_t  *end;

    for (i = 0; i < LLMR_APIS; i++) {
        end = &llmr_dialects[i].path;

        if (len >= end->len
            && memcmp(path + len - end->len, end->data, end->len) == 0)
        {
            return &llmr_dialects[i];
        }
    }

    return NULL;
}


/*
 * What each string of a request is.  rq->depth is the depth of the
 * object or array that holds it (1: the body), rq->key[d] the key at
 * depth d, LLMR_KEY_OTHER in an array.
 */

static llmr_text_e
llmr_chat_text(const llmr_request_t *rq)
{
    unsigned              d;
    const unsigned char  *k;

    d = rq->depth;
    k = rq->key;

    switch (k[1]) {

    case LLMR_KEY_REASONING:
        return (d == 1) ? LLMR_TEXT_EFFORT : LLMR_TEXT_NONE;

    case LLMR_KEY_TOOLS:
        return llmr_tools_text(rq);

    case LLMR_KEY_FORMAT:
        return (d == 2 && k[2] == LLMR_KEY_TYPE) ? LLMR_TEXT_FORMAT
                                                 : LLMR_TEXT_NONE;

    case LLMR_KEY_MESSAGES:
        break;

    default:
        return LLMR_TEXT_NONE;
    }

    if (d < 3) {
        return LLMR_TEXT_NONE;
    }

    if (d == 3) {
        return (k[3] == LLMR_KEY_ROLE) ? LLMR_TEXT_ROLE
               : (k[3] == LLMR_KEY_CONTENT) ? LLMR_TEXT_MESSAGE
               : LLMR_TEXT_TOKENS;
    }

    if (k[3] != LLMR_KEY_CONTENT) {
        /* tool calls and their arguments */
        return LLMR_TEXT_TOKENS;
    }

    /* content parts: text, or images, audio and files, not counted */

    if (d == 5 && k[5] == LLMR_KEY_TEXT) {
        return LLMR_TEXT_MESSAGE;
    }

    return (d == 5 && k[5] == LLMR_KEY_TYPE) ? LLMR_TEXT_TYPE
                                             : LLMR_TEXT_NONE;
}


static llmr_text_e
llmr_messages_text(const llmr_request_t *rq)
{
    unsigned              d;
    const unsigned char  *k;

    d = rq->depth;
    k = rq->key;

    switch (k[1]) {

    case LLMR_KEY_SYSTEM:
        /* a string, or text blocks */
        return (d == 1 || (d == 3 && k[3] == LLMR_KEY_TEXT))
               ? LLMR_TEXT_PROMPT : LLMR_TEXT_NONE;

    case LLMR_KEY_TOOLS:
        return llmr_tools_text(rq);

    case LLMR_KEY_THINKING:
        return (d == 2 && k[2] == LLMR_KEY_TYPE) ? LLMR_TEXT_THINKING
                                                 : LLMR_TEXT_NONE;

    case LLMR_KEY_MESSAGES:
        break;

    default:
        return LLMR_TEXT_NONE;
    }

    if (d < 3) {
        return LLMR_TEXT_NONE;
    }

    if (d == 3) {
        return (k[3] == LLMR_KEY_ROLE) ? LLMR_TEXT_ROLE
               : (k[3] == LLMR_KEY_CONTENT) ? LLMR_TEXT_MESSAGE
               : LLMR_TEXT_NONE;
    }

    if (k[3] != LLMR_KEY_CONTENT || d < 5) {
        return LLMR_TEXT_NONE;
    }

    /*
     * content blocks: text, a tool_result's content (a string, or blocks
     * of its own), a tool_use's input and thinking, counted; ids,
     * signatures and the data of images and documents are not read
     */

    if (d == 5) {
        switch (k[5]) {

        case LLMR_KEY_TEXT:
        case LLMR_KEY_CONTENT:
            return LLMR_TEXT_MESSAGE;

        case LLMR_KEY_TYPE:
            return LLMR_TEXT_TYPE;

        case LLMR_KEY_NAME:
        case LLMR_KEY_THINKING:
            return LLMR_TEXT_TOKENS;
        }

        return LLMR_TEXT_NONE;
    }

    if (k[5] == LLMR_KEY_INPUT) {
        return LLMR_TEXT_TOKENS;
    }

    if (k[5] == LLMR_KEY_CONTENT && d == 7) {
        return (k[7] == LLMR_KEY_TEXT) ? LLMR_TEXT_MESSAGE
               : (k[7] == LLMR_KEY_TYPE) ? LLMR_TEXT_TYPE
               : LLMR_TEXT_NONE;
    }

    return LLMR_TEXT_NONE;
}


static llmr_text_e
llmr_responses_text(const llmr_request_t *rq)
{
    unsigned              d;
    const unsigned char  *k;

    d = rq->depth;
    k = rq->key;

    switch (k[1]) {

    case LLMR_KEY_SYSTEM:
        return (d == 1) ? LLMR_TEXT_PROMPT : LLMR_TEXT_NONE;

    case LLMR_KEY_TOOLS:
        return llmr_tools_text(rq);

    case LLMR_KEY_REASONING:
        return (d == 2 && k[2] == LLMR_KEY_EFFORT) ? LLMR_TEXT_EFFORT
                                                   : LLMR_TEXT_NONE;

    case LLMR_KEY_FORMAT:
        /* "text": {"format": {"type": "json_schema", ...}} */
        return (d == 3 && k[2] == LLMR_KEY_FORMAT && k[3] == LLMR_KEY_TYPE)
               ? LLMR_TEXT_FORMAT : LLMR_TEXT_NONE;

    case LLMR_KEY_MESSAGES:
        break;

    default:
        return LLMR_TEXT_NONE;
    }

    if (d == 1) {
        /* "input" as a string: one user message */
        return LLMR_TEXT_MESSAGE;
    }

    if (d < 3) {
        return LLMR_TEXT_NONE;
    }

    /* items: messages, function calls and their output, reasoning */

    if (d == 3) {
        switch (k[3]) {

        case LLMR_KEY_ROLE:
            return LLMR_TEXT_ROLE;

        case LLMR_KEY_TYPE:
            return LLMR_TEXT_TYPE;

        case LLMR_KEY_CONTENT:
        case LLMR_KEY_OUTPUT:
            return LLMR_TEXT_MESSAGE;

        case LLMR_KEY_NAME:
        case LLMR_KEY_ARGUMENTS:
            return LLMR_TEXT_TOKENS;
        }

        return LLMR_TEXT_NONE;
    }

    if (d != 5) {
        return LLMR_TEXT_NONE;
    }

    if (k[3] == LLMR_KEY_CONTENT || k[3] == LLMR_KEY_OUTPUT) {
        return (k[5] == LLMR_KEY_TEXT) ? LLMR_TEXT_MESSAGE
               : (k[5] == LLMR_KEY_TYPE) ? LLMR_TEXT_TYPE
               : LLMR_TEXT_NONE;
    }

    /* a reasoning item's summary */

    return (k[3] == LLMR_KEY_SUMMARY && k[5] == LLMR_KEY_TEXT)
           ? LLMR_TEXT_TOKENS : LLMR_TEXT_NONE;
}


/*
 * Tool definitions are billed as prompt.  A tool is declared by its
 * name ({"name": ...}, or {"function": {"name": ...}} in chat) or, for
 * a provider's built-in tool, by its type ("web_search_20250305").
 */

static llmr_text_e
llmr_tools_text(const llmr_request_t *rq)
{
    unsigned              d;
    const unsigned char  *k;

    d = rq->depth;
    k = rq->key;

    if (d == 3 && (k[3] == LLMR_KEY_NAME || k[3] == LLMR_KEY_TYPE)) {
        return LLMR_TEXT_TOOL;
    }

    if (d == 4 && k[3] == LLMR_KEY_FUNCTION && k[4] == LLMR_KEY_NAME) {
        return LLMR_TEXT_TOOL;
    }

    return LLMR_TEXT_PROMPT;
}


uint32_t
llmr_tool_hash(const unsigned char *p, size_t len)
{
    size_t    i;
    uint32_t  h;

    h = LLMR_FNV_OFFSET;

    for (i = 0; i < len; i++) {
        h = (h ^ p[i]) * LLMR_FNV_PRIME;
    }

    return h;
}


size_t
llmr_error_json_size(const unsigned char *message, size_t len)
{
    /* the longer shape, with the longest type */

    return sizeof("{\"error\":{\"message\":\"\",\"type\":\"\","
                  "\"param\":null,\"code\":null}}\n") - 1
           + sizeof("invalid_request_error") - 1
           + llmr_json_escape_size(message, len);
}


unsigned char *
llmr_error_json(const llmr_dialect_t *d, unsigned status,
    const unsigned char *message, size_t len, unsigned char *out)
{
    return d->error(out, d->error_type(status), message, len);
}


#define llmr_cpy(p, s)  (memcpy(p, s, sizeof(s) - 1), (p) + sizeof(s) - 1)


static unsigned char *
llmr_openai_error(unsigned char *out, const char *type,
    const unsigned char *message, size_t len)
{
    size_t  n;

    out = llmr_cpy(out, "{\"error\":{\"message\":\"");
    out = llmr_json_escape(out, message, len);
    out = llmr_cpy(out, "\",\"type\":\"");
    n = strlen(type);
    memcpy(out, type, n);
    out += n;

    return llmr_cpy(out, "\",\"param\":null,\"code\":null}}\n");
}


static unsigned char *
llmr_anthropic_error(unsigned char *out, const char *type,
    const unsigned char *message, size_t len)
{
    size_t  n;

    out = llmr_cpy(out, "{\"type\":\"error\",\"error\":{\"type\":\"");
    n = strlen(type);
    memcpy(out, type, n);
    out += n;
    out = llmr_cpy(out, "\",\"message\":\"");
    out = llmr_json_escape(out, message, len);

    return llmr_cpy(out, "\"}}\n");
}


static const char *
llmr_openai_error_type(unsigned status)
{
    return (status >= 500) ? "server_error" : "invalid_request_error";
}


/* the types the Anthropic SDKs map to their error classes */

static const char *
llmr_anthropic_error_type(unsigned status)
{
    switch (status) {

    case 401:
        return "authentication_error";

    case 403:
        return "permission_error";

    case 404:
        return "not_found_error";

    case 413:
        return "request_too_large";

    case 429:
        return "rate_limit_error";

    case 529:
        return "overloaded_error";
    }

    return (status >= 500) ? "api_error" : "invalid_request_error";
}
