import fc from 'fast-check';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { FreeshError } from '../../src/errors.js';
import { heuristicPredictor } from '../../src/predict/predictor.js';
import type { RunningProxy } from '../../src/proxy/standalone.js';
import { parseRequest } from '../../src/request/parse.js';
import { createRouter, type Router } from '../../src/router.js';
import type { Endpoint } from '../../src/types.js';
import { rawExchange } from '../helpers/raw-http.js';
import { fleetConfig, proxyFor, type Upstream, upstream } from '../helpers/servers.js';

/**
 * Property-based fuzzing of the request parser and the HTTP edges: whatever a client sends, the
 * answer is a response (or, for bytes that never make a request, a closed connection) in bounded
 * time, every error is OpenAI-shaped JSON, and nothing throws out of the process.
 */

const CHAT = '/v1/chat/completions';
const COMPLETIONS = '/v1/completions';
const ENDPOINTS: readonly Endpoint[] = ['chat.completions', 'completions'];

/** Bodies near the OpenAI schema (each common field given a random JSON value), and far from it. */
const nearOpenAI = fc.record(
  {
    model: fc.oneof(fc.constant('m'), fc.jsonValue()),
    messages: fc.oneof(
      fc.array(fc.record({ role: fc.oneof(fc.constantFrom('user', 'system', 'assistant', 'tool', 'wizard', ''), fc.jsonValue()), content: fc.oneof(fc.string(), fc.jsonValue()) }, { requiredKeys: [] }), { maxLength: 4 }),
      fc.jsonValue(),
    ),
    prompt: fc.oneof(fc.string(), fc.array(fc.integer()), fc.jsonValue()),
    max_tokens: fc.oneof(fc.integer(), fc.double(), fc.jsonValue()),
    temperature: fc.oneof(fc.double(), fc.jsonValue()),
    top_p: fc.oneof(fc.double(), fc.jsonValue()),
    n: fc.oneof(fc.integer(), fc.jsonValue()),
    stream: fc.oneof(fc.boolean(), fc.jsonValue()),
    stop: fc.oneof(fc.array(fc.string(), { maxLength: 6 }), fc.jsonValue()),
    tools: fc.jsonValue(),
  },
  { requiredKeys: [] },
).map((body) => JSON.stringify(body));

const deepJson = fc.tuple(fc.integer({ min: 1, max: 3_000 }), fc.constantFrom('[', '{"a":')).map(([depth, open]) => `{"model":"m","x":${open.repeat(depth)}0${(open === '[' ? ']' : '}').repeat(depth)}}`);

const bodyText = fc.oneof(nearOpenAI, fc.json(), fc.string(), deepJson, fc.uint8Array({ maxLength: 512 }).map((b) => Buffer.from(b).toString('latin1')));

function expectOpenAIError(text: string): void {
  const body = JSON.parse(text) as { error: Record<string, unknown> };
  expect(Object.keys(body)).toEqual(['error']);
  expect(Object.keys(body.error).sort()).toEqual(['code', 'message', 'param', 'type']);
  expect(typeof body.error.message).toBe('string');
  expect(typeof body.error.code).toBe('string');
}

describe('fuzz: the request parser', () => {
  it('returns a request or throws a 400 FreeshError, for any bytes, in either mode', () => {
    fc.assert(
      fc.property(bodyText, fc.constantFrom(...ENDPOINTS), fc.boolean(), fc.dictionary(fc.constantFrom('x-freesh-tenant', 'x-freesh-slo'), fc.string()), (text, endpoint, strict, headers) => {
        const bytes = Buffer.from(text, 'latin1');
        for (const check of [
          () =>
            parseRequest(endpoint, bytes, {
              id: 'r',
              arrivalMs: 0,
              defaultTenant: 't',
              defaultSloClass: 'standard',
              header: (name) => headers[name],
              maxJsonDepth: 64,
              ...(strict ? { strict: { maxOutputTokens: 4096 } } : {}),
            }),
        ]) {
          try {
            check();
          } catch (err) {
            expect(err).toBeInstanceOf(FreeshError);
            expect((err as FreeshError).status).toBe(400);
            expectOpenAIError((err as FreeshError).toBody());
          }
        }
      }),
      { numRuns: 2_000 },
    );
  });
});

describe('fuzz: the HTTP edges', () => {
  let backend: Upstream;
  let proxy: RunningProxy;
  let router: Router;
  const REQUEST_TIMEOUT_MS = 300;

  beforeAll(async () => {
    backend = await upstream((_req, res) => void res.writeHead(200, { 'content-type': 'application/json' }).end('{"ok":true}'));
    const config = fleetConfig([{ id: 'b1', baseURL: backend.baseURL }], {
      server: { host: '127.0.0.1', port: 0, headersTimeoutMs: 200, requestTimeoutMs: REQUEST_TIMEOUT_MS, maxHeaderBytes: 2048 },
      limits: { bodyLimitBytes: 4096, maxJsonDepth: 32, strictRequests: true },
      plan: { enabled: false },
    });
    proxy = await proxyFor(config);
    const { server: _server, ...routerConfig } = config;
    router = createRouter({ ...routerConfig, predictor: heuristicPredictor() });
  });

  afterAll(async () => {
    await proxy.shutdown(0);
    await router.close();
    await backend.close();
  });

  it('the fetch handler always resolves, with an OpenAI-shaped JSON body on every error', async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.constantFrom('GET', 'POST', 'PUT', 'DELETE', 'PATCH', 'OPTIONS'),
        fc.constantFrom(CHAT, COMPLETIONS, '/v1/models', '/healthz', '/', '/v1/embeddings', `${CHAT}?x=%zz`),
        bodyText,
        fc.dictionary(fc.constantFrom('x-freesh-tenant', 'x-freesh-slo', 'content-type', 'x-request-id'), fc.string().filter((v) => /^[\t\x20-\x7e]*$/.test(v) && v.trim() === v)),
        async (method, path, body, headers) => {
          const withBody = method !== 'GET';
          const res = await router.handle(new Request(`http://edge.test${path}`, { method, headers, ...(withBody ? { body } : {}) }));
          const text = await res.text();
          if (res.status >= 400) {
            expect(res.headers.get('content-type')).toBe('application/json');
            expectOpenAIError(text);
          }
        },
      ),
      { numRuns: 300 },
    );
  });

  /** A request as bytes on the wire, with its framing sometimes wrong. */
  const wireRequest = fc
    .record({
      method: fc.constantFrom('GET', 'POST', 'HEAD', 'PUT', 'G@T', ''),
      path: fc.constantFrom(CHAT, COMPLETIONS, '/v1/models', '/healthz', '/nope', '*', '/a b', ''),
      version: fc.constantFrom('HTTP/1.1', 'HTTP/1.1', 'HTTP/1.0', 'HTTP/2.0', 'HTTP/1.1x', ''),
      host: fc.boolean(),
      headers: fc.array(fc.tuple(fc.oneof(fc.constantFrom('x-freesh-slo', 'x-freesh-tenant', 'Content-Type', 'Expect', 'Connection'), fc.string({ maxLength: 20 })), fc.string({ maxLength: 3000 })), { maxLength: 4 }),
      body: bodyText,
      framing: fc.constantFrom('exact', 'exact', 'short', 'long', 'chunked', 'bad-chunk', 'none'),
      hold: fc.integer({ min: 0, max: 9 }).map((n) => n === 0),
      raw: fc.option(fc.uint8Array({ maxLength: 256 }), { freq: 8 }),
      split: fc.integer({ min: 1, max: 4 }),
    })
    .map((r) => {
      if (r.raw) return { ...r, bytes: Buffer.from(r.raw) };
      const body = Buffer.from(r.body, 'latin1');
      const lines = [`${r.method} ${r.path} ${r.version}`];
      if (r.host) lines.push('Host: proxy.test');
      for (const [name, value] of r.headers) lines.push(`${name}: ${value}`);
      let payload: Buffer = body;
      if (r.framing === 'exact') lines.push(`Content-Length: ${body.length}`);
      else if (r.framing === 'short') lines.push(`Content-Length: ${body.length + 10}`);
      else if (r.framing === 'long') lines.push(`Content-Length: ${Math.max(0, body.length - 3)}`);
      else if (r.framing === 'chunked' || r.framing === 'bad-chunk') {
        lines.push('Transfer-Encoding: chunked');
        payload = Buffer.from(r.framing === 'chunked' ? `${body.length.toString(16)}\r\n${r.body}\r\n0\r\n\r\n` : `${r.body.length}z\r\n${r.body}\r\n`, 'latin1');
      }
      return { ...r, bytes: Buffer.concat([Buffer.from(`${lines.join('\r\n')}\r\n\r\n`, 'latin1'), payload]) };
    });

  it('the proxy answers any bytes in bounded time, with an OpenAI-shaped JSON body on every error, and keeps serving', async () => {
    const port = Number(new URL(proxy.url).port);
    await fc.assert(
      fc.asyncProperty(wireRequest, async (r) => {
        const size = Math.ceil(r.bytes.length / r.split);
        const pieces = Array.from({ length: r.split }, (_, i) => r.bytes.subarray(i * size, (i + 1) * size));
        const answer = await rawExchange(port, [...pieces.flatMap((p) => [p, { waitMs: 1 }]), ...(r.hold ? [] : [{ end: true } as const])], 5_000);
        // No hang: an answer, or the connection closed, within the request timeout and Node's check interval.
        expect(answer.error).not.toBe('client timeout');
        expect(answer.elapsedMs).toBeLessThan(REQUEST_TIMEOUT_MS + 2_000);
        if (answer.status !== undefined && answer.status >= 400 && r.method !== 'HEAD') {
          expect(answer.headers['content-type']).toBe('application/json');
          expectOpenAIError(answer.body);
        }
      }),
      { numRuns: Number(process.env.FUZZ_RUNS ?? 500) },
    );
    expect((await fetch(`${proxy.url}/healthz`)).status).toBe(200);
  }, 120_000);
});
