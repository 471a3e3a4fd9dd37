import type { Clock, Timer } from '../clock.js';
import { FAIR_SHARE_COUNTERS, type StateStore } from '../state/store.js';

/**
 * Virtual token counters per tenant (the VTC idea: service = input tokens + 2 × output tokens).
 * Among requests that are not urgent, the tenant that has received the least service goes next, so a
 * tenant flooding the gateway cannot starve the others. A tenant that starts waiting again is lifted
 * to the least counter among tenants already waiting, so idle time banks no credit.
 */
export class FairShare {
  readonly #counters = new Map<string, number>();
  readonly #waiting = new Map<string, number>();
  /** Changes since they were last taken for a shared store (`takeChanges`): service added, and lifts. */
  #changes = new Map<string, Change>();

  /** Service units per output token; input tokens count 1. */
  static readonly OUTPUT_WEIGHT = 2;

  /**
   * Counters kept at most; past this, tenants with nothing waiting are forgotten (tenant names come
   * from a request header, so their number is the client's to choose). Forgetting is harmless: a
   * returning tenant is lifted to the least waiting counter anyway.
   */
  static readonly MAX_TENANTS = 10_000;

  counter(tenant: string): number {
    return this.#counters.get(tenant) ?? 0;
  }

  /** Adds service (may be negative, to correct a prediction once the true length is known). */
  charge(tenant: string, units: number): void {
    this.#counters.set(tenant, Math.max(0, this.counter(tenant) + units));
    const change = this.#change(tenant);
    change.add += units;
    if (this.#counters.size > FairShare.MAX_TENANTS) {
      for (const name of this.#counters.keys()) if (!this.#waiting.has(name)) this.#counters.delete(name);
    }
  }

  /** Tenants with a counter. */
  get size(): number {
    return this.#counters.size;
  }

  /** A request of `tenant` starts waiting in some queue. */
  startWaiting(tenant: string): void {
    const n = this.#waiting.get(tenant) ?? 0;
    // Stryker disable next-line ConditionalExpression: a tenant already waiting is among those it would be lifted to, so the check only saves the loop
    if (n === 0) {
      // Every tenant in #waiting has a request waiting, and `tenant` has none yet (stopWaiting deletes at zero).
      let least = Number.POSITIVE_INFINITY;
      for (const other of this.#waiting.keys()) least = Math.min(least, this.counter(other));
      if (least !== Number.POSITIVE_INFINITY) {
        this.#counters.set(tenant, Math.max(this.counter(tenant), least));
        const change = this.#change(tenant);
        change.atLeast = Math.max(change.atLeast, least);
      }
    }
    this.#waiting.set(tenant, n + 1);
  }

  /** A waiting request of `tenant` was admitted or withdrawn. */
  stopWaiting(tenant: string): void {
    const n = (this.#waiting.get(tenant) ?? 1) - 1;
    if (n > 0) this.#waiting.set(tenant, n);
    else this.#waiting.delete(tenant);
  }

  /** The changes made since the last call, for a shared store to apply (service added, lifts), and forgets them. */
  takeChanges(): ReadonlyMap<string, Change> {
    const changes = this.#changes;
    this.#changes = new Map();
    return changes;
  }

  /** Changes taken but not applied: merged with those made since. */
  putBack(changes: ReadonlyMap<string, Change>): void {
    for (const [tenant, taken] of changes) {
      const change = this.#change(tenant);
      change.add += taken.add;
      change.atLeast = Math.max(change.atLeast, taken.atLeast);
    }
  }

  /**
   * Takes the counters every replica sees (a shared store's), keeping the changes made here since
   * they were taken: local = shared + service added since, at least any lift since.
   */
  adopt(shared: ReadonlyMap<string, number>): void {
    for (const [tenant, value] of shared) {
      const since = this.#changes.get(tenant);
      this.#counters.set(tenant, Math.max(0, value + (since?.add ?? 0), since?.atLeast ?? 0));
    }
  }

  #change(tenant: string): Change {
    let change = this.#changes.get(tenant);
    if (change === undefined) this.#changes.set(tenant, (change = { add: 0, atLeast: 0 }));
    return change;
  }
}

/** What one replica changed in a tenant's counter since it last shared it. */
export interface Change {
  add: number;
  atLeast: number;
}

/**
 * Shares tenants' counters through a store every `everyMs`: this replica's changes are added to the
 * store's counters (atomically per tenant), and the counters every replica made are read back, so
 * each replica orders its queues by the service a tenant got from the whole fleet. Changes that did
 * not reach the store are kept for the next round. Returns the function that stops it.
 */
export function shareFairShare(counters: FairShare, store: StateStore, clock: Clock, everyMs: number, onError: (err: unknown) => void): () => void {
  let timer: Timer | undefined;
  let stopped = false;
  const round = async (): Promise<void> => {
    // While a shared store serves on local state, changes wait here for it to answer again.
    if (store.degraded) return;
    const changes = counters.takeChanges();
    try {
      if (changes.size > 0) {
        await store.updateCounters(
          FAIR_SHARE_COUNTERS,
          [...changes].map(([key, change]) => ({ key, add: change.add, atLeast: change.atLeast, floor: 0 })),
        );
      }
      counters.adopt(await store.readCounters(FAIR_SHARE_COUNTERS));
    } catch (err) {
      // Not applied: kept for the next round, with what was changed meanwhile.
      counters.putBack(changes);
      onError(err);
    }
  };
  const schedule = (): void => {
    if (stopped) return;
    timer = clock.setTimer(() => void round().finally(schedule), everyMs);
  };
  schedule();
  return () => {
    stopped = true;
    timer?.cancel();
  };
}
