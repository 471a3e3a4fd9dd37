import { existsSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { type CarbonSeries, parseElectricityMapsCsv, stepSeries } from '../carbon/series.js';
import type { RouterConfigInput } from '../config/schema.js';
import type { Curve } from '../cost/profiles.js';
import { DEFAULT_BOOT_MS } from '../plan/plan.js';
import { sloCapacityRps, traceRps } from './capacity.js';
import { evaluate, type RunMetrics } from './evaluate.js';
import { FREESH_FLEET, type FleetSpec } from './fleet.js';
import { fluidBound } from './fluid-bound.js';
import { fleetHardware, type Hardware } from './hardware.js';
import { DEFAULT_PREDICTION_SIGMA } from './harness.js';
import { type RunSpec, simulate } from './simulator.js';
import { parseAzureTrace, scaleTrace, type Trace } from './trace.js';
import { buildWorkload } from './workload.js';
import { diurnalTrace, firstMinutes, longPromptTrace } from './workloads.js';

/**
 * The benchmark's matrix: every policy and baseline on every workload × grid × load, on simulated
 * hardware that is not the router's own model, with a fluid lower bound per cell.
 */

type PlanInput = NonNullable<RouterConfigInput['plan']>;

/** Electricity Maps zones per site: where the cleanest grid (FR) sits. */
export const GRIDS: Readonly<Record<string, Readonly<Record<string, string>>>> = Object.freeze({
  // loc1 holds the fastest instances (4×H100), loc2 the slowest (three 4×A100), loc3 one 8×A100.
  'clean-fastest': { loc1: 'FR', loc2: 'DE', loc3: 'US-CAL-CISO' },
  'clean-slowest': { loc1: 'US-CAL-CISO', loc2: 'FR', loc3: 'DE' },
  'no-clean': { loc1: 'DE', loc2: 'US-CAL-CISO', loc3: 'DE' },
});

export const WORKLOADS = ['conv', 'code', 'long', 'diurnal'] as const;
export type WorkloadName = (typeof WORKLOADS)[number];

/** Fractions of the fleet's SLO-feasible capacity (`sloCapacityRps`). */
export const LOADS: readonly number[] = Object.freeze([0.3, 0.6, 0.9]);

/** Idle minutes before an operator's shutdown powers an instance off (the carbon-greedy baseline). */
export const IDLE_SHUTDOWN_MS = 5 * 60_000;

/** The rows of every cell: four baselines, the shipped default, and the default with true lengths. */
export const MATRIX_RUNS = ['round-robin', 'least-loaded', 'least-loaded-planned', 'carbon-greedy', 'freesh', 'freesh-oracle'] as const;
export const BASELINES: readonly string[] = Object.freeze(['round-robin', 'least-loaded', 'least-loaded-planned', 'carbon-greedy']);

/**
 * A run's set-up. `timeScale` < 1 compresses a day into the run: the planner's step and window, the
 * boot time and the idle shutdown shrink with it, so the control loops see the day as they would.
 */
export function matrixRun(name: string, timeScale = 1, sigma = DEFAULT_PREDICTION_SIGMA, planOverrides: PlanInput = {}): RunSpec {
  const plan = {
    parkedPower: 'off' as const,
    stepMs: Math.round(5 * 60_000 * timeScale),
    windowMs: Math.round(30 * 60_000 * timeScale),
    bootMs: Math.round(DEFAULT_BOOT_MS * timeScale),
    ...planOverrides,
  };
  switch (name) {
    case 'round-robin':
    case 'least-loaded':
      return { name, policy: name, prediction: sigma };
    case 'carbon-greedy':
      return { name, policy: name, prediction: sigma, idleOffAfterMs: IDLE_SHUTDOWN_MS * timeScale };
    case 'freesh-oracle':
      return { name, policy: 'freesh', prediction: 'oracle', router: { plan } };
    default:
      return { name, policy: name, prediction: sigma, router: { plan } };
  }
}

export interface MatrixCell {
  readonly trace: string;
  readonly grid: string;
  readonly load: number;
  readonly policy: string;
  readonly energyKWh: number;
  readonly carbonKg: number;
  /** Attainment over all requests (refused ones miss); null for the bound rows. */
  readonly slo: number | null;
  readonly interactiveSlo: number | null;
  readonly served: number | null;
  readonly refused: number | null;
}

export interface MatrixOptions {
  readonly dataDir: string;
  readonly workloads?: readonly WorkloadName[];
  readonly grids?: readonly string[];
  readonly loads?: readonly number[];
  readonly runs?: readonly string[];
  readonly seed?: number;
  /** Cut each recorded trace to its first minutes (quicker runs). */
  readonly minutes?: number;
  /** `perturbed` (default): hardware drawn around the router's model; `model`: the router's model itself. */
  readonly truth?: 'perturbed' | 'model';
  /** Planner settings for the runs that plan (freesh, its oracle, least-loaded-planned), over the matrix's own. */
  readonly plan?: PlanInput;
  /** Also solve the fluid bounds. Default true. */
  readonly bounds?: boolean;
  /** Declare the FREESH sites' GPU inventory, so the planner also plans (and reports) GPU pool partitions. Default false. */
  readonly pools?: boolean;
  readonly onCell?: (cell: MatrixCell, metrics: RunMetrics | undefined) => void;
  /** How a run name becomes a run. Default `matrixRun`; the clock-control comparison passes `clockRun`. */
  readonly runSpec?: typeof matrixRun;
}

export interface Matrix {
  readonly cells: readonly MatrixCell[];
  readonly hardware: ReadonlyMap<string, Hardware>;
}

/**
 * The small-batch power curve measured on an H200 for the simulator (models/hardware/, with its
 * provenance; scripts/device/ made it), as shares of the idle-to-full span above a loaded idle.
 */
export async function measuredPowerCurve(): Promise<Curve> {
  let dir = dirname(fileURLToPath(import.meta.url));
  for (let i = 0; i < 6 && !existsSync(join(dir, POWER_CURVE)); i++) dir = dirname(dir);
  const parsed = JSON.parse(await readFile(join(dir, POWER_CURVE), 'utf8')) as { pointsFromLoadedIdle: [number, number][] };
  return parsed.pointsFromLoadedIdle;
}

const POWER_CURVE = join('models', 'hardware', 'decode-power-h200.json');

/** Builds a workload's trace from the recorded ones, with the time scale of its day (1 = real time). */
export async function loadWorkload(name: WorkloadName, dataDir: string, minutes?: number): Promise<{ trace: Trace; timeScale: number }> {
  const read = async (file: string) => {
    const trace = parseAzureTrace(await readFile(join(dataDir, 'traces', `azure-llm-2023-${file}.csv`), 'utf8'), file);
    return minutes ? firstMinutes(trace, minutes) : trace;
  };
  switch (name) {
    case 'conv':
    case 'code':
      return { trace: await read(name), timeScale: 1 };
    case 'long':
      return { trace: longPromptTrace(await read('conv')), timeScale: 1 };
    case 'diurnal': {
      const trace = diurnalTrace(await read('conv'));
      return { trace, timeScale: trace.durationMs / 86_400_000 };
    }
  }
}

/**
 * Each site's series for a grid. Real time: hourly from the traces' own hour (2023-11-16 18:00 UTC).
 * A compressed day (`timeScale` < 1): that day's 24 hours from 00:00 UTC, each lasting 1 h × timeScale.
 */
export async function gridCarbon(fleet: FleetSpec, grid: Readonly<Record<string, string>>, dataDir: string, timeScale: number): Promise<Map<string, CarbonSeries>> {
  const out = new Map<string, CarbonSeries>();
  for (const site of fleet.sites) {
    const zone = grid[site.id];
    if (!zone) throw new RangeError(`grid names no zone for site \`${site.id}\``);
    const text = await readFile(join(dataDir, 'carbon', `electricitymaps-${zone}-2023-hourly.csv`), 'utf8');
    if (timeScale >= 1) out.set(site.id, parseElectricityMapsCsv(text, { start: '2023-11-16T18:00Z' }));
    else out.set(site.id, stepSeries(parseElectricityMapsCsv(text, { start: '2023-11-16T00:00Z' }).values.slice(0, 24), 3_600_000 * timeScale));
  }
  return out;
}

/** The fleet with each site's region and constant intensity (its series' mean) from the grid. */
function fleetOnGrid(fleet: FleetSpec, grid: Readonly<Record<string, string>>, carbon: ReadonlyMap<string, CarbonSeries>): FleetSpec {
  return {
    ...fleet,
    sites: fleet.sites.map((s) => {
      const values = carbon.get(s.id)!.values.slice(0, 24);
      return { ...s, region: grid[s.id]!, gramsPerKWh: values.reduce((a, v) => a + v, 0) / values.length };
    }),
  };
}

/** The FREESH sites' GPU inventory (the authors' profile: 24 A100 and 6 H100). */
const FREESH_GPUS: Readonly<Record<string, Readonly<Record<string, number>>>> = {
  loc1: { 'A100-80GB': 4, 'H100-80GB': 4 },
  loc2: { 'A100-80GB': 12, 'H100-80GB': 2 },
  loc3: { 'A100-80GB': 8 },
};
const FREESH_POOLS_FLEET: FleetSpec = { ...FREESH_FLEET, sites: FREESH_FLEET.sites.map((s) => ({ ...s, gpus: FREESH_GPUS[s.id] })) };

/** Runs every cell; cells come out in workload, grid, load, run order, bounds last in each cell. */
export async function runMatrix(options: MatrixOptions): Promise<Matrix> {
  const seed = options.seed ?? 1;
  const hardware = fleetHardware(FREESH_FLEET, {
    truth: options.truth ?? 'perturbed',
    seed,
    powerCurve: options.truth === 'model' ? undefined : await measuredPowerCurve(),
  });
  const cells: MatrixCell[] = [];
  for (const workloadName of options.workloads ?? WORKLOADS) {
    const { trace: recorded, timeScale } = await loadWorkload(workloadName, options.dataDir, options.minutes);
    // Boot times shrink with a compressed day, as the planner's step does.
    const scaledHardware = timeScale >= 1 ? hardware : new Map([...hardware].map(([id, h]) => [id, { ...h, bootMs: h.bootMs * timeScale }]));
    for (const gridName of options.grids ?? Object.keys(GRIDS)) {
      const grid = GRIDS[gridName];
      if (!grid) throw new RangeError(`unknown grid \`${gridName}\``);
      const carbon = await gridCarbon(FREESH_FLEET, grid, options.dataDir, timeScale);
      const fleet = fleetOnGrid(options.pools ? FREESH_POOLS_FLEET : FREESH_FLEET, grid, carbon);
      const capacity = sloCapacityRps(fleet, recorded);
      for (const load of options.loads ?? LOADS) {
        const trace = scaleTrace(recorded, (load * capacity) / traceRps(recorded));
        const workload = buildWorkload(trace, { seed });
        const push = (cell: MatrixCell, metrics?: RunMetrics) => {
          cells.push(cell);
          options.onCell?.(cell, metrics);
        };
        for (const runName of options.runs ?? MATRIX_RUNS) {
          const result = await simulate({ fleet, workload, carbon, run: (options.runSpec ?? matrixRun)(runName, timeScale, DEFAULT_PREDICTION_SIGMA, options.plan), hardware: scaledHardware, seed });
          const m = evaluate(result);
          push(
            {
              trace: workloadName,
              grid: gridName,
              load,
              policy: runName,
              energyKWh: round(m.energyKWh, 3),
              carbonKg: round(m.carbonKg, 4),
              slo: round(m.sloAttainment, 4),
              interactiveSlo: round(m.sloAttainmentByClass.interactive ?? Number.NaN, 4),
              served: m.completed,
              refused: m.rejected,
            },
            m,
          );
        }
        if (options.bounds === false) continue;
        for (const objective of ['energy', 'carbon'] as const) {
          const bound = await fluidBound({ trace, fleet, hardware: scaledHardware, carbon, objective, parkedPower: 'off' });
          push({
            trace: workloadName,
            grid: gridName,
            load,
            policy: `bound-${objective}`,
            energyKWh: round(bound.energyKWh, 3),
            carbonKg: round(bound.carbonKg, 4),
            slo: null,
            interactiveSlo: null,
            served: null,
            refused: null,
          });
        }
      }
    }
  }
  return { cells, hardware };
}

const round = (v: number, digits: number) => Math.round(v * 10 ** digits) / 10 ** digits;

/** freesh against the best baseline of one cell, and as a share of the bound's saving. */
export interface CellVerdict {
  readonly trace: string;
  readonly grid: string;
  readonly load: number;
  /** freesh ÷ the lowest baseline figure − 1. */
  readonly carbonVsBest: number;
  /** The baseline with the lowest carbon, and its SLO attainment minus freesh's (≤ 0: freesh attains as much or more). */
  readonly carbonBest: string;
  readonly carbonBestSloVsOurs: number;
  /**
   * freesh ÷ the lowest carbon among baselines attaining at least freesh's SLO (within half a
   * point) − 1; null when none does (freesh attains more than all of them).
   */
  readonly carbonVsSloMatched: number | null;
  readonly energyVsSloMatched: number | null;
  readonly energyVsBest: number;
  /** freesh minus the best baseline attainment (fraction). */
  readonly sloVsBest: number;
  readonly interactiveVsBest: number;
  /** freesh's saving on the best baseline over the bound's saving on it (NaN without a bound). */
  readonly carbonShareOfBound: number;
  readonly energyShareOfBound: number;
}

/** Attainment a baseline may fall short of freesh's and still count as matching it. */
const SLO_MATCH = 0.005;

export function verdicts(cells: readonly MatrixCell[], policy = 'freesh'): CellVerdict[] {
  const groups = new Map<string, MatrixCell[]>();
  for (const c of cells) {
    const key = `${c.trace}|${c.grid}|${c.load}`;
    (groups.get(key) ?? groups.set(key, []).get(key)!).push(c);
  }
  const out: CellVerdict[] = [];
  for (const group of groups.values()) {
    const ours = group.find((c) => c.policy === policy);
    const baselines = group.filter((c) => BASELINES.includes(c.policy));
    if (!ours || baselines.length === 0) continue;
    const min = (f: (c: MatrixCell) => number) => Math.min(...baselines.map(f));
    const max = (f: (c: MatrixCell) => number) => Math.max(...baselines.map(f));
    const bestCarbon = min((c) => c.carbonKg);
    const cleanest = baselines.find((c) => c.carbonKg === bestCarbon)!;
    const matched = baselines.filter((c) => (c.slo ?? 0) >= (ours.slo ?? 0) - SLO_MATCH);
    const bestEnergy = min((c) => c.energyKWh);
    const carbonBound = group.find((c) => c.policy === 'bound-carbon')?.carbonKg ?? Number.NaN;
    const energyBound = group.find((c) => c.policy === 'bound-energy')?.energyKWh ?? Number.NaN;
    out.push({
      trace: ours.trace,
      grid: ours.grid,
      load: ours.load,
      carbonVsBest: ours.carbonKg / bestCarbon - 1,
      carbonBest: cleanest.policy,
      carbonBestSloVsOurs: (cleanest.slo ?? 0) - (ours.slo ?? 0),
      carbonVsSloMatched: matched.length === 0 ? null : ours.carbonKg / Math.min(...matched.map((c) => c.carbonKg)) - 1,
      energyVsSloMatched: matched.length === 0 ? null : ours.energyKWh / Math.min(...matched.map((c) => c.energyKWh)) - 1,
      energyVsBest: ours.energyKWh / bestEnergy - 1,
      sloVsBest: (ours.slo ?? 0) - max((c) => c.slo ?? 0),
      interactiveVsBest: (ours.interactiveSlo ?? 0) - max((c) => c.interactiveSlo ?? 0),
      carbonShareOfBound: (bestCarbon - ours.carbonKg) / (bestCarbon - carbonBound),
      energyShareOfBound: (bestEnergy - ours.energyKWh) / (bestEnergy - energyBound),
    });
  }
  return out;
}
