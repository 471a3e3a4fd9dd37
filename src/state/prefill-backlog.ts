/**
 * Prompt tokens a backend has been sent and has not prefilled yet, kept as a fluid queue: what is
 * sent is added, and it drains at the backend's prefill rate (`prefillTokensPerMs` of the cost model,
 * given at each read, so the rate follows the batch and the clock). A prompt's first token waits for
 * the backlog ahead of it: the router sees the queue inside the backend without asking it. On a
 * backend that schedules by priority (lower first), a prompt waits only for its priority and those
 * above it, and the queue drains the highest priority first; elsewhere every prompt has priority 0.
 */
export class PrefillBacklog {
  /** Tokens waiting by priority, in ascending priority (served first) order. */
  #levels: { priority: number; tokens: number }[] = [];
  #atMs = 0;
  #tokensPerMs = 0;

  /** Tokens still to prefill at `nowMs` ahead of a prompt of `priority`, draining at `tokensPerMs` from now on. */
  pending(nowMs: number, tokensPerMs: number, priority = 0): number {
    this.#drain(nowMs);
    this.#tokensPerMs = tokensPerMs;
    let ahead = 0;
    for (const level of this.#levels) {
      if (level.priority > priority) break;
      ahead += level.tokens;
    }
    return ahead;
  }

  /** Adds a prompt sent at `nowMs` (the time since the last read drains at the last rate given). */
  add(tokens: number, nowMs: number, priority = 0): void {
    this.#drain(nowMs);
    // Stryker disable next-line EqualityOperator: a level of zero tokens reads and drains as nothing
    if (!(tokens > 0)) return;
    // Equal priorities share one level, which keeps the list short: two levels of one priority would
    // read and drain as the same sum.
    let i = 0;
    while (
      i < this.#levels.length &&
      // Stryker disable next-line EqualityOperator: skipping past an equal level adds a second level of that priority (see above)
      this.#levels[i]!.priority < priority
    )
      i++;
    const level = this.#levels[i];
    if (level?.priority === priority) level.tokens += tokens;
    else this.#levels.splice(i, 0, { priority, tokens });
  }

  #drain(nowMs: number): void {
    let budget = Math.max(0, nowMs - this.#atMs) * this.#tokensPerMs;
    this.#atMs = Math.max(this.#atMs, nowMs);
    while (budget > 0 && this.#levels.length > 0) {
      const first = this.#levels[0]!;
      const take = Math.min(budget, first.tokens);
      first.tokens -= take;
      budget -= take;
      if (first.tokens <= 0) this.#levels.shift();
    }
  }
}
