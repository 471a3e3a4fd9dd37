/**
 * Prompt tokens a backend has been sent and has not prefilled yet, kept as a fluid queue: what is
 * sent is added, and it drains at the backend's prefill rate (`prefillTokensPerMs` of the cost model,
 * given at each read, so the rate follows the batch and the clock). A prompt's first token waits for
 * the backlog ahead of it: the router sees the queue inside the backend without asking it.
 */
export class PrefillBacklog {
  #tokens = 0;
  #atMs = 0;
  #tokensPerMs = 0;

  /** Tokens still to prefill at `nowMs`, draining at `tokensPerMs` from now on. */
  pending(nowMs: number, tokensPerMs: number): number {
    this.#drain(nowMs);
    this.#tokensPerMs = tokensPerMs;
    return this.#tokens;
  }

  /** Adds a prompt sent at `nowMs` (the time since the last read drains at the last rate given). */
  add(tokens: number, nowMs: number): void {
    this.#drain(nowMs);
    this.#tokens += Math.max(0, tokens);
  }

  #drain(nowMs: number): void {
    const elapsed = Math.max(0, nowMs - this.#atMs);
    this.#tokens = Math.max(0, this.#tokens - elapsed * this.#tokensPerMs);
    this.#atMs = Math.max(this.#atMs, nowMs);
  }
}
