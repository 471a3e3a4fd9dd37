import { type ModeTypeEntry, tableFromProfile, type TypeShape } from '../cost/mode-table.js';
import { BUILTIN_PROFILES, type InstanceProfile } from '../cost/profiles.js';
import { REQUEST_TYPES, type RequestType } from '../request/request-type.js';
import { type SloClass, ttftTargetMs } from '../request/slo.js';
import type { Backend } from '../types.js';
import type { StepForecast } from './forecast.js';
import type { PoolFleet, PoolWindowPlan, PoolWindowInput } from './pools.js';

/** GPU pools the live planner partitions: the sites that declare an inventory, and the modes it may choose. */
export interface PoolSites {
  /** GPUs per type at each site (`sites[].gpus` in the router config). */
  readonly sites: readonly { readonly id: string; readonly gpus: Readonly<Record<string, number>>; readonly pue: number }[];
  /** Modes the planner may run, with the physics profile its table is derived from. Default: the built-in profiles. */
  readonly modes: readonly InstanceProfile[];
}

/** The pool part of a live plan: the partition of each site's GPUs for the coming window, for an operator, agent or scaler to apply. */
export interface PoolPlanView extends Omit<PoolWindowPlan, 'solveMs'> {
  /** Steps the window covers, from the plan's time, and their length (ms). */
  readonly windowSteps: number;
  readonly stepMs: number;
}

/** The router config's pools: undefined unless some site declares `gpus`. */
export function poolSitesFromConfig(sites: readonly { readonly id: string; readonly pue: number; readonly gpus?: Readonly<Record<string, number>> | undefined }[]): PoolSites | undefined {
  const declared = sites.filter((s) => s.gpus !== undefined);
  if (declared.length === 0) return undefined;
  return { sites: declared.map((s) => ({ id: s.id, gpus: s.gpus!, pue: s.pue })), modes: Object.values(BUILTIN_PROFILES) };
}

/** The largest batch a mode's table may assume: the largest admitted batch of a deployed backend of the mode, else 64 (the config's default `maxConcurrency`). */
function batchOf(mode: InstanceProfile, backends: readonly Backend[]): number {
  const deployed = backends.filter((b) => b.profile.id === mode.id).map((b) => b.maxConcurrency);
  return Math.min(mode.maxBatch, deployed.length > 0 ? Math.max(...deployed) : 64);
}

/**
 * A mode's table as an operator's benchmark would give it: per type, the highest rate at which the
 * TTFT and TBT targets still hold, over batches 1, 2, 4, … up to `maxBatch` (a larger batch serves
 * more but stretches every step). A type no batch serves within target gets the batch-1 entry,
 * which the targets then exclude.
 */
export function tableWithinTargets(
  mode: InstanceProfile,
  shapes: Readonly<Record<RequestType, TypeShape>>,
  targets: (type: RequestType) => { readonly ttftMs: number; readonly tbtMs: number },
  maxBatch: number,
): Record<RequestType, ModeTypeEntry> {
  const batches: number[] = [];
  for (let b = 1; b < maxBatch; b *= 2) batches.push(b);
  batches.push(maxBatch);
  const tables = batches.map((b) => tableFromProfile(mode, shapes, b));
  const out = {} as Record<RequestType, ModeTypeEntry>;
  for (const k of REQUEST_TYPES) {
    const t = targets(k);
    let best = tables[0]![k]!;
    for (const table of tables) {
      const e = table[k]!;
      if (e.ttftMs <= t.ttftMs && e.tbtMs <= t.tbtMs && (e.maxQps > best.maxQps || best.ttftMs > t.ttftMs || best.tbtMs > t.tbtMs)) best = e;
    }
    out[k] = best;
  }
  return out;
}

/**
 * The window's pool model as the live planner sees it: tables derived from the modes' physics
 * profiles at the request shapes observed (`tableWithinTargets`), the planning class's targets (TTFT per type at its mean
 * prompt), per-step forecast demand, and per-step carbon × PUE at each site.
 */
export function livePoolInput(args: {
  readonly pools: PoolSites;
  readonly backends: readonly Backend[];
  readonly shapes: Readonly<Record<RequestType, TypeShape>>;
  readonly slo: SloClass;
  readonly forecast: StepForecast;
  readonly gramsPerKWhAt: (siteId: string, step: number) => number;
  readonly margin: number;
  readonly stepMs: number;
}): PoolWindowInput {
  const { pools, shapes, slo } = args;
  const targets = (k: RequestType) => ({ ttftMs: ttftTargetMs(slo, shapes[k].promptTokens), tbtMs: slo.tbtMs });
  const fleet: PoolFleet = {
    sites: pools.sites.map((s) => ({ id: s.id, gpus: s.gpus })),
    modes: pools.modes.map((m) => ({ id: m.id, gpu: m.gpu, gpus: m.gpus })),
    types: REQUEST_TYPES,
    tables: Object.fromEntries(pools.modes.map((m) => [m.id, tableWithinTargets(m, shapes, targets, batchOf(m, args.backends))])),
    slo: {
      ttftMs: ttftTargetMs(slo, 0),
      tbtMs: slo.tbtMs,
      byType: Object.fromEntries(REQUEST_TYPES.map((k) => [k, { ttftMs: ttftTargetMs(slo, shapes[k].promptTokens) }])),
    },
  };
  return {
    fleet,
    demandQps: args.forecast,
    gramsPerKWh: args.forecast.map((_, h) => Object.fromEntries(pools.sites.map((s) => [s.id, args.gramsPerKWhAt(s.id, h) * s.pue]))),
    margin: args.margin,
    stepHours: args.stepMs / 3_600_000,
  };
}
