import { randomBytes } from 'node:crypto';
import { Cluster, Redis, ReplyError, type RedisOptions } from 'ioredis';
import { checkTakes, deepFreeze, isDurationMs, rejectArgument, warnListenerError } from './checks.js';
import { MemoryStateStore } from './memory-store.js';
import { defineScripts, type ScriptedClient } from './redis-scripts.js';
import {
  type BackendSnapshot,
  type BucketsTaken,
  type BucketTake,
  type CounterUpdate,
  FAIR_SHARE_COUNTERS,
  type Grant,
  type Lease,
  type PlanRecord,
  type PublishedPlan,
  type QueueingStore,
  type QueueTicket,
  type ReceivedTelemetry,
  type TakenGrants,
  type TelemetryRecord,
} from './store.js';

export interface RedisStateStoreOptions {
  /**
   * Names this fleet's keys: every key is `{keyPrefix}:…`, the braces a hash tag, so one fleet's keys
   * share a Redis Cluster slot and any script may touch any of them. Default `'freesh'`.
   */
  readonly keyPrefix?: string;
  /**
   * How long one call may wait for Redis before the store answers it from local state (ms). Set as
   * ioredis `commandTimeout` on a client the store builds, and enforced by the store itself on a
   * client it is given. Default 500.
   */
  readonly commandTimeoutMs?: number;
  /**
   * Router replicas sharing the fleet. While Redis is unreachable each replica admits on its own
   * local state, so each grants at most `ceil(limit / replicas)` leases per backend: together they
   * stay near the fleet's limit instead of multiplying it. Default 1.
   */
  readonly replicas?: number;
  /** How often Redis is pinged while the store is degraded, to notice it is back (ms). Default 1,000. */
  readonly healthCheckIntervalMs?: number;
  /**
   * Told once when Redis stops answering (a connection error or a timeout) and the store starts
   * answering from local state: log it, set a metric. Default: a process warning, code
   * `FREESH_STORE_DEGRADED`.
   */
  readonly onDegraded?: (error: unknown) => void;
  /** Told once when Redis answers again and new calls go back to it. */
  readonly onRecovered?: () => void;
  /** Told when a `watchPlans` listener throws. Default: a process warning, code `FREESH_PLAN_LISTENER`. */
  readonly onListenerError?: (error: unknown) => void;
  /**
   * ioredis options for a client the store builds from a URL (Sentinel, TLS, retry strategy…); they
   * override the store's defaults: `commandTimeout` from `commandTimeoutMs`, `maxRetriesPerRequest: 1`.
   * Ignored when a client is given.
   */
  readonly redis?: RedisOptions;
}

/** A Redis URL (`redis://`, `rediss://`, with password and database), or a client to share. */
export type RedisConnection = string | Redis | Cluster;

const DEFAULT_COMMAND_TIMEOUT_MS = 500;
const DEFAULT_HEALTH_CHECK_INTERVAL_MS = 1_000;
/** A failed plan read after the subscription (re)connected is retried this often until it succeeds. */
const PLAN_RESYNC_RETRY_MS = 250;
const LOCAL_LEASE_PREFIX = 'local:';
/** The TTL a running lease is written back with after Redis lost its data, when its backend's was never given. */
const DEFAULT_REWRITE_TTL_MS = 30_000;
/** Redis errors that say the server cannot serve now, rather than that the call was wrong. */
const UNAVAILABLE_REPLY = /^(LOADING|BUSY|MASTERDOWN|CLUSTERDOWN|TRYAGAIN|READONLY|NOREPLICAS)\b/;
const DONE: Promise<void> = Promise.resolve();

interface Subscription {
  readonly listener: (plan: PublishedPlan) => void;
  active: boolean;
  /** False until the plan version at watch time is known: nothing published before the watch is delivered. */
  ready: boolean;
  /** The newest version delivered (or current at watch time): older plans are never delivered. */
  seenVersion: number;
}

/** Raised by the store's own deadline on a call; like a connection error, it makes the store degraded. */
class DeadlineError extends Error {
  constructor(ms: number) {
    super(`Redis did not answer within ${ms} ms`);
    this.name = 'DeadlineError';
  }
}

/**
 * The cluster state of a fleet of router replicas and GPU agents, in Redis (standalone, Sentinel or
 * Cluster, through ioredis). Every operation that reads and writes is one Lua script, atomic in Redis,
 * with time read by `TIME` in the script: expiries are measured by Redis's clock, never a caller's.
 *
 * Degraded mode: when Redis does not answer (connection error, or no reply within
 * `commandTimeoutMs`), that call and later ones are answered by a local `MemoryStateStore`, so the
 * router keeps serving; `onDegraded` is told once and `degraded` reads true. Redis is pinged every
 * `healthCheckIntervalMs` (ioredis reconnects by itself); once it answers, `onRecovered` is told and
 * new calls go to Redis again. Nothing is counted twice and no lease leaks:
 * - a lease granted locally carries the id prefix `local:`, and its renewals and release stay local;
 *   while Redis is away each replica grants at most ⌈limit / replicas⌉ on a backend, less the Redis
 *   leases its callers still run there; when Redis answers again, the local leases still held are
 *   written to Redis (over any limit: they are running), and new acquisitions go there only a
 *   health-check period later, when every replica has noticed and written its own; their release
 *   frees them in both;
 * - a Redis lease released while Redis is down is left to expire there: its TTL frees the slot; its
 *   renewals are answered true meanwhile (the request keeps running), and a renewal after Redis returns
 *   says whether it outlived the outage;
 * - counters, rates, gauges, leadership, telemetry and plan publications made while degraded stay
 *   local and are dropped from view when Redis returns (each is a heuristic that Redis's own values
 *   supersede); plans published while degraded reach no listener, since no other replica can see them.
 */
export class RedisStateStore implements QueueingStore {
  readonly #client: Redis | Cluster;
  readonly #scripts: ScriptedClient;
  readonly #ownsClient: boolean;
  /** Its client times out every command (ioredis `commandTimeout`): no second timer per call. */
  readonly #timesItself: boolean;
  readonly #keys: Keys;
  readonly #commandTimeoutMs: number;
  readonly #replicas: number;
  readonly #healthCheckIntervalMs: number;
  readonly #onDegraded: (error: unknown) => void;
  readonly #onRecovered: () => void;
  readonly #onListenerError: (error: unknown) => void;
  /** Lease ids are unique across processes: a random prefix per store, then a counter. */
  readonly #idPrefix = randomBytes(6).toString('hex');
  #nextLeaseId = 0;

  readonly #local: MemoryStateStore;
  /** Leases granted locally during an outage and not yet released; `inRedis` once copied there on return. */
  readonly #localHeld = new Map<string, { readonly lease: Lease; readonly ttlMs: number; inRedis: boolean }>();
  /** Per backend, the ids of Redis leases this store granted and its callers have not released. */
  readonly #redisHeld = new Map<string, Map<string, Lease>>();
  /** Per backend, the lease TTL last asked for: grants made to tickets carry it. */
  readonly #ttlMs = new Map<string, number>();
  /** The token of the Redis data this store has seen (`P:epoch`): another one means Redis lost its data. */
  #epoch: string | undefined;
  #degraded = false;
  /** Redis lost its data (restarted without persistence) and the leases held through it are not written back yet. */
  #lostData = false;
  #healthCheck: NodeJS.Timeout | undefined;
  #closed = false;

  #subscriber: Redis | Cluster | undefined;
  /** Asks whether Redis is alive when a call was slow (opened at the first slow call). */
  #probe: Redis | Cluster | undefined;
  /** Settles when the first SUBSCRIBE has been answered (either way); undefined after. */
  #subscribing: Promise<void> | undefined;
  readonly #subscriptions = new Set<Subscription>();
  /** The newest plan this store has seen from Redis. */
  #latestPlan: PublishedPlan | undefined;
  #planResync: NodeJS.Timeout | undefined;
  /** Grant listeners by channel (one channel per owner). */
  readonly #grantListeners = new Map<string, Set<(backendId: string) => void>>();

  constructor(connection: RedisConnection, options: RedisStateStoreOptions = {}) {
    this.#commandTimeoutMs = positive(options.commandTimeoutMs ?? DEFAULT_COMMAND_TIMEOUT_MS, 'commandTimeoutMs');
    this.#healthCheckIntervalMs = positive(options.healthCheckIntervalMs ?? DEFAULT_HEALTH_CHECK_INTERVAL_MS, 'healthCheckIntervalMs');
    this.#replicas = options.replicas ?? 1;
    if (!(Number.isInteger(this.#replicas) && this.#replicas >= 1)) {
      throw new RangeError(`Expected \`replicas\` to be a positive integer, got \`${this.#replicas}\``);
    }
    this.#onDegraded = options.onDegraded ?? warnDegraded;
    this.#onRecovered = options.onRecovered ?? (() => undefined);
    this.#onListenerError = options.onListenerError ?? warnListenerError;
    this.#keys = new Keys(options.keyPrefix ?? 'freesh');
    this.#local = new MemoryStateStore({ onListenerError: this.#onListenerError });

    if (typeof connection === 'string') {
      this.#client = new Redis(connection, {
        commandTimeout: this.#commandTimeoutMs,
        maxRetriesPerRequest: 1,
        // Concurrent requests' scripts leave in one write (one syscall, one wake-up) per tick.
        enableAutoPipelining: true,
        ...options.redis,
      });
      // Connection errors reach the caller as degraded mode; ioredis would otherwise print each one.
      this.#client.on('error', () => undefined);
      this.#ownsClient = true;
      this.#timesItself = (this.#client.options.commandTimeout ?? 0) > 0;
    } else {
      this.#client = connection;
      this.#ownsClient = false;
      this.#timesItself = false;
    }
    this.#scripts = defineScripts(this.#client);
    this.#client.on('ready', () => void this.#checkEpoch());
    if (this.#client.status === 'ready') void this.#checkEpoch();
  }

  /** True while calls are answered from local state because Redis did not answer. */
  get degraded(): boolean {
    return this.#degraded;
  }

  /** False while Redis is unreachable: the shared queue is out of reach, and callers queue locally. */
  get queueing(): boolean {
    return !this.#degraded && !this.#closed;
  }

  tryAcquire(backendId: string, limit: number, ttlMs: number, tag?: string): Promise<Lease | undefined> {
    if (!(limit >= 0)) return rejectArgument('limit', 'a non-negative number', limit);
    if (!isDurationMs(ttlMs)) return rejectArgument('ttlMs', 'a positive finite number of milliseconds', ttlMs);
    return this.#route(
      async () => {
        const id = `${this.#idPrefix}-${(this.#nextLeaseId++).toString(36)}`;
        const args = [...this.#keys.lease(backendId), limit === Number.POSITIVE_INFINITY ? -1 : limit, ttlMs, id];
        if (tag !== undefined) args.push(tag);
        this.#ttlMs.set(backendId, ttlMs);
        const granted = await this.#scripts.freeshTryAcquire(...args);
        return granted === 1 ? this.#heldInRedis(Object.freeze({ id, backendId, tag })) : undefined;
      },
      (local) => this.#acquireLocally(local, backendId, limit, ttlMs, tag),
    );
  }

  renew(lease: Lease, ttlMs: number): Promise<boolean> {
    if (!isDurationMs(ttlMs)) return rejectArgument('ttlMs', 'a positive finite number of milliseconds', ttlMs);
    const local = localLease(lease);
    if (local !== undefined) {
      // Its copy in Redis (made when Redis came back) is kept alive with it.
      if (!this.#degraded && this.#localHeld.get(lease.id)?.inRedis) void this.#scripts.freeshRenew(...this.#keys.lease(lease.backendId), lease.id, ttlMs).catch(() => undefined);
      return this.#whileOpen(() => this.#local.renew(local, ttlMs));
    }
    return this.#route(
      async () => (await this.#scripts.freeshRenew(...this.#keys.lease(lease.backendId), lease.id, ttlMs)) === 1,
      () => Promise.resolve(true),
    );
  }

  release(lease: Lease): Promise<void> {
    const local = localLease(lease);
    if (local !== undefined) {
      const held = this.#localHeld.get(lease.id);
      this.#localHeld.delete(lease.id);
      if (held?.inRedis && !this.#degraded) void this.#releaseInRedis(lease).catch(() => undefined);
      return this.#whileOpen(() => this.#local.release(local));
    }
    this.#forget(lease);
    return this.#route(
      () => this.#releaseInRedis(lease),
      () => DONE,
    );
  }

  acquireOrQueue(backendId: string, limit: number, ttlMs: number, ticket: QueueTicket): Promise<Lease | undefined> {
    if (!(limit >= 0 && limit < Number.POSITIVE_INFINITY)) return rejectArgument('limit', 'a non-negative finite number', limit);
    if (!isDurationMs(ttlMs)) return rejectArgument('ttlMs', 'a positive finite number of milliseconds', ttlMs);
    if (!isDurationMs(ticket.ownerTtlMs)) return rejectArgument('ownerTtlMs', 'a positive finite number of milliseconds', ticket.ownerTtlMs);
    if (!Number.isFinite(ticket.latestStartInMs)) return rejectArgument('latestStartInMs', 'a finite number of milliseconds', ticket.latestStartInMs);
    return this.#route(
      async () => {
        const id = `${this.#idPrefix}-${(this.#nextLeaseId++).toString(36)}`;
        const { tag } = ticket;
        this.#ttlMs.set(backendId, ttlMs);
        const granted = await this.#scripts.freeshAcquireOrQueue(
          ...this.#keys.queue(backendId),
          backendId,
          limit,
          ttlMs,
          id,
          encodeTag(tag),
          ticket.id,
          ticket.owner,
          ticket.ownerTtlMs,
          ticket.latestStartInMs,
          this.#keys.grantChannelPrefix,
          encodeTag(ticket.tenant),
          ticket.urgentWithinMs ?? -1,
        );
        return granted === null ? undefined : this.#heldInRedis(Object.freeze({ id, backendId, tag }));
      },
      () => Promise.reject(queueUnreachable()),
    );
  }

  withdraw(backendId: string, ticketId: string): Promise<Lease | undefined> {
    return this.#route(
      async () => {
        const granted = (await this.#scripts.freeshWithdraw(...this.#keys.queue(backendId), ticketId)) as [string, string] | null;
        return granted === null ? undefined : this.#heldInRedis(Object.freeze({ id: granted[0], backendId, tag: decodeTag(granted[1]) }));
      },
      // The ticket stays in Redis; if it is granted later, its owner takes the grant and releases it.
      () => Promise.reject(queueUnreachable()),
    );
  }

  takeGrants(owner: string, ownerTtlMs: number, backendId: string, waits: readonly string[]): Promise<TakenGrants> {
    if (!isDurationMs(ownerTtlMs)) return rejectArgument('ownerTtlMs', 'a positive finite number of milliseconds', ownerTtlMs);
    return this.#route(
      async () => {
        const [flat, missing] = (await this.#scripts.freeshTakeGrants(
          ...this.#keys.queue(backendId),
          backendId,
          owner,
          ownerTtlMs,
          this.#keys.grantChannelPrefix,
          ...waits,
        )) as [string[], string[]];
        const grants: Grant[] = [];
        for (let i = 0; i < flat.length; i += 3) {
          grants.push({ ticketId: flat[i]!, lease: this.#heldInRedis(Object.freeze({ id: flat[i + 1]!, backendId, tag: decodeTag(flat[i + 2]!) })) });
        }
        return { grants, missing };
      },
      () => Promise.reject(queueUnreachable()),
    );
  }

  /** Hears `owner`'s grants on its channel, on the subscriber connection (opened at the first watch of any kind). */
  watchGrants(owner: string, listener: (backendId: string) => void): () => void {
    if (this.#closed) return () => undefined;
    const channel = this.#keys.grantChannelPrefix + owner;
    let listeners = this.#grantListeners.get(channel);
    if (listeners === undefined) {
      this.#grantListeners.set(channel, (listeners = new Set()));
      this.#subscribe();
      // ioredis subscribes again by itself after a reconnect; a grant missed meanwhile is taken by the owner's poll.
      this.#subscriber!.subscribe(channel).catch(() => undefined);
    }
    listeners.add(listener);
    return () => void listeners.delete(listener);
  }

  queued(backendIds: readonly string[]): Promise<ReadonlyMap<string, number>> {
    return this.#route(
      async () => {
        if (backendIds.length === 0) return new Map<string, number>();
        const keys = backendIds.map((id) => this.#keys.queue(id)[2]!);
        const counts = (await this.#scripts.freeshQueued(keys.length, ...keys)) as number[];
        return new Map(backendIds.map((id, i) => [id, counts[i]!]));
      },
      async () => new Map(backendIds.map((id) => [id, 0])),
    );
  }

  snapshot(backendIds: readonly string[]): Promise<ReadonlyMap<string, BackendSnapshot>> {
    return this.#route(
      async () => {
        const shared = new Map<string, BackendSnapshot>();
        if (backendIds.length > 0) {
          const keys = [this.#keys.health, ...backendIds.flatMap((id) => this.#keys.lease(id))];
          const rows = (await this.#scripts.freeshSnapshot(keys.length, ...keys, ...backendIds)) as [number, number, (string | number)[]][];
          backendIds.forEach((id, i) => shared.set(id, snapshotRow(rows[i]!)));
        }
        return withLocalHealth(shared, await this.#local.snapshot(backendIds));
      },
      (local) => local.snapshot(backendIds),
    );
  }

  markUnhealthy(backendId: string, forMs: number): Promise<void> {
    if (!(forMs >= 0 && forMs < Number.POSITIVE_INFINITY)) {
      return rejectArgument('forMs', 'a non-negative finite number of milliseconds', forMs);
    }
    return this.#route(
      async () => void (await this.#scripts.freeshMarkUnhealthy(this.#keys.health, backendId, forMs)),
      (local) => local.markUnhealthy(backendId, forMs),
    );
  }

  markHealthy(backendId: string): Promise<void> {
    return this.#route(
      async () => {
        await this.#client.hdel(this.#keys.health, backendId);
        // A mark made locally during an outage is lifted too.
        await this.#local.markHealthy(backendId);
      },
      (local) => local.markHealthy(backendId),
    );
  }

  updateCounters(name: string, updates: readonly CounterUpdate[]): Promise<ReadonlyMap<string, number>> {
    return this.#route(
      async () => {
        if (updates.length === 0) return new Map<string, number>();
        const args = updates.flatMap(({ key, add = 0, atLeast, floor }) => [key, add, atLeast ?? '', floor ?? '']);
        return pairs((await this.#scripts.freeshUpdateCounters(this.#keys.counters(name), ...args)) as string[]);
      },
      (local) => local.updateCounters(name, updates),
    );
  }

  readCounters(name: string): Promise<ReadonlyMap<string, number>> {
    return this.#route(
      async () => numbers(await this.#client.hgetall(this.#keys.counters(name))),
      (local) => local.readCounters(name),
    );
  }

  takeTokens(name: string, takes: readonly BucketTake[], force = false): Promise<BucketsTaken> {
    const bad = checkTakes(takes);
    if (bad) return bad;
    return this.#route(
      async () => {
        if (takes.length === 0) return { granted: true, levels: [], retryInMs: 0 };
        const args = takes.flatMap(({ key, capacity, perSecond, amount }) => [key, capacity, perSecond, amount]);
        const [granted, retryInMs, levels] = (await this.#scripts.freeshTakeTokens(this.#keys.buckets(name), force ? 1 : 0, ...args)) as [number, string, string[]];
        return { granted: granted === 1, levels: levels.map(Number), retryInMs: Number(retryInMs) };
      },
      // Each replica on local state takes from its share of every bucket, as it grants its share of slots.
      (local) => local.takeTokens(name, this.#replicas === 1 ? takes : takes.map((t) => ({ ...t, capacity: t.capacity / this.#replicas, perSecond: t.perSecond / this.#replicas })), force),
    );
  }

  deleteCounters(name: string, keys: readonly string[]): Promise<void> {
    return this.#route(
      async () => {
        if (keys.length > 0) await this.#client.hdel(this.#keys.counters(name), ...keys);
      },
      (local) => local.deleteCounters(name, keys),
    );
  }

  addRates(name: string, amounts: ReadonlyMap<string, number>, tauMs: number): Promise<void> {
    if (!isDurationMs(tauMs)) return rejectArgument('tauMs', 'a positive finite number of milliseconds', tauMs);
    return this.#route(
      async () => {
        if (amounts.size === 0) return;
        await this.#scripts.freeshAddRates(this.#keys.rates(name), tauMs, ...[...amounts].flat());
      },
      (local) => local.addRates(name, amounts, tauMs),
    );
  }

  readRates(name: string, tauMs: number): Promise<ReadonlyMap<string, number>> {
    if (!isDurationMs(tauMs)) return rejectArgument('tauMs', 'a positive finite number of milliseconds', tauMs);
    return this.#route(
      async () => {
        const [now, fields] = (await this.#scripts.freeshReadRates(this.#keys.rates(name))) as [string, string[]];
        const nowMs = Number(now);
        const out = new Map<string, number>();
        for (let i = 0; i < fields.length; i += 2) {
          const [value, atMs] = fields[i + 1]!.split(' ').map(Number) as [number, number];
          // Decayed sum over τ: a steady r per second accumulates r·τ, so this reads r.
          out.set(fields[i]!, (value * Math.exp(-Math.max(0, nowMs - atMs) / tauMs) * 1000) / tauMs);
        }
        return out;
      },
      (local) => local.readRates(name, tauMs),
    );
  }

  setGauges(name: string, values: ReadonlyMap<string, number>): Promise<void> {
    return this.#route(
      async () => {
        if (values.size > 0) await this.#client.hset(this.#keys.gauges(name), values);
      },
      (local) => local.setGauges(name, values),
    );
  }

  readGauges(name: string): Promise<ReadonlyMap<string, number>> {
    return this.#route(
      async () => numbers(await this.#client.hgetall(this.#keys.gauges(name))),
      (local) => local.readGauges(name),
    );
  }

  tryLead(role: string, holder: string, ttlMs: number): Promise<boolean> {
    if (!isDurationMs(ttlMs)) return rejectArgument('ttlMs', 'a positive finite number of milliseconds', ttlMs);
    return this.#route(
      async () => (await this.#scripts.freeshTryLead(this.#keys.lead(role), holder, ttlMs)) === 1,
      (local) => local.tryLead(role, holder, ttlMs),
    );
  }

  resign(role: string, holder: string): Promise<void> {
    return this.#route(
      async () => void (await this.#scripts.freeshResign(this.#keys.lead(role), holder)),
      (local) => local.resign(role, holder),
    );
  }

  publishPlan(plan: PlanRecord): Promise<number> {
    return this.#route(
      async () => {
        // A watch that began before this call sees this plan: publish once its subscription is made
        // (waiting at most half the deadline; past that, the watch gets the latest plan when it is).
        if (this.#subscribing !== undefined) await Promise.race([this.#subscribing, delay(this.#commandTimeoutMs / 2)]);
        const json = JSON.stringify(plan);
        return (await this.#scripts.freeshPublishPlan(this.#keys.planVersion, this.#keys.plan, json, this.#keys.plans)) as number;
      },
      (local) => local.publishPlan(plan),
    );
  }

  readPlan(): Promise<PublishedPlan | undefined> {
    return this.#route(
      async () => {
        const plan = parsePlan(await this.#client.get(this.#keys.plan));
        if (plan !== undefined) this.#notePlan(plan);
        return plan;
      },
      async (local) => (await local.readPlan()) ?? this.#latestPlan,
    );
  }

  /**
   * Delivers plans from Redis's pub/sub channel, on one subscriber connection (a duplicate of the
   * client) opened at the first watch. A listener is called in version order, never with a version
   * older than one it had, and never from inside `publishPlan`. Whenever the subscription is (re)made,
   * the current plan is read and delivered if newer, so a listener never misses the latest plan
   * across a reconnect; intermediate ones may be missed.
   */
  watchPlans(listener: (plan: PublishedPlan) => void): () => void {
    if (this.#closed) return () => undefined;
    const subscription: Subscription = { listener, active: true, ready: false, seenVersion: 0 };
    this.#subscriptions.add(subscription);
    this.#startBaseline(subscription);
    this.#subscribe();
    const subscriptions = this.#subscriptions;
    return function unwatchPlans(): void {
      subscription.active = false;
      subscriptions.delete(subscription);
    };
  }

  putTelemetry(record: TelemetryRecord, ttlMs: number): Promise<void> {
    if (!isDurationMs(ttlMs)) return rejectArgument('ttlMs', 'a positive finite number of milliseconds', ttlMs);
    return this.#route(
      async () => void (await this.#scripts.freeshPutTelemetry(this.#keys.telemetry, record.source, JSON.stringify(record), ttlMs)),
      (local) => local.putTelemetry(record, ttlMs),
    );
  }

  readTelemetry(): Promise<readonly ReceivedTelemetry[]> {
    return this.#route(
      async () => {
        const [now, ...stored] = (await this.#scripts.freeshReadTelemetry(this.#keys.telemetry)) as string[];
        const nowMs = Number(now);
        return stored.map((json) => {
          const { record, storedAtMs } = JSON.parse(json) as { record: TelemetryRecord; storedAtMs: number };
          return { ...record, ageMs: Math.max(0, nowMs - storedAtMs) };
        });
      },
      (local) => local.readTelemetry(),
    );
  }

  /** Stops watching and health checks; quits the client only if the store built it (and always its own subscriber). */
  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    clearTimeout(this.#healthCheck);
    clearTimeout(this.#planResync);
    for (const subscription of this.#subscriptions) subscription.active = false;
    this.#subscriptions.clear();
    const subscriber = this.#subscriber;
    this.#subscriber = undefined;
    const probe = this.#probe;
    this.#probe = undefined;
    await Promise.all([
      subscriber && this.#shutDown(subscriber),
      probe && this.#shutDown(probe),
      this.#ownsClient && this.#shutDown(this.#client),
      this.#local.close(),
    ]);
  }

  /**
   * Runs `remote` against Redis within the deadline, unless degraded; answers from local state when
   * Redis cannot (and from then on, until it answers a health check again).
   */
  async #route<T>(remote: () => Promise<T>, local: (store: MemoryStateStore) => Promise<T>): Promise<T> {
    if (this.#closed) throw new Error('The Redis state store is closed');
    if (this.#degraded) return local(this.#local);
    try {
      // A client built with ioredis's `commandTimeout` times its commands out itself.
      return await (this.#timesItself ? remote() : this.#deadline(remote()));
    } catch (error) {
      if (!isUnavailable(error)) throw error;
      // One slow reply is not an outage: while Redis still answers a ping, the call fails (the caller
      // retries) instead of every replica that saw a slow reply granting on local state, which the
      // replicas still on Redis do not count.
      if (isTimeout(error) && !this.#degraded && (await this.#answers())) throw error;
      this.#degrade(error);
      return local(this.#local);
    }
  }

  /** Whether Redis answers a ping within the deadline, on a connection of its own (not behind the slow call). */
  #answers(): Promise<boolean> {
    if (this.#probe === undefined) {
      this.#probe = this.#client instanceof Cluster ? this.#client.duplicate() : this.#client.duplicate({ maxRetriesPerRequest: 1 });
      this.#probe.on('error', () => undefined);
    }
    return this.#deadline(this.#probe.ping()).then(
      () => true,
      () => false,
    );
  }

  #whileOpen<T>(call: () => Promise<T>): Promise<T> {
    return this.#closed ? Promise.reject(new Error('The Redis state store is closed')) : call();
  }

  #deadline<T>(call: Promise<T>): Promise<T> {
    let timer: NodeJS.Timeout | undefined;
    const expired = new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new DeadlineError(this.#commandTimeoutMs)), this.#commandTimeoutMs);
    });
    return Promise.race([call, expired]).finally(() => clearTimeout(timer));
  }

  #degrade(error: unknown): void {
    if (this.#degraded || this.#closed) return;
    this.#degraded = true;
    callHook(() => this.#onDegraded(error));
    this.#scheduleHealthCheck();
  }

  #scheduleHealthCheck(): void {
    this.#healthCheck = setTimeout(() => {
      this.#deadline(this.#client.ping().then(() => this.#copyLocalLeases()))
        // Every other replica notices Redis within a health-check period and copies its own local leases:
        // only then may this one count on Redis. Leases granted here meanwhile are copied after.
        .then(() => delay(this.#healthCheckIntervalMs + this.#commandTimeoutMs))
        .then(() => this.#deadline(this.#copyLocalLeases()))
        .then(
        () => this.#recover(),
        () => {
          if (!this.#closed) this.#scheduleHealthCheck();
        },
      );
    }, this.#healthCheckIntervalMs);
    this.#healthCheck.unref();
  }

  /**
   * Before Redis counts again, the leases granted locally during the outage are written there (over
   * any limit: they are running), so no replica's next acquisition overlooks them.
   */
  async #copyLocalLeases(): Promise<void> {
    if (this.#lostData) {
      // Redis restarted without its data: the leases it granted this store's callers still run.
      for (const held of this.#redisHeld.values()) for (const lease of held.values()) await this.#writeLease(lease, this.#ttlMs.get(lease.backendId) ?? DEFAULT_REWRITE_TTL_MS);
      this.#lostData = false;
    }
    for (const held of this.#localHeld.values()) {
      if (held.inRedis) continue;
      await this.#writeLease(held.lease, held.ttlMs);
      held.inRedis = true;
    }
  }

  /** Writes a running lease to Redis over any limit (its request is already running). */
  async #writeLease(lease: Lease, ttlMs: number): Promise<void> {
    const args = [...this.#keys.lease(lease.backendId), -1, ttlMs, lease.id];
    if (lease.tag !== undefined) args.push(lease.tag);
    await this.#scripts.freeshTryAcquire(...args);
  }

  /**
   * On every (re)connection: whether Redis still has the data this store saw (its `P:epoch` token).
   * A Redis that restarted without persistence has lost every lease: the store then serves on local
   * state like in an outage, writes back the leases its callers still run, and counts on Redis again
   * a health-check period later, when every replica has done the same.
   */
  async #checkEpoch(): Promise<void> {
    try {
      const token = randomBytes(8).toString('hex');
      await this.#client.set(this.#keys.epoch, token, 'NX');
      const current = await this.#client.get(this.#keys.epoch);
      const seen = this.#epoch;
      this.#epoch = current ?? undefined;
      if (seen !== undefined && current !== seen) {
        this.#lostData = true;
        this.#degrade(new Error('Redis restarted without its data'));
      }
    } catch {
      // Redis went away again: the next call or reconnection finds out.
    }
  }

  /**
   * A local grant while Redis is away: at most ⌈limit / replicas⌉ on the backend, less the Redis
   * leases this store's callers still hold there (they are still running).
   */
  async #acquireLocally(local: MemoryStateStore, backendId: string, limit: number, ttlMs: number, tag: string | undefined): Promise<Lease | undefined> {
    const share = Math.max(0, Math.ceil(limit / this.#replicas) - (this.#redisHeld.get(backendId)?.size ?? 0));
    const granted = await local.tryAcquire(backendId, share, ttlMs, tag);
    if (granted === undefined) return undefined;
    const lease = Object.freeze({ id: LOCAL_LEASE_PREFIX + granted.id, backendId, tag });
    this.#localHeld.set(lease.id, { lease, ttlMs, inRedis: false });
    return lease;
  }

  #heldInRedis(lease: Lease): Lease {
    let held = this.#redisHeld.get(lease.backendId);
    if (held === undefined) this.#redisHeld.set(lease.backendId, (held = new Map()));
    held.set(lease.id, lease);
    return lease;
  }

  #forget(lease: Lease): void {
    this.#redisHeld.get(lease.backendId)?.delete(lease.id);
  }

  async #releaseInRedis(lease: Lease): Promise<void> {
    await this.#scripts.freeshReleaseAndGrant(...this.#keys.queue(lease.backendId), lease.backendId, lease.id, this.#keys.grantChannelPrefix);
  }

  #recover(): void {
    if (this.#closed || !this.#degraded) return;
    this.#degraded = false;
    callHook(this.#onRecovered);
    // Plans published while the main connection was down may have reached a subscriber that was down too.
    if (this.#subscriber !== undefined) this.#resyncPlan();
  }

  /** Learns the plan version current at watch time; until then the subscription receives nothing. */
  #startBaseline(subscription: Subscription): void {
    this.#deadline(this.#client.get(this.#keys.planVersion)).then(
      (version) => Number(version ?? 0),
      // Redis is unreachable: the newest plan this store has seen stands in for the current one.
      () => this.#latestPlan?.version ?? 0,
    ).then((version) => {
      subscription.seenVersion = Math.max(subscription.seenVersion, version);
      subscription.ready = true;
      if (this.#latestPlan !== undefined) this.#deliver([subscription], this.#latestPlan);
    });
  }

  #subscribe(): void {
    if (this.#subscriber !== undefined) return;
    // Its own connection (a subscribed one can send nothing else), waiting out outages instead of
    // failing fast: ioredis resubscribes when it reconnects.
    const subscriber =
      this.#client instanceof Cluster
        ? this.#client.duplicate()
        : this.#client.duplicate({ commandTimeout: undefined, maxRetriesPerRequest: null, enableOfflineQueue: true });
    this.#subscriber = subscriber;
    subscriber.on('error', () => undefined);
    subscriber.on('message', (channel: string, message: string) => {
      const grants = this.#grantListeners.get(channel);
      if (grants !== undefined) {
        for (const listener of grants) callHook(() => listener(message));
        return;
      }
      if (channel !== this.#keys.plans) return;
      const plan = parsePlan(message);
      if (plan !== undefined) this.#offerPlan(plan);
    });
    // A reconnect: ioredis has resent SUBSCRIBE before this runs, so a PING answered on the same
    // connection means the subscription is back; then the plan read catches anything published meanwhile.
    subscriber.on('ready', () => {
      subscriber.ping().then(() => this.#resyncPlan(), () => undefined);
    });
    this.#subscribing = subscriber.subscribe(this.#keys.plans).then(
      () => {
        this.#subscribing = undefined;
        this.#resyncPlan();
      },
      () => {
        this.#subscribing = undefined;
      },
    );
  }

  /** Reads the current plan and offers it; retried until Redis answers or the store closes. */
  #resyncPlan(): void {
    clearTimeout(this.#planResync);
    this.#planResync = undefined;
    this.#deadline(this.#client.get(this.#keys.plan)).then(
      (json) => {
        const plan = parsePlan(json);
        if (plan !== undefined) this.#offerPlan(plan);
      },
      () => {
        if (this.#closed || this.#planResync !== undefined) return;
        this.#planResync = setTimeout(() => this.#resyncPlan(), PLAN_RESYNC_RETRY_MS);
        this.#planResync.unref();
      },
    );
  }

  #offerPlan(plan: PublishedPlan): void {
    this.#notePlan(plan);
    this.#deliver([...this.#subscriptions], plan);
  }

  #notePlan(plan: PublishedPlan): void {
    if (this.#latestPlan === undefined || plan.version > this.#latestPlan.version) this.#latestPlan = plan;
  }

  #deliver(subscriptions: readonly Subscription[], plan: PublishedPlan): void {
    for (const subscription of subscriptions) {
      if (!subscription.active || !subscription.ready || plan.version <= subscription.seenVersion) continue;
      subscription.seenVersion = plan.version;
      try {
        subscription.listener(plan);
      } catch (error) {
        this.#onListenerError(error);
      }
    }
  }

  /** Quits politely when connected and answering, else drops the connection. */
  async #shutDown(client: Redis | Cluster): Promise<void> {
    if (client.status !== 'ready') {
      client.disconnect();
      return;
    }
    await this.#deadline(client.quit()).catch(() => client.disconnect());
  }
}

/** Builds a `RedisStateStore` on a URL (its client is then the store's, quit on close) or on a client to share. */
export function createRedisStateStore(connection: RedisConnection, options: RedisStateStoreOptions = {}): RedisStateStore {
  return new RedisStateStore(connection, options);
}

/** The key layout; `P` is `{keyPrefix}`, a Redis Cluster hash tag. */
class Keys {
  readonly health: string;
  readonly plan: string;
  readonly planVersion: string;
  /** The pub/sub channel plans are published on. */
  readonly plans: string;
  readonly telemetry: string;
  /** A replica hears grants to its tickets on this prefix followed by its name. */
  readonly grantChannelPrefix: string;
  /** A token written once per Redis dataset: when it changes, Redis lost its data. */
  readonly epoch: string;
  readonly #p: string;

  constructor(keyPrefix: string) {
    this.#p = `{${keyPrefix}}`;
    this.health = `${this.#p}:health`;
    this.plan = `${this.#p}:plan`;
    this.planVersion = `${this.#p}:plan-version`;
    this.plans = `${this.#p}:plans`;
    this.telemetry = `${this.#p}:telemetry`;
    this.grantChannelPrefix = `${this.#p}:granted:`;
    this.epoch = `${this.#p}:epoch`;
  }

  /**
   * What every queue script takes (./redis-scripts.ts): the backend's leases, tags, queue, tickets,
   * grants and grant expiries, then the fleet's owners, slot limits and tenants' counters.
   */
  queue(backendId: string): string[] {
    const p = this.#p;
    return [
      ...this.lease(backendId),
      `${p}:queue:${backendId}`,
      `${p}:tickets:${backendId}`,
      `${p}:grants:${backendId}`,
      `${p}:grant-expiry:${backendId}`,
      `${p}:owners`,
      `${p}:slot-limits`,
      this.counters(FAIR_SHARE_COUNTERS),
    ];
  }

  /** A backend's leases (ZSET id → expiry ms) and their tags (HASH id → tag). */
  lease(backendId: string): [leases: string, tags: string] {
    return [`${this.#p}:leases:${backendId}`, `${this.#p}:tags:${backendId}`];
  }

  counters(name: string): string {
    return `${this.#p}:counters:${name}`;
  }

  buckets(name: string): string {
    return `${this.#p}:buckets:${name}`;
  }

  gauges(name: string): string {
    return `${this.#p}:gauges:${name}`;
  }

  rates(name: string): string {
    return `${this.#p}:rates:${name}`;
  }

  lead(role: string): string {
    return `${this.#p}:lead:${role}`;
  }
}

/** A tag (or tenant) as the queue scripts write it: `+tag`, or `-` for none (an empty tag is still a tag). */
function encodeTag(tag: string | undefined): string {
  return tag === undefined ? '-' : `+${tag}`;
}

function decodeTag(encoded: string): string | undefined {
  return encoded === '-' ? undefined : encoded.slice(1);
}

/** The shared queue cannot be reached while Redis cannot: the caller queues locally instead. */
function queueUnreachable(): Error {
  return new Error('The shared queue is unreachable while Redis is: queue locally');
}

/** Whether an error says Redis could not serve (connection, timeout, failover), not that the call was wrong. */
function isUnavailable(error: unknown): boolean {
  if (!(error instanceof Error)) return false;
  // ioredis types ReplyError as `any`; the check is a plain prototype test.
  const isReply: boolean = error instanceof ReplyError;
  if (isReply) return UNAVAILABLE_REPLY.test(error.message);
  return !(error instanceof TypeError || error instanceof RangeError || error instanceof SyntaxError);
}

/** A reply that did not come in time (the store's deadline or ioredis's `commandTimeout`), as against a connection that failed. */
function isTimeout(error: unknown): boolean {
  return error instanceof DeadlineError || (error instanceof Error && /timed out/i.test(error.message));
}

/** The lease as the local store granted it, for a lease granted locally; else undefined. */
function localLease(lease: Lease): Lease | undefined {
  return lease.id.startsWith(LOCAL_LEASE_PREFIX) ? { ...lease, id: lease.id.slice(LOCAL_LEASE_PREFIX.length) } : undefined;
}

function snapshotRow([inFlight, healthy, flatTags]: [number, number, (string | number)[]]): BackendSnapshot {
  const byTag = new Map<string, number>();
  for (let i = 0; i < flatTags.length; i += 2) byTag.set(String(flatTags[i]), Number(flatTags[i + 1]));
  return Object.freeze({ inFlight, healthy: healthy === 1, byTag });
}

/** Redis's view with the health marks this store made locally during an outage (its local leases are in Redis since it returned). */
function withLocalHealth(
  shared: Map<string, BackendSnapshot>,
  local: ReadonlyMap<string, BackendSnapshot>,
): ReadonlyMap<string, BackendSnapshot> {
  for (const [id, mine] of local) {
    const theirs = shared.get(id);
    if (theirs === undefined || mine.healthy || !theirs.healthy) continue;
    shared.set(id, Object.freeze({ ...theirs, healthy: false }));
  }
  return shared;
}

function pairs(flat: readonly string[]): Map<string, number> {
  const out = new Map<string, number>();
  for (let i = 0; i < flat.length; i += 2) out.set(flat[i]!, Number(flat[i + 1]));
  return out;
}

function numbers(hash: Record<string, string>): Map<string, number> {
  return new Map(Object.entries(hash).map(([key, value]) => [key, Number(value)]));
}

/** A stored or published plan; anything else on the key or channel (not this store's writing) reads as none. */
function parsePlan(json: string | null): PublishedPlan | undefined {
  if (json === null) return undefined;
  try {
    return deepFreeze(JSON.parse(json) as PublishedPlan);
  } catch {
    return undefined;
  }
}

function delay(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms).unref());
}

function positive(value: number, name: string): number {
  if (!isDurationMs(value)) throw new RangeError(`Expected \`${name}\` to be a positive finite number of milliseconds, got \`${value}\``);
  return value;
}

/** A hook that throws must not turn a call answered from local state into a failure. */
function callHook(hook: () => void): void {
  try {
    hook();
  } catch (error) {
    process.emitWarning(error instanceof Error ? error : new Error(String(error)), { code: 'FREESH_STORE_HOOK' });
  }
}

function warnDegraded(error: unknown): void {
  const reason = error instanceof Error ? error.message : String(error);
  process.emitWarning(`Redis is unreachable (${reason}); serving from local state until it answers again`, {
    code: 'FREESH_STORE_DEGRADED',
  });
}

