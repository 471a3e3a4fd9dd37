const COMPLETION_TOKENS = Buffer.from('"completion_tokens"');
const DATA = Buffer.from('data:');
/** SSE events that carry no token: a closing chunk with an empty delta, a usage-only chunk, [DONE]. */
const EMPTY_EVENTS = [Buffer.from('"delta":{}'), Buffer.from('"choices":[]'), Buffer.from('[DONE]')];

/**
 * Counts output tokens in a relayed body without buffering it: the `usage.completion_tokens` figure
 * when the backend sends one (it ends JSON bodies and, with include_usage, streams), otherwise one
 * token per SSE event that carries one. Approximate when a marker straddles two chunks.
 */
export class TokenMeter {
  /** When the last chunk arrived from the backend (clock ms), if `push` was given the time. */
  lastChunkAtMs: number | undefined;
  /** Decided from the first chunk, which can arrive before the headers are read. */
  #eventStream: boolean | undefined;
  #events = 0;
  /** The last two chunks: the usage figure sits at the end of the body (a marker split across the two is missed). */
  #previous: Buffer | undefined;
  #last: Buffer | undefined;

  /** Meters a chunk as it arrives from the backend (before the client reads it); `nowMs` notes when. */
  push(chunk: Buffer, nowMs?: number): void {
    if (nowMs !== undefined) this.lastChunkAtMs = nowMs;
    // An event stream starts with a field (`data:`, `event:`...) or a comment (`:`); JSON with `{`.
    this.#eventStream ??= chunk.length > 0 && chunk[0] !== 0x7b && chunk[0] !== 0x5b;
    if (this.#eventStream) {
      this.#events += occurrences(chunk, DATA);
      for (const marker of EMPTY_EVENTS) this.#events -= occurrences(chunk, marker);
    }
    this.#previous = this.#last;
    this.#last = chunk;
  }

  outputTokens(): number | undefined {
    const reported = usageIn(this.#last) ?? usageIn(this.#previous);
    if (reported !== undefined) return reported;
    return this.#eventStream ? Math.max(0, this.#events) : undefined;
  }
}

/** The last `"completion_tokens": N` figure in a chunk, if it has one. */
function usageIn(chunk: Buffer | undefined): number | undefined {
  if (!chunk) return undefined;
  const at = chunk.lastIndexOf(COMPLETION_TOKENS);
  if (at === -1) return undefined;
  let i = at + COMPLETION_TOKENS.length;
  while (i < chunk.length && (chunk[i] === 0x20 || chunk[i] === 0x3a)) i++; // spaces and the colon
  let value = 0;
  let digits = 0;
  for (; i < chunk.length && chunk[i]! >= 0x30 && chunk[i]! <= 0x39; i++, digits++) value = value * 10 + chunk[i]! - 0x30;
  return digits > 0 ? value : undefined;
}

function occurrences(haystack: Buffer, needle: Buffer): number {
  let count = 0;
  for (let at = haystack.indexOf(needle); at !== -1; at = haystack.indexOf(needle, at + needle.length)) count++;
  return count;
}
