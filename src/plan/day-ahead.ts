import { readFile, writeFile } from 'node:fs/promises';
import { setFlagsFromString } from 'node:v8';
import { z } from 'zod';
import { ConfigError, parseConfig } from '../config/schema.js';
import { loadSolver, solveLp } from './planner.js';
import { type PoolFleet, type PoolWindowPlan, planPoolWindow, type SolveLp } from './pools.js';

/**
 * `freesh plan`: day-ahead pool plans from files. A fleet (sites with GPU inventory, modes,
 * request types, per mode × type tables, SLO targets), a per-step demand CSV and a per-step carbon
 * CSV in; one plan per window of `windowSteps` steps out.
 */

const id = z.string().regex(/^[A-Za-z0-9._:-]{1,64}$/, 'must be 1-64 characters of [A-Za-z0-9._:-]');
const ms = z.number().nonnegative();
const targets = { ttftMs: z.number().positive(), tbtMs: z.number().positive(), e2eMs: z.number().positive().optional() };

export const fleetFileSchema = z
  .strictObject({
    sites: z.array(z.strictObject({ id, gpus: z.record(id, z.int().nonnegative()) })).min(1),
    modes: z.array(z.strictObject({ id, gpu: id, gpus: z.int().positive() })).min(1),
    types: z.array(id).min(1),
    tables: z.record(id, z.record(id, z.strictObject({ maxQps: z.number().nonnegative(), powerW: z.number().nonnegative(), ttftMs: ms, tbtMs: ms, e2eMs: ms.optional() }))),
    slo: z.strictObject({ ...targets, byType: z.record(id, z.strictObject({ ttftMs: targets.ttftMs.optional(), tbtMs: targets.tbtMs.optional(), e2eMs: targets.e2eMs })).optional() }),
  })
  .superRefine((fleet, ctx) => {
    const unique = (key: 'sites' | 'modes' | 'types', ids: readonly string[]) =>
      ids.forEach((value, i) => {
        if (ids.indexOf(value) !== i) ctx.addIssue({ code: 'custom', path: [key, i], message: 'duplicate id', input: value });
      });
    unique('sites', fleet.sites.map((s) => s.id));
    unique('modes', fleet.modes.map((m) => m.id));
    unique('types', fleet.types);
    const modes = new Set(fleet.modes.map((m) => m.id));
    const types = new Set(fleet.types);
    for (const [mode, byType] of Object.entries(fleet.tables)) {
      if (!modes.has(mode)) ctx.addIssue({ code: 'custom', path: ['tables', mode], message: `must name one of the modes (${[...modes].join(', ')})`, input: mode });
      for (const type of Object.keys(byType)) {
        if (!types.has(type)) ctx.addIssue({ code: 'custom', path: ['tables', mode, type], message: `must name one of the types (${[...types].join(', ')})`, input: type });
      }
    }
    for (const type of Object.keys(fleet.slo.byType ?? {})) {
      if (!types.has(type)) ctx.addIssue({ code: 'custom', path: ['slo', 'byType', type], message: `must name one of the types (${[...types].join(', ')})`, input: type });
    }
  });

export interface DayAheadOptions {
  /** Planned capacity over demand. Default 1.1 (FREESH's margin). */
  readonly margin: number;
  /** Length of a step. Default 5 minutes. */
  readonly stepMinutes: number;
  /** Steps per window. Default 6 (a 30-minute window). */
  readonly windowSteps: number;
}

export const DAY_AHEAD_DEFAULTS: DayAheadOptions = { margin: 1.1, stepMinutes: 5, windowSteps: 6 };

export interface DayAheadPlan {
  readonly windows: readonly ({ readonly index: number } & Omit<PoolWindowPlan, 'solveMs'>)[];
}

/** Rows of a CSV with an exact header; every error names the file and the line. */
function csvRows(text: string, file: string, header: readonly string[]): { line: number; cells: string[] }[] {
  const lines = text.split(/\r?\n/);
  const first = lines[0]?.replace(/^\uFEFF/, '').split(',').map((c) => c.trim());
  if (first?.join(',') !== header.join(',')) throw new ConfigError(`${file} line 1: expected the header \`${header.join(',')}\`, got \`${lines[0] ?? ''}\``);
  const rows: { line: number; cells: string[] }[] = [];
  lines.forEach((raw, i) => {
    if (i === 0 || raw.trim() === '') return;
    const cells = raw.split(',').map((c) => c.trim());
    if (cells.length !== header.length) throw new ConfigError(`${file} line ${i + 1}: expected ${header.length} fields (${header.join(',')}), got ${cells.length}`);
    rows.push({ line: i + 1, cells });
  });
  return rows;
}

function stepOf(text: string, file: string, line: number): number {
  const step = Number(text);
  if (!/^\d+$/.test(text) || !Number.isSafeInteger(step)) throw new ConfigError(`${file} line ${line}: step must be a non-negative integer, got \`${text}\``);
  return step;
}

/**
 * Rows of `step,<key>,<value>` into value per key per step, each key one of `keys` and listed once
 * per step; a (step, key) not listed is absent. Errors name the file and line.
 */
function parseStepCsv(
  text: string,
  file: string,
  columns: readonly [string, string, string],
  keys: readonly string[],
  value: { readonly what: string; readonly valid: (n: number) => boolean },
): Record<string, number>[] {
  const [, keyName, valueName] = columns;
  const steps: Record<string, number>[] = [];
  for (const { line, cells } of csvRows(text, file, columns)) {
    const [stepText, key, valueText] = cells as [string, string, string];
    const step = stepOf(stepText, file, line);
    if (!keys.includes(key)) throw new ConfigError(`${file} line ${line}: ${keyName} must be one of the fleet's ${keyName}s (${keys.join(', ')}), got \`${key}\``);
    const n = Number(valueText);
    if (valueText === '' || !Number.isFinite(n) || !value.valid(n)) throw new ConfigError(`${file} line ${line}: ${valueName} must be ${value.what}, got \`${valueText}\``);
    for (let s = steps.length; s <= step; s++) steps.push({});
    if (steps[step]![key] !== undefined) throw new ConfigError(`${file} line ${line}: step ${step} ${keyName} ${key} is listed twice`);
    steps[step]![key] = n;
  }
  return steps;
}

/** `step,type,qps` into requests/s per type per step; a (step, type) not listed is 0. */
export function parseDemandCsv(text: string, file: string, types: readonly string[]): Record<string, number>[] {
  return parseStepCsv(text, file, ['step', 'type', 'qps'], types, { what: 'a non-negative number', valid: (n) => n >= 0 });
}

/** `step,site,gramsPerKWh` into intensity per site per step; negative values (marginal rates) are kept. */
export function parseCarbonCsv(text: string, file: string, sites: readonly string[]): Record<string, number>[] {
  return parseStepCsv(text, file, ['step', 'site', 'gramsPerKWh'], sites, { what: 'a number', valid: () => true });
}

/**
 * Plans consecutive windows over the demand's steps (the last window may be shorter). Every
 * (step, site) the demand covers needs a carbon value.
 */
export async function planDayAhead(
  fleet: PoolFleet,
  demand: readonly Readonly<Record<string, number>>[],
  carbon: readonly Readonly<Record<string, number>>[],
  options: DayAheadOptions,
  solve: SolveLp,
  carbonFile = 'carbon',
): Promise<DayAheadPlan> {
  for (let s = 0; s < demand.length; s++) {
    for (const site of fleet.sites) {
      if (carbon[s]?.[site.id] === undefined) throw new ConfigError(`${carbonFile}: no value for step ${s} at site ${site.id} (the demand runs to step ${demand.length - 1})`);
    }
  }
  const windows: DayAheadPlan['windows'][number][] = [];
  for (let start = 0, index = 0; start < demand.length; start += options.windowSteps, index++) {
    const end = Math.min(demand.length, start + options.windowSteps);
    const { solveMs: _, ...plan } = await planPoolWindow(
      { fleet, demandQps: demand.slice(start, end), gramsPerKWh: carbon.slice(start, end), margin: options.margin, stepHours: options.stepMinutes / 60 },
      solve,
    );
    windows.push({ index, ...plan });
  }
  return { windows };
}

async function readText(path: string): Promise<string> {
  try {
    return await readFile(path, 'utf8');
  } catch (err) {
    throw new ConfigError(`cannot read ${path}: ${(err as NodeJS.ErrnoException).code ?? String(err)}`);
  }
}

/** Reads and validates a fleet file. */
export async function loadFleetFile(path: string): Promise<PoolFleet> {
  const text = await readText(path);
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (err) {
    throw new ConfigError(`${path}: not JSON (${(err as Error).message})`);
  }
  return parseConfig(fleetFileSchema, json, path);
}

export interface PlanCommand extends DayAheadOptions {
  readonly fleetPath: string;
  readonly demandPath: string;
  readonly carbonPath: string;
  readonly outPath: string;
}

/**
 * Keeps WebAssembly on V8's baseline compiler (Liftoff) in this process. A day-ahead run is a short
 * burst of HiGHS solves: optimising its hot functions costs more CPU than it saves (a day of 48
 * windows, cold: 3.4 s of CPU with tier-up, 1.2 s without; warm, tier-up would save 0.3 s:
 * bench/README). Call before the solver loads; for a process that only plans, never the router.
 */
export function baselineWasmOnly(): void {
  setFlagsFromString('--liftoff-only');
}

/** `freesh plan`: reads the files, plans every window in this thread, writes plan.json; returns the plan. */
export async function runPlanCommand(command: PlanCommand): Promise<DayAheadPlan> {
  baselineWasmOnly();
  const fleet = await loadFleetFile(command.fleetPath);
  const demand = parseDemandCsv(await readText(command.demandPath), command.demandPath, fleet.types);
  const carbon = parseCarbonCsv(await readText(command.carbonPath), command.carbonPath, fleet.sites.map((s) => s.id));
  const highs = await loadSolver();
  const plan = await planDayAhead(fleet, demand, carbon, command, (lp) => solveLp(highs, lp), command.carbonPath);
  await writeFile(command.outPath, `${JSON.stringify(plan, null, 2)}\n`);
  return plan;
}
