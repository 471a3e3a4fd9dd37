import { afterEach, describe, expect, it } from 'vitest';
import { heuristicPredictor } from '../../src/predict/predictor.js';
import { createRouter, type Router } from '../../src/router.js';
import { type SimBackend, startSimBackend } from '../../src/sim/backend-server.js';
import { FIXED_COMPLETION, startFixedBackend } from '../../src/sim/fixed-backend.js';
import { chatBody, nextChunk, post, streamPost, until, upstream } from '../helpers/servers.js';

/**
 * What every framework adapter must do inside a real app, over real HTTP, against simulated
 * backends (issue #12). The app an adapter harness builds has, besides the adapter:
 * - `GET /app` answering `app`, and `GET /healthz` answering `app healthz` (the adapter leaves the
 *   app's own health route alone);
 * - `POST /app/echo` answering the JSON body the app's own parsing read, as JSON.
 */
export interface AdapterApp {
  readonly origin: string;
  close(): Promise<void>;
}

export type MakeApp = (router: Router, options: { readonly basePath?: string }) => Promise<AdapterApp>;

const metricsOf = (router: Router) => router.metrics.registry.metrics();

export function describeAdapter(name: string, makeApp: MakeApp): void {
  describe(`adapter: ${name}`, () => {
    // Closed in this order: apps, then backends (cutting any response left hanging), then routers.
    const apps: AdapterApp[] = [];
    const backends: { close(): Promise<unknown> }[] = [];
    const routers: Router[] = [];
    afterEach(async () => {
      for (const thing of [...apps.splice(0), ...backends.splice(0), ...routers.splice(0)]) await thing.close();
    });

    async function serve(fleet: { id: string; baseURL: string; maxConcurrency?: number }[], basePath?: string): Promise<{ router: Router; origin: string }> {
      const router = createRouter({
        sites: [{ id: 'loc1', carbon: { gramsPerKWh: 300 } }],
        backends: fleet.map((b) => ({ site: 'loc1', models: ['m'], ...b })),
        plan: { enabled: false },
        predictor: heuristicPredictor(),
      });
      routers.push(router);
      const app = await makeApp(router, basePath === undefined ? {} : { basePath });
      apps.push(app);
      return { router, origin: app.origin };
    }

    async function sim(): Promise<SimBackend> {
      const backend = await startSimBackend({ models: ['m'], timeScale: 0.002, outputLength: 'max-tokens' });
      backends.push(backend);
      return backend;
    }

    it('answers a chat completion with the backend\'s body and the x-freesh-* headers', async () => {
      const fixed = await startFixedBackend();
      backends.push(fixed);
      const { router, origin } = await serve([{ id: 'b1', baseURL: fixed.baseURL }]);
      const res = await post(`${origin}/v1/chat/completions`, chatBody());
      expect(res.status).toBe(200);
      expect(res.text).toBe(FIXED_COMPLETION);
      expect(res.headers.get('content-type')).toBe('application/json');
      expect(res.headers.get('x-freesh-backend')).toBe('b1');
      expect(res.headers.get('x-freesh-site')).toBe('loc1');
      for (const h of ['x-freesh-predicted-tokens', 'x-freesh-energy-j', 'x-freesh-carbon-g', 'x-request-id']) expect(res.headers.get(h), h).toBeTruthy();
      await until(() => router.inFlight === 0);
      expect(await metricsOf(router)).toMatch(/^freesh_requests_total\{outcome="completed",backend="b1"\} 1$/m);
    });

    it('streams a chat completion from a simulated backend as server-sent events, ending with [DONE]', async () => {
      const backend = await sim();
      const { router, origin } = await serve([{ id: 'sim', baseURL: backend.baseURL }]);
      const res = await post(`${origin}/v1/chat/completions`, chatBody({ stream: true, max_tokens: 8 }));
      expect(res.status).toBe(200);
      expect(res.headers.get('content-type')).toBe('text/event-stream');
      expect(res.headers.get('x-freesh-backend')).toBe('sim');
      const events = res.text.split('\n\n').filter((e) => e !== '');
      expect(events.at(-1)).toBe('data: [DONE]');
      const words = events.slice(0, -1).map((e) => (JSON.parse(e.slice('data: '.length)) as { choices: { delta: { content?: string } }[] }).choices[0]?.delta.content);
      expect(words.filter((w) => w).length).toBe(8);
      await until(() => router.inFlight === 0);
      expect(await metricsOf(router)).toMatch(/^freesh_requests_total\{outcome="completed",backend="sim"\} 1$/m);
    });

    it('serves GET /v1/models, and the completions under a basePath', async () => {
      const backend = await sim();
      const { origin } = await serve([{ id: 'sim', baseURL: backend.baseURL }], '/llm');
      const models = await fetch(`${origin}/llm/v1/models`);
      expect(await models.json()).toEqual({ object: 'list', data: [{ id: 'm', object: 'model', created: 0, owned_by: 'freesh' }] });
      const res = await post(`${origin}/llm/v1/completions`, JSON.stringify({ model: 'm', prompt: 'Once', max_tokens: 3 }));
      expect(res.status).toBe(200);
      expect(res.json()).toMatchObject({ object: 'text_completion', usage: { completion_tokens: 3 } });
      // Outside the mount path the app answers, not the adapter.
      expect((await fetch(`${origin}/v1/models`)).headers.get('content-type')).not.toBe('application/json');
    });

    it.each([
      ['malformed JSON', '{"model":"m",', 400, 'invalid_json'],
      ['missing messages', '{"model":"m"}', 400, 'invalid_messages'],
      ['an unknown model', '{"model":"gpt-9","messages":[{"role":"user","content":"x"}]}', 404, 'model_not_found'],
    ] as const)('answers %s with an OpenAI-shaped error, and sends nothing upstream', async (_name, body, status, code) => {
      let requests = 0;
      const up = await upstream((_req, res) => {
        requests++;
        res.writeHead(200, { 'content-type': 'application/json' }).end('{}');
      });
      backends.push(up);
      const { router, origin } = await serve([{ id: 'b1', baseURL: up.baseURL }]);
      const res = await post(`${origin}/v1/chat/completions`, body);
      expect(res.status).toBe(status);
      expect(res.headers.get('content-type')).toBe('application/json');
      expect(res.headers.get('content-length')).toBe(String(Buffer.byteLength(res.text)));
      const error = (res.json() as { error: Record<string, unknown> }).error;
      expect(Object.keys(res.json() as object)).toEqual(['error']);
      expect(Object.keys(error).sort()).toEqual(['code', 'message', 'param', 'type']);
      expect(error.code).toBe(code);
      expect(requests).toBe(0);
      expect(router.inFlight).toBe(0);
    });

    it('a client that leaves mid-stream: the upstream request is aborted and its slot freed', async () => {
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
      backends.push(up);
      const { router, origin } = await serve([{ id: 'b1', baseURL: up.baseURL, maxConcurrency: 1 }]);
      const stream = await streamPost(`${origin}/v1/chat/completions`, chatBody({ stream: true }));
      expect(stream.status).toBe(200);
      expect(await nextChunk(stream.response)).toContain('data: ');
      stream.abort();
      await until(() => upstreamClosedEarly);
      await until(() => router.inFlight === 0);
      expect(await metricsOf(router)).toMatch(/^freesh_requests_total\{outcome="client-abort",backend="b1"\} 1$/m);
      // maxConcurrency 1: served only because the abandoned request gave its slot back.
      const second = await post(`${origin}/v1/chat/completions`, chatBody());
      expect(second.status).toBe(200);
      expect(second.text).toBe('{"second":true}');
    });

    it('concurrent requests never exceed a backend\'s maxConcurrency; the rest wait their turn', async () => {
      let running = 0;
      let peak = 0;
      const up = await upstream((_req, res) => {
        running++;
        peak = Math.max(peak, running);
        setTimeout(() => {
          running--;
          res.writeHead(200, { 'content-type': 'application/json' }).end('{"ok":true}');
        }, 30);
      });
      backends.push(up);
      const { router, origin } = await serve([{ id: 'b1', baseURL: up.baseURL, maxConcurrency: 2 }]);
      const answers = await Promise.all(Array.from({ length: 8 }, () => post(`${origin}/v1/chat/completions`, chatBody())));
      expect(answers.map((a) => a.status)).toEqual(Array(8).fill(200));
      expect(peak).toBe(2);
      await until(() => router.inFlight === 0);
      expect(await metricsOf(router)).toMatch(/^freesh_requests_total\{outcome="completed",backend="b1"\} 8$/m);
    });

    it('leaves the app\'s other routes alone: its own /healthz, its JSON parsing, its 404', async () => {
      const fixed = await startFixedBackend();
      backends.push(fixed);
      const { router, origin } = await serve([{ id: 'b1', baseURL: fixed.baseURL }]);
      expect(await (await fetch(`${origin}/app`)).text()).toBe('app');
      expect(await (await fetch(`${origin}/healthz`)).text()).toBe('app healthz');
      const echo = await post(`${origin}/app/echo`, '{"a":[1,2]}');
      expect(echo.status).toBe(200);
      expect(echo.json()).toEqual({ a: [1, 2] });
      const missing = await fetch(`${origin}/v1/embeddings`, { method: 'POST', body: '{}' });
      expect(missing.status).toBe(404);
      expect((await missing.text()).includes('route_not_found')).toBe(false);
      // Nothing of the app's traffic reached the router.
      expect(await metricsOf(router)).not.toMatch(/^freesh_requests_total\{/m);
    });
  });
}
