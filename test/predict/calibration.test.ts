import { describe, expect, it } from 'vitest';
import { MeanBias, MedianBias } from '../../src/predict/calibration.js';
import { seededRng } from '../../src/clock.js';

const median = (xs: readonly number[]) => {
  const s = [...xs].sort((a, b) => a - b);
  return (s[(s.length - 1) >> 1]! + s[s.length >> 1]!) / 2;
};

/** A heavy-tailed stream of log errors: mostly near +0.3, one in five a very long answer (+4). */
const heavyTailed = (n: number) => Array.from({ length: n }, (_, i) => (i % 5 === 4 ? 4 : 0.3 + 0.01 * ((i * 7) % 5)));

describe('MedianBias', () => {
  it('is the median of the last `window` errors and `prior` zeros after every observation', () => {
    const rng = seededRng(3);
    for (const [window, prior] of [
      [1, 0],
      [5, 0],
      [8, 3],
      [64, 3],
      [7, 10],
    ] as const) {
      const bias = new MedianBias(window, prior);
      const seen: number[] = [];
      expect(bias.value).toBe(0);
      for (let i = 0; i < 300; i++) {
        // Repeated values and both signs: ties must not confuse the sorted copy.
        const error = i % 11 === 0 ? 0.5 : Math.round((rng() - 0.4) * 40) / 10;
        bias.observe(error);
        seen.push(error);
        // `+ 0`: a -0 among the errors is as good as a 0.
        expect(bias.value + 0).toBe(median([...seen.slice(-window), ...Array<number>(prior).fill(0)]) + 0);
      }
    }
  });

  it('moves to the median of a heavy-tailed stream, not its mean', () => {
    const errors = heavyTailed(200);
    const bias = new MedianBias(64, 3);
    const mean = new MeanBias(0.05);
    for (const e of errors) {
      bias.observe(e);
      mean.observe(e);
    }
    const streamMean = errors.reduce((s, e) => s + e, 0) / errors.length;
    expect(streamMean).toBeGreaterThan(1);
    expect(bias.value).toBeGreaterThanOrEqual(0.3);
    expect(bias.value).toBeLessThanOrEqual(0.34);
    // The mean-based correction is dragged towards the tail's mean.
    expect(mean.value).toBeGreaterThan(0.8);
  });

  it('stays at zero until the errors lean to one side in more answers than the prior', () => {
    const bias = new MedianBias(64, 3);
    bias.observe(1);
    bias.observe(1);
    expect(bias.value).toBe(0); // 0 0 0 1 1
    bias.observe(1);
    expect(bias.value).toBe(0.5); // 0 0 0 1 1 1
    bias.observe(1);
    expect(bias.value).toBe(1);
    for (let i = 0; i < 4; i++) bias.observe(-1);
    expect(bias.value).toBe(0); // four each side of the prior's zeros
  });

  it('forgets errors older than its window', () => {
    const bias = new MedianBias(10, 0);
    for (let i = 0; i < 10; i++) bias.observe(2);
    for (let i = 0; i < 10; i++) bias.observe(-1);
    expect(bias.value).toBe(-1);
  });

  it('ignores non-finite errors and refuses a bad window or prior', () => {
    const bias = new MedianBias(4, 0);
    bias.observe(Number.NaN);
    bias.observe(Number.POSITIVE_INFINITY);
    expect(bias.value).toBe(0);
    bias.observe(0.7);
    expect(bias.value).toBe(0.7);
    expect(() => new MedianBias(0, 3)).toThrow(/window/);
    expect(() => new MedianBias(2.5, 3)).toThrow(/window/);
    expect(() => new MedianBias(8, -1)).toThrow(/prior/);
  });
});

describe('MeanBias', () => {
  it('is the exponentially weighted mean of the errors', () => {
    const bias = new MeanBias(0.5);
    bias.observe(2);
    expect(bias.value).toBe(1);
    bias.observe(2);
    expect(bias.value).toBe(1.5);
    bias.observe(Number.NaN);
    expect(bias.value).toBe(1.5);
  });
});
