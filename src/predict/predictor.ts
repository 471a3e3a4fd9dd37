import type { Prediction, RoutingRequest } from '../types.js';

/**
 * Predicts how many tokens a request will generate before any backend starts it.
 * Contract: `predict` always resolves (an implementation that can fail falls back internally), with
 * 1 ≤ p50 ≤ p90, both capped by the request's `maxTokens`. `observe` feeds back the true length
 * after a completion; it must be cheap and must not throw.
 */
export interface Predictor {
  readonly name: string;
  predict(request: RoutingRequest): Promise<Prediction>;
  observe?(request: RoutingRequest, outputTokens: number): void;
  close?(): Promise<void>;
}

export interface HeuristicPredictorOptions {
  /** Median output length when nothing better is known. Default 129 (Azure conversation trace 2023, p50). */
  readonly p50Tokens?: number;
  /** High quantile. Default 424 (same trace, p90). */
  readonly p90Tokens?: number;
}

/** Trace-wide quantiles capped by max_tokens: never fails, costs nothing, knows little. */
export function heuristicPredictor(options: HeuristicPredictorOptions = {}): Predictor {
  const p50 = options.p50Tokens ?? 129;
  const p90 = Math.max(p50, options.p90Tokens ?? 424);
  return {
    name: 'heuristic',
    predict(request: RoutingRequest): Promise<Prediction> {
      return Promise.resolve(capped(p50, p90, request.maxTokens, 'heuristic'));
    },
  };
}

/** Applies the predictor contract: integers, 1 ≤ p50 ≤ p90 ≤ maxTokens. */
export function capped(p50: number, p90: number, maxTokens: number | undefined, source: string): Prediction {
  const cap = maxTokens ?? Number.POSITIVE_INFINITY;
  const lo = Math.max(1, Math.min(cap, Math.round(p50)));
  const hi = Math.max(lo, Math.min(cap, Math.round(p90)));
  return { outputTokensP50: lo, outputTokensP90: hi, source };
}
