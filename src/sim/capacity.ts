import { BUILTIN_PROFILES, decodeStepMs, prefillMs } from '../cost/profiles.js';
import type { FleetSpec } from './fleet.js';
import type { Trace } from './trace.js';

/**
 * Requests per second the fleet sustains for a trace's mix, at full clock with every instance on.
 * An instance running batch B (its admitted concurrency) produces B tokens per decode step; each
 * request also costs one prefill of the mean prompt, during which nothing decodes. So x requests/s
 * need x·prefill seconds of prefill and x·meanOut tokens, and
 *   x = (B / step(B)) / (meanOut + prefill(meanPrompt) · B / step(B)).
 * Utilisation = offered request rate / the sum of x over instances.
 */
export function fleetCapacityRps(fleet: FleetSpec, trace: Trace): number {
  const n = trace.requests.length;
  const meanPrompt = trace.requests.reduce((s, r) => s + r.promptTokens, 0) / n;
  const meanOut = trace.requests.reduce((s, r) => s + r.outputTokens, 0) / n;
  let total = 0;
  for (const b of fleet.backends) {
    const profile = BUILTIN_PROFILES[b.mode]!;
    const batch = Math.min(b.maxConcurrency, profile.maxBatch);
    const tokensPerS = (batch / decodeStepMs(profile, batch)) * 1000;
    total += tokensPerS / (meanOut + (prefillMs(profile, meanPrompt) / 1000) * tokensPerS);
  }
  return total;
}

/** Mean request rate of a trace (requests per second). */
export function traceRps(trace: Trace): number {
  return trace.requests.length / Math.max(1, trace.durationMs / 1000);
}
