import { readFile } from 'node:fs/promises';
import { describe, expect, it } from 'vitest';
import { constantSeries } from '../../src/carbon/series.js';
import { BUILTIN_PROFILES, decodeStepMs, prefillMs } from '../../src/cost/profiles.js';
import { fleetCapacityRps, traceRps } from '../../src/sim/capacity.js';
import { evaluate, jain, quantile } from '../../src/sim/evaluate.js';
import type { FleetSpec } from '../../src/sim/fleet.js';
import { simulate } from '../../src/sim/simulator.js';
import { parseAzureTrace, scaleTrace, type Trace } from '../../src/sim/trace.js';
import { buildWorkload } from '../../src/sim/workload.js';

const ONE: FleetSpec = {
  model: 'm',
  sites: [{ id: 's', region: 'X', gramsPerKWh: 100, pue: 1 }],
  backends: [{ id: 'b', site: 's', mode: '2xA100', maxConcurrency: 8 }],
};
const carbon = new Map([['s', constantSeries(100)]]);
const trace = (requests: [number, number, number][]): Trace => ({
  name: 't',
  requests: requests.map(([arrivalMs, promptTokens, outputTokens]) => ({ arrivalMs, promptTokens, outputTokens })),
  durationMs: requests.at(-1)![0],
});

describe('trace', () => {
  it('parses the Azure format with sub-millisecond stamps, sorted, relative to the first arrival', () => {
    const t = parseAzureTrace('TIMESTAMP,ContextTokens,GeneratedTokens\n2023-11-16 18:15:47.5000000,10,0\n2023-11-16 18:15:46.2500000,374,44\n');
    expect(t.requests).toEqual([
      { arrivalMs: 0, promptTokens: 374, outputTokens: 44 },
      { arrivalMs: 1250, promptTokens: 10, outputTokens: 1 },
    ]);
    expect(scaleTrace(t, 2).requests[1]!.arrivalMs).toBe(625);
    expect(() => parseAzureTrace('a,b,c\n1,2,3')).toThrow(/expected the header/);
    expect(() => parseAzureTrace('TIMESTAMP,ContextTokens,GeneratedTokens\nyesterday,1,2')).toThrow(/line 2/);
  });
});

describe('simulate', () => {
  it('a lone request: TTFT = its prefill, e2e = TTFT + (n − 1) decode steps, as the profile says', async () => {
    const wl = buildWorkload(trace([[0, 512, 10]]));
    const result = await simulate({ fleet: ONE, workload: wl, carbon, run: { name: 'x', policy: 'least-loaded', prediction: 'oracle' } });
    const r = result.records[0]!;
    const p = BUILTIN_PROFILES['2xA100']!;
    const step = decodeStepMs(p, 1);
    expect(r.firstTokenMs).toBeCloseTo(prefillMs(p, 512), 6);
    expect(r.doneMs).toBeCloseTo(prefillMs(p, 512) + 9 * step, 6);
    expect(r.backend).toBe('b');
  });

  it('an idle fleet uses idle power × time × PUE, and carbon at the site intensity', async () => {
    const fleet = { ...ONE, sites: [{ ...ONE.sites[0]!, pue: 1.5 }] };
    // One tiny request at t = 10 min keeps the run going; its own energy is small and counted separately.
    const wl = buildWorkload(trace([[600_000, 1, 1]]));
    const result = await simulate({ fleet, workload: wl, carbon, run: { name: 'x', policy: 'least-loaded', prediction: 'oracle' } });
    const idle = BUILTIN_PROFILES['2xA100']!.idleW;
    const firstMinute = result.samples[0]!;
    expect(firstMinute.timeMs).toBe(60_000);
    expect(firstMinute.energyJ).toBeCloseTo(idle * 60 * 1.5, 6);
    expect(firstMinute.carbonG).toBeCloseTo(((idle * 60 * 1.5) / 3.6e6) * 100, 9);
  });

  it('conserves requests and is deterministic under a seed', async () => {
    const reqs: [number, number, number][] = [];
    for (let i = 0; i < 400; i++) reqs.push([i * 40, 200 + ((i * 37) % 900), 5 + ((i * 53) % 300)]);
    const fleet: FleetSpec = { ...ONE, backends: [{ id: 'a', site: 's', mode: '2xA100', maxConcurrency: 4 }, { id: 'b', site: 's', mode: '4xH100', maxConcurrency: 8 }] };
    const run = async () =>
      simulate({
        fleet,
        workload: buildWorkload(trace(reqs), { seed: 7 }),
        carbon,
        seed: 7,
        run: { name: 'rr', policy: 'random', prediction: 0.8, router: { limits: { maxQueueLength: 20, maxQueueMs: 5_000 } } },
      });
    const first = await run();
    const done = first.records.filter((r) => r.doneMs !== undefined && !r.rejected).length;
    const refused = first.records.filter((r) => r.rejected).length;
    expect(done + refused).toBe(400);
    expect(refused).toBeGreaterThan(0); // the load is meant to overflow the small queues
    for (const r of first.records.filter((x) => x.rejected)) expect(['queue_full', 'class_shed', 'queue_timeout']).toContain(r.rejected);
    const second = await run();
    expect(evaluate(second)).toEqual({ ...evaluate(first), wallSeconds: evaluate(second).wallSeconds });
    expect(second.records.map((r) => [r.backend, r.doneMs])).toEqual(first.records.map((r) => [r.backend, r.doneMs]));
  });

  it('replays a slice of the real conversation trace under two policies', async () => {
    // The trace's first two minutes, cut into the fixture (see test/fixtures/README.md).
    const text = await readFile(new URL('../fixtures/azure-llm-2023-conv-2min.csv', import.meta.url), 'utf8');
    const slice: Trace = { ...parseAzureTrace(text, 'conv-2min'), durationMs: 120_000 };
    expect(slice.requests).toHaveLength(456);
    const fleet: FleetSpec = { ...ONE, backends: [{ id: 'a', site: 's', mode: '4xA100', maxConcurrency: 48 }, { id: 'b', site: 's', mode: '8xA100', maxConcurrency: 64 }] };
    const wl = buildWorkload(slice);
    for (const policy of ['round-robin', 'least-loaded']) {
      const result = await simulate({ fleet, workload: wl, carbon, run: { name: policy, policy, prediction: 0.8 } });
      const m = evaluate(result);
      expect(m.completed + m.rejected).toBe(slice.requests.length);
      expect(m.energyKWh).toBeGreaterThan(0);
      expect(m.ttftP50Ms).toBeGreaterThan(0);
    }
  });
});

describe('capacity and metrics', () => {
  it('capacity follows the batch-throughput formula', () => {
    const t = trace([[0, 512, 100], [1000, 512, 100]]);
    const p = BUILTIN_PROFILES['2xA100']!;
    const tokensPerS = (8 / decodeStepMs(p, 8)) * 1000;
    expect(fleetCapacityRps(ONE, t)).toBeCloseTo(tokensPerS / (100 + (prefillMs(p, 512) / 1000) * tokensPerS), 9);
    expect(traceRps(t)).toBe(2);
  });

  it('Jain is 1 for equal shares and 1/n when one tenant has everything; quantiles by nearest rank', () => {
    expect(jain([2, 2, 2])).toBeCloseTo(1, 12);
    expect(jain([1, 0, 0, 0])).toBeCloseTo(0.25, 12);
    expect(quantile([1, 2, 3, 4], 0.5)).toBe(2);
    expect(quantile([1, 2, 3, 4], 0.99)).toBe(4);
    expect(quantile([], 0.5)).toBeNaN();
  });
});
