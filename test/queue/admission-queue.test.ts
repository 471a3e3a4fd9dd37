import { getEventListeners, setMaxListeners } from 'node:events';
import { describe, expect, it } from 'vitest';
import { CancelToken } from '../../src/cancel.js';
import { FreeshError } from '../../src/errors.js';
import { AdmissionQueue } from '../../src/queue/admission-queue.js';
import { VirtualClock } from '../../src/sim/virtual-clock.js';

const make = (maxLength = 10, maxWaitMs = 1_000, startMs = 0, demoteLate = false) => {
  const clock = new VirtualClock(startMs);
  const queue = new AdmissionQueue({ backendId: 'b', maxLength, maxWaitMs, clock, demoteLate });
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

  it('with latest-start priorities, a waiter past its latest start goes behind every waiter still on time', async () => {
    const { clock, queue, release } = make(10, 10_000, 0, true);
    const order: string[] = [];
    const waits = [
      queue.wait({ priority: 100 }).then(() => order.push('late-100')),
      queue.wait({ priority: 50 }).then(() => order.push('late-50')),
      queue.wait({ priority: 300 }).then(() => order.push('on-time-300')),
      queue.wait({ priority: 200 }).then(() => order.push('on-time-200')),
    ];
    clock.advance(150);
    for (let i = 0; i < 2; i++) {
      release();
      await flush();
    }
    // Only now does 200 fall behind; 300 is still on time and goes before it.
    clock.advance(100);
    for (let i = 0; i < 2; i++) {
      release();
      await flush();
    }
    await Promise.all(waits);
    expect(order).toEqual(['on-time-200', 'on-time-300', 'late-50', 'late-100']);
  });

  it('without latest-start priorities, the lowest priority goes first however old it is', async () => {
    const { clock, queue, release } = make(10, 10_000, 0, false);
    const order: number[] = [];
    const waits = [300, 50, 200].map((p) => queue.wait({ priority: p }).then(() => order.push(p)));
    clock.advance(250);
    for (let i = 0; i < 3; i++) {
      release();
      await flush();
    }
    await Promise.all(waits);
    expect(order).toEqual([50, 200, 300]);
  });

  it('a late waiter that leaves is never admitted, and the late ones behind it still are', async () => {
    const { clock, queue, release } = make(10, 10_000, 0, true);
    const abort = new AbortController();
    const order: string[] = [];
    const leaving = queue.wait({ priority: 1, signal: abort.signal }).catch(() => order.push('left'));
    const staying = queue.wait({ priority: 2 }).then(() => order.push('stayed'));
    clock.advance(10);
    expect(queue.next()?.priority).toBe(1); // moved behind (nothing is on time), still first among the late
    abort.abort();
    release();
    await Promise.all([leaving, staying]);
    expect(order).toEqual(['left', 'stayed']);
    expect(queue.next()).toBeUndefined();
    expect(queue.waiting).toBe(0);
  });

  it('refuses with 503 when the queue is at its bound (the fleet is full)', async () => {
    const { queue, release } = make(1);
    const first = queue.wait({ priority: 0 });
    await expect(queue.wait({ priority: 0 })).rejects.toMatchObject({ status: 503, code: 'queue_full' });
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

  it('admits requests of equal priority in the order they arrived, however many wait', async () => {
    const { queue, release } = make();
    const order: number[] = [];
    const waits = Array.from({ length: 7 }, (_, i) => queue.wait({ priority: 0 }).then(() => order.push(i)));
    for (let i = 0; i < 7; i++) {
      release();
      await flush();
    }
    await Promise.all(waits);
    expect(order).toEqual([0, 1, 2, 3, 4, 5, 6]);
  });

  it('refuses with 499 a request whose client left before it queued, and keeps no place for it', async () => {
    const { queue } = make(1);
    const gone = new CancelToken();
    gone.abort();
    await expect(queue.wait({ priority: 0, signal: gone })).rejects.toMatchObject({ status: 499, code: 'client_closed' });
    expect(queue.waiting).toBe(0);
    expect(queue.next()).toBeUndefined();
  });

  it('the 504 says how long the request waited', async () => {
    const { queue, clock } = make(10, 750, 1_000_000);
    const waiting = queue.wait({ priority: 0 });
    clock.advance(750);
    await expect(waiting).rejects.toThrow('Request waited 750 ms in the admission queue');
  });

  it('admits a waiter with the lease it is given, and says so', async () => {
    const { queue } = make();
    const waiting = queue.wait({ priority: 0, tag: 'interactive' });
    const next = queue.next()!;
    expect(next.tag).toBe('interactive');
    const lease = { id: 'l', backendId: 'b', tag: 'interactive' };
    expect(queue.admit(next, lease)).toBe(true);
    expect(await waiting).toBe(lease);
    expect(queue.waiting).toBe(0);
    expect(queue.next()).toBeUndefined();
  });

  it('a slot found for a waiter that left meanwhile is refused, so the caller can give it to the next one', async () => {
    const { queue, release } = make();
    const abort = new AbortController();
    const leaving = queue.wait({ priority: 0, signal: abort.signal });
    const staying = queue.wait({ priority: 1 });
    // The caller picks the head, then asks the store for a slot; the client leaves before it answers.
    const picked = queue.next()!;
    abort.abort();
    await expect(leaving).rejects.toMatchObject({ code: 'client_closed' });
    expect(queue.admit(picked, { id: 'late', backendId: 'b', tag: undefined })).toBe(false);
    expect(queue.waiting).toBe(1);
    expect(release()).toBe(true);
    await staying;
    expect(queue.waiting).toBe(0);
  });

  it('a waiter that leaves from behind the head is never handed a slot, and those around it still are', async () => {
    const { queue, clock, release } = make(10, 1_000);
    const order: string[] = [];
    // Times out from behind the head: it waited longest, but its priority is lower.
    const timingOut = queue.wait({ priority: 3 }).catch(() => order.push('timed out'));
    clock.advance(500);
    const first = queue.wait({ priority: 1 }).then(() => order.push('first'));
    const abort = new AbortController();
    const leaving = queue.wait({ priority: 2, signal: abort.signal }).catch(() => order.push('left'));
    const last = queue.wait({ priority: 4 }).then(() => order.push('last'));
    abort.abort();
    clock.advance(500);
    await Promise.all([leaving, timingOut]);
    expect(queue.waiting).toBe(2);
    expect(release()).toBe(true);
    expect(release()).toBe(true);
    expect(release()).toBe(false);
    await Promise.all([first, last]);
    expect(order).toEqual(['left', 'timed out', 'first', 'last']);
    expect(queue.waiting).toBe(0);
  });

  it('rejectAll after some waiters left keeps the count right: the queue then holds maxLength again, no more', async () => {
    const { queue, release } = make(2);
    const abort = new AbortController();
    const head = queue.wait({ priority: 0 });
    const leaving = queue.wait({ priority: 1, signal: abort.signal });
    abort.abort();
    await expect(leaving).rejects.toMatchObject({ code: 'client_closed' });
    // The head is picked and admitted; the withdrawn waiter is still in the heap.
    release();
    await head;
    queue.rejectAll(new Error('shutting down'));
    expect(queue.waiting).toBe(0);
    const again = [queue.wait({ priority: 0 }), queue.wait({ priority: 0 })];
    await expect(queue.wait({ priority: 0 })).rejects.toMatchObject({ status: 503 });
    release();
    release();
    await Promise.all(again);
  });

  it('a client signal shared by many requests holds no listener of theirs once they leave the queue', async () => {
    const { queue, clock, release } = make(100, 1_000);
    const shared = new AbortController();
    setMaxListeners(50, shared.signal);
    const admitted = Array.from({ length: 20 }, () => queue.wait({ priority: 0, signal: shared.signal }));
    const timedOut = queue.wait({ priority: 1, signal: shared.signal }).catch(() => 'timed out');
    expect(getEventListeners(shared.signal, 'abort')).toHaveLength(21);
    for (let i = 0; i < 20; i++) release();
    await Promise.all(admitted);
    clock.advance(1_000);
    expect(await timedOut).toBe('timed out');
    expect(getEventListeners(shared.signal, 'abort')).toHaveLength(0);
  });

  it('keeps every live waiter, in order, when many withdrawals behind the head rebuild its heap', async () => {
    const { queue, release } = make(1_000);
    const order: number[] = [];
    const head = queue.wait({ priority: 0 }).then(() => order.push(0));
    const aborts = Array.from({ length: 150 }, () => new AbortController());
    const gone = aborts.map((a, i) => queue.wait({ priority: 1 + i, signal: a.signal }).catch(() => 'gone'));
    const kept = [700, 500, 900].map((p) => queue.wait({ priority: p }).then(() => order.push(p)));
    for (const a of aborts) a.abort();
    expect(await Promise.all(gone)).toEqual(Array(150).fill('gone'));
    expect(queue.waiting).toBe(4);
    for (let i = 0; i < 4; i++) expect(release()).toBe(true);
    expect(release()).toBe(false);
    await Promise.all([head, ...kept]);
    expect(order).toEqual([0, 500, 700, 900]);
  });
});
