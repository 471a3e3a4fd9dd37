import { seededRng } from '../clock.js';
import type { Trace } from './trace.js';

/**
 * Workloads the benchmark builds from the recorded traces, each a pure function of its inputs.
 */

/** Tokens a prompt may hold at most (a 32k-context model). */
export const MAX_PROMPT_TOKENS = 32_768;

/**
 * Long-prompt traffic (retrieval-augmented chat, document questions): the trace's arrivals and
 * answers with every prompt `factor` times longer, at most MAX_PROMPT_TOKENS. With factor 8 the
 * conversation trace's median prompt of 1,020 tokens becomes ~8,200, the range of the long-prompt
 * conversation traffic the router was found weak on.
 */
export function longPromptTrace(trace: Trace, factor = 8): Trace {
  if (!(factor >= 1)) throw new RangeError(`Expected \`factor\` ≥ 1, got \`${factor}\``);
  const requests = trace.requests.map((r) => ({ ...r, promptTokens: Math.min(MAX_PROMPT_TOKENS, Math.round(r.promptTokens * factor)) }));
  return { name: `${trace.name}-long`, requests, durationMs: trace.durationMs };
}

/**
 * Relative request rate over a day (hour of day, UTC): lowest at 04:00 (0.3 of the peak), highest
 * at 16:00, a raised cosine between, the shape of a service used across Europe and the Americas.
 */
export function diurnalRate(hourOfDay: number): number {
  return 0.3 + 0.7 * (0.5 - 0.5 * Math.cos((2 * Math.PI * (hourOfDay - 4)) / 24));
}

/**
 * A day compressed into the trace's span: request i at time t is kept with probability
 * diurnalRate(24 · t / duration), so the rate follows the day's shape while prompts, answers and
 * burstiness stay the trace's own. Seeded: same seed, same requests. The carbon series must be
 * compressed by the same factor (`24 h / duration`).
 */
export function diurnalTrace(trace: Trace, seed = 1): Trace {
  const rng = seededRng(seed);
  const span = Math.max(1, trace.durationMs);
  const requests = trace.requests.filter((r) => rng() < diurnalRate((24 * r.arrivalMs) / span));
  return { name: `${trace.name}-diurnal`, requests, durationMs: trace.durationMs };
}

/** The first `minutes` of a trace (a quicker benchmark). */
export function firstMinutes(trace: Trace, minutes: number): Trace {
  const limit = minutes * 60_000;
  const requests = trace.requests.filter((r) => r.arrivalMs < limit);
  return { name: trace.name, requests, durationMs: Math.min(trace.durationMs, requests.at(-1)?.arrivalMs ?? 0) };
}
