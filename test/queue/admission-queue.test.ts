import { describe, expect, it } from 'vitest';
import { FreeshError } from '../../src/errors.js';
import { AdmissionQueue } from '../../src/queue/admission-queue.js';
import { VirtualClock } from '../../src/sim/virtual-clock.js';

const make = (maxLength = 10, maxWaitMs = 1_000) => {
  const clock = new VirtualClock();
  const queue = new AdmissionQueue({ backendId: 'b', maxLength, maxWaitMs, clock });
  let leases = 0;
  /** What a freed slot does: the queue's next waiter is admitted with a lease. */
  const release = (): boolean => {
    const next = queue.next();
    return next ? queue.admit(next, { id: `l${leases++}`, backendId: 'b', tag: next.tag }) : false;
  };
  return { clock, queue, release };
};
const flush = () => new Promise((resolve) => setImmediate(resolve));

describe('AdmissionQueue', () => {
  it('hands freed slots out by priority, arrival order among equals', async () => {
    const { queue, release } = make();
    const order: string[] = [];
    const waits = [
      queue.wait({ priority: 30 }).then(() => order.push('p30')),
      queue.wait({ priority: 10 }).then(() => order.push('p10-first')),
      queue.wait({ priority: 10 }).then(() => order.push('p10-second')),
      queue.wait({ priority: 20 }).then(() => order.push('p20')),
    ];
    expect(queue.waiting).toBe(4);
    for (let i = 0; i < 4; i++) {
      release();
      await flush();
    }
    await Promise.all(waits);
    expect(order).toEqual(['p10-first', 'p10-second', 'p20', 'p30']);
    expect(queue.waiting).toBe(0);
  });

  it('refuses with 429 when the queue is at its bound', async () => {
    const { queue, release } = make(1);
    const first = queue.wait({ priority: 0 });
    await expect(queue.wait({ priority: 0 })).rejects.toMatchObject({ status: 429, code: 'queue_full' });
    release();
    await first;
  });

  it('evicts with 504 after the time limit and frees its place', async () => {
    const { queue, clock, release } = make(10, 500);
    const waiting = queue.wait({ priority: 0 });
    clock.advance(499);
    expect(queue.waiting).toBe(1);
    clock.advance(1);
    await expect(waiting).rejects.toMatchObject({ status: 504, code: 'queue_timeout' });
    expect(queue.waiting).toBe(0);
    release();
  });

  it('withdraws a waiter whose client went away, and skips it when a slot frees', async () => {
    const { queue, release } = make();
    const abort = new AbortController();
    const gone = queue.wait({ priority: 0, signal: abort.signal });
    const next = queue.wait({ priority: 1 });
    abort.abort();
    await expect(gone).rejects.toBeInstanceOf(FreeshError);
    await expect(gone).rejects.toMatchObject({ code: 'client_closed' });
    release();
    await next;
  });

  it('rejectAll refuses every waiter', async () => {
    const { queue } = make();
    const a = queue.wait({ priority: 0 });
    const b = queue.wait({ priority: 0 });
    queue.rejectAll(new Error('shutting down'));
    await expect(a).rejects.toThrow('shutting down');
    await expect(b).rejects.toThrow('shutting down');
    expect(queue.waiting).toBe(0);
  });

  it('keeps priority order through many withdrawals (heap rebuild)', async () => {
    const { queue, release } = make(1_000);
    const aborts = Array.from({ length: 200 }, () => new AbortController());
    const gone = aborts.map((a, i) => queue.wait({ priority: i, signal: a.signal }).catch(() => 'gone'));
    const kept = [queue.wait({ priority: 500 }).then(() => 500), queue.wait({ priority: 300 }).then(() => 300)];
    for (const a of aborts) a.abort();
    expect(await Promise.all(gone)).toEqual(Array(200).fill('gone'));
    expect(queue.waiting).toBe(2);
    release();
    expect(await Promise.race(kept)).toBe(300);
  });
});
