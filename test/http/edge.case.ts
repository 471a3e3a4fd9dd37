import type { IncomingMessage, ServerResponse } from 'node:http';
import { afterEach, describe, expect, it } from 'vitest';
import type { FileConfigInput } from '../../src/config/schema.js';
import { heuristicPredictor } from '../../src/predict/predictor.js';
import { createRouter, type Router } from '../../src/router.js';
import { FIXED_COMPLETION, startFixedBackend } from '../../src/sim/fixed-backend.js';
import { chatBody, deadBaseURL, fleetConfig, until, upstream } from '../helpers/servers.js';

/**
 * The HTTP conformance suite: every edge over the router (the node listener, the fetch handler)
 * must answer the same requests the same way. A harness adapts an edge to `Edge`; the suite starts
 * real backends and a real router behind it.
 */

/** One HTTP edge over a router, as a client reaches it. */
export interface Edge {
  /**
   * Sends a request as a client would. Only the URL's path and query matter. A body whose request
   * carries `content-length` goes with that length; one without is streamed (chunked on the wire).
   * Aborting the request's signal is the client going away.
   */
  send(request: Request): Promise<Response>;
  /**
   * The most a client may have written that the edge never read: what the sockets' buffers hold
   * for a server, 0 for a handler called directly. Bounds how far past the body limit a client gets.
   */
  readonly bufferedBytes: number;
  close(): Promise<void>;
}

export interface EdgeOptions {
  readonly basePath?: string;
}

export type MakeEdge = (router: Router, options: EdgeOptions) => Promise<Edge>;

type BackendSpec = Parameters<typeof fleetConfig>[0][number];

const ORIGIN = 'http://edge.test';
const CHAT = '/v1/chat/completions';
const COMPLETIONS = '/v1/completions';
const completionBody = (extra: Record<string, unknown> = {}) => JSON.stringify({ model: 'm', prompt: 'Once upon a time', ...extra });
const bodyFor = (path: string, extra: Record<string, unknown> = {}) => (path === CHAT ? chatBody(extra) : completionBody(extra));

/** A JSON POST with its length declared, as clients send a body they hold whole. */
function post(path: string, body: string, headers: Record<string, string> = {}, signal?: AbortSignal): Request {
  return new Request(ORIGIN + path, {
    method: 'POST',
    headers: { 'content-type': 'application/json', 'content-length': String(Buffer.byteLength(body)), ...headers },
    body,
    signal: signal ?? null,
  });
}

/** A POST whose body is a stream of unknown length. */
function postStream(path: string, body: ReadableStream<Uint8Array>): Request {
  return new Request(ORIGIN + path, { method: 'POST', headers: { 'content-type': 'application/json' }, body, duplex: 'half' } as RequestInit);
}

const request = (method: string, path: string) => new Request(ORIGIN + path, { method });

/** Reads a response body piece by piece, as a streaming client does. */
class BodyReader {
  readonly #reader: ReadableStreamDefaultReader<Uint8Array>;
  #bytes = Buffer.alloc(0);

  constructor(response: Response) {
    this.#reader = response.body!.getReader();
  }

  /** Reads until `length` bytes have arrived in all, and returns them as text. */
  async atLeast(length: number): Promise<string> {
    while (this.#bytes.length < length) {
      const { done, value } = await this.#reader.read();
      if (done) throw new Error(`the body ended after ${this.#bytes.length} of ${length} bytes`);
      this.#bytes = Buffer.concat([this.#bytes, value]);
    }
    return this.#bytes.toString();
  }

  /** Reads to the end; rejects if the body breaks. */
  async rest(): Promise<Buffer> {
    for (;;) {
      const { done, value } = await this.#reader.read();
      if (done) return this.#bytes;
      this.#bytes = Buffer.concat([this.#bytes, value]);
    }
  }

  cancel(): Promise<void> {
    return this.#reader.cancel().catch(() => undefined);
  }
}

/**
 * Asserts the one error answer both edges give: status, an OpenAI-shaped JSON body with exactly
 * message/type/param/code, a truthful content-length, `retry-after` exactly on 429 and 503, and
 * `x-should-retry: false` (OpenAI clients must not retry what the router already retried) except on
 * refusals before any backend saw the request, which carry `retry-after-ms`.
 */
async function expectError(res: Response, status: number, code: string, type: string): Promise<{ message: string; param: string | null }> {
  const text = await res.text();
  expect({ status: res.status, text }).toMatchObject({ status });
  expect(res.headers.get('content-type')).toBe('application/json');
  expect(res.headers.get('content-length')).toBe(String(Buffer.byteLength(text)));
  // Refusals made before any backend saw the request (overload, draining) carry their own estimate and may be retried.
  const estimated = code === 'queue_full' || code === 'class_shed' || code === 'draining';
  expect(res.headers.get('retry-after')).toBe(status === 429 || status === 503 ? String(Math.ceil(Number(res.headers.get('retry-after-ms') ?? 1000) / 1000)) : null);
  if (estimated) expect(res.headers.get('retry-after-ms')).toMatch(/^\d+$/);
  else expect(res.headers.get('retry-after-ms')).toBeNull();
  expect(res.headers.get('x-should-retry')).toBe(estimated ? 'true' : 'false');
  const body = JSON.parse(text) as { error: Record<string, unknown> };
  expect(Object.keys(body)).toEqual(['error']);
  expect(Object.keys(body.error).sort()).toEqual(['code', 'message', 'param', 'type']);
  expect(body.error).toMatchObject({ code, type, message: expect.any(String) });
  return body.error as { message: string; param: string | null };
}

const metricsOf = async (router: Router) => router.metrics.registry.metrics();

export function describeEdge(name: string, makeEdge: MakeEdge): void {
  describe(`HTTP edge: ${name}`, () => {
    // Closed in this order: edges, then backends (which cuts any response a test left hanging),
    // then routers (whose connection pools wait for in-flight upstream requests).
    const edges: { close(): Promise<unknown> }[] = [];
    const backends: { close(): Promise<unknown> }[] = [];
    const routers: Router[] = [];
    afterEach(async () => {
      for (const thing of [...edges.splice(0), ...backends.splice(0), ...routers.splice(0)]) await thing.close();
    });

    async function backend(handler: (req: IncomingMessage, res: ServerResponse, body: string) => void) {
      const up = await upstream(handler);
      backends.push(up);
      return up;
    }

    async function fixed() {
      const up = await startFixedBackend();
      backends.push(up);
      return up;
    }

    /** A router over `specs` (a heuristic predictor, no pool planner: the edge is under test), behind the edge. */
    async function serve(specs: BackendSpec[], extra: Partial<FileConfigInput> = {}, options: EdgeOptions = {}): Promise<{ router: Router; edge: Edge }> {
      const { server: _server, ...config } = fleetConfig(specs, extra);
      const router = createRouter({ ...config, plan: { enabled: false }, predictor: heuristicPredictor() });
      routers.push(router);
      const edge = await makeEdge(router, options);
      edges.push(edge);
      return { router, edge };
    }

    describe('route table', () => {
      it.each([CHAT, COMPLETIONS])('POST %s relays a JSON body byte-exact, with its content-length and the routing headers', async (path) => {
        const up = await fixed();
        const { edge } = await serve([{ id: 'b1', baseURL: up.baseURL }]);
        const res = await edge.send(post(path, bodyFor(path)));
        expect(res.status).toBe(200);
        expect(res.headers.get('content-type')).toBe('application/json');
        expect(res.headers.get('content-length')).toBe(String(Buffer.byteLength(FIXED_COMPLETION)));
        expect(res.headers.get('x-freesh-backend')).toBe('b1');
        expect(res.headers.get('x-freesh-site')).toBe('loc1');
        for (const h of ['x-freesh-predicted-tokens', 'x-freesh-energy-j', 'x-freesh-carbon-g', 'x-request-id']) expect(res.headers.get(h), h).toBeTruthy();
        expect(await res.text()).toBe(FIXED_COMPLETION);
      });

      it.each([CHAT, COMPLETIONS])('POST %s relays an event stream chunk by chunk, byte-exact', async (path) => {
        const chunks = ['data: {"choices":[{"delta":{"content":"é"}}]}\n\n', 'data: {"choices":[{"delta":{"content":" two"}}]}\n\n', 'data: [DONE]\n\n'];
        let seenPath: string | undefined;
        let sendNext: (() => void) | undefined;
        const up = await backend((req, res) => {
          seenPath = req.url;
          res.writeHead(200, { 'content-type': 'text/event-stream', 'x-upstream': 'yes' });
          let i = 0;
          sendNext = () => {
            const chunk = chunks[i++]!;
            if (i === chunks.length) res.end(chunk);
            else res.write(chunk);
          };
          sendNext();
        });
        const { edge } = await serve([{ id: 'b1', baseURL: up.baseURL }]);
        const res = await edge.send(post(path, bodyFor(path, { stream: true })));
        expect(res.status).toBe(200);
        expect(res.headers.get('content-type')).toBe('text/event-stream');
        expect(res.headers.get('x-upstream')).toBe('yes');
        expect(res.headers.get('x-freesh-backend')).toBe('b1');
        expect(seenPath).toBe(path);
        const body = new BodyReader(res);
        // Each chunk reaches the client before the backend has written the next.
        let expected = chunks[0]!;
        expect(await body.atLeast(Buffer.byteLength(expected))).toBe(expected);
        sendNext!();
        expected += chunks[1]!;
        expect(await body.atLeast(Buffer.byteLength(expected))).toBe(expected);
        sendNext!();
        expect(await body.rest()).toEqual(Buffer.from(chunks.join('')));
      });

      it('GET /v1/models lists the union of the fleet\'s models', async () => {
        const up = await fixed();
        const { edge } = await serve([
          { id: 'b1', baseURL: up.baseURL, models: ['a', 'b'] },
          { id: 'b2', baseURL: up.baseURL, models: ['c', 'b'] },
        ]);
        const res = await edge.send(request('GET', '/v1/models'));
        expect(res.status).toBe(200);
        expect(res.headers.get('content-type')).toBe('application/json');
        const models = (await res.json()) as { object: string; data: { id: string; object: string }[] };
        expect(models.object).toBe('list');
        expect(models.data.map((m) => [m.id, m.object])).toEqual([['a', 'model'], ['b', 'model'], ['c', 'model']]);
      });

      it('GET /metrics answers Prometheus text counting the requests served', async () => {
        const up = await fixed();
        const { router, edge } = await serve([{ id: 'b1', baseURL: up.baseURL }]);
        await (await edge.send(post(CHAT, chatBody()))).text();
        await until(() => router.inFlight === 0);
        const res = await edge.send(request('GET', '/metrics'));
        expect(res.status).toBe(200);
        expect(res.headers.get('content-type')).toMatch(/^text\/plain; version=0\.0\.4/);
        expect(await res.text()).toMatch(/^freesh_requests_total\{outcome="completed",backend="b1"\} 1$/m);
      });

      it.each([
        ['an unknown path', 'POST', '/v1/embeddings', 404, 'route_not_found', 'not_found_error'],
        ['the root', 'GET', '/', 404, 'route_not_found', 'not_found_error'],
        ['a path under a route', 'GET', '/v1/models/m', 404, 'route_not_found', 'not_found_error'],
        ['GET on chat completions', 'GET', CHAT, 405, 'method_not_allowed', 'invalid_request_error'],
        ['PUT on completions', 'PUT', COMPLETIONS, 405, 'method_not_allowed', 'invalid_request_error'],
        ['DELETE on models', 'DELETE', '/v1/models', 405, 'method_not_allowed', 'invalid_request_error'],
        ['POST on healthz', 'POST', '/healthz', 405, 'method_not_allowed', 'invalid_request_error'],
      ] as const)('%s is answered %i %s', async (_name, method, path, status, code, type) => {
        const up = await fixed();
        const { edge } = await serve([{ id: 'b1', baseURL: up.baseURL }]);
        const req = method === 'POST' || method === 'PUT' ? new Request(ORIGIN + path, { method, headers: { 'content-length': '2' }, body: '{}' }) : request(method, path);
        const error = await expectError(await edge.send(req), status, code, type);
        expect(error.message).toContain(path);
        expect(error.param).toBeNull();
        // Still serving afterwards.
        expect((await edge.send(post(CHAT, chatBody()))).status).toBe(200);
      });

      it('ignores the query string', async () => {
        const up = await fixed();
        const { edge } = await serve([{ id: 'b1', baseURL: up.baseURL }]);
        const completion = await edge.send(post(`${CHAT}?api-version=2024-06-01`, chatBody()));
        expect(completion.status).toBe(200);
        expect(await completion.text()).toBe(FIXED_COMPLETION);
        const models = await edge.send(request('GET', '/v1/models?limit=1'));
        expect(await models.json()).toMatchObject({ object: 'list', data: [{ id: 'm' }] });
        expect((await edge.send(request('GET', '/healthz?verbose'))).status).toBe(200);
      });

      it.each(['/v1/models', '/healthz', '/metrics'])('HEAD %s answers GET\'s status and headers without a body', async (path) => {
        const up = await fixed();
        const { edge } = await serve([{ id: 'b1', baseURL: up.baseURL }]);
        const get = await edge.send(request('GET', path));
        const getBody = await get.text();
        const head = await edge.send(request('HEAD', path));
        expect(head.status).toBe(get.status);
        expect(head.headers.get('content-type')).toBe(get.headers.get('content-type'));
        expect(await head.text()).toBe('');
        expect(get.headers.get('content-length')).toBe(String(Buffer.byteLength(getBody)));
        // /metrics' length may move between the two scrapes; the others' bodies are the same.
        if (path !== '/metrics') expect(head.headers.get('content-length')).toBe(get.headers.get('content-length'));
        else expect(Number(head.headers.get('content-length'))).toBeGreaterThan(0);
      });

      it('serves the routes under a basePath, and nothing outside it', async () => {
        const up = await fixed();
        const { edge } = await serve([{ id: 'b1', baseURL: up.baseURL }], {}, { basePath: '/llm/' });
        const completion = await edge.send(post(`/llm${CHAT}`, chatBody()));
        expect(completion.status).toBe(200);
        expect(await completion.text()).toBe(FIXED_COMPLETION);
        expect(await (await edge.send(request('GET', '/llm/v1/models?x=1'))).json()).toMatchObject({ object: 'list' });
        expect((await edge.send(request('GET', '/llm/healthz'))).status).toBe(200);
        await expectError(await edge.send(request('GET', '/llm/v1/completions')), 405, 'method_not_allowed', 'invalid_request_error');
        for (const path of ['/v1/models', '/llmx/v1/models', '/llm', '/llm/', '/llm/v1/embeddings']) {
          await expectError(await edge.send(request('GET', path)), 404, 'route_not_found', 'not_found_error');
        }
      });
    });

    describe('body limit', () => {
      const LIMIT = 1024;
      const big = chatBody({ padding: 'x'.repeat(2 * LIMIT) });

      it('refuses a body whose content-length is over the limit with 413, then keeps serving', async () => {
        const up = await fixed();
        const { edge } = await serve([{ id: 'b1', baseURL: up.baseURL }], { limits: { bodyLimitBytes: LIMIT } });
        await expectError(await edge.send(post(CHAT, big)), 413, 'body_too_large', 'invalid_request_error');
        expect((await edge.send(post(CHAT, chatBody()))).status).toBe(200);
      });

      it('refuses a streamed body as it passes the limit, without reading the rest', async () => {
        const up = await fixed();
        const { router, edge } = await serve([{ id: 'b1', baseURL: up.baseURL }], { limits: { bodyLimitBytes: LIMIT } });
        // 256 MiB on offer, 1 KiB a chunk: a reader that buffered it all before checking would pull every chunk.
        const chunkBytes = 1024;
        const offered = 262_144;
        let pulled = 0;
        const body = new ReadableStream<Uint8Array>({
          pull(controller) {
            if (pulled === offered) return controller.close();
            pulled++;
            controller.enqueue(new Uint8Array(chunkBytes).fill(0x20));
          },
        });
        await expectError(await edge.send(postStream(CHAT, body)), 413, 'body_too_large', 'invalid_request_error');
        // Read: up to the chunk that crossed the limit, and the one the stream's queue holds ahead.
        expect(pulled * chunkBytes).toBeLessThanOrEqual(LIMIT + 2 * chunkBytes + edge.bufferedBytes);
        expect(router.inFlight).toBe(0);
        expect((await edge.send(post(CHAT, chatBody()))).status).toBe(200);
      });

      it('accepts a streamed body within the limit, however it is chunked', async () => {
        const up = await backend((_req, res, body) => res.writeHead(200, { 'content-type': 'application/json' }).end(body));
        const { edge } = await serve([{ id: 'b1', baseURL: up.baseURL }], { limits: { bodyLimitBytes: LIMIT } });
        const sent = Buffer.from(chatBody({ note: 'ü'.repeat(100) }));
        expect(sent.length).toBeLessThan(LIMIT);
        let at = 0;
        const body = new ReadableStream<Uint8Array>({
          pull(controller) {
            if (at >= sent.length) return controller.close();
            controller.enqueue(sent.subarray(at, (at += 7))); // splits multi-byte characters too
          },
        });
        const res = await edge.send(postStream(CHAT, body));
        expect(res.status).toBe(200);
        expect(Buffer.from(await res.arrayBuffer())).toEqual(sent);
      });
    });

    describe('bad input', () => {
      it.each([
        ['malformed JSON', CHAT, '{"model":"m",', {}, 400, 'invalid_json', 'invalid_request_error'],
        ['a body that is not an object', CHAT, '"hello"', {}, 400, 'invalid_body', 'invalid_request_error'],
        ['an empty body', CHAT, '', {}, 400, 'invalid_json', 'invalid_request_error'],
        ['a missing model', CHAT, '{"messages":[{"role":"user","content":"x"}]}', {}, 400, 'invalid_model', 'invalid_request_error'],
        ['missing messages', CHAT, '{"model":"m"}', {}, 400, 'invalid_messages', 'invalid_request_error'],
        ['a wrong type', CHAT, '{"model":"m","messages":[{"role":"user","content":"x"}],"max_tokens":"ten"}', {}, 400, 'invalid_type', 'invalid_request_error'],
        ['a missing prompt', COMPLETIONS, '{"model":"m"}', {}, 400, 'invalid_prompt', 'invalid_request_error'],
        ['an unknown SLO class', CHAT, chatBody(), { 'x-freesh-slo': 'platinum' }, 400, 'unknown_slo_class', 'invalid_request_error'],
        ['an unknown model', CHAT, '{"model":"gpt-9","messages":[{"role":"user","content":"x"}]}', {}, 404, 'model_not_found', 'not_found_error'],
      ] as const)('%s: %i %s', async (_name, path, body, headers, status, code, type) => {
        let requests = 0;
        const up = await backend((_req, res) => {
          requests++;
          res.writeHead(200, { 'content-type': 'application/json' }).end('{}');
        });
        const { router, edge } = await serve([{ id: 'b1', baseURL: up.baseURL }]);
        await expectError(await edge.send(post(path, body, headers)), status, code, type);
        expect(requests).toBe(0);
        expect(router.inFlight).toBe(0);
        expect(await metricsOf(router)).toMatch(/^freesh_requests_total\{outcome="rejected-invalid",backend="none"\} 1$/m);
      });

      it.each([
        ['100,000 nested arrays', CHAT, `{"model":"m","messages":[{"role":"user","content":"x"}],"x":${'['.repeat(100_000)}${']'.repeat(100_000)}}`, {}, 'json_too_deep', null],
        ['objects one level past the limit', COMPLETIONS, `{"model":"m","prompt":"x","x":${'{"a":'.repeat(16)}1${'}'.repeat(16)}}`, {}, 'json_too_deep', null],
        ['max_tokens 1e9 (strict)', CHAT, chatBody({ max_tokens: 1e9 }), { strictRequests: true }, 'invalid_value', 'max_tokens'],
        ['role "wizard" (strict)', CHAT, JSON.stringify({ model: 'm', messages: [{ role: 'wizard', content: 'x' }] }), { strictRequests: true }, 'invalid_value', 'messages[0].role'],
        ['temperature "hot" (strict)', CHAT, chatBody({ temperature: 'hot' }), { strictRequests: true }, 'invalid_type', 'temperature'],
        ['top_p 1.5 (strict)', COMPLETIONS, completionBody({ top_p: 1.5 }), { strictRequests: true }, 'invalid_value', 'top_p'],
      ] as const)('%s: 400 %s, never sent upstream', async (caseName, path, body, limits, code, param) => {
        let requests = 0;
        const up = await backend((_req, res) => {
          requests++;
          res.writeHead(200, { 'content-type': 'application/json' }).end('{}');
        });
        const { router, edge } = await serve([{ id: 'b1', baseURL: up.baseURL }], { limits: { maxJsonDepth: 16, ...limits } });
        const error = await expectError(await edge.send(post(path, body)), 400, code, 'invalid_request_error');
        expect(error.param).toBe(param);
        expect(requests).toBe(0);
        expect(router.inFlight).toBe(0);
        expect(await metricsOf(router)).toMatch(/^freesh_requests_total\{outcome="rejected-invalid",backend="none"\} 1$/m);
      });

      it('strict mode passes a valid body with unknown fields through untouched; default mode passes what strict refuses', async () => {
        const up = await backend((_req, res, body) => res.writeHead(200, { 'content-type': 'application/json' }).end(body));
        const strict = await serve([{ id: 'b1', baseURL: up.baseURL }], { limits: { strictRequests: true } });
        const valid = chatBody({ temperature: 0.7, top_p: 1, n: 1, max_tokens: 16, stop: ['\n'], top_k: 40, guided_json: { type: 'object' }, stream: false });
        const res = await strict.edge.send(post(CHAT, valid));
        expect(res.status).toBe(200);
        expect(await res.text()).toBe(valid);
        const lax = await serve([{ id: 'b2', baseURL: up.baseURL }]);
        const wizard = JSON.stringify({ model: 'm', messages: [{ role: 'wizard', content: 'x' }], temperature: 7 });
        expect((await lax.edge.send(post(CHAT, wizard))).status).toBe(200);
      });

      it('names the offending header or field in `param`', async () => {
        const up = await fixed();
        const { edge } = await serve([{ id: 'b1', baseURL: up.baseURL }]);
        const slo = await expectError(await edge.send(post(CHAT, chatBody(), { 'x-freesh-slo': 'platinum' })), 400, 'unknown_slo_class', 'invalid_request_error');
        expect(slo.param).toBe('x-freesh-slo');
        const model = await expectError(await edge.send(post(CHAT, chatBody({ model: 'gpt-9' }))), 404, 'model_not_found', 'not_found_error');
        expect(model.param).toBe('model');
      });
    });

    describe('a backend that drops mid-response', () => {
      it('ends an event stream with an SSE error event after the chunks it sent, and a clean end', async () => {
        const chunks = ['data: {"choices":[{"delta":{"content":"Hi"}}]}\n\n', 'data: {"choices":[{"delta":{"content":" there"}}]}\n\n'];
        const up = await backend((_req, res) => {
          res.writeHead(200, { 'content-type': 'text/event-stream' });
          res.write(chunks[0]);
          res.write(chunks[1], () => setTimeout(() => res.socket?.destroy(), 20));
        });
        const { router, edge } = await serve([{ id: 'b1', baseURL: up.baseURL, maxConcurrency: 1 }]);
        const res = await edge.send(post(CHAT, chatBody({ stream: true })));
        expect(res.status).toBe(200);
        const text = await res.text(); // resolves: the stream ends cleanly
        expect(text.startsWith(chunks.join(''))).toBe(true);
        const rest = text.slice(chunks.join('').length);
        expect(rest).toMatch(/^data: \{.*\}\n\n$/);
        const event = JSON.parse(rest.slice('data: '.length)) as { error: Record<string, unknown> };
        expect(event.error).toMatchObject({ code: 'upstream_dropped', type: 'upstream_error', param: null });
        expect(event.error.message).toContain('b1');
        await until(() => router.inFlight === 0);
        expect(await metricsOf(router)).toMatch(/^freesh_requests_total\{outcome="upstream-dropped",backend="b1"\} 1$/m);
      });

      it('breaks a JSON body the backend cut short, rather than ending it as if complete', async () => {
        const up = await backend((_req, res) => {
          res.writeHead(200, { 'content-type': 'application/json', 'content-length': '1000' });
          res.write('{"id":"chatcmpl-1","choices":[', () => setTimeout(() => res.socket?.destroy(), 20));
        });
        const { router, edge } = await serve([{ id: 'b1', baseURL: up.baseURL }]);
        const res = await edge.send(post(CHAT, chatBody()));
        expect(res.status).toBe(200);
        await expect(res.text()).rejects.toThrow();
        await until(() => router.inFlight === 0);
        expect(await metricsOf(router)).toMatch(/^freesh_requests_total\{outcome="upstream-dropped",backend="b1"\} 1$/m);
      });
    });

    describe('a client that goes away', () => {
      // A server whose client disconnects does both; a client that only stops reading does the second.
      it.each(['aborts its request and cancels the body', 'cancels the body'])('mid-stream (it %s): the upstream request is aborted and its slot freed', async (how) => {
        let requests = 0;
        let upstreamClosedEarly = false;
        const up = await backend((_req, res) => {
          if (++requests > 1) return void res.writeHead(200, { 'content-type': 'application/json' }).end('{"second":true}');
          res.writeHead(200, { 'content-type': 'text/event-stream' });
          const timer = setInterval(() => res.write('data: {"choices":[{"delta":{"content":"x"}}]}\n\n'), 5);
          res.on('close', () => {
            clearInterval(timer);
            upstreamClosedEarly = !res.writableFinished;
          });
        });
        const { router, edge } = await serve([{ id: 'b1', baseURL: up.baseURL, maxConcurrency: 1 }]);
        const client = new AbortController();
        const res = await edge.send(post(CHAT, chatBody({ stream: true }), {}, client.signal));
        const body = new BodyReader(res);
        await body.atLeast(1);
        if (how.startsWith('aborts')) client.abort();
        await body.cancel();
        await until(() => upstreamClosedEarly);
        // maxConcurrency 1: served only if the abandoned request gave its slot back.
        const second = await edge.send(post(CHAT, chatBody()));
        expect(second.status).toBe(200);
        expect(await second.text()).toBe('{"second":true}');
        await until(() => router.inFlight === 0);
        expect(await metricsOf(router)).toMatch(/^freesh_requests_total\{outcome="client-abort",backend="b1"\} 1$/m);
      });

      it('while queued: the request is withdrawn and never sent', async () => {
        const seen: string[] = [];
        let release: (() => void) | undefined;
        const up = await backend((_req, res, body) => {
          seen.push((JSON.parse(body) as { user: string }).user);
          if (seen.length === 1) release = () => res.writeHead(200, { 'content-type': 'application/json' }).end('{"first":true}');
          else res.writeHead(200, { 'content-type': 'application/json' }).end('{}');
        });
        const { router, edge } = await serve([{ id: 'b1', baseURL: up.baseURL, maxConcurrency: 1 }]);
        const first = edge.send(post(CHAT, chatBody({ user: 'first' })));
        await until(() => release !== undefined);
        const client = new AbortController();
        const queued = edge.send(post(CHAT, chatBody({ user: 'queued' }), {}, client.signal)).catch(() => undefined);
        await until(async () => /^freesh_queue_length\{backend="b1"\} 1$/m.test(await metricsOf(router)));
        client.abort();
        await queued;
        await until(() => router.inFlight === 1);
        expect(await metricsOf(router)).toMatch(/^freesh_queue_length\{backend="b1"\} 0$/m);
        release!();
        expect(await (await first).text()).toBe('{"first":true}');
        // Had the aborted one stayed queued, it would take the freed slot before this one.
        expect((await edge.send(post(CHAT, chatBody({ user: 'third' })))).status).toBe(200);
        expect(seen).toEqual(['first', 'third']);
        await until(() => router.inFlight === 0);
        expect(await metricsOf(router)).toMatch(/^freesh_requests_total\{outcome="client-abort",backend="b1"\} 1$/m);
      });
    });

    describe('/healthz tells the truth without traffic', () => {
      it('200 ok when every backend answers', async () => {
        const up = await fixed();
        const { edge } = await serve([
          { id: 'b1', baseURL: up.baseURL },
          { id: 'b2', baseURL: up.baseURL },
        ]);
        const res = await edge.send(request('GET', '/healthz'));
        expect(res.status).toBe(200);
        expect(res.headers.get('content-type')).toBe('application/json');
        expect(res.headers.get('retry-after')).toBeNull();
        expect(await res.json()).toEqual({ status: 'ok', backends: { usable: 2, total: 2 }, inFlight: 0 });
      });

      it('503 unavailable, with retry-after, when every backend refuses connections', async () => {
        const { edge } = await serve([
          { id: 'dead1', baseURL: await deadBaseURL() },
          { id: 'dead2', baseURL: await deadBaseURL() },
        ]);
        const res = await edge.send(request('GET', '/healthz'));
        expect(res.status).toBe(503);
        expect(res.headers.get('content-type')).toBe('application/json');
        expect(res.headers.get('retry-after')).toBe('1');
        expect(await res.json()).toEqual({ status: 'unavailable', backends: { usable: 0, total: 2 }, inFlight: 0 });
        const head = await edge.send(request('HEAD', '/healthz'));
        expect(head.status).toBe(503);
        expect(head.headers.get('retry-after')).toBe('1');
      });

      it('200 degraded when one backend of two refuses connections', async () => {
        const up = await fixed();
        const { edge } = await serve([
          { id: 'live', baseURL: up.baseURL },
          { id: 'dead', baseURL: await deadBaseURL() },
        ]);
        const res = await edge.send(request('GET', '/healthz'));
        expect(res.status).toBe(200);
        expect(await res.json()).toEqual({ status: 'degraded', backends: { usable: 1, total: 2 }, inFlight: 0 });
      });
    });

    describe('errors from the router', () => {
      it('502 when the only backend refuses connections, then 503 while it is out of rotation', async () => {
        const { router, edge } = await serve([{ id: 'dead', baseURL: await deadBaseURL() }], { limits: { retries: 0 } });
        const refused = await expectError(await edge.send(post(CHAT, chatBody())), 502, 'upstream_unreachable', 'upstream_error');
        expect(refused.message).toContain('ECONNREFUSED');
        expect(refused.param).toBeNull();
        const none = await expectError(await edge.send(post(CHAT, chatBody())), 503, 'no_backend_available', 'server_error');
        expect(none.message).toContain('`m`');
        expect(router.inFlight).toBe(0);
      });

      it('503 when the backend\'s queue is full, 504 when a request waits too long', async () => {
        let release: (() => void) | undefined;
        const up = await backend((_req, res) => {
          release = () => res.writeHead(200, { 'content-type': 'application/json' }).end('{}');
        });
        const { router, edge } = await serve([{ id: 'b1', baseURL: up.baseURL, maxConcurrency: 1 }], { limits: { maxQueueLength: 1, maxQueueMs: 300 } });
        const first = edge.send(post(CHAT, chatBody()));
        await until(() => release !== undefined);
        const queued = edge.send(post(CHAT, chatBody()));
        await until(async () => /^freesh_queue_length\{backend="b1"\} 1$/m.test(await metricsOf(router)));
        await expectError(await edge.send(post(CHAT, chatBody())), 503, 'queue_full', 'server_error');
        await expectError(await queued, 504, 'queue_timeout', 'timeout_error');
        release!();
        expect((await first).status).toBe(200);
        await until(() => router.inFlight === 0);
      });
    });
  });
}
