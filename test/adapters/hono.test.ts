import { testRouter } from '../helpers/servers.js';
import type { AddressInfo } from 'node:net';
import { type ServerType, serve } from '@hono/node-server';
import { Hono } from 'hono';
import { HTTPException } from 'hono/http-exception';
import { afterEach, describe, expect, it } from 'vitest';
import { type FreeshDecision, type FreeshEnv, freesh } from '../../adapters/hono/index.js';
import { FreeshError } from '../../src/errors.js';
import { type Router } from '../../src/router.js';
import { closeServer } from '../../src/sim/backend-server.js';
import { FIXED_COMPLETION, startFixedBackend } from '../../src/sim/fixed-backend.js';
import { chatBody, nextChunk, post, streamPost, until, upstream } from '../helpers/servers.js';

// The Hono app runs on Node through @hono/node-server; requests reach it over real HTTP.
const cleanup: (() => Promise<unknown>)[] = [];
afterEach(async () => {
  for (const fn of cleanup.splice(0).reverse()) await fn();
});

type Spec = { id: string; baseURL: string; maxConcurrency?: number };

function routerFor(backends: Spec[], limits: Record<string, number> = {}): Router {
  return testRouter(backends, limits, cleanup);
}

async function listen(app: Hono<FreeshEnv>): Promise<string> {
  const server = await new Promise<ServerType>((resolve) => {
    const s = serve({ fetch: app.fetch, port: 0, hostname: '127.0.0.1' }, () => resolve(s));
  });
  cleanup.push(() => closeServer(server as Parameters<typeof closeServer>[0]));
  return `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
}

async function fixed() {
  const up = await startFixedBackend();
  cleanup.push(() => up.close());
  return up;
}

async function backend(handler: Parameters<typeof upstream>[0]) {
  const up = await upstream(handler);
  cleanup.push(() => up.close());
  return up;
}

/** An app with its own routes, the router mounted under /llm, and a middleware around it that records decisions. */
function appWith(router: Router, decisions: (FreeshDecision | undefined)[] = []): Hono<FreeshEnv> {
  const app = new Hono<FreeshEnv>();
  app.use('*', async (c, next) => {
    await next();
    if (c.req.path.startsWith('/llm/v1/chat')) decisions.push(c.var.freesh);
  });
  app.use('/llm/*', freesh(router, { basePath: '/llm' }));
  app.get('/hello', (c) => c.text('hello from the app'));
  app.post('/llm/own', async (c) => c.json({ own: true, got: await c.req.json() }));
  return app;
}

describe('freesh/hono', () => {
  it('serves a chat completion with the routing headers and leaves the decision on the context', async () => {
    const up = await fixed();
    const router = routerFor([{ id: 'b1', baseURL: up.baseURL }]);
    const decisions: (FreeshDecision | undefined)[] = [];
    const url = await listen(appWith(router, decisions));
    const res = await post(`${url}/llm/v1/chat/completions`, chatBody(), { 'x-request-id': 'r-42' });
    expect(res.status).toBe(200);
    expect(res.text).toBe(FIXED_COMPLETION);
    expect(res.headers.get('content-type')).toBe('application/json');
    expect(res.headers.get('x-freesh-backend')).toBe('b1');
    expect(res.headers.get('x-freesh-site')).toBe('loc1');
    expect(res.headers.get('x-request-id')).toBe('r-42');
    for (const h of ['x-freesh-predicted-tokens', 'x-freesh-energy-j', 'x-freesh-carbon-g']) expect(Number(res.headers.get(h)), h).toBeGreaterThan(0);
    expect(decisions).toEqual([
      {
        backend: 'b1',
        site: 'loc1',
        requestId: 'r-42',
        predictedTokens: Number(res.headers.get('x-freesh-predicted-tokens')),
        energyJ: Number(res.headers.get('x-freesh-energy-j')),
        carbonG: Number(res.headers.get('x-freesh-carbon-g')),
      },
    ]);
    const models = await fetch(`${url}/llm/v1/models`);
    expect(await models.json()).toMatchObject({ object: 'list', data: [{ id: 'm', object: 'model' }] });
    await until(() => router.inFlight === 0);
    expect(await router.metrics.registry.metrics()).toMatch(/^freesh_requests_total\{outcome="completed",backend="b1"\} 1$/m);
  });

  it('relays an event stream chunk by chunk', async () => {
    const chunks = ['data: {"choices":[{"delta":{"content":"one"}}]}\n\n', 'data: {"choices":[{"delta":{"content":" two"}}]}\n\n', 'data: [DONE]\n\n'];
    let rest: (() => void) | undefined;
    const up = await backend((_req, res) => {
      res.writeHead(200, { 'content-type': 'text/event-stream' });
      res.write(chunks[0]);
      rest = () => res.end(chunks[1]! + chunks[2]!);
    });
    const router = routerFor([{ id: 'b1', baseURL: up.baseURL }]);
    const url = await listen(appWith(router));
    const res = await streamPost(`${url}/llm/v1/chat/completions`, chatBody({ stream: true }));
    expect(res.status).toBe(200);
    expect(res.headers['content-type']).toBe('text/event-stream');
    expect(res.headers['x-freesh-backend']).toBe('b1');
    // The first event reaches the client while the backend still holds the rest.
    expect(await nextChunk(res.response)).toBe(chunks[0]);
    rest!();
    let text = '';
    for await (const c of res.response) text += String(c);
    expect(text).toBe(chunks[1]! + chunks[2]!);
    await until(() => router.inFlight === 0);
    expect(await router.metrics.registry.metrics()).toMatch(/^freesh_requests_total\{outcome="completed",backend="b1"\} 1$/m);
  });

  it('answers a bad body with an OpenAI-shaped error through Hono\'s default error handling', async () => {
    const up = await fixed();
    const router = routerFor([{ id: 'b1', baseURL: up.baseURL }]);
    const url = await listen(appWith(router));
    const res = await post(`${url}/llm/v1/chat/completions`, '{"model":"m"');
    expect(res.status).toBe(400);
    expect(res.headers.get('content-type')).toBe('application/json');
    expect(res.json()).toEqual({ error: { message: expect.any(String), type: 'invalid_request_error', param: null, code: 'invalid_json' } });
    const wrongMethod = await fetch(`${url}/llm/v1/chat/completions`);
    expect(wrongMethod.status).toBe(405);
    expect(await wrongMethod.json()).toMatchObject({ error: { code: 'method_not_allowed' } });
  });

  it('throws the router\'s errors as HTTPException with the FreeshError as cause, for app.onError', async () => {
    const up = await fixed();
    const router = routerFor([{ id: 'b1', baseURL: up.baseURL }]);
    const app = appWith(router);
    const seen: unknown[] = [];
    app.onError((err, c) => {
      seen.push(err);
      if (err instanceof HTTPException && err.cause instanceof FreeshError) {
        c.header('x-app-error', err.cause.code);
        const res = err.getResponse();
        return c.newResponse(res.body, res);
      }
      return c.text('app error', 500);
    });
    const url = await listen(app);
    const res = await post(`${url}/llm/v1/chat/completions`, JSON.stringify({ model: 'm', messages: 'not a list' }));
    expect(res.status).toBe(400);
    expect(res.json()).toMatchObject({ error: { type: 'invalid_request_error', param: 'messages' } });
    expect(seen).toHaveLength(1);
    const err = seen[0] as HTTPException;
    expect(err).toBeInstanceOf(HTTPException);
    expect(err.status).toBe(400);
    expect(err.cause).toBeInstanceOf(FreeshError);
    expect((err.cause as FreeshError).code).toBe(res.json().error.code);
    expect(res.headers.get('x-app-error')).toBe(res.json().error.code);
    const unknownModel = await post(`${url}/llm/v1/chat/completions`, chatBody({ model: 'nope' }));
    expect(unknownModel.status).toBe(404);
    expect(unknownModel.headers.get('x-app-error')).toBe('model_not_found');
  });

  it('answers a full queue 503 with retry-after', async () => {
    let release: (() => void) | undefined;
    const up = await backend((_req, res) => {
      res.writeHead(200, { 'content-type': 'text/event-stream' });
      res.write('data: {}\n\n');
      release = () => res.end('data: [DONE]\n\n');
    });
    const router = routerFor([{ id: 'b1', baseURL: up.baseURL, maxConcurrency: 1 }], { maxQueueLength: 0 });
    const url = await listen(appWith(router));
    const first = await streamPost(`${url}/llm/v1/chat/completions`, chatBody({ stream: true }));
    await nextChunk(first.response);
    const refused = await post(`${url}/llm/v1/chat/completions`, chatBody());
    expect(refused.status).toBe(503);
    expect(refused.headers.get('retry-after')).toBe('1');
    expect(refused.headers.get('retry-after-ms')).toBe('1000');
    expect(refused.json()).toMatchObject({ error: { type: 'server_error', code: 'queue_full' } });
    release!();
    for await (const _ of first.response);
  });

  it('a client leaving mid-stream aborts the upstream and frees the slot for the next request', async () => {
    let upstreamClosed = 0;
    let calls = 0;
    const up = await backend((_req, res) => {
      calls++;
      res.writeHead(200, { 'content-type': 'text/event-stream' });
      res.on('close', () => {
        if (!res.writableFinished) upstreamClosed++;
      });
      if (calls === 1) res.write('data: {"choices":[{"delta":{"content":"one"}}]}\n\n'); // and never ends
      else res.end('data: [DONE]\n\n');
    });
    const router = routerFor([{ id: 'b1', baseURL: up.baseURL, maxConcurrency: 1 }], { maxQueueLength: 0 });
    const url = await listen(appWith(router));
    const first = await streamPost(`${url}/llm/v1/chat/completions`, chatBody({ stream: true }));
    await nextChunk(first.response);
    expect(router.inFlight).toBe(1);
    first.abort();
    await until(() => upstreamClosed === 1 && router.inFlight === 0);
    // The one slot is free again: with no queue, a request still holding it would be refused 429.
    const second = await post(`${url}/llm/v1/chat/completions`, chatBody({ stream: true }));
    expect(second.status).toBe(200);
    expect(second.text).toBe('data: [DONE]\n\n');
    await until(() => router.inFlight === 0);
    expect(await router.metrics.registry.metrics()).toMatch(/^freesh_requests_total\{outcome="client-abort",backend="b1"\} 1$/m);
  });

  it('concurrent requests obey the backend\'s concurrency limit', async () => {
    let running = 0;
    let most = 0;
    const up = await backend((_req, res) => {
      running++;
      most = Math.max(most, running);
      setTimeout(() => {
        running--;
        res.writeHead(200, { 'content-type': 'application/json' });
        res.end(FIXED_COMPLETION);
      }, 40);
    });
    const router = routerFor([{ id: 'b1', baseURL: up.baseURL, maxConcurrency: 2 }]);
    const url = await listen(appWith(router));
    const answers = await Promise.all(Array.from({ length: 8 }, () => post(`${url}/llm/v1/chat/completions`, chatBody())));
    expect(answers.map((a) => a.status)).toEqual(Array(8).fill(200));
    expect(most).toBe(2);
  });

  it('leaves the app\'s other routes alone', async () => {
    const up = await fixed();
    const router = routerFor([{ id: 'b1', baseURL: up.baseURL }]);
    const url = await listen(appWith(router));
    const hello = await fetch(`${url}/hello`);
    expect(await hello.text()).toBe('hello from the app');
    const own = await post(`${url}/llm/own`, '{"a":1}');
    expect(own.json()).toEqual({ own: true, got: { a: 1 } });
    // An unknown path gets the app's not-found answer, not the router's.
    const missing = await fetch(`${url}/llm/v1/embeddings`, { method: 'POST', body: '{}' });
    expect(missing.status).toBe(404);
    expect(await missing.text()).toBe('404 Not Found');
    // The router's paths outside its mount path are the app's too.
    expect((await fetch(`${url}/v1/models`)).status).toBe(404);
    expect(router.inFlight).toBe(0);
  });

  it('mounted at the root, and after a middleware that read the body', async () => {
    const up = await fixed();
    const router = routerFor([{ id: 'b1', baseURL: up.baseURL }]);
    const app = new Hono<FreeshEnv>();
    const models: string[] = [];
    app.use('*', async (c, next) => {
      if (c.req.method === 'POST') models.push(((await c.req.json()) as { model: string }).model);
      await next();
    });
    app.use(freesh(router));
    app.post('/v1/embeddings', (c) => c.json({ object: 'list', data: [] }));
    const url = await listen(app);
    const res = await post(`${url}/v1/chat/completions`, chatBody());
    expect(res.status).toBe(200);
    expect(res.text).toBe(FIXED_COMPLETION);
    expect(models).toEqual(['m']);
    expect((await post(`${url}/v1/embeddings`, '{}')).json()).toEqual({ object: 'list', data: [] });
    expect((await fetch(`${url}/healthz`)).status).toBe(200);
  });
});
