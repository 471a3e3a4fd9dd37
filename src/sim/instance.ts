import type { Clock, Timer } from '../clock.js';
import { DEFAULT_FREQUENCY_MODEL, type FrequencyModel } from '../cost/frequency.js';
import { decodePowerAtW, decodeStepMs, decodeUtilisation, type InstanceProfile, prefillMs } from '../cost/profiles.js';
import type { Hardware } from './hardware.js';

export interface SimJob {
  readonly promptTokens: number;
  /** Tokens to generate (≥ 1). */
  readonly outputTokens: number;
  /** Scheduling priority, lower first (vLLM's `--scheduling-policy priority`); equal priorities in arrival order. Default 0. */
  readonly priority?: number;
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
  /** Prompt tokens prefilled per step (chunked prefill, as vLLM schedules it). Default 512. */
  readonly prefillChunkTokens?: number;
  /** Fraction of the way from idle to full decode power at a batch. Default the router's b / (b + 4). */
  readonly decodePowerShare?: (batch: number) => number;
  /** Time a powered-off instance takes to serve again (ms), drawing idle power meanwhile. Default 0 (at once). */
  readonly bootMs?: number;
  /**
   * Power off after this long with nothing to do (ms), as an operator's idle shutdown would; the next
   * request boots it. Default: never (only a plan that parks it with parkedPower `off` does).
   */
  readonly idleOffAfterMs?: number;
}

/** SimInstanceOptions from one instance's ground truth. */
export function hardwareOptions(hardware: Hardware): Pick<SimInstanceOptions, 'profile' | 'frequencyModel' | 'decodePowerShare' | 'bootMs'> {
  return { profile: hardware.profile, frequencyModel: hardware.frequency, decodePowerShare: hardware.decodePowerShare, bootMs: hardware.bootMs };
}

interface Running {
  readonly job: SimJob;
  readonly priority: number;
  /** Prompt tokens not yet prefilled. */
  toPrefill: number;
  produced: number;
  cancelled: boolean;
}

/**
 * One inference instance with continuous batching and chunked prefill, on any clock. Each step
 * decodes one token for every sequence past its prefill, and prefills up to `prefillChunkTokens`
 * prompt tokens of the others (by priority, then oldest first, as vLLM's priority scheduling
 * does; with no priorities, oldest first); waiting sequences are admitted in the same order. A
 * step takes the decode step time at that batch plus the prefill time of its chunk, and a sequence
 * gets its first token at the end of the step that finishes its prompt. Power is the profile's prefill power during prefill, its decode power at the
 * batch size during decode, and idle power when nothing runs; energy is integrated over the
 * clock's time. The SM clock (a fraction of its maximum) scales step times and the
 * above-idle power through the frequency model; a parked instance takes no work.
 *
 * Power states: an instance is on, off (0 W) or booting (idle power for `bootMs`). It powers off
 * when it has nothing to do and is parked with parkedPower `off`, or after `idleOffAfterMs` idle;
 * work submitted to it, or unparking it, boots it, and queued work starts when the boot ends.
 */
export class SimInstance {
  readonly profile: InstanceProfile;
  readonly #clock: Clock;
  readonly #maxBatch: number;
  /** Admitted sequences (at most maxBatch), in admission order; some still prefilling. */
  #running: Running[] = [];
  #waiting: Running[] = [];
  readonly #chunkTokens: number;
  /** Sequences that finished prefill in the current step (they get their first token at its end). */
  #prefilled = new Set<Running>();
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
  readonly #powerShare: (batch: number) => number;
  readonly #bootMs: number;
  readonly #idleOffAfterMs: number | undefined;
  #power: 'on' | 'off' | 'booting' = 'on';
  /** The boot in progress, or the idle shutdown pending. */
  #powerTimer: Timer | undefined;
  #boots = 0;

  constructor(options: SimInstanceOptions) {
    this.profile = options.profile;
    this.#clock = options.clock;
    this.#maxBatch = options.maxBatch ?? options.profile.maxBatch;
    this.#since = this.#clock.now();
    this.#powerW = this.profile.idleW;
    this.#frequency = options.frequencyModel ?? DEFAULT_FREQUENCY_MODEL;
    this.#parkedPower = options.parkedPower ?? 'idle';
    this.#chunkTokens = options.prefillChunkTokens ?? 512;
    this.#powerShare = options.decodePowerShare ?? decodeUtilisation;
    this.#bootMs = options.bootMs ?? 0;
    this.#idleOffAfterMs = options.idleOffAfterMs;
    this.#becameIdle();
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
    this.#parked = parked;
    if (!parked) this.#wake();
    else if (!this.#timer && this.#power === 'on') this.#becameIdle();
  }

  /** `on`, `off` (0 W) or `booting` (idle power until it can serve). */
  get power(): 'on' | 'off' | 'booting' {
    return this.#power;
  }

  /** Times the instance has booted from off. */
  get boots(): number {
    return this.#boots;
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

  /** Queues a job; returns a function that cancels it (its callbacks stop). Work unparks an instance and boots one that is off. */
  submit(job: SimJob): () => void {
    const entry: Running = { job, priority: job.priority ?? 0, toPrefill: Math.max(0, job.promptTokens), produced: 0, cancelled: false };
    insertByPriority(this.#waiting, entry);
    this.#parked = false;
    this.#wake();
    return () => {
      entry.cancelled = true;
    };
  }

  #accrue(): void {
    const now = this.#clock.now();
    this.#energyJ += (this.#powerW * (now - this.#since)) / 1000;
    this.#since = now;
  }

  /** Boots an instance that is off; cancels a pending idle shutdown of one that is on. */
  #wake(): void {
    if (this.#power === 'booting') return;
    this.#powerTimer?.cancel();
    this.#powerTimer = undefined;
    if (this.#power === 'on') {
      if (!this.#timer && this.#waiting.length > 0) this.#step();
      return;
    }
    this.#boots++;
    if (this.#bootMs <= 0) {
      this.#power = 'on';
      this.#afterBoot();
      return;
    }
    this.#accrue();
    this.#power = 'booting';
    this.#powerW = this.profile.idleW;
    this.#powerTimer = this.#clock.setTimer(() => {
      this.#powerTimer = undefined;
      this.#power = 'on';
      this.#afterBoot();
    }, this.#bootMs);
  }

  #afterBoot(): void {
    if (this.#waiting.length > 0) this.#step();
    else this.#becameIdle();
  }

  /** Nothing to run: idle power, then off if parked to `off` (at once) or idle long enough. */
  #becameIdle(): void {
    this.#accrue();
    this.#powerW = this.profile.idleW;
    this.#powerTimer?.cancel();
    this.#powerTimer = undefined;
    if (this.#parked && this.#parkedPower === 'off') this.#powerOff();
    else if (this.#idleOffAfterMs !== undefined) this.#powerTimer = this.#clock.setTimer(() => this.#powerOff(), this.#idleOffAfterMs);
  }

  #powerOff(): void {
    this.#powerTimer = undefined;
    this.#accrue();
    this.#power = 'off';
    this.#powerW = 0;
  }

  #step(): void {
    this.#accrue();
    if (this.#powerTimer) {
      this.#powerTimer.cancel();
      this.#powerTimer = undefined;
    }
    this.#running = this.#running.filter((r) => !r.cancelled);
    this.#waiting = this.#waiting.filter((r) => !r.cancelled);
    while (this.#waiting.length > 0 && this.#running.length < this.#maxBatch) insertByPriority(this.#running, this.#waiting.shift()!);
    if (this.#running.length === 0) {
      this.#timer = undefined;
      this.#becameIdle();
      return;
    }
    let decoding = 0;
    let budget = this.#chunkTokens;
    let chunk = 0;
    this.#prefilled.clear();
    for (const entry of this.#running) {
      if (entry.toPrefill === 0) {
        // Decoding; or an empty prompt, whose first token comes out of this step.
        if (entry.produced === 0) this.#prefilled.add(entry);
        decoding++;
        continue;
      }
      if (budget === 0) continue;
      const take = Math.min(budget, entry.toPrefill);
      entry.toPrefill -= take;
      budget -= take;
      chunk += take;
      if (entry.toPrefill === 0) this.#prefilled.add(entry);
    }
    const f = this.#clockFraction;
    const model = this.#frequency;
    const { idleW, prefillW } = this.profile;
    const prefill = prefillMs(this.profile, chunk) * model.prefillTime(f);
    const decode = decoding > 0 ? decodeStepMs(this.profile, decoding) * model.decodeTime(f) : 0;
    const stepMs = Math.max(1e-3, prefill + decode);
    const dynamic = model.dynamicPower(f);
    // With nothing decoding, decode takes no time in the step: its power is not counted.
    const decodeW = decoding > 0 ? decodePowerAtW(this.profile, decoding, dynamic, this.#powerShare) : idleW;
    this.#powerW = (prefill * (idleW + (prefillW - idleW) * dynamic) + decode * decodeW) / stepMs;
    this.#busyMs += stepMs;
    this.#timer = this.#clock.setTimer(() => this.#finishStep(), stepMs);
  }

  #finishStep(): void {
    const still: Running[] = [];
    for (const entry of this.#running) {
      if (entry.cancelled) continue;
      // Decoding sequences and those whose prompt this step finished produce a token.
      if (entry.toPrefill === 0 && (entry.produced > 0 || this.#prefilled.has(entry))) {
        entry.job.onToken(entry.produced++);
        this.#tokens++;
        if (entry.produced >= entry.job.outputTokens) {
          this.#completed++;
          entry.job.onDone();
          continue;
        }
      }
      still.push(entry);
    }
    this.#running = still;
    this.#step();
  }
}

/** Inserts after every entry of the same or a higher priority (lower number): stable in arrival order. */
function insertByPriority(list: Running[], entry: Running): void {
  let i = list.length;
  while (i > 0 && list[i - 1]!.priority > entry.priority) i--;
  if (i === list.length) list.push(entry);
  else list.splice(i, 0, entry);
}
