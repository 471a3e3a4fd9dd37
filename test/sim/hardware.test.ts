import { describe, expect, it } from 'vitest';
import { seededRng } from '../../src/clock.js';
import { BUILTIN_PROFILES, decodeUtilisation } from '../../src/cost/profiles.js';
import { DEFAULT_BOOT_MS } from '../../src/plan/plan.js';
import { FREESH_FLEET } from '../../src/sim/fleet.js';
import { DEFAULT_HARDWARE_BOUNDS, fleetHardware, modelHardware, perturbedHardware } from '../../src/sim/hardware.js';

describe('simulated hardware', () => {
  it('the model truth is the router\'s own profile, clock response and power curve', () => {
    const h = modelHardware('4xA100');
    expect(h.profile).toBe(BUILTIN_PROFILES['4xA100']);
    expect(h.decodePowerShare).toBe(decodeUtilisation);
    expect(h.frequency.decodeTime(0.7)).toBeCloseTo(1 + 0.05 * (1 / 0.7 - 1), 12);
    expect(h.bootMs).toBe(DEFAULT_BOOT_MS);
    expect(() => modelHardware('3xTPU')).toThrow(RangeError);
  });

  it('perturbed hardware stays within the stated bounds for every quantity', () => {
    const rng = seededRng(3);
    const base = BUILTIN_PROFILES['2xH100']!;
    const b = DEFAULT_HARDWARE_BOUNDS;
    for (let i = 0; i < 200; i++) {
      const h = perturbedHardware('2xH100', rng);
      const within = (v: number, [lo, hi]: readonly [number, number]) => v >= lo - 1e-12 && v <= hi + 1e-12;
      expect(within(h.profile.decodeStepMs[0]![1] / base.decodeStepMs[0]![1], b.stepTime)).toBe(true);
      expect(within(h.profile.prefillMs[0]![1] / base.prefillMs[0]![1], b.prefillTime)).toBe(true);
      expect(within(h.profile.idleW / base.idleW, b.idlePower)).toBe(true);
      expect(h.profile.decodeW).toBeGreaterThanOrEqual(h.profile.idleW);
      // Decode time at half clock: 1 + s·(1/0.5 − 1) = 1 + s for the drawn sensitivity s.
      expect(within(h.frequency.decodeTime(0.5) - 1, b.decodeSensitivity)).toBe(true);
      expect(within(Math.log(h.frequency.dynamicPower(0.5)) / Math.log(0.5), b.powerExponent)).toBe(true);
    }
  });

  it('a measured power curve replaces b / (b + 4), clamped to [0, 1] and 0 at batch 0', () => {
    const h = perturbedHardware('2xA100', seededRng(1), { powerCurve: [[1, 0.75], [64, 1], [128, 1.01]] });
    expect(h.decodePowerShare(1)).toBe(0.75);
    expect(h.decodePowerShare(0)).toBe(0);
    expect(h.decodePowerShare(200)).toBe(1);
  });

  it('a fleet\'s hardware is drawn per backend from the seed: same seed, same fleet; another seed, another', () => {
    const a = fleetHardware(FREESH_FLEET, { seed: 5 });
    const b = fleetHardware(FREESH_FLEET, { seed: 5 });
    const c = fleetHardware(FREESH_FLEET, { seed: 6 });
    expect([...a.keys()]).toEqual(FREESH_FLEET.backends.map((x) => x.id));
    const idle = (m: typeof a) => [...m.values()].map((h) => h.profile.idleW);
    expect(idle(a)).toEqual(idle(b));
    expect(idle(a)).not.toEqual(idle(c));
    expect(fleetHardware(FREESH_FLEET, { truth: 'model' }).get('loc3-a100-0')!.profile).toBe(BUILTIN_PROFILES['8xA100']);
  });
});
