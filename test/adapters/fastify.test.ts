import { Writable } from 'node:stream';
import Fastify, { type FastifyInstance } from 'fastify';
import { afterEach, describe, expect, it } from 'vitest';
import freesh, { type FreeshFastifyOptions } from '../../adapters/fastify/index.js';
import type { Placement } from '../../src/pipeline/lifecycle.js';
import { heuristicPredictor } from '../../src/predict/predictor.js';
import { createRouter, type Router } from '../../src/router.js';
import { FIXED_COMPLETION, startFixedBackend } from '../../src/sim/fixed-backend.js';
import { chatBody, post, until } from '../helpers/servers.js';
import { type AdapterApp, describeAdapter } from './adapter.case.js';

async function listen(app: FastifyInstance): Promise<AdapterApp> {
  await app.listen({ port: 0, host: '127.0.0.1' });
  const address = app.server.address() as { port: number };
  return { origin: `http://127.0.0.1:${address.port}`, close: () => app.close() };
}

/** An app with routes of its own beside the plugin (Fastify's own JSON parser serves them). */
async function appWith(options: FreeshFastifyOptions, logs?: Writable): Promise<FastifyInstance> {
  const app = Fastify({ logger: logs ? { level: 'info', stream: logs } : false });
  app.get('/app', async () => 'app');
  await app.register(freesh, options);
  app.get('/healthz', async () => 'app healthz');
  app.post('/app/echo', async (request) => request.body);
  return app;
}

describeAdapter('Fastify', async (router, options) => listen(await appWith({ router, ...options })));

describe('Fastify plugin', () => {
  const cleanup: (() => Promise<unknown>)[] = [];
  afterEach(async () => {
    for (const fn of cleanup.splice(0).reverse()) await fn();
  });

  async function fixedRouter(): Promise<Router> {
    const fixed = await startFixedBackend();
    cleanup.push(() => fixed.close());
    const router = createRouter({
      sites: [{ id: 'loc1', carbon: { gramsPerKWh: 300 } }],
      backends: [{ id: 'b1', site: 'loc1', baseURL: fixed.baseURL, models: ['m'] }],
      plan: { enabled: false },
      predictor: heuristicPredictor(),
    });
    cleanup.push(() => router.close());
    return router;
  }

  async function start(app: FastifyInstance): Promise<string> {
    const running = await listen(app);
    cleanup.push(() => running.close());
    return running.origin;
  }

  it('decorates app-wide: app.freesh is the router, request.freesh the placement in the app\'s own hooks', async () => {
    const router = await fixedRouter();
    const app = await appWith({ router });
    expect(app.freesh).toBe(router);
    const placed: (Placement | null)[] = [];
    app.addHook('onResponse', async (request) => void placed.push(request.freesh));
    const origin = await start(app);
    expect((await post(`${origin}/v1/chat/completions`, chatBody())).text).toBe(FIXED_COMPLETION);
    expect(await (await fetch(`${origin}/app`)).text()).toBe('app');
    await until(() => placed.length === 2);
    expect(placed[0]?.backend.id).toBe('b1');
    expect(placed[0]?.cost.energyJ).toBeGreaterThan(0);
    expect(placed[1]).toBeNull();
  });

  it('logs each placement and each refusal through the request\'s logger', async () => {
    const router = await fixedRouter();
    const lines: Record<string, unknown>[] = [];
    const logs = new Writable({
      write(chunk: Buffer, _encoding, done) {
        for (const line of chunk.toString().split('\n')) if (line) lines.push(JSON.parse(line) as Record<string, unknown>);
        done();
      },
    });
    const origin = await start(await appWith({ router }, logs));
    await post(`${origin}/v1/chat/completions`, chatBody());
    await post(`${origin}/v1/chat/completions`, '{"model":"m"}');
    await until(() => lines.filter((l) => l.msg === 'request completed').length === 2);
    const placed = lines.find((l) => l.msg === 'freesh placed the request');
    expect(placed).toMatchObject({ level: 30, reqId: expect.any(String), freesh: { backend: 'b1', site: 'loc1', predictedTokens: expect.any(Number) } });
    const refused = lines.find((l) => (l.freesh as { code?: string } | undefined)?.code === 'invalid_messages');
    expect(refused).toMatchObject({ level: 30, reqId: expect.any(String), freesh: { status: 400 } });
    // The same request id as Fastify's own lines for that request.
    expect(lines.filter((l) => l.reqId === placed!.reqId).map((l) => l.msg)).toEqual(['incoming request', 'freesh placed the request', 'request completed']);
  });

  it('leaves the app\'s own body parsing alone: its JSON errors stay Fastify\'s', async () => {
    const router = await fixedRouter();
    const origin = await start(await appWith({ router }));
    const appOwn = await post(`${origin}/app/echo`, '{"a":');
    expect(appOwn.status).toBe(400);
    expect(appOwn.json()).toMatchObject({ statusCode: 400, code: 'FST_ERR_CTP_INVALID_JSON_BODY' });
    // A body whose type the app has no parser for is refused by the app, taken as bytes by freesh.
    const text = await fetch(`${origin}/app/echo`, { method: 'POST', headers: { 'content-type': 'text/csv' }, body: 'a,b' });
    expect(text.status).toBe(415);
    const routed = await fetch(`${origin}/v1/chat/completions`, { method: 'POST', headers: { 'content-type': 'text/plain' }, body: chatBody() });
    expect(routed.status).toBe(200);
  });
});
