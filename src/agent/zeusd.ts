/**
 * The GPU driver over Zeus's privileged GPU daemon (`zeusd`, ml-energy/zeus), so a site that already
 * runs it needs no second privileged process. zeusd's HTTP API, as its routes define it (every
 * parameter in the query string, `gpu_ids` a comma-separated list):
 *   POST /gpu/set_gpu_locked_clocks?gpu_ids=N&min_clock_mhz=A&max_clock_mhz=B&block=true → 200, empty
 *   POST /gpu/reset_gpu_locked_clocks?gpu_ids=N&block=true                               → 200, empty
 *   GET  /gpu/get_power?gpu_ids=N             → {"timestamp_ms": …, "power_mw": {"N": mW}}
 *   GET  /gpu/get_cumulative_energy?gpu_ids=N → {"N": {"energy_mj": mJ}}
 * Errors come back with a non-2xx status and a JSON body (`{"error": …}` or one entry per GPU).
 * It listens on TCP or on a Unix socket; undici reaches both.
 *
 * zeusd reports neither SM clocks nor the clocks a GPU supports, nor names and UUIDs. The supported
 * clocks are therefore configuration (`clocksMHz`, by default the H200's table, the GPU the fixtures
 * were captured on), the SM clock reported is the top of the range this driver last locked (the
 * clock a busy GPU runs at under a lock; the maximum when unlocked), and the UUID is synthetic.
 */
import { Agent, request } from 'undici';
import { z } from 'zod';
import { GpuDriverError, validateClockRange, type EnergyReading, type GpuDriver, type GpuTelemetry } from './driver.js';
import { H200_SM_CLOCKS_MHZ } from './fake-gpu.js';

export interface ZeusdDriverOptions {
  /** Where zeusd listens over TCP, e.g. `http://127.0.0.1:4938`. Exactly one of `url` and `socketPath`. */
  readonly url?: string;
  /** zeusd's Unix domain socket, e.g. `/var/run/zeusd.sock`. */
  readonly socketPath?: string;
  /** The GPU indices to report (zeusd's `gpu_ids`). */
  readonly gpus: readonly number[];
  /** SM clocks the GPUs support (zeusd does not list them). Default the H200's, 345–1980 MHz in 15 MHz steps. */
  readonly clocksMHz?: readonly number[];
  /** Power limit to report (W); zeusd's get_power_limit is not read on the control path. Default 700 (H200). */
  readonly powerLimitW?: number;
  /** Per request. Default 5 s. */
  readonly timeoutMs?: number;
}

const powerSchema = z.object({ timestamp_ms: z.number().nonnegative(), power_mw: z.record(z.string(), z.number().int().nonnegative()) });
const energySchema = z.record(z.string(), z.object({ energy_mj: z.number().int().nonnegative() }));

export class ZeusdDriver implements GpuDriver {
  readonly kind = 'zeusd';
  readonly #origin: string;
  readonly #dispatcher: Agent;
  readonly #gpus: readonly number[];
  readonly #clocks: readonly number[];
  readonly #powerLimitW: number;
  readonly #timeoutMs: number;
  readonly #lockedMaxMHz = new Map<number, number>();

  constructor(options: ZeusdDriverOptions) {
    if ((options.url === undefined) === (options.socketPath === undefined)) throw new TypeError('zeusd: give exactly one of `url` and `socketPath`');
    if (options.gpus.length === 0 || options.gpus.some((g) => !Number.isInteger(g) || g < 0)) {
      throw new RangeError(`zeusd: \`gpus\` must be non-negative integers, got ${JSON.stringify(options.gpus)}`);
    }
    const clocks = [...new Set(options.clocksMHz ?? H200_SM_CLOCKS_MHZ)].sort((a, b) => a - b);
    if (clocks.length === 0 || clocks.some((c) => !Number.isInteger(c) || c <= 0)) throw new RangeError('zeusd: `clocksMHz` must be positive integers');
    // Over a socket the host part is unused; undici still wants an origin.
    this.#origin = options.url !== undefined ? new URL(options.url).origin : 'http://zeusd';
    this.#dispatcher = new Agent(options.socketPath !== undefined ? { connect: { socketPath: options.socketPath } } : {});
    this.#gpus = Object.freeze([...new Set(options.gpus)].sort((a, b) => a - b));
    this.#clocks = Object.freeze(clocks);
    this.#powerLimitW = options.powerLimitW ?? 700;
    this.#timeoutMs = options.timeoutMs ?? 5_000;
  }

  async #call(field: string, method: 'GET' | 'POST', path: string, query: Record<string, string | number | boolean>): Promise<unknown> {
    const search = new URLSearchParams(Object.fromEntries(Object.entries(query).map(([k, v]) => [k, String(v)])));
    const target = `${path}?${search}`;
    let status: number;
    let text: string;
    try {
      const res = await request(`${this.#origin}${target}`, {
        method,
        dispatcher: this.#dispatcher,
        headersTimeout: this.#timeoutMs,
        bodyTimeout: this.#timeoutMs,
      });
      status = res.statusCode;
      text = await res.body.text();
    } catch (error) {
      throw new GpuDriverError('command', field, error instanceof Error ? error.message : String(error), `${method} ${target}: unreachable`, { cause: error });
    }
    if (status < 200 || status >= 300) throw new GpuDriverError('command', field, text, `${method} ${target}: HTTP ${status}`);
    if (method === 'POST') return undefined;
    try {
      return JSON.parse(text) as unknown;
    } catch {
      throw new GpuDriverError('parse', field, text, 'expected JSON');
    }
  }

  #known(index: number): void {
    if (!this.#gpus.includes(index)) throw new GpuDriverError('command', 'gpu_ids', String(index), `not one of this driver's GPUs (${this.#gpus.join(',')})`);
  }

  async listGpus(): Promise<readonly GpuTelemetry[]> {
    const body = await this.#call('get_power', 'GET', '/gpu/get_power', { gpu_ids: this.#gpus.join(',') });
    const parsed = powerSchema.safeParse(body);
    if (!parsed.success) throw new GpuDriverError('parse', 'get_power', JSON.stringify(body), parsed.error.issues[0]?.message);
    const max = this.#clocks.at(-1)!;
    return this.#gpus.map((index) => {
      const mw = parsed.data.power_mw[String(index)];
      if (mw === undefined) throw new GpuDriverError('unavailable', `power_mw.${index}`, JSON.stringify(body), 'GPU missing from the answer');
      return Object.freeze({
        index,
        uuid: `zeusd-gpu-${index}`,
        name: `zeusd GPU ${index}`,
        powerW: mw / 1000,
        smClockMHz: this.#lockedMaxMHz.get(index) ?? max,
        maxSmClockMHz: max,
        powerLimitW: this.#powerLimitW,
      });
    });
  }

  async supportedSmClocks(index: number): Promise<readonly number[]> {
    this.#known(index);
    return this.#clocks;
  }

  async setClockRange(index: number, minMHz: number, maxMHz: number): Promise<void> {
    validateClockRange(index, minMHz, maxMHz);
    this.#known(index);
    await this.#call('set_gpu_locked_clocks', 'POST', '/gpu/set_gpu_locked_clocks', { gpu_ids: index, min_clock_mhz: minMHz, max_clock_mhz: maxMHz, block: true });
    this.#lockedMaxMHz.set(index, maxMHz);
  }

  async resetClocks(index: number): Promise<void> {
    this.#known(index);
    await this.#call('reset_gpu_locked_clocks', 'POST', '/gpu/reset_gpu_locked_clocks', { gpu_ids: index, block: true });
    this.#lockedMaxMHz.delete(index);
  }

  async energy(index: number): Promise<EnergyReading | undefined> {
    this.#known(index);
    const body = await this.#call('get_cumulative_energy', 'GET', '/gpu/get_cumulative_energy', { gpu_ids: index });
    const parsed = energySchema.safeParse(body);
    if (!parsed.success) throw new GpuDriverError('parse', 'get_cumulative_energy', JSON.stringify(body), parsed.error.issues[0]?.message);
    const entry = parsed.data[String(index)];
    if (!entry) throw new GpuDriverError('unavailable', `energy_mj.${index}`, JSON.stringify(body), 'GPU missing from the answer');
    return { joules: entry.energy_mj / 1000, source: 'counter' };
  }

  close(): Promise<void> {
    return this.#dispatcher.close();
  }
}
