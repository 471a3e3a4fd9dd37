/**
 * A GPU driver over simulated instances, so the real agent (src/agent/agent.ts) and its MIAD
 * controller run inside the simulator against the real router's published signal and plans. GPU
 * `i` is the whole instance of backend `i`: a lock sets its clock fraction (top of the lock ÷ the
 * maximum), a reset puts it back to the maximum. Every instance takes the H200's clock table, the
 * GPU the agent was built against; only the fraction reaches the simulated hardware, whose
 * frequency model does not go below its minimum fraction (0.5 by default).
 */
import { GpuDriverError, validateClockRange, type EnergyReading, type GpuDriver, type GpuTelemetry } from '../agent/driver.js';
import { H200_SM_CLOCKS_MHZ } from '../agent/fake-gpu.js';
import type { SimInstance } from './instance.js';

export class SimGpuDriver implements GpuDriver {
  readonly kind = 'sim';
  readonly #instances: readonly SimInstance[];
  readonly #maxMHz = H200_SM_CLOCKS_MHZ.at(-1)!;

  constructor(instances: readonly SimInstance[]) {
    this.#instances = instances;
  }

  #instance(index: number): SimInstance {
    const instance = this.#instances[index];
    if (!instance) throw new GpuDriverError('command', '-i', String(index), 'no such simulated instance');
    return instance;
  }

  async listGpus(): Promise<readonly GpuTelemetry[]> {
    return this.#instances.map((instance, index) => ({
      index,
      uuid: `GPU-00000000-0000-0000-0000-${index.toString(16).padStart(12, '0')}`,
      name: `simulated ${instance.profile.id}`,
      powerW: instance.powerW,
      smClockMHz: Math.round(instance.clockFraction * this.#maxMHz),
      maxSmClockMHz: this.#maxMHz,
      powerLimitW: Number.MAX_SAFE_INTEGER,
    }));
  }

  async supportedSmClocks(index: number): Promise<readonly number[]> {
    this.#instance(index);
    return H200_SM_CLOCKS_MHZ;
  }

  async setClockRange(index: number, minMHz: number, maxMHz: number): Promise<void> {
    validateClockRange(index, minMHz, maxMHz);
    this.#instance(index).clockFraction = maxMHz / this.#maxMHz;
  }

  async resetClocks(index: number): Promise<void> {
    this.#instance(index).clockFraction = 1;
  }

  async energy(index: number): Promise<EnergyReading | undefined> {
    return { joules: this.#instance(index).energyJ, source: 'counter' };
  }
}
