/**
 * How the SM clock changes an instance's speed and power. ASSUMPTION, in one place on purpose: no
 * public source gives calibrated per-frequency coefficients for these modes. The shape follows what
 * is published (../shared/data/profiles/splitwise-a100-h100.json): decode is memory-bound, so large
 * clock cuts cost only a few percent of decode time; prefill is compute-bound and slows almost in
 * proportion; dynamic power falls faster than linearly with the clock (voltage scales with it), so
 * energy against clock is U-shaped once idle power is counted. To be recalibrated from the agent's
 * telemetry when real GPUs report it.
 */
export interface FrequencyModel {
  /** Lowest clock fraction the model covers. */
  readonly minFraction: number;
  /** Multiplier on decode step time at clock fraction f (1 at f = 1). */
  decodeTime(fraction: number): number;
  /** Multiplier on prefill time at clock fraction f. */
  prefillTime(fraction: number): number;
  /** Multiplier on the dynamic (above-idle) part of power at clock fraction f. */
  dynamicPower(fraction: number): number;
}

export interface FrequencyModelParameters {
  /** Share of decode time that scales with 1/f. Default 0.05 (published: 1-6% slower at large cuts). */
  readonly decodeSensitivity?: number;
  /** Share of prefill time that scales with 1/f. Default 0.9. */
  readonly prefillSensitivity?: number;
  /** Dynamic power ∝ f^exponent. Default 1.5 (gives ~30% decode energy saved at f = 0.7, near the published 32%). */
  readonly powerExponent?: number;
  /** Default 0.5. */
  readonly minFraction?: number;
}

export function frequencyModel(parameters: FrequencyModelParameters = {}): FrequencyModel {
  const decode = parameters.decodeSensitivity ?? 0.05;
  const prefill = parameters.prefillSensitivity ?? 0.9;
  const exponent = parameters.powerExponent ?? 1.5;
  const minFraction = parameters.minFraction ?? 0.5;
  const clamp = (f: number) => Math.min(1, Math.max(minFraction, f));
  return Object.freeze({
    minFraction,
    decodeTime: (f: number) => 1 + decode * (1 / clamp(f) - 1),
    prefillTime: (f: number) => 1 + prefill * (1 / clamp(f) - 1),
    dynamicPower: (f: number) => clamp(f) ** exponent,
  });
}

export const DEFAULT_FREQUENCY_MODEL: FrequencyModel = frequencyModel();
