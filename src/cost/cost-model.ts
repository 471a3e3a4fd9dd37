import type { Backend, BackendState, CostEstimate, Prediction, RoutingRequest } from '../types.js';
import { DEFAULT_FREQUENCY_MODEL, type FrequencyModel } from './frequency.js';
import { decodePowerW, decodeStepMs, prefillMs } from './profiles.js';

/**
 * Estimates what a request would cost on a backend. Contract: pure and synchronous (no I/O, no
 * clock reads: time comes in `nowMs`), finite non-negative figures, called once per candidate.
 * `input` is valid during the call only: placement refills one object for every candidate (a fresh
 * one per candidate was a tenth of a decision's time at 1,000 backends), so keep figures, not it.
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
  /** Prompt tokens sent to the backend and not yet prefilled (see PrefillBacklog): this prompt waits for them. */
  readonly prefillBacklogTokens: number;
  readonly nowMs: number;
  /** The site's carbon intensity now (gCO2e/kWh). */
  readonly gramsPerKWh: number;
  /** The backend's SM clock as a fraction of its maximum (1 unless a plan lowers it). */
  readonly clockFraction: number;
  /** Observed ÷ modelled service time on this backend lately (see LatencyCalibration); 1 when unknown. */
  readonly latencyFactor: number;
  /** Time until the backend can serve at all (ms): the rest of its boot, or a whole boot when it is powered off; 0 when on. */
  readonly readyInMs: number;  /**
   * Measured ÷ modelled power of the backend, from its GPU agent while the reading is fresh (see
   * AgentTelemetry); scales the profile's power. 1 (the default) without an agent.
   */
  readonly powerFactor?: number;
}

const JOULES_PER_KWH = 3.6e6;

/**
 * Latency from the backend's profile at the batch the request would join and at its SM clock;
 * energy as this request's share of the instance's power over its lifetime (so a fuller batch makes
 * each request cheaper, as measured: energy per token falls several-fold from batch 8 to 512);
 * carbon from the site's intensity now and its PUE.
 */
export function createCostModel(frequency: FrequencyModel = DEFAULT_FREQUENCY_MODEL): CostModel {
  // The frequency model's multipliers at the last clock fraction asked for: candidates of one
  // decision mostly share a fraction (1 without a plan), and each multiplier was a call (a power for
  // dynamic power) per candidate, several of them twice.
  let atFraction = Number.NaN;
  let prefillTime = 1;
  let decodeTime = 1;
  let dynamicPower = 1;
  return Object.freeze<CostModel>({
    estimate({ request, prediction, backend, state, queued, promptTokensPerS, prefillBacklogTokens, gramsPerKWh, clockFraction, latencyFactor, readyInMs, powerFactor = 1 }: CostInput): CostEstimate {
      if (clockFraction !== atFraction) {
        prefillTime = frequency.prefillTime(clockFraction);
        decodeTime = frequency.decodeTime(clockFraction);
        dynamicPower = frequency.dynamicPower(clockFraction);
        atFraction = clockFraction;
      }
      const profile = backend.profile;
      const batch = Math.min(backend.maxConcurrency, state.inFlight + 1);
      const chunkMs = prefillMs(profile, backend.prefillChunkTokens);
      // With continuous batching, prompts prefill in the same steps that decode: the share of time
      // spent prefilling stretches every running request's time between tokens.
      const prefillShare = Math.min(0.9, (promptTokensPerS * (chunkMs / backend.prefillChunkTokens) * prefillTime) / 1000);
      const tbtMs = (latencyFactor * decodeStepMs(profile, batch) * decodeTime) / (1 - prefillShare);
      // Chunked prefill: the prompt is prefilled after the backlog ahead of it, a chunk a step, each
      // step also decoding the running batch; its first token comes out of the step that finishes it.
      const firstMs = (latencyFactor * (prefillBacklogTokens + request.promptTokens)) / chunkTokensPerMs(backend, chunkMs, state.inFlight, prefillTime, decodeTime);
      const serviceMs = firstMs + (prediction.outputTokensP50 - 1) * tbtMs;
      // Waiting requests drain maxConcurrency at a time, each taking about one service time.
      const ahead = state.inFlight + queued + 1 - backend.maxConcurrency;
      const waitMs = readyInMs + (ahead <= 0 ? 0 : (ahead / backend.maxConcurrency) * serviceMs);
      const powerW = (profile.idleW + (decodePowerW(profile, batch) - profile.idleW) * dynamicPower) * powerFactor;
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

/**
 * The largest batch a backend can decode with the profile model's time between tokens within
 * `tbtBudgetMs`, while prompts arrive at `promptTokensPerS` (their prefill shares the steps, as in
 * `estimate`), at `clockFraction` and with the calibrated `latencyFactor`: 0 when not even one
 * sequence would. The inverse of `estimate`'s `tbtMs` in the batch, for an admission limit.
 */
export function batchWithinTbt(
  backend: Backend,
  tbtBudgetMs: number,
  promptTokensPerS: number,
  clockFraction: number,
  latencyFactor: number,
  frequency: FrequencyModel = DEFAULT_FREQUENCY_MODEL,
): number {
  const profile = backend.profile;
  const chunkMs = prefillMs(profile, backend.prefillChunkTokens);
  const prefillShare = Math.min(0.9, (promptTokensPerS * (chunkMs / backend.prefillChunkTokens) * frequency.prefillTime(clockFraction)) / 1000);
  // The decode step the budget leaves room for, then the largest batch whose step fits (steps grow with the batch).
  const stepBudgetMs = (tbtBudgetMs * (1 - prefillShare)) / (latencyFactor * frequency.decodeTime(clockFraction));
  let lo = 0;
  let hi = backend.maxConcurrency;
  while (lo < hi) {
    const mid = Math.ceil((lo + hi) / 2);
    if (decodeStepMs(profile, mid) <= stepBudgetMs) lo = mid;
    else hi = mid - 1;
  }
  return lo;
}

/**
 * Prompt tokens a backend prefills per ms while `running` sequences decode: one chunk of
 * `prefillChunkTokens` a step, and each step also decodes the batch.
 */
export function prefillTokensPerMs(backend: Backend, running: number, clockFraction: number, frequency: FrequencyModel = DEFAULT_FREQUENCY_MODEL): number {
  return chunkTokensPerMs(
    backend,
    prefillMs(backend.profile, backend.prefillChunkTokens),
    running,
    frequency.prefillTime(clockFraction),
    frequency.decodeTime(clockFraction),
  );
}

/** `prefillTokensPerMs` from a chunk's prefill time and the frequency model's multipliers. */
function chunkTokensPerMs(backend: Backend, chunkMs: number, running: number, prefillTime: number, decodeTime: number): number {
  const batch = Math.min(backend.maxConcurrency, running);
  const stepMs = chunkMs * prefillTime + (batch > 0 ? decodeStepMs(backend.profile, batch) * decodeTime : 0);
  return backend.prefillChunkTokens / stepMs;
}
