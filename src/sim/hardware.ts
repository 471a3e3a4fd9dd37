import { type Rng, seededRng } from '../clock.js';
import { DEFAULT_FREQUENCY_MODEL, frequencyModel, type FrequencyModel } from '../cost/frequency.js';
import { BUILTIN_PROFILES, type Curve, decodeUtilisation, type InstanceProfile, interpolate } from '../cost/profiles.js';
import { DEFAULT_BOOT_MS } from '../plan/plan.js';
import type { FleetSpec } from './fleet.js';

/**
 * What a simulated instance really is: the ground truth the simulator runs on, which the router
 * never reads. The router costs requests with its own model (the built-in profiles, the default
 * frequency model, the b / (b + 4) power curve); when the simulated hardware differs, the router
 * only learns it from what it observes (latency calibration), as it would on a real fleet.
 */
export interface Hardware {
  /** Step and prefill times and power levels. */
  readonly profile: InstanceProfile;
  /** How the SM clock changes step times and power. */
  readonly frequency: FrequencyModel;
  /** Fraction of the way from idle to full decode power at a batch size (the small-batch power curve). */
  readonly decodePowerShare: (batch: number) => number;
  /** Time a powered-off instance takes to serve again: power-on, driver, model load (ms). */
  readonly bootMs: number;
}

/**
 * How far each instance's truth is drawn from the router's model, as multipliers [low, high] drawn
 * uniformly per instance (and per quantity). Assumptions, stated here once:
 * - step and prefill times 0.9–1.25: Splitwise's medians (our profiles) against the same GPU and
 *   model served by other stacks differ by more than this (ML.ENERGY's Llama-3.1-70B on 4×H100 decodes
 *   at batch 8 in 16.6 ms, half our 4×H100 figure); a fleet of one stack varies less, and instances
 *   are more often slower than a benchmark's than faster (thermals, older drivers, fragmentation);
 * - idle power 0.8–1.3 and busy power 0.9–1.1: idle draw depends on the host and the persistence
 *   settings (NVIDIA's specifications give no idle figure); busy power is pinned by the power limit;
 * - the frequency response's decode sensitivity 0.02–0.1, prefill 0.8–1.0 and power exponent
 *   1.3–1.8 around the defaults 0.05 / 0.9 / 1.5 (src/cost/frequency.ts: no public calibration).
 */
export interface HardwareBounds {
  readonly stepTime: readonly [number, number];
  readonly prefillTime: readonly [number, number];
  readonly idlePower: readonly [number, number];
  readonly busyPower: readonly [number, number];
  readonly decodeSensitivity: readonly [number, number];
  readonly prefillSensitivity: readonly [number, number];
  readonly powerExponent: readonly [number, number];
}

export const DEFAULT_HARDWARE_BOUNDS: HardwareBounds = Object.freeze<HardwareBounds>({
  stepTime: [0.9, 1.25],
  prefillTime: [0.9, 1.25],
  idlePower: [0.8, 1.3],
  busyPower: [0.9, 1.1],
  decodeSensitivity: [0.02, 0.1],
  prefillSensitivity: [0.8, 1.0],
  powerExponent: [1.3, 1.8],
});

/** The router's own model as hardware: what the simulator ran on before it had a truth of its own. */
export function modelHardware(mode: string, bootMs = DEFAULT_BOOT_MS): Hardware {
  return Object.freeze({ profile: profileOf(mode), frequency: DEFAULT_FREQUENCY_MODEL, decodePowerShare: decodeUtilisation, bootMs });
}

export interface PerturbOptions {
  readonly bounds?: HardwareBounds;
  /** The small-batch power curve (share of idle → decode power against batch); default the router's b / (b + 4). */
  readonly powerCurve?: Curve;
  readonly bootMs?: number;
}

/** One instance's truth drawn around the router's profile for `mode`. */
export function perturbedHardware(mode: string, rng: Rng, options: PerturbOptions = {}): Hardware {
  const bounds = options.bounds ?? DEFAULT_HARDWARE_BOUNDS;
  const draw = ([low, high]: readonly [number, number]) => low + (high - low) * rng();
  const base = profileOf(mode);
  const step = draw(bounds.stepTime);
  const prefill = draw(bounds.prefillTime);
  const idle = draw(bounds.idlePower);
  const busy = draw(bounds.busyPower);
  const scale = (curve: Curve, by: number): Curve => curve.map(([x, y]) => [x, y * by] as const);
  const profile: InstanceProfile = Object.freeze({
    ...base,
    idleW: base.idleW * idle,
    // Busy power never falls below the (perturbed) idle power.
    prefillW: Math.max(base.prefillW * busy, base.idleW * idle),
    decodeW: Math.max(base.decodeW * busy, base.idleW * idle),
    decodeStepMs: scale(base.decodeStepMs, step),
    prefillMs: scale(base.prefillMs, prefill),
  });
  const frequency = frequencyModel({
    decodeSensitivity: draw(bounds.decodeSensitivity),
    prefillSensitivity: draw(bounds.prefillSensitivity),
    powerExponent: draw(bounds.powerExponent),
  });
  const curve = options.powerCurve;
  return Object.freeze({
    profile,
    frequency,
    decodePowerShare: curve ? (batch: number) => (batch <= 0 ? 0 : Math.min(1, Math.max(0, interpolate(curve, batch)))) : decodeUtilisation,
    bootMs: options.bootMs ?? DEFAULT_BOOT_MS,
  });
}

export interface FleetHardwareOptions extends PerturbOptions {
  /** `model`: every instance is exactly the router's model; `perturbed` (default): drawn per instance. */
  readonly truth?: 'model' | 'perturbed';
  readonly seed?: number;
}

/** Each backend's truth, drawn in backend order from one seeded stream: same seed, same fleet. */
export function fleetHardware(fleet: FleetSpec, options: FleetHardwareOptions = {}): Map<string, Hardware> {
  const rng = seededRng(options.seed ?? 1);
  const out = new Map<string, Hardware>();
  for (const b of fleet.backends) {
    out.set(b.id, options.truth === 'model' ? modelHardware(b.mode, options.bootMs) : perturbedHardware(b.mode, rng, options));
  }
  return out;
}

function profileOf(mode: string): InstanceProfile {
  const profile = BUILTIN_PROFILES[mode];
  if (!profile) throw new RangeError(`unknown mode \`${mode}\``);
  return profile;
}
