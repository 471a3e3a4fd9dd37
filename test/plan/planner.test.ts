import { describe, expect, it } from 'vitest';
import { DEFAULT_FREQUENCY_MODEL } from '../../src/cost/frequency.js';
import { BUILTIN_PROFILES, decodePowerW, decodeStepMs, prefillMs } from '../../src/cost/profiles.js';
import { formulate, loadSolver, type LpSolution, type PlanInput, readSolution, solveLp, solvePlan } from '../../src/plan/planner.js';
import { PoolPlanner } from '../../src/plan/pool-planner.js';
import { inThreadSolver } from '../../src/plan/solver.js';
import { VirtualClock } from '../../src/sim/virtual-clock.js';
import { MemoryStateStore } from '../../src/state/memory-store.js';
import { DEFAULT_SLO_CLASSES } from '../../src/request/slo.js';
import type { Backend, Site } from '../../src/types.js';

const site = (id: string): Site => ({ id, region: id, gramsPerKWh: 0, pue: 1.2 });
const backend = (id: string, siteId: string, mode: string, maxConcurrency = 32): Backend => ({
  id,
  site: site(siteId),
  baseURL: 'http://x/v1',
  models: new Set(['m']),
  maxConcurrency,
  prefillChunkTokens: 512,
  forwardPriority: false,
  profile: BUILTIN_PROFILES[mode]!,
  apiKey: undefined,
});
const demand = (ss: number) => ({
  SS: { rps: ss, meanPromptTokens: 500, meanOutputTokens: 120 },
  SL: { rps: 0, meanPromptTokens: 500, meanOutputTokens: 600 },
  LS: { rps: 0, meanPromptTokens: 2_000, meanOutputTokens: 120 },
  LL: { rps: 0, meanPromptTokens: 2_000, meanOutputTokens: 600 },
});
const input = (overrides: Partial<PlanInput>): PlanInput => ({
  backends: [backend('clean', 'fr', '4xA100'), backend('dirty', 'de', '4xA100')],
  nowMs: 0,
  demand: demand(0.5),
  gramsPerKWh: (s) => (s === 'fr' ? 50 : 500),
  objective: 'carbon',
  clockLevels: [1, 0.85, 0.7],
  margin: 1.1,
  maxUtilisation: 0.8,
  slo: DEFAULT_SLO_CLASSES.standard!,
  frequency: DEFAULT_FREQUENCY_MODEL,
  ...overrides,
});

describe('pool planner (HiGHS)', () => {
  it('light demand runs on the clean site alone, at a lowered clock', async () => {
    const plan = solvePlan(await loadSolver(), input({}));
    expect(plan.status).toBe('optimal');
    expect([...plan.active]).toEqual(['clean']);
    expect(plan.clockFraction.get('clean')).toBeLessThan(1);
    expect(plan.shares.get('SS')).toEqual(new Map([['clean', 1]]));
    expect(plan.note).toBe('1 of 2 instances active');
  });

  it('no clock scaling when only full clock is offered; the dirty site joins when the clean one is full', async () => {
    const solver = await loadSolver();
    const fixed = solvePlan(solver, input({ clockLevels: [1] }));
    expect(fixed.clockFraction.get('clean')).toBe(1);
    const busy = solvePlan(solver, input({ demand: demand(3) }));
    expect(busy.status).toBe('optimal');
    expect(busy.active).toEqual(new Set(['clean', 'dirty']));
    const share = busy.shares.get('SS')!;
    expect(share.get('clean')!).toBeGreaterThan(share.get('dirty')!);
  });

  it('the energy objective ignores carbon: the faster-per-joule instance wins', async () => {
    const plan = solvePlan(await loadSolver(), input({ backends: [backend('a100', 'fr', '8xA100', 64), backend('h100', 'de', '4xH100', 64)], objective: 'energy' }));
    expect([...plan.active]).toEqual(['h100']);
  });

  it('demand beyond what the SLOs allow degrades to the best feasible plan instead of failing', async () => {
    const plan = solvePlan(await loadSolver(), input({ demand: demand(500) }));
    expect(plan.status).toBe('degraded');
    expect(plan.active).toEqual(new Set(['clean', 'dirty']));
    expect(plan.note).toMatch(/exceeds what the SLOs allow/);
  });

  it('plans capacity for the forecast times the margin: demand the clean instance carries alone needs both with a margin of 2', async () => {
    const solver = await loadSolver();
    const exact = solvePlan(solver, input({ demand: demand(1.5), margin: 1 }));
    expect([...exact.active]).toEqual(['clean']);
    const doubled = solvePlan(solver, input({ demand: demand(1.5), margin: 2 }));
    expect(doubled.status).toBe('optimal');
    expect(doubled.active).toEqual(new Set(['clean', 'dirty']));
  });

  it('loads no instance beyond maxUtilisation of its capacity: the same demand needs both instances at 0.5', async () => {
    const solver = await loadSolver();
    const high = solvePlan(solver, input({ demand: demand(1.5), margin: 1, maxUtilisation: 0.8 }));
    expect([...high.active]).toEqual(['clean']);
    const low = solvePlan(solver, input({ demand: demand(1.5), margin: 1, maxUtilisation: 0.5 }));
    expect(low.status).toBe('optimal');
    expect(low.active).toEqual(new Set(['clean', 'dirty']));
  });

  it('sends an instance no more long prompts than leave its time between tokens within target, though its capacity could take more', async () => {
    const solver = await loadSolver();
    // 80 ms between tokens: decoding alone is within it, with little time left to prefill.
    const tight = { ...DEFAULT_SLO_CLASSES.standard!, tbtMs: 80 };
    const longPrompts = (rps: number) => ({ ...demand(0), LS: { rps, meanPromptTokens: 2_000, meanOutputTokens: 120 } });
    const short = solvePlan(solver, input({ demand: demand(0.8), margin: 1, slo: tight }));
    expect([...short.active]).toEqual(['clean']);
    // The same rate of 2,000-token prompts fits the clean instance's capacity but not its prefill budget.
    const long = solvePlan(solver, input({ demand: longPrompts(0.8), margin: 1, slo: tight }));
    expect(long.status).toBe('optimal');
    expect(long.active).toEqual(new Set(['clean', 'dirty']));
  });

  it('plans the prefill budget to maxUtilisation too: long prompts that fill 90% of one instance\'s budget need a second, 70% do not', async () => {
    const solver = await loadSolver();
    const tight = { ...DEFAULT_SLO_CLASSES.standard!, tbtMs: 80 };
    const p = BUILTIN_PROFILES['4xA100']!;
    // The share of time one instance may prefill and still decode within 80 ms between tokens.
    const budget = 1 - (decodeStepMs(p, 32) * DEFAULT_FREQUENCY_MODEL.decodeTime(1)) / tight.tbtMs;
    const prefillS = (prefillMs(p, 2_000) * DEFAULT_FREQUENCY_MODEL.prefillTime(1)) / 1000;
    const longPrompts = (share: number) => ({ ...demand(0), LS: { rps: (share * budget) / prefillS, meanPromptTokens: 2_000, meanOutputTokens: 120 } });
    const at = (share: number) => solvePlan(solver, input({ demand: longPrompts(share), margin: 1, maxUtilisation: 0.8, clockLevels: [1], slo: tight }));
    expect([...at(0.7).active]).toEqual(['clean']);
    const over = at(0.9);
    expect(over.status).toBe('optimal');
    expect(over.active).toEqual(new Set(['clean', 'dirty']));
    // With the whole budget allowed (maxUtilisation 1) the clean instance carries 90% alone.
    expect([...solvePlan(solver, input({ demand: longPrompts(0.9), margin: 1, maxUtilisation: 1, clockLevels: [1], slo: tight })).active]).toEqual(['clean']);
  });

  it('targets no instance can meet at any clock degrade too: every demand is shortfall, one instance stays on', async () => {
    const impossible = { ...DEFAULT_SLO_CLASSES.standard!, ttftBaseMs: 1, ttftPerPromptTokenMs: 0, tbtMs: 1 };
    const plan = solvePlan(await loadSolver(), input({ slo: impossible }));
    expect(plan.status).toBe('degraded');
    expect(plan.active.size).toBe(1);
    expect(plan.shares.size).toBe(0);
  });
});

describe('what the planner models', () => {
  const p = BUILTIN_PROFILES['4xA100']!;
  /** One 4xA100 instance (batch 32) at full clock; by default 0.5 SS requests a second (500 prompt tokens, 120 out), no margin. */
  const single = (overrides: Partial<PlanInput>) => input({ backends: [backend('clean', 'fr', '4xA100')], clockLevels: [1], demand: demand(0.5), margin: 1, ...overrides });
  const stepMs = decodeStepMs(p, 32) * DEFAULT_FREQUENCY_MODEL.decodeTime(1);
  const prefill = prefillMs(p, 500) * DEFAULT_FREQUENCY_MODEL.prefillTime(1);

  it('plans at an objective rate of idle power plus each request\'s dynamic energy, weighted by PUE and, for carbon, the grid', async () => {
    const solver = await loadSolver();
    const energyJ = (prefill / 1000) * (p.prefillW - p.idleW) + (120 * stepMs * (decodePowerW(p, 32) - p.idleW)) / 32 / 1000;
    const watts = 1.2 * (p.idleW + 0.5 * energyJ);
    const energy = solvePlan(solver, single({ objective: 'energy' }));
    expect(energy.status).toBe('optimal');
    expect(energy.objectiveRate / watts).toBeCloseTo(1, 9);
    // gCO2e/s at 50 g/kWh.
    const carbon = solvePlan(solver, single({ objective: 'carbon' }));
    expect(carbon.objectiveRate / ((watts * 50) / 3.6e6)).toBeCloseTo(1, 9);
  });

  it('a TTFT target the instance meets exactly is met; one millisecond less is not, and the demand becomes shortfall', async () => {
    const solver = await loadSolver();
    const exactly = { ...DEFAULT_SLO_CLASSES.standard!, ttftBaseMs: prefill + stepMs, ttftPerPromptTokenMs: 0 };
    expect(solvePlan(solver, single({ slo: exactly })).status).toBe('optimal');
    const under = solvePlan(solver, single({ slo: { ...exactly, ttftBaseMs: prefill + stepMs - 1 } }));
    expect(under.status).toBe('degraded');
    expect(under.shares.size).toBe(0);
  });

  it('a lower clock whose slower decoding breaks the TBT target is not planned, though it would save energy', async () => {
    const solver = await loadSolver();
    const levels = { clockLevels: [1, 0.5], demand: demand(0.05) };
    expect(solvePlan(solver, single(levels)).clockFraction.get('clean')).toBe(0.5);
    // 58 ms lies between the step at full clock (56.7 ms) and at half clock (59.5 ms).
    const tight = solvePlan(solver, single({ ...levels, slo: { ...DEFAULT_SLO_CLASSES.standard!, tbtMs: 58 } }));
    expect(tight.status).toBe('optimal');
    expect(tight.clockFraction.get('clean')).toBe(1);
  });

  it('a degraded plan reports its own rate, not the price of its shortfall', async () => {
    const plan = solvePlan(await loadSolver(), input({ demand: demand(500) }));
    expect(plan.status).toBe('degraded');
    // Two instances of about 1-2 kW at 50 and 500 g/kWh: well under 1 gCO2e/s.
    expect(plan.objectiveRate).toBeGreaterThan(0);
    expect(plan.objectiveRate).toBeLessThan(1);
  });

  it('says how long it took to solve', async () => {
    const solver = await loadSolver();
    const started = performance.now();
    const plan = solvePlan(solver, input({}));
    expect(plan.solveMs).toBeGreaterThan(0);
    expect(plan.solveMs).toBeLessThanOrEqual(performance.now() - started);
  });

  it('every column of the model is a variable the plan reads back, or a request type\'s shortfall', async () => {
    const solver = await loadSolver();
    const impossible = { ...DEFAULT_SLO_CLASSES.standard!, tbtMs: 1 };
    for (const model of [input({}), input({ slo: impossible })]) {
      const formulation = formulate(model);
      const columns = Object.keys(solveLp(solver, formulation.lp).Columns);
      expect(columns.sort()).toEqual([...formulation.variables.keys(), 'u_0', 'u_1', 'u_2', 'u_3'].sort());
    }
  });
});

describe('reading a solution', () => {
  const model = input({ clockLevels: [1] });
  const formulation = formulate(model);
  const solution = (objective: number, columns: Record<string, number>, status = 'Optimal'): LpSolution => ({
    Status: status,
    ObjectiveValue: objective,
    Columns: Object.fromEntries(Object.entries(columns).map(([name, value]) => [name, { Primal: value }])),
  });

  it('reads solver noise as zero: an instance at 0.5 or less is parked, a rate of 1e-9 or less gets no share, a shortfall of 1e-6 is none', () => {
    const plan = readSolution(model, formulation, solution(1, { y_0_0: 1, y_1_0: 0.5, l_0_0_0: 0.55, l_1_0_0: 1e-9, u_0: 1e-6 }), 3);
    expect(plan.active).toEqual(new Set(['clean']));
    expect(plan.clockFraction).toEqual(new Map([['clean', 1]]));
    expect(plan.shares).toEqual(new Map([['SS', new Map([['clean', 1]])]]));
    expect(plan.status).toBe('optimal');
    expect(plan.solveMs).toBe(3);
  });

  it('a shortfall degrades the plan, and its price is taken out of the objective rate', () => {
    const plan = readSolution(model, formulation, solution(2_000_007, { y_0_0: 1, l_0_0_0: 3, u_0: 1.5, u_2: 0.5 }), 3);
    expect(plan.status).toBe('degraded');
    expect(plan.objectiveRate).toBeCloseTo(7, 6);
    expect(plan.note).toBe('demand exceeds what the SLOs allow by 2.00 req/s: serving the rest best-effort');
  });

  it('refuses a solve that did not end optimal', () => {
    expect(() => readSolution(model, formulation, solution(0, {}, 'Time limit reached'), 0)).toThrow('planner: HiGHS ended with status Time limit reached');
  });
});

describe('the LP model', () => {
  const single = (overrides: Partial<PlanInput>) => input({ backends: [backend('clean', 'fr', '4xA100')], clockLevels: [1], ...overrides });

  it('writes every coefficient with its value, however small', () => {
    // About 2.6e-10 gCO2e/s of idle power (an intensity near zero), with twelve significant digits.
    const gramsPerKWh = Math.PI * 1e-6;
    const { lp } = formulate(single({ gramsPerKWh: () => gramsPerKWh }));
    const objective = /obj: (.*)/.exec(lp)![1]!.split(' + ');
    const idle = objective.find((term) => term.endsWith(' y_0_0'))!;
    expect(Number(idle.split(' ')[0]) / ((BUILTIN_PROFILES['4xA100']!.idleW * 1.2 * gramsPerKWh) / 3.6e6)).toBeCloseTo(1, 10);
  });

  it('refuses a coefficient that is not a finite number', () => {
    expect(() => formulate(single({ gramsPerKWh: () => Number.NaN }))).toThrow(new RangeError('planner: coefficient NaN'));
  });
});

describe('solving off the event loop', () => {
  it('a worker thread (the compiled one) finds the same plan as the calling thread', async () => {
    // The worker runs compiled JavaScript: `npm test` builds first.
    const { workerSolver } = (await import(new URL('../../dist/src/plan/solver.js', import.meta.url).href)) as typeof import('../../src/plan/solver.js');
    const lp = formulate(input({ demand: demand(3) })).lp;
    const worker = workerSolver();
    const local = inThreadSolver();
    const [a, b] = await Promise.all([worker.solve(lp), local.solve(lp)]);
    expect(a.Status).toBe('Optimal');
    expect(a.ObjectiveValue).toBeCloseTo(b.ObjectiveValue, 6);
    // The event loop keeps turning while the worker solves a larger model.
    const many = Array.from({ length: 24 }, (_, i) => backend(`b${i}`, i % 2 === 0 ? 'fr' : 'de', ['2xA100', '4xA100', '8xA100', '4xH100'][i % 4]!));
    let ticks = 0;
    const ticking = setInterval(() => ticks++, 1);
    const started = performance.now();
    await worker.solve(formulate(input({ backends: many, demand: demand(8) })).lp);
    const tookMs = performance.now() - started;
    clearInterval(ticking);
    if (tookMs > 20) expect(ticks).toBeGreaterThan(1);
    expect((await worker.solve('not an LP model')).Status).not.toBe('Optimal');
    await worker.close();
  });
});

describe('PoolPlanner', () => {
  it('plans every step from the window\'s demand, tells onPlan and publishes to the store', async () => {
    const clock = new VirtualClock();
    const store = new MemoryStateStore({ clock });
    const plans: unknown[] = [];
    const planner = new PoolPlanner({
      ...input({}),
      backends: input({}).backends,
      clock,
      carbon: { gramsPerKWh: (site) => (site === 'fr' ? 50 : 500) },
      store,
      stepMs: 300_000,
      windowMs: 1_800_000,
      solver: inThreadSolver(),
      onPlan: (p) => plans.push(p),
      replicaId: 'r1',
    });
    expect(planner.plan.status).toBe('initial');
    await planner.start();
    // 0.5 SS requests a second for five minutes.
    for (let t = 0; t < 300_000; t += 2_000) planner.observe('SS', 500, 120, t);
    clock.advance(300_000);
    await new Promise((r) => setImmediate(r));
    expect(plans).toHaveLength(1);
    expect(planner.plan.status).toBe('optimal');
    expect(planner.plan.forecastRps.SS).toBeCloseTo(0.5, 6);
    expect([...planner.plan.active]).toEqual(['clean']);
    expect((await store.readPlan())?.active).toEqual(['clean']);
    await planner.stop();
    clock.advance(600_000);
    await new Promise((r) => setImmediate(r));
    expect(plans).toHaveLength(1);
  });

  it('with replicas sharing a store, one plans per step and the others follow its plan', async () => {
    const clock = new VirtualClock();
    const store = new MemoryStateStore({ clock });
    let solves = 0;
    const counting = () => {
      const solver = inThreadSolver();
      return { ...solver, solve: (lp: string) => (solves++, solver.solve(lp)), ready: () => solver.ready(), close: () => solver.close() };
    };
    const replica = (replicaId: string) =>
      new PoolPlanner({
        ...input({}),
        clock,
        carbon: { gramsPerKWh: (site) => (site === 'fr' ? 50 : 500) },
        store,
        stepMs: 300_000,
        windowMs: 1_800_000,
        solver: counting(),
        replicaId,
      });
    const [a, b, c] = [replica('a'), replica('b'), replica('c')];
    await Promise.all([a.start(), b.start(), c.start()]);
    for (const p of [a, b, c]) for (let t = 0; t < 300_000; t += 2_000) p.observe('SS', 500, 120, t);
    clock.advance(300_000);
    for (let i = 0; i < 5; i++) await new Promise((r) => setImmediate(r));
    expect(solves).toBe(1);
    for (const p of [a, b, c]) {
      expect(p.plan.status).toBe('optimal');
      expect([...p.plan.active]).toEqual(['clean']);
    }
    expect((await store.readPlan())?.origin).toBe('a');
    // Followers run the leader's plan: its instances, clocks and shares.
    for (const p of [b, c]) {
      expect(p.plan.clockFraction).toEqual(a.plan.clockFraction);
      expect(p.plan.shares).toEqual(a.plan.shares);
      expect(p.plan.note).toBe(`${a.plan.note} (planned by a)`);
    }
    // The leader keeps its lease while it plans.
    clock.advance(300_000);
    for (let i = 0; i < 5; i++) await new Promise((r) => setImmediate(r));
    expect(solves).toBe(2);
    expect((await store.readPlan())?.origin).toBe('a');
    // The leader stops: its lease is given up, and another replica plans the next step.
    await a.stop();
    clock.advance(300_000);
    for (let i = 0; i < 5; i++) await new Promise((r) => setImmediate(r));
    expect(solves).toBe(3);
    expect((await store.readPlan())?.origin).not.toBe('a');
    await Promise.all([b.stop(), c.stop()]);
  });
});
