import type { RequestType } from '../request/request-type.js';
import type { ForecastError, StepForecast } from './forecast.js';
import type { PoolPlanView } from './live-pools.js';

/**
 * Time a powered-off instance takes to serve again (ms): power-on, driver start and loading a 70B
 * model's weights (~140 GB at a few GB/s). 3 minutes; the router's config (`plan.bootMs`) and the
 * simulator's hardware share this default.
 */
export const DEFAULT_BOOT_MS = 180_000;

/** What the pool planner decided for the coming step. */
export interface Plan {
  /** Router-clock time the plan was made (ms). */
  readonly createdMs: number;
  /** Backends the plan runs; the others are parked and get no new work. */
  readonly active: ReadonlySet<string>;
  /** SM clock target per active backend (fraction of maximum). */
  readonly clockFraction: ReadonlyMap<string, number>;
  /** For each request type, each backend's planned share of that type's requests (summing to 1). */
  readonly shares: ReadonlyMap<RequestType, ReadonlyMap<string, number>>;
  /** `optimal`; `degraded` when demand exceeded what the SLOs allow and the best feasible plan was taken; `initial` before any forecast. */
  readonly status: 'optimal' | 'degraded' | 'initial';
  /** Forecast request rate per type used (req/s). */
  readonly forecastRps: Readonly<Record<RequestType, number>>;
  /** Planned objective rate: gCO2e/s (carbon) or W (energy). */
  readonly objectiveRate: number;
  readonly solveMs: number;
  readonly note: string;
  /** The partition of each site's GPUs for the coming window, where sites declare GPU inventory. */
  readonly pools?: PoolPlanView | undefined;
  /** Forecast request rate per type for each step of the coming window (req/s). */
  readonly stepForecastRps?: StepForecast | undefined;
  /** How far this planner's per-step forecasts have been off so far. */
  readonly forecastError?: ForecastError | undefined;
}

/** How the current plan is being followed: requests of each type sent to each backend since it was made. */
export interface PlanView {
  readonly plan: Plan;
  readonly assigned: ReadonlyMap<RequestType, ReadonlyMap<string, number>>;
}

/** The plan before any demand is known: everything on at full clock, no shares. */
export function initialPlan(backendIds: readonly string[], nowMs: number): Plan {
  return {
    createdMs: nowMs,
    active: new Set(backendIds),
    clockFraction: new Map(backendIds.map((id) => [id, 1])),
    shares: new Map(),
    status: 'initial',
    forecastRps: { SS: 0, SL: 0, LS: 0, LL: 0 },
    objectiveRate: Number.NaN,
    solveMs: 0,
    note: 'no demand observed yet: every backend on at full clock',
  };
}
