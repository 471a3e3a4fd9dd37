import { testRouter } from '../helpers/servers.js';
import { subscribe, unsubscribe } from 'node:diagnostics_channel';
import OpenAI from 'openai';
import { afterEach, describe, expect, it } from 'vitest';
import { decisionOf, ROUTED_BASE_URL, routedClientOptions, routedFetch } from '../../adapters/openai/index.js';
import { type RequestEnd, type Router } from '../../src/router.js';
import { startSimBackend } from '../../src/sim/backend-server.js';
import { FIXED_COMPLETION } from '../../src/sim/fixed-backend.js';
import { deadBaseURL, until, upstream } from '../helpers/servers.js';

// The real openai client, its requests handed to the router in-process; the backends are real HTTP servers.
const cleanup: (() => Promise<unknown> | void)[] = [];
afterEach(async () => {
  for (const fn of cleanup.splice(0).reverse()) await fn();
});

type Spec = { id: string; baseURL: string; maxConcurrency?: number };
const messages = [{ role: 'user' as const, content: 'Say hello' }];

function routerFor(backends: Spec[], limits: Record<string, number> = {}): Router {
  return testRouter(backends, limits, cleanup);
}

/** A client with the client's defaults (maxRetries 2), counting the requests it hands the routed fetch. */
function clientFor(router: Router, extra: Partial<ConstructorParameters<typeof OpenAI>[0]> = {}): { client: OpenAI; fetches: () => number } {
  const inner = routedFetch(router);
  let fetches = 0;
  const client = new OpenAI({
    baseURL: ROUTED_BASE_URL,
    apiKey: 'unused',
    fetch: (input, init) => {
      fetches++;
      return inner(input, init);
    },
    ...extra,
  });
  return { client, fetches: () => fetches };
}

async function sim() {
  const up = await startSimBackend({ models: ['m'], timeScale: 0.01, outputLength: 'max-tokens' });
  cleanup.push(() => up.close());
  return up;
}

async function backend(handler: Parameters<typeof upstream>[0]) {
  const up = await upstream(handler);
  cleanup.push(() => up.close());
  return up;
}

/** Request ends published by the router, while the test runs. */
function requestEnds(): RequestEnd[] {
  const ends: RequestEnd[] = [];
  const listener = (message: unknown) => ends.push(message as RequestEnd);
  subscribe('freesh:complete', listener);
  cleanup.push(() => {
    unsubscribe('freesh:complete', listener);
  });
  return ends;
}

async function caught(promise: Promise<unknown>): Promise<unknown> {
  try {
    await promise;
  } catch (err) {
    return err;
  }
  throw new Error('expected a rejection');
}

const metric = async (router: Router, name: string, labels: string) => {
  const line = new RegExp(`^${name}\\{${labels}\\} (\\d+)$`, 'm').exec(await router.metrics.registry.metrics());
  return line ? Number(line[1]) : undefined;
};

describe('freesh/openai', () => {
  it('routes a chat completion; the response carries the routing headers', async () => {
    const up = await sim();
    const router = routerFor([{ id: 'b1', baseURL: up.baseURL }]);
    const client = new OpenAI(routedClientOptions(router));
    const { data, response } = await client.chat.completions.create({ model: 'm', messages, max_tokens: 5 }).withResponse();
    expect(data.object).toBe('chat.completion');
    expect(data.choices[0]!.message.content!.split(' ')).toHaveLength(5);
    expect(data.usage).toMatchObject({ completion_tokens: 5 });
    expect(response.headers.get('x-freesh-backend')).toBe('b1');
    expect(decisionOf(response.headers)).toMatchObject({ backend: 'b1', site: 'loc1', requestId: expect.any(String) });
    expect(decisionOf(response.headers)!.energyJ).toBeGreaterThan(0);
    await until(() => router.inFlight === 0);
    expect(await metric(router, 'freesh_requests_total', 'outcome="completed",backend="b1"')).toBe(1);
    expect(await metric(router, 'freesh_output_tokens_total', 'backend="b1"')).toBe(5);
  });

  it('streams: iteration yields every chunk, usage arrives, and the router meters the stream', async () => {
    const up = await sim();
    const router = routerFor([{ id: 'b1', baseURL: up.baseURL }]);
    const { client } = clientFor(router);
    const stream = await client.chat.completions.create({ model: 'm', messages, max_tokens: 7, stream: true, stream_options: { include_usage: true } });
    let text = '';
    let usage: OpenAI.CompletionUsage | null | undefined;
    let chunks = 0;
    for await (const chunk of stream) {
      chunks++;
      text += chunk.choices[0]?.delta.content ?? '';
      if (chunk.usage) usage = chunk.usage;
    }
    expect(text.split(' ')).toHaveLength(7);
    expect(chunks).toBe(7 + 2); // the tokens, the finish chunk, the usage chunk
    expect(usage).toMatchObject({ completion_tokens: 7 });
    await until(() => router.inFlight === 0);
    expect(await metric(router, 'freesh_requests_total', 'outcome="completed",backend="b1"')).toBe(1);
    expect(await metric(router, 'freesh_output_tokens_total', 'backend="b1"')).toBe(usage!.completion_tokens);
  });

  it('takes tenant and SLO class per call (request headers) or per client (default headers)', async () => {
    const up = await sim();
    const router = routerFor([{ id: 'b1', baseURL: up.baseURL }]);
    const ends = requestEnds();
    const { client } = clientFor(router);
    await client.chat.completions.create({ model: 'm', messages, max_tokens: 2 }, { headers: { 'x-freesh-tenant': 'acme', 'x-freesh-slo': 'batch' } });
    await client.chat.completions.create({ model: 'm', messages, max_tokens: 2 });
    const { client: tenantClient } = clientFor(router, { defaultHeaders: { 'x-freesh-tenant': 'globex', 'x-freesh-slo': 'interactive' } });
    await tenantClient.chat.completions.create({ model: 'm', messages, max_tokens: 2 });
    await until(() => ends.length === 3);
    expect(ends.map((e) => [e.request.tenant, e.request.sloClass, e.outcome])).toEqual([
      ['acme', 'batch', 'completed'],
      ['default', 'standard', 'completed'],
      ['globex', 'interactive', 'completed'],
    ]);
    const err = await caught(client.chat.completions.create({ model: 'm', messages }, { headers: { 'x-freesh-slo': 'gold' } }));
    expect(err).toBeInstanceOf(OpenAI.BadRequestError);
    expect(err).toMatchObject({ status: 400, code: 'unknown_slo_class', param: 'x-freesh-slo' });
  });

  it('a bad body is a BadRequestError with the router\'s OpenAI-shaped error', async () => {
    const up = await sim();
    const router = routerFor([{ id: 'b1', baseURL: up.baseURL }]);
    const { client, fetches } = clientFor(router);
    const err = await caught(client.chat.completions.create({ model: 'm', messages: 'not a list' as never }));
    expect(err).toBeInstanceOf(OpenAI.BadRequestError);
    expect(err).toMatchObject({ status: 400, type: 'invalid_request_error', param: 'messages', error: { code: expect.any(String) } });
    const notServed = await caught(client.chat.completions.create({ model: 'other', messages }));
    expect(notServed).toBeInstanceOf(OpenAI.NotFoundError);
    expect(notServed).toMatchObject({ code: 'model_not_found' });
    expect(fetches()).toBe(2);
  });

  it('a full queue is a 503 with retry-after-ms, which the client waits out before its retry is served', async () => {
    let release: (() => void) | undefined;
    const up = await backend((_req, res) => {
      if (release) return void res.writeHead(200, { 'content-type': 'application/json' }).end(FIXED_COMPLETION);
      res.writeHead(200, { 'content-type': 'text/event-stream' });
      res.write(`data: ${JSON.stringify({ id: 'c1', object: 'chat.completion.chunk', created: 0, model: 'm', choices: [{ index: 0, delta: { content: 'hi' }, finish_reason: null }] })}\n\n`);
      release = () => res.end('data: [DONE]\n\n');
    });
    const router = routerFor([{ id: 'b1', baseURL: up.baseURL, maxConcurrency: 1 }], { maxQueueLength: 0 });
    const { client, fetches } = clientFor(router, { maxRetries: 0 });
    const first = await client.chat.completions.create({ model: 'm', messages, stream: true });
    const iterator = first[Symbol.asyncIterator]();
    await iterator.next();
    const err = await caught(client.chat.completions.create({ model: 'm', messages }));
    expect(err).toBeInstanceOf(OpenAI.InternalServerError);
    expect(err).toMatchObject({ status: 503, code: 'queue_full', type: 'server_error' });
    const headers = (err as InstanceType<typeof OpenAI.InternalServerError>).headers;
    // No slot has freed yet: no drain rate, so the default estimate.
    expect([headers.get('retry-after'), headers.get('retry-after-ms'), headers.get('x-should-retry')]).toEqual(['1', '1000', 'true']);
    expect(fetches()).toBe(2);

    // With retries, the client sleeps retry-after-ms; the slot frees meanwhile and the retry is served.
    const { client: retrying, fetches: retried } = clientFor(router, { maxRetries: 1 });
    const started = Date.now();
    const served = retrying.chat.completions.create({ model: 'm', messages, max_tokens: 2 });
    setTimeout(() => release!(), 300);
    while (!(await iterator.next()).done);
    await served;
    expect(retried()).toBe(2);
    expect(Date.now() - started).toBeGreaterThanOrEqual(950);
    expect(Date.now() - started).toBeLessThan(5_000);
  });

  it('every backend down is a 503 InternalServerError with retry-after', async () => {
    const router = routerFor([
      { id: 'b1', baseURL: await deadBaseURL() },
      { id: 'b2', baseURL: await deadBaseURL() },
    ]);
    await router.checkHealth(); // both marked down
    const { client, fetches } = clientFor(router);
    const err = await caught(client.chat.completions.create({ model: 'm', messages }));
    expect(err).toBeInstanceOf(OpenAI.InternalServerError);
    expect(err).toMatchObject({ status: 503, code: 'no_backend_available' });
    expect((err as InstanceType<typeof OpenAI.InternalServerError>).headers.get('retry-after')).toBe('1');
    expect(fetches()).toBe(1);
  });

  it('with the client\'s default retries, upstream attempts are the router\'s alone', async () => {
    let attempts = 0;
    const failing = () =>
      backend((_req, res) => {
        attempts++;
        res.writeHead(503, { 'content-type': 'application/json' }).end('{"error":{"message":"overloaded"}}');
      });
    const [a, b] = [await failing(), await failing()];
    const router = routerFor([
      { id: 'b1', baseURL: a.baseURL },
      { id: 'b2', baseURL: b.baseURL },
    ]);
    const { client, fetches } = clientFor(router);
    expect(client.maxRetries).toBe(2);
    const err = await caught(client.chat.completions.create({ model: 'm', messages }));
    // The router tried one backend and failed over to the other (limits.retries: 1); the client did not start over.
    expect(err).toBeInstanceOf(OpenAI.InternalServerError);
    expect(err).toMatchObject({ status: 502, code: 'upstream_error' });
    expect(attempts).toBe(2);
    expect(fetches()).toBe(1);
  });

  it('without the router\'s x-should-retry the client would start the routed attempts over (control)', async () => {
    let attempts = 0;
    const up = await backend((_req, res) => {
      attempts++;
      res.writeHead(502, { 'content-type': 'application/json' }).end('{"error":{"message":"bad gateway"}}');
    });
    const router = routerFor([{ id: 'b1', baseURL: up.baseURL }]);
    let fetches = 0;
    // The router's answer without its x-should-retry: the client retries the 502 twice (its default), each a new routed attempt.
    const stripped = async (input: string | URL | Request, init?: RequestInit): Promise<Response> => {
      fetches++;
      const response = await router.handle(new Request(input, init));
      response.headers.delete('x-should-retry');
      return response;
    };
    const client = new OpenAI({ baseURL: ROUTED_BASE_URL, apiKey: 'unused', fetch: stripped });
    const bare = await caught(client.chat.completions.create({ model: 'm', messages }, { timeout: 10_000 }));
    expect(bare).toBeInstanceOf(OpenAI.InternalServerError);
    expect([fetches, attempts]).toEqual([3, 3]);
    attempts = 0;
    const routed = await caught(clientFor(router).client.chat.completions.create({ model: 'm', messages }));
    expect(routed).toBeInstanceOf(OpenAI.InternalServerError);
    expect(attempts).toBe(1);
  });

  it('breaking out of a stream aborts the upstream and frees the slot', async () => {
    let upstreamClosed = 0;
    let calls = 0;
    const chunk = `data: ${JSON.stringify({ id: 'c1', object: 'chat.completion.chunk', created: 0, model: 'm', choices: [{ index: 0, delta: { content: 'hi' }, finish_reason: null }] })}\n\n`;
    const up = await backend((_req, res) => {
      calls++;
      res.writeHead(200, { 'content-type': 'text/event-stream' });
      res.on('close', () => {
        if (!res.writableFinished) upstreamClosed++;
      });
      if (calls <= 2) res.write(chunk); // and never ends
      else res.end(`${chunk}data: [DONE]\n\n`);
    });
    const router = routerFor([{ id: 'b1', baseURL: up.baseURL, maxConcurrency: 1 }], { maxQueueLength: 0 });
    const { client } = clientFor(router);
    const stream = await client.chat.completions.create({ model: 'm', messages, stream: true });
    for await (const c of stream) {
      expect(c.choices[0]!.delta.content).toBe('hi');
      break;
    }
    await until(() => upstreamClosed === 1 && router.inFlight === 0);
    // The same through the request's own signal, aborted mid-stream.
    const controller = new AbortController();
    const second = await client.chat.completions.create({ model: 'm', messages, stream: true }, { signal: controller.signal });
    const iterator = second[Symbol.asyncIterator]();
    await iterator.next();
    controller.abort();
    await iterator.next().catch(() => undefined); // ends or rejects with the abort, by the client's rules
    await until(() => upstreamClosed === 2 && router.inFlight === 0);
    // The one slot is free: with no queue, a request still holding it would make this a RateLimitError.
    let text = '';
    for await (const c of await client.chat.completions.create({ model: 'm', messages, stream: true })) text += c.choices[0]?.delta.content ?? '';
    expect(text).toBe('hi');
    await until(() => router.inFlight === 0);
    expect(await metric(router, 'freesh_requests_total', 'outcome="client-abort",backend="b1"')).toBe(2);
  });

  it('concurrent calls obey the backend\'s concurrency limit', async () => {
    let running = 0;
    let most = 0;
    const up = await backend((_req, res) => {
      running++;
      most = Math.max(most, running);
      setTimeout(() => {
        running--;
        res.writeHead(200, { 'content-type': 'application/json' }).end(FIXED_COMPLETION);
      }, 40);
    });
    const router = routerFor([{ id: 'b1', baseURL: up.baseURL, maxConcurrency: 2 }]);
    const { client } = clientFor(router);
    const answers = await Promise.all(Array.from({ length: 8 }, () => client.chat.completions.create({ model: 'm', messages })));
    expect(answers.map((a) => a.choices[0]!.message.content)).toEqual(Array(8).fill('Hello from a fixed backend.'));
    expect(most).toBe(2);
  });

  it('other endpoints: models are listed by the router, an unrouted one is a NotFoundError', async () => {
    const up = await sim();
    const router = routerFor([{ id: 'b1', baseURL: up.baseURL }]);
    const { client, fetches } = clientFor(router);
    const models = await client.models.list();
    expect(models.data.map((m) => m.id)).toEqual(['m']);
    const err = await caught(client.embeddings.create({ model: 'm', input: 'x' }));
    expect(err).toBeInstanceOf(OpenAI.NotFoundError);
    expect(err).toMatchObject({ code: 'route_not_found' });
    expect(fetches()).toBe(2);
  });
});
