import { describe, expect, it } from 'vitest';
import type { Placement } from '../../src/pipeline/lifecycle.js';
import { fifoOrder, leastLaxityFairOrder, leastLaxityOrder } from '../../src/queue/order.js';
import type { RoutingRequest } from '../../src/types.js';
import { oneSlotRouter } from '../helpers/one-slot-router.js';

describe('queue orders', () => {
  const request = { arrivalMs: 1_234 } as RoutingRequest;
  /** A placement costed with `waitMs` in the queue before `serviceMs` on the backend. */
  const placed = (deadlineMs: number, waitMs: number, serviceMs: number) => ({ deadlineMs, cost: { waitMs, e2eMs: waitMs + serviceMs } }) as Placement;

  it('least laxity ranks by latest start, the deadline less the service: the wait it was costed with does not move it', () => {
    for (const order of [leastLaxityOrder, leastLaxityFairOrder]) {
      expect(order.priority(request, placed(10_000, 0, 3_000))).toBe(7_000);
      expect(order.priority(request, placed(10_000, 2_000, 3_000))).toBe(7_000);
    }
    expect([leastLaxityOrder.tenantFair, leastLaxityFairOrder.tenantFair]).toEqual([false, true]);
  });

  it('first come first served ranks by arrival', () => {
    expect(fifoOrder.priority(request, placed(10_000, 2_000, 3_000))).toBe(1_234);
    expect(fifoOrder.tenantFair).toBe(false);
    // Arrival times are not latest starts: a FIFO queue never demotes a waiter as late.
    expect([fifoOrder.latestStart, leastLaxityOrder.latestStart, leastLaxityFairOrder.latestStart]).toEqual([false, true, true]);
  });
});

/** Who a freed slot goes to, read from the order in which one backend slot admits queued requests. */
describe('queue order through the router', () => {
  it('an urgent request goes first even when its tenant has had more service than the others', async () => {
    const h = oneSlotRouter({ fairness: { urgentWithinMs: 5_000 } });
    const heavy = { tenant: 'heavy' };
    const light = { tenant: 'light' };
    // The premise: the interactive request must start within urgentWithinMs; the batch one need not.
    expect((await h.latestStartMs('urgent', { ...heavy, slo: 'interactive' })).latestStartMs).toBeLessThan(5_000);
    expect((await h.latestStartMs('relaxed', light)).latestStartMs).toBeGreaterThan(5_000);
    // `heavy` holds the slot (and is charged for it) while the light tenant's request queues first.
    const running = h.send('running', heavy);
    await h.sent(1);
    const relaxed = h.send('relaxed', light);
    await h.queued(1);
    const urgent = h.send('urgent', { ...heavy, slo: 'interactive' });
    await h.queued(2);
    expect(await h.serveAll([running, relaxed, urgent])).toEqual([200, 200, 200]);
    expect(h.upstream.labels()).toEqual(['running', 'urgent', 'relaxed']);
    await h.router.close();
  });

  it.each(['freesh', 'freesh-published'])(
    '%s: a long request with a later deadline goes before a short one when it must start sooner (latest start, not deadline)',
    async (policy) => {
      // Tight time between tokens: a long answer's deadline comes later, but its service takes far longer.
      const h = oneSlotRouter({
        policy,
        p50Tokens: 2_000,
        sloClasses: { tight: { ttftBaseMs: 300_000, tbtMs: 1 } },
        defaults: { sloClass: 'tight' },
      });
      const shortAnswer = { slo: 'tight', maxTokens: 5 };
      const longAnswer = { slo: 'tight' };
      const short = await h.latestStartMs('short', shortAnswer);
      const long = await h.latestStartMs('long', longAnswer);
      expect(long.placement.deadlineMs).toBeGreaterThan(short.placement.deadlineMs);
      expect(long.latestStartMs).toBeLessThan(short.latestStartMs);
      // Both can still start in time (a request already late would wait behind them).
      expect(long.latestStartMs).toBeGreaterThan(0);

      const running = h.send('running', shortAnswer);
      await h.sent(1);
      // The short one arrives first: first-come-first-served or deadline order would admit it first.
      const first = h.send('short', shortAnswer);
      await h.queued(1);
      const second = h.send('long', longAnswer);
      await h.queued(2);
      await h.serveAll([running, first, second]);
      expect(h.upstream.labels()).toEqual(['running', 'long', 'short']);
      await h.router.close();
    },
  );

  it('a request that can no longer meet its deadline waits behind one that still can, under least laxity first', async () => {
    const h = oneSlotRouter({
      policy: 'freesh',
      sloClasses: { lost: { ttftBaseMs: 1, tbtMs: 1 }, roomy: { ttftBaseMs: 300_000, tbtMs: 1_000 } },
      defaults: { sloClass: 'roomy' },
    });
    const lost = await h.latestStartMs('lost', { slo: 'lost' });
    const roomy = await h.latestStartMs('roomy', { slo: 'roomy' });
    // The premise: the lost one must have started already; by its latest start alone it would go first.
    expect(lost.latestStartMs).toBeLessThan(0);
    expect(roomy.latestStartMs).toBeGreaterThan(lost.latestStartMs);

    const running = h.send('running', { slo: 'roomy' });
    await h.sent(1);
    const first = h.send('lost', { slo: 'lost' });
    await h.queued(1);
    const second = h.send('roomy', { slo: 'roomy' });
    await h.queued(2);
    await h.serveAll([running, first, second]);
    expect(h.upstream.labels()).toEqual(['running', 'roomy', 'lost']);
    await h.router.close();
  });
});
