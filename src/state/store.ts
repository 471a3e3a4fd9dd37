import type { BackendState } from '../types.js';

/** In-flight work on a backend, held until released or until it expires. */
export interface Lease {
  readonly id: string;
  readonly backendId: string;
  /** Store clock time after which the lease counts as leaked (its holder crashed) and is dropped. */
  readonly expiresAtMs: number;
}

/** A pool plan as stored for other routers and GPU agents: plain JSON. */
export interface PlanRecord {
  readonly createdMs: number;
  readonly status: string;
  readonly active: readonly string[];
  /** SM clock target per backend, as a fraction of its maximum. */
  readonly clockFraction: Readonly<Record<string, number>>;
  /** Per request type, each backend's share. */
  readonly shares: Readonly<Record<string, Readonly<Record<string, number>>>>;
}

/**
 * Backend state shared by every router that uses the store: in-flight leases and health marks.
 * Contract: every method is asynchronous (a store may be remote); a backend the store has never
 * seen is healthy with nothing in flight; releasing an unknown or expired lease is a no-op.
 */
export interface StateStore {
  snapshot(backendIds: readonly string[], nowMs: number): Promise<ReadonlyMap<string, BackendState>>;
  acquire(lease: Lease): Promise<void>;
  release(leaseId: string): Promise<void>;
  /** Takes a backend out of rotation until `untilMs` (store clock). */
  markUnhealthy(backendId: string, untilMs: number): Promise<void>;
  /** Replaces the published pool plan. */
  publishPlan(plan: PlanRecord): Promise<void>;
  /** The last published pool plan, if any. */
  readPlan(): Promise<PlanRecord | undefined>;
  close(): Promise<void>;
}
