/**
 * Power and speed of one inference instance (all its GPUs together), as curves the cost model and
 * the simulated backend both read. Built-in entries restate published figures; the scaling between
 * parallelism modes is our assumption and is labelled where it is made.
 */
export type Curve = readonly (readonly [x: number, y: number])[];

export interface InstanceProfile {
  /** Parallelism mode, e.g. `4xA100`. */
  readonly id: string;
  readonly gpu: string;
  readonly gpus: number;
  /** Instance power with nothing running (W). */
  readonly idleW: number;
  /** Instance power while prefilling (W). */
  readonly prefillW: number;
  /** Instance power approached by decoding at large batch (W). */
  readonly decodeW: number;
  /** Decode step time (ms) against batch size; linear between points, extrapolated past the last. */
  readonly decodeStepMs: Curve;
  /** Prefill time (ms) at batch 1 against prompt tokens; linear between points and through 0. */
  readonly prefillMs: Curve;
  /** Sequences the instance batches at once. */
  readonly maxBatch: number;
}

/**
 * Linear interpolation through `curve` (ascending x), extending the end segments' slopes. Points are
 * read by index, not destructured: `const [x, y] = point` runs the iterator protocol, and was the
 * largest line of costing in bench:decision's CPU profile (1,000 backends).
 */
export function interpolate(curve: Curve, x: number): number {
  const first = curve[0];
  if (!first) throw new RangeError('empty curve');
  if (curve.length === 1) return first[1];
  let i = 1;
  while (i < curve.length - 1 && x > curve[i]![0]) i++;
  const p0 = curve[i - 1]!;
  const p1 = curve[i]!;
  const x0 = p0[0];
  const y0 = p0[1];
  return y0 + ((p1[1] - y0) * (x - x0)) / (p1[0] - x0);
}

/**
 * Fraction of the way from idle to full decode power at a given batch: b / (b + 4). Assumption,
 * shaped after ML.ENERGY's H100 measurements (power rises steeply up to batch ~8, then saturates);
 * no public source gives this per mode.
 */
export function decodeUtilisation(batch: number): number {
  return batch <= 0 ? 0 : batch / (batch + 4);
}

export function decodePowerW(profile: InstanceProfile, batch: number): number {
  return profile.idleW + (profile.decodeW - profile.idleW) * decodeUtilisation(batch);
}

/**
 * Decode power at a batch when the clock scales the above-idle power by `dynamic` (see
 * FrequencyModel.dynamicPower), with `share` the idle-to-full curve: what a simulated instance draws
 * and what the fluid bound charges, from one formula.
 */
export function decodePowerAtW(profile: InstanceProfile, batch: number, dynamic: number, share: (batch: number) => number = decodeUtilisation): number {
  return profile.idleW + (profile.decodeW - profile.idleW) * share(batch) * dynamic;
}

export function decodeStepMs(profile: InstanceProfile, batch: number): number {
  return interpolate(profile.decodeStepMs, Math.max(1, batch));
}

/**
 * Requests per second an instance sustains with continuous batching: a batch of `batch` produces
 * `batch` tokens per decode step, and each request also costs one prefill during which nothing
 * decodes, so x requests/s need x·prefill seconds of prefill and x·outputTokens tokens:
 *   x = (batch / step) / (outputTokens + prefill · batch / step).
 */
export function throughputRps(batch: number, stepMs: number, prefillTimeMs: number, outputTokens: number): number {
  const tokensPerS = (batch / stepMs) * 1000;
  return tokensPerS / (outputTokens + (prefillTimeMs / 1000) * tokensPerS);
}

export function prefillMs(profile: InstanceProfile, promptTokens: number): number {
  const first = profile.prefillMs[0]!;
  const x0 = first[0];
  const y0 = first[1];
  // Below the first measured point, prefill time shrinks in proportion to the prompt.
  return promptTokens <= x0 ? (y0 * Math.max(0, promptTokens)) / x0 : interpolate(profile.prefillMs, promptTokens);
}

// Splitwise (Llama-2-70B, tensor parallel 2, median of 5): per-GPU power and step times.
const A100_TP2 = {
  idleW: 63, prefillW: 400, decodeW: 250,
  decodeStepMs: [[1, 54.9], [8, 61.7], [16, 65.6], [32, 72.2]] as Curve,
  prefillMs: [[512, 196], [2048, 687], [8192, 2990]] as Curve,
};
const H100_TP2 = {
  idleW: 75, prefillW: 700, decodeW: 380,
  decodeStepMs: [[1, 37.0], [8, 40.4], [16, 42.0], [32, 52.3]] as Curve,
  prefillMs: [[512, 84], [2048, 310], [8192, 1339]] as Curve,
};

/**
 * Wider tensor parallelism speeds steps up by FREESH's published TBT ratios against 2×A100 (SS
 * type: 4× 46.8/59.6, 8× 33.7/59.6); power scales with the GPU count. Assumption: the same ratio
 * holds for prefill and for H100.
 */
function mode(id: string, gpu: string, gpus: number, base: typeof A100_TP2, speedup: number, maxBatch: number): InstanceProfile {
  const scale = (curve: Curve): Curve => curve.map(([x, y]) => [x, y * speedup] as const);
  return Object.freeze({
    id, gpu, gpus, maxBatch,
    idleW: base.idleW * gpus,
    prefillW: base.prefillW * gpus,
    decodeW: base.decodeW * gpus,
    decodeStepMs: scale(base.decodeStepMs),
    prefillMs: scale(base.prefillMs),
  });
}

export const BUILTIN_PROFILES: Readonly<Record<string, InstanceProfile>> = Object.freeze({
  '2xA100': mode('2xA100', 'A100-80GB', 2, A100_TP2, 1, 64),
  '4xA100': mode('4xA100', 'A100-80GB', 4, A100_TP2, 46.773 / 59.6, 128),
  '8xA100': mode('8xA100', 'A100-80GB', 8, A100_TP2, 33.7 / 59.6, 256),
  '2xH100': mode('2xH100', 'H100-80GB', 2, H100_TP2, 1, 128),
  '4xH100': mode('4xH100', 'H100-80GB', 4, H100_TP2, 46.773 / 59.6, 256),
});
