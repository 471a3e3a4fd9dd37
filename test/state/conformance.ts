import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import type { Lease, PlanRecord, PublishedPlan, StateStore } from '../../src/state/store.js';

/** A store under test, and the means to let its clock run. */
export interface StoreHarness {
  readonly store: StateStore;
  /**
   * Lets `ms` pass on the store's clock: a manual clock moves, a store on real time (Redis) sleeps.
   * The suite only asks "well before" or "well after" an expiry, with margins of 50 ms or more.
   */
  advance(ms: number): Promise<void>;
  /** Closes the store (it may already be closed) and frees whatever the harness made. */
  close(): Promise<void>;
}

/**
 * The `StateStore` contract (src/state/store.ts), run against one implementation: every store calls
 * this once from its own test file with a factory giving a fresh, empty store per test. Durations are
 * tens to hundreds of ms so that a store on real time runs it in seconds.
 */
export function describeStateStore(name: string, make: () => Promise<StoreHarness>): void {
  describe(`StateStore contract: ${name}`, () => {
    let harness: StoreHarness;
    let store: StateStore;

    beforeEach(async () => {
      harness = await make();
      store = harness.store;
    });

    afterEach(async () => {
      await harness.close();
    });

    async function inFlight(backendId: string): Promise<number | undefined> {
      return (await store.snapshot([backendId])).get(backendId)?.inFlight;
    }

    async function byTag(backendId: string): Promise<Record<string, number>> {
      return Object.fromEntries((await store.snapshot([backendId])).get(backendId)?.byTag ?? []);
    }

    async function healthy(backendId: string): Promise<boolean | undefined> {
      return (await store.snapshot([backendId])).get(backendId)?.healthy;
    }

    describe('leases', () => {
      it('grants up to the limit, then refuses', async () => {
        const first = await store.tryAcquire('b', 2, 1_000, 'chat');
        const second = await store.tryAcquire('b', 2, 1_000);
        expect(first).toMatchObject({ backendId: 'b', tag: 'chat' });
        expect(second).toMatchObject({ backendId: 'b', tag: undefined });
        expect(first?.id).not.toBe(second?.id);
        expect(await store.tryAcquire('b', 2, 1_000)).toBeUndefined();
        expect(await inFlight('b')).toBe(2);
      });

      it('grants exactly `limit` of many concurrent acquisitions, each with its own id', async () => {
        const results = await Promise.all(Array.from({ length: 50 }, () => store.tryAcquire('b', 10, 1_000)));
        const granted = results.filter((lease): lease is Lease => lease !== undefined);
        expect(granted).toHaveLength(10);
        expect(new Set(granted.map((lease) => lease.id)).size).toBe(10);
        expect(await inFlight('b')).toBe(10);
      });

      it('keeps the limit of each backend separately', async () => {
        await store.tryAcquire('a', 1, 1_000);
        expect(await store.tryAcquire('a', 1, 1_000)).toBeUndefined();
        expect(await store.tryAcquire('b', 1, 1_000)).toBeDefined();
        const snapshot = await store.snapshot(['a', 'b']);
        expect([snapshot.get('a')?.inFlight, snapshot.get('b')?.inFlight]).toEqual([1, 1]);
      });

      it('frees exactly one slot per release', async () => {
        const leases = await Promise.all([1, 2, 3].map(() => store.tryAcquire('b', 3, 1_000)));
        await store.release(leases[0]!);
        expect(await inFlight('b')).toBe(2);
        expect(await store.tryAcquire('b', 3, 1_000)).toBeDefined();
        expect(await store.tryAcquire('b', 3, 1_000)).toBeUndefined();
      });

      it('ignores a second release and the release of a lease it never granted', async () => {
        const lease = (await store.tryAcquire('b', 5, 1_000, 'chat'))!;
        await store.tryAcquire('b', 5, 1_000, 'chat');
        await store.release(lease);
        await store.release(lease);
        await store.release({ id: 'never-granted', backendId: 'b', tag: 'chat' });
        expect(await inFlight('b')).toBe(1);
        expect(await byTag('b')).toEqual({ chat: 1 });
      });

      it('frees the slot of a holder that died once the lease expires, not before', async () => {
        await store.tryAcquire('b', 1, 200, 'batch');
        await harness.advance(100);
        expect(await store.tryAcquire('b', 1, 200)).toBeUndefined();
        await harness.advance(300);
        expect(await store.tryAcquire('b', 1, 200)).toBeDefined();
        expect(await inFlight('b')).toBe(1);
      });

      it('keeps a renewed lease past its original TTL, until the renewal runs out', async () => {
        const lease = (await store.tryAcquire('b', 1, 200))!;
        await harness.advance(100);
        expect(await store.renew(lease, 400)).toBe(true);
        await harness.advance(200); // 100 ms past the original expiry, 200 ms before the renewed one
        expect(await inFlight('b')).toBe(1);
        expect(await store.tryAcquire('b', 1, 200)).toBeUndefined();
        await harness.advance(400);
        expect(await inFlight('b')).toBe(0);
        expect(await store.renew(lease, 400)).toBe(false);
      });

      it('refuses to renew an expired lease, and the slot stays free', async () => {
        const lease = (await store.tryAcquire('b', 1, 200, 'chat'))!;
        await harness.advance(400);
        expect(await store.renew(lease, 1_000)).toBe(false);
        expect(await inFlight('b')).toBe(0);
        expect(await byTag('b')).toEqual({});
        expect(await store.tryAcquire('b', 1, 1_000)).toBeDefined();
      });

      it('refuses to renew a released lease or one it never granted', async () => {
        const lease = (await store.tryAcquire('b', 1, 1_000))!;
        await store.release(lease);
        expect(await store.renew(lease, 1_000)).toBe(false);
        expect(await store.renew({ id: 'never-granted', backendId: 'b', tag: undefined }, 1_000)).toBe(false);
        expect(await inFlight('b')).toBe(0);
      });
    });

    describe('snapshots', () => {
      it('reports a backend it has never seen as healthy with nothing in flight', async () => {
        const snapshot = await store.snapshot(['never-seen']);
        expect(snapshot.get('never-seen')).toMatchObject({ inFlight: 0, healthy: true });
        expect(snapshot.get('never-seen')?.byTag.size).toBe(0);
      });

      it('answers for every backend asked, and for no other', async () => {
        await store.tryAcquire('c', 1, 1_000);
        expect([...(await store.snapshot(['a', 'b'])).keys()].sort()).toEqual(['a', 'b']);
        expect((await store.snapshot([])).size).toBe(0);
      });

      it('counts tagged leases per tag and backend, and forgets them on release and on expiry', async () => {
        const interactive = (await store.tryAcquire('a', 10, 1_000, 'interactive'))!;
        await store.tryAcquire('a', 10, 1_000, 'interactive');
        await store.tryAcquire('a', 10, 200, 'batch');
        await store.tryAcquire('a', 10, 1_000);
        await store.tryAcquire('b', 10, 1_000, 'batch');
        expect(await byTag('a')).toEqual({ interactive: 2, batch: 1 });
        expect(await byTag('b')).toEqual({ batch: 1 });
        expect(await inFlight('a')).toBe(4);

        await store.release(interactive);
        expect(await byTag('a')).toEqual({ interactive: 1, batch: 1 });
        await harness.advance(400);
        expect(await byTag('a')).toEqual({ interactive: 1 });
        expect(await byTag('b')).toEqual({ batch: 1 });
        expect(await inFlight('a')).toBe(2);
      });

      it('is a copy: later changes do not alter a snapshot already taken', async () => {
        const lease = (await store.tryAcquire('b', 1, 1_000, 'chat'))!;
        const before = await store.snapshot(['b']);
        await store.release(lease);
        await store.markUnhealthy('b', 1_000);
        expect(before.get('b')?.inFlight).toBe(1);
        expect(before.get('b')?.healthy).toBe(true);
        expect(Object.fromEntries(before.get('b')?.byTag ?? [])).toEqual({ chat: 1 });
      });
    });

    describe('health', () => {
      it('takes a backend out of rotation for the time given', async () => {
        await store.markUnhealthy('b', 200);
        expect(await healthy('b')).toBe(false);
        expect(await healthy('other')).toBe(true);
        await harness.advance(100);
        expect(await healthy('b')).toBe(false);
        await harness.advance(300);
        expect(await healthy('b')).toBe(true);
      });

      it('extends a mark with one that ends later, and keeps it when a later mark ends sooner', async () => {
        await store.markUnhealthy('b', 200);
        await harness.advance(50);
        await store.markUnhealthy('b', 600); // now ends 650 ms in
        await harness.advance(350);
        expect(await healthy('b')).toBe(false); // 400 ms in: past the first mark
        await store.markUnhealthy('b', 50); // would end 450 ms in
        await harness.advance(150);
        expect(await healthy('b')).toBe(false); // 550 ms in
        await harness.advance(500);
        expect(await healthy('b')).toBe(true);
      });

      it('puts a backend back in rotation at once when marked healthy', async () => {
        await store.markUnhealthy('b', 10_000);
        await store.markHealthy('b');
        expect(await healthy('b')).toBe(true);
        await store.markHealthy('never-marked');
        expect(await healthy('never-marked')).toBe(true);
      });
    });

    describe('leases on other resources', () => {
      it('caps any id like a backend, apart from the backends (the gateway caps keys and tenants this way)', async () => {
        const held = await store.tryAcquire('limit:key:alice', 1, 1_000);
        expect(held).toBeDefined();
        expect(await store.tryAcquire('limit:key:alice', 1, 1_000)).toBeUndefined();
        expect(await store.tryAcquire('limit:tenant:acme', 1, 1_000)).toBeDefined();
        expect(await inFlight('b')).toBe(0);
        await store.release(held!);
        expect(await store.tryAcquire('limit:key:alice', 1, 1_000)).toBeDefined();
      });

      it('frees the slot of a holder that stops renewing once its lease expires', async () => {
        expect(await store.tryAcquire('limit:key:alice', 1, 200)).toBeDefined();
        expect(await store.tryAcquire('limit:key:alice', 1, 200)).toBeUndefined();
        await harness.advance(300);
        expect(await store.tryAcquire('limit:key:alice', 1, 200)).toBeDefined();
      });
    });

    describe('token buckets', () => {
      // Slow refills (1 per 10 s) keep the real time a test takes out of the levels, but for ±0.1.
      const slow = (key: string, capacity: number, amount: number) => ({ key, capacity, perSecond: 0.1, amount });

      it('starts full, grants while a bucket holds the amount, then refuses and changes nothing', async () => {
        const first = await store.takeTokens('rl', [slow('k', 5, 3)]);
        expect(first.granted).toBe(true);
        expect(first.retryInMs).toBe(0);
        expect(first.levels[0]).toBeCloseTo(2, 0);
        const refused = await store.takeTokens('rl', [slow('k', 5, 3)]);
        expect(refused.granted).toBe(false);
        expect(refused.levels[0]).toBeCloseTo(2, 0);
        // One token short at 0.1 per second: about 10 s.
        expect(refused.retryInMs).toBeGreaterThan(8_000);
        expect(refused.retryInMs).toBeLessThanOrEqual(10_000);
        expect((await store.takeTokens('rl', [slow('k', 5, 2)])).granted).toBe(true);
      });

      it('takes from every bucket of a call or from none', async () => {
        await store.takeTokens('rl', [slow('tenant', 10, 9)]);
        const refused = await store.takeTokens('rl', [slow('key', 10, 2), slow('tenant', 10, 2)]);
        expect(refused.granted).toBe(false);
        expect(refused.levels[0]).toBe(10);
        const granted = await store.takeTokens('rl', [slow('key', 10, 1), slow('tenant', 10, 1)]);
        expect(granted.granted).toBe(true);
        expect(granted.levels[0]).toBeCloseTo(9, 0);
        expect(granted.levels[1]).toBeLessThan(1);
      });

      it('refills at `perSecond` by the store\'s clock, up to the capacity', async () => {
        const fast = { key: 'k', capacity: 10, perSecond: 20 };
        expect((await store.takeTokens('rl', [{ ...fast, amount: 10 }])).granted).toBe(true);
        expect((await store.takeTokens('rl', [{ ...fast, amount: 2 }])).granted).toBe(false);
        await harness.advance(250); // 5 tokens back
        const after = await store.takeTokens('rl', [{ ...fast, amount: 4 }]);
        expect(after.granted).toBe(true);
        expect(after.levels[0]).toBeGreaterThanOrEqual(0.9);
        await harness.advance(1_000); // far more than the room left
        expect((await store.takeTokens('rl', [{ ...fast, amount: 0 }])).levels[0]).toBe(10);
      });

      it('grants an amount above the capacity from a full bucket, leaving it in debt', async () => {
        const big = await store.takeTokens('rl', [slow('k', 5, 8)]);
        expect(big.granted).toBe(true);
        expect(big.levels[0]).toBeCloseTo(-3, 0);
        const refused = await store.takeTokens('rl', [slow('k', 5, 8)]);
        expect(refused.granted).toBe(false);
        expect(refused.retryInMs).toBeGreaterThan(70_000); // 8 tokens at 0.1/s
      });

      it('with `force` applies every amount whatever the levels, between -capacity and capacity', async () => {
        await store.takeTokens('rl', [slow('k', 5, 5)]);
        const debt = await store.takeTokens('rl', [slow('k', 5, 100)], true);
        expect(debt.granted).toBe(true);
        expect(debt.levels[0]).toBe(-5);
        const back = await store.takeTokens('rl', [slow('k', 5, -3)], true);
        expect(back.levels[0]).toBeCloseTo(-2, 0);
        expect((await store.takeTokens('rl', [slow('k', 5, -100)], true)).levels[0]).toBe(5);
      });

      it('grants exactly what a bucket holds among many concurrent takes', async () => {
        const results = await Promise.all(Array.from({ length: 50 }, () => store.takeTokens('rl', [slow('k', 20, 1)])));
        expect(results.filter((r) => r.granted)).toHaveLength(20);
      });

      it('keeps named sets and keys apart', async () => {
        await store.takeTokens('rl', [slow('k', 5, 5)]);
        expect((await store.takeTokens('rl', [slow('other', 5, 5)])).granted).toBe(true);
        expect((await store.takeTokens('other-set', [slow('k', 5, 5)])).granted).toBe(true);
        expect((await store.takeTokens('rl', [slow('k', 5, 1)])).granted).toBe(false);
      });

      it('rejects a bucket without a positive capacity or rate, or a non-finite amount', async () => {
        await expect(store.takeTokens('rl', [slow('k', 0, 1)])).rejects.toThrow(RangeError);
        await expect(store.takeTokens('rl', [{ key: 'k', capacity: 5, perSecond: 0, amount: 1 }])).rejects.toThrow(RangeError);
        await expect(store.takeTokens('rl', [slow('k', 5, Number.NaN)])).rejects.toThrow(RangeError);
      });
    });

    describe('counters', () => {
      it('starts a missing key at 0, adds, and resolves with the new values of the keys updated', async () => {
        await store.updateCounters('tokens', [{ key: 'other', add: 1 }]);
        const updated = await store.updateCounters('tokens', [{ key: 'alice', add: 5 }, { key: 'bob' }]);
        expect(Object.fromEntries(updated)).toEqual({ alice: 5, bob: 0 });
        expect(Object.fromEntries(await store.updateCounters('tokens', [{ key: 'alice', add: -7 }]))).toEqual({ alice: -2 });
        expect(Object.fromEntries(await store.readCounters('tokens'))).toEqual({ alice: -2, bob: 0, other: 1 });
      });

      it('adds first, then raises the value to at least `atLeast` and `floor`', async () => {
        await store.updateCounters('tokens', [{ key: 'a', add: 10 }]);
        const updated = await store.updateCounters('tokens', [
          { key: 'a', add: 5, atLeast: 12 }, // 15
          { key: 'b', add: 5, atLeast: 12 }, // 12
          { key: 'c', add: 30, atLeast: 12, floor: 20 }, // 30
          { key: 'd', add: -10, floor: 3 }, // 3
          { key: 'e', atLeast: 4, floor: 9 }, // 9
        ]);
        expect(Object.fromEntries(updated)).toEqual({ a: 15, b: 12, c: 30, d: 3, e: 9 });
      });

      it('applies the updates of one call in order', async () => {
        const updated = await store.updateCounters('tokens', [
          { key: 'a', add: 5 },
          { key: 'a', add: -10, floor: 0 },
          { key: 'a', add: 2 },
        ]);
        expect(Object.fromEntries(updated)).toEqual({ a: 2 });
      });

      it('loses no update among many concurrent ones', async () => {
        await Promise.all(Array.from({ length: 50 }, () => store.updateCounters('tokens', [{ key: 'a', add: 1 }])));
        expect((await store.readCounters('tokens')).get('a')).toBe(50);
      });

      it('keeps named sets apart, deletes keys, and reads an unknown set as empty', async () => {
        await store.updateCounters('tokens', [{ key: 'a', add: 1 }, { key: 'b', add: 2 }]);
        await store.updateCounters('other', [{ key: 'a', add: 7 }]);
        await store.deleteCounters('tokens', ['a', 'missing']);
        await store.deleteCounters('unknown', ['a']);
        expect(Object.fromEntries(await store.readCounters('tokens'))).toEqual({ b: 2 });
        expect(Object.fromEntries(await store.readCounters('other'))).toEqual({ a: 7 });
        expect((await store.readCounters('unknown')).size).toBe(0);
        expect(Object.fromEntries(await store.updateCounters('tokens', [{ key: 'a', add: 1 }]))).toEqual({ a: 1 });
      });
    });

    describe('rates', () => {
      const tauMs = 200;

      it('decays an amount to about 1/e of its reading after τ', async () => {
        await store.addRates('prefill', new Map([['b', 10]]), tauMs);
        const fresh = (await store.readRates('prefill', tauMs)).get('b')!;
        // 10 over τ = 0.2 s reads 50 per second, less what decays before the read.
        expect(fresh).toBeLessThanOrEqual(50 * (1 + 1e-9));
        expect(fresh).toBeGreaterThan(45);
        await harness.advance(tauMs);
        const later = (await store.readRates('prefill', tauMs)).get('b')!;
        expect(later / fresh).toBeGreaterThan(Math.exp(-1.3));
        expect(later / fresh).toBeLessThan(Math.exp(-0.9));
      });

      it('reads a steady stream of r per second as about r', async () => {
        const stepMs = 20;
        const perSecond = 50;
        let lastMs = performance.now();
        for (let elapsedMs = 0; elapsedMs < 5 * tauMs; elapsedMs += stepMs) {
          await harness.advance(stepMs);
          // A store on real time sees a step last longer than asked (timer slop, round trips): add
          // what r per second comes to over the time that really passed, so the stream stays at r.
          const nowMs = performance.now();
          const passedMs = Math.max(stepMs, nowMs - lastMs);
          lastMs = nowMs;
          await store.addRates('prefill', new Map([['b', (perSecond * passedMs) / 1_000]]), tauMs);
        }
        // Read just after an add, discrete adds every 0.1 τ read about 5% above r; the rest is slack.
        const rate = (await store.readRates('prefill', tauMs)).get('b')!;
        expect(rate).toBeGreaterThan(perSecond * 0.85);
        expect(rate).toBeLessThan(perSecond * 1.2);
      });

      it('sums amounts per key, keeps keys and named sets apart, and reads an unknown set as empty', async () => {
        await store.addRates('prefill', new Map([['a', 1], ['b', 3]]), tauMs);
        await store.addRates('prefill', new Map([['a', 2]]), tauMs);
        await store.addRates('decode', new Map([['a', 100]]), tauMs);
        const rates = await store.readRates('prefill', tauMs);
        // Both hold 3 in all; b's decayed a little longer on a store on real time.
        expect(rates.get('a')! / rates.get('b')!).toBeGreaterThanOrEqual(1 - 1e-9);
        expect(rates.get('a')! / rates.get('b')!).toBeLessThan(1.05);
        expect(rates.get('a')).toBeGreaterThan(13);
        expect(rates.get('a')).toBeLessThanOrEqual(15 * (1 + 1e-9));
        expect((await store.readRates('decode', tauMs)).get('a')).toBeGreaterThan(450);
        expect((await store.readRates('unknown', tauMs)).size).toBe(0);
      });
    });

    describe('gauges', () => {
      it('keeps the last value written per key, keeps sets apart, and reads an unknown set as empty', async () => {
        await store.setGauges('latency-factor', new Map([['a', 1.5], ['b', 0.5]]));
        await store.setGauges('latency-factor', new Map([['a', 2]]));
        await store.setGauges('other', new Map([['a', 9]]));
        expect(Object.fromEntries(await store.readGauges('latency-factor'))).toEqual({ a: 2, b: 0.5 });
        expect(Object.fromEntries(await store.readGauges('other'))).toEqual({ a: 9 });
        expect((await store.readGauges('unknown')).size).toBe(0);
      });
    });

    describe('leadership', () => {
      it('grants a role to one holder at a time, even among concurrent attempts', async () => {
        const granted = await Promise.all(Array.from({ length: 20 }, (_, i) => store.tryLead('planner', `r${i}`, 1_000)));
        expect(granted.filter(Boolean)).toHaveLength(1);
        const winner = `r${granted.indexOf(true)}`;
        expect(await store.tryLead('planner', winner, 1_000)).toBe(true);
        expect(await store.tryLead('planner', winner === 'r0' ? 'r1' : 'r0', 1_000)).toBe(false);
      });

      it('lets the holder renew past the original TTL, then passes the role on once the lease runs out', async () => {
        expect(await store.tryLead('planner', 'a', 200)).toBe(true);
        await harness.advance(100);
        expect(await store.tryLead('planner', 'a', 400)).toBe(true);
        await harness.advance(200); // past the first lease, within the renewed one
        expect(await store.tryLead('planner', 'b', 200)).toBe(false);
        await harness.advance(400);
        expect(await store.tryLead('planner', 'b', 1_000)).toBe(true);
        expect(await store.tryLead('planner', 'a', 1_000)).toBe(false);
      });

      it('gives the role up only when its holder resigns', async () => {
        await store.tryLead('planner', 'a', 10_000);
        await store.resign('planner', 'b');
        await store.resign('never-held', 'a');
        expect(await store.tryLead('planner', 'b', 10_000)).toBe(false);
        await store.resign('planner', 'a');
        expect(await store.tryLead('planner', 'b', 10_000)).toBe(true);
      });

      it('keeps roles apart', async () => {
        expect(await store.tryLead('planner', 'a', 10_000)).toBe(true);
        expect(await store.tryLead('calibrator', 'b', 10_000)).toBe(true);
      });
    });

    describe('plans', () => {
      it('has no plan before the first is published', async () => {
        expect(await store.readPlan()).toBeUndefined();
      });

      it('gives each published plan a higher version, and reads back the latest', async () => {
        const first = await store.publishPlan(plan('r1'));
        const second = await store.publishPlan(plan('r2', 'degraded'));
        expect(second).toBeGreaterThan(first);
        expect(await store.readPlan()).toEqual({ ...plan('r2', 'degraded'), version: second });
      });

      it('carries a plan’s GPU pool partition and per-step forecast to readers and watchers', async () => {
        const pools = {
          status: 'infeasible' as const,
          gramsCO2: -12.5,
          allocation: [{ site: 'fr', type: 'SS', mode: '4xA100', instances: 2 }],
          shortfallQps: 0.75,
          windowSteps: 2,
          stepMs: 300_000,
        };
        const record = { ...plan('r1'), pools, stepForecastRps: [{ SS: 1 }, { SS: 2.5 }] };
        const watched: unknown[] = [];
        store.watchPlans((published) => watched.push(published.pools));
        const version = await store.publishPlan(record);
        expect(await store.readPlan()).toEqual({ ...record, version });
        await until(() => watched.length > 0, 'the plan is delivered');
        expect(watched.at(-1)).toEqual(pools);
      });

      it('keeps the plan as published when the publisher later changes its object', async () => {
        const record = { ...plan('r1'), active: ['a'], shares: { chat: { a: 1 } } };
        const version = await store.publishPlan(record);
        record.active.push('b');
        record.shares.chat.a = 0;
        expect(await store.readPlan()).toEqual({ ...plan('r1'), active: ['a'], shares: { chat: { a: 1 } }, version });
      });

      it('delivers plans published after the watch began, in order, ending with the latest, and none before', async () => {
        const delivered: number[] = [];
        store.watchPlans((published) => delivered.push(published.version));
        const before = await store.publishPlan(plan('r1'));
        await until(() => delivered.includes(before), 'the first plan is delivered');

        const received: PublishedPlan[] = [];
        store.watchPlans((published) => received.push(published));
        await store.publishPlan(plan('r2'));
        const latest = await store.publishPlan(plan('r3', 'degraded'));
        await until(() => received.at(-1)?.version === latest, 'the latest plan is delivered');
        const versions = received.map((published) => published.version);
        expect(versions.every((version) => version > before)).toBe(true);
        expect(versions).toEqual([...versions].sort((a, b) => a - b));
        expect(new Set(versions).size).toBe(versions.length);
        expect(received.at(-1)).toEqual({ ...plan('r3', 'degraded'), version: latest });
      });

      it('never calls a listener from inside publishPlan', async () => {
        const received: PublishedPlan[] = [];
        store.watchPlans((published) => received.push(published));
        const publishing = store.publishPlan(plan('r1'));
        expect(received).toHaveLength(0);
        const version = await publishing;
        await until(() => received.length === 1, 'the plan is delivered');
        expect(received[0]?.version).toBe(version);
      });

      it('stops calling a listener once it unsubscribes', async () => {
        const stopped: number[] = [];
        const kept: number[] = [];
        const stop = store.watchPlans((published) => stopped.push(published.version));
        store.watchPlans((published) => kept.push(published.version));
        const first = await store.publishPlan(plan('r1'));
        await until(() => stopped.includes(first) && kept.includes(first), 'both listeners see the first plan');
        stop();
        stop();
        const second = await store.publishPlan(plan('r2'));
        await until(() => kept.includes(second), 'the remaining listener sees the second plan');
        expect(stopped).toEqual([first]);
      });

      it('still calls the other listeners when one throws', async () => {
        const received: number[] = [];
        store.watchPlans(() => {
          throw new Error('a faulty listener');
        });
        store.watchPlans((published) => received.push(published.version));
        const first = await store.publishPlan(plan('r1'));
        const second = await store.publishPlan(plan('r2'));
        await until(() => received.includes(second), 'the second plan is delivered');
        expect(received[0]).toBe(first);
      });
    });

    describe('telemetry', () => {
      it('reads nothing before anything is stored', async () => {
        expect(await store.readTelemetry()).toEqual([]);
      });

      it('keeps one record per source, with its age growing on the store clock', async () => {
        await store.putTelemetry({ source: 'node1/gpu0', kind: 'gpu', backendId: 'a', values: { powerW: 300 } }, 1_000);
        await store.putTelemetry({ source: 'replica-1', kind: 'slo', values: { ttftP95Ms: 180 } }, 1_000);
        const fresh = await store.readTelemetry();
        expect(sortBySource(fresh)).toMatchObject([
          { source: 'node1/gpu0', kind: 'gpu', backendId: 'a', values: { powerW: 300 } },
          { source: 'replica-1', kind: 'slo', values: { ttftP95Ms: 180 } },
        ]);
        for (const record of fresh) {
          expect(record.ageMs).toBeGreaterThanOrEqual(0);
          expect(record.ageMs).toBeLessThan(100);
        }
        await harness.advance(200);
        for (const record of await store.readTelemetry()) {
          expect(record.ageMs).toBeGreaterThanOrEqual(180);
          expect(record.ageMs).toBeLessThan(1_000);
        }
      });

      it("replaces a source's previous record, and its age starts again", async () => {
        await store.putTelemetry({ source: 'node1/gpu0', kind: 'gpu', values: { powerW: 300 } }, 1_000);
        await harness.advance(200);
        await store.putTelemetry({ source: 'node1/gpu0', kind: 'gpu', values: { powerW: 250, smClockMHz: 1_410 } }, 1_000);
        const records = await store.readTelemetry();
        expect(records).toHaveLength(1);
        expect(records[0]?.values).toEqual({ powerW: 250, smClockMHz: 1_410 });
        expect(records[0]?.ageMs).toBeLessThan(100);
      });

      it('drops each record once its own TTL has passed', async () => {
        await store.putTelemetry({ source: 'short', kind: 'gpu', values: { powerW: 1 } }, 200);
        await store.putTelemetry({ source: 'long', kind: 'gpu', values: { powerW: 2 } }, 1_000);
        await harness.advance(400);
        expect((await store.readTelemetry()).map((record) => record.source)).toEqual(['long']);
        await harness.advance(800);
        expect(await store.readTelemetry()).toEqual([]);
      });
    });

    describe('lifecycle', () => {
      it('answers every call with a promise', async () => {
        const lease: Lease = { id: 'never-granted', backendId: 'b', tag: undefined };
        const calls: Promise<unknown>[] = [
          store.tryAcquire('b', 1, 1_000),
          store.renew(lease, 1_000),
          store.release(lease),
          store.snapshot(['b']),
          store.markUnhealthy('b', 100),
          store.markHealthy('b'),
          store.updateCounters('c', [{ key: 'a', add: 1 }]),
          store.readCounters('c'),
          store.deleteCounters('c', ['a']),
          store.addRates('r', new Map([['a', 1]]), 1_000),
          store.readRates('r', 1_000),
          store.setGauges('g', new Map([['a', 1]])),
          store.readGauges('g'),
          store.tryLead('planner', 'a', 1_000),
          store.resign('planner', 'a'),
          store.publishPlan(plan('r1')),
          store.readPlan(),
          store.putTelemetry({ source: 's', kind: 'gpu', values: {} }, 1_000),
          store.readTelemetry(),
        ];
        for (const call of calls) expect(call).toBeInstanceOf(Promise);
        await Promise.all(calls);
      });

      it('closes, and closing again is harmless', async () => {
        store.watchPlans(() => undefined);
        await store.close();
        await store.close();
      });
    });
  });
}

function plan(origin: string, status = 'ok'): PlanRecord {
  return {
    origin,
    status,
    active: ['a', 'b'],
    clockFraction: { a: 0.8, b: 1 },
    shares: { chat: { a: 0.25, b: 0.75 } },
    forecastRps: { chat: 1.5 },
    objectiveRate: 0.1,
    note: 'test plan',
  };
}

function sortBySource<T extends { readonly source: string }>(records: readonly T[]): T[] {
  return [...records].sort((x, y) => x.source.localeCompare(y.source));
}

/** Plan delivery is asynchronous (a remote store's takes a round trip), so wait for it on real time. */
async function until(condition: () => boolean, what: string, timeoutMs = 2_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!condition()) {
    if (Date.now() > deadline) throw new Error(`Timed out waiting until ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 1));
  }
}
