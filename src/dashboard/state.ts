import type { Outcome } from '../metrics/metrics.js';
import type { CandidateTrace, PluginError } from '../schedule/orchestrator.js';

/**
 * The JSON at `GET /dashboard/api/state` (version 1): what the dashboard draws, for Grafana's JSON
 * data sources or scripts too. With replicas sharing a Redis store, backend load, health and the
 * plan are the fleet's (read through the store); totals, decisions, latencies, SLO and tenant
 * figures are this replica's. Times are ages in seconds (never clock readings: each replica's
 * clock has its own origin). Energy and carbon are the cost model's estimates at dispatch, the
 * figures `/metrics` counts; null where there is nothing to divide by yet.
 */
export interface DashboardState {
  readonly version: 1;
  /** How often the page polls (ms). */
  readonly refreshMs: number;
  /** Since the router started (s). */
  readonly uptimeS: number;
  readonly policy: string;
  readonly objective: 'carbon' | 'energy';
  readonly sites: readonly SiteRow[];
  readonly backends: readonly BackendRow[];
  readonly fleet: FleetTotals;
  /** Per SLO class, requests that ended after placement and how many attained its targets. */
  readonly slo: readonly { readonly class: string; readonly ended: number; readonly attained: number; readonly attainment: number | null }[];
  readonly tenants: {
    /** Jain's index of output tokens served per tenant: 1 = equal service (it does not weigh unequal demand). */
    readonly jainIndex: number | null;
    readonly tenants: readonly { readonly tenant: string; readonly ended: number; readonly completed: number; readonly outputTokens: number; readonly share: number | null }[];
  };
  /** The pool plan in force, when a planner runs. */
  readonly plan: PlanRow | null;
  /** The latest routing decisions, newest first. */
  readonly decisions: readonly (Omit<DecisionRow, 'atMs'> & { readonly ageS: number })[];
}

export interface SiteRow {
  readonly id: string;
  readonly region: string;
  /** Grid carbon intensity now (gCO2e/kWh). */
  readonly gramsPerKWh: number;
  /** Sampled every `dashboard.carbonSampleMs`, oldest first. */
  readonly carbonHistory: readonly { readonly ageS: number; readonly gramsPerKWh: number }[];
  /** Requests placed here since start (failovers count again). */
  readonly placed: number;
  /** placed ÷ all placements since start. */
  readonly share: number | null;
  /** Share over the last `dashboard.shareWindow` placements. */
  readonly recentShare: number | null;
  readonly instances: number;
  /** Instances the plan in force runs (all without a planner). */
  readonly activeInstances: number;
  /** SM clock target per instance (fraction of max); null for a parked one. */
  readonly clocks: readonly { readonly backend: string; readonly clockFraction: number | null }[];
}

export interface BackendRow {
  readonly id: string;
  readonly site: string;
  readonly healthy: boolean;
  /** In the plan in force; null without a planner. */
  readonly planned: boolean | null;
  readonly clockFraction: number | null;
  /** Requests holding a slot here, across every replica sharing the state store. */
  readonly inFlight: number;
  /** Requests waiting in its admission queue (with a shared store: its shared queue, across replicas). */
  readonly queued: number;
  /** Latest start minus now of the most urgent waiting request (ms; negative: late); null when none waits. */
  readonly leastLaxityMs: number | null;
  /** Arrival to first byte of recent streamed completions (ms). */
  readonly ttftMs: LatencyQuantiles | null;
  /** Mean time between tokens of recent streamed completions (ms). */
  readonly tbtMs: LatencyQuantiles | null;
  readonly served: number;
  readonly energyJ: number;
  readonly carbonG: number;
  readonly outputTokens: number;
}

export interface LatencyQuantiles {
  readonly p50: number;
  readonly p90: number;
  /** Completions the quantiles are taken over (the last `dashboard.latencyWindow`). */
  readonly samples: number;
}

export interface FleetTotals {
  /** Requests sent upstream and ended (their energy is counted). */
  readonly served: number;
  readonly outputTokens: number;
  readonly energyJ: number;
  readonly carbonG: number;
  readonly joulesPerOutputToken: number | null;
  readonly gramsPerRequest: number | null;
  readonly baseline: {
    readonly policy: string;
    /** How the baseline is estimated, in words. */
    readonly method: string;
    /** Served requests with a baseline estimate. */
    readonly requests: number;
    readonly energyJ: number;
    readonly carbonG: number;
    /** baseline − actual (positive: saved). */
    readonly savedEnergyJ: number;
    readonly savedCarbonG: number;
    readonly savedEnergyFraction: number | null;
    readonly savedCarbonFraction: number | null;
  };
}

export interface PlanRow {
  readonly status: 'optimal' | 'degraded' | 'initial';
  readonly note: string;
  /** Since it was made (s). */
  readonly ageS: number;
  readonly active: readonly string[];
  readonly parked: readonly string[];
  readonly clockFraction: Readonly<Record<string, number>>;
  /** Forecast request rate per request type (req/s). */
  readonly forecastRps: Readonly<Record<string, number>>;
  readonly solveMs: number;
}

/** One routing decision, without the prompt. */
export interface DecisionRow {
  readonly requestId: string;
  /** Router clock (ms), kept inside the collector: the JSON gives `ageS` instead. */
  readonly atMs: number;
  readonly model: string;
  readonly tenant: string;
  readonly sloClass: string;
  readonly stream: boolean;
  readonly promptTokens: number;
  readonly predictedOutputTokens: { readonly p50: number; readonly p90: number };
  readonly requestType: string;
  readonly picked: string;
  readonly site: string;
  /** The cost model's estimate for the pick. */
  readonly estimate: { readonly energyJ: number; readonly carbonG: number; readonly ttftMs: number; readonly e2eMs: number };
  /** What the baseline policy would have picked over the same candidates, and its estimate. */
  readonly baseline: { readonly policy: string; readonly backend: string; readonly energyJ: number; readonly carbonG: number } | null;
  /** Soft filters relaxed because they would have removed every candidate. */
  readonly relaxed: readonly string[];
  readonly policy: string | null;
  /** Every candidate: the filter that dropped it, or each scorer's score and the weighted total. */
  readonly candidates: readonly CandidateTrace[];
  /** Time in each plugin (µs). */
  readonly pluginUs: Readonly<Record<string, number>>;
  readonly errors: readonly PluginError[];
  /** How the request ended; null while it runs. */
  outcome: Outcome | null;
  outputTokens: number | null;
}
