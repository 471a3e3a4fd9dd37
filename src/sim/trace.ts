/** A request of a replayed trace: when it arrives and its true token counts. */
export interface TraceRequest {
  /** Arrival, ms after the trace's first request. */
  readonly arrivalMs: number;
  readonly promptTokens: number;
  readonly outputTokens: number;
}

export interface Trace {
  readonly name: string;
  readonly requests: readonly TraceRequest[];
  /** Time from the first arrival to the last (ms). */
  readonly durationMs: number;
}

/**
 * Parses the Azure LLM inference trace format (`TIMESTAMP,ContextTokens,GeneratedTokens`, timestamps
 * like `2023-11-16 18:15:46.6805900`, UTC). Rows are sorted by arrival; output counts below 1 become 1.
 */
export function parseAzureTrace(text: string, name = 'trace'): Trace {
  const lines = text.split(/\r?\n/).filter((l) => l.trim() !== '');
  const header = lines[0]?.split(',').map((h) => h.trim());
  if (!header || header[0] !== 'TIMESTAMP' || header[1] !== 'ContextTokens' || header[2] !== 'GeneratedTokens') {
    throw new Error(`${name}: expected the header TIMESTAMP,ContextTokens,GeneratedTokens, got ${JSON.stringify(lines[0])}`);
  }
  const rows = lines.slice(1).map((line, i) => {
    const [stamp = '', context, generated] = line.split(',');
    const time = parseStamp(stamp);
    const promptTokens = Number(context);
    const outputTokens = Number(generated);
    if (!Number.isFinite(time) || !Number.isInteger(promptTokens) || !Number.isInteger(outputTokens) || promptTokens < 0 || outputTokens < 0) {
      throw new Error(`${name}, line ${i + 2}: cannot read ${JSON.stringify(line)}`);
    }
    return { time, promptTokens: Math.max(1, promptTokens), outputTokens: Math.max(1, outputTokens) };
  });
  if (rows.length === 0) throw new Error(`${name}: no requests`);
  rows.sort((a, b) => a.time - b.time);
  const t0 = rows[0]!.time;
  const requests = rows.map((r) => Object.freeze({ arrivalMs: r.time - t0, promptTokens: r.promptTokens, outputTokens: r.outputTokens }));
  return Object.freeze({ name, requests: Object.freeze(requests), durationMs: requests.at(-1)!.arrivalMs });
}

/** `2023-11-16 18:15:46.6805900` → ms since the epoch, keeping sub-millisecond digits. */
function parseStamp(stamp: string): number {
  const m = /^(\d{4}-\d{2}-\d{2})[ T](\d{2}:\d{2}:\d{2})(\.\d+)?$/.exec(stamp.trim());
  if (!m) return Number.NaN;
  return Date.parse(`${m[1]}T${m[2]}Z`) + (m[3] ? Number(m[3]) * 1000 : 0);
}

/** The trace with arrival times compressed by `rate` (2 = twice as many requests per second). */
export function scaleTrace(trace: Trace, rate: number): Trace {
  if (!(rate > 0)) throw new RangeError(`Expected \`rate\` to be a positive number, got \`${rate}\``);
  const requests = trace.requests.map((r) => ({ ...r, arrivalMs: r.arrivalMs / rate }));
  return { name: trace.name, requests, durationMs: trace.durationMs / rate };
}
