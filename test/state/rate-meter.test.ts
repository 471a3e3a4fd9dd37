import { describe, expect, it } from 'vitest';
import { RateMeter } from '../../src/state/rate-meter.js';

describe('rate meter', () => {
  it('a steady stream of r per second reads r', () => {
    const meter = new RateMeter(10_000);
    // 50 every 100 ms: 500 per second, for ten time constants.
    for (let t = 0; t <= 100_000; t += 100) meter.add(50, t);
    expect(meter.perSecond(100_000)).toBeCloseTo(500, -1);
  });

  it('an amount added Δt ago weighs exp(−Δt/τ), read per second of τ', () => {
    const meter = new RateMeter(2_000);
    expect(meter.perSecond(0)).toBe(0);
    meter.add(1_000, 5_000);
    expect(meter.perSecond(5_000)).toBeCloseTo(500, 9);
    expect(meter.perSecond(7_000)).toBeCloseTo(500 * Math.exp(-1), 9);
    meter.add(1_000, 7_000);
    expect(meter.perSecond(7_000)).toBeCloseTo(500 * (1 + Math.exp(-1)), 9);
    expect(meter.perSecond(11_000)).toBeCloseTo(500 * (1 + Math.exp(-1)) * Math.exp(-2), 9);
  });

  it('a reading from before the last addition does not grow it', () => {
    const meter = new RateMeter(1_000);
    meter.add(100, 1_000);
    expect(meter.perSecond(500)).toBeCloseTo(100, 9);
  });

  it('defaults to a 30 s time constant', () => {
    const meter = new RateMeter();
    meter.add(300, 0);
    expect(meter.perSecond(0)).toBeCloseTo(10, 9);
    expect(meter.perSecond(30_000)).toBeCloseTo(10 * Math.exp(-1), 9);
  });
});
