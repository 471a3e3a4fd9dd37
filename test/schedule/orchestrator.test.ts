import { describe, expect, it } from 'vitest';
import { seededRng } from '../../src/clock.js';
import { BUILTIN_POLICIES } from '../../src/schedule/builtin.js';
import { decide } from '../../src/schedule/orchestrator.js';
import { healthyFilter, maxScorePicker } from '../../src/schedule/plugins.js';
import type { DecisionContext, Policy, Scorer } from '../../src/schedule/policy.js';
import { candidate, decisionContext } from '../helpers/fixtures.js';

const ctx = (seed = 1): DecisionContext => decisionContext({ rng: seededRng(seed) });
const scorer = (name: string, fn: Scorer['score']): Scorer => ({ name, score: fn });

describe('decide', () => {
  it('uses a plugin\'s one-call form (keepAll, scoreAll) when it works, and its per-candidate form with errors reported when it throws', () => {
    const odd = (id: string) => id === 'b';
    const batchFilter = (throws: boolean) => ({
      name: 'drop-b',
      keep: (c: { backend: { id: string } }) => !odd(c.backend.id),
      keepAll(cs: readonly { backend: { id: string } }[], _ctx: DecisionContext, out: number[]) {
        if (throws) throw new Error('batch broke');
        cs.forEach((c, i) => (out[i] = odd(c.backend.id) ? 0 : 1));
      },
    });
    const batchScorer = (throws: boolean): Scorer => ({
      name: 'prefer-c',
      score: (c) => (c.backend.id === 'c' ? 1 : 0.2),
      scoreAll(cs, _ctx, out) {
        if (throws) throw new Error('batch broke');
        // Not the per-candidate figure for `a`: the trace shows which form answered.
        cs.forEach((c, i) => (out[i] = c.backend.id === 'c' ? 1 : 0.3));
      },
    });
    for (const throws of [false, true]) {
      const policy: Policy = { name: 'p', filters: [batchFilter(throws)], scorers: [{ scorer: batchScorer(throws), weight: 1 }], picker: maxScorePicker() };
      const d = decide(policy, [candidate('a'), candidate('b'), candidate('c')], ctx(), true);
      expect(d.picked?.candidate.backend.id).toBe('c');
      expect(d.trace!.candidates.find((c) => c.backend === 'b')?.droppedBy).toBe('drop-b');
      expect(d.trace!.candidates.find((c) => c.backend === 'a')?.scores).toEqual({ 'prefer-c': throws ? 0.2 : 0.3 });
      // A batch form that throws is not an error of the plugin's verdicts: the per-candidate form answered.
      expect(d.errors).toEqual([]);
    }
  });


  it('clamps scores to [0, 1] and treats NaN and throwing scorers as 0, naming the culprit in the trace', () => {
    const policy: Policy = {
      name: 'p',
      filters: [],
      scorers: [
        { scorer: scorer('wild', (c) => (c.backend.id === 'a' ? 7 : c.backend.id === 'b' ? -3 : Number.NaN)), weight: 1 },
        { scorer: scorer('broken', () => { throw new Error('boom'); }), weight: 1 },
      ],
      picker: maxScorePicker(),
    };
    const d = decide(policy, [candidate('a'), candidate('b'), candidate('c')], ctx(), true);
    expect(d.picked?.candidate.backend.id).toBe('a');
    expect(d.picked?.score).toBe(0.5);
    const scores = Object.fromEntries(d.trace!.candidates.map((c) => [c.backend, c.scores]));
    expect(scores).toEqual({ a: { wild: 1, broken: 0 }, b: { wild: 0, broken: 0 }, c: { wild: 0, broken: 0 } });
    expect(d.trace!.errors).toEqual(Array(3).fill({ plugin: 'scorer:broken', message: 'boom' }));
    expect(Object.keys(d.trace!.pluginUs)).toEqual(['scorer:wild', 'scorer:broken', 'picker:max-score']);
  });

  it('reports the filter that removed the last candidate, and picks nothing', () => {
    const policy = BUILTIN_POLICIES['least-loaded']!();
    const d = decide(policy, [candidate('a', 0, 0, { healthy: false })], ctx(), true);
    expect(d.picked).toBeUndefined();
    expect(d.emptiedBy).toBe('healthy');
    expect(d.trace!.candidates).toEqual([{ backend: 'a', droppedBy: 'healthy' }]);
  });

  it('keeps candidates when a filter throws, and falls back to the best score when the picker misbehaves', () => {
    const policy: Policy = {
      name: 'p',
      filters: [{ name: 'bad', keep: () => { throw new Error('x'); } }],
      scorers: [{ scorer: scorer('id', (c) => (c.backend.id === 'b' ? 1 : 0.2)), weight: 1 }],
      picker: { name: 'liar', pick: () => ({ candidate: candidate('zzz'), score: 1 }) },
    };
    const d = decide(policy, [candidate('a'), candidate('b')], ctx());
    expect(d.picked?.candidate.backend.id).toBe('b');
    expect(d.errors).toEqual([
      { plugin: 'filter:bad', message: 'x' },
      { plugin: 'filter:bad', message: 'x' },
      { plugin: 'picker:liar', message: 'returned an entry it was not given' },
    ]);
  });

  it('records no trace unless asked', () => {
    expect(decide(BUILTIN_POLICIES['random']!(), [candidate('a')], ctx()).trace).toBeUndefined();
  });
});

describe('built-in policies', () => {
  const fleet = [candidate('a', 5, 2), candidate('b', 1, 0), candidate('c', 3, 0), candidate('d', 0, 0, { healthy: false })];

  it('least-loaded picks the healthy backend with the least in-flight plus queued work', () => {
    const policy = BUILTIN_POLICIES['least-loaded']!();
    expect(decide(policy, fleet, ctx()).picked?.candidate.backend.id).toBe('b');
  });

  it('least-loaded spreads ties evenly', () => {
    const policy = BUILTIN_POLICIES['least-loaded']!();
    const c = ctx(7);
    const counts: Record<string, number> = {};
    for (let i = 0; i < 3_000; i++) {
      const id = decide(policy, [candidate('x'), candidate('y'), candidate('z')], c).picked!.candidate.backend.id;
      counts[id] = (counts[id] ?? 0) + 1;
    }
    for (const n of Object.values(counts)) expect(n).toBeGreaterThan(900);
  });

  it('round-robin cycles through healthy backends in order', () => {
    const policy = BUILTIN_POLICIES['round-robin']!();
    const picks = Array.from({ length: 6 }, () => decide(policy, fleet, ctx()).picked?.candidate.backend.id);
    expect(picks).toEqual(['a', 'b', 'c', 'a', 'b', 'c']);
  });

  it('random is reproducible under a seed and covers every healthy backend', () => {
    const run = () => {
      const policy = BUILTIN_POLICIES['random']!();
      const c = ctx(42);
      return Array.from({ length: 60 }, () => decide(policy, fleet, c).picked?.candidate.backend.id);
    };
    const picks = run();
    expect(run()).toEqual(picks);
    expect(new Set(picks)).toEqual(new Set(['a', 'b', 'c']));
  });

  it('the healthy filter is exported for composing policies', () => {
    expect(healthyFilter.keep(fleet[3]!, ctx())).toBe(false);
  });

  it('traces each plugin\'s time in µs, each candidate\'s score, and puts back what a relaxed soft filter had dropped', () => {
    const slow = scorer('slow', (c) => {
      const until = performance.now() + 2;
      while (performance.now() < until);
      return c.backend.id === 'a' ? 1 : 0.5;
    });
    const policy: Policy = {
      name: 'p',
      filters: [healthyFilter, { name: 'none-fits', soft: true, keep: () => false }],
      scorers: [{ scorer: slow, weight: 1 }],
      picker: maxScorePicker(),
    };
    const d = decide(policy, [candidate('a'), candidate('b'), candidate('sick', 0, 0, { healthy: false })], ctx(), true);
    expect(d.relaxed).toEqual(['none-fits']);
    const byId = Object.fromEntries(d.trace!.candidates.map((c) => [c.backend, c]));
    expect(byId['a']).toEqual({ backend: 'a', scores: { slow: 1 }, score: 1 });
    expect(byId['b']).toEqual({ backend: 'b', scores: { slow: 0.5 }, score: 0.5 });
    expect(byId['sick']).toEqual({ backend: 'sick', droppedBy: 'healthy' });
    const us = d.trace!.pluginUs;
    expect(Object.keys(us)).toEqual(['filter:healthy', 'filter:none-fits', 'scorer:slow', 'picker:max-score']);
    // Two candidates scored, 2 ms each: at least 4,000 µs, and not a clock reading.
    expect(us['scorer:slow']).toBeGreaterThanOrEqual(3_900);
    expect(us['scorer:slow']).toBeLessThan(10_000_000);
    for (const v of Object.values(us)) expect(v).toBeGreaterThanOrEqual(0);
  });

  it('relaxes no soft filter when there is no candidate at all', () => {
    const policy: Policy = { name: 'p', filters: [{ name: 'soft', soft: true, keep: () => false }], scorers: [], picker: maxScorePicker() };
    const d = decide(policy, [], ctx());
    expect(d.relaxed).toEqual([]);
    expect(d.picked).toBeUndefined();
  });

  it('a misbehaving picker falls back to the first of the best-scored', () => {
    const policy: Policy = {
      name: 'p',
      filters: [],
      scorers: [{ scorer: scorer('flat', () => 0.5), weight: 1 }],
      picker: { name: 'liar', pick: () => ({ candidate: candidate('zzz'), score: 1 }) },
    };
    expect(decide(policy, [candidate('a'), candidate('b'), candidate('c')], ctx()).picked?.candidate.backend.id).toBe('a');
  });
});
