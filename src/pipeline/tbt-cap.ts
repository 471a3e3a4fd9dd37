import type { RouterConfig } from '../config/schema.js';
import { batchWithinTbt } from '../cost/cost-model.js';
import type { FrequencyModel } from '../cost/frequency.js';
import type { Plan } from '../plan/plan.js';
import type { ClusterView } from '../state/cluster-view.js';
import type { Backend } from '../types.js';
import { type LatencyCalibrator, PREFILL_LOAD_TAU_MS, type PrefillTracker } from './bookkeepers.js';

export interface TbtCapOptions {
  readonly config: RouterConfig;
  readonly view: ClusterView;
  readonly prefill: PrefillTracker;
  readonly latency: LatencyCalibrator;
  readonly frequency: FrequencyModel;
  /** The plan in force (its clock fractions), when a planner runs. */
  readonly plan: () => Plan | undefined;
  /** Share of the TBT target the limit lets the modelled TBT reach. Default TBT_CAP_HEADROOM. */
  readonly headroom?: number;
}

/**
 * Share of the TBT target the admission limit lets the modelled TBT reach. Above 1 on purpose: the
 * model's TBT at admission counts the admitted prompt's whole prefill within the class's TBT window
 * (2.5 s for interactive requests), a peak that the mean TBT over an answer is not held to; placement
 * keeps its own 0.85 (TBT_HEADROOM) for the backends it prefers. Measured on the savings matrix's
 * peak cells (diurnal at 0.9, conversation at 0.9, code at 0.3): 1.0 kept interactive attainment
 * highest on the diurnal peak but refused the most (conversation at 0.9: 80% against 85–88%); 1.3
 * the reverse; 1.15 between, with the lowest carbon.
 */
export const TBT_CAP_HEADROOM = 1.15;

/**
 * A backend's admission limit from the cost model: the most requests it may run at once with the time
 * between tokens of every one within the strictest target among the requests running there and the
 * one to admit, at the prompt load it is being sent (the prefill that shares its steps), its planned
 * clock and its calibrated latency factor. At least 1: an idle backend always takes a request.
 *
 * Placement keeps TBT while some backend can; past that (every instance full at a peak) the request
 * joins a queue, and a limit of `maxConcurrency` would admit it into a batch that then misses for
 * everyone in it. With this limit it waits instead, in least-laxity order, for a slot that keeps TBT.
 */
export class TbtCap {
  readonly #o: TbtCapOptions;
  readonly #headroom: number;

  constructor(options: TbtCapOptions) {
    this.#o = options;
    this.#headroom = options.headroom ?? TBT_CAP_HEADROOM;
  }

  /** Requests `backend` may run at once when admitting one of class `tag`; `maxConcurrency` when no class with a TBT target is involved. */
  limit(backend: Backend, tag: string | undefined, promptTokens: number, nowMs: number): number {
    const o = this.#o;
    const classes = o.config.sloClasses;
    const own = tag !== undefined ? classes[tag] : undefined;
    let targetMs = own?.tbtMs ?? Number.POSITIVE_INFINITY;
    let windowMs = Math.min(own?.tbtWindowMs ?? PREFILL_LOAD_TAU_MS, PREFILL_LOAD_TAU_MS);
    const state = o.view.at(o.view.ref(backend.id), nowMs);
    for (const name of state.byTag.keys()) {
      const running = classes[name];
      if (!running) continue;
      targetMs = Math.min(targetMs, running.tbtMs);
      windowMs = Math.min(windowMs, running.tbtWindowMs);
    }
    if (!Number.isFinite(targetMs)) return backend.maxConcurrency;
    const budgetMs = this.#headroom * targetMs;
    const rate = o.prefill.promptTokensPerS(backend.id, nowMs);
    const clock = o.plan()?.clockFraction.get(backend.id) ?? 1;
    const factor = o.latency.factor(backend.id);
    // As placement costs it: the prompt's own prefill spent within the shortest TBT window involved.
    const withOwn = batchWithinTbt(backend, budgetMs, rate + (promptTokens * 1000) / windowMs, clock, factor, o.frequency);
    if (withOwn > 0) return withOwn;
    // Not even one sequence keeps the target with this prompt's prefill on top of the load: the
    // prompt is then left out, and only the batch and the load are held to the target. Held to 1
    // instead, a long prompt (whose own prefill breaks a short window whatever the batch) waited for
    // an idle backend at light load (long prompts, clean-slowest, 0.3: 96.4% against 98.9%); held to
    // 1 unless the prompt breaks it alone on an idle backend, that cell lost 0.8 point and
    // interactive attainment 4.7.
    return Math.max(1, batchWithinTbt(backend, budgetMs, rate, clock, factor, o.frequency));
  }
}
