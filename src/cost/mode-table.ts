import { decodePowerW, decodeStepMs, type InstanceProfile, prefillMs, throughputRps } from './profiles.js';

/**
 * Tabular mode profiles: how operators benchmark their own deployments and how the FREESH authors
 * specify theirs — per request type, one instance's highest sustainable rate, its power there, and
 * the latencies at that load. The pool planner reads only tables; `tableFromProfile` derives one
 * from a physics profile, so measured tables and the cost model's curves meet in one planner.
 */
export interface ModeTypeEntry {
  /** Highest sustainable requests/s of one instance; 0: the mode cannot serve the type. */
  readonly maxQps: number;
  /** Power of one instance, all its GPUs, at that rate (W). */
  readonly powerW: number;
  readonly ttftMs: number;
  readonly tbtMs: number;
  /** End-to-end latency; absent where not measured (then no e2e target excludes the mode). */
  readonly e2eMs?: number | undefined;
}

/** The mean request of a type, as the table is measured for it. */
export interface TypeShape {
  readonly promptTokens: number;
  readonly outputTokens: number;
}

/**
 * A physics profile's table at its full batch (`maxBatch` sequences, continuous batching): the rate
 * is `throughputRps`; prefill stalls decoding for its share of the time, so the mean TBT is the step
 * over the time left to decode and the power is the time-weighted mean of prefill and decode power;
 * TTFT is one prefill and a step (queueing at the highest load is not counted, as the authors'
 * tables do not); e2e is TTFT plus the remaining tokens at that TBT.
 */
export function tableFromProfile(profile: InstanceProfile, shapes: Readonly<Record<string, TypeShape>>, batch = profile.maxBatch): Record<string, ModeTypeEntry> {
  const stepMs = decodeStepMs(profile, batch);
  const table: Record<string, ModeTypeEntry> = {};
  for (const [type, shape] of Object.entries(shapes)) {
    const prefill = prefillMs(profile, shape.promptTokens);
    const maxQps = throughputRps(batch, stepMs, prefill, shape.outputTokens);
    const prefillShare = Math.min(1, (maxQps * prefill) / 1000);
    const tbtMs = prefillShare < 1 ? stepMs / (1 - prefillShare) : Number.POSITIVE_INFINITY;
    const ttftMs = prefill + stepMs;
    table[type] = {
      maxQps,
      powerW: prefillShare * profile.prefillW + (1 - prefillShare) * decodePowerW(profile, batch),
      ttftMs,
      tbtMs,
      e2eMs: ttftMs + Math.max(0, shape.outputTokens - 1) * tbtMs,
    };
  }
  return table;
}
