import { subscribe, unsubscribe } from 'node:diagnostics_channel';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type RunningProxy, startProxy } from '../../src/proxy/standalone.js';
import { DEMO_MODEL, type DemoFleet, startDemoFleet } from '../../src/sim/demo-fleet.js';
import { post } from '../helpers/servers.js';

let fleet: DemoFleet;
let proxy: RunningProxy;
beforeAll(async () => {
  fleet = await startDemoFleet({ port: 0, timeScale: 0.01 });
  proxy = await startProxy(fleet.config);
});
afterAll(async () => {
  await proxy.shutdown(1_000);
  await fleet.close();
});

const body = (extra: Record<string, unknown>) => JSON.stringify({ model: DEMO_MODEL, messages: [{ role: 'user', content: 'Tell me a story' }], ...extra });

describe('the embedded demo (npm start)', () => {
  it('serves streamed and non-streamed chat completions over the 3-site fleet, at its cleanest site', async () => {
    const sites = new Set<string>();
    for (let i = 0; i < 12; i++) {
      const res = await post(`${proxy.url}/v1/chat/completions`, body({ max_tokens: 8, stream: i % 2 === 0 }));
      expect(res.status).toBe(200);
      sites.add(res.headers.get('x-freesh-site')!);
      expect(res.headers.get('x-freesh-backend')).toMatch(/^loc[123]-/);
      if (i % 2 === 0) expect(res.text.endsWith('data: [DONE]\n\n')).toBe(true);
      else expect(res.json().usage.completion_tokens).toBeLessThanOrEqual(8);
    }
    // The default policy places work at the cleanest site (FR) while it has room.
    expect(sites).toEqual(new Set(['loc3']));
  });

  it('meters energy on the simulated instances', async () => {
    const energy = await Promise.all(fleet.backends.map(async (b) => ((await (await fetch(`${b.baseURL.replace('/v1', '')}/sim/energy`)).json()) as { energyJ: number }).energyJ));
    for (const e of energy) expect(e).toBeGreaterThan(0);
  });

  it('publishes decision traces to diagnostics_channel subscribers', async () => {
    const traces: unknown[] = [];
    const listener = (message: unknown) => traces.push(message);
    subscribe('freesh:decision', listener);
    try {
      await post(`${proxy.url}/v1/chat/completions`, body({ max_tokens: 2 }));
    } finally {
      unsubscribe('freesh:decision', listener);
    }
    expect(traces).toHaveLength(1);
    const trace = (traces[0] as { trace: { policy: string; candidates: unknown[]; picked: string } }).trace;
    expect(trace.policy).toBe('freesh');
    expect(trace.candidates).toHaveLength(7);
    expect(trace.picked).toMatch(/^loc/);
  });

  it('answers through the fetch-API entry point too', async () => {
    const res = await proxy.router.handle(new Request('http://router/v1/chat/completions', { method: 'POST', body: body({ max_tokens: 3 }) }));
    expect(res.status).toBe(200);
    expect(res.headers.get('x-freesh-backend')).toMatch(/^loc/);
    expect(((await res.json()) as { usage: { completion_tokens: number } }).usage.completion_tokens).toBeLessThanOrEqual(3);
    const bad = await proxy.router.handle(new Request('http://router/v1/chat/completions', { method: 'POST', body: '{' }));
    expect(bad.status).toBe(400);
    expect(((await bad.json()) as { error: { code: string } }).error.code).toBe('invalid_json');
    const models = await proxy.router.handle(new Request('http://router/v1/models'));
    expect(((await models.json()) as { data: { id: string }[] }).data.map((m) => m.id)).toEqual([DEMO_MODEL]);
  });
});
