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
