/**
 * How much slower (or faster) each backend serves than the cost model says: an exponentially
 * weighted mean of observed ÷ modelled service time, from completed requests. The model costs a
 * request at the load it meets on arrival; those that arrive after it slow it down too, and a
 * backend's real speed drifts from its profile. Multiplying the model's latencies by this factor
 * corrects both, from what the router sees anyway (when a request was sent and when it ended).
 *
 * What the router sees also holds time the model does not cost at all, and that does not scale with
 * the service: the round trip to the backend, its HTTP handling and (de)tokenisation. So an observed
 * time is read as `overhead + factor × service`, with an overhead learnt per backend beside the
 * factor. Each observation's unexplained time is split between the two by how long its modelled
 * service is against OVERHEAD_SCALE_MS: a completion of hundreds of tokens (seconds of service)
 * speaks for the factor, one of a single token (a prefill of a fraction of a millisecond, against
 * milliseconds to a hundred of overhead) for the overhead. Read as service alone, a 1-token
 * completion's round trip looks like a backend a hundred times too slow: a single one would drive
 * the factor to MAX_FACTOR, whose modelled time between tokens the deadline filter then refuses.
 */
export class LatencyCalibration {
  readonly #weight: number;
  readonly #backends = new Map<string, { factor: number; overheadMs: number }>();

  /** `weight`: how much one observation moves the factor (default 0.05: about the last 20 requests). */
  constructor(weight = 0.05) {
    this.#weight = weight;
  }

  /** The factor for a backend: 1 until it has been observed, then within [MIN_FACTOR, MAX_FACTOR]. */
  factor(backendId: string): number {
    return this.#backends.get(backendId)?.factor ?? 1;
  }

  /**
   * Records one completed request: the service time the calibrated model gave for its true length,
   * and the time it took. The factor moves by `weight` of the remaining error, less the backend's
   * overhead, so it settles where the calibrated model plus that overhead is right on average; an
   * observation much shorter than OVERHEAD_SCALE_MS moves the overhead instead.
   */
  observe(backendId: string, modelledMs: number, observedMs: number): void {
    if (!(modelledMs > 0) || !(observedMs > 0) || !Number.isFinite(modelledMs) || !Number.isFinite(observedMs)) return;
    let backend = this.#backends.get(backendId);
    if (!backend) this.#backends.set(backendId, (backend = { factor: 1, overheadMs: 0 }));
    // The least-squares split of the residual between the two terms of `overhead + factor × service`
    // (a normalised gradient step, the overhead counted in units of OVERHEAD_SCALE_MS). Squared, it
    // is sharp: a service 3× the scale counts 90% for the factor, one 3× shorter 10%. The factor's
    // step is then bounded by the overhead whatever the service: an unlearnt overhead of c ms
    // moves it by at most weight × c / (2 × OVERHEAD_SCALE_MS).
    const serviceShare = modelledMs ** 2 / (modelledMs ** 2 + OVERHEAD_SCALE_MS ** 2);
    const residualMs = observedMs - backend.overheadMs - modelledMs;
    const next = backend.factor * (1 + (this.#weight * serviceShare * Math.max(-modelledMs, residualMs)) / modelledMs);
    backend.factor = Math.min(MAX_FACTOR, Math.max(MIN_FACTOR, next));
    backend.overheadMs = Math.max(0, backend.overheadMs + this.#weight * (1 - serviceShare) * residualMs);
  }
}

const MIN_FACTOR = 0.5;
export const MAX_FACTOR = 3;
/**
 * Service time (ms) at which an observation's unexplained time counts equally for the factor and for
 * the fixed overhead: the order of the largest overhead expected, a round trip between continents
 * (100–200 ms) or a slow server's request handling. Ordinary completions (hundreds of tokens at tens
 * of ms each) are far above it; a short prompt's prefill (well under a ms per token) far below.
 */
const OVERHEAD_SCALE_MS = 100;
