import type { Rng } from '../clock.js';
import type { Candidate, Prediction, RoutingRequest } from '../types.js';

/** What every plugin may read about the decision being made. Read-only. */
export interface DecisionContext {
  readonly request: RoutingRequest;
  readonly prediction: Prediction;
  readonly nowMs: number;
  readonly rng: Rng;
}

/** Drops candidates that must not be picked. Contract: pure; returns true to keep. */
export interface Filter {
  readonly name: string;
  keep(candidate: Candidate, ctx: DecisionContext): boolean;
}

/**
 * Rates a candidate. Contract: pure; higher is better, in [0, 1] (the orchestrator clamps, and
 * counts NaN or a thrown error as 0); scores compare candidates within one decision only.
 */
export interface Scorer {
  readonly name: string;
  score(candidate: Candidate, ctx: DecisionContext): number;
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

/** A policy: filters, then weighted scorers, then a picker. */
export interface Policy {
  readonly name: string;
  readonly filters: readonly Filter[];
  readonly scorers: readonly WeightedScorer[];
  readonly picker: Picker;
}
