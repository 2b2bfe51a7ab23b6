// The AI SDK (`ai` + `@ai-sdk/openai`): openai(MODEL) calls the Responses
// API (/v1/responses), openai.chat(MODEL) Chat Completions (whose stream
// asks for usage with stream_options.include_usage).  See lib.mjs.

import { generateText, streamText } from 'ai';
import { createOpenAI } from '@ai-sdk/openai';
import { base, run, llmHeaders, CLIENT_KEY } from './lib.mjs';

globalThis.AI_SDK_LOG_WARNINGS = false;

const openai = createOpenAI({ baseURL: `${base}/v1`, apiKey: CLIENT_KEY });
const prompt = 'Say hello in five words.';

async function generate(model, { signal, headers }) {
    const r = await generateText({ model, prompt, headers, maxRetries: 0, abortSignal: signal });
    return {
        headers: llmHeaders(r.response?.headers),
        model: r.response?.modelId ?? null,
        text: r.text,
        finish_reason: r.finishReason,
        usage: r.usage ?? null,
    };
}

async function stream(model, { signal, headers }) {
    const errors = [];
    const r = streamText({
        model, prompt, headers, maxRetries: 0, abortSignal: signal,
        onError: ({ error }) => { errors.push(error); },
    });
    let text = '', parts = 0;
    for await (const delta of r.textStream) {
        parts++;
        text += delta;
    }
    // a stream error ends textStream quietly: raise it as the case's error
    if (errors.length) throw errors[0];
    const response = await r.response;
    return {
        headers: llmHeaders(response?.headers),
        model: response?.modelId ?? null,
        text,
        text_parts: parts,
        finish_reason: await r.finishReason,
        usage: (await r.usage) ?? null,
    };
}

await run({
    'responses.generate': (opts) => generate(openai('gpt-5-nano'), opts),
    'responses.stream': (opts) => stream(openai('gpt-5-nano'), opts),
    'chat.generate': (opts) => generate(openai.chat('gpt-4o-mini'), opts),
    'chat.stream': (opts) => stream(openai.chat('gpt-4o-mini'), opts),
});
