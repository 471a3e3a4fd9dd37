import type { Backend, BackendState, CostEstimate, Prediction, RoutingRequest } from '../types.js';
import { decodePowerW, decodeStepMs, prefillMs } from './profiles.js';

/**
 * Estimates what a request would cost on a backend. Contract: pure and synchronous (no I/O, no
 * clock reads: time comes in `nowMs`), finite non-negative figures, called once per candidate.
 */
export interface CostModel {
  estimate(input: CostInput): CostEstimate;
}

export interface CostInput {
  readonly request: RoutingRequest;
  readonly prediction: Prediction;
  readonly backend: Backend;
  readonly state: BackendState;
  /** Requests waiting in this router's queue for the backend. */
  readonly queued: number;
  readonly nowMs: number;
}

const JOULES_PER_KWH = 3.6e6;

/**
 * Latency from the backend's profile at the batch it would run in; energy as this request's share of
 * the instance's power over its lifetime; carbon from the site's intensity and PUE.
 */
export const profileCostModel: CostModel = Object.freeze<CostModel>({
  estimate({ request, prediction, backend, state, queued }: CostInput): CostEstimate {
    const profile = backend.profile;
    const batch = Math.min(backend.maxConcurrency, state.inFlight + 1);
    const tbtMs = decodeStepMs(profile, batch);
    const ttftMs = prefillMs(profile, request.promptTokens) + tbtMs;
    const serviceMs = ttftMs + prediction.outputTokensP50 * tbtMs;
    // Waiting requests drain at maxConcurrency at a time, each taking about one service time.
    const ahead = Math.max(0, state.inFlight + queued + 1 - backend.maxConcurrency);
    const waitMs = ahead === 0 ? 0 : (ahead / backend.maxConcurrency) * serviceMs;
    const energyJ = ((decodePowerW(profile, batch) / batch) * serviceMs * backend.site.pue) / 1000;
    return {
      waitMs,
      ttftMs: waitMs + ttftMs,
      tbtMs,
      e2eMs: waitMs + serviceMs,
      energyJ,
      carbonG: (energyJ / JOULES_PER_KWH) * backend.site.gramsPerKWh,
    };
  },
});
