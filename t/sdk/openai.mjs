// The `openai` SDK: Chat Completions (/v1/chat/completions) and the
// Responses API (/v1/responses) through nginx.  See lib.mjs.

import OpenAI from 'openai';
import { base, run, llmHeaders, CLIENT_KEY, CASE_MS } from './lib.mjs';

const client = new OpenAI({
    baseURL: `${base}/v1`,
    apiKey: CLIENT_KEY,
    maxRetries: 0,
    timeout: CASE_MS,
});

const messages = [{ role: 'user', content: 'Say hello in five words.' }];

await run({
    'chat': async (opts) => {
        const { data, response } = await client.chat.completions
            .create({ model: 'auto', messages }, opts)
            .withResponse();
        return {
            headers: llmHeaders(response.headers),
            model: data.model,
            object: data.object,
            content: data.choices?.[0]?.message?.content ?? null,
            finish_reason: data.choices?.[0]?.finish_reason ?? null,
            usage: data.usage ?? null,
        };
    },

    // no stream_options: the client did not ask for usage, so no chunk may
    // carry a "usage" (not even null), and none may have "choices": []
    'chat.stream': async (opts) => {
        const { data: stream, response } = await client.chat.completions
            .create({ model: 'auto', messages, stream: true }, opts)
            .withResponse();
        let text = '', chunks = 0, withUsageKey = 0, emptyChoices = 0, loopError = null;
        const finish = [];
        try {
            for await (const chunk of stream) {
                chunks++;
                if ('usage' in chunk) withUsageKey++;
                if (Array.isArray(chunk.choices) && chunk.choices.length === 0) emptyChoices++;
                // what client code commonly does: throws on choices []
                text += chunk.choices[0].delta.content ?? '';
                if (chunk.choices[0].finish_reason) finish.push(chunk.choices[0].finish_reason);
            }
        } catch (e) {
            loopError = `${e.constructor?.name}: ${e.message}`;
        }
        return {
            headers: llmHeaders(response.headers),
            loop_error: loopError,
            text,
            chunks,
            chunks_with_usage_key: withUsageKey,
            chunks_with_empty_choices: emptyChoices,
            finish_reasons: finish,
        };
    },

    // with include_usage: the last chunk has the usage and "choices": []
    'chat.stream.usage': async (opts) => {
        const { data: stream, response } = await client.chat.completions
            .create({ model: 'auto', messages, stream: true,
                      stream_options: { include_usage: true } }, opts)
            .withResponse();
        let text = '', chunks = 0, last = null, usageChunks = 0;
        for await (const chunk of stream) {
            chunks++;
            last = chunk;
            if (chunk.usage) usageChunks++;
            text += chunk.choices?.[0]?.delta?.content ?? '';
        }
        return {
            headers: llmHeaders(response.headers),
            text,
            chunks,
            chunks_with_usage: usageChunks,
            last_choices: last ? last.choices : null,
            last_usage: last ? last.usage ?? null : null,
            model: last ? last.model : null,
        };
    },

    'responses': async (opts) => {
        const { data, response } = await client.responses
            .create({ model: 'auto', input: 'Say hello in five words.' }, opts)
            .withResponse();
        return {
            headers: llmHeaders(response.headers),
            model: data.model,
            object: data.object,
            status: data.status,
            output_text: data.output_text,
            usage: data.usage ?? null,
        };
    },

    'responses.stream': async (opts) => {
        const { data: stream, response } = await client.responses
            .create({ model: 'auto', input: 'Say hello in five words.', stream: true },
                    opts)
            .withResponse();
        const types = [], seq = [];
        let text = '', completed = null;
        for await (const event of stream) {
            types.push(event.type);
            seq.push(event.sequence_number);
            if (event.type === 'response.output_text.delta') text += event.delta;
            if (event.type === 'response.completed') completed = event.response;
        }
        return {
            headers: llmHeaders(response.headers),
            types: [...new Set(types)],
            events: types.length,
            sequence_numbers: seq,
            text,
            completed_model: completed?.model ?? null,
            completed_text: completed
                ? completed.output.flatMap((o) => o.content ?? [])
                      .filter((c) => c.type === 'output_text').map((c) => c.text).join('')
                : null,
            completed_usage: completed?.usage ?? null,
        };
    },
});
