import type { BackendState } from '../types.js';

/** In-flight work on a backend, held until released or until it expires. */
export interface Lease {
  readonly id: string;
  readonly backendId: string;
  /** Store clock time after which the lease counts as leaked (its holder crashed) and is dropped. */
  readonly expiresAtMs: number;
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
  close(): Promise<void>;
}
