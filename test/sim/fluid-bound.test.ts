import { describe, expect, it } from 'vitest';
import { type CarbonSeries, constantSeries, stepSeries } from '../../src/carbon/series.js';
import { frequencyModel } from '../../src/cost/frequency.js';
import { type Curve, decodeStepMs } from '../../src/cost/profiles.js';
import type { FleetSpec } from '../../src/sim/fleet.js';
import { fluidBound, type FluidBoundOptions, operatingPoints } from '../../src/sim/fluid-bound.js';
import type { Hardware } from '../../src/sim/hardware.js';
import { fleetHardware, modelHardware } from '../../src/sim/hardware.js';
import { simulate } from '../../src/sim/simulator.js';
import { buildWorkload } from '../../src/sim/workload.js';
import type { Trace } from '../../src/sim/trace.js';

/**
 * Hardware simple enough to compute by hand: decode power does not depend on the batch, so decode
 * makes batch / stepMs tokens per ms at `decodeW`; prefill makes 512 tokens per `prefill512Ms`.
 */
function flatHardware(o: { idleW: number; prefillW: number; decodeW: number; stepMs: number | Curve; prefill512Ms: number; maxBatch: number }): Hardware {
  const step: Curve = typeof o.stepMs === 'number' ? [[1, o.stepMs], [2, o.stepMs]] : o.stepMs;
  return {
    profile: { id: 'flat', gpu: 'g', gpus: 1, idleW: o.idleW, prefillW: o.prefillW, decodeW: o.decodeW, decodeStepMs: step, prefillMs: [[512, o.prefill512Ms]], maxBatch: o.maxBatch },
    frequency: frequencyModel(),
    decodePowerShare: () => 1,
    bootMs: 0,
  };
}

const FLAT = flatHardware({ idleW: 100, prefillW: 400, decodeW: 300, stepMs: 50, prefill512Ms: 100, maxBatch: 8 });
/** Half FLAT's power at the same speeds. */
const FRUGAL = flatHardware({ idleW: 50, prefillW: 200, decodeW: 150, stepMs: 50, prefill512Ms: 100, maxBatch: 8 });

/** `count` requests evenly from 0 to `lastMs`, each with the given token counts. */
function evenTrace(count: number, lastMs: number, promptTokens: number, outputTokens: number, firstMs = 0): Trace {
  const requests = Array.from({ length: count }, (_, k) => ({ arrivalMs: firstMs + ((lastMs - firstMs) * k) / Math.max(1, count - 1), promptTokens, outputTokens }));
  return { name: 't', requests, durationMs: lastMs };
}

function oneSite(pue = 1): FleetSpec {
  return { model: 'm', sites: [{ id: 's', region: 'X', gramsPerKWh: 100, pue }], backends: [{ id: 'b', site: 's', mode: 'flat', maxConcurrency: 8 }] };
}

const TWO_SITES: FleetSpec = {
  model: 'm',
  sites: [
    { id: 'clean', region: 'C', gramsPerKWh: 50, pue: 1.2 },
    { id: 'dirty', region: 'D', gramsPerKWh: 500, pue: 1 },
  ],
  backends: [
    { id: 'c', site: 'clean', mode: 'flat', maxConcurrency: 8 },
    { id: 'd', site: 'dirty', mode: 'flat', maxConcurrency: 8 },
  ],
};

const J = 1 / 3.6e6;

function options(o: Partial<FluidBoundOptions> & Pick<FluidBoundOptions, 'trace' | 'fleet' | 'hardware'>): FluidBoundOptions {
  return { carbon: new Map(), objective: 'energy', parkedPower: 'idle', windowMs: 60_000, clockLevels: [1], ...o };
}

describe('fluidBound', () => {
  // 11 requests in one 60-s window, 512 prompt tokens and 101 output tokens each (100 decode steps).
  const trace = evenTrace(11, 60_000, 512, 101);
  const hardware = new Map([['b', FLAT]]);

  it('equals the hand-computed schedule when it is the only one, and lies below it with lower clocks available', async () => {
    // Prefill 11 × 100 ms at 400 W, decode 1,100 tokens at batch 8 (0.16 tokens/ms: 6,875 ms) at
    // 300 W, idle the rest of the 60 s at 100 W; PUE 1.5.
    const hand = (400 * 1.1 + 300 * 6.875 + 100 * (60 - 1.1 - 6.875)) * 1.5 * J;
    const only = await fluidBound(options({ trace, fleet: oneSite(1.5), hardware }));
    expect(only).toMatchObject({ status: 'optimal', windows: 1, unservedTokens: 0 });
    expect(only.energyKWh).toBeCloseTo(hand, 9);
    expect(only.carbonKg).toBeCloseTo((hand * 100) / 1000, 9);
    const clocks = await fluidBound(options({ trace, fleet: oneSite(1.5), hardware, clockLevels: [1, 0.85, 0.7, 0.5] }));
    expect(clocks.energyKWh).toBeLessThan(hand * 0.999);
    // Never below what idle power alone costs.
    expect(clocks.energyKWh).toBeGreaterThan(100 * 60 * 1.5 * J);
  });

  it('with one site clean and one dirty, the carbon-optimal bound serves everything at the clean site', async () => {
    const both = new Map([['c', FLAT], ['d', FLAT]]);
    const carbon = new Map<string, CarbonSeries>([['clean', constantSeries(50)], ['dirty', constantSeries(500)]]);
    const bound = await fluidBound(options({ trace, fleet: TWO_SITES, hardware: both, carbon, objective: 'carbon', parkedPower: 'off' }));
    expect(bound.status).toBe('optimal');
    expect(bound.carbonKg).toBeCloseTo((50 * bound.energyKWh) / 1000, 12);
    // The clean site's work: prefill 1.1 s at 400 W and decode 6.875 s at 300 W, at its PUE of 1.2.
    expect(bound.energyKWh).toBeCloseTo((400 * 1.1 + 300 * 6.875) * 1.2 * J, 9);
  });

  it('bounds with parked instances off lie below those with them idle', async () => {
    for (const objective of ['energy', 'carbon'] as const) {
      const off = await fluidBound(options({ trace, fleet: oneSite(), hardware, objective, parkedPower: 'off', clockLevels: undefined }));
      const idle = await fluidBound(options({ trace, fleet: oneSite(), hardware, objective, parkedPower: 'idle', clockLevels: undefined }));
      expect(off.energyKWh).toBeLessThan(idle.energyKWh);
      expect(off.carbonKg).toBeLessThan(idle.carbonKg);
    }
  });

  it('doubling the demand within capacity raises the bound (exactly doubles it with parked instances off at one clock)', async () => {
    const double: Trace = { ...trace, requests: trace.requests.flatMap((r) => [r, r]) };
    for (const parkedPower of ['idle', 'off'] as const) {
      const once = await fluidBound(options({ trace, fleet: oneSite(), hardware, parkedPower }));
      const twice = await fluidBound(options({ trace: double, fleet: oneSite(), hardware, parkedPower }));
      expect(twice.status).toBe('optimal');
      expect(twice.energyKWh).toBeGreaterThan(once.energyKWh);
      if (parkedPower === 'off') expect(twice.energyKWh).toBeCloseTo(2 * once.energyKWh, 12);
    }
  });

  it('demand past capacity: status infeasible, the fewest tokens left unserved, the bound of serving the rest', async () => {
    // 11 × 3,000 decode tokens; one instance decodes 0.16 tokens/ms over the window and the tail
    // (120 s) less the 1.1 s its prompts take: 19,024 tokens.
    const heavy = evenTrace(11, 60_000, 512, 3001);
    const bound = await fluidBound(options({ trace: heavy, fleet: oneSite(), hardware }));
    expect(bound.status).toBe('infeasible');
    expect(bound.unservedTokens).toBeCloseTo(33_000 - 0.16 * (120_000 - 1100), 3);
    // Busy throughout both windows: prefill 1.1 s at 400 W, decode 118.9 s at 300 W.
    expect(bound.energyKWh).toBeCloseTo((400 * 1.1 + 300 * 118.9) * J, 9);
  });

  it('work spills into the next window, never into an earlier one', async () => {
    const carbonOf = (values: number[]) => new Map([['s', stepSeries(values, 60_000)]]);
    // Arrivals in the second window only: the clean first minute cannot be used.
    const late = evenTrace(11, 120_000, 512, 101, 60_000);
    const early = await fluidBound(options({ trace: late, fleet: oneSite(), hardware, carbon: carbonOf([10, 1000, 1000]), objective: 'carbon', parkedPower: 'off' }));
    expect(early.windows).toBe(2);
    expect(early.carbonKg).toBeCloseTo((1000 * early.energyKWh) / 1000, 12);
    // A clean tail takes the last window's work when there is time for it.
    const tail = await fluidBound(options({ trace: late, fleet: oneSite(), hardware, carbon: carbonOf([1000, 1000, 10]), objective: 'carbon', parkedPower: 'off' }));
    expect(tail.carbonKg).toBeCloseTo((10 * tail.energyKWh) / 1000, 12);
  });

  it('charges a window at the lowest intensity of any minute in it (the simulator charges each minute at its start)', async () => {
    const carbon = new Map([['s', stepSeries([300, 300, 60, 300, 300], 60_000)]]);
    const bound = await fluidBound(options({ trace: evenTrace(11, 300_000, 512, 101), fleet: oneSite(), hardware, carbon, windowMs: 300_000 }));
    expect(bound.carbonKg).toBeCloseTo((60 * bound.energyKWh) / 1000, 12);
  });

  it('the energy objective spends no more energy, and the carbon objective no more carbon, than the other', async () => {
    // The dirty site's instance needs half the power: the objectives pull apart.
    const mixed = new Map([['c', FLAT], ['d', FRUGAL]]);
    const carbon = new Map<string, CarbonSeries>([['clean', constantSeries(50)], ['dirty', constantSeries(500)]]);
    for (const parkedPower of ['idle', 'off'] as const) {
      const common = options({ trace, fleet: TWO_SITES, hardware: mixed, carbon, parkedPower, clockLevels: undefined });
      const energy = await fluidBound({ ...common, objective: 'energy' });
      const carbonOpt = await fluidBound({ ...common, objective: 'carbon' });
      expect(energy.energyKWh).toBeLessThan(carbonOpt.energyKWh);
      expect(carbonOpt.carbonKg).toBeLessThan(energy.carbonKg);
    }
  });

  it('leaves out decode points slower than the TBT limit', async () => {
    // Step time rises with batch: 50 ms at 1, 200 ms at 8; a 100-ms limit caps the batch at 3.
    const rising = new Map([['b', flatHardware({ idleW: 100, prefillW: 400, decodeW: 300, stepMs: [[1, 50], [8, 200]], prefill512Ms: 100, maxBatch: 8 })]]);
    const loose = await fluidBound(options({ trace, fleet: oneSite(), hardware: rising, parkedPower: 'off', tbtMs: 500 }));
    const tight = await fluidBound(options({ trace, fleet: oneSite(), hardware: rising, parkedPower: 'off', tbtMs: 100 }));
    expect(tight.energyKWh).toBeGreaterThan(loose.energyKWh);
    // Batch 3 at 92.86 ms: 1,100 tokens take 34,048 ms at 300 W, and prefill 1.1 s at 400 W.
    expect(tight.energyKWh).toBeCloseTo((400 * 1.1 + 300 * ((1100 / 3) * (50 + (150 * 2) / 7)) / 1000) * J, 9);
    // No decode point at all: every decode token is unserved, the prompts are still served.
    const none = await fluidBound(options({ trace, fleet: oneSite(), hardware: rising, parkedPower: 'off', tbtMs: 40 }));
    expect(none).toMatchObject({ status: 'infeasible', unservedTokens: 1100 });
    expect(none.energyKWh).toBeCloseTo(400 * 1.1 * J, 9);
  });

  it('a request of one output token needs no decode step: its first token comes out of its prefill', async () => {
    const bound = await fluidBound(options({ trace: evenTrace(11, 60_000, 512, 1), fleet: oneSite(), hardware, parkedPower: 'off' }));
    expect(bound.energyKWh).toBeCloseTo(400 * 1.1 * J, 9);
  });

  it('rejects a backend without hardware, an unknown site and an empty trace', async () => {
    await expect(fluidBound(options({ trace, fleet: oneSite(), hardware: new Map() }))).rejects.toThrow(RangeError);
    const lost: FleetSpec = { ...oneSite(), backends: [{ id: 'b', site: 'nowhere', mode: 'flat', maxConcurrency: 8 }] };
    await expect(fluidBound(options({ trace, fleet: lost, hardware }))).rejects.toThrow(/unknown site/);
    await expect(fluidBound(options({ trace: { name: 'e', requests: [], durationMs: 0 }, fleet: oneSite(), hardware }))).rejects.toThrow(RangeError);
  });
});

describe('fluidBound against the simulator', () => {
  it('lies below a simulated run of the same trace on the same fleet, in energy and in carbon', async () => {
    const fleet: FleetSpec = {
      model: 'm',
      sites: [
        { id: 'a', region: 'A', gramsPerKWh: 300 },
        { id: 'b', region: 'B', gramsPerKWh: 60, pue: 1.1 },
      ],
      backends: [
        { id: 'a0', site: 'a', mode: '2xA100', maxConcurrency: 16 },
        { id: 'b0', site: 'b', mode: '4xH100', maxConcurrency: 32 },
      ],
    };
    const requests = Array.from({ length: 150 }, (_, i) => ({ arrivalMs: i * 800, promptTokens: 100 + ((i * 389) % 1500), outputTokens: 1 + ((i * 53) % 400) }));
    const trace: Trace = { name: 'small', requests, durationMs: requests.at(-1)!.arrivalMs };
    const carbon = new Map<string, CarbonSeries>([['a', stepSeries([300, 200], 60_000)], ['b', constantSeries(60)]]);
    const run = await simulate({ fleet, workload: buildWorkload(trace), carbon, run: { name: 'll', policy: 'least-loaded', prediction: 'oracle' } });
    expect(run.records.every((r) => r.doneMs !== undefined && !r.rejected)).toBe(true);
    const hardware = fleetHardware(fleet, { truth: 'model' });
    const common = { trace, fleet, hardware, carbon, parkedPower: 'idle' as const, windowMs: 60_000 };
    const energy = await fluidBound({ ...common, objective: 'energy' });
    const carbonOpt = await fluidBound({ ...common, objective: 'carbon' });
    expect(energy.status).toBe('optimal');
    expect(energy.energyKWh).toBeLessThan(run.energyJ / 3.6e6);
    expect(carbonOpt.carbonKg).toBeLessThan(run.carbonG / 1000);
    // Not trivially: the bound is more than the idle power it cannot avoid.
    const idleKWh = ((126 * 1.2 + 300 * 1.1) * trace.durationMs) / 3.6e9;
    expect(energy.energyKWh).toBeGreaterThan(idleKWh);
  });
});

describe('operatingPoints', () => {
  it('keeps only points no mix of others beats: with power flat in the batch, the largest batch', () => {
    const points = operatingPoints(FLAT, 8, [1], 150);
    expect(points.filter((p) => p.kind === 'decode')).toEqual([{ kind: 'decode', tokensPerMs: 8 / 50, powerW: 300 }]);
    expect(points.filter((p) => p.kind === 'prefill')).toEqual([{ kind: 'prefill', tokensPerMs: 512 / 100, powerW: 400 }]);
  });

  it('keeps the fastest point of a real profile, and nothing a mix of the kept ones beats', () => {
    const hw = modelHardware('2xA100');
    const all = operatingPoints(hw, 32, [1, 0.85, 0.7, 0.5], 1e9);
    const kept = all.filter((p) => p.kind === 'decode');
    expect(Math.max(...kept.map((p) => p.tokensPerMs))).toBeCloseTo(32 / 72.2, 9);
    // Every batch at every clock costs at least the cheapest kept point's energy per token above idle.
    const best = Math.min(...kept.map((p) => (p.powerW - hw.profile.idleW) / p.tokensPerMs));
    for (const f of [1, 0.85, 0.7, 0.5]) {
      for (let b = 1; b <= 32; b++) {
        const rate = b / (decodeStepMs(hw.profile, b) * hw.frequency.decodeTime(f));
        const extra = (hw.profile.decodeW - hw.profile.idleW) * hw.decodePowerShare(b) * hw.frequency.dynamicPower(f);
        expect(extra / rate).toBeGreaterThanOrEqual(best - 1e-9);
      }
    }
  });
});

