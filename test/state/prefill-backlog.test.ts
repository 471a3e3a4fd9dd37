import { describe, expect, it } from 'vitest';
import { PrefillBacklog } from '../../src/state/prefill-backlog.js';

describe('prefill backlog', () => {
  it('adds what is sent and drains it at the rate given at the last read, never below zero', () => {
    const backlog = new PrefillBacklog();
    expect(backlog.pending(0, 2)).toBe(0);
    backlog.add(1_000, 0);
    backlog.add(500, 100); // 200 drained in the 100 ms between
    expect(backlog.pending(100, 2)).toBe(1_300);
    expect(backlog.pending(400, 1)).toBe(700); // 300 ms at 2 tokens/ms; 1 token/ms from now on
    expect(backlog.pending(500, 1)).toBe(600);
    expect(backlog.pending(10_000, 1)).toBe(0);
  });

  it('a read from the past drains nothing and moves nothing back', () => {
    const backlog = new PrefillBacklog();
    backlog.pending(0, 1);
    backlog.add(100, 50); // 50 ms of draining an empty queue: nothing
    expect(backlog.pending(40, 1)).toBe(100);
    expect(backlog.pending(60, 1)).toBe(90);
  });
});

describe('prefill backlog with priorities', () => {
  it('a prompt waits for its priority and higher only; the highest priority drains first', () => {
    const backlog = new PrefillBacklog();
    backlog.pending(0, 1);
    backlog.add(1_000, 0, 2); // batch
    backlog.add(300, 0, 1); // standard
    backlog.add(200, 0, 0); // interactive
    expect(backlog.pending(0, 1, 0)).toBe(200);
    expect(backlog.pending(0, 1, 1)).toBe(500);
    expect(backlog.pending(0, 1, 2)).toBe(1_500);
    // 400 ms at 1 token/ms: the interactive 200 and 200 of the standard 300 are done.
    expect(backlog.pending(400, 1, 0)).toBe(0);
    expect(backlog.pending(400, 1, 1)).toBe(100);
    expect(backlog.pending(400, 1, 2)).toBe(1_100);
    expect(backlog.pending(2_000, 1, 2)).toBe(0);
  });
});

describe('prefill backlog in any order of arrival', () => {
  it('prompts of lower priority sent after higher ones queue behind them; equal ones add up', () => {
    const backlog = new PrefillBacklog();
    backlog.pending(0, 1);
    backlog.add(100, 0, 0);
    backlog.add(200, 0, 2);
    backlog.add(50, 0, 1);
    backlog.add(25, 0, 2);
    backlog.add(10, 0, 0);
    expect(backlog.pending(0, 1, 0)).toBe(110);
    expect(backlog.pending(0, 1, 1)).toBe(160);
    expect(backlog.pending(0, 1, 2)).toBe(385);
    // 120 ms at 1 token/ms: priority 0 is done, and 10 of priority 1.
    expect(backlog.pending(120, 1, 0)).toBe(0);
    expect(backlog.pending(120, 1, 1)).toBe(40);
    expect(backlog.pending(120, 1, 3)).toBe(265);
  });

  it('a prompt of nothing adds nothing', () => {
    const backlog = new PrefillBacklog();
    backlog.add(0, 0);
    backlog.add(Number.NaN, 0);
    expect(backlog.pending(0, 1)).toBe(0);
  });
});
