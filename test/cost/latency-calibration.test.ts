import { describe, expect, it } from 'vitest';
import { LatencyCalibration, MAX_FACTOR } from '../../src/cost/latency-calibration.js';

describe('latency calibration', () => {
  it('starts at 1 and settles where the calibrated model matches what is observed', () => {
    const calibration = new LatencyCalibration(0.1);
    expect(calibration.factor('a')).toBe(1);
    // The backend takes 1.2× what the uncalibrated model says; each observation is costed with the current factor.
    for (let i = 0; i < 200; i++) calibration.observe('a', 1_000 * calibration.factor('a'), 1_200);
    expect(calibration.factor('a')).toBeCloseTo(1.2, 3);
    expect(calibration.factor('b')).toBe(1);
  });

  it('one outlier moves the factor by the weight only, within bounds; nonsense is ignored', () => {
    const calibration = new LatencyCalibration(0.05);
    calibration.observe('a', 1_000, 3_000);
    expect(calibration.factor('a')).toBeCloseTo(1.1, 9);
    for (let i = 0; i < 500; i++) calibration.observe('a', 1, 1_000_000);
    expect(calibration.factor('a')).toBe(MAX_FACTOR);
    calibration.observe('a', 0, 1_000);
    calibration.observe('a', Number.NaN, 1_000);
    calibration.observe('a', 1_000, -5);
    expect(calibration.factor('a')).toBe(MAX_FACTOR);
  });
});
