import type { ModeTypeEntry } from '../cost/mode-table.js';
import { type LpSolution, lpNumber } from './planner.js';

export type { ModeTypeEntry } from '../cost/mode-table.js';

/**
 * GPU pools: FREESH's upper-level MILP. Every window it chooses how many instances of each
 * parallelism mode each site runs for each request type, under the site's GPU inventory, so that
 * capacity covers margin × demand of every type at every step and Σ carbon × power × Δt is least.
 * Everything here is pure: the solver is passed in, so the CLI, the live planner (worker thread)
 * and the tests share one formulation.
 */

/** A parallelism mode: an instance of `gpus` GPUs of type `gpu`. */
export interface PoolMode {
  readonly id: string;
  readonly gpu: string;
  readonly gpus: number;
}

export interface PoolTargets {
  readonly ttftMs: number;
  readonly tbtMs: number;
  /** Absent: no end-to-end target. */
  readonly e2eMs?: number | undefined;
}

/** SLO targets, with per-type overrides of any of them. */
export interface PoolSlo extends PoolTargets {
  readonly byType?: Readonly<Record<string, Partial<PoolTargets>>> | undefined;
}

export interface PoolFleet {
  /** Sites with their GPU inventory (count per GPU type; a type not named counts 0). */
  readonly sites: readonly { readonly id: string; readonly gpus: Readonly<Record<string, number>> }[];
  readonly modes: readonly PoolMode[];
  readonly types: readonly string[];
  /** `tables[mode][type]`; a missing entry means the mode cannot serve the type. */
  readonly tables: Readonly<Record<string, Readonly<Record<string, ModeTypeEntry>>>>;
  readonly slo: PoolSlo;
}

export interface PoolWindowInput {
  readonly fleet: PoolFleet;
  /** Forecast requests/s per type, one record per step of the window (a type not named: 0). */
  readonly demandQps: readonly Readonly<Record<string, number>>[];
  /** Carbon intensity per site, one record per step (gCO2e/kWh; negative marginal rates allowed). */
  readonly gramsPerKWh: readonly Readonly<Record<string, number>>[];
  /** Planned capacity over demand (FREESH: 1.1). */
  readonly margin: number;
  readonly stepHours: number;
}

export interface PoolAllocation {
  readonly site: string;
  readonly type: string;
  readonly mode: string;
  readonly instances: number;
}

export interface PoolWindowPlan {
  /** `infeasible`: demand could not be covered; the allocation is the best degraded one. */
  readonly status: 'optimal' | 'infeasible';
  /** Σ steps Σ allocation gramsPerKWh × instances × powerW / 1000 × step hours. */
  readonly gramsCO2: number;
  readonly allocation: readonly PoolAllocation[];
  /** The largest total shortfall (req/s, after the margin) over the window's steps; 0 when optimal. */
  readonly shortfallQps: number;
  readonly solveMs: number;
}

/** Solves a model in CPLEX LP format: HiGHS in the calling thread or in a worker. */
export type SolveLp = (lp: string) => LpSolution | Promise<LpSolution>;

/** Why a mode cannot serve a type, or undefined when it can. */
export function exclusion(entry: ModeTypeEntry | undefined, slo: PoolSlo, type: string): string | undefined {
  if (!entry || !(entry.maxQps > 0)) return 'no capacity';
  const targets = { ...stripUndefined(slo), ...stripUndefined(slo.byType?.[type] ?? {}) };
  if (entry.ttftMs > targets.ttftMs) return 'ttft';
  if (entry.tbtMs > targets.tbtMs) return 'tbt';
  if (targets.e2eMs !== undefined && entry.e2eMs !== undefined && entry.e2eMs > targets.e2eMs) return 'e2e';
  return undefined;
}

function stripUndefined<T extends object>(value: T): T {
  return Object.fromEntries(Object.entries(value).filter(([, v]) => v !== undefined)) as T;
}

interface Column {
  readonly site: string;
  readonly type: string;
  readonly mode: string;
  readonly entry: ModeTypeEntry;
}

interface Model {
  readonly columns: ReadonlyMap<string, Column>;
  readonly carbonTerms: readonly string[];
  readonly carbonByColumn: ReadonlyMap<string, number>;
  readonly shortfall: readonly string[];
  /** Inventory rows, then one demand row per type at its peak step, short by its shortfall variable. */
  readonly rows: readonly string[];
  /** The same with no shortfall allowed. */
  readonly strictRows: readonly string[];
  readonly bounds: readonly string[];
}

const num = (value: number): string => lpNumber(value, 'pool planner');

/** One carbon coefficient per (site, type, mode) column: the window's Σ steps carbon × power × Δt. */
function buildModel(input: PoolWindowInput): Model {
  const { fleet, demandQps, gramsPerKWh, margin, stepHours } = input;
  const gpuIndex = new Map([...new Set(fleet.modes.map((m) => m.gpu))].map((gpu, i) => [gpu, i]));
  const columns = new Map<string, Column>();
  const carbonTerms: string[] = [];
  const carbonByColumn = new Map<string, number>();
  const bounds: string[] = [];
  /** Terms of each (site, GPU type) inventory row, by the row's label; its bound by the same label. */
  const inventory = new Map<string, string[]>();
  const available = new Map<string, number>();
  const capacity = new Map<string, string[]>(fleet.types.map((k) => [k, []]));
  fleet.sites.forEach((site, si) => {
    let carbonSum = 0;
    for (const step of gramsPerKWh) carbonSum += step[site.id] ?? 0;
    fleet.types.forEach((type, ki) => {
      const peak = margin * Math.max(0, ...demandQps.map((step) => step[type] ?? 0));
      fleet.modes.forEach((mode, mi) => {
        const entry = fleet.tables[mode.id]?.[type];
        if (!entry || exclusion(entry, fleet.slo, type)) return;
        const fit = Math.floor((site.gpus[mode.gpu] ?? 0) / mode.gpus);
        // Where an instance costs carbon, more than the peak needs of one (type, mode) alone is never
        // optimal (dropping one keeps every demand row and costs less): a tighter bound, a smaller search.
        const most = carbonSum * entry.powerW > 0 ? Math.min(fit, Math.ceil(peak / entry.maxQps)) : fit;
        if (most < 1) return;
        const name = `n_${si}_${ki}_${mi}`;
        columns.set(name, { site: site.id, type, mode: mode.id, entry });
        const grams = (carbonSum * entry.powerW * stepHours) / 1000;
        carbonByColumn.set(name, grams);
        carbonTerms.push(`${num(grams)} ${name}`);
        bounds.push(`0 <= ${name} <= ${most}`);
        capacity.get(type)!.push(`${num(entry.maxQps)} ${name}`);
        const row = `inv_${si}_${gpuIndex.get(mode.gpu)}: `;
        if (!inventory.has(row)) inventory.set(row, []);
        available.set(row, site.gpus[mode.gpu] ?? 0);
        inventory.get(row)!.push(`${mode.gpus} ${name}`);
      });
    });
  });
  const rows: string[] = [];
  for (const [row, terms] of inventory) rows.push(`${row}${terms.join(' + ')} <= ${available.get(row)}`);
  const strictRows = [...rows];
  const shortfall: string[] = [];
  fleet.types.forEach((type, ki) => {
    const peak = margin * Math.max(0, ...demandQps.map((step) => step[type] ?? 0));
    if (!(peak > 0)) return;
    // Capacity is the same at every step of the window, so the peak step's row implies the others'.
    // A type no mode may serve keeps its row (held at 0 by u_none): the window is then infeasible.
    const terms = capacity.get(type)!.length > 0 ? capacity.get(type)! : ['0 u_none'];
    strictRows.push(`peak_${ki}: ${terms.join(' + ')} >= ${num(peak)}`);
    const u = `u_${ki}`;
    shortfall.push(u);
    rows.push(`peak_${ki}: ${[...terms, u].join(' + ')} >= ${num(peak)}`);
  });
  return { columns, carbonTerms, carbonByColumn, shortfall, rows, strictRows, bounds };
}

function lpText(objective: readonly string[], rows: readonly string[], bounds: readonly string[], generals: readonly string[]): string {
  return [
    'Minimize',
    ` obj: ${objective.length > 0 ? objective.join(' + ') : '0 n_none'}`,
    'Subject To',
    ...(rows.length > 0 ? rows : ['none: 0 n_none >= 0']).map((r) => ` ${r}`),
    'Bounds',
    ...bounds.map((b) => ` ${b}`),
    ...(generals.length > 0 ? ['General', ` ${generals.join(' ')}`] : []),
    'End',
  ].join('\n');
}

/**
 * Plans one window. First with no shortfall allowed (the authors' model); if that is infeasible, the
 * best degraded allocation: least shortfall (summed over the types, each at its peak step), then
 * least carbon. One solve does both: a request/s short is priced at 10⁴ × the dearest carbon of a
 * request/s served by any column, so less shortfall always wins unless it is a sliver (under 10⁻⁴
 * req/s per gram of carbon at stake). Solving the two in turn proved the shortfall optimum with a
 * second, equally hard MILP: 1.7× the time on ten infeasible windows (bench/README).
 */
export async function planPoolWindow(input: PoolWindowInput, solve: SolveLp): Promise<PoolWindowPlan> {
  const started = performance.now();
  const model = buildModel(input);
  const generals = [...model.columns.keys()];
  const strict = await solve(lpText(model.carbonTerms, model.strictRows, [...model.bounds, 'u_none = 0'], generals));
  if (strict.Status === 'Optimal') return readPlan(input, model, strict, 'optimal', performance.now() - started);
  if (strict.Status !== 'Infeasible') throw new Error(`pool planner: HiGHS ended with status ${strict.Status}`);

  const price = 1e4 * Math.max(1, ...[...model.columns].map(([name, c]) => Math.abs(model.carbonByColumn.get(name)!) / c.entry.maxQps));
  const result = await solve(lpText([...model.carbonTerms, ...model.shortfall.map((u) => `${num(price)} ${u}`)], model.rows, model.bounds, generals));
  if (result.Status !== 'Optimal') throw new Error(`pool planner: HiGHS ended with status ${result.Status} planning a degraded window`);
  return readPlan(input, model, result, 'infeasible', performance.now() - started);
}

function readPlan(input: PoolWindowInput, model: Model, result: LpSolution, status: PoolWindowPlan['status'], solveMs: number): PoolWindowPlan {
  const allocation: PoolAllocation[] = [];
  for (const [name, column] of model.columns) {
    const instances = Math.round(result.Columns[name]?.Primal ?? 0);
    if (instances > 0) allocation.push({ site: column.site, type: column.type, mode: column.mode, instances });
  }
  return { status, gramsCO2: windowGramsCO2(input, allocation), allocation, shortfallQps: status === 'optimal' ? 0 : peakShortfall(input, allocation), solveMs };
}

/** Σ steps Σ allocation gramsPerKWh × instances × powerW / 1000 × step hours. */
export function windowGramsCO2(input: PoolWindowInput, allocation: readonly PoolAllocation[]): number {
  let grams = 0;
  for (const step of input.gramsPerKWh) {
    for (const a of allocation) {
      const powerW = input.fleet.tables[a.mode]?.[a.type]?.powerW ?? 0;
      grams += ((step[a.site] ?? 0) * a.instances * powerW * input.stepHours) / 1000;
    }
  }
  return grams;
}

/** The largest, over the steps, of Σ types max(0, margin × demand − capacity). */
export function peakShortfall(input: PoolWindowInput, allocation: readonly PoolAllocation[]): number {
  const capacity = new Map<string, number>();
  for (const a of allocation) capacity.set(a.type, (capacity.get(a.type) ?? 0) + a.instances * (input.fleet.tables[a.mode]?.[a.type]?.maxQps ?? 0));
  let peak = 0;
  for (const step of input.demandQps) {
    let total = 0;
    for (const type of input.fleet.types) total += Math.max(0, input.margin * (step[type] ?? 0) - (capacity.get(type) ?? 0));
    peak = Math.max(peak, total);
  }
  return peak;
}
