import highsLoader, { type Highs } from 'highs';
import type { FrequencyModel } from '../cost/frequency.js';
import { decodePowerW, decodeStepMs, prefillMs, throughputRps } from '../cost/profiles.js';
import { REQUEST_TYPES, type RequestType } from '../request/request-type.js';
import { type SloClass, ttftTargetMs } from '../request/slo.js';
import type { Backend } from '../types.js';
import type { Plan } from './plan.js';

// highs ships CommonJS-style typings for an ES module whose default export is the loader.
const loadHighs = highsLoader as unknown as () => Promise<Highs>;
let solver: Promise<Highs> | undefined;

/** The HiGHS solver (WebAssembly), loaded once per process. */
export function loadSolver(): Promise<Highs> {
  solver ??= loadHighs();
  return solver;
}

export interface TypeDemand {
  /** Forecast arrivals per second. */
  readonly rps: number;
  readonly meanPromptTokens: number;
  /** Mean predicted output tokens. */
  readonly meanOutputTokens: number;
}

export interface PlanInput {
  readonly backends: readonly Backend[];
  readonly nowMs: number;
  readonly demand: Readonly<Record<RequestType, TypeDemand>>;
  /** Carbon intensity per site now (gCO2e/kWh). */
  readonly gramsPerKWh: (siteId: string) => number;
  readonly objective: 'carbon' | 'energy';
  /** Clock fractions the plan may choose from. */
  readonly clockLevels: readonly number[];
  /** Planned capacity over forecast demand (FREESH: 1.1). */
  readonly margin: number;
  /** Highest planned load of an instance, as a fraction of its capacity. */
  readonly maxUtilisation: number;
  /** The class whose TTFT and TBT targets exclude (backend, clock, type) combinations. */
  readonly slo: SloClass;
  readonly frequency: FrequencyModel;
}

/** Shortfall is allowed, at a price far above any real cost, so every window has a plan. */
const SHORTFALL_PENALTY = 1e6;

/**
 * The pool planner's MILP (FREESH's formulation on a fixed set of instances, plus clock levels):
 *
 *   minimise  Σ_b,f  y[b,f]·idle_b·w_b  +  Σ_b,f,k  λ[b,f,k]·e[b,f,k]·w_b  +  M·Σ_k u[k]
 *   s.t.      Σ_f y[b,f] ≤ 1                                   one clock level per instance, or parked
 *             Σ_k λ[b,f,k] / x[b,f,k] ≤ ρ·y[b,f]                planned load within capacity
 *             Σ_k λ[b,f,k]·prefill[b,f,k] ≤ ρ·(1 − step[b,f]/TBT)·y[b,f]   prefill leaves TBT within target
 *             Σ_b,f λ[b,f,k] + u[k] ≥ margin·forecast[k]         demand of every request type
 *             Σ_b,f y[b,f] ≥ 1
 *
 * with λ the request rate of type k sent to instance b at clock f, x its capacity for that type
 * (continuous batching at the instance's admitted batch), e the dynamic energy per request, idle_b the
 * instance's idle power, and w_b the site's weight: gCO2e per J (carbon) or 1 (energy); PUE applies
 * to both. Combinations whose TTFT or TBT would break the SLO class's targets are left out, as FREESH
 * excludes modes that break its SLO. Every active instance is charged its idle power even if parked
 * ones stay on: that stands in for the batch-efficiency gain of consolidating load, which a linear
 * model cannot see. Demand beyond what the SLOs allow is shortfall u: the plan is then `degraded`.
 */
export function solvePlan(highs: Highs, input: PlanInput): Plan {
  const started = performance.now();
  const formulation = formulate(input);
  return readSolution(input, formulation, solveLp(highs, formulation.lp), performance.now() - started);
}

/** What HiGHS returns that the planner reads. */
export interface LpSolution {
  readonly Status: string;
  readonly ObjectiveValue: number;
  readonly Columns: Readonly<Record<string, { readonly Primal: number }>>;
}

/** Solves an LP-format model; the options bound the time and the optimality gap. */
export function solveLp(highs: Highs, lp: string): LpSolution {
  // Stryker disable next-line ObjectLiteral,BooleanLiteral: highs-js prints nothing either way, 1e-4 is HiGHS's default gap, and the limit binds only on models far larger than a fleet's
  const result = highs.solve(lp, { output_flag: false, mip_rel_gap: 1e-4, time_limit: 10 });
  const columns: Record<string, { Primal: number }> = {};
  for (const [name, column] of Object.entries(result.Columns) as [string, { Primal: number }][]) columns[name] = { Primal: column.Primal };
  return { Status: result.Status, ObjectiveValue: result.ObjectiveValue, Columns: columns };
}

export interface Formulation {
  /** The MILP in CPLEX LP format. */
  readonly lp: string;
  readonly variables: ReadonlyMap<string, { readonly backend: Backend; readonly clock: number; readonly type?: RequestType }>;
}

/** Writes the planning MILP for an input. */
export function formulate(input: PlanInput): Formulation {
  const lines: string[] = [];
  const objective: string[] = [];
  const binaries: string[] = [];
  const capacityRows: string[] = [];
  const demandTerms = new Map<RequestType, string[]>(REQUEST_TYPES.map((k) => [k, []]));
  const variables = new Map<string, { backend: Backend; clock: number; type?: RequestType }>();

  input.backends.forEach((backend, bi) => {
    const p = backend.profile;
    const pue = backend.site.pue;
    const weight = (input.objective === 'carbon' ? input.gramsPerKWh(backend.site.id) / 3.6e6 : 1) * pue;
    const levels: string[] = [];
    input.clockLevels.forEach((clock, fi) => {
      const y = `y_${bi}_${fi}`;
      variables.set(y, { backend, clock });
      binaries.push(y);
      levels.push(y);
      objective.push(`${num(p.idleW * weight)} ${y}`);
      const load: string[] = [];
      const prefillLoad: string[] = [];
      const dynamic = input.frequency.dynamicPower(clock);
      const batch = backend.maxConcurrency;
      const stepMs = decodeStepMs(p, batch) * input.frequency.decodeTime(clock);
      for (const [ki, k] of REQUEST_TYPES.entries()) {
        const d = input.demand[k];
        const prefill = prefillMs(p, d.meanPromptTokens) * input.frequency.prefillTime(clock);
        // The tbt row below forbids load at a step at or past the target too; leaving it out keeps the model small.
        // Stryker disable next-line EqualityOperator: at a step equal to the target the tbt row leaves no time to prefill a prompt, so the combination carries nothing either way
        if (stepMs >= input.slo.tbtMs) continue;
        if (prefill + stepMs > ttftTargetMs(input.slo, d.meanPromptTokens)) continue;
        const capacity = throughputRps(batch, stepMs, prefill, d.meanOutputTokens);
        const energyJ =
          (prefill / 1000) * (p.prefillW - p.idleW) * dynamic + (d.meanOutputTokens * stepMs * (decodePowerW(p, batch) - p.idleW) * dynamic) / batch / 1000;
        const l = `l_${bi}_${fi}_${ki}`;
        variables.set(l, { backend, clock, type: k });
        objective.push(`${num(energyJ * weight)} ${l}`);
        load.push(`${num(1 / capacity)} ${l}`);
        prefillLoad.push(`${num(prefill / 1000)} ${l}`);
        demandTerms.get(k)!.push(l);
      }
      capacityRows.push(`cap_${bi}_${fi}: ${load.length > 0 ? `${load.join(' + ')} ` : ''}- ${num(input.maxUtilisation)} ${y} <= 0`);
      // Prefill steals decode time: the share of time spent prefilling must leave TBT within target,
      // step / (1 − share) ≤ tbt, so share ≤ 1 − step / tbt; planned to ρ of that, as decoding is, so
      // that a burst of prompts above the mean rate finds room too (planned to the brim, long-prompt
      // and conversation traffic at 0.3 of capacity missed TBT on the loaded instances: bench/README).
      if (prefillLoad.length > 0) capacityRows.push(`tbt_${bi}_${fi}: ${prefillLoad.join(' + ')} - ${num(input.maxUtilisation * (1 - stepMs / input.slo.tbtMs))} ${y} <= 0`);
    });
    lines.push(`one_${bi}: ${levels.join(' + ')} <= 1`);
  });
  for (const [ki, k] of REQUEST_TYPES.entries()) {
    const need = input.margin * input.demand[k].rps;
    objective.push(`${SHORTFALL_PENALTY} u_${ki}`);
    lines.push(`demand_${ki}: ${[...demandTerms.get(k)!, `u_${ki}`].join(' + ')} >= ${num(need)}`);
  }
  lines.push(`some: ${binaries.join(' + ')} >= 1`);

  const lp = ['Minimize', ` obj: ${objective.join(' + ')}`, 'Subject To', ...lines.map((l) => ` ${l}`), ...capacityRows.map((l) => ` ${l}`), 'Binaries', ` ${binaries.join(' ')}`, 'End'].join('\n');
  return { lp, variables };
}

/** Turns a solution of `formulation` into a plan. */
export function readSolution(input: PlanInput, formulation: Formulation, result: LpSolution, solveMs: number): Plan {
  const variables = formulation.variables;
  if (result.Status !== 'Optimal') {
    throw new Error(`planner: HiGHS ended with status ${result.Status}`);
  }

  const active = new Set<string>();
  const clockFraction = new Map<string, number>();
  const routed = new Map<RequestType, Map<string, number>>(REQUEST_TYPES.map((k) => [k, new Map()]));
  let shortfall = 0;
  for (const [name, column] of Object.entries(result.Columns)) {
    const value = column.Primal;
    if (name.startsWith('u_')) shortfall += value;
    const v = variables.get(name);
    if (!v || value <= 1e-9) continue;
    if (!v.type && value > 0.5) {
      active.add(v.backend.id);
      clockFraction.set(v.backend.id, v.clock);
    } else if (v.type) {
      const byBackend = routed.get(v.type)!;
      byBackend.set(v.backend.id, (byBackend.get(v.backend.id) ?? 0) + value);
    }
  }
  const shares = new Map<RequestType, Map<string, number>>();
  for (const [k, byBackend] of routed) {
    const total = [...byBackend.values()].reduce((s, v) => s + v, 0);
    if (total > 0) shares.set(k, new Map([...byBackend].map(([id, v]) => [id, v / total])));
  }
  const forecastRps = Object.fromEntries(REQUEST_TYPES.map((k) => [k, input.demand[k].rps])) as Record<RequestType, number>;
  const degraded = shortfall > 1e-6;
  return {
    createdMs: input.nowMs,
    active,
    clockFraction,
    shares,
    status: degraded ? 'degraded' : 'optimal',
    forecastRps,
    objectiveRate: result.ObjectiveValue - SHORTFALL_PENALTY * shortfall,
    solveMs,
    note: degraded
      ? `demand exceeds what the SLOs allow by ${shortfall.toFixed(2)} req/s: serving the rest best-effort`
      : `${active.size} of ${input.backends.length} instances active`,
  };
}

/**
 * A number as the LP format wants it: finite, to twelve significant digits, as short as JavaScript
 * writes it (trimming zeros by hand once trimmed an exponent's: 2.63893782902e-10 became e-1).
 * `who` names the model in the error.
 */
export function lpNumber(value: number, who = 'planner'): string {
  if (!Number.isFinite(value)) throw new RangeError(`${who}: coefficient ${value}`);
  return String(Number(value.toPrecision(12)));
}

const num = (value: number): string => lpNumber(value);
