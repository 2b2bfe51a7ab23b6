// Shared by the SDK scripts of t/96-sdk.t.
//
//   node t/sdk/SCRIPT.mjs BASE_URL [CASE...]
//
// BASE_URL is nginx's, http://127.0.0.1:PORT (or $LLMR_BASE_URL).  Each
// case runs in turn (only those named, when some are) and prints one
// line of JSON on stdout:
//   {"case":NAME,"result":{...what was observed...}}
//   {"case":NAME,"error":{"name":..,"message":..,"status":..,...}}
// The Perl test asserts on these (and runs one case per node process);
// nothing here decides pass or fail.  Each case's requests carry
// "X-SDK-Case: SCRIPT/CASE", which nginx logs beside the module's
// record.  Diagnostics go to stderr.  A case that takes longer than
// CASE_MS is an error; the whole script gives up after SCRIPT_MS.

import { basename } from 'node:path';

export const CASE_MS = 20000;
const SCRIPT_MS = 120000;

// the client's own key: the module must replace it with the model's
// (the mocks answer 401 to another key where they look for one, and the
// test looks for this one in every header a mock received)
export const CLIENT_KEY = 'client-key';

export const base = (process.argv[2] ?? process.env.LLMR_BASE_URL ?? '')
    .replace(/\/+$/, '');
if (!/^https?:\/\//.test(base)) {
    console.error('usage: node SCRIPT.mjs http://127.0.0.1:PORT [CASE...]');
    process.exit(2);
}
const only = new Set(process.argv.slice(3));
const script = basename(process.argv[1] ?? 'sdk', '.mjs');

function emit(obj) {
    process.stdout.write(JSON.stringify(obj) + '\n');
}

// An error as data: what the SDK made of the answer.
export function describeError(e) {
    if (!(e instanceof Error)) return { name: typeof e, message: String(e) };
    const d = { name: e.constructor?.name ?? e.name, message: e.message };
    for (const k of ['status', 'type', 'code', 'apiMessage', 'error',
                     'statusCode', 'responseBody', 'url', 'isRetryable']) {
        if (e[k] !== undefined && typeof e[k] !== 'function') d[k] = e[k];
    }
    if (e.cause) d.cause = describeError(e.cause);
    if (e.stack) d.stack = e.stack.split('\n').slice(0, 6).join('\n');
    return d;
}

// Headers (a fetch Headers, a plain object or undefined) as a plain
// object of the X-LLM-* ones, lower case.
export function llmHeaders(h) {
    const out = {};
    if (!h) return out;
    const entries = typeof h.entries === 'function' ? h.entries() : Object.entries(h);
    for (const [k, v] of entries) {
        if (/^x-(llm|mock)-/i.test(k)) out[k.toLowerCase()] = v;
    }
    return out;
}

function withTimeout(promise, ms, name) {
    let timer;
    const timeout = new Promise((_, reject) => {
        timer = setTimeout(() => reject(new Error(`case ${name} timed out after ${ms} ms`)), ms);
    });
    return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

// cases: { name: async ({ signal, headers }) => result }.  Pass both to
// the SDK call: `signal` aborts when the case times out, so that nothing
// is left running; `headers` tags its requests for nginx's log.
export async function run(cases) {
    const watchdog = setTimeout(() => {
        console.error(`giving up after ${SCRIPT_MS} ms`);
        process.exit(3);
    }, SCRIPT_MS);

    for (const [name, fn] of Object.entries(cases)) {
        if (only.size && !only.has(name)) continue;
        const ac = new AbortController();
        try {
            const headers = { 'X-SDK-Case': `${script}/${name}` };
            const result = await withTimeout(fn({ signal: ac.signal, headers }), CASE_MS, name);
            emit({ case: name, result });
        } catch (e) {
            console.error(`${name}:`, e);
            emit({ case: name, error: describeError(e) });
        } finally {
            ac.abort();
        }
    }
    clearTimeout(watchdog);
}
