import { createServer } from 'node:http';
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import express, { type Express } from 'express';
import { afterEach, describe, expect, it } from 'vitest';
import { freesh, type FreeshExpressOptions } from '../../adapters/express/index.js';
import { heuristicPredictor } from '../../src/predict/predictor.js';
import { createRouter, type Router } from '../../src/router.js';
import { closeServer } from '../../src/sim/backend-server.js';
import { FIXED_COMPLETION, startFixedBackend } from '../../src/sim/fixed-backend.js';
import { chatBody, nextChunk, post, streamPost, until, upstream } from '../helpers/servers.js';
import { type AdapterApp, describeAdapter } from './adapter.case.js';

async function listen(app: Express): Promise<AdapterApp> {
  const server = createServer(app);
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const address = server.address() as { port: number };
  return { origin: `http://127.0.0.1:${address.port}`, close: () => closeServer(server) };
}

/** An app with routes of its own around the middleware; `parser`: express.json() runs app-wide before it. */
function appWith(router: Router, options: FreeshExpressOptions, parser: boolean): Express {
  const app = express();
  if (parser) app.use(express.json());
  app.get('/app', (_req, res) => void res.send('app'));
  app.use(freesh(router, options));
  app.get('/healthz', (_req, res) => void res.send('app healthz'));
  app.post('/app/echo', parser ? [] : [express.json()], (req: express.Request, res: express.Response) => void res.json(req.body));
  return app;
}

describeAdapter('Express, no body parser before it', async (router, options) => listen(appWith(router, options, false)));
describeAdapter('Express, express.json() before it', async (router, options) => listen(appWith(router, options, true)));

describe('Express middleware', () => {
  const cleanup: (() => Promise<unknown>)[] = [];
  afterEach(async () => {
    for (const fn of cleanup.splice(0).reverse()) await fn();
  });

  async function routerOver(baseURL: string, maxConcurrency?: number): Promise<Router> {
    const router = createRouter({
      sites: [{ id: 'loc1', carbon: { gramsPerKWh: 300 } }],
      backends: [{ id: 'b1', site: 'loc1', baseURL, models: ['m'], ...(maxConcurrency ? { maxConcurrency } : {}) }],
      plan: { enabled: false },
      predictor: heuristicPredictor(),
    });
    cleanup.push(() => router.close());
    return router;
  }

  async function fixedRouter(): Promise<Router> {
    const fixed = await startFixedBackend();
    cleanup.push(() => fixed.close());
    return routerOver(fixed.baseURL);
  }

  async function start(app: Express): Promise<string> {
    const running = await listen(app);
    cleanup.push(() => running.close());
    return running.origin;
  }

  it('mounted with app.use(path, …) serves the routes under that path only', async () => {
    const router = await fixedRouter();
    const app = express();
    app.use('/llm', freesh(router));
    app.use((_req, res) => void res.status(404).send('app 404'));
    const origin = await start(app);
    const res = await post(`${origin}/llm/v1/chat/completions`, chatBody());
    expect(res.status).toBe(200);
    expect(res.text).toBe(FIXED_COMPLETION);
    expect(await (await fetch(`${origin}/v1/models`)).text()).toBe('app 404');
  });

  it('answers a body that express.json() refused as the proxy does, and leaves the app\'s other parser errors to the app', async () => {
    const router = await fixedRouter();
    const app = express();
    app.use(express.json({ limit: 64 }));
    app.use(freesh(router));
    app.post('/app/echo', (req, res) => void res.json(req.body));
    app.use((err: Error, _req: express.Request, res: express.Response, _next: express.NextFunction) => void res.status(418).send(`app: ${err.message}`));
    const origin = await start(app);
    const malformed = await post(`${origin}/v1/chat/completions`, '{"model":"m",');
    expect(malformed.status).toBe(400);
    expect(malformed.json()).toMatchObject({ error: { code: 'invalid_json', type: 'invalid_request_error', param: null } });
    const big = await post(`${origin}/v1/chat/completions`, chatBody({ padding: 'x'.repeat(100) }));
    expect(big.status).toBe(413);
    expect(big.json()).toMatchObject({ error: { code: 'body_too_large', type: 'invalid_request_error' } });
    const appOwn = await post(`${origin}/app/echo`, '{"a":');
    expect(appOwn.status).toBe(418);
    expect(appOwn.text).toMatch(/^app: /);
  });

  describe('decide-only mode', () => {
    /** An app that forwards what freesh decided itself, as the README shows. */
    function forwardingApp(router: Router, report = true): Express {
      const app = express();
      app.use(freesh(router, { decideOnly: true }));
      app.post('/v1/chat/completions', async (req, res, next) => {
        const decision = req.freesh!;
        try {
          const upstreamRes = await fetch(decision.upstream.url, {
            method: 'POST',
            headers: decision.upstream.headers,
            body: new Uint8Array(decision.upstream.body), // a copy typed as fetch wants it
            signal: decision.signal,
          });
          res.status(upstreamRes.status).set('content-type', upstreamRes.headers.get('content-type') ?? 'application/json');
          res.set('x-app-forwarded', decision.placement.backend.id);
          await pipeline(Readable.fromWeb(upstreamRes.body! as import('node:stream/web').ReadableStream), res);
          if (report) decision.complete('completed');
        } catch (err) {
          if (report) decision.abort('upstream-unreachable');
          if (!res.headersSent) next(err);
        }
      });
      return app;
    }

    it('attaches the decision and a slot to req.freesh; the app forwards, the client gets the x-freesh-* headers', async () => {
      let seen: { url?: string; body?: string; requestId?: string } = {};
      const up = await upstream((req, res, body) => {
        seen = { url: req.url, body, requestId: req.headers['x-request-id'] as string };
        res.writeHead(200, { 'content-type': 'application/json' }).end('{"forwarded":true}');
      });
      cleanup.push(() => up.close());
      const router = await routerOver(up.baseURL);
      const origin = await start(forwardingApp(router));
      const res = await post(`${origin}/v1/chat/completions`, chatBody());
      expect(res.status).toBe(200);
      expect(res.text).toBe('{"forwarded":true}');
      expect(res.headers.get('x-app-forwarded')).toBe('b1');
      expect(res.headers.get('x-freesh-backend')).toBe('b1');
      expect(res.headers.get('x-freesh-site')).toBe('loc1');
      expect(res.headers.get('x-request-id')).toBe(seen.requestId);
      expect(seen.url).toBe('/v1/chat/completions');
      expect(JSON.parse(seen.body!)).toMatchObject({ model: 'm', messages: [{ role: 'user', content: 'Hello there' }] });
      await until(() => router.inFlight === 0);
      expect(await router.metrics.registry.metrics()).toMatch(/^freesh_requests_total\{outcome="completed",backend="b1"\} 1$/m);
    });

    it('answers a bad body with an OpenAI-shaped error and never calls the app', async () => {
      const router = await fixedRouter();
      const origin = await start(forwardingApp(router));
      const res = await post(`${origin}/v1/chat/completions`, '{"model":"m"}');
      expect(res.status).toBe(400);
      expect(res.headers.get('x-app-forwarded')).toBeNull();
      expect(res.json()).toMatchObject({ error: { code: 'invalid_messages', type: 'invalid_request_error' } });
    });

    it('holds requests beyond maxConcurrency until a slot frees, and frees it when the response ends even if the app reports nothing', async () => {
      let running = 0;
      let peak = 0;
      const up = await upstream((_req, res) => {
        running++;
        peak = Math.max(peak, running);
        setTimeout(() => {
          running--;
          res.writeHead(200, { 'content-type': 'application/json' }).end('{}');
        }, 20);
      });
      cleanup.push(() => up.close());
      const router = await routerOver(up.baseURL, 1);
      const origin = await start(forwardingApp(router, false));
      const answers = await Promise.all(Array.from({ length: 4 }, () => post(`${origin}/v1/chat/completions`, chatBody())));
      expect(answers.map((a) => a.status)).toEqual([200, 200, 200, 200]);
      expect(peak).toBe(1);
      await until(() => router.inFlight === 0);
      expect(await router.metrics.registry.metrics()).toMatch(/^freesh_requests_total\{outcome="completed",backend="b1"\} 4$/m);
    });

    it('a client that leaves mid-stream: req.freesh.signal aborts the app\'s upstream call and the slot is freed', async () => {
      let requests = 0;
      let upstreamClosedEarly = false;
      const up = await upstream((_req, res) => {
        if (++requests > 1) return void res.writeHead(200, { 'content-type': 'application/json' }).end('{"second":true}');
        res.writeHead(200, { 'content-type': 'text/event-stream' });
        const timer = setInterval(() => res.write('data: {"choices":[{"delta":{"content":"x"}}]}\n\n'), 5);
        res.on('close', () => {
          clearInterval(timer);
          upstreamClosedEarly = !res.writableFinished;
        });
      });
      cleanup.push(() => up.close());
      const router = await routerOver(up.baseURL, 1);
      const origin = await start(forwardingApp(router, false));
      const stream = await streamPost(`${origin}/v1/chat/completions`, chatBody({ stream: true }));
      expect(await nextChunk(stream.response)).toContain('data: ');
      stream.abort();
      await until(() => upstreamClosedEarly);
      await until(() => router.inFlight === 0);
      expect(await router.metrics.registry.metrics()).toMatch(/^freesh_requests_total\{outcome="client-abort",backend="b1"\} 1$/m);
      expect((await post(`${origin}/v1/chat/completions`, chatBody())).text).toBe('{"second":true}');
    });
  });
});
