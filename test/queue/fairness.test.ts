import { describe, expect, it } from 'vitest';
import { AdmissionQueue } from '../../src/queue/admission-queue.js';
import { FairShare } from '../../src/queue/fair-share.js';
import { VirtualClock } from '../../src/sim/virtual-clock.js';

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
});
