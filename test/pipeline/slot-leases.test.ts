import { describe, expect, it } from 'vitest';
import { CancelToken } from '../../src/cancel.js';
import { FreeshError } from '../../src/errors.js';
import { Slots } from '../../src/pipeline/slots.js';
import { VirtualClock } from '../../src/sim/virtual-clock.js';
import { ClusterView } from '../../src/state/cluster-view.js';
import { MemoryStateStore } from '../../src/state/memory-store.js';
import type { Lease } from '../../src/state/store.js';
import type { Backend } from '../../src/types.js';

const TTL_MS = 900;
/** How often a waiter with nothing freed here asks the store again (slots.ts). */
const RETRY_MS = 250;

function backend(id: string, maxConcurrency: number): Backend {
  return { id, maxConcurrency } as Backend;
}

interface SetUp {
  readonly limit?: number;
  readonly maxQueueLength?: number;
  readonly maxQueueMs?: number;
  /** The store's own clock (a remote store's); default the router's. */
  readonly storeClock?: VirtualClock;
}

/**
 * Slots over a memory store on a virtual clock, as the router builds them, with the store's calls
 * open to interception: `gate.acquire` holds tryAcquire answers, `fail.*` makes calls reject.
 */
function setUp(o: SetUp = {}) {
  const clock = new VirtualClock();
  const store = new MemoryStateStore({ clock: o.storeClock ?? clock });
  const limit = o.limit ?? 1;
  const storeErrors: unknown[] = [];
  const lost: Lease[] = [];
  const view = new ClusterView({ store, backendIds: ['b', 'c'], clock, refreshMs: 60_000 });

  const tryAcquire = store.tryAcquire.bind(store);
  const renew = store.renew.bind(store);
  const release = store.release.bind(store);
  const held: (() => void)[] = [];
  const gate = { acquire: false };
  const fail = { acquire: false, renew: false, release: false };
  let renewals = 0;
  let acquisitions = 0;
  store.tryAcquire = (...args) => {
    acquisitions++;
    if (fail.acquire) return Promise.reject(new Error('store down'));
    const answer = tryAcquire(...args);
    return gate.acquire ? new Promise((resolve) => held.push(() => resolve(answer))) : answer;
  };
  store.renew = (...args) => {
    renewals++;
    return fail.renew ? Promise.reject(new Error('store down')) : renew(...args);
  };
  // A failed release may still have reached the store (a reply lost on the way back).
  store.release = (lease) => {
    const done = release(lease);
    return fail.release ? done.then(() => Promise.reject(new Error('reply lost'))) : done;
  };

  const slots = new Slots({
    backends: [backend('b', limit), backend('c', limit)],
    store,
    view,
    clock,
    leaseTtlMs: TTL_MS,
    maxQueueLength: o.maxQueueLength ?? 10,
    maxQueueMs: o.maxQueueMs ?? 60_000,
    fairShare: undefined,
    urgentWithinMs: 0,
    demoteLate: false,
    onStoreError: (err) => storeErrors.push(err),
    onLeaseLost: (lease) => lost.push(lease),
  });

  /** Asks for a slot; the result records when it settled. */
  const ask = (priority = 0, signal?: CancelToken, backendId = 'b') => {
    const result: { lease?: Lease; error?: FreeshError | Error; atMs?: number } = {};
    slots
      .acquire({ backend: backend(backendId, limit), priority, tenant: 't', tag: 'batch', signal })
      .then(
        (lease) => Object.assign(result, { lease, atMs: clock.now() }),
        (error: Error) => Object.assign(result, { error, atMs: clock.now() }),
      );
    return result;
  };
  /** A lease another replica holds, straight from the store. */
  const elsewhere = (backendId = 'b') => tryAcquire(backendId, limit, 60_000, 'batch');
  const inStore = async (backendId = 'b') => (await store.snapshot([backendId])).get(backendId)!.inFlight;
  /** Moves the router's clock, letting the store's answers through after each timer. */
  const advance = async (ms: number) => {
    const until = clock.now() + ms;
    for (let at = clock.nextAtMs(); at !== undefined && at <= until; at = clock.nextAtMs()) {
      clock.runNext();
      await settle();
    }
    clock.advanceTo(until);
    await settle();
  };
  const answerAcquires = async () => {
    gate.acquire = false;
    for (const fn of held.splice(0)) fn();
    await settle();
  };
  return { clock, store, view, slots, storeErrors, lost, gate, fail, ask, elsewhere, inStore, advance, answerAcquires, renewals: () => renewals, acquisitions: () => acquisitions };
}

const settle = async () => {
  for (let i = 0; i < 5; i++) await new Promise((resolve) => setImmediate(resolve));
};

describe('Slots: granting and giving back', () => {
  it('grants a free slot at once and counts it here, in the view and in the store; giving it back frees all three', async () => {
    const { slots, view, clock, ask, inStore } = setUp({ limit: 2 });
    const first = ask();
    const second = ask();
    await settle();
    expect(first.lease).toBeDefined();
    expect(second.lease).toBeDefined();
    expect(slots.held('b')).toBe(2);
    expect(view.get('b', clock.now()).inFlight).toBe(2);
    expect(await inStore()).toBe(2);
    expect([...slots.samples()]).toEqual([
      ['b', { active: 2, waiting: 0 }],
      ['c', { active: 0, waiting: 0 }],
    ]);
    slots.release(first.lease!);
    expect(slots.held('b')).toBe(1);
    slots.release(second.lease!);
    expect(slots.held('b')).toBe(0);
    await settle();
    expect(view.get('b', clock.now()).inFlight).toBe(0);
    expect(await inStore()).toBe(0);
  });

  it('giving a lease back twice counts it once', async () => {
    const { slots, view, clock, ask } = setUp({ limit: 2 });
    const first = ask();
    const second = ask();
    await settle();
    slots.release(first.lease!);
    slots.release(first.lease!);
    expect(slots.held('b')).toBe(1);
    expect(view.get('b', clock.now()).inFlight).toBe(1);
    slots.release(second.lease!);
    expect(slots.held('b')).toBe(0);
  });

  it('a backend it does not know has nobody waiting', () => {
    const { slots } = setUp();
    expect(slots.waiting('zzz')).toBe(0);
    expect(slots.queue('zzz').waiting).toBe(0);
    expect(slots.held('zzz')).toBe(0);
  });

  it('a request refused a slot waits, and a slot freed here admits the waiters in priority order', async () => {
    const { slots, ask } = setUp();
    const running = ask();
    await settle();
    const late = ask(20);
    const early = ask(10);
    await settle();
    expect(slots.waiting('b')).toBe(2);
    expect(slots.queue('b').waiting).toBe(2);
    expect([...slots.samples()][0]).toEqual(['b', { active: 1, waiting: 2 }]);
    slots.release(running.lease!);
    await settle();
    expect(early.lease).toBeDefined();
    expect(late.lease).toBeUndefined();
    slots.release(early.lease!);
    await settle();
    expect(late.lease).toBeDefined();
    expect(slots.waiting('b')).toBe(0);
  });

  it('a newcomer does not take a slot freed elsewhere from a request already waiting for it', async () => {
    const { store, ask, elsewhere, advance } = setUp();
    const other = (await elsewhere())!;
    const waiting = ask(10);
    await settle();
    await store.release(other);
    // The store would grant the newcomer the slot, but the request waiting goes first.
    const newcomer = ask(20);
    await settle();
    expect(newcomer.lease).toBeUndefined();
    await advance(RETRY_MS);
    expect(waiting.lease).toBeDefined();
    expect(newcomer.lease).toBeUndefined();
  });

  it('a slot given back whose release reply was lost still admits the next waiter at once', async () => {
    const { slots, fail, ask, storeErrors } = setUp();
    const running = ask();
    await settle();
    const next = ask();
    await settle();
    fail.release = true;
    slots.release(running.lease!);
    await settle();
    expect(storeErrors).toHaveLength(1);
    expect(next.lease).toBeDefined();
  });
});

describe('Slots: slots freed elsewhere and the store failing', () => {
  it('a slot freed by another replica admits the waiter at the next retry, every 250 ms', async () => {
    const { store, ask, elsewhere, advance } = setUp();
    const other = (await elsewhere())!;
    const waiting = ask();
    await advance(RETRY_MS);
    expect(waiting.lease).toBeUndefined();
    await advance(100);
    await store.release(other);
    await advance(RETRY_MS - 101);
    expect(waiting.lease).toBeUndefined();
    await advance(1);
    expect(waiting.lease).toBeDefined();
    expect(waiting.atMs).toBe(2 * RETRY_MS);
  });

  it('several slots freed elsewhere admit as many waiters at one retry', async () => {
    const { store, ask, elsewhere, advance } = setUp({ limit: 2 });
    const others = [(await elsewhere())!, (await elsewhere())!];
    const waiters = [ask(), ask(), ask()];
    await settle();
    for (const other of others) await store.release(other);
    await advance(RETRY_MS);
    expect(waiters.map((w) => w.atMs)).toEqual([RETRY_MS, RETRY_MS, undefined]);
  });

  it('a store that refuses to answer is reported, and the request waits and is retried', async () => {
    const { fail, ask, advance, storeErrors, slots } = setUp();
    fail.acquire = true;
    const waiting = ask();
    await settle();
    expect(storeErrors.length).toBeGreaterThan(0);
    expect(slots.waiting('b')).toBe(1);
    fail.acquire = false;
    await advance(RETRY_MS);
    expect(waiting.lease).toBeDefined();
  });

  it('a waiter that leaves while the store answers passes its slot to the next one', async () => {
    const { slots, gate, ask, answerAcquires, inStore } = setUp();
    const running = ask();
    await settle();
    const leaving = new CancelToken();
    const first = ask(1, leaving);
    const second = ask(2);
    await settle();
    gate.acquire = true;
    slots.release(running.lease!);
    await settle();
    leaving.abort();
    await answerAcquires();
    expect((first.error as FreeshError).status).toBe(499);
    expect(second.lease).toBeDefined();
    expect(slots.held('b')).toBe(1);
    expect(await inStore()).toBe(1);
  });

  it('a waiter that leaves while the store answers, with nobody behind it, gives the slot back', async () => {
    const { slots, view, clock, gate, ask, answerAcquires, inStore } = setUp();
    const running = ask();
    await settle();
    const leaving = new CancelToken();
    const only = ask(1, leaving);
    await settle();
    gate.acquire = true;
    slots.release(running.lease!);
    await settle();
    leaving.abort();
    await answerAcquires();
    expect((only.error as FreeshError).status).toBe(499);
    expect(slots.held('b')).toBe(0);
    expect(view.get('b', clock.now()).inFlight).toBe(0);
    expect(await inStore()).toBe(0);
  });
  it('a waiter admitted from the queue holds a lease of its class, as counted by every replica', async () => {
    const { slots, store, ask, view, clock } = setUp();
    const running = ask();
    await settle();
    const waiting = ask();
    await settle();
    slots.release(running.lease!);
    await settle();
    expect(waiting.lease!.tag).toBe('batch');
    expect(Object.fromEntries((await store.snapshot(['b'])).get('b')!.byTag)).toEqual({ batch: 1 });
    expect(Object.fromEntries(view.get('b', clock.now()).byTag)).toEqual({ batch: 1 });
  });

  it('while the backend stays full, its queue asks the store once per retry, however many wait', async () => {
    const { ask, elsewhere, advance, acquisitions } = setUp();
    await elsewhere();
    for (let i = 0; i < 5; i++) {
      ask();
      await settle();
    }
    const before = acquisitions();
    await advance(RETRY_MS);
    expect(acquisitions()).toBe(before + 1);
    await advance(RETRY_MS);
    expect(acquisitions()).toBe(before + 2);
  });

  it('slots freed here while the store is slow to answer ask it once for the one waiter', async () => {
    const { slots, gate, ask, answerAcquires, acquisitions, inStore } = setUp({ limit: 2 });
    const running = [ask(), ask()];
    await settle();
    const waiting = ask();
    await settle();
    gate.acquire = true;
    const before = acquisitions();
    slots.release(running[0]!.lease!);
    await settle();
    slots.release(running[1]!.lease!);
    await settle();
    await answerAcquires();
    expect(acquisitions()).toBe(before + 1);
    expect(waiting.lease).toBeDefined();
    expect(await inStore()).toBe(1);
  });

});

describe('Slots: leases renewed while held', () => {
  it('a slot held for many TTLs stays held in the store, renewed every third of the TTL', async () => {
    const { ask, elsewhere, advance, renewals, lost, slots } = setUp();
    const running = ask();
    await settle();
    await advance(TTL_MS / 3 - 1);
    expect(renewals()).toBe(0);
    await advance(1);
    expect(renewals()).toBe(1);
    await advance(10 * TTL_MS);
    expect(renewals()).toBe(31);
    expect(await elsewhere()).toBeUndefined();
    expect(lost).toEqual([]);
    slots.release(running.lease!);
  });

  it('renewals stop when nothing is held, leaving no timer behind, and start again with the next slot', async () => {
    const { clock, ask, elsewhere, advance, renewals, slots } = setUp();
    const first = ask();
    await settle();
    await advance(TTL_MS);
    slots.release(first.lease!);
    await advance(TTL_MS);
    const count = renewals();
    expect(clock.nextAtMs()).toBeUndefined();
    const second = ask();
    await settle();
    await advance(3 * TTL_MS);
    expect(renewals()).toBe(count + 9);
    expect(await elsewhere()).toBeUndefined();
    slots.release(second.lease!);
  });

  it('one renewal round renews every lease held, on every backend', async () => {
    const { ask, elsewhere, advance, renewals } = setUp();
    ask(0, undefined, 'b');
    ask(0, undefined, 'c');
    await settle();
    await advance(2 * TTL_MS);
    expect(renewals()).toBe(12);
    expect(await elsewhere('b')).toBeUndefined();
    expect(await elsewhere('c')).toBeUndefined();
  });

  it('a lease that expired in the store is reported lost once and renewed no more; the others are kept', async () => {
    const storeClock = new VirtualClock();
    const { ask, advance, lost, slots, renewals } = setUp({ storeClock, limit: 2 });
    const stalled = ask();
    await settle();
    // The store's time runs on while this router's stands still (a stalled process): the lease expires there.
    storeClock.advance(TTL_MS);
    const fresh = ask();
    await settle();
    await advance(TTL_MS / 3);
    expect(lost).toEqual([stalled.lease]);
    expect(renewals()).toBe(2);
    await advance(TTL_MS / 3);
    expect(lost).toEqual([stalled.lease]);
    expect(renewals()).toBe(3);
    slots.release(stalled.lease!);
    slots.release(fresh.lease!);
  });

  it('a lease given back while its renewal is on its way is not reported lost', async () => {
    const storeClock = new VirtualClock();
    const { clock, ask, lost, slots } = setUp({ storeClock });
    const running = ask();
    await settle();
    storeClock.advance(TTL_MS);
    clock.advance(TTL_MS / 3);
    // The renewal was asked for; the request ends before the answer.
    slots.release(running.lease!);
    await settle();
    expect(lost).toEqual([]);
  });

  it('a renewal the store fails to answer is reported but does not count the lease as lost', async () => {
    const { ask, advance, fail, lost, storeErrors } = setUp();
    ask();
    await settle();
    fail.renew = true;
    await advance(TTL_MS / 3);
    expect(storeErrors).toHaveLength(1);
    expect(lost).toEqual([]);
    fail.renew = false;
    await advance(TTL_MS / 3);
    expect(storeErrors).toHaveLength(1);
  });
});

describe('Slots: closing', () => {
  it('refuses every waiter, stops retrying and renewing; held leases then expire in the store', async () => {
    const { slots, ask, elsewhere, advance, renewals, clock } = setUp({ limit: 1 });
    ask();
    const waiting = ask();
    await settle();
    const err = new Error('shutting down');
    slots.close(err);
    await settle();
    expect(waiting.error).toBe(err);
    const count = renewals();
    await advance(2 * TTL_MS);
    expect(renewals()).toBe(count);
    expect(clock.nextAtMs()).toBeUndefined();
    expect(await elsewhere()).toBeDefined();
  });

  it('a slot the store grants after closing goes back to the store and to nobody, leaving no timer behind', async () => {
    const { slots, gate, ask, answerAcquires, inStore, clock, view } = setUp();
    const running = ask();
    await settle();
    const waiting = ask();
    await settle();
    gate.acquire = true;
    slots.release(running.lease!);
    await settle();
    const err = new Error('shutting down');
    slots.close(err);
    await answerAcquires();
    expect(waiting.error).toBe(err);
    expect(waiting.lease).toBeUndefined();
    expect(await inStore()).toBe(0);
    expect(slots.held('b')).toBe(0);
    expect(view.get('b', clock.now()).inFlight).toBe(0);
    expect(clock.nextAtMs()).toBeUndefined();
  });
});

describe('Slots: asked after closing', () => {
  it('a request that asks for a slot after closing is refused at once with the closing error, without asking the store', async () => {
    const { slots, ask, inStore, acquisitions } = setUp();
    const err = new Error('shutting down');
    slots.close(err);
    const late = ask();
    await settle();
    expect(late.error).toBe(err);
    expect(acquisitions()).toBe(0);
    expect(await inStore()).toBe(0);
  });

  it('a request whose slot the store grants while closing is refused, and the slot goes back to the store', async () => {
    const { slots, gate, ask, answerAcquires, inStore } = setUp();
    gate.acquire = true;
    const asking = ask();
    await settle();
    const err = new Error('shutting down');
    slots.close(err);
    await answerAcquires();
    expect(asking.error).toBe(err);
    expect(slots.held('b')).toBe(0);
    expect(await inStore()).toBe(0);
  });

  it('a request refused by the store while closing is refused too, not queued', async () => {
    const { slots, gate, ask, elsewhere, answerAcquires } = setUp();
    await elsewhere();
    gate.acquire = true;
    const asking = ask();
    await settle();
    const err = new Error('shutting down');
    slots.close(err);
    await answerAcquires();
    expect(asking.error).toBe(err);
    expect(slots.waiting('b')).toBe(0);
  });
});
