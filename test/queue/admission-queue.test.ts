import { describe, expect, it } from 'vitest';
import { FreeshError } from '../../src/errors.js';
import { AdmissionQueue } from '../../src/queue/admission-queue.js';
import { VirtualClock } from '../../src/sim/virtual-clock.js';

const make = (concurrency = 1, maxLength = 10, maxWaitMs = 1_000) => {
  const clock = new VirtualClock();
  return { clock, queue: new AdmissionQueue({ backendId: 'b', concurrency, maxLength, maxWaitMs, clock }) };
};
const flush = () => new Promise((resolve) => setImmediate(resolve));

describe('AdmissionQueue', () => {
  it('admits up to its concurrency at once, then queues', () => {
    const { queue } = make(2);
    expect(queue.tryAcquire()).toBe(true);
    expect(queue.tryAcquire()).toBe(true);
    expect(queue.tryAcquire()).toBe(false);
    expect(queue.active).toBe(2);
  });

  it('hands freed slots out by priority, arrival order among equals', async () => {
    const { queue } = make(1);
    queue.tryAcquire();
    const order: string[] = [];
    const waits = [
      queue.wait({ priority: 30 }).then(() => order.push('p30')),
      queue.wait({ priority: 10 }).then(() => order.push('p10-first')),
      queue.wait({ priority: 10 }).then(() => order.push('p10-second')),
      queue.wait({ priority: 20 }).then(() => order.push('p20')),
    ];
    expect(queue.waiting).toBe(4);
    for (let i = 0; i < 4; i++) {
      queue.release();
      await flush();
    }
    await Promise.all(waits);
    expect(order).toEqual(['p10-first', 'p10-second', 'p20', 'p30']);
    expect(queue.active).toBe(1);
    expect(queue.waiting).toBe(0);
  });

  it('refuses with 429 when the queue is at its bound', async () => {
    const { queue } = make(1, 1);
    queue.tryAcquire();
    const first = queue.wait({ priority: 0 });
    await expect(queue.wait({ priority: 0 })).rejects.toMatchObject({ status: 429, code: 'queue_full' });
    queue.release();
    await first;
  });

  it('evicts with 504 after the time limit and frees its place', async () => {
    const { queue, clock } = make(1, 10, 500);
    queue.tryAcquire();
    const waiting = queue.wait({ priority: 0 });
    clock.advance(499);
    expect(queue.waiting).toBe(1);
    clock.advance(1);
    await expect(waiting).rejects.toMatchObject({ status: 504, code: 'queue_timeout' });
    expect(queue.waiting).toBe(0);
    queue.release();
    expect(queue.active).toBe(0);
  });

  it('withdraws a waiter whose client went away, and skips it when a slot frees', async () => {
    const { queue } = make(1);
    queue.tryAcquire();
    const abort = new AbortController();
    const gone = queue.wait({ priority: 0, signal: abort.signal });
    const next = queue.wait({ priority: 1 });
    abort.abort();
    await expect(gone).rejects.toBeInstanceOf(FreeshError);
    await expect(gone).rejects.toMatchObject({ code: 'client_closed' });
    queue.release();
    await next;
    expect(queue.active).toBe(1);
  });

  it('rejectAll refuses every waiter', async () => {
    const { queue } = make(1);
    queue.tryAcquire();
    const a = queue.wait({ priority: 0 });
    const b = queue.wait({ priority: 0 });
    queue.rejectAll(new Error('shutting down'));
    await expect(a).rejects.toThrow('shutting down');
    await expect(b).rejects.toThrow('shutting down');
    expect(queue.waiting).toBe(0);
  });

  it('keeps priority order through many withdrawals (heap rebuild)', async () => {
    const { queue } = make(1, 1_000);
    queue.tryAcquire();
    const aborts = Array.from({ length: 200 }, () => new AbortController());
    const gone = aborts.map((a, i) => queue.wait({ priority: i, signal: a.signal }).catch(() => 'gone'));
    const kept = [queue.wait({ priority: 500 }).then(() => 500), queue.wait({ priority: 300 }).then(() => 300)];
    for (const a of aborts) a.abort();
    expect(await Promise.all(gone)).toEqual(Array(200).fill('gone'));
    expect(queue.waiting).toBe(2);
    queue.release();
    expect(await Promise.race(kept)).toBe(300);
  });
});
