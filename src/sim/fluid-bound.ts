import type { CarbonSeries } from '../carbon/series.js';
import { decodePowerAtW, decodeStepMs, prefillMs } from '../cost/profiles.js';
import { loadSolver, lpNumber, type LpSolution, solveLp } from '../plan/planner.js';
import type { FleetSpec } from './fleet.js';
import type { Hardware } from './hardware.js';
import type { Trace } from './trace.js';

/**
 * A fluid lower bound on the facility energy (or carbon) a fleet needs to serve a trace: a linear
 * program over the trace's token demand, each instance's hardware and each site's carbon series,
 * with no queueing and no request identity. A policy's saving against a baseline can then be read
 * as a share of the saving that is possible at all: (baseline − policy) / (baseline − bound).
 *
 * The model:
 * - **Windows.** Time from 0 to the trace's last arrival is cut into windows of `windowMs` (the last
 *   one shorter, ending at the last arrival), plus one *tail* window of `windowMs` after it in which
 *   the last arrivals may finish. Window t's demand is the prompt tokens P_t of the requests that
 *   arrive in it and their output tokens less one, O_t = Σ (outputTokens − 1): the simulated
 *   instance gives a request its first token at the end of the step that finishes its prompt, so
 *   only the others take decode steps.
 * - **Spill.** Work arriving in window t is done in t or t + 1, never earlier than it arrives. Every
 *   request that completes within one window of its arrival (5 minutes by default; the simulator's
 *   e2e p99 is 45–100 s on the Azure trace) is served so by any schedule.
 * - **Operating points.** In each window each instance splits its time between decode points
 *   (batch b, clock f), prefill points (clock f) and doing nothing. Decode at (b, f) makes
 *   b / (step(b)·decodeTime(f)) tokens per ms at idleW + (decodeW − idleW)·decodePowerShare(b)·
 *   dynamicPower(f); prefill makes prompt tokens at the profile's best rate for chunks of up to
 *   `PREFILL_CHUNK_TOKENS` (the simulator's 512), slowed by prefillTime(f), at idleW + (prefillW −
 *   idleW)·dynamicPower(f). Batches run over every integer up to min(maxConcurrency, maxBatch) (the
 *   store never grants a backend more slots than maxConcurrency), clocks over `clockLevels`; points
 *   no mix of others (and of doing nothing) beats on both rate and power are dropped before the LP
 *   is written, which leaves a handful per instance and changes no optimum.
 * - **Power while doing nothing.** `idle`: idleW, every window, on every instance (as the simulator
 *   charges parked instances that keep their GPUs up, and any instance between steps). `off`: 0 W
 *   (the on-fraction is continuous and boot time is free: a relaxation). In the tail window every
 *   instance is charged only for the time it works, in either case: the simulator's run ends when
 *   its last request does, at an unknown time, so its idle time there is not counted.
 * - **Energy and carbon.** Energy = Σ power × time × the site's PUE (default 1.2, as the
 *   simulator). Carbon = a window's energy at a site × the lowest intensity the site's series (or
 *   its `gramsPerKWh` constant) takes at any 60-s sample start in the window: the simulator charges
 *   each minute at the intensity at its start, so with a series whose steps are whole windows (hourly
 *   Electricity Maps, FREESH's 5-minute series at 5-minute windows) this is the window's intensity.
 * - **Objective.** Minimise energy or carbon; both figures of the optimum are reported.
 * - **TBT.** Decode points whose step time exceeds `tbtMs` are left out: a request whose tokens come
 *   from steps slower than its TBT target misses it (a mean TBT could absorb a few slow steps; see
 *   below). Default 150 ms, the
 *   standard class's target (70% of the simulated requests, and FREESH's TBT); the bound assumes every
 *   request is held to it. Prefill steps are not limited (their effect on co-running TBT is ignored).
 *
 * Why it is a lower bound on the simulator (src/sim/simulator.ts, src/sim/instance.ts): a simulated
 * step decodes a batch and prefills a chunk of at most 512 prompt tokens, takes the sum of the two
 * times, and draws each part's power for its time, so every step is exactly some decode time at one
 * batch plus some prefill time, both at one clock; summed over a window, an instance's steps are a
 * mix of the LP's operating points (the LP's points cover every batch the instance can run, and the
 * LP may also mix fractional time freely), its waiting time draws at least the LP's charge, and its
 * tokens meet the window's demand under the spill rule. Queueing, TTFT targets, boot time and the
 * one-clock-per-plan rule only cost the simulator more. Where it is not strictly rigorous:
 * - a request that takes longer than one window from arrival to its last token (rare; the LP forces
 *   its work into two windows, which may cost more than the simulator's spread);
 * - a run at a clock fraction outside `clockLevels` (the router's default levels 1 / 0.85 / 0.7 are
 *   inside the default here);
 * - a run whose sequences decode at steps slower than `tbtMs` (none on the FREESH fleet: its slowest
 *   step, 2×A100 at batch 32 and clock 0.5, is 76 ms);
 * - a simulator that prefilled in larger chunks than 512 tokens (a longer chunk can be cheaper per
 *   token on the Splitwise curves).
 *
 * When the demand exceeds what the fleet can serve under these rules, the status is `infeasible`:
 * the LP first finds the fewest tokens (prompt and output alike) the fleet must leave unserved, then
 * the least objective serving the rest; the figures are that optimum's, and they bound only runs
 * that serve at least as much.
 */
export interface FluidBoundOptions {
  /** The trace at the load being evaluated (already scaled). */
  readonly trace: Trace;
  readonly fleet: FleetSpec;
  /** Each backend's hardware, by backend id: the simulated truth. */
  readonly hardware: ReadonlyMap<string, Hardware>;
  /** Carbon intensity over time, by site id; a site without one uses its `gramsPerKWh` constant. */
  readonly carbon: ReadonlyMap<string, CarbonSeries>;
  readonly objective: 'energy' | 'carbon';
  /** What an instance draws while it does nothing: `idle` (its idle power) or `off` (0 W). */
  readonly parkedPower: 'idle' | 'off';
  /** Window length (ms). Default 5 minutes. */
  readonly windowMs?: number;
  /** Slowest decode step (ms) an operating point may have. Default 150 (the standard class). */
  readonly tbtMs?: number;
  /** SM clock fractions the instances may run at. Default 1, 0.85, 0.7, 0.5. */
  readonly clockLevels?: readonly number[];
}

export interface FluidBound {
  /** Facility energy of the optimum (kWh). */
  readonly energyKWh: number;
  /** Carbon of the optimum (kg CO2e). */
  readonly carbonKg: number;
  /** `optimal`; `infeasible` when some demand cannot be served (see `unservedTokens`). */
  readonly status: 'optimal' | 'infeasible';
  /** Windows the trace was cut into, the tail window not counted. */
  readonly windows: number;
  /** Prompt and output tokens the fleet cannot serve under the model's rules (0 when optimal). */
  readonly unservedTokens: number;
}

export const DEFAULT_BOUND_WINDOW_MS = 300_000;
export const DEFAULT_BOUND_TBT_MS = 150;
export const DEFAULT_BOUND_CLOCK_LEVELS: readonly number[] = Object.freeze([1, 0.85, 0.7, 0.5]);
/** Prompt tokens a simulated instance prefills per step at most (SimInstance's default chunk). */
export const PREFILL_CHUNK_TOKENS = 512;
/** The simulator's carbon sampling period: each minute is charged at the intensity at its start. */
const CARBON_SAMPLE_MS = 60_000;
const DEFAULT_PUE = 1.2;

/** One way an instance can spend time: tokens per ms it makes, and the power it draws (W). */
export interface OperatingPoint {
  readonly kind: 'decode' | 'prefill';
  readonly tokensPerMs: number;
  readonly powerW: number;
}

interface Column {
  readonly name: string;
  /** Energy (kWh) and carbon (g) per unit of the column. */
  readonly kWh: number;
  readonly grams: number;
}

/** Solves the fluid bound's LP; see the module comment for the model. */
export async function fluidBound(o: FluidBoundOptions): Promise<FluidBound> {
  const windowMs = o.windowMs ?? DEFAULT_BOUND_WINDOW_MS;
  const tbtMs = o.tbtMs ?? DEFAULT_BOUND_TBT_MS;
  const levels = o.clockLevels ?? DEFAULT_BOUND_CLOCK_LEVELS;
  if (!(windowMs > 0) || !Number.isFinite(windowMs)) throw new RangeError(`fluidBound: windowMs must be a positive number, got ${windowMs}`);
  if (!(tbtMs > 0)) throw new RangeError(`fluidBound: tbtMs must be positive, got ${tbtMs}`);
  if (levels.length === 0 || levels.some((f) => !(f > 0 && f <= 1))) throw new RangeError(`fluidBound: clock levels must lie in (0, 1], got ${JSON.stringify(levels)}`);
  if (o.trace.requests.length === 0) throw new RangeError('fluidBound: the trace has no requests');

  // Windows 0..n−1 cover [0, durationMs]; window n is the tail.
  const n = Math.max(1, Math.ceil(o.trace.durationMs / windowMs));
  const starts = Array.from({ length: n + 1 }, (_, t) => t * windowMs);
  const lengths = starts.map((start, t) => (t < n ? Math.min(windowMs, o.trace.durationMs - start) : windowMs));
  const prompt = new Array<number>(n).fill(0);
  const output = new Array<number>(n).fill(0);
  for (const r of o.trace.requests) {
    const t = Math.min(n - 1, Math.max(0, Math.floor(r.arrivalMs / windowMs)));
    prompt[t]! += Math.max(0, r.promptTokens);
    output[t]! += Math.max(0, r.outputTokens - 1);
  }

  const sites = new Map(o.fleet.sites.map((s) => [s.id, s]));
  const instances = o.fleet.backends.map((b) => {
    const site = sites.get(b.site);
    if (!site) throw new RangeError(`fluidBound: backend \`${b.id}\` is at unknown site \`${b.site}\``);
    const hardware = o.hardware.get(b.id);
    if (!hardware) throw new RangeError(`fluidBound: no hardware for backend \`${b.id}\``);
    const series = o.carbon.get(site.id);
    const intensity = (ms: number) => series?.at(ms) ?? site.gramsPerKWh;
    const maxBatch = Math.max(1, Math.min(b.maxConcurrency, hardware.profile.maxBatch));
    return {
      idleW: hardware.profile.idleW,
      pue: site.pue ?? DEFAULT_PUE,
      points: operatingPoints(hardware, maxBatch, levels, tbtMs),
      // gCO2e/kWh charged in each window (the tail included).
      grams: starts.map((start, t) => lowestIntensity(intensity, start, start + lengths[t]!)),
    };
  });

  // Columns: x_t_i_k, time fraction of window t instance i spends at point k; s_t / z_t output / prompt
  // tokens arriving in t done in t + 1; u_t / v_t output / prompt tokens of window t never served.
  const columns: Column[] = [];
  const rows: string[] = [];
  const decodeTerms: string[][] = starts.map(() => []);
  const prefillTerms: string[][] = starts.map(() => []);
  let idleKWh = 0;
  let idleGrams = 0;
  for (let t = 0; t <= n; t++) {
    const tail = t === n;
    const hours = lengths[t]! / 3.6e6;
    instances.forEach((inst, i) => {
      const base = !tail && o.parkedPower === 'idle' ? inst.idleW : 0;
      idleKWh += (base * hours * inst.pue) / 1000;
      idleGrams += ((base * hours * inst.pue) / 1000) * inst.grams[t]!;
      const time: string[] = [];
      inst.points.forEach((p, k) => {
        const name = `x_${t}_${i}_${k}`;
        const kWh = ((p.powerW - base) * hours * inst.pue) / 1000;
        columns.push({ name, kWh, grams: kWh * inst.grams[t]! });
        time.push(name);
        (p.kind === 'decode' ? decodeTerms : prefillTerms)[t]!.push(`${num(p.tokensPerMs * lengths[t]!)} ${name}`);
      });
      if (time.length > 0) rows.push(`time_${t}_${i}: ${time.join(' + ')} <= 1`);
    });
  }
  // Demand rows: window t's own tokens, less what spills to t + 1 or goes unserved, plus what spilled from t − 1.
  const write = (objective: string, shortfallAllowed: boolean, extraRows: readonly string[] = []): string => {
    const demand: string[] = [];
    const bounds: string[] = [];
    const add = (kind: 'dec' | 'pre', terms: readonly string[][], tokens: readonly number[], spill: string, short: string) => {
      for (let t = 0; t <= n; t++) {
        const lhs = terms[t]!.join(' + ');
        const own = t < n ? ` + ${spill}_${t} + ${short}_${t}` : '';
        const before = t > 0 ? ` - ${spill}_${t - 1}` : '';
        demand.push(`${kind}_${t}: ${lhs === '' ? '0 dummy' : lhs}${own}${before} >= ${t < n ? num(tokens[t]!) : 0}`);
        if (t < n) {
          demand.push(`${kind}_own_${t}: ${spill}_${t} + ${short}_${t} <= ${num(tokens[t]!)}`);
          bounds.push(`0 <= ${short}_${t} <= ${shortfallAllowed ? num(tokens[t]!) : 0}`);
        }
      }
    };
    add('dec', decodeTerms, output, 's', 'u');
    add('pre', prefillTerms, prompt, 'z', 'v');
    bounds.push('0 <= dummy <= 0');
    return ['Minimize', ` obj: ${objective}`, 'Subject To', ...[...rows, ...demand, ...extraRows].map((r) => ` ${r}`), 'Bounds', ...bounds.map((b) => ` ${b}`), 'End'].join('\n');
  };
  const weight = (c: Column) => (o.objective === 'carbon' ? c.grams / 1000 : c.kWh);
  const objective = columns.map((c) => `${num(weight(c))} ${c.name}`).join(' + ');

  const highs = await loadSolver();
  let solution = solveLp(highs, write(objective, false));
  let status: FluidBound['status'] = 'optimal';
  let unserved = 0;
  if (solution.Status === 'Infeasible') {
    status = 'infeasible';
    const shortfall = Array.from({ length: n }, (_, t) => `u_${t} + v_${t}`).join(' + ');
    const least = solveLp(highs, write(shortfall, true));
    check(least);
    unserved = least.ObjectiveValue;
    solution = solveLp(highs, write(objective, true, [`least: ${shortfall} <= ${num(unserved * (1 + 1e-9) + 1e-6)}`]));
  }
  check(solution);

  let energyKWh = idleKWh;
  let grams = idleGrams;
  for (const c of columns) {
    const value = solution.Columns[c.name]?.Primal ?? 0;
    energyKWh += value * c.kWh;
    grams += value * c.grams;
  }
  return { energyKWh, carbonKg: grams / 1000, status, windows: n, unservedTokens: unserved };
}

function check(solution: LpSolution): void {
  if (solution.Status !== 'Optimal') throw new Error(`fluidBound: HiGHS ended with status ${solution.Status}`);
}

/**
 * An instance's operating points: decode at every batch up to `maxBatch` and every clock level whose
 * step is within `tbtMs`, prefill at every clock level, less those a mix of others beats.
 */
export function operatingPoints(hardware: Hardware, maxBatch: number, levels: readonly number[], tbtMs: number): OperatingPoint[] {
  const { profile, frequency } = hardware;
  const idle = profile.idleW;
  const decode: OperatingPoint[] = [];
  const prefill: OperatingPoint[] = [];
  // Chunks of at most PREFILL_CHUNK_TOKENS: the cheapest time per token is at a curve point below
  // the chunk or at the chunk itself (the curve is linear between points and through 0 below the first).
  const chunks = [...profile.prefillMs.map(([x]) => x).filter((x) => x > 0 && x < PREFILL_CHUNK_TOKENS), PREFILL_CHUNK_TOKENS];
  const prefillMsPerToken = Math.min(...chunks.map((c) => prefillMs(profile, c) / c));
  for (const f of levels) {
    const dynamic = frequency.dynamicPower(f);
    for (let b = 1; b <= maxBatch; b++) {
      const stepMs = decodeStepMs(profile, b) * frequency.decodeTime(f);
      if (stepMs > tbtMs) continue;
      decode.push({ kind: 'decode', tokensPerMs: b / stepMs, powerW: decodePowerAtW(profile, b, dynamic, hardware.decodePowerShare) });
    }
    prefill.push({ kind: 'prefill', tokensPerMs: 1 / (prefillMsPerToken * frequency.prefillTime(f)), powerW: idle + (profile.prefillW - idle) * dynamic });
  }
  // A point matters only if it is on the lower convex hull of (rate, power) with "doing nothing"; the
  // cost of doing nothing is idle power (parked `idle`) or 0 (`off`, and the tail): keep both hulls' points.
  const keep = (points: OperatingPoint[]) => {
    const kept = new Set([...lowerHull(points, idle), ...lowerHull(points, 0)]);
    return points.filter((p) => kept.has(p));
  };
  return [...keep(decode), ...keep(prefill)];
}

/** Points on the lower convex hull of {(0, restW)} ∪ {(rate, power)}, from rest to the fastest point. */
function lowerHull(points: readonly OperatingPoint[], restW: number): OperatingPoint[] {
  const sorted = [...points].sort((a, b) => a.tokensPerMs - b.tokensPerMs || a.powerW - b.powerW);
  const hull: { x: number; y: number; p?: OperatingPoint }[] = [{ x: 0, y: restW }];
  for (const p of sorted) {
    const q = { x: p.tokensPerMs, y: p.powerW, p };
    while (hull.length >= 2) {
      const a = hull[hull.length - 2]!;
      const b = hull[hull.length - 1]!;
      // Pop b unless it lies strictly below the segment a → q.
      if ((b.x - a.x) * (q.y - a.y) - (b.y - a.y) * (q.x - a.x) <= 0) hull.pop();
      else break;
    }
    const last = hull[hull.length - 1]!;
    // Of points at the same rate only the cheapest (sorted first) stays.
    if (last.x === q.x) continue;
    hull.push(q);
  }
  return hull.flatMap((h) => (h.p ? [h.p] : []));
}

/** The lowest intensity charged at any simulator sample start in [startMs, endMs). */
function lowestIntensity(intensity: (ms: number) => number, startMs: number, endMs: number): number {
  const first = Math.floor(startMs / CARBON_SAMPLE_MS);
  const last = Math.max(first, Math.ceil(endMs / CARBON_SAMPLE_MS) - 1);
  let lowest = Number.POSITIVE_INFINITY;
  for (let k = first; k <= last; k++) lowest = Math.min(lowest, intensity(k * CARBON_SAMPLE_MS));
  return lowest;
}

const num = (value: number): string => lpNumber(value, 'fluidBound');
