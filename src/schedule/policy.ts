import type { Rng } from '../clock.js';
import type { LifecyclePlugin } from '../pipeline/lifecycle.js';
import type { PlanView } from '../plan/plan.js';
import type { QueueOrder } from '../queue/order.js';
import type { RequestType } from '../request/request-type.js';
import type { SloClass } from '../request/slo.js';
import type { Candidate, Prediction, RoutingRequest } from '../types.js';

/** What every plugin may read about the decision being made. Read-only. */
export interface DecisionContext {
  readonly request: RoutingRequest;
  readonly prediction: Prediction;
  readonly requestType: RequestType;
  readonly slo: SloClass;
  /** When the request should be finished (router clock, ms). */
  readonly deadlineMs: number;
  /** The same deadline for an output as long as the p90 prediction: feasibility is judged against it. */
  readonly deadlineP90Ms: number;
  readonly nowMs: number;
  readonly rng: Rng;
  /** What the policy minimises. */
  readonly objective: 'carbon' | 'energy';
  /** Every candidate of this decision, before filtering: scorers compare against them. */
  readonly candidates: readonly Candidate[];
  /** The pool plan in force and how it is being followed, when a planner runs. */
  readonly plan: PlanView | undefined;
}

/**
 * Drops candidates that must not be picked. Contract: pure; returns true to keep. A `soft` filter
 * that would drop every remaining candidate is relaxed instead (the decision records it), so the
 * scorers choose the least bad — how "serve on the least-late backend" is expressed.
 */
export interface Filter {
  readonly name: string;
  readonly soft?: boolean;
  keep(candidate: Candidate, ctx: DecisionContext): boolean;
  /**
   * Optional, for speed: `keep` of each candidate, written to `out[i]` as 1 (keep) or 0 (read as
   * `keep`'s answer is: truthy keeps), for every `i < candidates.length`. The orchestrator calls it once per decision when present, and `keep`
   * candidate by candidate instead if it throws. Its own loop calling its own `keep` is what makes
   * it fast: one call site shared by every filter costs several times an inlined call (V8).
   */
  keepAll?(candidates: readonly Candidate[], ctx: DecisionContext, out: number[]): void;
}

/**
 * Rates a candidate. Contract: pure; higher is better, in [0, 1] (the orchestrator clamps, and
 * counts NaN or a thrown error as 0); scores compare candidates within one decision only.
 */
export interface Scorer {
  readonly name: string;
  score(candidate: Candidate, ctx: DecisionContext): number;
  /**
   * Optional, for speed, as `Filter.keepAll`: `score` of each candidate, written to `out[i]` for
   * every `i < candidates.length` (unclamped: the orchestrator clamps). `score` candidate by
   * candidate is used instead if it throws.
   */
  scoreAll?(candidates: readonly Candidate[], ctx: DecisionContext, out: number[]): void;
}

export interface WeightedScorer {
  readonly scorer: Scorer;
  readonly weight: number;
}

export interface Scored {
  readonly candidate: Candidate;
  /** Weighted mean of the scorers' clamped scores, in [0, 1] (0 when the policy has no scorer). */
  readonly score: number;
}

/**
 * Chooses one candidate. Contract: called with at least one candidate, in the fleet's order;
 * returns one of them. May keep private state (a round-robin cursor); randomness comes from ctx.rng.
 */
export interface Picker {
  readonly name: string;
  pick(scored: readonly Scored[], ctx: DecisionContext): Scored;
}

/** A policy: filters, then weighted scorers, then a picker; and how it wants queues and the fleet run. */
export interface Policy {
  readonly name: string;
  readonly filters: readonly Filter[];
  readonly scorers: readonly WeightedScorer[];
  readonly picker: Picker;
  /**
   * Scorers to use instead when a soft filter (by name) had to be relaxed: a request no backend can
   * serve within its deadline is placed for lateness, not for carbon.
   */
  readonly whenRelaxed?: Readonly<Record<string, readonly WeightedScorer[]>>;
  /** How each backend's admission queue is ordered. Default first come, first served (`fifoOrder`). */
  readonly queue?: QueueOrder;
  /** Set when the policy wants the pool planner; `clockScaling` lets the plan lower SM clocks. */
  readonly planner?: { readonly clockScaling: boolean };
  /**
   * Admit into a backend only while the cost model expects every request running there to keep its
   * TBT target (see TbtCap): past that, requests wait in the queue for a slot that keeps it. Default
   * off: a backend admits up to its `maxConcurrency`.
   */
  readonly tbtCap?: boolean;
  /** State the policy needs kept as requests go (see LifecyclePlugin), besides the router's own. */
  readonly plugins?: readonly LifecyclePlugin[];
}
