import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { type CarbonSeries, parseElectricityMapsCsv, parseFreeshCarbonCsv } from '../carbon/series.js';
import { BUILTIN_POLICIES } from '../schedule/builtin.js';
import { fleetCapacityRps, traceRps } from './capacity.js';
import { evaluate, type RunMetrics } from './evaluate.js';
import type { FleetSpec } from './fleet.js';
import { type RunSpec, type SimulationResult, simulate } from './simulator.js';
import { scaleTrace, type Trace } from './trace.js';
import { buildWorkload } from './workload.js';

/**
 * Log-space σ of the simulated predictor's error when a run does not use the oracle, matched to the
 * trained length model's measured error: MAE of log(1 + tokens) 0.498 on held-out questions
 * (models/length-v1/MODEL_CARD.md), and a log-normal error of σ has MAE σ·√(2/π), so σ = 0.62.
 */
export const DEFAULT_PREDICTION_SIGMA = 0.62;

/**
 * How each run name becomes a router set-up. Names not listed here are router policies run as they
 * are (so a policy added to the router needs no change here).
 */
export const NAMED_RUNS: Readonly<Record<string, (sigma: number) => RunSpec>> = Object.freeze({
  // Round-robin, first come first served, every instance on at maximum clock.
  baseline: (sigma) => ({ name: 'baseline', policy: 'round-robin', prediction: sigma }),
  // The freesh policy with the other objective switch: least energy instead of least carbon.
  'freesh-energy': (sigma) => ({ name: 'freesh-energy', policy: 'freesh', prediction: sigma, router: { objective: 'energy' } }),
  // The freesh policy with true output lengths: how much better a perfect predictor would do.
  oracle: () => ({ name: 'oracle', policy: 'freesh', prediction: 'oracle' as const }),
});

/** The baseline, every router policy by name (round-robin is the baseline's), freesh minimising energy, and the oracle. */
export function defaultRunNames(): string[] {
  return ['baseline', ...Object.keys(BUILTIN_POLICIES).filter((p) => p !== 'round-robin'), 'freesh-energy', 'oracle'];
}

export function runSpec(name: string, sigma = DEFAULT_PREDICTION_SIGMA): RunSpec {
  return NAMED_RUNS[name]?.(sigma) ?? { name, policy: name, prediction: sigma };
}

export interface EvaluationOptions {
  readonly trace: Trace;
  readonly fleet: FleetSpec;
  readonly carbon: ReadonlyMap<string, CarbonSeries>;
  readonly runs: readonly RunSpec[];
  /** Target mean utilisation of the fleet (see fleetCapacityRps). Default 0.6. */
  readonly utilisation?: number;
  readonly seed?: number;
  /** What instances a plan parks draw: `idle` (default) or `off` (powered down). */
  readonly parkedPower?: 'idle' | 'off';
  readonly onProgress?: (run: string, fraction: number) => void;
}

export interface Evaluation {
  readonly trace: string;
  readonly utilisation: number;
  readonly parkedPower: 'idle' | 'off';
  readonly rateMultiplier: number;
  readonly offeredRps: number;
  readonly capacityRps: number;
  readonly requests: number;
  readonly runs: readonly { readonly spec: RunSpec; readonly metrics: RunMetrics; readonly result: SimulationResult }[];
}

/** Scales the trace to the target utilisation and runs every policy on the same workload. */
export async function runEvaluation(options: EvaluationOptions): Promise<Evaluation> {
  const utilisation = options.utilisation ?? 0.6;
  const capacityRps = fleetCapacityRps(options.fleet, options.trace);
  const rateMultiplier = (utilisation * capacityRps) / traceRps(options.trace);
  const trace = scaleTrace(options.trace, rateMultiplier);
  const workload = buildWorkload(trace, { seed: options.seed ?? 1 });
  const runs = [];
  for (const given of options.runs) {
    const spec: RunSpec = options.parkedPower
      ? { ...given, router: { ...given.router, plan: { ...given.router?.plan, parkedPower: options.parkedPower } } }
      : given;
    const result = await simulate({
      fleet: options.fleet,
      workload,
      carbon: options.carbon,
      run: spec,
      seed: options.seed ?? 1,
      onProgress: (done, total) => options.onProgress?.(spec.name, done / total),
    });
    options.onProgress?.(spec.name, 1);
    runs.push({ spec, metrics: evaluate(result), result });
  }
  return {
    trace: options.trace.name,
    utilisation,
    parkedPower: options.parkedPower ?? 'idle',
    rateMultiplier,
    offeredRps: traceRps(trace),
    capacityRps,
    requests: trace.requests.length,
    runs,
  };
}

export type CarbonSource = 'electricitymaps' | 'freesh';

/**
 * Carbon series for the fleet's sites from the shared data folder. `electricitymaps`: each site's
 * `region` names a zone export (`electricitymaps-<region>-2023-hourly.csv`), starting at `start`
 * (default the conversation trace's own hour, 2023-11-16 18:00 UTC). `freesh`: the authors' three
 * 5-minute columns, in site order, starting at step `startStep`.
 */
export async function loadCarbon(
  fleet: FleetSpec,
  dataDir: string,
  source: CarbonSource = 'electricitymaps',
  options: { start?: string; startStep?: number } = {},
): Promise<Map<string, CarbonSeries>> {
  const out = new Map<string, CarbonSeries>();
  if (source === 'freesh') {
    const columns = parseFreeshCarbonCsv(await readFile(join(dataDir, 'carbon', 'freesh-3site-5min.csv'), 'utf8'), { startStep: options.startStep ?? 0 });
    fleet.sites.forEach((site, i) => {
      const series = columns[i % columns.length];
      if (series) out.set(site.id, series);
    });
    return out;
  }
  for (const site of fleet.sites) {
    const text = await readFile(join(dataDir, 'carbon', `electricitymaps-${site.region}-2023-hourly.csv`), 'utf8');
    out.set(site.id, parseElectricityMapsCsv(text, { start: options.start ?? '2023-11-16T18:00Z' }));
  }
  return out;
}
