import type { ForecastError } from '../plan/forecast.js';
import { DEFAULT_SLO_CLASSES, type SloClass, ttftTargetMs } from '../request/slo.js';
import type { RequestRecord, SimulationResult } from './simulator.js';

/** The figures a simulation run is judged by. Fractions are in [0, 1]. */
export interface RunMetrics {
  readonly energyKWh: number;
  readonly carbonKg: number;
  /** Requests that completed within their class's TTFT and TBT targets, over all requests. */
  readonly sloAttainment: number;
  readonly sloAttainmentByClass: Readonly<Record<string, number>>;
  /** FREESH's rule: completed with e2e ≤ 5 × the router's predicted latency. */
  readonly freeshSloAttainment: number;
  /** Jain's index over tenants of their mean ideal/actual latency ratio (refusals count 0). */
  readonly jain: number;
  /** Mean, over sampling periods with ≥ 2 continuously backlogged tenants, of (max − min service) / mean service among them. */
  readonly vtcGap: number;
  /** FREESH's fairness figure: max(0, 1 − vtcGap). */
  readonly fairness: number;
  readonly ttftP50Ms: number;
  readonly ttftP99Ms: number;
  readonly e2eP50Ms: number;
  readonly e2eP99Ms: number;
  readonly completed: number;
  readonly rejected: number;
  readonly rejectedBy: Readonly<Record<string, number>>;
  readonly gpuHoursActive: number;
  readonly simulatedMinutes: number;
  readonly wallSeconds: number;
  /** The planner's per-step demand forecast error (runs with a planner). */
  readonly forecastError?: ForecastError | undefined;
  /** GPU pool partitions planned, and how many of them could not cover the forecast (fleets with `gpus`). */
  readonly poolPlans?: { readonly planned: number; readonly infeasible: number } | undefined;
}

export function evaluate(result: SimulationResult, sloClasses: Readonly<Record<string, SloClass>> = DEFAULT_SLO_CLASSES): RunMetrics {
  const records = result.records;
  const completed = records.filter(isCompleted);
  const rejectedBy: Record<string, number> = {};
  for (const r of records) if (r.rejected) rejectedBy[r.rejected] = (rejectedBy[r.rejected] ?? 0) + 1;

  const meets = (r: RequestRecord): boolean => {
    if (!isCompleted(r)) return false;
    const slo = sloClasses[r.request.sloClass];
    if (!slo) return false;
    const ttft = r.firstTokenMs - r.request.arrivalMs;
    const tbt = r.request.outputTokens > 1 ? (r.doneMs - r.firstTokenMs) / (r.request.outputTokens - 1) : 0;
    return ttft <= ttftTargetMs(slo, r.request.promptTokens) && tbt <= slo.tbtMs;
  };
  const byClass: Record<string, number> = {};
  for (const name of new Set(records.map((r) => r.request.sloClass))) {
    const inClass = records.filter((r) => r.request.sloClass === name);
    byClass[name] = inClass.filter(meets).length / inClass.length;
  }

  const tenants = new Map<string, number[]>();
  for (const r of records) {
    const ratio = isCompleted(r) && r.idealLatencyMs ? Math.min(1, r.idealLatencyMs / (r.doneMs - r.request.arrivalMs)) : 0;
    (tenants.get(r.request.tenant) ?? tenants.set(r.request.tenant, []).get(r.request.tenant)!).push(ratio);
  }
  const perTenant = [...tenants.values()].map(mean);

  const gaps: number[] = [];
  for (const s of result.samples) {
    if (s.backlogged.length < 2) continue;
    const served = s.backlogged.map((t) => s.tenantService[t] ?? 0);
    const avg = mean(served);
    if (avg > 0) gaps.push((Math.max(...served) - Math.min(...served)) / avg);
  }
  const vtcGap = gaps.length > 0 ? mean(gaps) : 0;

  const ttft = completed.map((r) => r.firstTokenMs - r.request.arrivalMs).sort(ascending);
  const e2e = completed.map((r) => r.doneMs - r.request.arrivalMs).sort(ascending);
  return {
    energyKWh: result.energyJ / 3.6e6,
    carbonKg: result.carbonG / 1000,
    sloAttainment: records.filter(meets).length / records.length,
    sloAttainmentByClass: byClass,
    freeshSloAttainment: completed.filter((r) => r.predictedLatencyMs !== undefined && r.doneMs - r.request.arrivalMs <= 5 * r.predictedLatencyMs).length / records.length,
    jain: jain(perTenant),
    vtcGap,
    fairness: Math.max(0, 1 - vtcGap),
    ttftP50Ms: quantile(ttft, 0.5),
    ttftP99Ms: quantile(ttft, 0.99),
    e2eP50Ms: quantile(e2e, 0.5),
    e2eP99Ms: quantile(e2e, 0.99),
    completed: completed.length,
    rejected: records.length - completed.length,
    rejectedBy,
    gpuHoursActive: result.gpuHoursActive,
    simulatedMinutes: result.endMs / 60_000,
    wallSeconds: result.wallMs / 1000,
    forecastError: result.forecastError,
    poolPlans: result.poolPlans?.length ? { planned: result.poolPlans.length, infeasible: result.poolPlans.filter((p) => p.status === 'infeasible').length } : undefined,
  };
}

type Completed = RequestRecord & { firstTokenMs: number; doneMs: number };

function isCompleted(r: RequestRecord): r is Completed {
  return r.doneMs !== undefined && r.firstTokenMs !== undefined && r.rejected === undefined;
}

/** Jain's fairness index: (Σx)² / (n·Σx²); 1 when all equal, 1/n when one takes everything. */
export function jain(values: readonly number[]): number {
  const sum = values.reduce((s, v) => s + v, 0);
  const squares = values.reduce((s, v) => s + v * v, 0);
  return squares === 0 ? 1 : (sum * sum) / (values.length * squares);
}

/** Nearest-rank quantile of sorted values; NaN when empty. */
export function quantile(sorted: readonly number[], q: number): number {
  if (sorted.length === 0) return Number.NaN;
  return sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil(q * sorted.length) - 1))]!;
}

const mean = (xs: readonly number[]) => (xs.length === 0 ? 0 : xs.reduce((s, v) => s + v, 0) / xs.length);
const ascending = (a: number, b: number) => a - b;
