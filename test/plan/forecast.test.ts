import { describe, expect, it } from 'vitest';
import { SeasonalForecaster } from '../../src/plan/forecast.js';
import type { RequestType } from '../../src/request/request-type.js';

const STEP_MS = 60_000;
const SEASON = 12;

/** A periodic rate per type (req/s) at a step: a season of 12 steps, SS and LL in opposite phase. */
function truth(step: number, shift = 0): Record<RequestType, number> {
  const phase = (2 * Math.PI * step) / SEASON;
  return { SS: 5 + 4 * Math.sin(phase) + shift, SL: 1, LS: 2 + Math.cos(phase), LL: 3 - 2 * Math.sin(phase) };
}

/** Feeds each step's arrivals spread evenly over the step. */
function feed(f: SeasonalForecaster, from: number, to: number, shift = 0): void {
  for (let step = from; step < to; step++) {
    for (const [type, rps] of Object.entries(truth(step, step >= 30 ? shift : 0)) as [RequestType, number][]) {
      const n = Math.round((rps * STEP_MS) / 1000);
      for (let i = 0; i < n; i++) f.observe(type, step * STEP_MS + ((i + 0.5) * STEP_MS) / n);
    }
  }
}

const error = (a: Record<RequestType, number>, b: Record<RequestType, number>) =>
  (Object.keys(a) as RequestType[]).reduce((s, k) => s + Math.abs(a[k] - b[k]), 0);

describe('SeasonalForecaster', () => {
  it('before a season has passed, forecasts the recent level for every step', () => {
    const f = new SeasonalForecaster({ stepMs: STEP_MS, seasonSteps: SEASON, levelSteps: 3 });
    expect(f.forecast(0, 2)).toEqual([{ SS: 0, SL: 0, LS: 0, LL: 0 }, { SS: 0, SL: 0, LS: 0, LL: 0 }]);
    feed(f, 0, 6);
    const [first] = f.forecast(6 * STEP_MS, 1);
    const mean = (k: RequestType) => ([3, 4, 5].reduce((s, i) => s + Math.round(truth(i)[k] * 60), 0) / 3 / 60);
    expect(first!.SS).toBeCloseTo(mean('SS'), 9);
    expect(first!.LL).toBeCloseTo(mean('LL'), 9);
  });

  it('forecasts each step of a periodic series within 2%, where the trailing mean is off by a third', () => {
    const f = new SeasonalForecaster({ stepMs: STEP_MS, seasonSteps: SEASON, levelSteps: 3 });
    feed(f, 0, 27);
    const coming = f.forecast(27 * STEP_MS, 6);
    let seasonalError = 0;
    let trailingError = 0;
    let total = 0;
    for (const [h, rates] of coming.entries()) {
      const actual = truth(27 + h);
      seasonalError += error(rates, actual);
      const trailing = truth(0);
      for (const k of Object.keys(trailing) as RequestType[]) trailing[k] = [24, 25, 26].reduce((s, i) => s + truth(i)[k], 0) / 3;
      trailingError += error(trailing, actual);
      total += Object.values(actual).reduce((s, v) => s + v, 0);
    }
    expect(seasonalError / total).toBeLessThan(0.02);
    expect(trailingError / total).toBeGreaterThan(0.1);
  });

  it('follows a level shift: the season gives the shape, the recent level the offset', () => {
    const f = new SeasonalForecaster({ stepMs: STEP_MS, seasonSteps: SEASON, levelSteps: 3 });
    // From step 30 on, SS runs 3 req/s above its shape.
    feed(f, 0, 36, 3);
    const coming = f.forecast(36 * STEP_MS, 4);
    for (const [h, rates] of coming.entries()) expect(rates.SS).toBeCloseTo(truth(36 + h, 3).SS, 0);
  });

  it('scores its forecasts against the counts of the steps as they complete', () => {
    const f = new SeasonalForecaster({ stepMs: STEP_MS, seasonSteps: SEASON, levelSteps: 3 });
    feed(f, 0, 27);
    expect(f.error().steps).toBe(0);
    for (let step = 27; step < 33; step++) {
      f.forecast(step * STEP_MS, 6);
      feed(f, step, step + 1);
    }
    f.forecast(33 * STEP_MS, 1);
    const e = f.error();
    expect(e.steps).toBe(6);
    expect(e.relativeError).toBeLessThan(0.02);
    expect(e.meanAbsErrorRps).toBeGreaterThan(0);
  });

  it('refuses a step that is not positive', () => {
    expect(() => new SeasonalForecaster({ stepMs: 0 })).toThrow(/stepMs must be positive, got 0/);
  });
});
