import { Redis } from 'ioredis';
import { describe, expect, it } from 'vitest';
import { RedisStateStore } from '../../src/state/redis.js';
import { systemClock } from '../../src/clock.js';
import { Slots } from '../../src/pipeline/slots.js';
import { FairShare, shareFairShare } from '../../src/queue/fair-share.js';
import { ClusterView } from '../../src/state/cluster-view.js';
import type { Backend } from '../../src/types.js';
import { FAIR_SHARE_COUNTERS, type Grant, type Lease, type QueueTicket } from '../../src/state/store.js';
import { deleteFleet, freshPrefix, redisForFile } from '../helpers/redis-server.js';

/** The shared least-laxity-first queue of the Redis store, on a real Redis: replicas are stores with their own connections. */
const redis = redisForFile();
const { cleanups } = redis;

const TTL_MS = 10_000;
const OWNER_TTL_MS = 5_000;

/** `n` replicas of one fleet, each its own store (connection) under one fresh prefix. */
function fleet(n: number): { stores: RedisStateStore[]; keyPrefix: string } {
  const keyPrefix = freshPrefix();
  const stores = Array.from({ length: n }, () => new RedisStateStore(redis.server().url, { keyPrefix }));
  cleanups.push(() => deleteFleet(redis.server().url, keyPrefix), () => Promise.all(stores.map((s) => s.close())));
  return { stores, keyPrefix };
}

function admin(): Redis {
  const client = new Redis(redis.server().url);
  cleanups.push(async () => client.disconnect());
  return client;
}

const ticket = (id: string, owner: string, latestStartInMs: number, tag?: string): QueueTicket => ({ id, owner, ownerTtlMs: OWNER_TTL_MS, latestStartInMs, tag });

async function takeAll(store: RedisStateStore, owner: string, backendId = 'b'): Promise<string[]> {
  return (await store.takeGrants(owner, OWNER_TTL_MS, backendId, [])).grants.map((g: Grant) => g.ticketId);
}

describe('RedisStateStore shared queue', () => {
  it('grants a free slot at once, then queues, and a release grants the most urgent ticket of any replica', async () => {
    const { stores } = fleet(2);
    const [one, two] = stores as [RedisStateStore, RedisStateStore];
    const held = await one.acquireOrQueue('b', 1, TTL_MS, ticket('one.0', 'one', 1_000, 'chat'));
    expect(held).toMatchObject({ backendId: 'b', tag: 'chat' });
    expect(await one.acquireOrQueue('b', 1, TTL_MS, ticket('one.1', 'one', 60_000))).toBeUndefined();
    expect(await two.acquireOrQueue('b', 1, TTL_MS, ticket('two.0', 'two', 5_000, 'batch'))).toBeUndefined();
    expect(Object.fromEntries(await two.queued(['b', 'other']))).toEqual({ b: 2, other: 0 });

    await one.release(held!);
    // The slot went to two's ticket (its latest start comes first), not to the releasing replica's own.
    expect(await takeAll(one, 'one')).toEqual([]);
    const [grant] = (await two.takeGrants('two', OWNER_TTL_MS, 'b', [])).grants;
    expect(grant).toMatchObject({ ticketId: 'two.0', lease: { backendId: 'b', tag: 'batch' } });
    // Taken exactly once, and counted under the limit like any lease.
    expect(await takeAll(two, 'two')).toEqual([]);
    expect((await one.snapshot(['b'])).get('b')).toMatchObject({ inFlight: 1 });
    expect(Object.fromEntries((await one.snapshot(['b'])).get('b')!.byTag)).toEqual({ batch: 1 });

    await two.release(grant!.lease);
    expect(await takeAll(one, 'one')).toEqual(['one.1']);
    expect(Object.fromEntries(await one.queued(['b']))).toEqual({ b: 0 });
  });

  it('tells the owner of a granted ticket on its channel', async () => {
    const { stores } = fleet(2);
    const [one, two] = stores as [RedisStateStore, RedisStateStore];
    const heard: string[] = [];
    two.watchGrants('two', (backendId) => heard.push(backendId));
    const held = (await one.acquireOrQueue('b', 1, TTL_MS, ticket('one.0', 'one', 0)))!;
    // Subscribing takes a round trip: queue only once the subscription answers.
    await new Promise((resolve) => setTimeout(resolve, 100));
    await two.acquireOrQueue('b', 1, TTL_MS, ticket('two.0', 'two', 0));
    await one.release(held);
    await until(() => heard.length > 0);
    expect(heard).toEqual(['b']);
  });

  it('grants tickets still on time before late ones, each kind by latest start', async () => {
    const { stores } = fleet(1);
    const store = stores[0]!;
    const held = (await store.acquireOrQueue('b', 1, TTL_MS, ticket('r.held', 'r', 0)))!;
    await store.acquireOrQueue('b', 1, TTL_MS, ticket('late-older', 'r', -5_000));
    await store.acquireOrQueue('b', 1, TTL_MS, ticket('on-time-later', 'r', 60_000));
    await store.acquireOrQueue('b', 1, TTL_MS, ticket('late-newer', 'r', -10));
    await store.acquireOrQueue('b', 1, TTL_MS, ticket('on-time-sooner', 'r', 30_000));
    const order: string[] = [];
    let lease: Lease = held;
    for (let i = 0; i < 4; i++) {
      await store.release(lease);
      const [grant] = (await store.takeGrants('r', OWNER_TTL_MS, 'b', [])).grants;
      order.push(grant!.ticketId);
      lease = grant!.lease;
    }
    expect(order).toEqual(['on-time-sooner', 'on-time-later', 'late-older', 'late-newer']);
  });

  it('withdraws a waiting ticket, and hands back the lease of one granted but not yet taken', async () => {
    const { stores } = fleet(1);
    const store = stores[0]!;
    const held = (await store.acquireOrQueue('b', 1, TTL_MS, ticket('r.0', 'r', 0)))!;
    await store.acquireOrQueue('b', 1, TTL_MS, ticket('r.1', 'r', 0));
    await store.acquireOrQueue('b', 1, TTL_MS, ticket('r.2', 'r', 0));
    expect(await store.withdraw('b', 'r.2')).toBeUndefined();
    await store.release(held);
    const granted = await store.withdraw('b', 'r.1');
    expect(granted).toMatchObject({ backendId: 'b', tag: undefined });
    // Nothing is left to take or to grant; the slot is the withdrawing caller's until released.
    expect(await takeAll(store, 'r')).toEqual([]);
    expect((await store.snapshot(['b'])).get('b')?.inFlight).toBe(1);
    await store.release(granted!);
    expect((await store.snapshot(['b'])).get('b')?.inFlight).toBe(0);
    expect(Object.fromEntries(await store.queued(['b']))).toEqual({ b: 0 });
  });

  it('never grants a ticket twice, whatever replicas release and take concurrently', async () => {
    const { stores } = fleet(3);
    const limit = 3;
    const first = await Promise.all(Array.from({ length: limit }, (_, i) => stores[i]!.acquireOrQueue('b', limit, TTL_MS, ticket(`s${i}.held`, `s${i}`, 0))));
    const waiting = 60;
    await Promise.all(
      Array.from({ length: waiting }, (_, i) => stores[i % 3]!.acquireOrQueue('b', limit, TTL_MS, ticket(`s${i % 3}.${i}`, `s${i % 3}`, 60_000 + 100 * i))),
    );
    const granted: string[] = [];
    const rounds: number[][] = [];
    let leases = first.filter((l): l is Lease => l !== undefined);
    expect(leases).toHaveLength(limit);
    while (granted.length < waiting) {
      // Every holder releases at once, and every replica takes at once.
      await Promise.all(leases.map((lease, i) => stores[i % 3]!.release(lease)));
      const taken = (await Promise.all(stores.map((s, i) => s.takeGrants(`s${i}`, OWNER_TTL_MS, 'b', [])))).flatMap((t) => t.grants);
      expect(taken.length).toBeLessThanOrEqual(limit);
      expect((await stores[0]!.snapshot(['b'])).get('b')!.inFlight).toBeLessThanOrEqual(limit);
      granted.push(...taken.map((g) => g.ticketId));
      rounds.push(taken.map((g) => Number(g.ticketId.split('.')[1])));
      leases = taken.map((g) => g.lease);
    }
    await Promise.all(leases.map((lease) => stores[0]!.release(lease)));
    expect(new Set(granted).size).toBe(waiting);
    // Granted in latest-start order (ticket i's latest start is 60 s + 100·i ms from when it queued, a
    // spacing the queueing of concurrent calls cannot reorder): each round's grants come before the next's.
    for (let r = 1; r < rounds.length; r++) expect(Math.max(...rounds[r - 1]!)).toBeLessThan(Math.min(...rounds[r]!));
    expect((await stores[0]!.snapshot(['b'])).get('b')!.inFlight).toBe(0);
  });

  it("drops a dead replica's tickets once its owner ttl passes, and grants the slot to a live one", async () => {
    const { stores } = fleet(2);
    const [live, dying] = stores as [RedisStateStore, RedisStateStore];
    const held = (await live.acquireOrQueue('b', 1, TTL_MS, ticket('live.0', 'live', 0)))!;
    // The dying replica's ticket is the more urgent one.
    await dying.acquireOrQueue('b', 1, TTL_MS, { ...ticket('dying.0', 'dying', 5_000), ownerTtlMs: 100 });
    await live.acquireOrQueue('b', 1, TTL_MS, ticket('live.1', 'live', 10_000));
    await new Promise((resolve) => setTimeout(resolve, 250));
    await live.release(held);
    expect(await takeAll(live, 'live')).toEqual(['live.1']);
    expect(Object.fromEntries(await live.queued(['b']))).toEqual({ b: 0 });
  });

  it('returns the slot of a granted lease its owner never took, when the lease expires', async () => {
    const { stores, keyPrefix } = fleet(2);
    const [one, two] = stores as [RedisStateStore, RedisStateStore];
    const held = (await one.acquireOrQueue('b', 1, 300, ticket('one.0', 'one', 0)))!;
    await two.acquireOrQueue('b', 1, 300, ticket('two.0', 'two', 5_000));
    await one.acquireOrQueue('b', 1, 300, ticket('one.1', 'one', 10_000));
    await one.release(held); // granted to two.0, which two never takes (its replica hangs)
    await new Promise((resolve) => setTimeout(resolve, 450));
    expect(await takeAll(one, 'one')).toEqual(['one.1']);
    const redis = admin();
    expect(await redis.hlen(`{${keyPrefix}}:grants:b`)).toBe(0);
  });

  it('names the tickets it waits for that the store lost, and not those queued or granted', async () => {
    const { stores, keyPrefix } = fleet(1);
    const store = stores[0]!;
    const held = (await store.acquireOrQueue('b', 1, TTL_MS, ticket('r.0', 'r', 0)))!;
    await store.acquireOrQueue('b', 1, TTL_MS, ticket('r.1', 'r', 10_000));
    await store.acquireOrQueue('b', 1, TTL_MS, ticket('r.2', 'r', 20_000));
    await store.release(held); // r.1 granted, r.2 queued
    await admin().del(`{${keyPrefix}}:queue:b`); // r.2 lost (as by a restart without persistence)
    const taken = await store.takeGrants('r', OWNER_TTL_MS, 'b', ['r.1', 'r.2', 'r.9']);
    expect(taken.grants.map((g) => g.ticketId)).toEqual(['r.1']);
    expect(taken.missing).toEqual(['r.2', 'r.9']);
  });

  it("with tenant fairness, grants the least-served tenant's ticket first unless another's latest start is near", async () => {
    const { stores, keyPrefix } = fleet(1);
    const store = stores[0]!;
    await store.updateCounters(FAIR_SHARE_COUNTERS, [{ key: 'heavy', add: 1_000 }]);
    const fair = (id: string, tenant: string, latestStartInMs: number): QueueTicket => ({ ...ticket(id, 'r', latestStartInMs), tenant, urgentWithinMs: 1_000 });
    let lease = (await store.acquireOrQueue('b', 1, TTL_MS, fair('r.held', 'heavy', 0)))!;
    await store.acquireOrQueue('b', 1, TTL_MS, fair('heavy.soon', 'heavy', 10_000));
    await store.acquireOrQueue('b', 1, TTL_MS, fair('light.later', 'light', 20_000));
    await store.acquireOrQueue('b', 1, TTL_MS, fair('heavy.urgent', 'heavy', 500));
    const order: string[] = [];
    for (let i = 0; i < 3; i++) {
      await store.release(lease);
      const [grant] = (await store.takeGrants('r', OWNER_TTL_MS, 'b', [])).grants;
      order.push(grant!.ticketId);
      lease = grant!.lease;
    }
    // Urgent first whatever its tenant; then the light tenant, though its latest start is later.
    expect(order).toEqual(['heavy.urgent', 'light.later', 'heavy.soon']);
    expect((await admin().hget(`{${keyPrefix}}:counters:${FAIR_SHARE_COUNTERS}`, 'heavy'))).toBe('1000');
  });

  it('without tenant fairness, grants by latest start alone', async () => {
    const { stores } = fleet(1);
    const store = stores[0]!;
    await store.updateCounters(FAIR_SHARE_COUNTERS, [{ key: 'heavy', add: 1_000 }]);
    let lease = (await store.acquireOrQueue('b', 1, TTL_MS, ticket('r.held', 'r', 0)))!;
    await store.acquireOrQueue('b', 1, TTL_MS, { ...ticket('heavy.soon', 'r', 10_000), tenant: 'heavy' });
    await store.acquireOrQueue('b', 1, TTL_MS, { ...ticket('light.later', 'r', 20_000), tenant: 'light' });
    const order: string[] = [];
    for (let i = 0; i < 2; i++) {
      await store.release(lease);
      const [grant] = (await store.takeGrants('r', OWNER_TTL_MS, 'b', [])).grants;
      order.push(grant!.ticketId);
      lease = grant!.lease;
    }
    expect(order).toEqual(['heavy.soon', 'light.later']);
  });

  it("shares tenants' counters between replicas: service charged on one orders the other's queues", async () => {
    const { stores } = fleet(2);
    const [one, two] = [new FairShare(), new FairShare()];
    const errors: unknown[] = [];
    const stops = [shareFairShare(one, stores[0]!, systemClock, 50, (e) => errors.push(e)), shareFairShare(two, stores[1]!, systemClock, 50, (e) => errors.push(e))];
    cleanups.push(async () => stops.forEach((stop) => stop()));
    one.charge('alice', 300);
    two.charge('alice', 200);
    two.charge('bob', 50);
    await until(() => one.counter('alice') === 500 && two.counter('alice') === 500 && one.counter('bob') === 50);
    // Changes made between rounds are kept on top of what the store says.
    one.charge('bob', 10);
    expect(one.counter('bob')).toBe(60);
    await until(() => two.counter('bob') === 60);
    expect(errors).toEqual([]);
  });

  it("a replica's slots count the requests every replica has waiting on a backend, for placement", async () => {
    const { stores } = fleet(2);
    const slots = stores.map((store, i) => {
      const view = new ClusterView({ store, backendIds: ['b'], clock: systemClock, refreshMs: 60_000 });
      const made = new Slots({
        backends: [{ id: 'b', maxConcurrency: 1 } as Backend],
        store,
        view,
        clock: systemClock,
        leaseTtlMs: TTL_MS,
        maxQueueLength: 10,
        maxQueueMs: 60_000,
        fairShare: undefined,
        urgentWithinMs: 0,
        demoteLate: true,
        onStoreError: () => undefined,
        onLeaseLost: () => undefined,
        owner: `slots-${i}`,
      });
      cleanups.push(async () => made.close(new Error('closed')));
      return made;
    });
    const [here, there] = slots as [Slots, Slots];
    const request = { backend: { id: 'b', maxConcurrency: 1 } as Backend, priority: systemClock.now() + 60_000, tenant: 't', tag: 'x' };
    const held = await here.acquire(request);
    const waiting = [0, 1, 2].map(() => there.acquire(request).catch(() => undefined));
    const seen = here.queue('b');
    expect(seen.waiting).toBe(0);
    await until(() => seen.waiting === 3);
    expect(there.queue('b').waiting).toBe(3);
    here.release(held);
    await until(() => seen.waiting === 2);
    void waiting;
  });

  it('leaves no key of the queue behind once everything is released', async () => {
    const { stores, keyPrefix } = fleet(1);
    const store = stores[0]!;
    const held = (await store.acquireOrQueue('b', 1, TTL_MS, ticket('r.0', 'r', 0, 'x')))!;
    await store.acquireOrQueue('b', 1, TTL_MS, ticket('r.1', 'r', 0, 'y'));
    await store.release(held);
    const [grant] = (await store.takeGrants('r', OWNER_TTL_MS, 'b', [])).grants;
    await store.release(grant!.lease);
    const redis = admin();
    const p = `{${keyPrefix}}`;
    const sizes = await Promise.all([
      redis.zcard(`${p}:leases:b`),
      redis.hlen(`${p}:tags:b`),
      redis.zcard(`${p}:queue:b`),
      redis.hlen(`${p}:tickets:b`),
      redis.hlen(`${p}:grants:b`),
      redis.zcard(`${p}:grant-expiry:b`),
    ]);
    expect(sizes).toEqual([0, 0, 0, 0, 0, 0]);
  });
});

async function until(check: () => boolean, timeoutMs = 3_000): Promise<void> {
  const end = Date.now() + timeoutMs;
  while (!check()) {
    if (Date.now() > end) throw new Error('condition not met in time');
    await new Promise((resolve) => setTimeout(resolve, 5));
  }
}
