import { afterEach, describe, expect, it } from 'vitest';
import { DEFAULT_FREQUENCY_MODEL } from '../../src/cost/frequency.js';
import { tableFromProfile } from '../../src/cost/mode-table.js';
import { BUILTIN_PROFILES } from '../../src/cost/profiles.js';
import { poolSitesFromConfig, tableWithinTargets } from '../../src/plan/live-pools.js';
import { PoolPlanner, type PoolPlannerOptions } from '../../src/plan/pool-planner.js';
import { inThreadSolver } from '../../src/plan/solver.js';
import { DEFAULT_SLO_CLASSES } from '../../src/request/slo.js';
import { VirtualClock } from '../../src/sim/virtual-clock.js';
import { MemoryStateStore } from '../../src/state/memory-store.js';
import type { Backend } from '../../src/types.js';
import { backend as fixtureBackend } from '../helpers/fixtures.js';

const backend = (id: string, siteId: string): Backend =>
  fixtureBackend(id, { site: { id: siteId, region: siteId, gramsPerKWh: 0, pue: 1.2 }, maxConcurrency: 32, profile: BUILTIN_PROFILES['4xA100']! });
const STEP_MS = 30_000;
const A100 = 'A100-80GB';
const running: PoolPlanner[] = [];
afterEach(async () => {
  await Promise.all(running.splice(0).map((p) => p.stop()));
});

function planner(overrides: Partial<PoolPlannerOptions>) {
  const clock = new VirtualClock(0);
  const store = new MemoryStateStore({ clock });
  const p = new PoolPlanner({
    backends: [backend('clean', 'fr'), backend('dirty', 'de')],
    clock,
    carbon: { gramsPerKWh: (site) => (site === 'fr' ? 50 : 500) },
    store,
    objective: 'carbon',
    slo: DEFAULT_SLO_CLASSES.batch!,
    frequency: DEFAULT_FREQUENCY_MODEL,
    stepMs: STEP_MS,
    windowMs: 3 * STEP_MS,
    margin: 1.1,
    maxUtilisation: 0.8,
    clockLevels: [1],
    solver: inThreadSolver(),
    replicaId: 'r1',
    pools: poolSitesFromConfig([
      { id: 'fr', pue: 1.2, gpus: { [A100]: 8 } },
      { id: 'de', pue: 1.2, gpus: { [A100]: 16 } },
    ]),
    ...overrides,
  });
  running.push(p);
  return { planner: p, clock, store };
}

describe('live planner with GPU pools', () => {
  it('plans each site’s partition for the window from a per-step forecast and publishes it with the plan', async () => {
    // An external forecast whose middle step is the peak: 12 req/s of short chats.
    const forecast = [{ SS: 2, SL: 0, LS: 0, LL: 0 }, { SS: 12, SL: 0, LS: 0, LL: 0 }, { SS: 4, SL: 0, LS: 0, LL: 0 }];
    const { planner: p, clock, store } = planner({ forecast: (_now, steps) => forecast.slice(0, steps) });
    for (let i = 0; i < 30; i++) p.observe('SS', 512, 128, i * 1_000);
    clock.advance(30_000);
    const plan = await p.replan();
    expect(plan.stepForecastRps).toEqual(forecast);
    // The deployed backends are planned for the current step's forecast when it is above the trailing rate (1 req/s).
    expect(plan.forecastRps.SS).toBeCloseTo(2, 9);
    const pools = plan.pools!;
    expect(pools.status).toBe('optimal');
    expect(pools.windowSteps).toBe(3);
    const gpusAt = (site: string) => pools.allocation.filter((a) => a.site === site).reduce((s, a) => s + a.instances * BUILTIN_PROFILES[a.mode]!.gpus, 0);
    expect(gpusAt('fr')).toBeLessThanOrEqual(8);
    expect(gpusAt('de')).toBeLessThanOrEqual(16);
    const shapes = { SS: { promptTokens: 512, outputTokens: 128 } };
    const capacity = pools.allocation.reduce((s, a) => s + a.instances * tableFromProfile(BUILTIN_PROFILES[a.mode]!, shapes, Math.min(BUILTIN_PROFILES[a.mode]!.maxBatch, a.mode === '4xA100' ? 32 : 64)).SS!.maxQps, 0);
    expect(capacity).toBeGreaterThanOrEqual(1.1 * 12 - 1e-9);
    // Only A100 modes fit the inventory; the peak needs more than the clean site's 8 GPUs, all of which run first.
    expect(pools.allocation.every((a) => BUILTIN_PROFILES[a.mode]!.gpu === A100)).toBe(true);
    expect(gpusAt('fr')).toBe(8);
    expect(gpusAt('de')).toBeGreaterThan(0);
    expect(pools.gramsCO2).toBeGreaterThan(0);
    const published = await store.readPlan();
    expect(published?.pools).toEqual(pools);
    expect(published?.stepForecastRps).toEqual(forecast);
  });

  it('without declared inventory plans no pools, and reports the forecaster’s error', async () => {
    const { planner: p, clock } = planner({ pools: undefined });
    for (let step = 0; step < 3; step++) {
      for (let i = 0; i < 30; i++) p.observe('LS', 2_000, 100, step * STEP_MS + i * 1_000);
      clock.advance(STEP_MS);
      await p.replan();
    }
    const plan = await p.replan();
    expect(plan.pools).toBeUndefined();
    // Steady 1 req/s: once the level is known, each step's forecast is exact.
    expect(plan.forecastError!.steps).toBeGreaterThanOrEqual(2);
    expect(plan.stepForecastRps![0]!.LS).toBeCloseTo(1, 9);
    expect(poolSitesFromConfig([{ id: 'fr', pue: 1.2 }])).toBeUndefined();
  });

  it('derives each type’s table at the busiest batch that keeps the TTFT and TBT targets', () => {
    const mode = BUILTIN_PROFILES['2xA100']!;
    const shapes = { SS: { promptTokens: 300, outputTokens: 120 }, SL: { promptTokens: 300, outputTokens: 800 }, LS: { promptTokens: 3_000, outputTokens: 120 }, LL: { promptTokens: 3_000, outputTokens: 800 } };
    const loose = tableWithinTargets(mode, shapes, () => ({ ttftMs: 1e9, tbtMs: 1e9 }), 64);
    expect(loose.SS).toEqual(tableFromProfile(mode, shapes, 64).SS);
    const tight = tableWithinTargets(mode, shapes, () => ({ ttftMs: 1e9, tbtMs: 80 }), 64);
    expect(tight.SS!.tbtMs).toBeLessThanOrEqual(80);
    expect(tight.SS!.maxQps).toBeLessThan(loose.SS!.maxQps);
    // No batch of 1, 2, … 64 does better within 80 ms.
    for (const b of [1, 2, 4, 8, 16, 32, 64]) {
      const e = tableFromProfile(mode, shapes, b).SS!;
      if (e.tbtMs <= 80) expect(e.maxQps).toBeLessThanOrEqual(tight.SS!.maxQps);
    }
    // Beyond reach at any batch: the batch-1 entry, which the targets then exclude.
    const impossible = tableWithinTargets(mode, shapes, () => ({ ttftMs: 1e9, tbtMs: 1 }), 64);
    expect(impossible.LS).toEqual(tableFromProfile(mode, shapes, 1).LS);
  });
});
