import type { IncomingMessage, ServerResponse } from 'node:http';
import { afterEach, describe, expect, it } from 'vitest';
import { heuristicPredictor } from '../../src/predict/predictor.js';
import type { RunningProxy } from '../../src/proxy/standalone.js';
import { createRouter, type Router } from '../../src/router.js';
import { chatBody, fleetConfig, nextChunk, post, proxyFor, streamPost, until, upstream, type Upstream } from '../helpers/servers.js';

const cleanup: (() => Promise<unknown>)[] = [];
afterEach(async () => {
  for (const fn of cleanup.splice(0).reverse()) await fn();
});

/**
 * A backend that streams tokens until its client goes, answers a plain request at once, and holds
 * a request whose first message is `hold` until `release()`. It records each request's first message.
 */
async function backend(): Promise<Upstream & { received: string[]; release(): void }> {
  const received: string[] = [];
  const held: ServerResponse[] = [];
  const up = await upstream((_req: IncomingMessage, res: ServerResponse, body: string) => {
    const parsed = JSON.parse(body) as { stream?: boolean; messages: { content: string }[] };
    received.push(parsed.messages[0]!.content);
    if (parsed.messages[0]!.content === 'hold') return void held.push(res);
    if (!parsed.stream) return void res.writeHead(200, { 'content-type': 'application/json' }).end('{"usage":{"completion_tokens":1}}');
    res.writeHead(200, { 'content-type': 'text/event-stream' });
    const timer = setInterval(() => res.write('data: {"choices":[{"delta":{"content":"x"}}]}\n\n'), 5);
    res.on('close', () => clearInterval(timer));
  });
  cleanup.push(() => up.close());
  return Object.assign(up, {
    received,
    release: () => {
      for (const res of held.splice(0)) res.writeHead(200, { 'content-type': 'application/json' }).end('{}');
    },
  });
}

const message = (content: string, extra: Record<string, unknown> = {}) => JSON.stringify({ model: 'm', messages: [{ role: 'user', content }], ...extra });
const gauge = async (router: Router, name: string) => Number(new RegExp(`${name}\\{backend="b1"\\} (\\d+)`).exec(await router.metrics.registry.metrics())?.[1]);

/**
 * A queue wait long enough for a freed slot to be noticed, short enough that a leaked one fails the
 * test fast. Tests of withdrawn waiters wait longer: a waiter evicted for its time must not pass for one
 * withdrawn.
 */
const SHORT_WAIT = { maxQueueMs: 1_000, maxQueueLength: 1 };
const LONG_WAIT = { maxQueueMs: 10_000, maxQueueLength: 1 };

async function proxy(up: Upstream, maxConcurrency: number, limits: typeof SHORT_WAIT): Promise<RunningProxy> {
  const p = await proxyFor(fleetConfig([{ id: 'b1', baseURL: up.baseURL, maxConcurrency }], { limits }), { predictor: heuristicPredictor() });
  cleanup.push(() => p.shutdown(0));
  return p;
}

function fetchRouter(up: Upstream, maxConcurrency: number, limits: typeof SHORT_WAIT): Router {
  const router = createRouter({
    sites: [{ id: 'loc1' }],
    backends: [{ id: 'b1', site: 'loc1', baseURL: up.baseURL, models: ['m'], maxConcurrency }],
    limits,
    plan: { enabled: false },
    predictor: heuristicPredictor(),
  });
  cleanup.push(() => router.close());
  return router;
}

const completion = (body: string, signal?: AbortSignal) =>
  new Request('http://gateway/v1/chat/completions', { method: 'POST', headers: { 'content-type': 'application/json' }, body, signal });

describe('backend slots when clients go away (node HTTP proxy)', () => {
  it('streams whose clients left give their slots back: as many aborted streams as slots do not block the backend', async () => {
    const up = await backend();
    const p = await proxy(up, 2, SHORT_WAIT);
    const clients = [await streamPost(`${p.url}/v1/chat/completions`, chatBody({ stream: true })), await streamPost(`${p.url}/v1/chat/completions`, chatBody({ stream: true }))];
    for (const client of clients) await nextChunk(client.response);
    expect(await gauge(p.router, 'freesh_in_flight_requests')).toBe(2);
    for (const client of clients) client.abort();
    // Both slots are free again: a new request is served rather than queued until it times out.
    const next = await post(`${p.url}/v1/chat/completions`, chatBody());
    expect(next.status).toBe(200);
    await until(() => p.router.inFlight === 0);
    expect(await gauge(p.router, 'freesh_in_flight_requests')).toBe(0);
    expect(await p.router.metrics.registry.metrics()).toMatch(/freesh_requests_total\{outcome="client-abort",backend="b1"\} 2/);
  });

  it('a queued request whose client left is withdrawn: its place in the queue is free and the backend never sees it', async () => {
    const up = await backend();
    const p = await proxy(up, 1, LONG_WAIT);
    const url = `${p.url}/v1/chat/completions`;
    const holding = post(url, message('hold'));
    await until(() => up.received.length === 1);
    const leaving = new AbortController();
    const left = fetch(url, { method: 'POST', headers: { 'content-type': 'application/json' }, body: message('left'), signal: leaving.signal }).catch(() => 'aborted');
    await until(async () => (await gauge(p.router, 'freesh_queue_length')) === 1);
    leaving.abort();
    expect(await left).toBe('aborted');
    await until(async () => (await gauge(p.router, 'freesh_queue_length')) === 0, 1_000);
    // The queue holds one: a request that left must not keep the place from the next.
    const next = post(url, message('next'));
    await until(async () => (await gauge(p.router, 'freesh_queue_length')) === 1);
    up.release();
    expect((await holding).status).toBe(200);
    expect((await next).status).toBe(200);
    expect(up.received).toEqual(['hold', 'next']);
    expect(p.router.inFlight).toBe(0);
  });
});

describe('backend slots when clients go away (fetch handler)', () => {
  it('streams whose clients cancelled give their slots back', async () => {
    const up = await backend();
    const router = fetchRouter(up, 2, SHORT_WAIT);
    const clients = [];
    for (let i = 0; i < 2; i++) {
      const leaving = new AbortController();
      const res = await router.handle(completion(chatBody({ stream: true }), leaving.signal));
      const reader = res.body!.getReader();
      await reader.read();
      clients.push({ leaving, reader });
    }
    for (const { leaving, reader } of clients) {
      leaving.abort();
      await reader.cancel();
    }
    const next = await router.handle(completion(chatBody()));
    expect(next.status).toBe(200);
    await next.text();
    await until(() => router.inFlight === 0);
    expect(await gauge(router, 'freesh_in_flight_requests')).toBe(0);
  });

  it('a queued request whose signal aborted is withdrawn and answered 499', async () => {
    const up = await backend();
    const router = fetchRouter(up, 1, LONG_WAIT);
    const holding = router.handle(completion(message('hold')));
    await until(() => up.received.length === 1);
    const leaving = new AbortController();
    const left = router.handle(completion(message('left'), leaving.signal));
    await until(async () => (await gauge(router, 'freesh_queue_length')) === 1);
    leaving.abort();
    // Answered at once, not when its wait would have run out.
    const answer = await Promise.race([left, new Promise<undefined>((resolve) => setTimeout(resolve, 1_000))]);
    expect(answer?.status).toBe(499);
    expect(await gauge(router, 'freesh_queue_length')).toBe(0);
    const next = router.handle(completion(message('next')));
    await until(async () => (await gauge(router, 'freesh_queue_length')) === 1);
    up.release();
    expect((await holding).status).toBe(200);
    expect((await next).status).toBe(200);
    expect(up.received).toEqual(['hold', 'next']);
  });
});
