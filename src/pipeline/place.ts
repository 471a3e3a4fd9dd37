import { channel } from 'node:diagnostics_channel';
import type { CarbonSignal } from '../carbon/signal.js';
import type { Rng } from '../clock.js';
import type { RouterConfig } from '../config/schema.js';
import { type CostModel, prefillTokensPerMs } from '../cost/cost-model.js';
import type { FrequencyModel } from '../cost/frequency.js';
import { deadlineUnmeetable, noBackend } from '../errors.js';
import type { PlanView } from '../plan/plan.js';
import { typeOf } from '../request/request-type.js';
import { type SloClass, ttftTargetMs } from '../request/slo.js';
import { decide, type PluginError } from '../schedule/orchestrator.js';
import type { DecisionContext, Policy } from '../schedule/policy.js';
import type { ClusterView } from '../state/cluster-view.js';
import type { Backend, Candidate, Prediction, RoutingRequest } from '../types.js';
import { PREFILL_LOAD_TAU_MS, type LatencyCalibrator, type PrefillTracker } from './bookkeepers.js';
import type { Placement } from './lifecycle.js';

/** Published on `freesh:decision` when someone subscribes (node:diagnostics_channel): costs nothing otherwise. */
export const decisionChannel = channel('freesh:decision');

export interface PlacerOptions {
  readonly config: RouterConfig;
  readonly policy: Policy;
  readonly costModel: CostModel;
  readonly frequency: FrequencyModel;
  readonly carbon: CarbonSignal;
  readonly rng: Rng;
  readonly view: ClusterView;
  readonly prefill: PrefillTracker;
  readonly latency: LatencyCalibrator;
  /** Requests waiting for a slot on a backend in this router. */
  readonly waiting: (backendId: string) => number;
  readonly plan: () => PlanView | undefined;
  readonly onPluginErrors: (errors: readonly PluginError[]) => void;
}

/**
 * Costs every backend that serves a request's model and runs the policy over them. Reads state and
 * changes none: placing a request twice gives the same answer, and a placement that is never used
 * leaves no trace.
 */
export class Placer {
  readonly #o: PlacerOptions;

  constructor(options: PlacerOptions) {
    this.#o = options;
  }

  /** Throws 503 when no candidate is left, or when the request would be late and its class rejects late requests. */
  place(request: RoutingRequest, prediction: Prediction, pool: readonly Backend[], nowMs: number, exclude?: ReadonlySet<string>): Placement {
    const o = this.#o;
    const slo = o.config.sloClasses[request.sloClass]!;
    const planView = o.plan();
    const candidates: Candidate[] = [];
    for (const backend of pool) {
      if (exclude?.has(backend.id)) continue;
      const state = o.view.get(backend.id, nowMs);
      const queued = o.waiting(backend.id);
      let strictestTbtMs = Number.POSITIVE_INFINITY;
      let windowMs = Math.min(slo.tbtWindowMs, PREFILL_LOAD_TAU_MS);
      for (const name of state.byTag.keys()) {
        const running = o.config.sloClasses[name];
        if (!running) continue;
        strictestTbtMs = Math.min(strictestTbtMs, running.tbtMs);
        windowMs = Math.min(windowMs, running.tbtWindowMs);
      }
      // The prefill load as it will be with this prompt sent: its own prefill slows the others too,
      // spent within the shortest TBT window of this request and of those running there.
      const promptTokensPerS = o.prefill.promptTokensPerS(backend.id, nowMs) + (request.promptTokens * 1000) / windowMs;
      const clockFraction = planView?.plan.clockFraction.get(backend.id) ?? 1;
      const prefillRate = prefillTokensPerMs(backend, state.inFlight, clockFraction, o.frequency);
      const prefillBacklogTokens = o.prefill.backlogTokens(backend.id, nowMs, prefillRate, backend.forwardPriority ? slo.priority : 0);
      const cost = o.costModel.estimate({
        request,
        prediction,
        backend,
        state,
        queued,
        promptTokensPerS,
        prefillBacklogTokens,
        nowMs,
        gramsPerKWh: o.carbon.gramsPerKWh(backend.site.id, nowMs),
        clockFraction,
        latencyFactor: o.latency.factor(backend.id),
      });
      candidates.push({ backend, state, queued, promptTokensPerS, strictestTbtMs, cost });
    }
    const requestType = typeOf(request, prediction);
    const ctx: DecisionContext = {
      request,
      prediction,
      requestType,
      slo,
      deadlineMs: this.#deadline(request, prediction.outputTokensP50, slo, candidates, (c) => c.cost.e2eMs),
      deadlineP90Ms: this.#deadline(request, prediction.outputTokensP90, slo, candidates, (c) => c.cost.e2eP90Ms),
      nowMs,
      rng: o.rng,
      objective: o.config.objective,
      candidates,
      plan: planView,
    };
    const decision = decide(o.policy, candidates, ctx, o.config.trace || decisionChannel.hasSubscribers);
    if (decision.errors.length > 0) o.onPluginErrors(decision.errors);
    if (decisionChannel.hasSubscribers) decisionChannel.publish({ request, trace: decision.trace });
    const picked = decision.picked?.candidate;
    if (!picked) {
      throw noBackend(request.model, decision.emptiedBy ? `every candidate was removed by the \`${decision.emptiedBy}\` filter` : 'no candidate left');
    }
    if (slo.onLate === 'reject' && decision.relaxed.includes('deadline')) throw deadlineUnmeetable(request.sloClass);
    return {
      backend: picked.backend,
      prediction,
      cost: picked.cost,
      requestType,
      slo,
      deadlineMs: ctx.deadlineMs,
      relaxed: decision.relaxed,
      trace: decision.trace,
    };
  }

  /**
   * When a request of `outputTokens` should finish. `targets`: arrival + the class's TTFT target +
   * (tokens − 1) × its TBT target. `slack` (FREESH): arrival + slackFactor × the fastest candidate's
   * `e2e` (the estimate for those tokens) as if idle.
   */
  #deadline(request: RoutingRequest, outputTokens: number, slo: SloClass, candidates: readonly Candidate[], e2e: (c: Candidate) => number): number {
    const rule = this.#o.config.deadline;
    if (rule.mode === 'targets') return request.arrivalMs + ttftTargetMs(slo, request.promptTokens) + (outputTokens - 1) * slo.tbtMs;
    let best = Number.POSITIVE_INFINITY;
    for (const c of candidates) best = Math.min(best, e2e(c) - c.cost.waitMs);
    return request.arrivalMs + rule.slackFactor * (Number.isFinite(best) ? best : 0);
  }
}
