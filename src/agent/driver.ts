/**
 * What the GPU agent needs from a GPU: telemetry, the SM clocks it accepts, a clock lock and its
 * reset, and energy. Implementations: nvidia-smi (./nvidia-smi.ts), Zeus's zeusd daemon (./zeusd.ts),
 * an in-process fake (./fake-gpu.ts) for tests and the demo, and the simulator's (src/sim/sim-gpu.ts).
 */

/** One GPU as the driver read it. Every field was validated; nothing is guessed. */
export interface GpuTelemetry {
  /** The index nvidia-smi and NVML use (`-i N`). */
  readonly index: number;
  /** `GPU-xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx`. */
  readonly uuid: string;
  readonly name: string;
  /** Board power draw (W). */
  readonly powerW: number;
  /** Current SM clock (MHz). */
  readonly smClockMHz: number;
  /** Highest SM clock the GPU can run (MHz). */
  readonly maxSmClockMHz: number;
  /** Power limit in force (W). */
  readonly powerLimitW: number;
}

/** Energy a GPU has used since the driver first saw it. */
export interface EnergyReading {
  readonly joules: number;
  /**
   * `counter`: the GPU's own energy counter (NVML total energy, zeusd). `integrated`: power
   * readings integrated by the trapezoid rule between the driver's reads, so only as good as the
   * reads are frequent.
   */
  readonly source: 'counter' | 'integrated';
}

export interface GpuDriver {
  /** Short name for logs and metrics: `nvidia-smi`, `zeusd`, `fake`. */
  readonly kind: string;
  /** Every GPU with its telemetry, in index order. */
  listGpus(): Promise<readonly GpuTelemetry[]>;
  /** SM clocks GPU `index` accepts (at its highest memory clock), ascending, without duplicates. */
  supportedSmClocks(index: number): Promise<readonly number[]>;
  /** Locks GPU `index`'s SM clock into [minMHz, maxMHz]. */
  setClockRange(index: number, minMHz: number, maxMHz: number): Promise<void>;
  /** Removes the clock lock on GPU `index`. */
  resetClocks(index: number): Promise<void>;
  /** Energy GPU `index` has used, or undefined while the driver cannot tell yet. */
  energy(index: number): Promise<EnergyReading | undefined>;
}

export type GpuDriverErrorKind =
  /** The output did not have the expected shape, or a field failed validation. */
  | 'parse'
  /** The field's value was `[N/A]`, `[Not Supported]` or similar: the GPU does not report it. */
  | 'unavailable'
  /** The command or request failed (exit status, signal, HTTP error, unreachable). */
  | 'command';

/** A driver failure naming what failed and the raw text it came from. */
export class GpuDriverError extends Error {
  override readonly name = 'GpuDriverError';
  constructor(
    readonly kind: GpuDriverErrorKind,
    /** The field, or the command, that failed: e.g. `power.draw`, `-lgc`. */
    readonly field: string,
    /** The raw text: the field's value, the line, or the command's output. */
    readonly raw: string,
    detail?: string,
    options?: { cause?: unknown },
  ) {
    super(`${kind === 'unavailable' ? 'not reported' : kind === 'parse' ? 'could not parse' : 'command failed'}: ${field}${detail ? ` (${detail})` : ''}: ${JSON.stringify(raw.length > 200 ? `${raw.slice(0, 200)}…` : raw)}`, options);
  }
}

/** Checks a clock range before it reaches a driver. */
export function validateClockRange(index: number, minMHz: number, maxMHz: number): void {
  if (!Number.isInteger(index) || index < 0) throw new RangeError(`GPU index must be a non-negative integer, got ${index}`);
  if (!Number.isInteger(minMHz) || !Number.isInteger(maxMHz) || minMHz <= 0 || maxMHz <= 0) {
    throw new RangeError(`clock range must be positive integers (MHz), got ${minMHz},${maxMHz}`);
  }
  if (minMHz > maxMHz) throw new RangeError(`clock range min ${minMHz} MHz is above max ${maxMHz} MHz`);
}

/**
 * Energy by the trapezoid rule over power readings, per GPU. A gap longer than `maxGapMs` is not
 * bridged (the power in between is unknown): integration restarts there, and `gaps` counts it.
 */
export class PowerIntegrator {
  readonly #last = new Map<number, { atMs: number; powerW: number; joules: number }>();
  readonly #maxGapMs: number;
  gaps = 0;

  constructor(maxGapMs = 60_000) {
    this.#maxGapMs = maxGapMs;
  }

  add(index: number, atMs: number, powerW: number): void {
    const last = this.#last.get(index);
    if (!last) {
      this.#last.set(index, { atMs, powerW, joules: 0 });
      return;
    }
    const dtMs = atMs - last.atMs;
    if (dtMs < 0) return;
    let joules = last.joules;
    if (dtMs <= this.#maxGapMs) joules += ((last.powerW + powerW) / 2) * (dtMs / 1000);
    else this.gaps++;
    this.#last.set(index, { atMs, powerW, joules });
  }

  joules(index: number): number | undefined {
    return this.#last.get(index)?.joules;
  }
}
