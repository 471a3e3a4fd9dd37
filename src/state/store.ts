import type { PoolPlanView } from '../plan/live-pools.js';
import type { BackendState } from '../types.js';

/**
 * The cluster-state contract: what every router replica (and every GPU agent) sharing a fleet must
 * see the same. One process uses `MemoryStateStore`; many use a shared store (Redis). Every store
 * passes the one conformance suite in `test/state/conformance.ts`.
 *
 * Rules every implementation keeps:
 * - Every method is asynchronous (a store may be remote) and safe to call concurrently.
 * - Time is given as durations (`ttlMs`, `forMs`) and measured by the store's own clock, never as a
 *   caller's clock reading: `performance.now()` has a different origin in every process.
 * - A backend the store has never seen is healthy with nothing in flight; releasing an unknown,
 *   expired or already released lease is a no-op; reading what was never written gives an empty
 *   result, not an error.
 * - `tryAcquire` is atomic: across every caller, at most `limit` unexpired leases are held on a
 *   backend at once. A holder that dies frees its slots when their leases expire.
 */
export interface StateStore {
  /**
   * Takes one of `limit` slots on a backend for `ttlMs`, or refuses (resolves `undefined`) when
   * `limit` unexpired leases are held there already. `tag` is counted per backend in snapshots (the
   * router tags a lease with the request's SLO class, so the classes running on a backend are known
   * to every replica, and forgotten with the lease when its holder dies).
   */
  tryAcquire(backendId: string, limit: number, ttlMs: number, tag?: string): Promise<Lease | undefined>;
  // Any id works as a backend: the gateway caps concurrent requests per API key and tenant with
  // leases on ids under `limit:` (src/auth/limiter.ts), which no snapshot of the fleet asks for.
  /** Extends a held lease to `ttlMs` from now. False when it had expired or was released: its slot is lost. */
  renew(lease: Lease, ttlMs: number): Promise<boolean>;
  /** Frees the lease's slot. */
  release(lease: Lease): Promise<void>;
  /** In-flight leases (by tag too) and health of each backend, now. */
  snapshot(backendIds: readonly string[]): Promise<ReadonlyMap<string, BackendSnapshot>>;
  /** Takes a backend out of rotation for `forMs` (a later, longer mark extends it; a shorter one does not shorten it). */
  markUnhealthy(backendId: string, forMs: number): Promise<void>;
  /** Puts a backend back in rotation at once (a health probe passed). */
  markHealthy(backendId: string): Promise<void>;

  /**
   * Applies updates to the named set of counters, atomically per update, and resolves with the new
   * values of the keys updated. Each update adds `add` (may be negative), then raises the value to
   * at least `atLeast` and `floor`. Used for tenants' virtual token counters.
   */
  updateCounters(name: string, updates: readonly CounterUpdate[]): Promise<ReadonlyMap<string, number>>;
  /** Every counter of the named set. */
  readCounters(name: string): Promise<ReadonlyMap<string, number>>;
  /** Removes keys from the named set of counters. */
  deleteCounters(name: string, keys: readonly string[]): Promise<void>;

  /**
   * Adds amounts to exponentially decaying rates (time constant `tauMs`, decayed by the store's
   * clock): an amount added Δt ago weighs exp(−Δt/τ). Used for per-backend prefill load.
   */
  addRates(name: string, amounts: ReadonlyMap<string, number>, tauMs: number): Promise<void>;
  /** Every rate of the named set, in amount per second (a steady r per second reads r). */
  readRates(name: string, tauMs: number): Promise<ReadonlyMap<string, number>>;

  /**
   * Takes from token buckets of the named set, all or none: granted only when every bucket holds its
   * amount (an amount above a bucket's capacity needs a full bucket), else nothing changes and
   * `retryInMs` says when all would. A bucket holds at most `capacity`, refills at `perSecond` by the
   * store's clock, and starts full. With `force` every amount is applied whatever the levels (down to
   * −capacity; a negative amount gives back, up to capacity): used to settle an estimate with the
   * real count. Used for per-key and per-tenant rate limits.
   */
  takeTokens(name: string, takes: readonly BucketTake[], force?: boolean): Promise<BucketsTaken>;

  /** Sets values of the named set of gauges (last write wins). Used for per-backend latency factors. */
  setGauges(name: string, values: ReadonlyMap<string, number>): Promise<void>;
  readGauges(name: string): Promise<ReadonlyMap<string, number>>;

  /**
   * Becomes, or stays, the holder of `role` for `ttlMs` if nobody else holds it. Resolves true when
   * `holder` holds it after the call. One replica plans per window this way.
   */
  tryLead(role: string, holder: string, ttlMs: number): Promise<boolean>;
  /** Gives `role` up if `holder` holds it. */
  resign(role: string, holder: string): Promise<void>;

  /** Replaces the published pool plan; resolves with the version the store gave it (increasing). */
  publishPlan(plan: PlanRecord): Promise<number>;
  /** The last published pool plan, with its version, if any. */
  readPlan(): Promise<PublishedPlan | undefined>;
  /**
   * Calls `listener` with every plan published from now on, by anyone (in publication order for one
   * store; a listener may miss intermediate plans of a remote store, never the latest). Returns the
   * function that stops it.
   */
  watchPlans(listener: (plan: PublishedPlan) => void): () => void;

  /** Stores a telemetry record (an agent's GPU readings, a replica's SLO signal) for `ttlMs`, replacing the source's previous one. */
  putTelemetry(record: TelemetryRecord, ttlMs: number): Promise<void>;
  /** Unexpired telemetry records, each with its age. */
  readTelemetry(): Promise<readonly ReceivedTelemetry[]>;

  close(): Promise<void>;

  /** A shared store: true while it serves from local state because its backend (Redis) does not answer. */
  readonly degraded?: boolean;
}

/**
 * A store that also queues: one least-laxity-first queue per backend shared by every replica. A
 * request refused a slot leaves a ticket; a slot freed anywhere (released, or expired with its dead
 * holder) goes, atomically, to the most urgent live ticket of any replica, and that ticket's owner
 * is told. The router uses it when its store has it (`isQueueingStore`), otherwise it queues in
 * process and polls `tryAcquire`.
 *
 * Rules every implementation keeps, beside the StateStore's:
 * - A ticket is granted at most once, and only while unexpired and not withdrawn; a granted ticket
 *   holds a lease counted under the backend's limit like any other.
 * - An owner that stops calling `pollTickets` loses its tickets after `ttlMs` (its replica died):
 *   they are never granted, so no slot is lost to them.
 * - Tickets whose latest start has passed (they can no longer meet their deadline) are granted only
 *   when no ticket still on time waits.
 * - `release` grants the freed slot to the most urgent ticket, if one waits.
 */
export interface QueueingStore extends StateStore {
  /** False while the shared queue cannot be reached (the store serves from local state): callers then queue in process. */
  readonly queueing: boolean;
  /**
   * A slot at once when one is free and no ticket waits for the backend (resolves with the lease),
   * or the ticket queued (resolves `undefined`; its grant is taken with `takeGrants`). The store
   * remembers `limit` and `ttlMs` for the backend: `release` and `takeGrants` grant freed slots
   * under them.
   */
  acquireOrQueue(backendId: string, limit: number, ttlMs: number, ticket: QueueTicket): Promise<Lease | undefined>;
  /**
   * Removes a waiting ticket. Resolves with its lease when it had been granted and not yet taken:
   * the caller then holds that slot (to use or release).
   */
  withdraw(backendId: string, ticketId: string): Promise<Lease | undefined>;
  /**
   * Takes, exactly once, the leases granted to `owner`'s tickets on one backend (tickets it no
   * longer waits for included: it releases those), and says which of the tickets it `waits` for the
   * store knows neither as queued nor as granted (lost with the store's data: queue them again).
   * Keeps `owner` alive for `ownerTtlMs`, and first drops expired leases and dead owners' tickets
   * and grants the slots so freed.
   */
  takeGrants(owner: string, ownerTtlMs: number, backendId: string, waits: readonly string[]): Promise<TakenGrants>;
  /** Calls `listener` with the backend of each grant made to `owner`'s tickets: a hint to take them. Returns the function that stops it. */
  watchGrants(owner: string, listener: (backendId: string) => void): () => void;
  /** Tickets waiting per backend, across every replica. */
  queued(backendIds: readonly string[]): Promise<ReadonlyMap<string, number>>;
}

export interface QueueTicket {
  /** Unique among the store's tickets (the owner's id and a counter). */
  readonly id: string;
  /** The replica that waits for it: its `takeGrants` calls keep it alive (the first for `ownerTtlMs` from now). */
  readonly owner: string;
  readonly ownerTtlMs: number;
  /** Time from now until the latest start that still meets the deadline (ms; negative when already late). */
  readonly latestStartInMs: number;
  /** The lease's tag once granted. */
  readonly tag?: string | undefined;
  /**
   * With tenant fairness: the ticket's tenant, and how near its latest start must be for it to go
   * first regardless of tenants. Otherwise the tenant whose counter in the `fair-share` counters is
   * least goes first (among the most urgent tickets on time). Without it, least laxity alone.
   */
  readonly tenant?: string | undefined;
  readonly urgentWithinMs?: number | undefined;
}

/** The named set of counters (`updateCounters`) that holds tenants' virtual token counters for every replica. */
export const FAIR_SHARE_COUNTERS = 'fair-share';

export interface TakenGrants {
  readonly grants: readonly Grant[];
  /** Tickets asked about that the store has lost. */
  readonly missing: readonly string[];
}

export interface Grant {
  readonly ticketId: string;
  readonly lease: Lease;
}

export function isQueueingStore(store: StateStore): store is QueueingStore {
  return typeof (store as Partial<QueueingStore>).acquireOrQueue === 'function';
}

/** A slot held on a backend, granted by `tryAcquire`. */
export interface Lease {
  /** Unique among the store's leases. */
  readonly id: string;
  readonly backendId: string;
  readonly tag: string | undefined;
}

/** What the store knows about a backend now: in-flight leases across every holder, and health. */
export interface BackendSnapshot extends BackendState {
  /** Unexpired leases by tag (untagged leases are not listed). */
  readonly byTag: ReadonlyMap<string, number>;
}

export interface CounterUpdate {
  readonly key: string;
  readonly add?: number;
  readonly atLeast?: number;
  readonly floor?: number;
}

export interface BucketTake {
  readonly key: string;
  /** Most the bucket holds, and what it holds when first used (> 0). */
  readonly capacity: number;
  /** Refill rate (> 0). */
  readonly perSecond: number;
  readonly amount: number;
}

export interface BucketsTaken {
  readonly granted: boolean;
  /** Each bucket's level after the call (before it, when refused), in the order of the takes. */
  readonly levels: readonly number[];
  /** When refused, the time until every bucket would hold its amount (ms); 0 when granted. */
  readonly retryInMs: number;
}

/** A pool plan as stored for other routers and GPU agents: plain JSON. */
export interface PlanRecord {
  /** Who made it (a replica id). */
  readonly origin: string;
  readonly status: string;
  readonly active: readonly string[];
  /** SM clock target per backend, as a fraction of its maximum. */
  readonly clockFraction: Readonly<Record<string, number>>;
  /** Per request type, each backend's share. */
  readonly shares: Readonly<Record<string, Readonly<Record<string, number>>>>;
  /** Forecast request rate per type the plan was made for (req/s). */
  readonly forecastRps: Readonly<Record<string, number>>;
  /** Planned objective rate: gCO2e/s (carbon) or W (energy). */
  readonly objectiveRate: number;
  readonly note: string;
  /** GPU pools: instances per (site, request type, mode) for the coming window, where sites declare GPU inventory. */
  readonly pools?: PoolPlanView | undefined;
  /** Forecast request rate per type for each step of the coming window. */
  readonly stepForecastRps?: readonly Readonly<Record<string, number>>[] | undefined;
}

export interface PublishedPlan extends PlanRecord {
  readonly version: number;
}

export interface TelemetryRecord {
  /** Who reports (an agent's node and GPU, a replica): one record per source is kept. */
  readonly source: string;
  readonly kind: string;
  readonly backendId?: string | undefined;
  readonly values: Readonly<Record<string, number>>;
}

export interface ReceivedTelemetry extends TelemetryRecord {
  /** Time since the record was stored, by the store's clock (ms). */
  readonly ageMs: number;
}
