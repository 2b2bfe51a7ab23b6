// The `@anthropic-ai/sdk` SDK: the Messages API (/v1/messages) through
// nginx, with the base URL as ANTHROPIC_BASE_URL would give it (the SDK
// appends /v1/messages).  See lib.mjs.

import Anthropic from '@anthropic-ai/sdk';
import { base, run, llmHeaders, CLIENT_KEY, CASE_MS } from './lib.mjs';

const client = new Anthropic({
    baseURL: base,
    apiKey: CLIENT_KEY,
    authToken: null,
    maxRetries: 0,
    timeout: CASE_MS,
});

// nginx's /pinned/v1/messages, where pinning is on
const pinned = client.withOptions({ baseURL: `${base}/pinned` });

const messages = [{ role: 'user', content: 'Say hello in five words.' }];

function textOf(message) {
    return (message?.content ?? []).filter((b) => b.type === 'text')
        .map((b) => b.text).join('');
}

function summary(message, response) {
    return {
        headers: llmHeaders(response.headers),
        type: message.type,
        model: message.model,
        role: message.role,
        content_types: (message.content ?? []).map((b) => b.type),
        text: textOf(message),
        stop_reason: message.stop_reason,
        usage: message.usage ?? null,
    };
}

await run({
    'messages': async (opts) => {
        const { data, response } = await client.messages
            .create({ model: 'claude-haiku-4-5', max_tokens: 64, messages }, opts)
            .withResponse();
        return summary(data, response);
    },

    // a request with extended thinking: "llm_router_rule thinking sonnet"
    'messages.thinking': async (opts) => {
        const { data, response } = await client.messages
            .create({ model: 'claude-haiku-4-5', max_tokens: 2048, messages,
                      thinking: { type: 'enabled', budget_tokens: 1024 } }, opts)
            .withResponse();
        return summary(data, response);
    },

    // "model" names a configured model: pinned
    'messages.pinned': async (opts) => {
        const { data, response } = await pinned.messages
            .create({ model: 'claude-sonnet-4-5', max_tokens: 64, messages }, opts)
            .withResponse();
        return summary(data, response);
    },

    'messages.stream': async (opts) => {
        const stream = client.messages.stream(
            { model: 'claude-haiku-4-5', max_tokens: 64, messages }, opts);
        const types = [];
        let deltas = '';
        stream.on('streamEvent', (event) => types.push(event.type));
        stream.on('text', (delta) => { deltas += delta; });
        const { response } = await stream.withResponse();
        const message = await stream.finalMessage();
        return {
            ...summary(message, response),
            event_types: [...new Set(types)],
            deltas,
        };
    },

    // not routed: a plain proxy_pass
    'count_tokens': async (opts) => {
        const data = await client.messages
            .countTokens({ model: 'claude-haiku-4-5', messages }, opts);
        return { input_tokens: data.input_tokens };
    },

    'models': async (opts) => {
        const ids = [];
        for await (const model of client.models.list({}, opts)) ids.push(model.id);
        return { ids };
    },

    // nginx rejects the body (no messages): the SDK must raise its
    // BadRequestError with the Anthropic error's message
    'messages.error': async (opts) => {
        try {
            const { data, response } = await client.messages
                .create({ model: 'claude-haiku-4-5', max_tokens: 64, messages: [] }, opts)
                .withResponse();
            return { unexpected_success: summary(data, response) };
        } catch (e) {
            return {
                class: e.constructor?.name ?? null,
                is_bad_request: e instanceof Anthropic.BadRequestError,
                is_api_error: e instanceof Anthropic.APIError,
                status: e.status ?? null,
                message: e.message,
                body: e.error ?? null,
                api_message: e.apiMessage ?? e.error?.error?.message ?? null,
                error_type: e.type ?? e.error?.error?.type ?? null,
                headers: llmHeaders(e.headers),
            };
        }
    },
});
