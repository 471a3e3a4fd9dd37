import type { Clock } from '../clock.js';

/**
 * How fast a backend frees slots, as an exponentially decayed count of releases (time constant
 * `tauMs`). Under overload every freed slot admits a waiter, so this is the rate its queue drains at,
 * and `waiting / rate` the time until the requests now waiting have all started: the estimate a
 * refused client is told to wait (`retry-after-ms`). Costs O(1) per release and no memory per request.
 */
export class DrainRate {
  readonly #clock: Clock;
  readonly #tauMs: number;
  #value = 0;
  #lastMs: number | undefined;
  #firstMs: number | undefined;

  constructor(clock: Clock, tauMs = 5_000) {
    this.#clock = clock;
    this.#tauMs = tauMs;
  }

  /** A slot was freed now. */
  record(): void {
    const now = this.#clock.now();
    this.#value = this.#decayed(now) + 1;
    this.#lastMs = now;
    this.#firstMs ??= now;
  }

  /** Releases per millisecond, undefined before the first. */
  perMs(): number | undefined {
    if (this.#firstMs === undefined) return undefined;
    const now = this.#clock.now();
    // Corrects the decayed count for the part of the window before the first release (no history yet).
    const seen = 1 - Math.exp(-Math.max(now - this.#firstMs, 1) / this.#tauMs);
    return this.#decayed(now) / (this.#tauMs * seen);
  }

  #decayed(now: number): number {
    return this.#lastMs === undefined ? 0 : this.#value * Math.exp(-(now - this.#lastMs) / this.#tauMs);
  }
}

/** Bounds of the estimate given to a refused client (ms). Under 60 s the OpenAI SDKs honour `retry-after-ms`. */
export const MIN_RETRY_AFTER_MS = 100;
export const MAX_RETRY_AFTER_MS = 59_000;
/** Told before any release was seen on the backend: no rate to estimate from yet. */
export const UNKNOWN_RETRY_AFTER_MS = 1_000;

/** When the requests now waiting will all have started, at the measured drain rate (bounded; see the constants). */
export function retryAfterMs(waiting: number, drain: DrainRate | undefined): number {
  const rate = drain?.perMs();
  if (!rate) return UNKNOWN_RETRY_AFTER_MS;
  return Math.round(Math.min(MAX_RETRY_AFTER_MS, Math.max(MIN_RETRY_AFTER_MS, Math.max(1, waiting) / rate)));
}

/**
 * The share of each backend's queue each SLO class may fill before it is shed (429), by priority:
 * the classes of the highest priority (lowest `priority` number) may fill all of it, each lower
 * priority rank `stepShare` less, down to `minShare`. A full queue refuses everyone (503). Shedding
 * the lowest class first keeps room for the others: with the default classes and step (0.2), batch
 * is refused once the queue is 60 % full, standard at 80 %, and interactive only when it is full.
 */
export function classQueueShares(classes: Readonly<Record<string, { readonly priority: number }>>, stepShare: number, minShare: number): ReadonlyMap<string, number> {
  const ranks = [...new Set(Object.values(classes).map((c) => c.priority))].sort((a, b) => a - b);
  const shares = new Map<string, number>();
  for (const [name, { priority }] of Object.entries(classes)) shares.set(name, Math.max(minShare, 1 - ranks.indexOf(priority) * stepShare));
  return shares;
}
