/**
 * An in-process GPU driver whose power and decode step time respond to its SM clock, for tests, the
 * demo and the simulator. Its physics are the cost model's, so the agent, the simulator and the
 * router's estimates agree: power from an instance profile (src/cost/profiles.ts) split per GPU,
 * scaled by the clock through the frequency model (src/cost/frequency.ts), which is itself an
 * assumption (see there). Clocks behave as a lock does on a real GPU: a busy GPU runs at the top of
 * its locked range, an idle one drops to the bottom (the H200 fixture idles at 345 MHz unlocked).
 */
import { systemClock, type Clock } from '../clock.js';
import { DEFAULT_FREQUENCY_MODEL, type FrequencyModel } from '../cost/frequency.js';
import { BUILTIN_PROFILES, decodePowerAtW, decodeStepMs, type InstanceProfile } from '../cost/profiles.js';
import { GpuDriverError, validateClockRange, type EnergyReading, type GpuDriver, type GpuTelemetry } from './driver.js';

/** The H200's SM clocks at its top memory clock: 345 to 1980 MHz in 15 MHz steps (test/fixtures/nvidia-smi). */
export const H200_SM_CLOCKS_MHZ: readonly number[] = Object.freeze(Array.from({ length: 110 }, (_, i) => 345 + 15 * i));

export interface FakeGpuOptions {
  /** GPUs on the fake node. Default 1. */
  readonly count?: number;
  readonly name?: string;
  /** Supported SM clocks. Default H200_SM_CLOCKS_MHZ. */
  readonly clocksMHz?: readonly number[];
  /** Instance whose power and step times are split over its GPUs. Default `2xH100` (Splitwise). */
  readonly profile?: InstanceProfile;
  readonly frequency?: FrequencyModel;
  readonly powerLimitW?: number;
  readonly clock?: Clock;
}

interface FakeState {
  batch: number;
  lock: { minMHz: number; maxMHz: number } | undefined;
  joules: number;
  sinceMs: number;
}

export class FakeGpuDriver implements GpuDriver {
  readonly kind = 'fake';
  /** Every setClockRange / resetClocks call, in order, for tests. */
  readonly commands: string[] = [];
  readonly #clocks: readonly number[];
  readonly #profile: InstanceProfile;
  readonly #frequency: FrequencyModel;
  readonly #clock: Clock;
  readonly #name: string;
  readonly #powerLimitW: number;
  readonly #gpus: FakeState[];
  #failNext: string | undefined;

  constructor(options: FakeGpuOptions = {}) {
    const clocks = [...new Set(options.clocksMHz ?? H200_SM_CLOCKS_MHZ)].sort((a, b) => a - b);
    if (clocks.length === 0 || clocks.some((c) => !Number.isInteger(c) || c <= 0)) throw new RangeError('clocksMHz must be positive integers');
    this.#clocks = Object.freeze(clocks);
    this.#profile = options.profile ?? BUILTIN_PROFILES['2xH100']!;
    this.#frequency = options.frequency ?? DEFAULT_FREQUENCY_MODEL;
    this.#clock = options.clock ?? systemClock;
    this.#name = options.name ?? 'Fake GPU';
    this.#powerLimitW = options.powerLimitW ?? 700;
    const now = this.#clock.now();
    this.#gpus = Array.from({ length: options.count ?? 1 }, () => ({ batch: 0, lock: undefined, joules: 0, sinceMs: now }));
  }

  get maxMHz(): number {
    return this.#clocks.at(-1)!;
  }

  #gpu(index: number): FakeState {
    const gpu = this.#gpus[index];
    if (!gpu) throw new GpuDriverError('command', '-i', String(index), 'no such GPU');
    return gpu;
  }

  /** Brings the energy counter up to now at the power drawn since the last change. */
  #settle(index: number): FakeState {
    const gpu = this.#gpu(index);
    const now = this.#clock.now();
    gpu.joules += this.powerW(index) * (Math.max(0, now - gpu.sinceMs) / 1000);
    gpu.sinceMs = now;
    return gpu;
  }

  /** Sequences decoding on GPU `index` (0: idle). */
  setBatch(index: number, batch: number): void {
    if (!Number.isInteger(batch) || batch < 0) throw new RangeError(`batch must be a non-negative integer, got ${batch}`);
    this.#settle(index).batch = batch;
  }

  /** The next command fails with this output, as nvidia-smi does without privileges. */
  failNextCommand(output: string): void {
    this.#failNext = output;
  }

  /** SM clock GPU `index` runs at now. */
  smClockMHz(index: number): number {
    const gpu = this.#gpu(index);
    const lock = gpu.lock ?? { minMHz: this.#clocks[0]!, maxMHz: this.maxMHz };
    return gpu.batch > 0 ? lock.maxMHz : lock.minMHz;
  }

  /** Board power (W) of GPU `index` now. */
  powerW(index: number): number {
    const gpu = this.#gpu(index);
    const dynamic = this.#frequency.dynamicPower(this.smClockMHz(index) / this.maxMHz);
    return Math.min(this.#powerLimitW, decodePowerAtW(this.#profile, gpu.batch, dynamic) / this.#profile.gpus);
  }

  /** Decode step time (ms) of GPU `index` at its batch (at least 1) and clock. */
  stepMs(index: number): number {
    const gpu = this.#gpu(index);
    return decodeStepMs(this.#profile, gpu.batch) * this.#frequency.decodeTime(this.smClockMHz(index) / this.maxMHz);
  }

  async listGpus(): Promise<readonly GpuTelemetry[]> {
    return this.#gpus.map((_, index) => Object.freeze({
      index,
      uuid: `GPU-00000000-0000-0000-0000-${index.toString(16).padStart(12, '0')}`,
      name: this.#name,
      powerW: this.powerW(index),
      smClockMHz: this.smClockMHz(index),
      maxSmClockMHz: this.maxMHz,
      powerLimitW: this.#powerLimitW,
    }));
  }

  async supportedSmClocks(index: number): Promise<readonly number[]> {
    this.#gpu(index);
    return this.#clocks;
  }

  #command(text: string): void {
    this.commands.push(text);
    const failure = this.#failNext;
    if (failure !== undefined) {
      this.#failNext = undefined;
      throw new GpuDriverError('command', text.split(' ')[2] ?? text, failure, 'injected failure');
    }
  }

  async setClockRange(index: number, minMHz: number, maxMHz: number): Promise<void> {
    validateClockRange(index, minMHz, maxMHz);
    this.#gpu(index);
    this.#command(`-i ${index} -lgc ${minMHz},${maxMHz}`);
    // A real GPU rounds a lock onto its supported clocks; so does the fake: min up, max down.
    const lo = this.#clocks.find((c) => c >= minMHz) ?? this.maxMHz;
    const hi = [...this.#clocks].reverse().find((c) => c <= maxMHz) ?? this.#clocks[0]!;
    this.#settle(index).lock = { minMHz: Math.min(lo, hi), maxMHz: hi };
  }

  async resetClocks(index: number): Promise<void> {
    this.#gpu(index);
    this.#command(`-i ${index} -rgc`);
    this.#settle(index).lock = undefined;
  }

  async energy(index: number): Promise<EnergyReading | undefined> {
    return { joules: this.#settle(index).joules, source: 'counter' };
  }
}
