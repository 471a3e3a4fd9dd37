/**
 * Envoy's retry budget: retries in progress may not exceed `percent` of the requests in flight, or
 * `min`, whichever is more. Under a fleet-wide failure, retries then add at most that fraction to the
 * load instead of multiplying it. A retry is in progress from its decision until its response
 * headers arrive or it fails.
 */
export class RetryBudget {
  readonly #percent: number;
  readonly #min: number;
  readonly #inFlight: () => number;
  #active = 0;

  constructor(options: { readonly percent: number; readonly min: number; readonly inFlight: () => number }) {
    this.#percent = options.percent;
    this.#min = options.min;
    this.#inFlight = options.inFlight;
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
