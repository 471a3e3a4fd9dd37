import { Registry } from 'prom-client';
import { afterEach, describe, expect, it } from 'vitest';
import { DashboardCollector, jain } from '../../src/dashboard/collector.js';
import { quantile, Ring } from '../../src/dashboard/ring.js';
import { parseConfig, routerConfigSchema } from '../../src/config/schema.js';
import { fleetOf } from '../../src/pipeline/fleet.js';
import { heuristicPredictor } from '../../src/predict/predictor.js';
import { createRouter, type Router } from '../../src/router.js';
import { VirtualClock } from '../../src/sim/virtual-clock.js';
import { chatBody, deadBaseURL, type Upstream, upstream } from '../helpers/servers.js';

const cleanups: (() => unknown)[] = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

describe('Ring and the statistics the dashboard takes', () => {
  it('keeps the latest values, oldest first, within its capacity', () => {
    const ring = new Ring<number>(3);
    expect(ring.toArray()).toEqual([]);
    for (let i = 1; i <= 5; i++) ring.push(i);
    expect(ring.toArray()).toEqual([3, 4, 5]);
    expect(ring.size).toBe(3);
    expect(() => new Ring(0)).toThrow(/`capacity`.*got `0`/);
  });

  it('takes nearest-rank quantiles and Jain’s index', () => {
    expect(quantile([], 0.5)).toBeUndefined();
    expect(quantile([5, 1, 4, 2, 3], 0.5)).toBe(3);
    expect(quantile([5, 1, 4, 2, 3], 0.9)).toBe(5);
    expect(quantile(Array.from({ length: 100 }, (_, i) => i + 1), 0.9)).toBe(90);
    expect(jain([])).toBeNull();
    expect(jain([7, 7, 7])).toBe(1);
    expect(jain([10, 0, 0, 0])).toBeCloseTo(0.25, 12);
    expect(jain([0, 0])).toBe(1);
  });
});

describe('DashboardCollector', () => {
  it('samples each site’s carbon intensity on its clock, keeping a bounded history, and stops when closed', () => {
    const config = parseConfig(routerConfigSchema, {
      sites: [{ id: 'a' }, { id: 'b' }],
      backends: [{ id: 'x', site: 'a', baseURL: 'http://127.0.0.1:1/v1', models: ['m'] }],
      dashboard: { enabled: true, carbonSampleMs: 1_000, carbonSamples: 3 },
    });
    const { sites, backends } = fleetOf(config);
    const clock = new VirtualClock();
    const registry = new Registry();
    const collector = new DashboardCollector({
      config,
      clock,
      sites,
      backends,
      // A grid that gets dirtier by 1 g/kWh a second at a, and stays at 500 at b.
      carbon: { gramsPerKWh: (site, nowMs) => (site === 'a' ? 100 + nowMs / 1_000 : 500) },
      load: (id) => (id === 'x' ? { inFlight: 2, queued: 1 } : { inFlight: 0, queued: 0 }),
      healthy: () => false,
      plan: () => undefined,
      registry,
    });
    clock.advance(5_500);
    let s = collector.state();
    expect(s.sites[0]!.carbonHistory).toEqual([
      { ageS: 2.5, gramsPerKWh: 103 },
      { ageS: 1.5, gramsPerKWh: 104 },
      { ageS: 0.5, gramsPerKWh: 105 },
    ]);
    expect(s.sites[0]!.gramsPerKWh).toBe(105.5);
    expect(s.sites[1]!.carbonHistory.map((p) => p.gramsPerKWh)).toEqual([500, 500, 500]);
    expect(s.backends[0]).toMatchObject({ id: 'x', inFlight: 2, queued: 1, healthy: false, planned: null, leastLaxityMs: null, ttftMs: null });
    expect(s.sites[0]!.activeInstances).toBe(1);
    expect(s.sites[1]!.instances).toBe(0);
    expect(s.plan).toBeNull();
    expect(s.fleet.joulesPerOutputToken).toBeNull();
    expect(s.slo.map((c) => c.attainment)).toEqual([null, null, null]);
    collector.close();
    clock.advance(10_000);
    s = collector.state();
    expect(s.sites[0]!.carbonHistory.map((p) => p.ageS)).toEqual([12.5, 11.5, 10.5]);
  });
});

describe('the collector of a router', () => {
  async function routerOn(backend: Upstream, id: string, dashboard: Record<string, number | boolean>): Promise<Router> {
    const router = createRouter({
      sites: [{ id: `site-${id}`, carbon: { gramsPerKWh: 200 } }],
      backends: [{ id, site: `site-${id}`, baseURL: backend.baseURL, models: ['m'] }],
      plan: { enabled: false },
      predictor: heuristicPredictor(),
      dashboard: { enabled: true, ...dashboard },
    });
    cleanups.push(() => router.close());
    await router.ready();
    return router;
  }
  const ask = (router: Router, tenant: string) =>
    router.handle(new Request('http://router/v1/chat/completions', { method: 'POST', body: chatBody({ max_tokens: 3 }), headers: { 'x-freesh-tenant': tenant } }));

  it('counts only its own router’s decisions and ends, keeps the last N decisions and the most recent tenants', async () => {
    const backend = await upstream((_req, res, body) => {
      res.writeHead(200, { 'content-type': 'application/json' });
      res.end(JSON.stringify({ id: 'r', object: 'chat.completion', model: JSON.parse(body).model, choices: [{ index: 0, message: { role: 'assistant', content: 'a b c' }, finish_reason: 'stop' }], usage: { prompt_tokens: 4, completion_tokens: 3, total_tokens: 7 } }));
    });
    cleanups.push(() => backend.close());
    const a = await routerOn(backend, 'a', { decisions: 3, maxTenants: 2 });
    const b = await routerOn(backend, 'b', {});
    for (const tenant of ['t1', 't2', 't3', 't1', 't4']) expect((await (await ask(a, tenant)).text()).length).toBeGreaterThan(0);
    const other = await ask(b, 'other');
    expect(other.status).toBe(200);
    await other.text();

    const sa = a.dashboard!.state();
    const sb = b.dashboard!.state();
    expect(sa.fleet.served).toBe(5);
    expect(sa.fleet.outputTokens).toBe(15);
    expect(sb.fleet.served).toBe(1);
    expect(sa.decisions.map((d) => d.tenant)).toEqual(['t4', 't1', 't3']);
    expect(sa.decisions.every((d) => d.picked === 'a' && d.baseline?.backend === 'a')).toBe(true);
    // Picking the only backend saves nothing against least-loaded picking it too.
    expect(sa.fleet.baseline.savedCarbonG).toBeCloseTo(0, 12);
    expect(sa.fleet.baseline.requests).toBe(5);
    expect(sa.tenants.tenants.map((t) => t.tenant).sort()).toEqual(['t1', 't4']);
    expect(sb.tenants.tenants.map((t) => t.tenant)).toEqual(['other']);
    expect(sb.decisions).toHaveLength(1);
    expect(sa.slo.find((c) => c.class === 'standard')!.ended).toBe(5);
    expect(sb.slo.find((c) => c.class === 'standard')!.ended).toBe(1);
  });
});

describe('the decision inspector', () => {
  it('shows the filter that dropped a backend, and the failover that placed a request twice', async () => {
    const live = await upstream((_req, res) => {
      res.writeHead(200, { 'content-type': 'application/json' });
      res.end(JSON.stringify({ id: 'r', object: 'chat.completion', choices: [{ index: 0, message: { role: 'assistant', content: 'ok' }, finish_reason: 'stop' }], usage: { prompt_tokens: 4, completion_tokens: 1, total_tokens: 5 } }));
    });
    cleanups.push(() => live.close());
    const router = createRouter({
      sites: [{ id: 's', carbon: { gramsPerKWh: 200 } }],
      // The dead backend is the larger one: least-loaded and freesh both try it first while it looks healthy.
      backends: [
        { id: 'dead', site: 's', baseURL: await deadBaseURL(), models: ['m'], maxConcurrency: 64 },
        { id: 'live', site: 's', baseURL: live.baseURL, models: ['m'], maxConcurrency: 1 },
      ],
      plan: { enabled: false },
      predictor: heuristicPredictor(),
      policy: 'least-loaded',
      // Both score 1 on load (all free): the picker breaks the tie with the RNG, here towards the first, the dead one
      // (a tie replaces the best so far when rng() × ties < 1).
      rng: () => 0.99,
      dashboard: { enabled: true },
    });
    cleanups.push(() => router.close());
    await router.ready();
    const ask = async () => {
      const res = await router.handle(new Request('http://router/v1/chat/completions', { method: 'POST', body: chatBody({ max_tokens: 2 }) }));
      expect(res.status).toBe(200);
      await res.text();
    };
    await ask();
    await ask();
    const s = router.dashboard!.state();
    const [second, failover, first] = s.decisions;
    expect(s.decisions).toHaveLength(3);
    // The first request went to the dead backend, failed to connect, and was placed again without it.
    expect(first!.picked).toBe('dead');
    expect(first!.outcome).toBe('upstream-unreachable');
    expect(failover!.requestId).toBe(first!.requestId);
    expect(failover!.picked).toBe('live');
    expect(failover!.candidates.map((c) => c.backend)).toEqual(['live']);
    expect(failover!.outcome).toBe('completed');
    // The next one found it out of rotation: the healthy filter dropped it.
    expect(second!.candidates).toEqual([
      { backend: 'dead', droppedBy: 'healthy' },
      expect.objectContaining({ backend: 'live', scores: { load: expect.any(Number) } }),
    ]);
    expect(second!.picked).toBe('live');
    expect(s.backends.find((b) => b.id === 'dead')!.healthy).toBe(false);
    expect(s.fleet.served).toBe(2);
  });
});
