/**
 * Per-serving-model bias corrections of the length model, in log(1 + tokens). Each is told the
 * error of every observed answer (true log length minus the uncorrected prediction) and holds the
 * correction to add to the next prediction. Both are deterministic, O(1) or a small fixed memory
 * per model, and cost well under a microsecond an observation.
 */

/** Which correction learns a serving model's bias: see `MedianBias` and `MeanBias`. */
export type CalibrationKind = 'median' | 'mean' | 'none';

export interface BiasCalibration {
  /** The correction to add to the uncorrected log prediction. */
  readonly value: number;
  observe(error: number): void;
}

/**
 * An exponentially weighted mean of the errors: `value += rate × (error − value)`. It converges to
 * the MEAN log error, which a few very long or very short answers drag about: on the held-out
 * answers it made the error worse for half the models (bench/README.md, length predictor).
 */
export class MeanBias implements BiasCalibration {
  value = 0;
  readonly #rate: number;

  constructor(rate: number) {
    this.#rate = rate;
  }

  observe(error: number): void {
    if (Number.isFinite(error)) this.value += this.#rate * (error - this.value);
  }
}

/**
 * The MEDIAN of the last `window` errors together with `prior` errors of zero — the trained model's
 * own prediction counted as that many answers it got exactly right. The median shrugs off the
 * heavy tails of log errors (an empty answer, an essay where a paragraph was expected); the prior
 * zeros keep a model the training already calibrated where it is until its errors lean to one side
 * in more than `prior` answers, and leave a first few answers from moving the correction at all.
 * Memory: two arrays of `window` numbers; an observation costs a binary search and a shift of at
 * most `window` entries.
 */
export class MedianBias implements BiasCalibration {
  value = 0;
  readonly #prior: number;
  /** The last `window` errors in arrival order (a ring), and the same errors sorted. */
  readonly #ring: Float64Array;
  readonly #sorted: Float64Array;
  #count = 0;
  #next = 0;

  constructor(window: number, prior: number) {
    if (!(Number.isInteger(window) && window >= 1)) throw new RangeError(`calibration window must be a positive integer, got ${window}`);
    if (!(Number.isInteger(prior) && prior >= 0)) throw new RangeError(`calibration prior must be a non-negative integer, got ${prior}`);
    this.#ring = new Float64Array(window);
    this.#sorted = new Float64Array(window);
    this.#prior = prior;
  }

  observe(error: number): void {
    if (!Number.isFinite(error)) return;
    const sorted = this.#sorted;
    let n = this.#count;
    if (n === this.#ring.length) {
      // Drop the oldest error from the sorted copy: any entry equal to it will do.
      const at = lowerBound(sorted, n, this.#ring[this.#next]!);
      sorted.copyWithin(at, at + 1, n);
      n--;
    }
    const at = lowerBound(sorted, n, error);
    sorted.copyWithin(at + 1, at, n);
    sorted[at] = error;
    this.#count = n + 1;
    this.#ring[this.#next] = error;
    this.#next = (this.#next + 1) % this.#ring.length;
    this.value = this.#median();
  }

  /** The median of the sorted errors merged with `prior` zeros, without building the merged list. */
  #median(): number {
    const n = this.#count;
    const k = this.#prior;
    const total = n + k;
    if (total === 0) return 0;
    const negatives = lowerBound(this.#sorted, n, 0);
    const at = (i: number) => (i < negatives ? this.#sorted[i]! : i < negatives + k ? 0 : this.#sorted[i - k]!);
    return (at((total - 1) >> 1) + at(total >> 1)) / 2;
  }
}

/** The first index in `sorted[0, n)` whose value is not below `x`. */
function lowerBound(sorted: Float64Array, n: number, x: number): number {
  let lo = 0;
  let hi = n;
  while (lo < hi) {
    const mid = (lo + hi) >> 1;
    if (sorted[mid]! < x) lo = mid + 1;
    else hi = mid;
  }
  return lo;
}
