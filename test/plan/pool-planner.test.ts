import { subscribe, unsubscribe } from 'node:diagnostics_channel';
import { afterEach, describe, expect, it } from 'vitest';
import { DEFAULT_FREQUENCY_MODEL } from '../../src/cost/frequency.js';
import { BUILTIN_PROFILES } from '../../src/cost/profiles.js';
import type { Plan } from '../../src/plan/plan.js';
import { formulate, type LpSolution, type PlanInput, type TypeDemand } from '../../src/plan/planner.js';
import { planChannel, PoolPlanner, type PoolPlannerOptions } from '../../src/plan/pool-planner.js';
import { inThreadSolver, type Solver } from '../../src/plan/solver.js';
import type { RequestType } from '../../src/request/request-type.js';
import { DEFAULT_SLO_CLASSES } from '../../src/request/slo.js';
import { VirtualClock } from '../../src/sim/virtual-clock.js';
import { MemoryStateStore } from '../../src/state/memory-store.js';
import type { PlanRecord, PublishedPlan } from '../../src/state/store.js';
import type { Backend } from '../../src/types.js';
import { backend as fixtureBackend } from '../helpers/fixtures.js';

const backend = (id: string, siteId: string): Backend =>
  fixtureBackend(id, { site: { id: siteId, region: siteId, gramsPerKWh: 0, pue: 1.2 }, maxConcurrency: 32, profile: BUILTIN_PROFILES['4xA100']! });
const BACKENDS = [backend('clean', 'fr'), backend('dirty', 'de')];
const carbon = { gramsPerKWh: (site: string) => (site === 'fr' ? 50 : 500) };
const STEP_MS = 30_000;
const WINDOW_MS = 60_000;
const flush = async (turns = 5) => {
  for (let i = 0; i < turns; i++) await new Promise((resolve) => setImmediate(resolve));
};

/**
 * The in-thread solver, recording every model it is asked to solve. `hold()` makes the next solves
 * wait until `release()`; `answer` replaces the solution of the next solve.
 */
function recordingSolver() {
  const inner = inThreadSolver();
  const lps: string[] = [];
  let held: (() => void)[] | undefined;
  const answers: LpSolution[] = [];
  const solver: Solver = {
    ready: () => inner.ready(),
    close: () => inner.close(),
    async solve(lp) {
      lps.push(lp);
      if (held) await new Promise<void>((resolve) => held!.push(resolve));
      return answers.shift() ?? inner.solve(lp);
    },
  };
  return {
    solver,
    lps,
    hold: () => void (held = []),
    release: () => {
      const waiting = held ?? [];
      held = undefined;
      for (const resolve of waiting) resolve();
    },
    answer: (solution: LpSolution) => void answers.push(solution),
  };
}

function planner(overrides: Partial<PoolPlannerOptions> & { readonly clock: VirtualClock }) {
  const solving = recordingSolver();
  const plans: Plan[] = [];
  const store = overrides.store ?? new MemoryStateStore({ clock: overrides.clock });
  const options: PoolPlannerOptions = {
    backends: BACKENDS,
    carbon,
    store,
    objective: 'carbon',
    slo: DEFAULT_SLO_CLASSES.standard!,
    frequency: DEFAULT_FREQUENCY_MODEL,
    stepMs: STEP_MS,
    windowMs: WINDOW_MS,
    margin: 1.1,
    maxUtilisation: 0.8,
    clockLevels: [1, 0.85, 0.7],
    solver: solving.solver,
    onPlan: (plan) => plans.push(plan),
    replicaId: 'r1',
    ...overrides,
  };
  return { planner: new PoolPlanner(options), options, store, plans, ...solving };
}

/** The model the planner should solve at `nowMs` for `demand` (types absent: none seen). */
function expectedLp(options: PoolPlannerOptions, nowMs: number, demand: Partial<Record<RequestType, TypeDemand>>): string {
  const unseen = { rps: 0, meanPromptTokens: 512, meanOutputTokens: 128 };
  const input: PlanInput = {
    backends: options.backends,
    nowMs,
    demand: { SS: unseen, SL: unseen, LS: unseen, LL: unseen, ...demand },
    gramsPerKWh: (site) => options.carbon.gramsPerKWh(site, nowMs),
    objective: options.objective,
    clockLevels: options.clockLevels,
    margin: options.margin,
    maxUtilisation: options.maxUtilisation,
    slo: options.slo,
    frequency: options.frequency,
  };
  return formulate(input).lp;
}

const running: PoolPlanner[] = [];
afterEach(async () => {
  await Promise.all(running.splice(0).map((p) => p.stop()));
});

describe('PoolPlanner', () => {
  it('until a plan is made, every backend runs at full clock', () => {
    const { planner: p } = planner({ clock: new VirtualClock(5_000) });
    expect(p.plan.status).toBe('initial');
    expect(p.plan.createdMs).toBe(5_000);
    expect(p.plan.active).toEqual(new Set(['clean', 'dirty']));
    expect(p.plan.clockFraction).toEqual(new Map([['clean', 1], ['dirty', 1]]));
  });

  it('forecasts each request type from the window: arrivals over the time observed, mean prompt and predicted tokens', async () => {
    const T0 = 1_000_000;
    const clock = new VirtualClock(T0);
    const { planner: p, options, lps } = planner({ clock });
    // Arrivals are counted in 10 s buckets: [T0, T0+10 s), [T0+10 s, T0+20 s), [T0+20 s, ...).
    p.observe('SS', 400, 100, T0 + 5_000);
    p.observe('SS', 600, 140, T0 + 15_000);
    p.observe('LL', 3_000, 900, T0 + 20_000);

    // 30 s after the planner started: the window reaches back before it, so the rate is over 30 s.
    clock.advance(30_000);
    const started = performance.now();
    const first = await p.replan();
    expect(first.solveMs).toBeLessThanOrEqual(performance.now() - started);
    expect(first.forecastRps).toEqual({ SS: 2 / 30, SL: 0, LS: 0, LL: 1 / 30 });
    expect(lps[0]).toBe(
      expectedLp(options, T0 + 30_000, {
        SS: { rps: 2 / 30, meanPromptTokens: 500, meanOutputTokens: 120 },
        LL: { rps: 1 / 30, meanPromptTokens: 3_000, meanOutputTokens: 900 },
      }),
    );

    clock.advance(5_000);
    p.observe('SL', 200, 700, clock.now()); // in [T0+30 s, T0+40 s)

    // At T0+80 s the window starts at T0+20 s: the buckets that ended by then are forgotten.
    clock.advance(45_000);
    const second = await p.replan();
    expect(second.forecastRps).toEqual({ SS: 0, SL: 1 / 60, LS: 0, LL: 1 / 60 });
    expect(lps[1]).toBe(
      expectedLp(options, T0 + 80_000, {
        SL: { rps: 1 / 60, meanPromptTokens: 200, meanOutputTokens: 700 },
        LL: { rps: 1 / 60, meanPromptTokens: 3_000, meanOutputTokens: 900 },
      }),
    );
    // At T0+100 s the window starts at T0+40 s: the bucket of T0+35 s has ended.
    clock.advance(20_000);
    expect((await p.replan()).forecastRps).toEqual({ SS: 0, SL: 0, LS: 0, LL: 0 });
  });

  it('with a peak quantile, plans for the busy minutes of bursty traffic, and for the mean when arrivals are even', async () => {
    const T0 = 6_000_000;
    const bursty = async (peakQuantile: number) => {
      const clock = new VirtualClock(T0);
      const { planner: p } = planner({ clock, windowMs: 600_000, peakQuantile });
      clock.advance(600_000);
      // 60 arrivals in the window's first minute, none in the other nine.
      for (let i = 0; i < 60; i++) p.observe('SS', 100, 10, T0 + 1_000 * i);
      return (await p.replan()).forecastRps.SS;
    };
    expect(await bursty(0)).toBeCloseTo(60 / 600, 12);
    // The 0.95 quantile of the per-minute counts [60, 0 × 9] is the busy minute, 1 request a second:
    // the forecast is what the margin (1.1) brings up to it.
    expect(await bursty(0.95)).toBeCloseTo(1 / 1.1, 12);
    // Half the minutes are empty: the median minute is below the mean, which stays.
    expect(await bursty(0.5)).toBeCloseTo(60 / 600, 12);

    const clock = new VirtualClock(T0);
    const { planner: p } = planner({ clock, windowMs: 600_000, peakQuantile: 0.95 });
    clock.advance(600_000);
    for (let i = 0; i < 60; i++) p.observe('SL', 100, 900, T0 + 10_000 * i + 5_000);
    expect((await p.replan()).forecastRps.SL).toBeCloseTo(60 / 600, 12);
  });

  it('counts where requests of each type were sent until the next plan', async () => {
    const clock = new VirtualClock();
    const { planner: p } = planner({ clock });
    p.assign('SS', 'clean');
    p.assign('SS', 'clean');
    p.assign('SS', 'dirty');
    p.assign('LL', 'dirty');
    const view = p.view();
    expect(view.plan).toBe(p.plan);
    expect(view.assigned).toEqual(
      new Map([
        ['SS', new Map([['clean', 2], ['dirty', 1]])],
        ['LL', new Map([['dirty', 1]])],
      ]),
    );
    const plan = await p.replan();
    expect(p.view()).toEqual({ plan, assigned: new Map() });
  });

  it('plans once a step however often it is started, and a planner stopped mid-solve neither follows that plan nor plans again', async () => {
    const clock = new VirtualClock();
    const { planner: p, plans, lps, hold, release } = planner({ clock });
    await p.start();
    await p.start();
    clock.advance(STEP_MS);
    await flush();
    expect(lps).toHaveLength(1);
    expect(plans).toHaveLength(1);

    hold();
    clock.advance(STEP_MS);
    await flush();
    expect(lps).toHaveLength(2);
    await p.stop();
    release();
    await flush();
    expect(plans).toHaveLength(1);
    expect(p.plan).toBe(plans[0]);
    for (let step = 0; step < 3; step++) {
      clock.advance(STEP_MS);
      await flush();
    }
    expect(lps).toHaveLength(2);
  });

  it('a planner stopped before it started stops cleanly, and then never plans', async () => {
    const clock = new VirtualClock();
    const { planner: p, lps } = planner({ clock });
    await p.stop();
    await p.start();
    for (let step = 0; step < 2; step++) {
      clock.advance(STEP_MS);
      await flush();
    }
    expect(lps).toHaveLength(0);
  });

  it('a failed solve keeps the plan in force and is told on freesh:plan; the next step plans again', async () => {
    const clock = new VirtualClock();
    const { planner: p, answer } = planner({ clock });
    running.push(p);
    const published: unknown[] = [];
    const listen = (message: unknown) => void published.push(message);
    subscribe(planChannel.name, listen);
    try {
      answer({ Status: 'Infeasible', ObjectiveValue: 0, Columns: {} });
      await p.start();
      clock.advance(STEP_MS);
      await flush();
      expect(p.plan.status).toBe('initial');
      expect(published).toEqual([{ error: 'Error: planner: HiGHS ended with status Infeasible' }]);
      clock.advance(STEP_MS);
      await flush();
      expect(p.plan.status).toBe('optimal');
      expect(published[1]).toBe(p.plan);
    } finally {
      unsubscribe(planChannel.name, listen);
    }
  });

  it('plans every step when the store cannot say who leads', async () => {
    class Leaderless extends MemoryStateStore {
      override tryLead(): Promise<boolean> {
        return Promise.reject(new Error('store unreachable'));
      }
    }
    const clock = new VirtualClock();
    const { planner: p, lps } = planner({ clock, store: new Leaderless({ clock }) });
    running.push(p);
    await p.start();
    for (let step = 0; step < 2; step++) {
      clock.advance(STEP_MS);
      await flush();
    }
    expect(lps).toHaveLength(2);
    expect(p.plan.status).toBe('optimal');
  });

  it('follows a plan published by another planner as it says, a status it does not know as initial', async () => {
    const clock = new VirtualClock(7_000);
    const { planner: p, store, plans } = planner({ clock });
    running.push(p);
    await p.start();
    const record: PlanRecord = {
      origin: 'agent',
      status: 'degraded',
      active: ['dirty'],
      clockFraction: { dirty: 0.7 },
      shares: { SS: { dirty: 1 } },
      forecastRps: { SS: 2 },
      objectiveRate: 3,
      note: 'short of capacity',
    };
    await store.publishPlan(record);
    await flush();
    expect(plans).toHaveLength(1);
    expect(p.plan).toEqual({
      createdMs: 7_000,
      active: new Set(['dirty']),
      clockFraction: new Map([['dirty', 0.7]]),
      shares: new Map([['SS', new Map([['dirty', 1]])]]),
      status: 'degraded',
      forecastRps: { SS: 2, SL: 0, LS: 0, LL: 0 },
      objectiveRate: 3,
      solveMs: 0,
      note: 'short of capacity (planned by agent)',
    });
    await store.publishPlan({ ...record, status: 'paused' });
    await flush();
    expect(p.plan.status).toBe('initial');
  });

  it('ignores a plan older than its own that the store delivers late, and any plan once stopped', async () => {
    /** A store whose plan notifications wait until flushed, as a remote store's may. */
    class Lagging extends MemoryStateStore {
      readonly pending: (() => void)[] = [];
      override watchPlans(listener: (plan: PublishedPlan) => void): () => void {
        return super.watchPlans((plan) => this.pending.push(() => listener(plan)));
      }
      deliver(): void {
        for (const send of this.pending.splice(0)) send();
      }
    }
    const clock = new VirtualClock();
    const store = new Lagging({ clock });
    const { planner: p } = planner({ clock, store, replicaId: 'a' });
    await p.start();
    const older = { origin: 'b', status: 'optimal', active: ['dirty'], clockFraction: {}, shares: {}, forecastRps: {}, objectiveRate: 1, note: 'older' };
    await store.publishPlan(older);
    const own = await p.replan();
    await flush();
    store.deliver();
    expect(p.plan).toBe(own);

    await store.publishPlan({ ...older, note: 'newer' });
    await p.stop();
    store.deliver();
    expect(p.plan).toBe(own);
  });
});
