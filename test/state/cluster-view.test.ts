import { describe, expect, it } from 'vitest';
import { VirtualClock } from '../../src/sim/virtual-clock.js';
import { ClusterView } from '../../src/state/cluster-view.js';
import { MemoryStateStore } from '../../src/state/memory-store.js';
import type { BackendSnapshot, Lease } from '../../src/state/store.js';

const REFRESH_MS = 1_000;

/**
 * A memory store whose snapshots can be held on their way back (`hold()`), or fail, as a remote
 * store's round trip may: the snapshot is read when asked for and answered when the test says.
 */
function gatedStore(clock: VirtualClock) {
  const store = new MemoryStateStore({ clock });
  const read = store.snapshot.bind(store);
  let holding = false;
  let failWith: Error | undefined;
  const held: (() => void)[] = [];
  let asked = 0;
  store.snapshot = (ids: readonly string[]): Promise<ReadonlyMap<string, BackendSnapshot>> => {
    asked++;
    if (failWith) return Promise.reject(failWith);
    const answer = read(ids);
    if (!holding) return answer;
    return new Promise((resolve) => held.push(() => resolve(answer)));
  };
  return {
    store,
    /** Snapshots asked of the store so far. */
    asked: () => asked,
    hold: () => void (holding = true),
    fail: (err: Error | undefined) => void (failWith = err),
    /** Lets the held answers through (and stops holding). */
    answer: () => {
      holding = false;
      for (const fn of held.splice(0)) fn();
    },
  };
}

function setUp(options: { onError?: (err: unknown) => void } = {}) {
  const clock = new VirtualClock();
  const gated = gatedStore(clock);
  const view = new ClusterView({ store: gated.store, backendIds: ['a', 'b'], clock, refreshMs: REFRESH_MS, ...options });
  /** A lease this router takes: from the store, then told to the view (as the router's slots do). */
  const take = async (backendId: string, tag?: string, ttlMs = 60_000): Promise<Lease> => {
    const lease = (await gated.store.tryAcquire(backendId, 100, ttlMs, tag))!;
    view.acquired(lease);
    return lease;
  };
  /** A lease another replica takes: the store knows it, this view only after a refresh. */
  const elsewhere = async (backendId: string, tag?: string): Promise<Lease> => (await gated.store.tryAcquire(backendId, 100, 60_000, tag))!;
  const now = (id = 'a') => view.get(id, clock.now());
  return { clock, ...gated, view, take, elsewhere, now };
}

/** Lets promise callbacks run (a refresh over the memory store settles within a few turns). */
const settle = () => new Promise((resolve) => setImmediate(resolve));

const tags = (view: { byTag: ReadonlyMap<string, number> }) => Object.fromEntries(view.byTag);

describe('ClusterView: this router’s leases', () => {
  it('counts a lease taken here at once, per backend and per tag, and forgets it when given back', async () => {
    const { view, take, now } = setUp();
    await view.start();
    const lease = await take('a', 'interactive');
    await take('a');
    expect(now('a')).toMatchObject({ inFlight: 2, healthy: true });
    expect(tags(now('a'))).toEqual({ interactive: 1 });
    expect(now('b').inFlight).toBe(0);
    view.released(lease);
    expect(now('a').inFlight).toBe(1);
    expect(now('a').byTag.size).toBe(0);
  });

  it('a lease on a backend the view does not follow changes nothing', async () => {
    const { view, store, now } = setUp();
    await view.start();
    const lease = (await store.tryAcquire('zzz', 1, 1_000, 't'))!;
    view.acquired(lease);
    view.released(lease);
    expect(now('a')).toMatchObject({ inFlight: 0 });
    expect(now('b')).toMatchObject({ inFlight: 0 });
  });

  it('a lease that expired in the store and is then given back never makes the count negative', async () => {
    const { clock, view, take, now } = setUp();
    await view.start();
    const lease = await take('a', 't', 100);
    clock.advance(REFRESH_MS);
    await settle();
    // The refresh found the expired lease gone; its request ends later and releases it.
    expect(now('a').inFlight).toBe(0);
    view.released(lease);
    expect(now('a').inFlight).toBe(0);
    expect(now('a').byTag.size).toBe(0);
  });

  it('a refresh does not count twice the leases taken before it was asked for', async () => {
    const { view, take, now } = setUp();
    await view.start();
    await take('a', 't');
    await take('a', 't');
    await view.refresh();
    expect(now('a').inFlight).toBe(2);
    expect(tags(now('a'))).toEqual({ t: 2 });
  });

  it('leases taken and given back while a snapshot is on its way are still counted once it arrives', async () => {
    const { view, take, hold, answer, now } = setUp();
    await view.start();
    const early = await take('a', 'batch');
    hold();
    const refreshed = view.refresh();
    // The snapshot was read before these.
    await take('a', 'interactive');
    await take('b', 'batch');
    view.released(early);
    answer();
    await refreshed;
    expect(now('a').inFlight).toBe(1);
    expect(tags(now('a'))).toEqual({ interactive: 1 });
    expect(now('b').inFlight).toBe(1);
    expect(tags(now('b'))).toEqual({ batch: 1 });
  });

  it('a refresh asked while another is on its way neither asks the store again nor loses a lease taken meanwhile', async () => {
    const { view, take, hold, answer, now, ...gated } = setUp();
    await view.start();
    const before = gated.asked();
    hold();
    const first = view.refresh();
    await take('a', 't');
    const second = view.refresh();
    await second;
    expect(gated.asked()).toBe(before + 1);
    answer();
    await first;
    expect(now('a').inFlight).toBe(1);
    expect(tags(now('a'))).toEqual({ t: 1 });
  });
});

describe('ClusterView: other replicas', () => {
  it('sees another replica’s leases at the next refresh, every refreshMs, and no longer once stopped', async () => {
    const { clock, view, elsewhere, now } = setUp();
    await elsewhere('a', 'batch');
    await view.start();
    expect(now('a').inFlight).toBe(1);
    expect(tags(now('a'))).toEqual({ batch: 1 });

    await elsewhere('a', 'interactive');
    clock.advance(REFRESH_MS - 1);
    await settle();
    expect(now('a').inFlight).toBe(1);
    clock.advance(1);
    await settle();
    expect(now('a').inFlight).toBe(2);
    expect(tags(now('a'))).toEqual({ batch: 1, interactive: 1 });

    await elsewhere('a');
    clock.advance(REFRESH_MS);
    await settle();
    expect(now('a').inFlight).toBe(3);

    view.stop();
    await elsewhere('a');
    clock.advance(10 * REFRESH_MS);
    await settle();
    expect(now('a').inFlight).toBe(3);
  });

  it('stopped while a refresh is on its way, it refreshes no more', async () => {
    const { clock, view, hold, answer, now, elsewhere, ...gated } = setUp();
    await view.start();
    hold();
    clock.advance(REFRESH_MS);
    const asked = gated.asked();
    view.stop();
    answer();
    await settle();
    await elsewhere('a');
    clock.advance(10 * REFRESH_MS);
    await settle();
    expect(gated.asked()).toBe(asked);
    expect(now('a').inFlight).toBe(0);
  });

  it('stopping a view never started is harmless', () => {
    const { view } = setUp();
    expect(() => view.stop()).not.toThrow();
  });

  it('a failed refresh is reported and keeps the last snapshot; the next one works again', async () => {
    const errors: unknown[] = [];
    const { clock, view, elsewhere, fail, now } = setUp({ onError: (err) => errors.push(err) });
    await elsewhere('a', 't');
    await view.start();
    const down = new Error('store down');
    fail(down);
    await elsewhere('a', 't');
    clock.advance(REFRESH_MS);
    await settle();
    expect(errors).toEqual([down]);
    expect(now('a').inFlight).toBe(1);
    expect(tags(now('a'))).toEqual({ t: 1 });
    fail(undefined);
    clock.advance(REFRESH_MS);
    await settle();
    expect(now('a').inFlight).toBe(2);
    expect(tags(now('a'))).toEqual({ t: 2 });
  });

  it('a failed refresh with nobody to tell is swallowed', async () => {
    const { view, fail } = setUp();
    fail(new Error('store down'));
    await expect(view.start()).resolves.toBeUndefined();
    view.stop();
  });
  it('a snapshot that leaves a backend out updates the others and keeps that one’s last figures', async () => {
    const errors: unknown[] = [];
    const { clock, view, store, take, elsewhere, now } = setUp({ onError: (err) => errors.push(err) });
    await elsewhere('b');
    await view.start();
    const read = store.snapshot;
    store.snapshot = async (ids) => {
      const all = await read(ids);
      return new Map([...all].filter(([id]) => id !== 'b'));
    };
    await take('b');
    await elsewhere('a');
    clock.advance(REFRESH_MS);
    await settle();
    expect(errors).toEqual([]);
    expect(now('a').inFlight).toBe(1);
    expect(now('b').inFlight).toBe(2);
  });
});

describe('ClusterView: health', () => {
  it('a mark made here takes the backend out at once, until exactly its end', async () => {
    const { clock, view, now } = setUp();
    await view.start();
    clock.advance(100);
    await view.markUnhealthy('a', 500, clock.now());
    expect(now('a').healthy).toBe(false);
    expect(now('b').healthy).toBe(true);
    expect(view.get('a', 599).healthy).toBe(false);
    expect(view.get('a', 600).healthy).toBe(true);
  });

  it('a shorter mark does not shorten a longer one in force', async () => {
    const { view } = setUp();
    await view.start();
    await view.markUnhealthy('a', 1_000, 0);
    await view.markUnhealthy('a', 10, 100);
    expect(view.get('a', 999).healthy).toBe(false);
    expect(view.get('a', 1_000).healthy).toBe(true);
  });

  it('a mark made here holds to its end even when the store, refreshed meanwhile, says healthy', async () => {
    const { clock, view, store, now } = setUp();
    await view.start();
    await view.markUnhealthy('a', 1_500, clock.now());
    // Another replica's probe passed: the store has the backend healthy again, this router's mark not yet ended.
    await store.markHealthy('a');
    clock.advance(REFRESH_MS);
    await settle();
    expect(now('a').healthy).toBe(false);
    clock.advance(500);
    expect(now('a').healthy).toBe(true);
  });

  it('a mark refreshed from the store after it ended here leaves the backend healthy', async () => {
    const { clock, view, now } = setUp();
    await view.start();
    await view.markUnhealthy('a', 500, clock.now());
    clock.advance(REFRESH_MS);
    await settle();
    expect(now('a').healthy).toBe(true);
  });

  it('another replica’s mark shows at the next refresh and holds until a refresh finds it ended', async () => {
    const { clock, view, store, now } = setUp();
    await view.start();
    await store.markUnhealthy('a', 1_500);
    expect(now('a').healthy).toBe(true);
    clock.advance(REFRESH_MS);
    await settle();
    expect(now('a').healthy).toBe(false);
    // The mark has ended in the store, but this view knows only at its next refresh.
    expect(view.get('a', 1_600).healthy).toBe(false);
    clock.advance(REFRESH_MS);
    await settle();
    expect(now('a').healthy).toBe(true);
  });

  it('marking healthy puts the backend back at once, whoever marked it, and tells the store', async () => {
    const { clock, view, store, now } = setUp();
    await view.start();
    await store.markUnhealthy('a', 10_000);
    await view.markUnhealthy('a', 10_000, clock.now());
    clock.advance(REFRESH_MS);
    await settle();
    expect(now('a').healthy).toBe(false);
    await view.markHealthy('a');
    expect(now('a').healthy).toBe(true);
    expect((await store.snapshot(['a'])).get('a')!.healthy).toBe(true);
    clock.advance(REFRESH_MS);
    await settle();
    expect(now('a').healthy).toBe(true);
  });

  it('with the store down from the start, a mark made here still ends at its time', async () => {
    const { view, fail } = setUp({ onError: () => undefined });
    fail(new Error('store down'));
    await view.start();
    await view.markUnhealthy('a', 100, 0);
    expect(view.get('a', 99).healthy).toBe(false);
    expect(view.get('a', 100).healthy).toBe(true);
    view.stop();
  });

  it('after marking healthy a backend the store had out, a later mark made here ends at its time', async () => {
    const { clock, view, store, now } = setUp();
    await view.start();
    await store.markUnhealthy('a', 10_000);
    clock.advance(REFRESH_MS);
    await settle();
    expect(now('a').healthy).toBe(false);
    await view.markHealthy('a');
    await view.markUnhealthy('a', 100, clock.now());
    expect(now('a').healthy).toBe(false);
    expect(view.get('a', clock.now() + 100).healthy).toBe(true);
  });

  it('marks on a backend the view does not follow still reach the store', async () => {
    const { view, store } = setUp();
    await view.markUnhealthy('zzz', 1_000, 0);
    expect((await store.snapshot(['zzz'])).get('zzz')!.healthy).toBe(false);
    await view.markHealthy('zzz');
    expect((await store.snapshot(['zzz'])).get('zzz')!.healthy).toBe(true);
  });

  it('a live view from ref() follows marks and their end through at()', async () => {
    const { view } = setUp();
    await view.start();
    const ref = view.ref('a');
    await view.markUnhealthy('a', 100, 0);
    expect(view.at(ref, 50).healthy).toBe(false);
    expect(view.at(ref, 100).healthy).toBe(true);
    expect(ref.healthy).toBe(true);
  });
});
