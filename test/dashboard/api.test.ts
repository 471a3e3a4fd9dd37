import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createHash } from 'node:crypto';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { CLIENT_SCRIPT_HASH, dashboardPage } from '../../src/dashboard/page.js';
import type { DashboardState } from '../../src/dashboard/state.js';
import { createNodeHandler } from '../../src/http/node-handler.js';
import { closeServer } from '../../src/sim/backend-server.js';
import type { RunningProxy } from '../../src/proxy/standalone.js';
import { type SimBackend, startSimBackend } from '../../src/sim/backend-server.js';
import { chatBody, post, proxyFor, until, upstream } from '../helpers/servers.js';

/** Sums every sample of a metric family (optionally only those whose labels match), from the text format. */
function metricSum(text: string, name: string, labels: RegExp = /.*/): number {
  let sum = 0;
  for (const line of text.split('\n')) {
    const m = new RegExp(`^${name}(\\{[^}]*\\})? (\\S+)$`).exec(line);
    if (m && labels.test(m[1] ?? '')) sum += Number(m[2]);
  }
  return sum;
}

const PROMPT = 'A secret prompt about purple elephants';
const body = (extra: Record<string, unknown>) => JSON.stringify({ model: 'm', messages: [{ role: 'user', content: PROMPT }], ...extra });

describe('the dashboard JSON endpoint, over a real proxy and simulated backends', () => {
  let clean: SimBackend;
  let dirty: SimBackend;
  let proxy: RunningProxy;
  const sent = { streamed: { c: 0, d: 0 } as Record<string, number>, bySlo: {} as Record<string, number>, byTenant: {} as Record<string, number> };

  beforeAll(async () => {
    [clean, dirty] = await Promise.all([
      startSimBackend({ profile: '4xA100', models: ['m'], timeScale: 0.01, seed: 1 }),
      startSimBackend({ profile: '4xH100', models: ['m'], timeScale: 0.01, seed: 2 }),
    ]);
    proxy = await proxyFor({
      server: { host: '127.0.0.1', port: 0 },
      sites: [
        { id: 'clean', region: 'FR', carbon: { gramsPerKWh: 50 } },
        { id: 'dirty', region: 'DE', carbon: { gramsPerKWh: 500 } },
      ],
      backends: [
        { id: 'c', site: 'clean', baseURL: clean.baseURL, models: ['m'], maxConcurrency: 8 },
        { id: 'd', site: 'dirty', baseURL: dirty.baseURL, models: ['m'], maxConcurrency: 8 },
      ],
      dashboard: { enabled: true, decisions: 10 },
    });
    for (let i = 0; i < 14; i++) {
      const stream = i % 3 !== 0;
      const slo = i % 2 === 0 ? 'interactive' : 'standard';
      const tenant = i < 10 ? 'alice' : 'bob';
      const res = await post(`${proxy.url}/v1/chat/completions`, body({ max_tokens: 12, stream }), { 'x-freesh-slo': slo, 'x-freesh-tenant': tenant });
      expect(res.status).toBe(200);
      if (stream) sent.streamed[res.headers.get('x-freesh-backend')!]!++;
      sent.bySlo[slo] = (sent.bySlo[slo] ?? 0) + 1;
      sent.byTenant[tenant] = (sent.byTenant[tenant] ?? 0) + 1;
    }
  });
  afterAll(async () => {
    await proxy?.shutdown(1_000);
    await Promise.all([clean?.close(), dirty?.close()]);
  });

  const state = async (): Promise<DashboardState> => {
    const res = await fetch(`${proxy.url}/dashboard/api/state`);
    expect(res.status).toBe(200);
    expect(res.headers.get('content-type')).toBe('application/json');
    return (await res.json()) as DashboardState;
  };

  it('totals what /metrics counts: energy, carbon, tokens, and the ratios of them', async () => {
    const s = await state();
    const metrics = await (await fetch(`${proxy.url}/metrics`)).text();
    expect(s.fleet.served).toBe(14);
    expect(s.fleet.energyJ).toBeGreaterThan(0);
    expect(s.fleet.energyJ).toBeCloseTo(metricSum(metrics, 'freesh_estimated_energy_joules_total'), 6);
    expect(s.fleet.carbonG).toBeCloseTo(metricSum(metrics, 'freesh_estimated_carbon_grams_total'), 9);
    expect(s.fleet.outputTokens).toBe(metricSum(metrics, 'freesh_output_tokens_total'));
    expect(s.fleet.joulesPerOutputToken).toBeCloseTo(s.fleet.energyJ / s.fleet.outputTokens, 9);
    expect(s.fleet.gramsPerRequest).toBeCloseTo(s.fleet.carbonG / 14, 12);
    expect(metricSum(metrics, 'freesh_fleet_joules_per_output_token')).toBeCloseTo(s.fleet.joulesPerOutputToken!, 6);
    expect(metricSum(metrics, 'freesh_fleet_grams_per_request')).toBeCloseTo(s.fleet.gramsPerRequest!, 9);
    for (const b of s.backends) {
      expect(b.energyJ).toBeCloseTo(metricSum(metrics, 'freesh_estimated_energy_joules_total', new RegExp(`backend="${b.id}"`)), 6);
      expect(metricSum(metrics, 'freesh_backend_healthy', new RegExp(`backend="${b.id}"`))).toBe(b.healthy ? 1 : 0);
    }
  });

  it('estimates the saving against least-loaded per decision, from the same costed candidates', async () => {
    const s = await state();
    const metrics = await (await fetch(`${proxy.url}/metrics`)).text();
    const b = s.fleet.baseline;
    expect(b.policy).toBe('least-loaded');
    expect(b.method).toMatch(/same costed candidates/);
    expect(b.requests).toBe(14);
    expect(b.savedCarbonG).toBeCloseTo(b.carbonG - s.fleet.carbonG, 12);
    expect(b.savedCarbonFraction).toBeCloseTo(1 - s.fleet.carbonG / b.carbonG, 12);
    // freesh places on the clean grid; least-loaded spreads over both, a tenth as clean.
    expect(b.savedCarbonG).toBeGreaterThan(0);
    expect(metricSum(metrics, 'freesh_baseline_estimated_carbon_grams_total')).toBeCloseTo(b.carbonG, 9);
    expect(metricSum(metrics, 'freesh_baseline_estimated_energy_joules_total')).toBeCloseTo(b.energyJ, 6);
    // The last 10 decisions' baselines are in the inspector; their sum is that part of the total.
    const inspected = s.decisions.reduce((a, d) => a + d.baseline!.carbonG, 0);
    expect(inspected).toBeLessThan(b.carbonG);
    for (const d of s.decisions) expect(['c', 'd']).toContain(d.baseline!.backend);
  });

  it('reports sites: carbon now, traffic share, instances and clocks', async () => {
    const s = await state();
    const metrics = await (await fetch(`${proxy.url}/metrics`)).text();
    expect(s.sites.map((x) => [x.id, x.gramsPerKWh])).toEqual([['clean', 50], ['dirty', 500]]);
    expect(s.sites.reduce((a, x) => a + x.placed, 0)).toBe(14);
    expect(s.sites.reduce((a, x) => a + x.share!, 0)).toBeCloseTo(1, 12);
    for (const site of s.sites) {
      expect(site.carbonHistory.length).toBeGreaterThanOrEqual(1);
      expect(site.carbonHistory.at(-1)!.gramsPerKWh).toBe(site.gramsPerKWh);
      expect(site.instances).toBe(1);
      expect(site.clocks).toHaveLength(1);
      expect(metricSum(metrics, 'freesh_site_carbon_intensity_grams_per_kwh', new RegExp(`site="${site.id}"`))).toBe(site.gramsPerKWh);
      expect(metricSum(metrics, 'freesh_site_traffic_share', new RegExp(`site="${site.id}"`))).toBeCloseTo(site.recentShare!, 12);
      expect(metricSum(metrics, 'freesh_site_active_instances', new RegExp(`site="${site.id}"`))).toBe(site.activeInstances);
    }
    expect(s.plan).not.toBeNull();
    expect(s.plan!.ageS).toBeGreaterThanOrEqual(0);
    expect([...s.plan!.active, ...s.plan!.parked].sort()).toEqual(['c', 'd']);
  });

  it('reports TTFT and TBT of streamed completions per backend, as /metrics does', async () => {
    const s = await state();
    const metrics = await (await fetch(`${proxy.url}/metrics`)).text();
    for (const b of s.backends) {
      const n = sent.streamed[b.id]!;
      if (n === 0) {
        expect(b.ttftMs).toBeNull();
        continue;
      }
      expect(b.ttftMs!.samples).toBe(n);
      expect(b.ttftMs!.p50).toBeGreaterThan(0);
      expect(b.ttftMs!.p90).toBeGreaterThanOrEqual(b.ttftMs!.p50);
      expect(b.tbtMs!.p50).toBeGreaterThan(0);
      expect(metricSum(metrics, 'freesh_ttft_seconds', new RegExp(`backend="${b.id}",quantile="0.5"`))).toBeCloseTo(b.ttftMs!.p50 / 1000, 9);
      expect(metricSum(metrics, 'freesh_tbt_seconds', new RegExp(`backend="${b.id}",quantile="0.9"`))).toBeCloseTo(b.tbtMs!.p90 / 1000, 9);
    }
    expect(sent.streamed.c! + sent.streamed.d!).toBe(9);
  });

  it('reports SLO attainment per class and service per tenant', async () => {
    const s = await state();
    const metrics = await (await fetch(`${proxy.url}/metrics`)).text();
    for (const c of s.slo) {
      expect(c.ended).toBe(sent.bySlo[c.class] ?? 0);
      if (c.ended > 0) expect(c.attainment).toBeCloseTo(c.attained / c.ended, 12);
      expect(metricSum(metrics, 'freesh_slo_requests_total', new RegExp(`class="${c.class}",attained="true"`))).toBe(c.attained);
      expect(metricSum(metrics, 'freesh_slo_requests_total', new RegExp(`class="${c.class}"`))).toBe(c.ended);
    }
    expect(s.slo.map((c) => c.class).sort()).toEqual(['batch', 'interactive', 'standard']);
    const tenants = Object.fromEntries(s.tenants.tenants.map((t) => [t.tenant, t]));
    expect(tenants.alice!.ended).toBe(10);
    expect(tenants.bob!.ended).toBe(4);
    expect(tenants.alice!.outputTokens + tenants.bob!.outputTokens).toBe(s.fleet.outputTokens);
    const [a, b] = [tenants.alice!.outputTokens, tenants.bob!.outputTokens];
    expect(s.tenants.jainIndex).toBeCloseTo((a + b) ** 2 / (2 * (a * a + b * b)), 12);
    expect(metricSum(metrics, 'freesh_tenant_fairness_index')).toBeCloseTo(s.tenants.jainIndex!, 9);
    expect(metricSum(metrics, 'freesh_tenant_output_tokens', /tenant="bob"/)).toBe(b);
  });

  it('keeps the last N decisions with their traces, newest first, and never the prompt', async () => {
    const res = await fetch(`${proxy.url}/dashboard/api/state`);
    const text = await res.text();
    expect(text).not.toContain('purple elephants');
    const s = JSON.parse(text) as DashboardState;
    expect(s.decisions).toHaveLength(10);
    const ages = s.decisions.map((d) => d.ageS);
    expect([...ages].sort((x, y) => x - y)).toEqual(ages);
    const d = s.decisions[0]!;
    expect(d.tenant).toBe('bob');
    expect(d.policy).toBe('freesh');
    expect(d.outcome).toBe('completed');
    expect(d.outputTokens).toBeGreaterThan(0);
    expect(d.candidates.map((c) => c.backend).sort()).toEqual(['c', 'd']);
    const picked = d.candidates.find((c) => c.backend === d.picked)!;
    expect(picked.droppedBy).toBeUndefined();
    expect(Object.keys(picked.scores!).length).toBeGreaterThan(0);
    for (const c of d.candidates) if (!c.droppedBy) expect(c.score!).toBeLessThanOrEqual(picked.score!);
    expect(Object.keys(d.pluginUs).some((k) => k.startsWith('scorer:'))).toBe(true);
  });

  it('mounts under a path from the library, where the page finds its data and chart.js by relative URLs', async () => {
    const server = createServer(createNodeHandler(proxy.router, { basePath: '/ops' }));
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    try {
      const base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
      const pageURL = `${base}/ops/dashboard`;
      const html = await (await fetch(pageURL)).text();
      expect(html).toContain("fetch('dashboard/api/state'");
      const stateURL = new URL('dashboard/api/state', pageURL).href;
      expect(stateURL).toBe(`${base}/ops/dashboard/api/state`);
      expect(((await (await fetch(stateURL)).json()) as DashboardState).fleet.served).toBe(14);
      expect((await fetch(new URL('dashboard/chart.js', pageURL))).status).toBe(200);
    } finally {
      await closeServer(server);
    }
  });

  it('answers the same through the fetch handler, and HEAD without a body', async () => {
    const res = await proxy.router.handle(new Request('http://router/dashboard/api/state'));
    expect(res.status).toBe(200);
    expect(((await res.json()) as DashboardState).fleet.served).toBe(14);
    const head = await fetch(`${proxy.url}/dashboard`, { method: 'HEAD' });
    expect(head.status).toBe(200);
    expect(head.headers.get('content-type')).toBe('text/html; charset=utf-8');
    expect(await head.text()).toBe('');
    const page = await fetch(`${proxy.url}/dashboard`);
    expect(page.headers.get('content-security-policy')).toContain("connect-src 'self'");
    expect(page.headers.get('content-security-policy')).toContain(`script-src 'self' '${CLIENT_SCRIPT_HASH}'`);
    expect(await page.text()).toContain('<script src="dashboard/chart.js"></script>');
    const chart = await fetch(`${proxy.url}/dashboard/chart.js`);
    expect(chart.status).toBe(200);
    expect(await chart.text()).toContain('Chart.js v4');
    const post405 = await fetch(`${proxy.url}/dashboard/api/state`, { method: 'POST', body: '{}' });
    expect(post405.status).toBe(405);
    expect(((await post405.json()) as { error: { code: string } }).error.code).toBe('method_not_allowed');
  });
});

describe('the dashboard page', () => {
  it('says why there are no charts when chart.js is not installed, and loads no bundle', () => {
    const html = dashboardPage({ chartJs: false, missingNote: 'Charts are off: chart.js is not installed' });
    expect(html).toContain('<p class="missing" id="no-charts">Charts are off: chart.js is not installed</p>');
    expect(html).not.toContain('dashboard/chart.js"');
    expect(dashboardPage({ chartJs: true, missingNote: 'x' })).not.toContain('id="no-charts"');
  });

  it('runs only its own inline script, by hash', async () => {
    const script = /<script>([\s\S]*)<\/script>/.exec(dashboardPage({ chartJs: true, missingNote: '' }))![1]!;
    expect(CLIENT_SCRIPT_HASH).toBe(`sha256-${createHash('sha256').update(script).digest('base64')}`);
  });
});

describe('the dashboard queue view', () => {
  it('shows queued requests and the least laxity among them, and neither once they ran', async () => {
    const held: (() => void)[] = [];
    const backend = await upstream((_req, res) => {
      held.push(() => {
        res.writeHead(200, { 'content-type': 'application/json' });
        res.end(JSON.stringify({ id: 'x', object: 'chat.completion', choices: [{ index: 0, message: { role: 'assistant', content: 'hi' }, finish_reason: 'stop' }], usage: { prompt_tokens: 3, completion_tokens: 1, total_tokens: 4 } }));
      });
    });
    const proxy = await proxyFor({
      server: { host: '127.0.0.1', port: 0 },
      sites: [{ id: 's' }],
      backends: [{ id: 'only', site: 's', baseURL: backend.baseURL, models: ['m'], maxConcurrency: 1 }],
      dashboard: { enabled: true },
    });
    try {
      const replies = [0, 1, 2].map(() => post(`${proxy.url}/v1/chat/completions`, chatBody()).catch((err: unknown) => ({ status: String(err) })));
      await until(() => held.length === 1);
      let s!: DashboardState;
      await until(async () => {
        s = (await (await fetch(`${proxy.url}/dashboard/api/state`)).json()) as DashboardState;
        return s.backends[0]!.queued === 2;
      });
      const row = s.backends[0]!;
      expect(row.inFlight).toBe(1);
      expect(typeof row.leastLaxityMs).toBe('number');
      // The waiter still has time, and it runs out as the clock does.
      expect(row.leastLaxityMs!).toBeGreaterThan(0);
      expect(row.leastLaxityMs!).toBeLessThan(60_000);
      await new Promise((r) => setTimeout(r, 300));
      const later = ((await (await fetch(`${proxy.url}/dashboard/api/state`)).json()) as DashboardState).backends[0]!.leastLaxityMs!;
      expect(row.leastLaxityMs! - later).toBeGreaterThan(250);
      expect(row.leastLaxityMs! - later).toBeLessThan(5_000);
      const metrics = await (await fetch(`${proxy.url}/metrics`)).text();
      expect(metricSum(metrics, 'freesh_queue_least_laxity_seconds', /backend="only"/)).toBeGreaterThan(0);
      expect(metricSum(metrics, 'freesh_cluster_in_flight_requests', /backend="only"/)).toBe(1);
      expect(metricSum(metrics, 'freesh_cluster_queue_length', /backend="only"/)).toBe(2);
      for (let i = 0; i < 3; i++) {
        await until(() => held.length > i);
        held[i]!();
      }
      for (const r of await Promise.all(replies)) expect(r.status).toBe(200);
      s = (await (await fetch(`${proxy.url}/dashboard/api/state`)).json()) as DashboardState;
      expect(s.backends[0]!.queued).toBe(0);
      expect(s.backends[0]!.leastLaxityMs).toBeNull();
      expect(s.fleet.served).toBe(3);
    } finally {
      await proxy.shutdown(500);
      await backend.close();
    }
  });
});

describe('a router without the dashboard', () => {
  let proxy: RunningProxy;
  beforeAll(async () => {
    const backend = await upstream((_req, res) => res.end('{}'));
    proxy = await proxyFor({ server: { host: '127.0.0.1', port: 0 }, sites: [{ id: 's' }], backends: [{ id: 'b', site: 's', baseURL: backend.baseURL, models: ['m'] }] });
    proxy.server.once('close', () => void backend.close());
  });
  afterAll(() => proxy.shutdown(500));

  it('answers its paths 404 in the OpenAI shape, saying how to turn it on, and adds no metrics', async () => {
    expect(proxy.router.dashboard).toBeUndefined();
    for (const path of ['/dashboard', '/dashboard/api/state', '/dashboard/chart.js']) {
      const res = await fetch(`${proxy.url}${path}`);
      expect(res.status).toBe(404);
      const error = ((await res.json()) as { error: { code: string; message: string; type: string } }).error;
      expect(error.code).toBe('route_not_found');
      expect(error.type).toBe('not_found_error');
      expect(error.message).toContain('dashboard.enabled');
    }
    const metrics = await (await fetch(`${proxy.url}/metrics`)).text();
    expect(metrics).not.toContain('freesh_site_carbon_intensity_grams_per_kwh');
  });
});
