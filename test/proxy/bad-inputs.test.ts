import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { RunningProxy } from '../../src/proxy/standalone.js';
import { fleetConfig, proxyFor, type Upstream, upstream } from '../helpers/servers.js';
import { rawExchange, type RawStep } from '../helpers/raw-http.js';

/**
 * Bad inputs a client can send the standalone proxy — bodies, headers, HTTP framing, timing — each
 * sent on a real socket by hand, each with the status and error code it must get: an OpenAI-shaped
 * JSON error, in seconds, and nothing sent upstream.
 */

const HEADERS_TIMEOUT_MS = 400;
const REQUEST_TIMEOUT_MS = 800;
const KEEP_ALIVE_TIMEOUT_MS = 500;
const MAX_HEADER_BYTES = 4096;
const BODY_LIMIT = 256 * 1024;
const MAX_DEPTH = 32;

const CHAT = '/v1/chat/completions';
const COMPLETIONS = '/v1/completions';
const chat = (extra: Record<string, unknown> = {}) => JSON.stringify({ model: 'm', messages: [{ role: 'user', content: 'Hello' }], ...extra });
const completion = (extra: Record<string, unknown> = {}) => JSON.stringify({ model: 'm', prompt: 'Once', ...extra });

/** A whole request, its length declared. */
function request(path: string, body: string | Buffer, headers: Record<string, string> = {}, method = 'POST'): string | Buffer {
  const bytes = Buffer.isBuffer(body) ? body : Buffer.from(body);
  const head = [`${method} ${path} HTTP/1.1`, 'Host: proxy.test', 'Content-Type: application/json', `Content-Length: ${bytes.length}`];
  for (const [name, value] of Object.entries(headers)) head.push(`${name}: ${value}`);
  return Buffer.concat([Buffer.from(`${head.join('\r\n')}\r\n\r\n`), bytes]);
}

/** A chunked request head; the chunks follow as further steps. */
const chunkedHead = (path = CHAT) => `POST ${path} HTTP/1.1\r\nHost: proxy.test\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n`;
const chunk = (text: string) => `${Buffer.byteLength(text).toString(16)}\r\n${text}\r\n`;

type Kind = 'body' | 'strict' | 'headers' | 'framing' | 'timing';

interface Case {
  readonly name: string;
  readonly kind: Kind;
  readonly steps: readonly RawStep[];
  readonly status: number;
  readonly code: string;
  readonly param?: string;
}

const deep = (levels: number) => `${'['.repeat(levels)}${']'.repeat(levels)}`;

const CASES: readonly Case[] = [
  // Bodies (default mode: what routing needs)
  { kind: 'body', name: 'malformed JSON', steps: [request(CHAT, '{"model":"m",')], status: 400, code: 'invalid_json' },
  { kind: 'body', name: 'an empty body', steps: [request(CHAT, '')], status: 400, code: 'invalid_json' },
  { kind: 'body', name: 'trailing garbage after the object', steps: [request(CHAT, `${chat()}x`)], status: 400, code: 'invalid_json' },
  { kind: 'body', name: 'a JSON string', steps: [request(CHAT, '"hello"')], status: 400, code: 'invalid_body' },
  { kind: 'body', name: 'a JSON array', steps: [request(CHAT, '[1,2]')], status: 400, code: 'invalid_body' },
  { kind: 'body', name: 'JSON null', steps: [request(CHAT, 'null')], status: 400, code: 'invalid_body' },
  { kind: 'body', name: 'no model', steps: [request(CHAT, '{"messages":[{"role":"user","content":"x"}]}')], status: 400, code: 'invalid_model', param: 'model' },
  { kind: 'body', name: 'a numeric model', steps: [request(CHAT, chat({ model: 7 }))], status: 400, code: 'invalid_model', param: 'model' },
  { kind: 'body', name: 'an unknown model', steps: [request(CHAT, chat({ model: 'gpt-9' }))], status: 404, code: 'model_not_found', param: 'model' },
  { kind: 'body', name: 'no messages', steps: [request(CHAT, '{"model":"m"}')], status: 400, code: 'invalid_messages', param: 'messages' },
  { kind: 'body', name: 'empty messages', steps: [request(CHAT, chat({ messages: [] }))], status: 400, code: 'invalid_messages', param: 'messages' },
  { kind: 'body', name: 'a message that is a string', steps: [request(CHAT, chat({ messages: ['hi'] }))], status: 400, code: 'invalid_messages', param: 'messages[0]' },
  { kind: 'body', name: 'a message without a role', steps: [request(CHAT, chat({ messages: [{ content: 'x' }] }))], status: 400, code: 'invalid_messages', param: 'messages[0].role' },
  { kind: 'body', name: 'numeric message content', steps: [request(CHAT, chat({ messages: [{ role: 'user', content: 5 }] }))], status: 400, code: 'invalid_messages', param: 'messages[0].content' },
  { kind: 'body', name: 'max_tokens "ten"', steps: [request(CHAT, chat({ max_tokens: 'ten' }))], status: 400, code: 'invalid_type', param: 'max_tokens' },
  { kind: 'body', name: 'max_tokens -1', steps: [request(CHAT, chat({ max_tokens: -1 }))], status: 400, code: 'invalid_type', param: 'max_tokens' },
  { kind: 'body', name: 'stream "yes"', steps: [request(CHAT, chat({ stream: 'yes' }))], status: 400, code: 'invalid_type', param: 'stream' },
  { kind: 'body', name: 'no prompt (completions)', steps: [request(COMPLETIONS, '{"model":"m"}')], status: 400, code: 'invalid_prompt', param: 'prompt' },
  { kind: 'body', name: 'a prompt of mixed types', steps: [request(COMPLETIONS, completion({ prompt: ['a', 1] }))], status: 400, code: 'invalid_prompt', param: 'prompt' },
  { kind: 'body', name: '100,000 nested arrays', steps: [request(CHAT, chat({ x: 0 }).replace('0', deep(100_000)))], status: 400, code: 'json_too_deep' },
  { kind: 'body', name: 'objects one level past the depth limit', steps: [request(CHAT, chat({ x: 0 }).replace('0', `${'{"a":'.repeat(MAX_DEPTH)}1${'}'.repeat(MAX_DEPTH)}`))], status: 400, code: 'json_too_deep' },
  { kind: 'body', name: 'a declared length over the limit', steps: [request(CHAT, chat({ pad: 'x'.repeat(BODY_LIMIT) }))], status: 413, code: 'body_too_large' },
  { kind: 'body', name: 'a chunked body passing the limit', steps: [chunkedHead(), chunk('x'.repeat(BODY_LIMIT / 2)), chunk('x'.repeat(BODY_LIMIT / 2)), chunk('x'.repeat(1024))], status: 413, code: 'body_too_large' },
  { kind: 'body', name: 'POST to an unknown path', steps: [request('/v1/embeddings', chat())], status: 404, code: 'route_not_found' },
  { kind: 'body', name: 'GET on chat completions', steps: ['GET /v1/chat/completions HTTP/1.1\r\nHost: proxy.test\r\n\r\n'], status: 405, code: 'method_not_allowed' },

  // Strict mode: OpenAI's types and ranges
  { kind: 'strict', name: 'max_tokens 1e9', steps: [request(CHAT, chat({ max_tokens: 1e9 }))], status: 400, code: 'invalid_value', param: 'max_tokens' },
  { kind: 'strict', name: 'max_completion_tokens 0', steps: [request(CHAT, chat({ max_completion_tokens: 0 }))], status: 400, code: 'invalid_value', param: 'max_completion_tokens' },
  { kind: 'strict', name: 'role "wizard"', steps: [request(CHAT, chat({ messages: [{ role: 'wizard', content: 'x' }] }))], status: 400, code: 'invalid_value', param: 'messages[0].role' },
  { kind: 'strict', name: 'temperature "hot"', steps: [request(CHAT, chat({ temperature: 'hot' }))], status: 400, code: 'invalid_type', param: 'temperature' },
  { kind: 'strict', name: 'temperature 3', steps: [request(CHAT, chat({ temperature: 3 }))], status: 400, code: 'invalid_value', param: 'temperature' },
  { kind: 'strict', name: 'top_p 1.5', steps: [request(CHAT, chat({ top_p: 1.5 }))], status: 400, code: 'invalid_value', param: 'top_p' },
  { kind: 'strict', name: 'n 0', steps: [request(CHAT, chat({ n: 0 }))], status: 400, code: 'invalid_value', param: 'n' },
  { kind: 'strict', name: 'five stop sequences', steps: [request(CHAT, chat({ stop: ['a', 'b', 'c', 'd', 'e'] }))], status: 400, code: 'invalid_value', param: 'stop' },
  { kind: 'strict', name: 'presence_penalty -3', steps: [request(CHAT, chat({ presence_penalty: -3 }))], status: 400, code: 'invalid_value', param: 'presence_penalty' },
  { kind: 'strict', name: 'a logit_bias of 200', steps: [request(CHAT, chat({ logit_bias: { '42': 200 } }))], status: 400, code: 'invalid_value', param: 'logit_bias.42' },
  { kind: 'strict', name: 'tools that are an object', steps: [request(CHAT, chat({ tools: { type: 'function' } }))], status: 400, code: 'invalid_type', param: 'tools' },
  { kind: 'strict', name: 'top_logprobs 99', steps: [request(CHAT, chat({ top_logprobs: 99 }))], status: 400, code: 'invalid_value', param: 'top_logprobs' },
  { kind: 'strict', name: 'echo "yes" (completions)', steps: [request(COMPLETIONS, completion({ echo: 'yes' }))], status: 400, code: 'invalid_type', param: 'echo' },
  { kind: 'strict', name: 'best_of 0 (completions)', steps: [request(COMPLETIONS, completion({ best_of: 0 }))], status: 400, code: 'invalid_value', param: 'best_of' },

  // Headers
  { kind: 'headers', name: 'an unknown SLO class', steps: [request(CHAT, chat(), { 'x-freesh-slo': 'platinum' })], status: 400, code: 'unknown_slo_class', param: 'x-freesh-slo' },
  { kind: 'headers', name: 'a tenant with spaces', steps: [request(CHAT, chat(), { 'x-freesh-tenant': 'a b' })], status: 400, code: 'invalid_header', param: 'x-freesh-tenant' },
  { kind: 'headers', name: 'a 20 kB header', steps: [request(CHAT, chat(), { 'x-big': 'x'.repeat(20_000) })], status: 431, code: 'headers_too_large' },
  { kind: 'headers', name: 'many small headers past the limit', steps: [request(CHAT, chat(), Object.fromEntries(Array.from({ length: 600 }, (_, i) => [`x-h${i}`, 'value'])))], status: 431, code: 'headers_too_large' },
  { kind: 'headers', name: 'an Expect other than 100-continue', steps: [request(CHAT, chat(), { expect: 'teapot' })], status: 417, code: 'expectation_failed', param: 'expect' },
  { kind: 'headers', name: 'an HTTP/1.1 request without Host', steps: [`POST ${CHAT} HTTP/1.1\r\nContent-Length: 2\r\n\r\n{}`], status: 400, code: 'malformed_http' },

  // HTTP framing
  { kind: 'framing', name: 'a request line that is not HTTP', steps: ['HELLO\r\n\r\n'], status: 400, code: 'malformed_http' },
  { kind: 'framing', name: 'an invalid method', steps: ['G@T /v1/models HTTP/1.1\r\nHost: x\r\n\r\n'], status: 400, code: 'malformed_http' },
  { kind: 'framing', name: 'HTTP version 9.9', steps: ['GET /v1/models HTTP/9.9\r\nHost: x\r\n\r\n'], status: 400, code: 'malformed_http' },
  { kind: 'framing', name: 'a space in the path', steps: ['GET /v1/mo dels HTTP/1.1\r\nHost: x\r\n\r\n'], status: 400, code: 'malformed_http' },
  { kind: 'framing', name: 'a header line without a colon', steps: [`POST ${CHAT} HTTP/1.1\r\nHost: x\r\nnocolon\r\n\r\n`], status: 400, code: 'malformed_http' },
  { kind: 'framing', name: 'a space before a header colon', steps: [`POST ${CHAT} HTTP/1.1\r\nHost : x\r\n\r\n`], status: 400, code: 'malformed_http' },
  { kind: 'framing', name: 'a non-numeric Content-Length', steps: [`POST ${CHAT} HTTP/1.1\r\nHost: x\r\nContent-Length: ten\r\n\r\n`], status: 400, code: 'malformed_http' },
  { kind: 'framing', name: 'two different Content-Lengths', steps: [`POST ${CHAT} HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\n{}`], status: 400, code: 'malformed_http' },
  { kind: 'framing', name: 'Content-Length with chunked Transfer-Encoding', steps: [`POST ${CHAT} HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\nTransfer-Encoding: chunked\r\n\r\n2\r\n{}\r\n0\r\n\r\n`], status: 400, code: 'malformed_http' },
  { kind: 'framing', name: 'a chunk size that is not hex', steps: [chunkedHead(), 'zz\r\n{}\r\n0\r\n\r\n'], status: 400, code: 'malformed_http' },
  { kind: 'framing', name: 'a chunk without its CRLF', steps: [chunkedHead(), '2\r\n{}XX0\r\n\r\n'], status: 400, code: 'malformed_http' },
  { kind: 'framing', name: 'a body shorter than its Content-Length, then half-close', steps: [`POST ${CHAT} HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{"model":"m"}`, { end: true }], status: 400, code: 'malformed_http' },
  { kind: 'framing', name: 'a NUL byte in a header value', steps: [`POST ${CHAT} HTTP/1.1\r\nHost: x\r\nX-A: a\u0000b\r\nContent-Length: 2\r\n\r\n{}`], status: 400, code: 'malformed_http' },

  // Timing
  { kind: 'timing', name: 'a connection that sends nothing', steps: [{ waitMs: 5_000 }], status: 408, code: 'request_timeout' },
  { kind: 'timing', name: 'headers sent slowly, never finished', steps: [`POST ${CHAT} HTTP/1.1\r\n`, { waitMs: 150 }, 'Host: x\r\n', { waitMs: 150 }, 'X-A: 1\r\n', { waitMs: 5_000 }], status: 408, code: 'request_timeout' },
  { kind: 'timing', name: 'a chunked body that never ends', steps: [chunkedHead(), chunk('{"model":"m",'), { waitMs: 5_000 }], status: 408, code: 'request_timeout' },
  { kind: 'timing', name: 'a body short of its Content-Length, held open', steps: [`POST ${CHAT} HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{"model":"m"}`, { waitMs: 5_000 }], status: 408, code: 'request_timeout' },
  { kind: 'timing', name: 'a body trickled a byte at a time', steps: [`POST ${CHAT} HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n`, ...Array.from({ length: 50 }, () => ['{', { waitMs: 50 }] as const).flat()], status: 408, code: 'request_timeout' },
];

describe('bad inputs to the proxy: status and error code for each', () => {
  let backend: Upstream;
  let requestsUpstream = 0;
  const proxies: Partial<Record<'lax' | 'strict', RunningProxy>> = {};

  beforeAll(async () => {
    backend = await upstream((_req, res) => {
      requestsUpstream++;
      res.writeHead(200, { 'content-type': 'application/json' }).end('{"ok":true}');
    });
    for (const mode of ['lax', 'strict'] as const) {
      proxies[mode] = await proxyFor(
        fleetConfig([{ id: 'b1', baseURL: backend.baseURL }], {
          server: { host: '127.0.0.1', port: 0, headersTimeoutMs: HEADERS_TIMEOUT_MS, requestTimeoutMs: REQUEST_TIMEOUT_MS, keepAliveTimeoutMs: KEEP_ALIVE_TIMEOUT_MS, maxHeaderBytes: MAX_HEADER_BYTES },
          limits: { bodyLimitBytes: BODY_LIMIT, maxJsonDepth: MAX_DEPTH, strictRequests: mode === 'strict' },
          plan: { enabled: false },
        }),
      );
    }
  });

  afterAll(async () => {
    for (const proxy of Object.values(proxies)) await proxy.shutdown(0);
    await backend.close();
  });

  const port = (mode: 'lax' | 'strict') => Number(new URL(proxies[mode]!.url).port);

  it('covers at least 40 distinct bad inputs across bodies, strict schema, headers, framing and timing', () => {
    expect(new Set(CASES.map((c) => c.name)).size).toBe(CASES.length);
    expect(CASES.filter((c) => c.status >= 400).length).toBeGreaterThanOrEqual(40);
    expect(new Set(CASES.map((c) => c.kind))).toEqual(new Set(['body', 'strict', 'headers', 'framing', 'timing']));
  });

  it.concurrent.each(CASES.map((c) => [`${c.kind}: ${c.name} → ${c.status} ${c.code}`, c] as const))('%s', async (_title, c) => {
    const answer = await rawExchange(port(c.kind === 'strict' ? 'strict' : 'lax'), c.steps);
    expect({ status: answer.status, error: answer.error, body: answer.body.slice(0, 300) }).toMatchObject({ status: c.status });
    if (c.status < 400) return;
    expect(answer.headers['content-type']).toBe('application/json');
    expect(answer.headers['content-length']).toBe(String(Buffer.byteLength(answer.body)));
    expect(answer.headers['x-should-retry']).toBe('false');
    const body = JSON.parse(answer.body) as { error: Record<string, unknown> };
    expect(Object.keys(body.error).sort()).toEqual(['code', 'message', 'param', 'type']);
    expect(body.error.code).toBe(c.code);
    if (c.param !== undefined) expect(body.error.param).toBe(c.param);
    // Slow clients are cut in about the configured time: seconds, not Node's default 300 s.
    const limit = c.kind === 'timing' ? REQUEST_TIMEOUT_MS + 1_000 : 2_000;
    expect(answer.elapsedMs).toBeLessThan(limit);
    if (c.kind === 'timing') expect(answer.elapsedMs).toBeGreaterThanOrEqual(HEADERS_TIMEOUT_MS - 50);
  });

  it('sent none of them upstream, and still serves', async () => {
    expect(requestsUpstream).toBe(0);
    const ok = await fetch(`${proxies.strict!.url}${CHAT}`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: chat({ temperature: 0.5, max_tokens: 8 }) });
    expect(ok.status).toBe(200);
    expect(requestsUpstream).toBe(1);
  });
});
