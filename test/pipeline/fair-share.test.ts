import { describe, expect, it } from 'vitest';
import { oneSlotRouter } from '../helpers/one-slot-router.js';

type Harness = ReturnType<typeof oneSlotRouter>;

/**
 * Tenants' virtual token counters, read from the order in which one backend slot admits queued
 * requests. In each scenario, tenant A's request `a1` holds the slot while B's `b1` and then A's `a2`
 * queue (batch class: none is urgent). On laxity alone `a2` goes first — its shorter prompt gives it
 * the earlier latest start — so `b1` goes first only when A's counter is above B's. Predictions are
 * 10 output tokens.
 */
describe('tenant fair share through the router', () => {
  const A = { tenant: 'A' };
  const B = { tenant: 'B', words: 50 };

  /** Runs the scenario: `before` on the idle router, `endA1` once b1 and a2 wait; the order the upstream received requests in. */
  async function scenario({ before, endA1 }: { before?: (h: Harness) => Promise<void>; endA1: (h: Harness) => void }) {
    const h = oneSlotRouter();
    // The premise: without counters, a2 would be admitted before b1.
    const [a2Alone, b1Alone] = [await h.latestStartMs('a2', A), await h.latestStartMs('b1', B)];
    expect(a2Alone.latestStartMs).toBeLessThan(b1Alone.latestStartMs);
    await before?.(h);
    const sentBefore = h.upstream.calls.length;
    const a1 = h.send('a1', A);
    await h.sent(sentBefore + 1);
    const b1 = h.send('b1', B);
    await h.queued(1);
    const a2 = h.send('a2', A);
    await h.queued(2);
    endA1(h);
    const statuses = await h.serveAll([a1, b1, a2]);
    await h.router.close();
    return { order: h.upstream.labels(), statuses };
  }

  it('a request is charged to its tenant when admitted: while it runs, the other tenant\'s queued request goes first', async () => {
    // a1 ends with exactly its predicted length: no correction, only the charge at admission counts.
    const { order, statuses } = await scenario({ endA1: (h) => h.upstream.call('a1').complete(10) });
    expect(order).toEqual(['a1', 'b1', 'a2']);
    expect(statuses).toEqual([200, 200, 200]);
  });

  it('a completed request\'s charge is corrected to its true length: a tenant whose answers ran long waits behind the other', async () => {
    const { order } = await scenario({
      // B is served first. Counted as predicted, b0's longer prompt outweighs a1: only a1's true
      // length, 1,000 tokens where 10 were predicted, puts A above B.
      before: async (h) => void (await h.serveAll([h.send('b0', B)])),
      endA1: (h) => h.upstream.call('a1').complete(1_000),
    });
    expect(order).toEqual(['b0', 'a1', 'b1', 'a2']);
  });

  it('a request the backend failed is refunded: its tenant is not made to wait for service it never got', async () => {
    const { order, statuses } = await scenario({ endA1: (h) => h.upstream.call('a1').fail(500) });
    expect(order).toEqual(['a1', 'a2', 'b1']);
    expect(statuses).toEqual([502, 200, 200]);
  });
});
