import type { Backend } from '../types.js';
import type { FailoverBudget } from './layers.js';
import type { UpstreamRequest } from './transport.js';

export interface RetryBudgetOptions {
  /** Retries in progress allowed, as a percentage of `inFlight()`. */
  readonly percent: number;
  /** Retries in progress always allowed. */
  readonly min: number;
  /** Requests in flight now. */
  readonly inFlight: () => number;
  readonly onRetry?: ((failed: Backend, cause: unknown, request: UpstreamRequest) => void) | undefined;
  readonly onExhausted?: ((failed: Backend) => void) | undefined;
}

/**
 * Envoy's retry budget: retries in progress may not exceed `percent` of the requests in flight, or
 * `min`, whichever is more. Under a fleet-wide failure, retries then add at most that fraction to the
 * load instead of multiplying it. A retry is in progress from its decision until its response
 * headers arrive or it fails.
 */
export class RetryBudget implements FailoverBudget {
  readonly #percent: number;
  readonly #min: number;
  readonly #inFlight: () => number;
  readonly onRetry: RetryBudgetOptions['onRetry'];
  readonly onExhausted: RetryBudgetOptions['onExhausted'];
  #active = 0;

  constructor(options: RetryBudgetOptions) {
    this.#percent = options.percent;
    this.#min = options.min;
    this.#inFlight = options.inFlight;
    this.onRetry = options.onRetry;
    this.onExhausted = options.onExhausted;
  }

  /** Retries in progress now. */
  get active(): number {
    return this.#active;
  }

  /** Takes one retry from the budget; false when it is spent. */
  tryAcquire(): boolean {
    const allowed = Math.max(this.#min, Math.floor((this.#percent / 100) * this.#inFlight()));
    if (this.#active >= allowed) return false;
    this.#active++;
    return true;
  }

  release(): void {
    if (this.#active > 0) this.#active--;
  }
}
