/**
 * The GPU driver over the `nvidia-smi` command. It is run with an argv array through execFile, never
 * a shell. Every field it prints is validated: `[N/A]`, `[Not Supported]` and anything in an
 * unexpected format end in a GpuDriverError naming the field and the raw text; nothing is guessed.
 *
 * nvidia-smi 580 has no energy-counter field (`total_energy_consumption` is "not a valid field to
 * query", see test/fixtures/nvidia-smi), so energy is power integrated between this driver's reads.
 */
import { execFile } from 'node:child_process';
import { systemClock, type Clock } from '../clock.js';
import { GpuDriverError, PowerIntegrator, validateClockRange, type EnergyReading, type GpuDriver, type GpuTelemetry } from './driver.js';

/** The fields, in order, that `listGpus` asks for. */
export const QUERY_FIELDS = ['index', 'uuid', 'name', 'power.draw', 'clocks.sm', 'clocks.max.sm', 'enforced.power.limit'] as const;
export const QUERY_ARGS: readonly string[] = Object.freeze([`--query-gpu=${QUERY_FIELDS.join(',')}`, '--format=csv,noheader,nounits']);
export const supportedClocksArgs = (index: number): string[] => ['-i', String(index), '-q', '-d', 'SUPPORTED_CLOCKS'];
export const setClockArgs = (index: number, minMHz: number, maxMHz: number): string[] => ['-i', String(index), '-lgc', `${minMHz},${maxMHz}`];
export const resetClockArgs = (index: number): string[] => ['-i', String(index), '-rgc'];

/** Runs `file` with `args` (no shell); rejects on a non-zero exit, a signal or the timeout. */
export type ExecFn = (file: string, args: readonly string[], options: { timeoutMs: number }) => Promise<{ stdout: string; stderr: string }>;

interface ExecFailure extends Error {
  code?: number | string;
  signal?: string | null;
  stdout?: string;
  stderr?: string;
}

export const execFileRunner: ExecFn = (file, args, { timeoutMs }) =>
  new Promise((resolve, reject) => {
    execFile(file, [...args], { encoding: 'utf8', timeout: timeoutMs, maxBuffer: 4 << 20, windowsHide: true }, (error, stdout, stderr) => {
      if (error) {
        const failure = error as ExecFailure;
        failure.stdout = stdout;
        failure.stderr = stderr;
        reject(failure);
      } else resolve({ stdout, stderr });
    });
  });

// ---------------------------------------------------------------------------------------------
// Parsers

/** Values nvidia-smi prints for a field the GPU does not report (bracketed in CSV, bare in -q). */
const UNAVAILABLE = /^\[?(N\/A|Not Supported|Unknown Error|Insufficient Permissions|GPU is lost|Requested functionality has been deprecated)\]?$/i;
const UUID = /^GPU-[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;
const INTEGER = /^\d+$/;
const DECIMAL = /^\d+(\.\d+)?$/;

function checkAvailable(field: string, raw: string): void {
  if (UNAVAILABLE.test(raw) || /^\[.*\]$/.test(raw)) throw new GpuDriverError('unavailable', field, raw);
}

function integerField(field: string, raw: string, min: number): number {
  checkAvailable(field, raw);
  if (!INTEGER.test(raw)) throw new GpuDriverError('parse', field, raw, 'expected an integer');
  const value = Number(raw);
  if (!Number.isSafeInteger(value) || value < min) throw new GpuDriverError('parse', field, raw, `expected an integer ≥ ${min}`);
  return value;
}

function decimalField(field: string, raw: string, min: number, max: number): number {
  checkAvailable(field, raw);
  if (!DECIMAL.test(raw)) throw new GpuDriverError('parse', field, raw, 'expected a decimal number without units');
  const value = Number(raw);
  if (!(value >= min && value <= max)) throw new GpuDriverError('parse', field, raw, `expected a value in [${min}, ${max}]`);
  return value;
}

/** Parses the output of `--query-gpu=<QUERY_FIELDS> --format=csv,noheader,nounits`, one GPU a line. */
export function parseGpuQuery(stdout: string): GpuTelemetry[] {
  const lines = stdout.split(/\r?\n/).filter((line) => line.trim() !== '');
  if (lines.length === 0) throw new GpuDriverError('parse', 'query', stdout, 'no GPU lines');
  const gpus = lines.map((line): GpuTelemetry => {
    const cells = line.split(',').map((cell) => cell.trim());
    if (cells.length !== QUERY_FIELDS.length) {
      throw new GpuDriverError('parse', 'query', line, `expected ${QUERY_FIELDS.length} comma-separated fields, got ${cells.length}`);
    }
    const [index, uuid, name, power, sm, maxSm, limit] = cells as [string, string, string, string, string, string, string];
    checkAvailable('uuid', uuid);
    if (!UUID.test(uuid)) throw new GpuDriverError('parse', 'uuid', uuid, 'expected GPU-xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx');
    checkAvailable('name', name);
    if (name === '') throw new GpuDriverError('parse', 'name', name, 'empty');
    const smClockMHz = integerField('clocks.sm', sm, 0);
    const maxSmClockMHz = integerField('clocks.max.sm', maxSm, 1);
    if (smClockMHz > maxSmClockMHz) throw new GpuDriverError('parse', 'clocks.sm', line, `SM clock ${smClockMHz} MHz above its maximum ${maxSmClockMHz} MHz`);
    return Object.freeze({
      index: integerField('index', index, 0),
      uuid,
      name,
      powerW: decimalField('power.draw', power, 0, 10_000),
      smClockMHz,
      maxSmClockMHz,
      powerLimitW: decimalField('enforced.power.limit', limit, Number.MIN_VALUE, 10_000),
    });
  });
  const indices = new Set(gpus.map((gpu) => gpu.index));
  if (indices.size !== gpus.length) throw new GpuDriverError('parse', 'index', stdout, 'duplicate GPU index');
  return gpus.sort((a, b) => a.index - b.index);
}

export interface SupportedClocks {
  /** The GPU's PCI bus id as the section header prints it, e.g. `00000000:00:06.0`. */
  readonly busId: string;
  /** Each memory clock with the SM (graphics) clocks it allows, in the order printed. */
  readonly memory: readonly { readonly memoryMHz: number; readonly graphicsMHz: readonly number[] }[];
}

const KEY_VALUE = /^\s*([^:]+?)\s*:\s*(.*?)\s*$/;
const MHZ = /^(\d+) MHz$/;

function mhzField(field: string, raw: string): number {
  checkAvailable(field, raw);
  const match = MHZ.exec(raw);
  if (!match) throw new GpuDriverError('parse', field, raw, 'expected "<integer> MHz"');
  return integerField(field, match[1]!, 1);
}

/** Parses `nvidia-smi [-i N] -q -d SUPPORTED_CLOCKS`: one entry per GPU section. */
export function parseSupportedClocks(text: string): SupportedClocks[] {
  const gpus: { busId: string; memory: { memoryMHz: number; graphicsMHz: number[] }[] }[] = [];
  let current: (typeof gpus)[number] | undefined;
  let inClocks = false;
  for (const line of text.split(/\r?\n/)) {
    if (line.trim() === '') continue;
    const header = /^GPU ([0-9A-Fa-f]+:[0-9A-Fa-f]+:[0-9A-Fa-f]+\.[0-9A-Fa-f]+)\s*$/.exec(line);
    if (header) {
      current = { busId: header[1]!, memory: [] };
      gpus.push(current);
      inClocks = false;
      continue;
    }
    if (!current) continue; // the log's preamble: timestamp, driver version, GPU count
    const pair = KEY_VALUE.exec(line);
    if (/^\s*Supported Clocks\s*(:.*)?$/.test(line)) {
      const value = pair?.[2] ?? '';
      if (value !== '') {
        checkAvailable('Supported Clocks', value);
        throw new GpuDriverError('parse', 'Supported Clocks', line, 'unexpected value');
      }
      inClocks = true;
      continue;
    }
    if (!inClocks || !pair) throw new GpuDriverError('parse', 'SUPPORTED_CLOCKS', line, 'unexpected line');
    const key = pair[1]!;
    const value = pair[2]!;
    if (key === 'Memory') current.memory.push({ memoryMHz: mhzField('Memory', value), graphicsMHz: [] });
    else if (key === 'Graphics') {
      const group = current.memory.at(-1);
      if (!group) throw new GpuDriverError('parse', 'Graphics', line, 'graphics clock before any memory clock');
      group.graphicsMHz.push(mhzField('Graphics', value));
    } else throw new GpuDriverError('parse', 'SUPPORTED_CLOCKS', line, 'unexpected line');
  }
  if (gpus.length === 0) throw new GpuDriverError('parse', 'SUPPORTED_CLOCKS', text, 'no GPU section');
  for (const gpu of gpus) {
    if (gpu.memory.length === 0) throw new GpuDriverError('parse', 'Supported Clocks', gpu.busId, 'no memory clocks listed');
    for (const group of gpu.memory) {
      if (group.graphicsMHz.length === 0) throw new GpuDriverError('parse', 'Graphics', `${group.memoryMHz} MHz`, 'no graphics clocks for this memory clock');
    }
  }
  return gpus;
}

/** The SM clocks allowed at the highest memory clock (the one a decode server runs at), ascending. */
export function smClocksAtHighestMemory(clocks: SupportedClocks): number[] {
  let best = clocks.memory[0]!;
  for (const group of clocks.memory) if (group.memoryMHz > best.memoryMHz) best = group;
  return [...new Set(best.graphicsMHz)].sort((a, b) => a - b);
}

// ---------------------------------------------------------------------------------------------
// Driver

export interface NvidiaSmiDriverOptions {
  /** The executable, a name looked up on PATH or a path. Default `nvidia-smi`. */
  readonly binary?: string;
  /** Injected for tests. Default: execFile, no shell. */
  readonly exec?: ExecFn;
  /** Time for integrating power. Default the system clock. */
  readonly clock?: Clock;
  /** Per command. Default 10 s (nvidia-smi can take seconds on a busy node). */
  readonly timeoutMs?: number;
  /** Reads further apart than this are not integrated across. Default 60 s. */
  readonly maxIntegrationGapMs?: number;
}

export class NvidiaSmiDriver implements GpuDriver {
  readonly kind = 'nvidia-smi';
  readonly #binary: string;
  readonly #exec: ExecFn;
  readonly #clock: Clock;
  readonly #timeoutMs: number;
  readonly #energy: PowerIntegrator;

  constructor(options: NvidiaSmiDriverOptions = {}) {
    this.#binary = options.binary ?? 'nvidia-smi';
    this.#exec = options.exec ?? execFileRunner;
    this.#clock = options.clock ?? systemClock;
    this.#timeoutMs = options.timeoutMs ?? 10_000;
    this.#energy = new PowerIntegrator(options.maxIntegrationGapMs ?? 60_000);
  }

  async #run(field: string, args: readonly string[]): Promise<string> {
    try {
      const { stdout } = await this.#exec(this.#binary, args, { timeoutMs: this.#timeoutMs });
      return stdout;
    } catch (error) {
      const failure = error as ExecFailure;
      const output = `${failure.stdout ?? ''}${failure.stderr ?? ''}`.trim();
      const status = failure.signal ? `signal ${failure.signal}` : failure.code !== undefined ? `exit ${failure.code}` : failure.message;
      throw new GpuDriverError('command', field, output || failure.message, `${this.#binary} ${args.join(' ')}: ${status}`, { cause: error });
    }
  }

  async listGpus(): Promise<readonly GpuTelemetry[]> {
    const gpus = parseGpuQuery(await this.#run('--query-gpu', QUERY_ARGS));
    const now = this.#clock.now();
    for (const gpu of gpus) this.#energy.add(gpu.index, now, gpu.powerW);
    return gpus;
  }

  async supportedSmClocks(index: number): Promise<readonly number[]> {
    validateClockRange(index, 1, 1);
    const text = await this.#run('SUPPORTED_CLOCKS', supportedClocksArgs(index));
    const sections = parseSupportedClocks(text);
    if (sections.length !== 1) throw new GpuDriverError('parse', 'SUPPORTED_CLOCKS', text, `expected one GPU section for -i ${index}, got ${sections.length}`);
    return smClocksAtHighestMemory(sections[0]!);
  }

  async setClockRange(index: number, minMHz: number, maxMHz: number): Promise<void> {
    validateClockRange(index, minMHz, maxMHz);
    await this.#run('-lgc', setClockArgs(index, minMHz, maxMHz));
  }

  async resetClocks(index: number): Promise<void> {
    validateClockRange(index, 1, 1);
    await this.#run('-rgc', resetClockArgs(index));
  }

  async energy(index: number): Promise<EnergyReading | undefined> {
    const joules = this.#energy.joules(index);
    return joules === undefined ? undefined : { joules, source: 'integrated' };
  }
}
