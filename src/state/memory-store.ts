import { randomBytes } from 'node:crypto';
import TinyQueue from 'tinyqueue';
import { systemClock, type Clock } from '../clock.js';
import { checkTakes, deepFreeze, isDurationMs, rejectArgument, warnListenerError } from './checks.js';
import type {
  BackendSnapshot,
  BucketsTaken,
  BucketTake,
  CounterUpdate,
  Lease,
  PlanRecord,
  PublishedPlan,
  ReceivedTelemetry,
  StateStore,
  TelemetryRecord,
} from './store.js';

export interface MemoryStateStoreOptions {
  /**
   * Measures every duration the store is given: lease TTLs, health marks, rate decay, leader leases
   * and telemetry ages. Default `systemClock`; the simulator passes its virtual clock.
   */
  readonly clock?: Clock;
  /**
   * Told when a `watchPlans` listener throws (the other listeners are still called). Default: a
   * process warning, so a faulty listener is visible without taking the process down.
   */
  readonly onListenerError?: (error: unknown) => void;
}

/** One settled promise for every call that returns nothing: the store does no I/O. */
const DONE: Promise<void> = Promise.resolve();
const NO_TAGS: ReadonlyMap<string, number> = new Map();
const HEALTHY_IDLE: BackendSnapshot = Object.freeze({ inFlight: 0, healthy: true, byTag: NO_TAGS });
/**
 * The expiry heap is rebuilt from the live leases once stale entries (released leases, shortened
 * renewals) outnumber them: each rebuild costs O(heap) and follows at least heap/2 operations that
 * made an entry stale, so it stays O(1) amortised. The slack keeps small heaps from rebuilding often.
 */
const HEAP_REBUILD_FACTOR = 2;
const HEAP_REBUILD_SLACK = 1_024;

interface BackendRecord {
  inFlight: number;
  readonly byTag: Map<string, number>;
  /** -Infinity when no mark holds. */
  unhealthyUntilMs: number;
  /** The last snapshot handed out, reused until the backend changes. */
  view: BackendSnapshot | undefined;
}

interface LeaseRecord {
  readonly lease: Lease;
  readonly backend: BackendRecord;
  expiresAtMs: number;
  /** The heap entry that stands for this lease; older entries for it are stale. */
  entry: ExpiryEntry;
  live: boolean;
}

interface ExpiryEntry {
  /** When to look at the lease again: never later than its expiry (a renewal may have pushed that on). */
  readonly atMs: number;
  readonly record: LeaseRecord;
}

interface RateRecord {
  /** Sum of amounts, each decayed to `atMs`. */
  value: number;
  atMs: number;
}

interface BucketRecord {
  readonly level: number;
  readonly atMs: number;
}

interface Subscription {
  readonly listener: (plan: PublishedPlan) => void;
  active: boolean;
}

interface StoredTelemetry {
  readonly record: TelemetryRecord;
  readonly storedAtMs: number;
  readonly expiresAtMs: number;
}

/**
 * The default store: one process, no I/O, every call settled at once. Leases are O(1) amortised
 * (expiries swept lazily from a min-heap when the earliest has passed), `snapshot` is O(ids).
 */
export class MemoryStateStore implements StateStore {
  readonly #clock: Clock;
  readonly #onListenerError: (error: unknown) => void;
  /** Lease ids are unique across stores too: a lease handed to the wrong store is then just unknown. */
  readonly #idPrefix = randomBytes(4).toString('hex');
  #nextLeaseId = 0;

  readonly #leases = new Map<string, LeaseRecord>();
  #expiries = newExpiryHeap([]);
  readonly #backends = new Map<string, BackendRecord>();
  readonly #counters = new Map<string, Map<string, number>>();
  readonly #rates = new Map<string, Map<string, RateRecord>>();
  readonly #gauges = new Map<string, Map<string, number>>();
  readonly #buckets = new Map<string, Map<string, BucketRecord>>();
  readonly #leaders = new Map<string, { readonly holder: string; untilMs: number }>();
  /** Survives `close`, so a version is never handed out twice by one store. */
  #planVersion = 0;
  #plan: PublishedPlan | undefined;
  readonly #subscriptions = new Set<Subscription>();
  readonly #telemetry = new Map<string, StoredTelemetry>();

  constructor(options: MemoryStateStoreOptions = {}) {
    this.#clock = options.clock ?? systemClock;
    this.#onListenerError = options.onListenerError ?? warnListenerError;
  }

  tryAcquire(backendId: string, limit: number, ttlMs: number, tag?: string): Promise<Lease | undefined> {
    if (!(limit >= 0)) return rejectArgument('limit', 'a non-negative number', limit);
    if (!isDurationMs(ttlMs)) return rejectArgument('ttlMs', 'a positive finite number of milliseconds', ttlMs);
    const nowMs = this.#clock.now();
    this.#sweep(nowMs);
    const backend = this.#backend(backendId);
    if (backend.inFlight >= limit) return Promise.resolve(undefined);

    const lease: Lease = Object.freeze({ id: `${this.#idPrefix}-${(this.#nextLeaseId++).toString(36)}`, backendId, tag });
    const expiresAtMs = nowMs + ttlMs;
    const record = { lease, backend, expiresAtMs, live: true } as LeaseRecord;
    record.entry = { atMs: expiresAtMs, record };
    this.#leases.set(lease.id, record);
    this.#schedule(record.entry);
    backend.inFlight++;
    if (tag !== undefined) backend.byTag.set(tag, (backend.byTag.get(tag) ?? 0) + 1);
    backend.view = undefined;
    return Promise.resolve(lease);
  }

  renew(lease: Lease, ttlMs: number): Promise<boolean> {
    if (!isDurationMs(ttlMs)) return rejectArgument('ttlMs', 'a positive finite number of milliseconds', ttlMs);
    const record = this.#leases.get(lease.id);
    if (record === undefined) return Promise.resolve(false);
    const nowMs = this.#clock.now();
    // Expired, even if not swept yet: expiry is final, so a holder that stalled past its TTL learns
    // that it lost the slot however late the sweep runs.
    if (record.expiresAtMs <= nowMs) {
      this.#drop(record);
      return Promise.resolve(false);
    }
    record.expiresAtMs = nowMs + ttlMs;
    // A later expiry is picked up when the old entry comes due; only an earlier one needs an entry now.
    if (record.expiresAtMs < record.entry.atMs) {
      record.entry = { atMs: record.expiresAtMs, record };
      this.#schedule(record.entry);
    }
    return Promise.resolve(true);
  }

  release(lease: Lease): Promise<void> {
    const record = this.#leases.get(lease.id);
    if (record !== undefined) this.#drop(record);
    return DONE;
  }

  snapshot(backendIds: readonly string[]): Promise<ReadonlyMap<string, BackendSnapshot>> {
    const nowMs = this.#clock.now();
    this.#sweep(nowMs);
    const out = new Map<string, BackendSnapshot>();
    for (const id of backendIds) {
      const backend = this.#backends.get(id);
      out.set(id, backend === undefined ? HEALTHY_IDLE : view(backend, nowMs));
    }
    return Promise.resolve(out);
  }

  markUnhealthy(backendId: string, forMs: number): Promise<void> {
    if (!(forMs >= 0 && forMs < Number.POSITIVE_INFINITY)) {
      return rejectArgument('forMs', 'a non-negative finite number of milliseconds', forMs);
    }
    const backend = this.#backend(backendId);
    const untilMs = this.#clock.now() + forMs;
    if (untilMs > backend.unhealthyUntilMs) {
      backend.unhealthyUntilMs = untilMs;
      backend.view = undefined;
    }
    return DONE;
  }

  markHealthy(backendId: string): Promise<void> {
    const backend = this.#backends.get(backendId);
    if (backend !== undefined) {
      backend.unhealthyUntilMs = Number.NEGATIVE_INFINITY;
      backend.view = undefined;
    }
    return DONE;
  }

  updateCounters(name: string, updates: readonly CounterUpdate[]): Promise<ReadonlyMap<string, number>> {
    let counters = this.#counters.get(name);
    if (counters === undefined) this.#counters.set(name, (counters = new Map()));
    const out = new Map<string, number>();
    for (const { key, add = 0, atLeast = Number.NEGATIVE_INFINITY, floor = Number.NEGATIVE_INFINITY } of updates) {
      const value = Math.max((counters.get(key) ?? 0) + add, atLeast, floor);
      counters.set(key, value);
      out.set(key, value);
    }
    return Promise.resolve(out);
  }

  readCounters(name: string): Promise<ReadonlyMap<string, number>> {
    return Promise.resolve(new Map(this.#counters.get(name)));
  }

  deleteCounters(name: string, keys: readonly string[]): Promise<void> {
    const counters = this.#counters.get(name);
    if (counters !== undefined) {
      for (const key of keys) counters.delete(key);
      if (counters.size === 0) this.#counters.delete(name);
    }
    return DONE;
  }

  addRates(name: string, amounts: ReadonlyMap<string, number>, tauMs: number): Promise<void> {
    if (!isDurationMs(tauMs)) return rejectArgument('tauMs', 'a positive finite number of milliseconds', tauMs);
    const nowMs = this.#clock.now();
    let rates = this.#rates.get(name);
    if (rates === undefined) this.#rates.set(name, (rates = new Map()));
    for (const [key, amount] of amounts) {
      const rate = rates.get(key);
      if (rate === undefined) {
        rates.set(key, { value: amount, atMs: nowMs });
      } else {
        rate.value = decayed(rate, nowMs, tauMs) + amount;
        rate.atMs = nowMs;
      }
    }
    return DONE;
  }

  readRates(name: string, tauMs: number): Promise<ReadonlyMap<string, number>> {
    if (!isDurationMs(tauMs)) return rejectArgument('tauMs', 'a positive finite number of milliseconds', tauMs);
    const nowMs = this.#clock.now();
    const out = new Map<string, number>();
    // Decayed sum over τ: a steady r per second accumulates r·τ, so this reads r.
    for (const [key, rate] of this.#rates.get(name) ?? []) out.set(key, (decayed(rate, nowMs, tauMs) * 1000) / tauMs);
    return Promise.resolve(out);
  }

  takeTokens(name: string, takes: readonly BucketTake[], force = false): Promise<BucketsTaken> {
    const bad = checkTakes(takes);
    if (bad) return bad;
    let buckets = this.#buckets.get(name);
    if (buckets === undefined) this.#buckets.set(name, (buckets = new Map()));
    const nowMs = this.#clock.now();
    const levels = takes.map(({ key, capacity, perSecond }) => {
      const bucket = buckets.get(key);
      return bucket === undefined ? capacity : Math.min(capacity, bucket.level + (Math.max(0, nowMs - bucket.atMs) * perSecond) / 1000);
    });
    let retryInMs = 0;
    takes.forEach(({ capacity, perSecond, amount }, i) => {
      const short = Math.min(amount, capacity) - levels[i]!;
      if (short > 0) retryInMs = Math.max(retryInMs, (short * 1000) / perSecond);
    });
    if (retryInMs > 0 && !force) return Promise.resolve({ granted: false, levels, retryInMs });
    takes.forEach(({ key, capacity, amount }, i) => {
      const level = Math.max(-capacity, Math.min(capacity, levels[i]! - amount));
      levels[i] = level;
      buckets.set(key, { level, atMs: nowMs });
    });
    return Promise.resolve({ granted: true, levels, retryInMs: 0 });
  }

  setGauges(name: string, values: ReadonlyMap<string, number>): Promise<void> {
    let gauges = this.#gauges.get(name);
    if (gauges === undefined) this.#gauges.set(name, (gauges = new Map()));
    for (const [key, value] of values) gauges.set(key, value);
    return DONE;
  }

  readGauges(name: string): Promise<ReadonlyMap<string, number>> {
    return Promise.resolve(new Map(this.#gauges.get(name)));
  }

  tryLead(role: string, holder: string, ttlMs: number): Promise<boolean> {
    if (!isDurationMs(ttlMs)) return rejectArgument('ttlMs', 'a positive finite number of milliseconds', ttlMs);
    const nowMs = this.#clock.now();
    const current = this.#leaders.get(role);
    if (current !== undefined && current.holder !== holder && current.untilMs > nowMs) return Promise.resolve(false);
    this.#leaders.set(role, { holder, untilMs: nowMs + ttlMs });
    return Promise.resolve(true);
  }

  resign(role: string, holder: string): Promise<void> {
    if (this.#leaders.get(role)?.holder === holder) this.#leaders.delete(role);
    return DONE;
  }

  publishPlan(plan: PlanRecord): Promise<number> {
    const version = ++this.#planVersion;
    // Cloned so the publisher's later edits do not leak in, and frozen because every reader shares it:
    // a remote store hands each reader its own parsed copy, and this one must behave the same.
    const published: PublishedPlan = deepFreeze({ ...structuredClone(plan), version });
    this.#plan = published;
    if (this.#subscriptions.size > 0) {
      // Only the listeners watching now; delivered after publishPlan returns, never inside it, so a
      // listener that publishes or reads the plan sees the store in a settled state.
      const subscriptions = [...this.#subscriptions];
      queueMicrotask(() => this.#deliver(subscriptions, published));
    }
    return Promise.resolve(version);
  }

  readPlan(): Promise<PublishedPlan | undefined> {
    return Promise.resolve(this.#plan);
  }

  watchPlans(listener: (plan: PublishedPlan) => void): () => void {
    const subscription: Subscription = { listener, active: true };
    this.#subscriptions.add(subscription);
    const subscriptions = this.#subscriptions;
    return function unwatchPlans(): void {
      subscription.active = false;
      subscriptions.delete(subscription);
    };
  }

  putTelemetry(record: TelemetryRecord, ttlMs: number): Promise<void> {
    if (!isDurationMs(ttlMs)) return rejectArgument('ttlMs', 'a positive finite number of milliseconds', ttlMs);
    const nowMs = this.#clock.now();
    this.#telemetry.set(record.source, {
      record: Object.freeze({ ...record, values: Object.freeze({ ...record.values }) }),
      storedAtMs: nowMs,
      expiresAtMs: nowMs + ttlMs,
    });
    return DONE;
  }

  readTelemetry(): Promise<readonly ReceivedTelemetry[]> {
    const nowMs = this.#clock.now();
    const out: ReceivedTelemetry[] = [];
    for (const [source, stored] of this.#telemetry) {
      if (stored.expiresAtMs <= nowMs) this.#telemetry.delete(source);
      else out.push({ ...stored.record, ageMs: nowMs - stored.storedAtMs });
    }
    return Promise.resolve(out);
  }

  close(): Promise<void> {
    for (const subscription of this.#subscriptions) subscription.active = false;
    this.#subscriptions.clear();
    for (const record of this.#leases.values()) record.live = false;
    this.#leases.clear();
    this.#expiries = newExpiryHeap([]);
    this.#backends.clear();
    this.#counters.clear();
    this.#rates.clear();
    this.#gauges.clear();
    this.#buckets.clear();
    this.#leaders.clear();
    this.#plan = undefined;
    this.#telemetry.clear();
    return DONE;
  }

  #backend(backendId: string): BackendRecord {
    let backend = this.#backends.get(backendId);
    if (backend === undefined) {
      backend = { inFlight: 0, byTag: new Map(), unhealthyUntilMs: Number.NEGATIVE_INFINITY, view: undefined };
      this.#backends.set(backendId, backend);
    }
    return backend;
  }

  #drop(record: LeaseRecord): void {
    record.live = false;
    this.#leases.delete(record.lease.id);
    const { backend, lease } = record;
    backend.inFlight--;
    if (lease.tag !== undefined) {
      const left = (backend.byTag.get(lease.tag) ?? 1) - 1;
      if (left > 0) backend.byTag.set(lease.tag, left);
      else backend.byTag.delete(lease.tag);
    }
    backend.view = undefined;
  }

  #schedule(entry: ExpiryEntry): void {
    this.#expiries.push(entry);
    if (this.#expiries.length > HEAP_REBUILD_FACTOR * this.#leases.size + HEAP_REBUILD_SLACK) {
      const live: ExpiryEntry[] = [];
      for (const record of this.#leases.values()) live.push((record.entry = { atMs: record.expiresAtMs, record }));
      this.#expiries = newExpiryHeap(live);
    }
  }

  /** Drops every lease expired by `nowMs`; one peek when none is due. */
  #sweep(nowMs: number): void {
    const expiries = this.#expiries;
    for (let entry = expiries.peek(); entry !== undefined && entry.atMs <= nowMs; entry = expiries.peek()) {
      expiries.pop();
      const { record } = entry;
      if (!record.live || record.entry !== entry) continue;
      if (record.expiresAtMs <= nowMs) {
        this.#drop(record);
      } else {
        // Renewed since this entry was made: look again at the new expiry.
        record.entry = { atMs: record.expiresAtMs, record };
        expiries.push(record.entry);
      }
    }
  }

  #deliver(subscriptions: readonly Subscription[], plan: PublishedPlan): void {
    for (const subscription of subscriptions) {
      if (!subscription.active) continue;
      try {
        subscription.listener(plan);
      } catch (error) {
        this.#onListenerError(error);
      }
    }
  }
}

function view(backend: BackendRecord, nowMs: number): BackendSnapshot {
  const healthy = nowMs >= backend.unhealthyUntilMs;
  const cached = backend.view;
  if (cached !== undefined && cached.healthy === healthy) return cached;
  const fresh: BackendSnapshot =
    healthy && backend.inFlight === 0 && backend.byTag.size === 0
      ? HEALTHY_IDLE
      : Object.freeze({ inFlight: backend.inFlight, healthy, byTag: backend.byTag.size === 0 ? NO_TAGS : new Map(backend.byTag) });
  backend.view = fresh;
  return fresh;
}

function newExpiryHeap(entries: ExpiryEntry[]): TinyQueue<ExpiryEntry> {
  return new TinyQueue(entries, (a, b) => a.atMs - b.atMs);
}

function decayed(rate: RateRecord, nowMs: number, tauMs: number): number {
  return rate.value * Math.exp(-Math.max(0, nowMs - rate.atMs) / tauMs);
}

