import { describe, expect, it } from 'vitest';
import { type CostInput, prefillTokensPerMs, profileCostModel } from '../../src/cost/cost-model.js';
import { BUILTIN_PROFILES, decodePowerW, decodeStepMs, interpolate, prefillMs } from '../../src/cost/profiles.js';
import { DEFAULT_FREQUENCY_MODEL } from '../../src/cost/frequency.js';
import { backend, request } from '../helpers/fixtures.js';

const prediction = { outputTokensP50: 100, outputTokensP90: 300, source: 'test' };

/** An idle 2×A100 backend at full clock, a 512-token prompt, nothing sent lately. */
function input(overrides: Partial<CostInput> = {}): CostInput {
  return {
    request: request(),
    prediction,
    backend: backend('a'),
    state: { inFlight: 0, healthy: true },
    queued: 0,
    promptTokensPerS: 0,
    prefillBacklogTokens: 0,
    nowMs: 0,
    gramsPerKWh: 400,
    clockFraction: 1,
    latencyFactor: 1,
    readyInMs: 0,
    ...overrides,
  };
}

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

  it('an idle backend: no wait, TTFT = the prefill, e2e = TTFT + (tokens − 1) × TBT, energy from power × time × PUE', () => {
    const b = backend('a');
    const est = profileCostModel.estimate(input({ backend: b }));
    const tbt = decodeStepMs(b.profile, 1);
    expect(est.waitMs).toBe(0);
    expect(est.tbtMs).toBe(tbt);
    expect(est.ttftMs).toBeCloseTo(196, 9); // one 512-token chunk
    expect(est.e2eMs).toBeCloseTo(196 + 99 * tbt, 9);
    expect(est.e2eP90Ms).toBeCloseTo(196 + 299 * tbt, 9);
    expect(est.energyJ).toBeCloseTo((decodePowerW(b.profile, 1) * est.e2eMs * 1.2) / 1000, 9);
    expect(est.carbonG).toBeCloseTo((est.energyJ / 3.6e6) * 400, 12);
  });

  it('a lower clock slows decode a little, prefill a lot, and cuts energy (the frequency model)', () => {
    const b = backend('a');
    const full = profileCostModel.estimate(input({ backend: b, state: { inFlight: 3, healthy: true } }));
    const slow = profileCostModel.estimate(input({ backend: b, state: { inFlight: 3, healthy: true }, clockFraction: 0.7 }));
    expect(slow.tbtMs / full.tbtMs).toBeCloseTo(1 + 0.05 * (1 / 0.7 - 1), 9);
    expect(slow.ttftMs).toBeGreaterThan(full.ttftMs * 1.2);
    expect(slow.energyJ).toBeLessThan(full.energyJ * 0.8);
  });

  it('prefill load stretches the time between tokens', () => {
    const b = backend('a');
    const quiet = profileCostModel.estimate(input({ backend: b, state: { inFlight: 3, healthy: true } }));
    // Prompt tokens at a rate that fills half of every second with prefill chunks of 512 tokens.
    const perToken = prefillMs(b.profile, 512) / 512;
    const busy = profileCostModel.estimate(input({ backend: b, state: { inFlight: 3, healthy: true }, promptTokensPerS: 500 / perToken }));
    expect(busy.tbtMs / quiet.tbtMs).toBeCloseTo(2, 9);
  });

  it('a prompt waits for the prompts sent before it, prefilled a chunk a step between decode steps', () => {
    const b = backend('a');
    const running = { inFlight: 4, healthy: true };
    const alone = profileCostModel.estimate(input({ backend: b, state: running }));
    const behind = profileCostModel.estimate(input({ backend: b, state: running, prefillBacklogTokens: 2_048 }));
    // 2×A100: a step prefills 512 tokens (196 ms) and decodes the batch of 4.
    const step = 196 + decodeStepMs(b.profile, 4);
    expect(prefillTokensPerMs(b, 4, 1)).toBeCloseTo(512 / step, 12);
    expect(alone.ttftMs).toBeCloseTo(step, 9);
    expect(behind.ttftMs).toBeCloseTo(5 * step, 9);
    expect(behind.tbtMs).toBe(alone.tbtMs);
    // A larger chunk drains the same backlog in fewer steps: 2,560 tokens in 1.25 steps of 2,048 (687 ms).
    const wide = backend('w', { prefillChunkTokens: 2_048 });
    const wideStep = 687 + decodeStepMs(b.profile, 4);
    expect(profileCostModel.estimate(input({ backend: wide, state: running, prefillBacklogTokens: 2_048 })).ttftMs).toBeCloseTo(1.25 * wideStep, 9);
  });

  it('a backend observed to run slow has its latencies scaled by the calibration factor', () => {
    const b = backend('a');
    const modelled = profileCostModel.estimate(input({ backend: b, state: { inFlight: 3, healthy: true } }));
    const slow = profileCostModel.estimate(input({ backend: b, state: { inFlight: 3, healthy: true }, latencyFactor: 1.5 }));
    expect(slow.tbtMs / modelled.tbtMs).toBeCloseTo(1.5, 9);
    expect(slow.ttftMs / modelled.ttftMs).toBeCloseTo(1.5, 9);
    expect(slow.e2eMs / modelled.e2eMs).toBeCloseTo(1.5, 9);
  });

  it('a backend still booting (or powered off) adds the time until it can serve to the wait and the first token', () => {
    const ready = profileCostModel.estimate(input());
    const booting = profileCostModel.estimate(input({ readyInMs: 120_000 }));
    expect(booting.waitMs).toBe(ready.waitMs + 120_000);
    expect(booting.ttftMs).toBe(ready.ttftMs + 120_000);
    expect(booting.e2eMs).toBe(ready.e2eMs + 120_000);
    expect(booting.energyJ).toBe(ready.energyJ);
  });

  it('carbon follows the intensity it is given', () => {
    const clean = profileCostModel.estimate(input({ gramsPerKWh: 50 }));
    const dirty = profileCostModel.estimate(input({ gramsPerKWh: 500 }));
    expect(dirty.carbonG / clean.carbonG).toBeCloseTo(10, 9);
    expect(dirty.energyJ).toBe(clean.energyJ);
  });

  it('a saturated backend adds queue wait, and sharing a batch lowers each request\'s energy', () => {
    const b = backend('a', { maxConcurrency: 4 });
    const idle = profileCostModel.estimate(input({ backend: b }));
    const busy = profileCostModel.estimate(input({ backend: b, state: { inFlight: 4, healthy: true }, queued: 4 }));
    expect(busy.waitMs).toBeGreaterThan(0);
    expect(busy.ttftMs).toBeGreaterThan(idle.ttftMs);
    expect(busy.energyJ).toBeLessThan(idle.energyJ);
  });
});

describe('profile cost model: queueing and the clock', () => {
  it('waits behind the requests ahead, maxConcurrency at a time, each about one service time', () => {
    const b = backend('a', { maxConcurrency: 4 });
    const at = (inFlight: number, queued: number) => {
      const est = profileCostModel.estimate(input({ backend: b, state: { inFlight, healthy: true }, queued }));
      return est.waitMs / (est.e2eMs - est.waitMs);
    };
    expect(at(3, 0)).toBe(0);
    expect(at(4, 0)).toBeCloseTo(0.25, 12);
    expect(at(4, 2)).toBeCloseTo(0.75, 12);
    expect(at(2, 5)).toBeCloseTo(1, 12);
  });

  it('at a lower clock, prompts sent lately stretch the time between tokens by their slower prefill', () => {
    const b = backend('a');
    const f = DEFAULT_FREQUENCY_MODEL;
    const est = profileCostModel.estimate(input({ backend: b, promptTokensPerS: 1_000, clockFraction: 0.7 }));
    const share = (1_000 * (prefillMs(b.profile, 512) / 512) * f.prefillTime(0.7)) / 1_000;
    expect(est.tbtMs).toBeCloseTo((decodeStepMs(b.profile, 1) * f.decodeTime(0.7)) / (1 - share), 9);
  });

  it('at a lower clock, a prompt’s chunk step takes the slower prefill plus the slower decode of the running batch', () => {
    const b = backend('a');
    const f = DEFAULT_FREQUENCY_MODEL;
    const est = profileCostModel.estimate(input({ backend: b, state: { inFlight: 3, healthy: true }, clockFraction: 0.7 }));
    const stepMs = prefillMs(b.profile, 512) * f.prefillTime(0.7) + decodeStepMs(b.profile, 3) * f.decodeTime(0.7);
    expect(est.ttftMs).toBeCloseTo(stepMs, 9);
    expect(prefillTokensPerMs(b, 3, 0.7)).toBeCloseTo(512 / stepMs, 12);
    expect(prefillTokensPerMs(b, 0, 0.7)).toBeCloseTo(512 / (prefillMs(b.profile, 512) * f.prefillTime(0.7)), 12);
  });
});
