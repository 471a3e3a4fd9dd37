import type { Clock, Timer } from '../clock.js';
import type { BackendState } from '../types.js';
import type { Lease, StateStore } from './store.js';

/** One backend as decisions see it: the store's last snapshot plus this router's changes since. */
export interface BackendView extends BackendState {
  /** Leases by tag (SLO class) across every replica; this router's own are counted at once. */
  readonly byTag: ReadonlyMap<string, number>;
}

interface Entry {
  inFlight: number;
  healthy: boolean;
  readonly byTag: Map<string, number>;
  /** Health by the store's last snapshot. */
  storeHealthy: boolean;
  /** A mark this router made, in force until then (router clock). */
  unhealthyUntilMs: number;
  /** This router's acquisitions minus releases since the pending snapshot was asked for. */
  delta: number;
  readonly tagDelta: Map<string, number>;
}

export interface ClusterViewOptions {
  readonly store: StateStore;
  readonly backendIds: readonly string[];
  readonly clock: Clock;
  /** How often the snapshot is refreshed from the store (ms). */
  readonly refreshMs: number;
  /** Told when a refresh fails (the last snapshot stays in use). */
  readonly onError?: (err: unknown) => void;
}

/**
 * The local picture of the cluster state that decisions read synchronously: the store's snapshot,
 * refreshed every `refreshMs` in the background, plus what this router acquired, released and marked
 * since. Staleness bound: another replica's leases appear within `refreshMs` + one store round trip;
 * this router's own at once. A snapshot answered after a lease of ours was taken counts it twice
 * until the next refresh (an overestimate by the leases taken during one round trip, never an
 * underestimate). The store's atomic `tryAcquire` is the final check, so a stale view can misjudge
 * load but never exceed a backend's limit.
 */
export class ClusterView {
  readonly #options: ClusterViewOptions;
  readonly #entries = new Map<string, Entry>();
  #timer: Timer | undefined;
  #refreshing = false;
  #stopped = false;

  constructor(options: ClusterViewOptions) {
    this.#options = options;
    for (const id of options.backendIds) {
      this.#entries.set(id, {
        inFlight: 0,
        // Stryker disable next-line BooleanLiteral: every read goes through at(), which sets it from storeHealthy and the mark
        healthy: true,
        byTag: new Map(),
        storeHealthy: true,
        unhealthyUntilMs: 0,
        delta: 0,
        tagDelta: new Map(),
      });
    }
  }

  /** Takes a first snapshot, then refreshes every `refreshMs` until `stop()`. */
  start(): Promise<void> {
    const first = this.refresh();
    this.#schedule();
    return first;
  }

  stop(): void {
    this.#stopped = true;
    this.#timer?.cancel();
  }

  /** The backend's view now. The object is live: read it within one decision, don't keep it. */
  get(backendId: string, nowMs: number): BackendView {
    return this.at(this.#entries.get(backendId)!, nowMs);
  }

  /**
   * A backend's live view, for a reader that looks it up once and calls `at` at each decision (a
   * map lookup per candidate per decision showed in bench:decision's profile at 1,000 backends).
   */
  ref(backendId: string): BackendView {
    return this.#entries.get(backendId)!;
  }

  /** `get` for a view from `ref`: brings its health up to `nowMs`. */
  at(view: BackendView, nowMs: number): BackendView {
    const entry = view as Entry;
    if (!entry.healthy && entry.storeHealthy && entry.unhealthyUntilMs <= nowMs) entry.healthy = true;
    return entry;
  }

  /** A lease this router took. */
  acquired(lease: Lease): void {
    this.#change(lease, 1);
  }

  /** A lease this router gave back. */
  released(lease: Lease): void {
    this.#change(lease, -1);
  }

  /** Takes a backend out of rotation here at once and, through the store, everywhere. */
  markUnhealthy(backendId: string, forMs: number, nowMs: number): Promise<void> {
    const entry = this.#entries.get(backendId);
    if (entry) {
      entry.unhealthyUntilMs = Math.max(entry.unhealthyUntilMs, nowMs + forMs);
      entry.healthy = false;
    }
    return this.#options.store.markUnhealthy(backendId, forMs);
  }

  /** Puts a backend back in rotation here at once and, through the store, everywhere. */
  markHealthy(backendId: string): Promise<void> {
    const entry = this.#entries.get(backendId);
    if (entry) {
      entry.unhealthyUntilMs = 0;
      entry.storeHealthy = true;
      // Stryker disable next-line BooleanLiteral: at() would set it on the next read anyway (no mark, store healthy); set here for a reader of ref()
      entry.healthy = true;
    }
    return this.#options.store.markHealthy(backendId);
  }

  /** Reads the store's snapshot now. Concurrent calls share nothing but are harmless; a failure keeps the last one. */
  async refresh(): Promise<void> {
    if (this.#refreshing) return;
    this.#refreshing = true;
    // Changes from here on are not in the snapshot being asked for (or, remotely, may be: see above).
    for (const entry of this.#entries.values()) {
      entry.delta = 0;
      entry.tagDelta.clear();
    }
    try {
      const snapshot = await this.#options.store.snapshot(this.#options.backendIds);
      const nowMs = this.#options.clock.now();
      for (const [id, entry] of this.#entries) {
        const s = snapshot.get(id);
        if (!s) continue;
        entry.inFlight = Math.max(0, s.inFlight + entry.delta);
        entry.byTag.clear();
        for (const [tag, n] of s.byTag) entry.byTag.set(tag, n);
        for (const [tag, n] of entry.tagDelta) addTo(entry.byTag, tag, n);
        entry.storeHealthy = s.healthy;
        entry.healthy = s.healthy && entry.unhealthyUntilMs <= nowMs;
      }
    } catch (err) {
      this.#options.onError?.(err);
    } finally {
      this.#refreshing = false;
    }
  }

  #change(lease: Lease, by: 1 | -1): void {
    const entry = this.#entries.get(lease.backendId);
    if (!entry) return;
    entry.inFlight = Math.max(0, entry.inFlight + by);
    entry.delta += by;
    if (lease.tag !== undefined) {
      addTo(entry.byTag, lease.tag, by);
      entry.tagDelta.set(lease.tag, (entry.tagDelta.get(lease.tag) ?? 0) + by);
    }
  }

  #schedule(): void {
    if (this.#stopped) return;
    this.#timer = this.#options.clock.setTimer(() => {
      void this.refresh().finally(() => this.#schedule());
    }, this.#options.refreshMs);
  }
}

function addTo(map: Map<string, number>, key: string, by: number): void {
  const n = (map.get(key) ?? 0) + by;
  if (n > 0) map.set(key, n);
  else map.delete(key);
}
