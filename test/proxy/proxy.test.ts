import { afterEach, describe, expect, it } from 'vitest';
import type { FileConfigInput } from '../../src/config/schema.js';
import type { RunningProxy } from '../../src/proxy/standalone.js';
import { startSimBackend } from '../../src/sim/backend-server.js';
import { startFixedBackend } from '../../src/sim/fixed-backend.js';
import { chatBody, deadBaseURL, fleetConfig, post, proxyFor, until, upstream } from '../helpers/servers.js';

const cleanup: (() => Promise<unknown>)[] = [];
afterEach(async () => {
  for (const fn of cleanup.splice(0).reverse()) await fn();
});
async function proxy(...args: Parameters<typeof proxyFor>): Promise<RunningProxy> {
  const p = await proxyFor(...args);
  cleanup.push(() => p.shutdown(0));
  return p;
}
function track<T extends { close(): Promise<unknown> }>(thing: T): T {
  cleanup.push(() => thing.close());
  return thing;
}

describe('proxy: completions through simulated backends', () => {
  it('refuses models the config does not list, and passes a backend\'s own 404 through', async () => {
    const sim = track(await startSimBackend({ timeScale: 0.001, outputLength: 'max-tokens' }));
    const p = await proxy(fleetConfig([{ id: 'b1', baseURL: sim.baseURL }]), {});
    const res = await post(`${p.url}/v1/chat/completions`, chatBody({ model: 'llama-3-70b', max_tokens: 5 }).replace('"m"', '"llama-3-70b"'));
    expect(res.status).toBe(404); // the fleet config says the backend serves `m`, so the router refuses other models
    const ok = await post(`${p.url}/v1/chat/completions`, chatBody({ max_tokens: 5 }));
    expect(ok.status).toBe(404); // ...and the simulated backend itself only serves llama-3-70b: its 404 is passed through
    expect(ok.headers.get('x-freesh-backend')).toBe('b1');
    expect(ok.json().error.code).toBe('model_not_found');
  });

  it('relays streamed and non-streamed completions with the routing headers', async () => {
    const sim = track(await startSimBackend({ timeScale: 0.001, outputLength: 'max-tokens', models: ['m'] }));
    const p = await proxy(fleetConfig([{ id: 'b1', baseURL: sim.baseURL }]));
    const plain = await post(`${p.url}/v1/chat/completions`, chatBody({ max_tokens: 5 }));
    expect(plain.status).toBe(200);
    expect(plain.json().usage.completion_tokens).toBe(5);
    expect(plain.json().choices[0].message.content.split(' ')).toHaveLength(5);
    for (const h of ['x-freesh-backend', 'x-freesh-site', 'x-freesh-predicted-tokens', 'x-freesh-energy-j', 'x-freesh-carbon-g']) {
      expect(plain.headers.get(h), h).toBeTruthy();
    }
    expect(plain.headers.get('x-freesh-site')).toBe('loc1');
    expect(plain.headers.get('x-freesh-predicted-tokens')).toBe('5');
    expect(Number(plain.headers.get('x-freesh-energy-j'))).toBeGreaterThan(0);

    const streamed = await post(`${p.url}/v1/chat/completions`, chatBody({ max_tokens: 4, stream: true }));
    expect(streamed.status).toBe(200);
    expect(streamed.headers.get('content-type')).toBe('text/event-stream');
    expect(streamed.headers.get('x-freesh-backend')).toBe('b1');
    const events = streamed.text.trim().split('\n\n');
    expect(events.at(-1)).toBe('data: [DONE]');
    expect(events).toHaveLength(4 + 2);

    const completion = await post(`${p.url}/v1/completions`, JSON.stringify({ model: 'm', prompt: 'Once upon', max_tokens: 3 }));
    expect(completion.status).toBe(200);
    expect(completion.json().object).toBe('text_completion');

    await until(() => p.router.inFlight === 0);
    const metrics = await (await fetch(`${p.url}/metrics`)).text();
    expect(metrics).toMatch(/freesh_requests_total\{outcome="completed",backend="b1"\} 3/);
    expect(metrics).toMatch(/freesh_output_tokens_total\{backend="b1"\} 12/);
  });
});

describe('proxy: what goes upstream and what comes back', () => {
  it('passes upstream 4xx errors through as they are', async () => {
    const body = '{"error":{"message":"This model\'s maximum context length is 4096 tokens","type":"BadRequestError","code":400}}';
    const up = track(await upstream((_req, res) => void res.writeHead(400, { 'content-type': 'application/json' }).end(body)));
    const p = await proxy(fleetConfig([{ id: 'b1', baseURL: up.baseURL }]));
    const res = await post(`${p.url}/v1/chat/completions`, chatBody());
    expect(res.status).toBe(400);
    expect(res.text).toBe(body);
    await until(() => p.router.inFlight === 0);
    expect(await (await fetch(`${p.url}/metrics`)).text()).toMatch(/freesh_requests_total\{outcome="upstream-status",backend="b1"\} 1/);
  });

  it('forwards the body unchanged and replaces the caller\'s credentials with the backend\'s key', async () => {
    let seen: { body: string; auth: string | undefined; path: string | undefined } | undefined;
    const up = track(
      await upstream((req, res, body) => {
        seen = { body, auth: req.headers.authorization, path: req.url };
        res.writeHead(200, { 'content-type': 'application/json' }).end('{}');
      }),
    );
    const p = await proxy({ ...fleetConfig([]), backends: [{ id: 'b1', site: 'loc1', baseURL: up.baseURL, models: ['m'], apiKey: 'sk-backend' }] });
    const sent = chatBody({ temperature: 0.2, tools: [{ type: 'function', function: { name: 'f' } }] });
    await post(`${p.url}/v1/chat/completions`, sent, { authorization: 'Bearer sk-caller' });
    expect(seen).toEqual({ body: sent, auth: 'Bearer sk-backend', path: '/v1/chat/completions' });
  });

  /** A proxy over one backend with forwardPriority, and the bodies that backend received. */
  async function priorityProxy(extra: Partial<FileConfigInput> = {}): Promise<{ url: string; bodies: string[] }> {
    const bodies: string[] = [];
    const up = track(
      await upstream((_req, res, body) => {
        bodies.push(body);
        res.writeHead(200, { 'content-type': 'application/json' }).end('{}');
      }),
    );
    const p = await proxy({ ...fleetConfig([]), backends: [{ id: 'b1', site: 'loc1', baseURL: up.baseURL, models: ['m'], forwardPriority: true }], ...extra });
    return { url: p.url, bodies };
  }

  it('a backend with forwardPriority receives the SLO class priority in the body, overriding the caller\'s', async () => {
    const { url, bodies } = await priorityProxy();
    const sent = chatBody({ priority: -100 });
    await post(`${url}/v1/chat/completions`, sent, { 'x-freesh-slo': 'interactive' });
    await post(`${url}/v1/chat/completions`, sent, { 'x-freesh-slo': 'batch' });
    expect(bodies.map((b) => JSON.parse(b).priority)).toEqual([0, 2]);
    expect(bodies[0]!.startsWith(sent.slice(0, -1))).toBe(true); // the caller's bytes, then the field
  });

  it('a request sent too late for its TTFT target goes upstream with a priority after every class', async () => {
    // `strict` cannot be met (1 ms to the first token): it yields to `standard`, which can.
    const { url, bodies } = await priorityProxy({
      sloClasses: { strict: { ttftBaseMs: 1, tbtMs: 150, priority: 0 }, standard: { ttftBaseMs: 2_000, tbtMs: 150, priority: 1 } },
    });
    await post(`${url}/v1/chat/completions`, chatBody(), { 'x-freesh-slo': 'standard' });
    await post(`${url}/v1/chat/completions`, chatBody(), { 'x-freesh-slo': 'strict' });
    expect(bodies.map((b) => JSON.parse(b).priority)).toEqual([1, 2]);
  });
});

describe('proxy: upstream faults', () => {
  it('fails over to another backend when one refuses connections', async () => {
    const fixed = track(await startFixedBackend());
    const p = await proxy(
      fleetConfig([
        { id: 'dead', baseURL: await deadBaseURL() },
        { id: 'live', baseURL: fixed.baseURL },
      ], { policy: 'round-robin' }),
    );
    const backends = [];
    for (let i = 0; i < 4; i++) {
      const res = await post(`${p.url}/v1/chat/completions`, chatBody());
      expect(res.status).toBe(200);
      backends.push(res.headers.get('x-freesh-backend'));
    }
    expect(backends).toEqual(['live', 'live', 'live', 'live']);
    const metrics = await p.router.metrics.registry.metrics();
    expect(metrics).not.toMatch(/outcome="upstream-unreachable"/);
  });

  it('turns an upstream 5xx into a 502 that quotes it, releases the lease, and keeps serving', async () => {
    let fail = true;
    const up = track(
      await upstream((_req, res) => {
        if (fail) res.writeHead(500, { 'content-type': 'application/json' }).end('{"error":"CUDA out of memory"}');
        else res.writeHead(200, { 'content-type': 'application/json' }).end('{"ok":true}');
      }),
    );
    const p = await proxy(fleetConfig([{ id: 'b1', baseURL: up.baseURL, maxConcurrency: 1 }]));
    const res = await post(`${p.url}/v1/chat/completions`, chatBody());
    expect(res.status).toBe(502);
    expect(res.json().error.code).toBe('upstream_error');
    expect(res.json().error.message).toContain('CUDA out of memory');
    fail = false;
    // maxConcurrency 1: this only succeeds if the failed request gave its slot back.
    expect((await post(`${p.url}/v1/chat/completions`, chatBody())).status).toBe(200);
  });
});

describe('standalone proxy lifecycle', () => {
  it('drains in-flight requests on shutdown and then stops accepting', async () => {
    let release: (() => void) | undefined;
    const up = track(
      await upstream((_req, res) => {
        release = () => res.writeHead(200, { 'content-type': 'application/json' }).end('{"done":true}');
      }),
    );
    const p = await proxyFor(fleetConfig([{ id: 'b1', baseURL: up.baseURL }]));
    const inflight = post(`${p.url}/v1/chat/completions`, chatBody());
    await until(() => release !== undefined);
    const stopped = p.shutdown(5_000);
    await new Promise((r) => setTimeout(r, 50));
    release!();
    expect((await inflight).text).toBe('{"done":true}');
    await stopped;
    await expect(fetch(`${p.url}/healthz`)).rejects.toThrow();
  });
});
