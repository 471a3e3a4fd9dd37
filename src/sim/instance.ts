import type { Clock, Timer } from '../clock.js';
import { DEFAULT_FREQUENCY_MODEL, type FrequencyModel } from '../cost/frequency.js';
import { decodePowerW, decodeStepMs, type InstanceProfile, prefillMs } from '../cost/profiles.js';

export interface SimJob {
  readonly promptTokens: number;
  /** Tokens to generate (≥ 1). */
  readonly outputTokens: number;
  /** Called as each token is produced; `index` 0 is the first token. */
  onToken(index: number): void;
  onDone(): void;
}

export interface SimInstanceOptions {
  readonly profile: InstanceProfile;
  readonly clock: Clock;
  /** Sequences decoded together; more wait. Default: the profile's maxBatch. */
  readonly maxBatch?: number;
  /** How the SM clock changes time and power. Default: DEFAULT_FREQUENCY_MODEL (an assumption; see its file). */
  readonly frequencyModel?: FrequencyModel;
  /**
   * What a parked instance draws: `idle` (default; the GPUs stay on) or `off` (powered down, 0 W).
   */
  readonly parkedPower?: 'idle' | 'off';
}

interface Running {
  readonly job: SimJob;
  produced: number;
  cancelled: boolean;
}

/**
 * One inference instance with continuous batching, on any clock. Each step decodes one token for
 * every running sequence and prefills the sequences admitted at its start, so a step takes the
 * prefill time of newcomers plus the decode step time at the batch size; newcomers get their first
 * token at the end of that step. Power is the profile's prefill power during prefill, its decode
 * power at the batch size during decode, and idle power when nothing runs; energy is integrated
 * over the clock's time. The SM clock (a fraction of its maximum) scales step times and the
 * above-idle power through the frequency model; a parked instance takes no work.
 */
export class SimInstance {
  readonly profile: InstanceProfile;
  readonly #clock: Clock;
  readonly #maxBatch: number;
  #running: Running[] = [];
  #waiting: Running[] = [];
  #timer: Timer | undefined;
  #energyJ = 0;
  /** Start of the current step, or of the current idle spell. */
  #since: number;
  #powerW: number;
  #completed = 0;
  #tokens = 0;
  #busyMs = 0;
  #clockFraction = 1;
  #parked = false;
  readonly #frequency: FrequencyModel;
  readonly #parkedPower: 'idle' | 'off';

  constructor(options: SimInstanceOptions) {
    this.profile = options.profile;
    this.#clock = options.clock;
    this.#maxBatch = options.maxBatch ?? options.profile.maxBatch;
    this.#since = this.#clock.now();
    this.#powerW = this.profile.idleW;
    this.#frequency = options.frequencyModel ?? DEFAULT_FREQUENCY_MODEL;
    this.#parkedPower = options.parkedPower ?? 'idle';
  }

  /** SM clock as a fraction of its maximum; takes effect from the next step. */
  get clockFraction(): number {
    return this.#clockFraction;
  }

  set clockFraction(fraction: number) {
    this.#clockFraction = Math.min(1, Math.max(this.#frequency.minFraction, fraction));
  }

  /** A parked instance must receive no work; it draws idle power, or none if parked power is `off`. */
  get parked(): boolean {
    return this.#parked;
  }

  set parked(parked: boolean) {
    if (parked === this.#parked) return;
    this.#accrue();
    this.#parked = parked;
    if (!this.#timer) this.#powerW = this.#idlePowerW();
  }

  /** Sequences decoding now. */
  get batch(): number {
    return this.#running.length;
  }

  get waiting(): number {
    return this.#waiting.length;
  }

  get completed(): number {
    return this.#completed;
  }

  get outputTokens(): number {
    return this.#tokens;
  }

  /** Time spent running steps (ms), the current step included in full. */
  get busyMs(): number {
    return this.#busyMs;
  }

  /** Average power of the current step, or idle power (W). */
  get powerW(): number {
    return this.#powerW;
  }

  /** Energy used since the instance was created, up to now (J). */
  get energyJ(): number {
    return this.#energyJ + (this.#powerW * (this.#clock.now() - this.#since)) / 1000;
  }

  /** Queues a job; returns a function that cancels it (its callbacks stop). */
  submit(job: SimJob): () => void {
    const entry: Running = { job, produced: 0, cancelled: false };
    this.#waiting.push(entry);
    if (!this.#timer) this.#step();
    return () => {
      entry.cancelled = true;
    };
  }

  #accrue(): void {
    const now = this.#clock.now();
    this.#energyJ += (this.#powerW * (now - this.#since)) / 1000;
    this.#since = now;
  }

  #idlePowerW(): number {
    return this.#parked && this.#parkedPower === 'off' ? 0 : this.profile.idleW;
  }

  #step(): void {
    this.#accrue();
    this.#running = this.#running.filter((r) => !r.cancelled);
    this.#waiting = this.#waiting.filter((r) => !r.cancelled);
    let prefill = 0;
    while (this.#waiting.length > 0 && this.#running.length < this.#maxBatch) {
      const entry = this.#waiting.shift()!;
      prefill += prefillMs(this.profile, entry.job.promptTokens);
      this.#running.push(entry);
    }
    if (this.#running.length === 0) {
      this.#timer = undefined;
      this.#powerW = this.#idlePowerW();
      return;
    }
    const f = this.#clockFraction;
    const model = this.#frequency;
    const { idleW, prefillW } = this.profile;
    prefill *= model.prefillTime(f);
    const decode = decodeStepMs(this.profile, this.#running.length) * model.decodeTime(f);
    const stepMs = prefill + decode;
    const dynamic = model.dynamicPower(f);
    const decodeW = idleW + (decodePowerW(this.profile, this.#running.length) - idleW) * dynamic;
    this.#powerW = (prefill * (idleW + (prefillW - idleW) * dynamic) + decode * decodeW) / stepMs;
    this.#busyMs += stepMs;
    this.#timer = this.#clock.setTimer(() => this.#finishStep(), stepMs);
  }

  #finishStep(): void {
    const still: Running[] = [];
    for (const entry of this.#running) {
      if (entry.cancelled) continue;
      entry.job.onToken(entry.produced++);
      this.#tokens++;
      if (entry.produced >= entry.job.outputTokens) {
        this.#completed++;
        entry.job.onDone();
      } else still.push(entry);
    }
    this.#running = still;
    this.#step();
  }
}
