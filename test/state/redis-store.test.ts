import { Redis } from 'ioredis';
import { afterAll, afterEach, beforeAll, describe, expect, it, vi } from 'vitest';
import { createRedisStateStore, RedisStateStore, type RedisStateStoreOptions } from '../../src/state/redis.js';
import type { Lease, PlanRecord, PublishedPlan } from '../../src/state/store.js';
import { deleteFleet, freshPrefix, startPrivateRedis, startRedis, type RedisServer } from '../helpers/redis-server.js';
import { describeStateStore } from './conformance.js';

let server: RedisServer;
/** Closed after each test: stores, clients and fleets a test made. */
const cleanups: (() => Promise<unknown>)[] = [];

beforeAll(async () => {
  server = await startRedis();
});

afterEach(async () => {
  vi.restoreAllMocks();
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
});

afterAll(async () => {
  await server?.stop();
});

describeStateStore('RedisStateStore', async () => {
  const keyPrefix = freshPrefix();
  let degradedBy: unknown;
  const store = new RedisStateStore(server.url, {
    keyPrefix,
    onListenerError: () => undefined,
    onDegraded: (error) => (degradedBy ??= error),
  });
  return {
    store,
    advance: (ms) => sleep(ms),
    async close() {
      await store.close();
      await deleteFleet(server.url, keyPrefix);
      // The contract must hold on Redis itself, not on the local state of degraded mode.
      if (degradedBy !== undefined) throw new Error(`The store went degraded during the test: ${String(degradedBy)}`);
    },
  };
});

describe('RedisStateStore on a real Redis', () => {
  /** A store on the shared server under its own prefix, closed and cleaned up after the test. */
  function open(options: RedisStateStoreOptions = {}, url = server.url): { store: RedisStateStore; keyPrefix: string } {
    const keyPrefix = options.keyPrefix ?? freshPrefix();
    const store = new RedisStateStore(url, { onListenerError: () => undefined, ...options, keyPrefix });
    cleanups.push(() => deleteFleet(url, keyPrefix), () => store.close());
    return { store, keyPrefix };
  }

  function admin(url = server.url): Redis {
    const client = new Redis(url);
    client.on('error', () => undefined);
    cleanups.push(async () => client.disconnect());
    return client;
  }

  it('keeps fleets with different key prefixes apart on one server', async () => {
    const { store: one } = open();
    const { store: two } = open();
    await one.tryAcquire('b', 1, 10_000, 'chat');
    await one.markUnhealthy('b', 10_000);
    await one.updateCounters('tokens', [{ key: 'a', add: 1 }]);
    await one.publishPlan(PLAN);
    expect((await two.snapshot(['b'])).get('b')).toMatchObject({ inFlight: 0, healthy: true });
    expect(await two.tryAcquire('b', 1, 10_000)).toBeDefined();
    expect((await two.readCounters('tokens')).size).toBe(0);
    expect(await two.readPlan()).toBeUndefined();
    expect((await one.snapshot(['b'])).get('b')?.inFlight).toBe(1);
  });

  it('writes the documented key layout, and measures a lease by Redis time, not the caller’s clock', async () => {
    const { store, keyPrefix } = open();
    const redis = admin();
    const [seconds, micros] = await redis.time();
    const redisNowMs = Number(seconds) * 1_000 + Number(micros) / 1_000;
    const lease = (await store.tryAcquire('b', 1, 10_000, 'chat'))!;

    const P = `{${keyPrefix}}`;
    const expiresAtMs = Number(await redis.zscore(`${P}:leases:b`, lease.id));
    expect(expiresAtMs - redisNowMs).toBeGreaterThanOrEqual(10_000);
    expect(expiresAtMs - redisNowMs).toBeLessThan(11_000);
    expect(await redis.hget(`${P}:tags:b`, lease.id)).toBe('chat');
    await store.markUnhealthy('b', 10_000);
    expect(Number(await redis.hget(`${P}:health`, 'b'))).toBeGreaterThan(redisNowMs + 9_000);
    expect(await store.publishPlan(PLAN)).toBe(Number(await redis.get(`${P}:plan-version`)));
    expect(JSON.parse((await redis.get(`${P}:plan`))!)).toEqual({ ...PLAN, version: 1 });
    expect(await store.tryLead('planner', 'r1', 10_000)).toBe(true);
    expect(await redis.get(`${P}:lead:planner`)).toBe('r1');

    // The caller's clocks an hour ahead change nothing: the lease is still held, and renews.
    const hourMs = 3_600_000;
    const performanceNow = performance.now.bind(performance);
    const dateNow = Date.now.bind(Date);
    vi.spyOn(performance, 'now').mockImplementation(() => performanceNow() + hourMs);
    vi.spyOn(Date, 'now').mockImplementation(() => dateNow() + hourMs);
    expect(await store.tryAcquire('b', 1, 10_000)).toBeUndefined();
    expect(await store.renew(lease, 10_000)).toBe(true);
    expect((await store.snapshot(['b'])).get('b')).toMatchObject({ inFlight: 1, healthy: false });
  });

  it('is cleaned up by SCAN on its prefix, leaving other fleets alone', async () => {
    const { store, keyPrefix } = open();
    const { store: other, keyPrefix: otherPrefix } = open();
    await store.tryAcquire('b', 1, 10_000, 'chat');
    await store.updateCounters('tokens', [{ key: 'a', add: 1 }]);
    await store.putTelemetry({ source: 's', kind: 'gpu', values: { powerW: 1 } }, 10_000);
    await other.setGauges('g', new Map([['a', 1]]));
    const redis = admin();
    const count = async (prefix: string): Promise<number> => (await redis.scan('0', 'MATCH', `{${prefix}}:*`, 'COUNT', 10_000))[1].length;
    expect(await count(keyPrefix)).toBeGreaterThanOrEqual(4);

    await deleteFleet(server.url, keyPrefix);
    expect(await count(keyPrefix)).toBe(0);
    expect(await redis.exists(`{${otherPrefix}}:gauges:g`)).toBe(1);
  });

  it('uses the database named in the URL', async () => {
    const url = new URL(server.url);
    url.pathname = '/5';
    const { store, keyPrefix } = open({}, url.toString());
    await store.updateCounters('tokens', [{ key: 'a', add: 3 }]);
    const db5 = admin(url.toString());
    expect(await db5.hget(`{${keyPrefix}}:counters:tokens`, 'a')).toBe('3');
    url.pathname = '/0';
    expect(await admin(url.toString()).exists(`{${keyPrefix}}:counters:tokens`)).toBe(0);
  });

  it('leaves a client it was given open on close, and quits one it built (and its subscriber)', async () => {
    const keyPrefix = freshPrefix();
    cleanups.push(() => deleteFleet(server.url, keyPrefix));
    const client = admin();
    const given = createRedisStateStore(client, { keyPrefix });
    given.watchPlans(() => undefined);
    await given.publishPlan(PLAN);
    await given.close();
    expect(client.status).toBe('ready');
    expect(await client.ping()).toBe('PONG');

    const connectionName = `freesh-${freshPrefix()}`;
    const built = createRedisStateStore(server.url, { keyPrefix, redis: { connectionName } });
    built.watchPlans(() => undefined);
    await built.readPlan();
    await until(async () => (await clientsNamed(client, connectionName)).length === 2, 'the store and its subscriber are connected');
    await built.close();
    await until(async () => (await clientsNamed(client, connectionName)).length === 0, 'both connections are gone');
  });

  it('delivers the latest plan after its subscriber connection is killed', async () => {
    const keyPrefix = freshPrefix();
    const connectionName = `freesh-${freshPrefix()}`;
    const { store: watcher } = open({ keyPrefix, redis: { connectionName } });
    const { store: publisher } = open({ keyPrefix });
    const received: PublishedPlan[] = [];
    watcher.watchPlans((plan) => received.push(plan));
    // The watch has begun once the watcher's connection answers: a plan another store published
    // before that is one from before the watch.
    await watcher.readPlan();
    const first = await publisher.publishPlan(PLAN);
    await waitFor(() => received.at(-1)?.version === first, 'the first plan is delivered');

    const redis = admin();
    const [subscriber] = (await clientsNamed(redis, connectionName)).filter((line) => / sub=1 /.test(line));
    const id = /(?:^| )id=(\d+)/.exec(subscriber!)![1]!;
    expect(await redis.client('KILL', 'ID', id)).toBe(1);
    // Published while the subscriber is reconnecting: the message itself is lost.
    const second = await publisher.publishPlan({ ...PLAN, note: 'while reconnecting' });
    await waitFor(() => received.at(-1)?.version === second, 'the plan published during the reconnect is delivered');
    const third = await publisher.publishPlan({ ...PLAN, note: 'after' });
    await waitFor(() => received.at(-1)?.version === third, 'plans published after the reconnect are delivered');

    const versions = received.map((plan) => plan.version);
    expect(versions).toEqual([...new Set(versions)].sort((a, b) => a - b));
    expect(received.at(-1)).toEqual({ ...PLAN, note: 'after', version: third });
  });

  it('serves from local state while Redis is down, and rejoins without double counting', async () => {
    const own = await startPrivateRedis();
    cleanups.push(() => own.stop());
    const degraded: unknown[] = [];
    let recovered = 0;
    const commandTimeoutMs = 300;
    const store = new RedisStateStore(own.url, {
      keyPrefix: freshPrefix(),
      commandTimeoutMs,
      healthCheckIntervalMs: 100,
      replicas: 2,
      onDegraded: (error) => degraded.push(error),
      onRecovered: () => recovered++,
    });
    cleanups.push(() => store.close());
    const inRedis = async (): Promise<number> => {
      const redis = admin(own.url);
      const leaseKeys = (await redis.scan('0', 'MATCH', '*:leases:b', 'COUNT', 1_000))[1];
      return leaseKeys.length === 0 ? 0 : redis.zcard(leaseKeys[0]!);
    };

    const before = (await store.tryAcquire('b', 4, 30_000))!;
    expect(await inRedis()).toBe(1);
    expect(store.degraded).toBe(false);

    await own.stop();
    const started = performance.now();
    const local = (await store.tryAcquire('b', 4, 30_000, 'chat'))!;
    expect(performance.now() - started).toBeLessThan(commandTimeoutMs + 250);
    expect(local.id).toMatch(/^local:/);
    expect(store.degraded).toBe(true);
    expect(degraded).toHaveLength(1);

    // Each of 2 replicas may grant ⌈4 / 2⌉ locally, less the Redis lease its caller still runs.
    expect(await store.tryAcquire('b', 4, 30_000)).toBeUndefined();
    const answering = performance.now();
    await store.release(before); // a Redis lease: left to expire there, and no longer running here
    const other = (await store.tryAcquire('b', 4, 30_000))!;
    expect(other.id).toMatch(/^local:/);
    expect(await store.tryAcquire('b', 4, 30_000)).toBeUndefined();
    expect((await store.snapshot(['b'])).get('b')).toMatchObject({ inFlight: 2, healthy: true });
    expect(await store.renew(local, 30_000)).toBe(true);
    expect(Object.fromEntries(await store.updateCounters('tokens', [{ key: 'a', add: 2 }]))).toEqual({ a: 2 });
    expect(await store.tryLead('planner', 'r1', 1_000)).toBe(true);
    expect(performance.now() - answering).toBeLessThan(200);
    expect(degraded).toHaveLength(1);

    await own.restart(); // empty: the server keeps nothing across restarts
    await waitFor(() => !store.degraded, 'the store rejoins Redis', 10_000);
    expect(recovered).toBe(1);
    // The two leases still held locally were written to Redis before it counted again.
    expect(await inRedis()).toBe(2);

    const shared = (await store.tryAcquire('b', 4, 30_000, 'chat'))!;
    expect(shared.id).not.toMatch(/^local:/);
    expect(await inRedis()).toBe(3);
    expect((await store.snapshot(['b'])).get('b')?.inFlight).toBe(3);
    expect(Object.fromEntries((await store.snapshot(['b'])).get('b')!.byTag)).toEqual({ chat: 2 });
    // Redis counts the local leases for every replica: 1 more, not 3.
    expect(await store.tryAcquire('b', 4, 30_000)).toBeDefined();
    expect(await store.tryAcquire('b', 4, 30_000)).toBeUndefined();
    expect(await inRedis()).toBe(4);

    // Local leases renew locally (and their copy in Redis) and release in both, once.
    expect(await store.renew(local, 30_000)).toBe(true);
    await store.release(local);
    await store.release(local);
    await until(async () => (await inRedis()) === 3, 'the local lease is gone from Redis too');
    expect((await store.snapshot(['b'])).get('b')?.inFlight).toBe(3);
    await store.release(other);
    await store.release(shared);
    await until(async () => (await inRedis()) === 1, 'both are gone from Redis');
    expect((await store.snapshot(['b'])).get('b')).toMatchObject({ inFlight: 1, healthy: true });
    expect(degraded).toHaveLength(1);
  });

  it('takes from its share of each token bucket while Redis is down', async () => {
    const own = await startPrivateRedis();
    cleanups.push(() => own.stop());
    const store = new RedisStateStore(own.url, { keyPrefix: freshPrefix(), commandTimeoutMs: 300, healthCheckIntervalMs: 100, replicas: 4, onDegraded: () => undefined });
    cleanups.push(() => store.close());
    const bucket = (amount: number) => [{ key: 'k', capacity: 8, perSecond: 0.01, amount }];
    expect((await store.takeTokens('rl', bucket(1))).granted).toBe(true);
    await own.stop();
    // Each of 4 replicas: 8 / 4 = 2 while on local state.
    expect((await store.takeTokens('rl', bucket(2))).granted).toBe(true);
    expect(store.degraded).toBe(true);
    expect((await store.takeTokens('rl', bucket(1))).granted).toBe(false);
  });

  it('fails a call Redis is slow to answer while it still answers pings, instead of going to local state', async () => {
    // A server of its own: the pause holds every client's writes.
    const own = await startPrivateRedis();
    cleanups.push(() => own.stop());
    const degraded: unknown[] = [];
    const { store } = open({ commandTimeoutMs: 200, onDegraded: (error) => degraded.push(error) }, own.url);
    expect(await store.tryAcquire('b', 1, 10_000)).toBeDefined();
    // Writes (scripts included) wait; PING does not.
    await admin(own.url).call('CLIENT', 'PAUSE', '600', 'WRITE');
    await expect(store.tryAcquire('b', 1, 10_000)).rejects.toThrow(/timed out|did not answer/);
    expect(store.degraded).toBe(false);
    expect(degraded).toEqual([]);
  });

  it('rejects an argument that is not one, with the memory store’s messages', async () => {
    const { store } = open();
    const lease: Lease = { id: 'x', backendId: 'b', tag: undefined };
    await expect(store.tryAcquire('b', 1, 0)).rejects.toThrow('Expected `ttlMs` to be a positive finite number of milliseconds, got `0`');
    await expect(store.tryAcquire('b', Number.NaN, 1_000)).rejects.toThrow('Expected `limit` to be a non-negative number, got `NaN`');
    await expect(store.renew(lease, Number.POSITIVE_INFINITY)).rejects.toThrow('`ttlMs`');
    await expect(store.markUnhealthy('b', -1)).rejects.toThrow('`forMs`');
    await expect(store.addRates('r', new Map(), 0)).rejects.toThrow('`tauMs`');
    await expect(store.readRates('r', -5)).rejects.toThrow('`tauMs`');
    await expect(store.tryLead('planner', 'a', Number.NaN)).rejects.toThrow('`ttlMs`');
    await expect(store.putTelemetry({ source: 's', kind: 'gpu', values: {} }, 0)).rejects.toThrow('`ttlMs`');
    expect(store.degraded).toBe(false);
  });
});

const PLAN: PlanRecord = {
  origin: 'r1',
  status: 'ok',
  active: ['a'],
  clockFraction: { a: 0.8 },
  shares: { chat: { a: 1 } },
  forecastRps: { chat: 1.5 },
  objectiveRate: 0.1,
  note: '',
};

/** CLIENT LIST lines of the connections carrying a name. */
async function clientsNamed(redis: Redis, name: string): Promise<string[]> {
  const list = (await redis.client('LIST')) as string;
  return list.split('\n').filter((line) => line.includes(` name=${name} `));
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

async function waitFor(condition: () => boolean, what: string, timeoutMs = 5_000): Promise<void> {
  await until(async () => condition(), what, timeoutMs);
}

async function until(condition: () => Promise<boolean>, what: string, timeoutMs = 5_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await condition())) {
    if (Date.now() > deadline) throw new Error(`Timed out waiting until ${what}`);
    await sleep(10);
  }
}
