import { BUILTIN_PROFILES, decodeStepMs, prefillMs, throughputRps } from '../cost/profiles.js';
import type { FleetSpec } from './fleet.js';
import type { Trace } from './trace.js';

/**
 * Requests per second the fleet sustains for a trace's mix, at full clock with every instance on:
 * the sum over instances of `throughputRps` at the instance's admitted batch, the trace's mean
 * prompt and mean output. Utilisation = offered request rate / this.
 */
export function fleetCapacityRps(fleet: FleetSpec, trace: Trace): number {
  const n = trace.requests.length;
  const meanPrompt = trace.requests.reduce((s, r) => s + r.promptTokens, 0) / n;
  const meanOut = trace.requests.reduce((s, r) => s + r.outputTokens, 0) / n;
  let total = 0;
  for (const b of fleet.backends) {
    const profile = BUILTIN_PROFILES[b.mode]!;
    const batch = Math.min(b.maxConcurrency, profile.maxBatch);
    total += throughputRps(batch, decodeStepMs(profile, batch), prefillMs(profile, meanPrompt), meanOut);
  }
  return total;
}

/** Mean request rate of a trace (requests per second). */
export function traceRps(trace: Trace): number {
  return trace.requests.length / Math.max(1, trace.durationMs / 1000);
}
