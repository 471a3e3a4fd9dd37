import { describe, expect, it } from 'vitest';
import { parseConfig, routerConfigSchema } from '../../src/config/schema.js';
import { batchWithinTbt, profileCostModel } from '../../src/cost/cost-model.js';
import { DEFAULT_FREQUENCY_MODEL } from '../../src/cost/frequency.js';
import { decodeStepMs } from '../../src/cost/profiles.js';
import { LatencyCalibrator, PrefillTracker } from '../../src/pipeline/bookkeepers.js';
import type { Placement, SendEvent } from '../../src/pipeline/lifecycle.js';
import { Slots } from '../../src/pipeline/slots.js';
import { heuristicPredictor } from '../../src/predict/predictor.js';
import { createRouter } from '../../src/router.js';
import { TbtCap } from '../../src/pipeline/tbt-cap.js';
import type { Plan } from '../../src/plan/plan.js';
import { VirtualClock } from '../../src/sim/virtual-clock.js';
import { ClusterView } from '../../src/state/cluster-view.js';
import { MemoryStateStore } from '../../src/state/memory-store.js';
import type { Lease } from '../../src/state/store.js';
import type { Backend } from '../../src/types.js';
import { backend, request } from '../helpers/fixtures.js';

const prediction = { outputTokensP50: 100, outputTokensP90: 300, source: 'test' };

/** The cost model's TBT for a request joining `inFlight` others, at a prompt load. */
function modelTbt(b: Backend, inFlight: number, promptTokensPerS: number, clockFraction = 1, latencyFactor = 1): number {
  return profileCostModel.estimate({
    request: request(),
    prediction,
    backend: b,
    state: { inFlight, healthy: true },
    queued: 0,
    promptTokensPerS,
    prefillBacklogTokens: 0,
    nowMs: 0,
    gramsPerKWh: 400,
    clockFraction,
    latencyFactor,
    readyInMs: 0,
  }).tbtMs;
}

describe('batchWithinTbt', () => {
  const b = backend('a', { maxConcurrency: 64 });

  it("is the largest batch whose modelled TBT (the cost model's) stays within the budget", () => {
    for (const [budget, load, clock, factor] of [
      [70, 0, 1, 1],
      [100, 800, 1, 1],
      [100, 300, 0.7, 1.2],
      [150, 1500, 1, 0.9],
    ] as const) {
      const n = batchWithinTbt(b, budget, load, clock, factor, DEFAULT_FREQUENCY_MODEL);
      expect(n).toBeGreaterThan(0);
      expect(n).toBeLessThan(64);
      // The n-th request keeps it (it joins n − 1 others); one more would not.
      expect(modelTbt(b, n - 1, load, clock, factor)).toBeLessThanOrEqual(budget);
      expect(modelTbt(b, n, load, clock, factor)).toBeGreaterThan(budget);
    }
  });

  it('shrinks as prompts stream in, and is 0 when not even one sequence keeps the budget', () => {
    const idle = batchWithinTbt(b, 100, 0, 1, 1);
    const loaded = batchWithinTbt(b, 100, 1_000, 1, 1);
    expect(loaded).toBeLessThan(idle);
    expect(batchWithinTbt(b, 100, 5_000, 1, 1)).toBe(0);
    expect(batchWithinTbt(b, decodeStepMs(b.profile, 1) - 1, 0, 1, 1)).toBe(0);
  });

  it('is maxConcurrency when every batch fits', () => {
    expect(batchWithinTbt(b, 10_000, 0, 1, 1)).toBe(64);
  });
});

/** A TbtCap over a real view, prefill tracker and calibrator, on one 2×A100 backend of 64 slots. */
function capSetUp(headroom = 1) {
  const clock = new VirtualClock();
  const store = new MemoryStateStore({ clock });
  const b = backend('b', { maxConcurrency: 64 });
  const view = new ClusterView({ store, backendIds: ['b'], clock, refreshMs: 60_000 });
  const prefill = new PrefillTracker(['b']);
  const latency = new LatencyCalibrator();
  const config = parseConfig(routerConfigSchema, { sites: [{ id: 's1' }], backends: [{ id: 'b', site: 's1', baseURL: 'http://127.0.0.1:1/v1', models: ['m'] }] }, 'test');
  let plan: Plan | undefined;
  const cap = new TbtCap({ config, view, prefill, latency, frequency: DEFAULT_FREQUENCY_MODEL, plan: () => plan, headroom });
  let lease = 0;
  const running = (tag: string, n = 1) => {
    for (let i = 0; i < n; i++) view.acquired({ backendId: 'b', id: `l${lease++}`, tag } as Lease);
  };
  const sent = (promptTokens: number) =>
    prefill.send({ request: request({ promptTokens }), placement: { backend: b } as Placement, nowMs: clock.now(), priority: 0 } as SendEvent);
  return { clock, b, cap, running, sent, latency, setPlan: (p: Plan) => (plan = p) };
}

/** A prompt heavy enough that an interactive window holds the batch below the backend's 64 slots. */
const P = 2_000;

describe('TbtCap', () => {
  it('admits up to maxConcurrency when no class with a TBT target is involved', () => {
    const { cap, b } = capSetUp();
    expect(cap.limit(b, undefined, P, 0)).toBe(64);
    expect(cap.limit(b, 'no-such-class', P, 0)).toBe(64);
  });

  it("holds the batch to the strictest target among the requests running there and the one admitted, its prompt counted over the shortest TBT window", () => {
    const { cap, b, running } = capSetUp();
    // A standard request (150 ms) on an idle backend: its prompt spread over 10 s.
    const standard = cap.limit(b, 'standard', P, 0);
    expect(standard).toBe(batchWithinTbt(b, 150, P / 10, 1, 1));
    // An interactive one (100 ms) over 2.5 s: a smaller batch.
    const interactive = cap.limit(b, 'interactive', P, 0);
    expect(interactive).toBe(batchWithinTbt(b, 100, P / 2.5, 1, 1));
    expect(interactive).toBeLessThan(standard);
    // Once an interactive request runs there, a standard one is held to its target and window too.
    running('interactive');
    expect(cap.limit(b, 'standard', P, 0)).toBe(interactive);
  });

  it('falls as prompts are sent, and rises again as that prefill load decays', () => {
    const { cap, b, sent, clock } = capSetUp();
    const before = cap.limit(b, 'interactive', P, 0);
    for (let i = 0; i < 10; i++) sent(300);
    const during = cap.limit(b, 'interactive', P, 0);
    expect(during).toBe(batchWithinTbt(b, 100, 300 + P / 2.5, 1, 1));
    expect(during).toBeLessThan(before);
    clock.advance(300_000);
    expect(cap.limit(b, 'interactive', P, clock.now())).toBe(before);
  });

  it('follows the calibrated latency factor', () => {
    const { cap, b, latency } = capSetUp();
    const atFull = cap.limit(b, 'interactive', P, 0);
    latency.complete({
      placement: { backend: b, cost: { ttftMs: 100, waitMs: 0, tbtMs: 50 } } as Placement,
      outcome: 'completed',
      outputTokens: 201,
      serviceMs: 30_000,
    } as never);
    expect(latency.factor('b')).toBeGreaterThan(1);
    const slower = cap.limit(b, 'interactive', P, 0);
    expect(slower).toBeLessThan(atFull);
    expect(slower).toBe(Math.max(1, batchWithinTbt(b, 100, P / 2.5, 1, latency.factor('b'))));
  });

  it("follows the plan's clock: prefill slows at a lower clock, leaving room for a smaller batch", () => {
    const { cap, b, setPlan } = capSetUp();
    const atFull = cap.limit(b, 'interactive', 1_500, 0);
    setPlan({ clockFraction: new Map([['b', 0.7]]) } as unknown as Plan);
    const lowered = cap.limit(b, 'interactive', 1_500, 0);
    expect(lowered).toBeLessThan(atFull);
    expect(lowered).toBe(batchWithinTbt(b, 100, 1_500 / 2.5, 0.7, 1));
  });

  it('a prompt too long for the window even alone is held to the load only, not to an idle backend', () => {
    const { cap, b, sent } = capSetUp();
    sent(2_000);
    const load = 2_000 / 10;
    // 8k tokens within 2.5 s break 100 ms at batch 1 whatever the load: waiting would not help.
    expect(batchWithinTbt(b, 100, 8_000 / 2.5, 1, 1)).toBe(0);
    expect(cap.limit(b, 'interactive', 8_000, 0)).toBe(batchWithinTbt(b, 100, load, 1, 1));
    expect(cap.limit(b, 'interactive', 8_000, 0)).toBeGreaterThan(1);
  });

  it('is at least 1: an idle backend takes a request whatever the load', () => {
    const { cap, b, sent } = capSetUp();
    for (let i = 0; i < 100; i++) sent(8_000);
    expect(cap.limit(b, 'interactive', P, 0)).toBe(1);
  });

  it('lets the modelled TBT reach headroom × the target', () => {
    const strict = capSetUp(1);
    const loose = capSetUp(1.3);
    expect(loose.cap.limit(loose.b, 'interactive', P, 0)).toBe(batchWithinTbt(loose.b, 130, P / 2.5, 1, 1));
    expect(loose.cap.limit(loose.b, 'interactive', P, 0)).toBeGreaterThan(strict.cap.limit(strict.b, 'interactive', P, 0));
  });
});

describe('Slots with an admission limit', () => {
  function setUp(limitOf: (promptTokens: number) => number) {
    const clock = new VirtualClock();
    const store = new MemoryStateStore({ clock });
    const view = new ClusterView({ store, backendIds: ['b'], clock, refreshMs: 60_000 });
    const b = { id: 'b', maxConcurrency: 4 } as Backend;
    const asked: [string | undefined, number][] = [];
    const slots = new Slots({
      backends: [b],
      store,
      view,
      clock,
      leaseTtlMs: 10_000,
      maxQueueLength: 10,
      maxQueueMs: 60_000,
      fairShare: undefined,
      urgentWithinMs: 0,
      demoteLate: false,
      onStoreError: () => {},
      onLeaseLost: () => {},
      limit: (_backend, tag, promptTokens) => {
        asked.push([tag, promptTokens]);
        return limitOf(promptTokens);
      },
    });
    const ask = (promptTokens: number) => {
      const result: { lease?: Lease } = {};
      void slots.acquire({ backend: b, priority: 0, tenant: 't', tag: 'interactive', promptTokens }).then((lease) => (result.lease = lease));
      return result;
    };
    const settle = async () => {
      for (let i = 0; i < 20; i++) await Promise.resolve();
    };
    return { clock, slots, ask, settle, asked };
  }

  it('holds waiters while the limit is reached, and admits them when a slot frees or the limit rises', async () => {
    let limit = 2;
    const { clock, slots, ask, settle, asked } = setUp(() => limit);
    const first = ask(100);
    const second = ask(200);
    const third = ask(300);
    await settle();
    expect(first.lease).toBeDefined();
    expect(second.lease).toBeDefined();
    // Two run, under a limit of 2 (of 4 slots): the third waits.
    expect(third.lease).toBeUndefined();
    expect(slots.waiting('b')).toBe(1);
    expect(asked).toContainEqual(['interactive', 300]);
    // The limit rises: the retry admits it without any release.
    limit = 3;
    clock.advance(250);
    await settle();
    expect(third.lease).toBeDefined();
    // At the limit again; a release admits the next waiter.
    const fourth = ask(400);
    await settle();
    expect(fourth.lease).toBeUndefined();
    slots.release(first.lease!);
    await settle();
    expect(fourth.lease).toBeDefined();
  });

  it("asks with each waiter's own prompt, and never beyond maxConcurrency", async () => {
    const { ask, settle, asked } = setUp((promptTokens) => (promptTokens > 1_000 ? 1 : 100));
    const small = [ask(10), ask(20), ask(30), ask(40)];
    const big = ask(5_000);
    const fifth = ask(50);
    await settle();
    for (const s of small) expect(s.lease).toBeDefined();
    // A limit of 100 is still capped at the 4 slots; the long prompt is held to 1 by its own limit.
    expect(big.lease).toBeUndefined();
    expect(fifth.lease).toBeUndefined();
    expect(asked.map(([, p]) => p)).toContain(5_000);
  });
});

describe('the router with a TBT-aware policy', () => {
  // An interactive chat with a ~1,000-token prompt: on a 2×A100 of 64 slots, the prefill of those
  // already sent holds the batch well below 64.
  const body = Buffer.from(JSON.stringify({ model: 'm', messages: [{ role: 'user', content: 'lorem ipsum dolor sit amet '.repeat(150) }] }));
  const call = { endpoint: 'chat.completions' as const, body, header: (n: string) => (n === 'x-freesh-slo' ? 'interactive' : undefined) };
  const pending = Symbol('pending');
  const settledSoon = <T>(p: Promise<T>) => Promise.race([p, new Promise<typeof pending>((resolve) => setTimeout(() => resolve(pending), 50))]);

  async function admitted(policy: string) {
    const r = createRouter({
      sites: [{ id: 's' }],
      backends: [{ id: 'b', site: 's', baseURL: 'http://127.0.0.1:9/v1/', models: ['m'], mode: '2xA100', maxConcurrency: 64 }],
      plan: { enabled: false },
      policy,
      predictor: heuristicPredictor({ p50Tokens: 200, p90Tokens: 400 }),
    });
    const admissions = [];
    let waiting: Promise<unknown> | undefined;
    for (let i = 0; i < 64; i++) {
      const request = r.parse(call);
      const admission = r.admit(request, await r.decide(request));
      const got = await settledSoon(admission);
      if (got === pending) {
        waiting = admission.catch(() => undefined);
        break;
      }
      admissions.push(got);
    }
    return { r, admissions, waiting, promptTokens: r.parse(call).promptTokens };
  }

  it("freesh admits an interactive request only while the batch keeps its TBT; the next waits for a slot", async () => {
    const { r, admissions, waiting, promptTokens } = await admitted('freesh');
    expect(promptTokens).toBeGreaterThan(800);
    expect(admissions.length).toBeGreaterThan(1);
    expect(admissions.length).toBeLessThan(64);
    expect(waiting).toBeDefined();
    // One ends: the waiter is admitted into its slot.
    let admittedLater = false;
    void waiting!.then((a) => (admittedLater = a !== undefined));
    admissions[0]!.complete('completed', 10, 1_000);
    await until(() => admittedLater);
    await r.close();
  });

  it('a baseline admits up to maxConcurrency', async () => {
    const { r, admissions, waiting } = await admitted('least-loaded');
    expect(admissions.length).toBe(64);
    expect(waiting).toBeUndefined();
    await r.close();
  });
});

async function until(condition: () => boolean, timeoutMs = 2_000): Promise<void> {
  const start = Date.now();
  while (!condition()) {
    if (Date.now() - start > timeoutMs) throw new Error('timed out');
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
}
