import { leastLaxityFairOrder, leastLaxityOrder, type QueueOrder } from '../queue/order.js';
import { ttftTargetMs } from '../request/slo.js';
import type { Candidate } from '../types.js';
import { healthyFilter, loadScorer, maxScorePicker } from './plugins.js';
import type { DecisionContext, Filter, Policy, Scorer } from './policy.js';

// Each plugin gives its batch form too, its loop written out in the plugin (see plugins.ts).

const planned = (candidate: Candidate, ctx: DecisionContext): boolean => !ctx.plan || ctx.plan.plan.active.has(candidate.backend.id);

/** Keeps the backends the plan runs (soft: if the plan parked them all, it is ignored). */
export const plannedFilter: Filter = Object.freeze<Filter>({
  name: 'planned',
  soft: true,
  keep: planned,
  keepAll(candidates, ctx, out) {
    for (let i = 0; i < candidates.length; i++) out[i] = planned(candidates[i]!, ctx) ? 1 : 0;
  },
});

const hasCapacity = (candidate: Candidate): boolean => candidate.state.inFlight + candidate.queued < candidate.backend.maxConcurrency;

/** Keeps backends with a free slot now (soft: when every one is full, the admission queues take over). */
export const capacityFilter: Filter = Object.freeze<Filter>({
  name: 'capacity',
  soft: true,
  keep: hasCapacity,
  keepAll(candidates, _ctx, out) {
    for (let i = 0; i < candidates.length; i++) out[i] = hasCapacity(candidates[i]!) ? 1 : 0;
  },
});

/**
 * Keeps backends expected to meet the request's SLO with its p90 length — TTFT within the class
 * target, the p90 end within the deadline — and whose time between tokens stays within both this
 * request's target and the tightest target of the requests already running there (adding a prompt
 * slows everyone's decoding). TBT must leave `TBT_HEADROOM` spare, since the estimate cannot see the
 * arrivals that follow. Soft: when no backend qualifies, the laxity scorer leads to the least-late one.
 */
export const deadlineFilter: Filter = Object.freeze<Filter>({
  name: 'deadline',
  soft: true,
  keep: meetsDeadline,
  keepAll(candidates, ctx, out) {
    for (let i = 0; i < candidates.length; i++) out[i] = meetsDeadline(candidates[i]!, ctx) ? 1 : 0;
  },
});

function meetsDeadline(c: Candidate, ctx: DecisionContext): boolean {
  return (
    c.cost.ttftMs <= ttftTargetMs(ctx.slo, ctx.request.promptTokens) &&
    c.cost.tbtMs <= TBT_HEADROOM * Math.min(ctx.slo.tbtMs, c.strictestTbtMs) &&
    ctx.nowMs + c.cost.e2eP90Ms <= ctx.deadlineP90Ms
  );
}

/** Share of a TBT target a placement may plan to use. */
export const TBT_HEADROOM = 0.85;

/**
 * The policy's objective (carbon or energy) relative to the cheapest candidate: 1 for the cheapest.
 * The cheapest is found once per decision (memoised on its context), keeping a decision linear in
 * the number of backends.
 */
export const objectiveScorer: Scorer = Object.freeze<Scorer>({
  name: 'objective',
  score: (candidate, ctx) => relativeCost(costOf(candidate, ctx), cheapestCost(ctx)),
  scoreAll(candidates, ctx, out) {
    // The cheapest looked up once for the whole decision, not once per candidate.
    const best = cheapestCost(ctx);
    for (let i = 0; i < candidates.length; i++) out[i] = relativeCost(costOf(candidates[i]!, ctx), best);
  },
});

function relativeCost(value: number, best: number): number {
  return value <= 0 ? 1 : best / value;
}

function cheapestCost(ctx: DecisionContext): number {
  let best = cheapest.get(ctx);
  if (best === undefined) {
    best = Number.POSITIVE_INFINITY;
    for (const c of ctx.candidates) best = Math.min(best, costOf(c, ctx));
    cheapest.set(ctx, best);
  }
  return best;
}

const cheapest = new WeakMap<DecisionContext, number>();

function costOf(candidate: Candidate, ctx: DecisionContext): number {
  return ctx.objective === 'carbon' ? candidate.cost.carbonG : candidate.cost.energyJ;
}

/**
 * Laxity left at the deadline with the p50 length, against the request's whole budget: 0.5 at zero
 * laxity, towards 1 with slack to spare, towards 0 the later it would finish.
 */
export const laxityScorer: Scorer = Object.freeze<Scorer>({
  name: 'laxity',
  score: laxity,
  scoreAll(candidates, ctx, out) {
    for (let i = 0; i < candidates.length; i++) out[i] = laxity(candidates[i]!, ctx);
  },
});

function laxity(candidate: Candidate, ctx: DecisionContext): number {
  const budget = Math.max(1, ctx.deadlineMs - ctx.request.arrivalMs);
  const laxity = ctx.deadlineMs - ctx.nowMs - candidate.cost.e2eMs;
  return laxity >= 0 ? 0.5 + 0.5 * Math.min(1, laxity / budget) : 0.5 * Math.max(0, 1 + laxity / budget);
}

/**
 * Follows the planner's shares: backends behind their planned share of this request type score
 * higher, those ahead of it lower; 0.5 for all when no plan gives shares for the type.
 */
export const planShareScorer: Scorer = Object.freeze<Scorer>({
  name: 'plan-share',
  score(candidate, ctx) {
    const shares = ctx.plan?.plan.shares.get(ctx.requestType);
    if (!shares || shares.size === 0) return 0.5;
    const assigned = ctx.plan!.assigned.get(ctx.requestType);
    return planShare(candidate, shares, assigned, assignedTotal(ctx, assigned));
  },
  scoreAll(candidates, ctx, out) {
    // The type's shares and assignments looked up once for the whole decision.
    const shares = ctx.plan?.plan.shares.get(ctx.requestType);
    if (!shares || shares.size === 0) {
      for (let i = 0; i < candidates.length; i++) out[i] = 0.5;
      return;
    }
    const assigned = ctx.plan!.assigned.get(ctx.requestType);
    const total = assignedTotal(ctx, assigned);
    for (let i = 0; i < candidates.length; i++) out[i] = planShare(candidates[i]!, shares, assigned, total);
  },
});

function planShare(candidate: Candidate, shares: ReadonlyMap<string, number>, assigned: ReadonlyMap<string, number> | undefined, total: number): number {
  const target = shares.get(candidate.backend.id) ?? 0;
  const actual = total === 0 ? 0 : (assigned?.get(candidate.backend.id) ?? 0) / total;
  return 0.5 + 2 * (target - actual);
}

/** The type's assignments summed once per decision, as the objective scorer's cheapest: per candidate it was quadratic. */
function assignedTotal(ctx: DecisionContext, assigned: ReadonlyMap<string, number> | undefined): number {
  let total = assignedTotals.get(ctx);
  if (total === undefined) {
    total = 0;
    if (assigned) for (const n of assigned.values()) total += n;
    assignedTotals.set(ctx, total);
  }
  return total;
}

const assignedTotals = new WeakMap<DecisionContext, number>();

function freeshPolicy(name: string, clockScaling: boolean, queue: QueueOrder, tbtCap: boolean): Policy {
  return {
    name,
    // The deadline comes before the plan: a parked backend is woken when no planned one can meet it.
    filters: [healthyFilter, capacityFilter, deadlineFilter, plannedFilter],
    scorers: [
      { scorer: objectiveScorer, weight: 0.4 },
      { scorer: planShareScorer, weight: 0.3 },
      { scorer: laxityScorer, weight: 0.15 },
      { scorer: loadScorer, weight: 0.15 },
    ],
    picker: maxScorePicker(),
    // Past saving: a request that will be late anyway goes where it will be least late.
    whenRelaxed: {
      deadline: [
        { scorer: laxityScorer, weight: 0.7 },
        { scorer: loadScorer, weight: 0.3 },
      ],
    },
    queue,
    planner: { clockScaling },
    tbtCap,
  };
}

/** Ours: planner with clock scaling, per-request carbon placement, least-laxity-first with tenant fairness. */
export const freesh = (): Policy => freeshPolicy('freesh', true, leastLaxityFairOrder, true);

/** FREESH as published: planner at fixed clocks, least-laxity-first admission, no tenant counters. */
export const freeshPublished = (): Policy => freeshPolicy('freesh-published', false, leastLaxityOrder, false);
