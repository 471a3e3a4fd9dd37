/**
 * Latency targets by SLO class. A TTFT target grows with the prompt, as prefill time does (FREESH
 * uses 300 ms for short prompts and 600 ms for long ones without publishing the threshold); TBT is
 * the mean time between output tokens.
 */
export interface SloClass {
  /** TTFT target for an empty prompt (ms). */
  readonly ttftBaseMs: number;
  /** TTFT allowance per prompt token (ms). */
  readonly ttftPerPromptTokenMs: number;
  /** Mean time-between-tokens target (ms). */
  readonly tbtMs: number;
  /** When no backend can meet the deadline: `serve` on the least-late one, or `reject` with 503. */
  readonly onLate: 'serve' | 'reject';
  /** Sent to backends that schedule by priority (`forwardPriority`): lower is served first. */
  readonly priority: number;
  /**
   * Span over which the router judges this class's TBT (ms): a prompt sent to a backend running a
   * request of the class counts its whole prefill as spent within this span. Short for chat, where a
   * stall of a few seconds is felt and answers are often short; the prefill-load window otherwise.
   */
  readonly tbtWindowMs: number;
}

/** Defaults: interactive (chat), standard (FREESH's TBT ≤ 150 ms), batch (deadline-tolerant). */
export const DEFAULT_SLO_CLASSES: Readonly<Record<string, SloClass>> = Object.freeze({
  interactive: Object.freeze({ ttftBaseMs: 500, ttftPerPromptTokenMs: 0.5, tbtMs: 100, onLate: 'serve' as const, priority: 0, tbtWindowMs: 2_500 }),
  standard: Object.freeze({ ttftBaseMs: 2_000, ttftPerPromptTokenMs: 1, tbtMs: 150, onLate: 'serve' as const, priority: 1, tbtWindowMs: 10_000 }),
  batch: Object.freeze({ ttftBaseMs: 60_000, ttftPerPromptTokenMs: 5, tbtMs: 500, onLate: 'serve' as const, priority: 2, tbtWindowMs: 10_000 }),
});

export function ttftTargetMs(slo: SloClass, promptTokens: number): number {
  return slo.ttftBaseMs + slo.ttftPerPromptTokenMs * promptTokens;
}
