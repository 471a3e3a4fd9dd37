import type { Backend, BackendState, CostEstimate, Prediction, RoutingRequest } from '../types.js';
import { DEFAULT_FREQUENCY_MODEL, type FrequencyModel } from './frequency.js';
import { decodePowerW, decodeStepMs, type InstanceProfile, prefillMs } from './profiles.js';

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
  /** Prompt tokens sent to the backend lately, per second: prefill steals time from decoding. */
  readonly promptTokensPerS: number;
  readonly nowMs: number;
  /** The site's carbon intensity now (gCO2e/kWh). */
  readonly gramsPerKWh: number;
  /** The backend's SM clock as a fraction of its maximum (1 unless a plan lowers it). */
  readonly clockFraction: number;
}

const JOULES_PER_KWH = 3.6e6;

/**
 * Latency from the backend's profile at the batch the request would join and at its SM clock;
 * energy as this request's share of the instance's power over its lifetime (so a fuller batch makes
 * each request cheaper, as measured: energy per token falls several-fold from batch 8 to 512);
 * carbon from the site's intensity now and its PUE.
 */
export function createCostModel(frequency: FrequencyModel = DEFAULT_FREQUENCY_MODEL): CostModel {
  return Object.freeze<CostModel>({
    estimate({ request, prediction, backend, state, queued, promptTokensPerS, gramsPerKWh, clockFraction }: CostInput): CostEstimate {
      const profile = backend.profile;
      const batch = Math.min(backend.maxConcurrency, state.inFlight + 1);
      // With continuous batching, prompts prefill in the same steps that decode: the share of time
      // spent prefilling stretches every running request's time between tokens.
      const prefillShare = Math.min(0.9, (promptTokensPerS * prefillMsPerToken(profile) * frequency.prefillTime(clockFraction)) / 1000);
      const tbtMs = (decodeStepMs(profile, batch) * frequency.decodeTime(clockFraction)) / (1 - prefillShare);
      // A prompt also waits for the prefills already scheduled ahead of it: the same stretch applies.
      const firstMs = (prefillMs(profile, request.promptTokens) * frequency.prefillTime(clockFraction)) / (1 - prefillShare) + tbtMs;
      const serviceMs = firstMs + (prediction.outputTokensP50 - 1) * tbtMs;
      // Waiting requests drain maxConcurrency at a time, each taking about one service time.
      const ahead = state.inFlight + queued + 1 - backend.maxConcurrency;
      const waitMs = ahead <= 0 ? 0 : (ahead / backend.maxConcurrency) * serviceMs;
      const powerW = profile.idleW + (decodePowerW(profile, batch) - profile.idleW) * frequency.dynamicPower(clockFraction);
      const energyJ = ((powerW / batch) * serviceMs * backend.site.pue) / 1000;
      return {
        waitMs,
        ttftMs: waitMs + firstMs,
        tbtMs,
        e2eMs: waitMs + serviceMs,
        e2eP90Ms: waitMs + serviceMs + (prediction.outputTokensP90 - prediction.outputTokensP50) * tbtMs,
        energyJ,
        carbonG: (energyJ / JOULES_PER_KWH) * gramsPerKWh,
      };
    },
  });
}

export const profileCostModel: CostModel = createCostModel();

/** Prefill time per prompt token at a typical prompt length (1,024 tokens). */
export function prefillMsPerToken(profile: InstanceProfile): number {
  return prefillMs(profile, 1024) / 1024;
}
