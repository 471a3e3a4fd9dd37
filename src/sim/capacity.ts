import { BUILTIN_PROFILES, decodeStepMs, prefillMs, throughputRps } from '../cost/profiles.js';
import type { FleetSpec } from './fleet.js';
import type { Trace } from './trace.js';

/**
 * Requests per second the fleet sustains for a trace's mix, at full clock with every instance on:
 * the sum over instances of `throughputRps` at the instance's admitted batch, the trace's mean
 * prompt and mean output. Utilisation = offered request rate / this.
 */
export function fleetCapacityRps(fleet: FleetSpec, trace: Trace): number {
  const { meanPrompt, meanOut } = traceMeans(trace);
  let total = 0;
  for (const b of fleet.backends) {
    const profile = BUILTIN_PROFILES[b.mode]!;
    const batch = Math.min(b.maxConcurrency, profile.maxBatch);
    total += throughputRps(batch, decodeStepMs(profile, batch), prefillMs(profile, meanPrompt), meanOut);
  }
  return total;
}

function traceMeans(trace: Trace): { meanPrompt: number; meanOut: number } {
  const n = trace.requests.length;
  return {
    meanPrompt: trace.requests.reduce((s, r) => s + r.promptTokens, 0) / n,
    meanOut: trace.requests.reduce((s, r) => s + r.outputTokens, 0) / n,
  };
}

/** Mean request rate of a trace (requests per second). */
export function traceRps(trace: Trace): number {
  return trace.requests.length / Math.max(1, trace.durationMs / 1000);
}

/**
 * Requests per second the fleet sustains for a trace's mix while decoding stays within a TBT target
 * (default 100 ms, the strictest default class's, so that every class's TBT is met): per instance,
 * at each batch b up to its admitted batch, x(b) = throughputRps(b, ...) requests/s spend x·prefill(meanPrompt) of each second prefilling, so
 * the time between a sequence's tokens is step(b) / (1 − x·prefill); the largest x(b) whose TBT is
 * within the target counts, summed over instances. Loads in the benchmark are fractions of this:
 * at 1 the fleet is at the edge of its SLOs, not of its raw throughput (the latter, `fleetCapacityRps`,
 * ignores the SLOs: on the conversation trace SLO capacity is 0.86 of it, on the code trace 0.56, on
 * long prompts 0.62). Queueing for prefill is not counted: near 1, bursts miss their TTFT targets.
 */
export function sloCapacityRps(fleet: FleetSpec, trace: Trace, tbtMs = 100): number {
  const { meanPrompt, meanOut } = traceMeans(trace);
  let total = 0;
  for (const b of fleet.backends) {
    const profile = BUILTIN_PROFILES[b.mode]!;
    const prefillS = prefillMs(profile, meanPrompt) / 1000;
    let best = 0;
    for (let batch = 1; batch <= Math.min(b.maxConcurrency, profile.maxBatch); batch++) {
      const step = decodeStepMs(profile, batch);
      const x = throughputRps(batch, step, prefillS * 1000, meanOut);
      const busy = x * prefillS;
      if (busy < 1 && step / (1 - busy) <= tbtMs) best = Math.max(best, x);
    }
    total += best;
  }
  return total;
}
