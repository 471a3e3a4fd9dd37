import { describe, expect, it } from 'vitest';
import { withPriority } from '../../src/request/upstream-body.js';

const text = (bytes: Uint8Array) => Buffer.from(bytes).toString('utf8');

describe('upstream body with a priority', () => {
  it('appends the field after the client bytes, so the router value wins over a duplicate', () => {
    const raw = Buffer.from('{"model":"m","priority":-5,"messages":[{"role":"user","content":"}"}]} \n');
    const out = text(withPriority(raw, 2));
    expect(out).toBe('{"model":"m","priority":-5,"messages":[{"role":"user","content":"}"}],"priority":2}');
    // JavaScript's JSON.parse keeps the last duplicate, as Python's does.
    expect(JSON.parse(out)).toMatchObject({ model: 'm', priority: 2 });
  });

  it('an empty object gets the field alone; non-objects are refused', () => {
    expect(JSON.parse(text(withPriority(Buffer.from(' { } '), 0)))).toEqual({ priority: 0 });
    expect(() => withPriority(Buffer.from('[1]'), 0)).toThrow(TypeError);
    expect(() => withPriority(Buffer.from(''), 0)).toThrow(TypeError);
  });
});
