import { describe, expect, it } from 'vitest';
import { AdmissionQueue } from '../../src/queue/admission-queue.js';
import { FairShare, shareFairShare } from '../../src/queue/fair-share.js';
import { VirtualClock } from '../../src/sim/virtual-clock.js';
import { MemoryStateStore } from '../../src/state/memory-store.js';
import { FAIR_SHARE_COUNTERS } from '../../src/state/store.js';

const flush = () => new Promise((resolve) => setImmediate(resolve));
let leases = 0;
/** What a freed slot does: the queue's next waiter is admitted with a lease. */
const admitNext = (queue: AdmissionQueue): boolean => {
  const next = queue.next();
  return next ? queue.admit(next, { id: `l${leases++}`, backendId: 'b', tag: undefined }) : false;
};

describe('least-laxity-first with tenant fairness', () => {
  it('a flooding tenant cannot starve a light one, while urgent work still goes first', async () => {
    const clock = new VirtualClock(0);
    const fair = new FairShare();
    const queue = new AdmissionQueue({ backendId: 'b', maxLength: 1_000, maxWaitMs: 1e9, clock, fairShare: fair, urgentWithinMs: 100 });
    const order: string[] = [];
    const admit = (tenant: string, priority: number, label: string, units = 100) =>
      queue.wait({ tenant, priority }).then(() => {
        order.push(label);
        fair.charge(tenant, units);
      });
    // The flood arrives first, with earlier latest-start times than the light tenant's requests.
    const waits = [];
    for (let i = 0; i < 20; i++) waits.push(admit('flood', 1_000 + i, `flood-${i}`));
    for (let i = 0; i < 3; i++) waits.push(admit('light', 5_000 + i, `light-${i}`));
    // One urgent flood request: its latest start is already due.
    waits.push(admit('flood', 50, 'flood-urgent'));
    for (let i = 0; i < 24; i++) {
      admitNext(queue);
      await flush();
    }
    await Promise.all(waits);
    expect(order[0]).toBe('flood-urgent');
    // Light requests alternate with the flood: each goes as soon as its tenant has had less service.
    const lightAt = order.map((label, i) => (label.startsWith('light') ? i : -1)).filter((i) => i >= 0);
    expect(lightAt).toEqual([1, 3, 5]);
    // Within a tenant, least laxity first.
    const flood = order.filter((l) => /^flood-\d+$/.test(l)).map((l) => Number(l.slice(6)));
    expect(flood).toEqual([...flood].sort((a, b) => a - b));
  });

  it('without fairness the queue is plain least-laxity-first', async () => {
    const clock = new VirtualClock(0);
    const queue = new AdmissionQueue({ backendId: 'b', maxLength: 100, maxWaitMs: 1e9, clock });
    const order: number[] = [];
    const waits = [30, 10, 20].map((p) => queue.wait({ tenant: String(p), priority: p }).then(() => order.push(p)));
    for (let i = 0; i < 3; i++) {
      admitNext(queue);
      await flush();
    }
    await Promise.all(waits);
    expect(order).toEqual([10, 20, 30]);
  });

  it('a tenant returning from idle is lifted to the least counter among waiting tenants', () => {
    const fair = new FairShare();
    fair.startWaiting('busy');
    fair.charge('busy', 10_000);
    fair.startWaiting('back');
    expect(fair.counter('back')).toBe(10_000);
    fair.charge('back', -50_000);
    expect(fair.counter('back')).toBe(0);
  });

  it('forgets idle tenants past its bound, so random tenant names cannot grow memory without limit', () => {
    const fair = new FairShare();
    fair.startWaiting('waiting');
    fair.charge('waiting', 5);
    for (let i = 0; i < FairShare.MAX_TENANTS + 10; i++) fair.charge(`t${i}`, 1);
    expect(fair.size).toBeLessThanOrEqual(FairShare.MAX_TENANTS);
    expect(fair.counter('waiting')).toBe(5);
  });

  it('an urgent request goes first even when its tenant has had more service and queued first; urgency ends at urgentWithinMs', async () => {
    const orderWith = async (heavyPriority: number): Promise<string[]> => {
      const clock = new VirtualClock(1_000);
      const fair = new FairShare();
      const queue = new AdmissionQueue({ backendId: 'b', maxLength: 10, maxWaitMs: 1e9, clock, fairShare: fair, urgentWithinMs: 100 });
      const order: string[] = [];
      const waits = [queue.wait({ tenant: 'heavy', priority: heavyPriority }).then(() => order.push('heavy')), queue.wait({ tenant: 'light', priority: 50_000 }).then(() => order.push('light'))];
      // Meanwhile another of heavy's requests was admitted elsewhere and charged.
      fair.charge('heavy', 10_000);
      admitNext(queue);
      await flush();
      admitNext(queue);
      await Promise.all(waits);
      return order;
    };
    // Latest start exactly urgentWithinMs from now: urgent.
    expect(await orderWith(1_100)).toEqual(['heavy', 'light']);
    // One millisecond later: the tenant with less service goes first.
    expect(await orderWith(1_101)).toEqual(['light', 'heavy']);
  });

  it('a tenant queueing another request keeps its counter: only a return from idle lifts it', () => {
    const fair = new FairShare();
    fair.startWaiting('a');
    fair.charge('b', 300);
    fair.startWaiting('b');
    // b had more service than a, the only tenant waiting: no lift.
    expect(fair.counter('b')).toBe(300);
    fair.startWaiting('a');
    expect(fair.counter('a')).toBe(0);
  });

  it('a tenant that has stopped waiting no longer lifts those that return', () => {
    const fair = new FairShare();
    fair.startWaiting('a');
    fair.charge('a', 500);
    fair.stopWaiting('a');
    fair.startWaiting('b');
    expect(fair.counter('b')).toBe(0);
  });

  it('a tenant counts as waiting until its last waiting request leaves', () => {
    const fair = new FairShare();
    fair.startWaiting('a');
    fair.startWaiting('a');
    fair.charge('a', 500);
    fair.stopWaiting('a');
    fair.startWaiting('b');
    expect(fair.counter('b')).toBe(500);
    fair.stopWaiting('b');
    fair.stopWaiting('a');
    fair.startWaiting('c');
    expect(fair.counter('c')).toBe(0);
  });

  it('keeps every counter up to its bound', () => {
    const fair = new FairShare();
    for (let i = 0; i < FairShare.MAX_TENANTS; i++) fair.charge(`t${i}`, 1);
    expect(fair.size).toBe(FairShare.MAX_TENANTS);
    expect(fair.counter('t0')).toBe(1);
    fair.charge('one-more', 1);
    expect(fair.counter('t0')).toBe(0);
  });
});

describe('shared tenant counters (shareFairShare)', () => {
  it('adds the changes made here to the store every round, keeps them when the store fails, and waits while it is degraded', async () => {
    const clock = new VirtualClock();
    const store = new MemoryStateStore({ clock });
    const shared = store as MemoryStateStore & { degraded?: boolean };
    let failures = 1;
    const updateCounters = store.updateCounters.bind(store);
    store.updateCounters = (name, updates) => (failures-- > 0 ? Promise.reject(new Error('store down')) : updateCounters(name, updates));
    const counters = new FairShare();
    const errors: unknown[] = [];
    const stop = shareFairShare(counters, store, clock, 100, (e) => errors.push(e));
    const round = async () => {
      clock.advance(100);
      for (let i = 0; i < 5; i++) await new Promise((r) => setImmediate(r));
    };
    counters.charge('a', 40);
    await round(); // the store refuses: the change stays
    expect(errors).toHaveLength(1);
    expect((await store.readCounters(FAIR_SHARE_COUNTERS)).size).toBe(0);
    counters.charge('a', 2);
    await round();
    expect(Object.fromEntries(await store.readCounters(FAIR_SHARE_COUNTERS))).toEqual({ a: 42 });
    // Another replica's service arrives through the store.
    await store.updateCounters(FAIR_SHARE_COUNTERS, [{ key: 'a', add: 8 }, { key: 'b', add: 5 }]);
    shared.degraded = true;
    counters.charge('a', 1);
    await round(); // degraded: nothing sent, nothing read
    expect(counters.counter('b')).toBe(0);
    shared.degraded = false;
    await round();
    expect([counters.counter('a'), counters.counter('b')]).toEqual([51, 5]);
    stop();
  });
});
