import { capped, type Predictor } from '../predict/predictor.js';
import type { Prediction, RoutingRequest } from '../types.js';
import type { WorkloadRequest } from './workload.js';

/**
 * Predictions for replayed requests, made from their true output length. `oracle`: the truth.
 * Otherwise a log-normal error: p50 = true × exp(σ·z), with z the request's own draw (the same under
 * every policy), and p90 = p50 × exp(1.2816·σ), the 90th percentile of that error.
 */
export function simPredictor(lookup: (requestId: string) => WorkloadRequest | undefined, sigma: number | 'oracle'): Predictor {
  return {
    name: sigma === 'oracle' ? 'oracle' : `noisy(σ=${sigma})`,
    predict(request: RoutingRequest): Promise<Prediction> {
      const truth = lookup(request.id);
      if (!truth) return Promise.resolve(capped(129, 424, request.maxTokens, 'heuristic'));
      if (sigma === 'oracle') return Promise.resolve(capped(truth.outputTokens, truth.outputTokens, request.maxTokens, 'oracle'));
      const p50 = truth.outputTokens * Math.exp(sigma * truth.noise);
      return Promise.resolve(capped(p50, p50 * Math.exp(1.2816 * sigma), request.maxTokens, 'noisy'));
    },
  };
}
