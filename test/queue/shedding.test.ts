import { describe, expect, it } from 'vitest';
import { FreeshError } from '../../src/errors.js';
import { classQueueShares, DrainRate, MAX_RETRY_AFTER_MS, MIN_RETRY_AFTER_MS, retryAfterMs, UNKNOWN_RETRY_AFTER_MS } from '../../src/queue/shedding.js';
import { DEFAULT_SLO_CLASSES } from '../../src/request/slo.js';
import { VirtualClock } from '../../src/sim/virtual-clock.js';
import { oneSlotRouter } from '../helpers/one-slot-router.js';

describe('drain rate and retry-after estimate', () => {
  it('measures releases per ms, and tells the time the waiting requests take to start at that rate', () => {
    const clock = new VirtualClock();
    const drain = new DrainRate(clock, 5_000);
    expect(drain.perMs()).toBeUndefined();
    expect(retryAfterMs(50, drain)).toBe(UNKNOWN_RETRY_AFTER_MS);
    // 10 slots freed a second, for 20 s.
    for (let i = 0; i < 200; i++) {
      clock.advance(100);
      drain.record();
    }
    expect(drain.perMs()!).toBeCloseTo(0.01, 3);
    expect(retryAfterMs(30, drain)).toBeGreaterThan(2_850);
    expect(retryAfterMs(30, drain)).toBeLessThan(3_150);
    // Early on, the short history is not mistaken for a slow rate: 3 releases 100 ms apart read as ~10 a second.
    const young = new DrainRate(clock, 5_000);
    for (let i = 0; i < 3; i++) {
      clock.advance(100);
      young.record();
    }
    expect(young.perMs()!).toBeGreaterThan(0.008);
    expect(young.perMs()!).toBeLessThan(0.016);
  });

  it('follows a rate that falls, and stays within its bounds', () => {
    const clock = new VirtualClock();
    const drain = new DrainRate(clock, 5_000);
    for (let i = 0; i < 100; i++) {
      clock.advance(10);
      drain.record();
    }
    const fast = retryAfterMs(100, drain);
    expect(fast).toBeGreaterThanOrEqual(MIN_RETRY_AFTER_MS);
    expect(fast).toBeLessThan(1_500);
    // Then one release a second for 30 s: the estimate grows ~100-fold, capped under the SDKs' 60 s.
    for (let i = 0; i < 30; i++) {
      clock.advance(1_000);
      drain.record();
    }
    expect(retryAfterMs(10, drain)).toBeGreaterThan(8_000);
    expect(retryAfterMs(10, drain)).toBeLessThan(12_000);
    expect(retryAfterMs(1_000, drain)).toBe(MAX_RETRY_AFTER_MS);
  });

  it('gives lower-priority classes a smaller share of the queue, never below the floor', () => {
    expect(Object.fromEntries(classQueueShares(DEFAULT_SLO_CLASSES, 0.2, 0.2))).toEqual({ interactive: 1, standard: 0.8, batch: 0.6 });
    expect(Object.fromEntries(classQueueShares({ a: { priority: 5 }, b: { priority: 5 }, c: { priority: 9 }, d: { priority: 20 } }, 0.5, 0.25))).toEqual({
      a: 1,
      b: 1,
      c: 0.5,
      d: 0.25,
    });
    expect(Object.fromEntries(classQueueShares(DEFAULT_SLO_CLASSES, 0, 0.2))).toEqual({ interactive: 1, standard: 1, batch: 1 });
  });
});

describe('load shedding in the router', () => {
  /** Dispatches a request: the error it was refused with, or 'queued' when it was not refused within a second. */
  async function refusalOf(env: ReturnType<typeof oneSlotRouter>, label: string, slo: string): Promise<FreeshError | 'queued'> {
    const pending = env.router.dispatch(env.call(label, { slo }));
    return Promise.race([pending.then(() => 'queued' as const, (err: unknown) => err as FreeshError), new Promise<'queued'>((r) => setTimeout(r, 1_000, 'queued'))]);
  }

  it('sheds batch first (429), then standard; a class at its limit displaces a lower class\'s waiter; a queue full of interactive refuses everyone (503)', async () => {
    const env = oneSlotRouter({ limits: { maxQueueLength: 5 }, fairness: { enabled: false } });
    const statuses = new Map<string, Promise<number>>();
    const queue = async (label: string, slo: string, expectedWaiting: number) => {
      statuses.set(label, env.send(label, { slo }));
      await env.queued(expectedWaiting);
    };
    statuses.set('running', env.send('running', { slo: 'batch' }));
    await env.sent(1);
    // Batch may find ceil(0.6 × 5) = 3 waiting and still queue, standard 4, interactive 5.
    await queue('b1', 'batch', 1);
    await queue('b2', 'batch', 2);
    await queue('b3', 'batch', 3);
    expect(await refusalOf(env, 'b4', 'batch')).toMatchObject({ status: 429, code: 'class_shed', type: 'rate_limit_error' });
    await queue('s1', 'standard', 4);
    // Standard at its limit takes the place of the least urgent batch waiter (the last to come).
    await queue('s2', 'standard', 4);
    expect(await statuses.get('b3')).toBe(429);
    expect(await refusalOf(env, 'b5', 'batch')).toMatchObject({ status: 429, code: 'class_shed' });
    await queue('i1', 'interactive', 5);
    for (const label of ['i2', 'i3', 'i4', 'i5']) await queue(label, 'interactive', 5);
    // Each took a lower class's place, batch's first: b2, b1, then s2, s1.
    expect(await Promise.all(['b2', 'b1', 's2', 's1'].map((l) => statuses.get(l)))).toEqual([429, 429, 429, 429]);
    const full = await refusalOf(env, 'i6', 'interactive');
    expect(full).toMatchObject({ status: 503, code: 'queue_full', type: 'server_error' });
    // Nothing freed yet: no rate to estimate from.
    expect((full as FreeshError).retryAfterMs).toBe(UNKNOWN_RETRY_AFTER_MS);
    expect(await env.router.metrics.registry.metrics()).toMatch(/freesh_requests_total\{[^}]*outcome="rejected-shed"[^}]*\} 7/);

    // The slot frees every 200 ms: the requests waiting then take about a second to start.
    for (let i = 0; i < 2; i++) {
      env.clock.advance(200);
      env.upstream.calls[i]!.complete(5);
      await env.sent(i + 2);
    }
    await env.queued(3);
    env.clock.advance(200);
    const estimated = await refusalOf(env, 'b6', 'batch');
    expect(estimated).toMatchObject({ status: 429, code: 'class_shed' });
    // 3 waiting at ~5 releases a second (2 releases seen 200 ms apart, 200 ms ago): ~0.6 s, well above the floor.
    expect((estimated as FreeshError).retryAfterMs).toBeGreaterThan(400);
    expect((estimated as FreeshError).retryAfterMs).toBeLessThan(900);
    const served = [...statuses].filter(([l]) => !['b1', 'b2', 'b3', 's1', 's2'].includes(l));
    expect(await env.serveAll(served.map(([, p]) => p))).toEqual(served.map(() => 200));
    expect(env.upstream.labels()).toEqual(['running', 'i1', 'i2', 'i3', 'i4', 'i5']);
  });

  it('a client already gone when it reaches its class\'s limit displaces nobody', async () => {
    const env = oneSlotRouter({ limits: { maxQueueLength: 5 }, fairness: { enabled: false } });
    const sends = [env.send('running', { slo: 'batch' })];
    await env.sent(1);
    for (const [i, label] of ['b1', 'b2', 'b3'].entries()) {
      sends.push(env.send(label, { slo: 'batch' }));
      await env.queued(i + 1);
    }
    sends.push(env.send('s1', { slo: 'standard' }));
    await env.queued(4);
    // Standard may find 4 waiting: a live arrival would take b3's place; one whose client left is refused 499.
    const gone = new AbortController();
    gone.abort();
    await expect(env.router.dispatch({ ...env.call('s2', { slo: 'standard' }), signal: gone.signal })).rejects.toMatchObject({ status: 499 });
    await env.queued(4);
    expect(await env.serveAll(sends)).toEqual([200, 200, 200, 200, 200]);
  });

  it('with shareStep 0, every class queues until the queue is full', async () => {
    const env = oneSlotRouter({ limits: { maxQueueLength: 2 }, overload: { shareStep: 0 } });
    const sends = [env.send('running', { slo: 'batch' })];
    await env.sent(1);
    sends.push(env.send('b1', { slo: 'batch' }));
    await env.queued(1);
    sends.push(env.send('b2', { slo: 'batch' }));
    await env.queued(2);
    expect(await refusalOf(env, 'b3', 'batch')).toMatchObject({ status: 503, code: 'queue_full' });
    expect(await env.serveAll(sends)).toEqual([200, 200, 200]);
  });
});
