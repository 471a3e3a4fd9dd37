import { afterEach, describe, expect, it, vi } from 'vitest';
import { VirtualClock } from '../../src/sim/virtual-clock.js';
import { MemoryStateStore } from '../../src/state/memory-store.js';
import type { Lease, PlanRecord, PublishedPlan } from '../../src/state/store.js';
import { describeStateStore } from './conformance.js';

describeStateStore('MemoryStateStore', async () => {
  const clock = new VirtualClock();
  const store = new MemoryStateStore({ clock, onListenerError: () => undefined });
  return {
    store,
    advance: async (ms) => clock.advance(ms),
    close: () => store.close(),
  };
});

const PLAN: PlanRecord = {
  origin: 'r1',
  status: 'ok',
  active: ['a'],
  clockFraction: { a: 1 },
  shares: { chat: { a: 1 } },
  forecastRps: { chat: 1 },
  objectiveRate: 1,
  note: '',
};

function setUp(): { clock: VirtualClock; store: MemoryStateStore } {
  const clock = new VirtualClock();
  return { clock, store: new MemoryStateStore({ clock, onListenerError: () => undefined }) };
}

async function inFlight(store: MemoryStateStore, backendId: string): Promise<number | undefined> {
  return (await store.snapshot([backendId])).get(backendId)?.inFlight;
}

/** Lets queued microtasks (plan deliveries) run. */
function settle(): Promise<void> {
  return new Promise((resolve) => setImmediate(resolve));
}

describe('MemoryStateStore', () => {
  afterEach(() => {
    vi.restoreAllMocks();
  });

  describe('leases on the injected clock', () => {
    it('holds a lease until exactly its TTL has passed', async () => {
      const { clock, store } = setUp();
      await store.tryAcquire('b', 1, 100);
      clock.advance(99);
      expect(await inFlight(store, 'b')).toBe(1);
      expect(await store.tryAcquire('b', 1, 100)).toBeUndefined();
      clock.advance(1);
      expect(await store.tryAcquire('b', 1, 100)).toBeDefined();
    });

    it('expires a lease renewed to a shorter TTL at the new, earlier time', async () => {
      const { clock, store } = setUp();
      const lease = (await store.tryAcquire('b', 1, 1_000))!;
      expect(await store.renew(lease, 100)).toBe(true);
      clock.advance(100);
      expect(await inFlight(store, 'b')).toBe(0);
      expect(await store.tryAcquire('b', 1, 1_000)).toBeDefined();
    });

    it('keeps a lease renewed many times until its last renewal runs out', async () => {
      const { clock, store } = setUp();
      const lease = (await store.tryAcquire('b', 1, 100))!;
      for (let i = 0; i < 50; i++) {
        clock.advance(60);
        expect(await store.renew(lease, i % 2 === 0 ? 100 : 300)).toBe(true);
        expect(await inFlight(store, 'b')).toBe(1);
      }
      clock.advance(299); // the last renewal was for 300 ms
      expect(await inFlight(store, 'b')).toBe(1);
      clock.advance(1);
      expect(await inFlight(store, 'b')).toBe(0);
    });

    it('counts a lease that expired unswept only once, whether it is then released or renewed', async () => {
      const { clock, store } = setUp();
      const released = (await store.tryAcquire('b', 5, 100, 'chat'))!;
      const renewed = (await store.tryAcquire('b', 5, 100, 'chat'))!;
      await store.tryAcquire('b', 5, 1_000, 'chat');
      clock.advance(200);
      await store.release(released);
      expect(await store.renew(renewed, 1_000)).toBe(false);
      const snapshot = (await store.snapshot(['b'])).get('b');
      expect(snapshot?.inFlight).toBe(1);
      expect(Object.fromEntries(snapshot?.byTag ?? [])).toEqual({ chat: 1 });
    });

    it('sweeps many expired leases and keeps counting right through heavy churn', async () => {
      const { clock, store } = setUp();
      const backends = Array.from({ length: 100 }, (_, i) => `b${i}`);
      for (let i = 0; i < 10_000; i++) await store.tryAcquire(backends[i % 100]!, 1_000, 100 + (i % 7));
      expect((await store.snapshot(backends)).get('b3')?.inFlight).toBe(100);

      // Released leases and shortened renewals leave stale heap entries behind; counts stay right.
      const held: Lease[] = [];
      for (let i = 0; i < 20_000; i++) {
        const lease = (await store.tryAcquire(backends[i % 100]!, 1_000, 10_000))!;
        if (i % 10 === 0) held.push(lease);
        else if (i % 10 === 1) await store.renew(lease, 50);
        else await store.release(lease);
      }
      // i % 100 fixes i % 10: b0, b10… hold theirs, b1, b11… renewed theirs short, the rest released.
      const before = await store.snapshot(['b0', 'b1', 'b2']);
      expect([...before.values()].map((backend) => backend.inFlight)).toEqual([300, 300, 100]);

      clock.advance(200); // the first 10,000 and the shortened renewals expire
      const snapshot = await store.snapshot(backends);
      expect([snapshot.get('b0')?.inFlight, snapshot.get('b1')?.inFlight, snapshot.get('b2')?.inFlight]).toEqual([200, 0, 0]);
      expect(backends.reduce((sum, id) => sum + (snapshot.get(id)?.inFlight ?? 0), 0)).toBe(held.length);
      for (const lease of held) await store.release(lease);
      expect([...(await store.snapshot(backends)).values()].every((backend) => backend.inFlight === 0)).toBe(true);
    });
  });

  describe('rates on the injected clock', () => {
    it('decays exactly by exp(−Δt/τ), with τ taken from each call', async () => {
      const { clock, store } = setUp();
      await store.addRates('prefill', new Map([['b', 10]]), 1_000);
      expect((await store.readRates('prefill', 1_000)).get('b')).toBeCloseTo(10, 12);
      clock.advance(1_000);
      expect((await store.readRates('prefill', 1_000)).get('b')).toBeCloseTo(10 / Math.E, 12);
      expect((await store.readRates('prefill', 500)).get('b')).toBeCloseTo((10 * Math.exp(-2) * 1_000) / 500, 12);
    });

    it('reads a steady stream of r per second as r, up to the discreteness of the adds', async () => {
      const { clock, store } = setUp();
      const adds = 1_000;
      for (let i = 0; i < adds; i++) {
        if (i > 0) clock.advance(10);
        await store.addRates('prefill', new Map([['b', 1]]), 1_000);
      }
      // One unit every 10 ms is 100 per second. Just after an add, the decayed sum of n adds reads
      // r·x/(1 − e^−x)·(1 − e^−nx) with x = Δt/τ = 0.01: slightly above r, by the discreteness.
      const x = 10 / 1_000;
      const expected = ((100 * x) / (1 - Math.exp(-x))) * (1 - Math.exp(-adds * x));
      expect((await store.readRates('prefill', 1_000)).get('b')).toBeCloseTo(expected, 6);
    });
  });

  describe('plans', () => {
    it('hands every reader the same frozen plan', async () => {
      const { store } = setUp();
      await store.publishPlan(PLAN);
      const plan = (await store.readPlan())!;
      expect(Object.isFrozen(plan)).toBe(true);
      expect(Object.isFrozen(plan.shares['chat'])).toBe(true);
      expect(await store.readPlan()).toBe(plan);
    });

    it('drops a pending delivery when the listener unsubscribes or the store closes first', async () => {
      const { store } = setUp();
      const unsubscribed: PublishedPlan[] = [];
      const closed: PublishedPlan[] = [];
      const stop = store.watchPlans((plan) => unsubscribed.push(plan));
      store.watchPlans((plan) => closed.push(plan));
      const publishing = store.publishPlan(PLAN);
      stop();
      await store.close();
      await publishing;
      await settle();
      expect([unsubscribed, closed]).toEqual([[], []]);
    });

    it('does not deliver a plan to a listener that started watching after it was published', async () => {
      const { store } = setUp();
      store.watchPlans(() => undefined);
      void store.publishPlan(PLAN);
      const late: PublishedPlan[] = [];
      store.watchPlans((plan) => late.push(plan));
      await settle();
      expect(late).toEqual([]);
    });

    it("reports a listener's error to `onListenerError`, and by default as a process warning", async () => {
      const errors: unknown[] = [];
      const store = new MemoryStateStore({ onListenerError: (error) => errors.push(error) });
      const failure = new Error('a faulty listener');
      store.watchPlans(() => {
        throw failure;
      });
      await store.publishPlan(PLAN);
      await settle();
      expect(errors).toEqual([failure]);

      const warn = vi.spyOn(process, 'emitWarning').mockImplementation(() => undefined);
      const quiet = new MemoryStateStore();
      quiet.watchPlans(() => {
        throw failure;
      });
      await quiet.publishPlan(PLAN);
      await settle();
      expect(warn).toHaveBeenCalledWith(failure, { code: 'FREESH_PLAN_LISTENER' });
    });
  });

  it('measures telemetry ages on the injected clock', async () => {
    const { clock, store } = setUp();
    await store.putTelemetry({ source: 'gpu0', kind: 'gpu', values: { powerW: 300 } }, 100);
    clock.advance(40);
    expect((await store.readTelemetry())[0]?.ageMs).toBe(40);
    clock.advance(60);
    expect(await store.readTelemetry()).toEqual([]);
  });

  it('clears everything on close, and keeps plan versions increasing after it', async () => {
    const { store } = setUp();
    const lease = (await store.tryAcquire('b', 1, 1_000, 'chat'))!;
    await store.markUnhealthy('b', 1_000);
    await store.updateCounters('c', [{ key: 'a', add: 1 }]);
    await store.addRates('r', new Map([['a', 1]]), 1_000);
    await store.setGauges('g', new Map([['a', 1]]));
    await store.tryLead('planner', 'a', 1_000);
    const version = await store.publishPlan(PLAN);
    await store.putTelemetry({ source: 's', kind: 'gpu', values: {} }, 1_000);

    await store.close();
    expect((await store.snapshot(['b'])).get('b')).toMatchObject({ inFlight: 0, healthy: true });
    expect(await store.renew(lease, 1_000)).toBe(false);
    expect((await store.readCounters('c')).size).toBe(0);
    expect((await store.readRates('r', 1_000)).size).toBe(0);
    expect((await store.readGauges('g')).size).toBe(0);
    expect(await store.tryLead('planner', 'b', 1_000)).toBe(true);
    expect(await store.readPlan()).toBeUndefined();
    expect(await store.readTelemetry()).toEqual([]);
    expect(await store.publishPlan(PLAN)).toBeGreaterThan(version);
  });

  it('keeps two stores apart, and does not know the leases of another', async () => {
    const { store: one } = setUp();
    const { store: two } = setUp();
    const lease = (await one.tryAcquire('b', 1, 1_000))!;
    const other = (await two.tryAcquire('b', 1, 1_000))!;
    expect(other.id).not.toBe(lease.id);
    await two.release(lease);
    expect(await two.renew(lease, 1_000)).toBe(false);
    expect(await inFlight(two, 'b')).toBe(1);
    await one.markUnhealthy('b', 1_000);
    await one.updateCounters('c', [{ key: 'a', add: 1 }]);
    await one.publishPlan(PLAN);
    expect((await two.snapshot(['b'])).get('b')?.healthy).toBe(true);
    expect((await two.readCounters('c')).size).toBe(0);
    expect(await two.readPlan()).toBeUndefined();
  });

  it('rejects a duration or limit that is not one, naming the argument', async () => {
    const { store } = setUp();
    const lease = (await store.tryAcquire('b', 1, 1_000))!;
    await expect(store.tryAcquire('b', 1, 0)).rejects.toThrow('Expected `ttlMs` to be a positive finite number of milliseconds, got `0`');
    await expect(store.tryAcquire('b', Number.NaN, 1_000)).rejects.toThrow(RangeError);
    await expect(store.renew(lease, Number.POSITIVE_INFINITY)).rejects.toThrow('`ttlMs`');
    await expect(store.markUnhealthy('b', -1)).rejects.toThrow('`forMs`');
    await expect(store.addRates('r', new Map(), 0)).rejects.toThrow('`tauMs`');
    await expect(store.readRates('r', -5)).rejects.toThrow('`tauMs`');
    await expect(store.tryLead('planner', 'a', Number.NaN)).rejects.toThrow('`ttlMs`');
    await expect(store.putTelemetry({ source: 's', kind: 'gpu', values: {} }, 0)).rejects.toThrow('`ttlMs`');
  });

  it('measures on the system clock by default', async () => {
    const store = new MemoryStateStore();
    await store.tryAcquire('b', 1, 60_000);
    expect(await store.tryAcquire('b', 1, 60_000)).toBeUndefined();
  });
});
