/**
 * How much slower (or faster) each backend serves than the cost model says: an exponentially
 * weighted mean of observed ÷ modelled service time, from completed requests. The model costs a
 * request at the load it meets on arrival; those that arrive after it slow it down too, and a
 * backend's real speed drifts from its profile. Multiplying the model's latencies by this factor
 * corrects both, from what the router sees anyway (when a request was sent and when it ended).
 */
export class LatencyCalibration {
  readonly #weight: number;
  readonly #factors = new Map<string, number>();

  /** `weight`: how much one observation moves the factor (default 0.05: about the last 20 requests). */
  constructor(weight = 0.05) {
    this.#weight = weight;
  }

  /** The factor for a backend: 1 until it has been observed, then within [MIN_FACTOR, MAX_FACTOR]. */
  factor(backendId: string): number {
    return this.#factors.get(backendId) ?? 1;
  }

  /**
   * Records one completed request: the service time the calibrated model gave for its true length,
   * and the time it took. The factor moves by `weight` of the remaining error, so it settles where
   * the calibrated model is right on average.
   */
  observe(backendId: string, modelledMs: number, observedMs: number): void {
    if (!(modelledMs > 0) || !(observedMs > 0)) return;
    const error = observedMs / modelledMs;
    const next = this.factor(backendId) * (1 + this.#weight * (error - 1));
    this.#factors.set(backendId, Math.min(MAX_FACTOR, Math.max(MIN_FACTOR, next)));
  }
}

const MIN_FACTOR = 0.5;
export const MAX_FACTOR = 3;
