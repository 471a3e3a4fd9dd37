import { REQUEST_TYPES, type RequestType } from '../request/request-type.js';

/** Forecast requests/s per type for each of the coming steps. */
export type StepForecast = readonly Readonly<Record<RequestType, number>>[];

/**
 * An external forecast: the rates per type for `steps` steps of `stepMs` from the step that holds
 * `nowMs`. Contract: synchronous, never throws, rates non-negative (a negative one is read as 0).
 */
export type ExternalForecast = (nowMs: number, steps: number, stepMs: number) => StepForecast;

export interface SeasonalForecasterOptions {
  readonly stepMs: number;
  /** Steps in a season. Default 288: a day of 5-minute steps. */
  readonly seasonSteps?: number;
  /** Completed steps whose mean is the recent level. Default 6: a 30-minute window of 5-minute steps. */
  readonly levelSteps?: number;
  /** Router-clock time history starts (ms); steps are counted from 0 here. Default 0. */
  readonly originMs?: number;
}

/** How far forecasts were off: each step's last forecast against its complete count. */
export interface ForecastError {
  readonly steps: number;
  /** Mean over steps of Σ types |forecast − observed| (req/s). */
  readonly meanAbsErrorRps: number;
  /** Σ |forecast − observed| / Σ observed over all steps and types; NaN before any arrival. */
  readonly relativeError: number;
}

const zeros = (): Record<RequestType, number> => ({ SS: 0, SL: 0, LS: 0, LL: 0 });

/**
 * Per-step, per-type demand forecast from arrival counts: seasonal naive with a level correction.
 * The rate at a coming step i is the rate at step i one season earlier, shifted by how much the
 * recent level (mean of the last `levelSteps` complete steps) differs from the level of the same
 * steps a season earlier: r̂(i) = max(0, r(i − P) + L(now) − L(now − P)). The seasonal term carries
 * the daily shape (the FREESH traces repeat by time of day); the level term carries growth or a
 * quiet day. Until a full season and its level span are observed, every coming step gets the recent
 * level (0 before any step is complete). Memory: one count per type for P + levelSteps steps.
 */
export class SeasonalForecaster {
  readonly #stepMs: number;
  readonly #season: number;
  readonly #levelSteps: number;
  readonly #originMs: number;
  readonly #span: number;
  /** Counts per step, in a ring indexed by step mod span. */
  readonly #counts: Record<RequestType, number>[];
  /** The step each ring slot holds; -1 when empty. */
  readonly #slotStep: Float64Array;
  #latestStep = -1;
  /** The forecast made for each coming step, kept until the step completes and can be scored. */
  readonly #pending = new Map<number, Record<RequestType, number>>();
  #scoredSteps = 0;
  #absError = 0;
  #observed = 0;

  constructor(options: SeasonalForecasterOptions) {
    if (!(options.stepMs > 0)) throw new RangeError(`forecast: stepMs must be positive, got ${options.stepMs}`);
    this.#stepMs = options.stepMs;
    this.#season = options.seasonSteps ?? 288;
    this.#levelSteps = options.levelSteps ?? 6;
    if (!(Number.isInteger(this.#season) && this.#season >= 1)) throw new RangeError(`forecast: seasonSteps must be a positive integer, got ${this.#season}`);
    if (!(Number.isInteger(this.#levelSteps) && this.#levelSteps >= 1)) throw new RangeError(`forecast: levelSteps must be a positive integer, got ${this.#levelSteps}`);
    this.#originMs = options.originMs ?? 0;
    this.#span = this.#season + this.#levelSteps + 1;
    this.#counts = Array.from({ length: this.#span }, zeros);
    this.#slotStep = new Float64Array(this.#span).fill(-1);
  }

  /** The step holding a router-clock time. */
  stepAt(nowMs: number): number {
    return Math.floor((nowMs - this.#originMs) / this.#stepMs);
  }

  observe(type: RequestType, nowMs: number): void {
    const step = this.stepAt(nowMs);
    if (step < 0) return;
    this.#advance(step);
    // An arrival stamped before the ring's oldest step is too late to count.
    if (step <= this.#latestStep - this.#span) return;
    this.#slot(step)[type]++;
  }

  /** Whether a full season and its level span back the forecast at `nowMs` (else it is the recent level). */
  seasonal(nowMs: number): boolean {
    const current = this.stepAt(nowMs);
    this.#advance(current);
    return this.#has(current - this.#season - this.#levelSteps);
  }

  /** Rates per type for `steps` steps from the one holding `nowMs` (that step first). */
  forecast(nowMs: number, steps: number): StepForecast {
    const current = this.stepAt(nowMs);
    this.#advance(current);
    const level = this.#level(current);
    const seasonal = this.#has(current - this.#season - this.#levelSteps);
    const before = seasonal ? this.#level(current - this.#season) : undefined;
    const out: Record<RequestType, number>[] = [];
    for (let h = 0; h < steps; h++) {
      const target = current + h;
      const rates = zeros();
      for (const k of REQUEST_TYPES) {
        // The same step a season ago, or the season before that for steps not yet reached then.
        const back = target - this.#season * Math.max(1, Math.ceil((target - current + 1) / this.#season));
        rates[k] = seasonal && before && this.#has(back) ? Math.max(0, this.#rate(back, k) + level[k] - before[k]) : level[k];
      }
      out.push(rates);
    }
    // A step is scored against the last forecast made for it.
    for (const [h, rates] of out.entries()) this.#pending.set(current + h, rates);
    return out;
  }

  error(): ForecastError {
    return {
      steps: this.#scoredSteps,
      meanAbsErrorRps: this.#scoredSteps > 0 ? this.#absError / this.#scoredSteps : 0,
      relativeError: this.#observed > 0 ? this.#absError / this.#observed : Number.NaN,
    };
  }

  #slot(step: number): Record<RequestType, number> {
    return this.#counts[step % this.#span]!;
  }

  #has(step: number): boolean {
    return step >= 0 && this.#slotStep[step % this.#span] === step && step < this.#latestStep;
  }

  #rate(step: number, type: RequestType): number {
    return this.#has(step) ? (this.#slot(step)[type] * 1000) / this.#stepMs : 0;
  }

  /** Mean rate per type over the `levelSteps` complete steps before `step`, over the steps held. */
  #level(step: number): Record<RequestType, number> {
    const level = zeros();
    let n = 0;
    for (let s = step - this.#levelSteps; s < step; s++) {
      if (!this.#has(s)) continue;
      n++;
      for (const k of REQUEST_TYPES) level[k] += this.#rate(s, k);
    }
    if (n > 0) for (const k of REQUEST_TYPES) level[k] /= n;
    return level;
  }

  /** Opens every step up to `step`, scoring the forecasts of the steps that just completed. */
  #advance(step: number): void {
    if (step <= this.#latestStep) return;
    const first = Math.max(this.#latestStep + 1, step - this.#span + 1);
    if (this.#latestStep >= 0) for (let s = Math.max(this.#latestStep, step - this.#span); s < step; s++) this.#score(s);
    for (let s = first; s <= step; s++) {
      const counts = this.#slot(s);
      for (const k of REQUEST_TYPES) counts[k] = 0;
      this.#slotStep[s % this.#span] = s;
    }
    this.#latestStep = step;
  }

  #score(step: number): void {
    const forecast = this.#pending.get(step);
    this.#pending.delete(step);
    for (const s of this.#pending.keys()) if (s < step) this.#pending.delete(s);
    if (!forecast || this.#slotStep[step % this.#span] !== step) return;
    let error = 0;
    for (const k of REQUEST_TYPES) {
      const observed = (this.#slot(step)[k] * 1000) / this.#stepMs;
      error += Math.abs(forecast[k] - observed);
      this.#observed += observed;
    }
    this.#absError += error;
    this.#scoredSteps++;
  }
}
