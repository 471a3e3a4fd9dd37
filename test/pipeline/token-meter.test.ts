import { describe, expect, it } from 'vitest';
import { TokenMeter } from '../../src/pipeline/token-meter.js';

const meter = (...chunks: string[]) => {
  const m = new TokenMeter();
  for (const c of chunks) m.push(Buffer.from(c));
  return m.outputTokens();
};

describe('TokenMeter', () => {
  it('reads usage.completion_tokens at the end of a JSON body, even across two chunks', () => {
    expect(meter('{"id":"x","choices":[],"usage":{"prompt_tokens":9,"completion_tokens": 42,"total_tokens":51}}')).toBe(42);
    expect(meter('{"choices":[{"message":"', '..."}],"usage":{"completion_tokens":7}}')).toBe(7);
    expect(meter('{"choices":[]}')).toBeUndefined();
  });

  it('counts token-carrying SSE events, not the closing, usage-only or [DONE] ones', () => {
    const events = [
      'data: {"choices":[{"delta":{"role":"assistant","content":"Hi"}}]}\n\n',
      'data: {"choices":[{"delta":{"content":" there"}}]}\n\n',
      'data: {"choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}\n\n',
      'data: [DONE]\n\n',
    ];
    expect(meter(...events)).toBe(2);
    expect(meter(events.join(''))).toBe(2);
  });

  it('prefers a stream\'s own usage figure (include_usage) to counting', () => {
    expect(meter('data: {"choices":[{"delta":{"content":"a"}}]}\n\n', 'data: {"choices":[],"usage":{"completion_tokens":5}}\n\ndata: [DONE]\n\n')).toBe(5);
  });
});
