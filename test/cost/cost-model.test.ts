import { describe, expect, it } from 'vitest';
import { profileCostModel } from '../../src/cost/cost-model.js';
import { BUILTIN_PROFILES, decodePowerW, decodeStepMs, interpolate, prefillMs } from '../../src/cost/profiles.js';
import { backend, request } from '../helpers/fixtures.js';

const prediction = { outputTokensP50: 100, outputTokensP90: 300, source: 'test' };

describe('profile cost model', () => {
  it('interpolates and extrapolates curves linearly', () => {
    const curve = [[1, 10], [3, 30]] as const;
    expect(interpolate(curve, 2)).toBe(20);
    expect(interpolate(curve, 5)).toBe(50);
    expect(interpolate(curve, 0)).toBe(0);
  });

  it('restates the Splitwise figures for 2×A100 (Llama-2-70B, TP2)', () => {
    const p = BUILTIN_PROFILES['2xA100']!;
    expect(decodeStepMs(p, 8)).toBe(61.7);
    expect(prefillMs(p, 2048)).toBe(687);
    expect(p.idleW).toBe(126);
  });

  it('an idle backend: no wait, TTFT = prefill + a step, e2e = TTFT + (tokens − 1) × TBT, energy from power × time × PUE', () => {
    const b = backend('a');
    const est = profileCostModel.estimate({ request: request(), prediction, backend: b, state: { inFlight: 0, healthy: true }, queued: 0, nowMs: 0, promptTokensPerS: 0, gramsPerKWh: 400, clockFraction: 1 });
    const tbt = decodeStepMs(b.profile, 1);
    expect(est.waitMs).toBe(0);
    expect(est.tbtMs).toBe(tbt);
    expect(est.ttftMs).toBeCloseTo(196 + tbt, 9);
    expect(est.e2eMs).toBeCloseTo(196 + tbt + 99 * tbt, 9);
    expect(est.e2eP90Ms).toBeCloseTo(196 + tbt + 299 * tbt, 9);
    expect(est.energyJ).toBeCloseTo((decodePowerW(b.profile, 1) * est.e2eMs * 1.2) / 1000, 9);
    expect(est.carbonG).toBeCloseTo((est.energyJ / 3.6e6) * 400, 12);
  });

  it('a lower clock slows decode a little, prefill a lot, and cuts energy (the frequency model)', () => {
    const b = backend('a');
    const input = { request: request(), prediction, backend: b, state: { inFlight: 3, healthy: true }, queued: 0, promptTokensPerS: 0, nowMs: 0, gramsPerKWh: 400 };
    const full = profileCostModel.estimate({ ...input, clockFraction: 1 });
    const slow = profileCostModel.estimate({ ...input, clockFraction: 0.7 });
    expect(slow.tbtMs / full.tbtMs).toBeCloseTo(1 + 0.05 * (1 / 0.7 - 1), 9);
    expect(slow.ttftMs).toBeGreaterThan(full.ttftMs * 1.2);
    expect(slow.energyJ).toBeLessThan(full.energyJ * 0.8);
  });

  it('prefill load stretches the time between tokens', () => {
    const b = backend('a');
    const input = { request: request(), prediction, backend: b, state: { inFlight: 3, healthy: true }, queued: 0, nowMs: 0, gramsPerKWh: 400, clockFraction: 1 };
    const quiet = profileCostModel.estimate({ ...input, promptTokensPerS: 0 });
    // 1,024 prompt tokens a second, each second: half the time goes to prefill.
    const perToken = prefillMs(b.profile, 1024) / 1024;
    const busy = profileCostModel.estimate({ ...input, promptTokensPerS: 500 / perToken });
    expect(busy.tbtMs / quiet.tbtMs).toBeCloseTo(2, 9);
  });

  it('carbon follows the intensity it is given', () => {
    const input = { request: request(), prediction, backend: backend('a'), state: { inFlight: 0, healthy: true }, queued: 0, promptTokensPerS: 0, nowMs: 0, clockFraction: 1 };
    const clean = profileCostModel.estimate({ ...input, gramsPerKWh: 50 });
    const dirty = profileCostModel.estimate({ ...input, gramsPerKWh: 500 });
    expect(dirty.carbonG / clean.carbonG).toBeCloseTo(10, 9);
    expect(dirty.energyJ).toBe(clean.energyJ);
  });

  it('a saturated backend adds queue wait, and sharing a batch lowers each request\'s energy', () => {
    const b = backend('a', { maxConcurrency: 4 });
    const idle = profileCostModel.estimate({ request: request(), prediction, backend: b, state: { inFlight: 0, healthy: true }, queued: 0, nowMs: 0, promptTokensPerS: 0, gramsPerKWh: 400, clockFraction: 1 });
    const busy = profileCostModel.estimate({ request: request(), prediction, backend: b, state: { inFlight: 4, healthy: true }, queued: 4, nowMs: 0, promptTokensPerS: 0, gramsPerKWh: 400, clockFraction: 1 });
    expect(busy.waitMs).toBeGreaterThan(0);
    expect(busy.ttftMs).toBeGreaterThan(idle.ttftMs);
    expect(busy.energyJ).toBeLessThan(idle.energyJ);
  });
});
