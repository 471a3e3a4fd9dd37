import type { BackendState } from '../types.js';
import type { Lease, PlanRecord, StateStore } from './store.js';

const HEALTHY_IDLE: BackendState = Object.freeze({ inFlight: 0, healthy: true });
/** One settled promise for every call: the store does no I/O, so there is nothing to wait for. */
const DONE: Promise<void> = Promise.resolve();

/** The default store: one process, no I/O. Expired leases are swept when a snapshot is taken. */
export class MemoryStateStore implements StateStore {
  readonly #leases = new Map<string, Lease>();
  readonly #inFlight = new Map<string, number>();
  readonly #unhealthyUntil = new Map<string, number>();
  #nextExpiryMs = Number.POSITIVE_INFINITY;
  #plan: PlanRecord | undefined;

  snapshot(backendIds: readonly string[], nowMs: number): Promise<ReadonlyMap<string, BackendState>> {
    if (nowMs >= this.#nextExpiryMs) this.#sweep(nowMs);
    const out = new Map<string, BackendState>();
    for (const id of backendIds) {
      const inFlight = this.#inFlight.get(id) ?? 0;
      const until = this.#unhealthyUntil.get(id);
      const healthy = until === undefined || nowMs >= until;
      out.set(id, inFlight === 0 && healthy ? HEALTHY_IDLE : { inFlight, healthy });
    }
    return Promise.resolve(out);
  }

  acquire(lease: Lease): Promise<void> {
    if (!this.#leases.has(lease.id)) {
      this.#leases.set(lease.id, lease);
      this.#inFlight.set(lease.backendId, (this.#inFlight.get(lease.backendId) ?? 0) + 1);
      if (lease.expiresAtMs < this.#nextExpiryMs) this.#nextExpiryMs = lease.expiresAtMs;
    }
    return DONE;
  }

  release(leaseId: string): Promise<void> {
    const lease = this.#leases.get(leaseId);
    if (lease) this.#drop(lease);
    return DONE;
  }

  markUnhealthy(backendId: string, untilMs: number): Promise<void> {
    this.#unhealthyUntil.set(backendId, Math.max(untilMs, this.#unhealthyUntil.get(backendId) ?? 0));
    return DONE;
  }

  publishPlan(plan: PlanRecord): Promise<void> {
    this.#plan = plan;
    return DONE;
  }

  readPlan(): Promise<PlanRecord | undefined> {
    return Promise.resolve(this.#plan);
  }

  close(): Promise<void> {
    this.#leases.clear();
    this.#inFlight.clear();
    this.#unhealthyUntil.clear();
    return DONE;
  }

  #drop(lease: Lease): void {
    this.#leases.delete(lease.id);
    const left = (this.#inFlight.get(lease.backendId) ?? 1) - 1;
    if (left > 0) this.#inFlight.set(lease.backendId, left);
    else this.#inFlight.delete(lease.backendId);
  }

  #sweep(nowMs: number): void {
    let next = Number.POSITIVE_INFINITY;
    for (const lease of this.#leases.values()) {
      if (lease.expiresAtMs <= nowMs) this.#drop(lease);
      else if (lease.expiresAtMs < next) next = lease.expiresAtMs;
    }
    this.#nextExpiryMs = next;
  }
}
