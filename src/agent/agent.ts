/**
 * The GPU agent: one per GPU node. Every period, per GPU, it reads from the state store the SLO
 * signal the router publishes for the backend on that GPU (src/pipeline/agent-telemetry.ts) and the
 * published plan's clock for it (the floor), runs the MIAD controller (./miad.ts), locks the SM clock
 * through the driver, and publishes the GPU's power, clock and energy for the router's cost model.
 *
 * Safety, in order of what can go wrong:
 *   - a crash leaves clocks locked: `start` resets every GPU first, so a restart recovers them;
 *     `stop` (the CLI calls it on SIGTERM/SIGINT and on a fatal error) resets them again;
 *   - only supported clocks are set: the controller snaps to the driver's list, and the lock is
 *     [lowest supported, target], both on it;
 *   - without the store (unreachable, or a Redis store serving from local state) the agent holds
 *     the last setting, which was chosen against a live signal, and after `storeTimeoutMs` resets to
 *     the default clocks (the SLO side) until the store answers again;
 *   - setting clocks needs privileges (nvidia-smi: root): `start` refuses without them, in one line;
 *   - `dryRun` logs each lock it would set and sets none.
 */
import { Counter, Gauge, Registry } from 'prom-client';
import { systemClock, type Clock, type Timer } from '../clock.js';
import { GPU_TELEMETRY, SLO_TELEMETRY, sloKey } from '../pipeline/agent-telemetry.js';
import type { PublishedPlan, ReceivedTelemetry, StateStore } from '../state/store.js';
import type { GpuDriver, GpuTelemetry } from './driver.js';
import { bounds, MIAD_DEFAULTS, miadConfig, miadNext, initialState, type MiadConfig, type MiadState, type MiadStep, type SloSignal } from './miad.js';

export type MiadConstants = Partial<Omit<MiadConfig, 'supportedMHz' | 'floorMHz' | 'maxMHz'>>;

export interface GpuAgentOptions {
  readonly driver: GpuDriver;
  readonly store: StateStore;
  /** This node's name: its records are `agent:<nodeId>:gpu<N>`. */
  readonly nodeId: string;
  /** GPU index → the backend (router backend id) it serves. GPUs not listed are left alone. */
  readonly backends: ReadonlyMap<number, string>;
  readonly clock?: Clock;
  /** Controller constants (see MIAD_DEFAULTS); `periodMs` is also the agent's period. */
  readonly miad?: MiadConstants;
  /** Clock floor, as a fraction of the maximum, while no plan names the backend. Default 0.5 (the frequency model's lowest). */
  readonly defaultFloorFraction?: number;
  /** Log the locks it would set, set none. Default false. */
  readonly dryRun?: boolean;
  /** Reset to default clocks after the store has been unreachable this long (ms). Default 30,000. */
  readonly storeTimeoutMs?: number;
  /** Whether this process may set clocks with the driver (nvidia-smi: root). Default: the effective uid is 0, or another driver. */
  readonly privileged?: (driver: GpuDriver) => boolean;
  /** Called each period with the store's telemetry (the fake driver follows the routers' in-flight counts with it). */
  readonly onTelemetry?: ((records: readonly ReceivedTelemetry[]) => void) | undefined;
  /** Status lines. Default console.log. */
  readonly log?: (line: string) => void;
}

/** Refused to start: the reason in one line. */
export class AgentStartError extends Error {
  override readonly name = 'AgentStartError';
}

/** nvidia-smi's -lgc/-rgc need root; zeusd holds the privilege itself; the fake needs none. */
export function defaultPrivileged(driver: GpuDriver): boolean {
  return driver.kind !== 'nvidia-smi' || process.geteuid?.() === 0;
}

interface GpuControl {
  readonly index: number;
  readonly backendId: string;
  readonly supportedMHz: readonly number[];
  state: MiadState;
  /** The lock's top in force (MHz); undefined while clocks are at their default. */
  appliedMHz: number | undefined;
  floorMHz: number;
  last: MiadStep | undefined;
}

/** One GPU's status after a period, for tests and status lines. */
export interface GpuStatus {
  readonly index: number;
  readonly backendId: string;
  readonly appliedMHz: number | undefined;
  readonly floorMHz: number;
  readonly step: MiadStep | undefined;
}

export class GpuAgent {
  readonly registry = new Registry();
  readonly #o: GpuAgentOptions;
  readonly #clock: Clock;
  readonly #constants: MiadConstants;
  readonly #periodMs: number;
  readonly #storeTimeoutMs: number;
  readonly #log: (line: string) => void;
  readonly #gpus: GpuControl[] = [];
  readonly #metrics: ReturnType<typeof agentMetrics>;
  #timer: Timer | undefined;
  #running: Promise<void> | undefined;
  #stopped = false;
  #starting: Promise<void> | undefined;
  /** When (agent clock) the store last answered; the start time before the first period. */
  #storeOkAtMs: number;
  #heldForStore = false;
  #resetForStore = false;

  constructor(options: GpuAgentOptions) {
    this.#o = options;
    this.#clock = options.clock ?? systemClock;
    this.#constants = options.miad ?? {};
    this.#periodMs = this.#constants.periodMs ?? MIAD_DEFAULTS.periodMs;
    this.#storeTimeoutMs = options.storeTimeoutMs ?? 30_000;
    if (!(this.#storeTimeoutMs > 0)) throw new RangeError(`storeTimeoutMs must be positive, got ${this.#storeTimeoutMs}`);
    const floor = options.defaultFloorFraction ?? 0.5;
    if (!(floor > 0 && floor <= 1)) throw new RangeError(`defaultFloorFraction must be in (0, 1], got ${floor}`);
    if (options.backends.size === 0) throw new RangeError('the agent needs at least one GPU mapped to a backend');
    this.#log = options.log ?? ((line) => console.log(line));
    this.#storeOkAtMs = this.#clock.now();
    this.#metrics = agentMetrics(this.registry, options.nodeId);
  }

  get gpus(): readonly GpuStatus[] {
    return this.#gpus.map((g) => ({ index: g.index, backendId: g.backendId, appliedMHz: g.appliedMHz, floorMHz: g.floorMHz, step: g.last }));
  }

  /** Checks privileges, resets every GPU (recovering from a crash), reads supported clocks, and starts the period timer. Once. */
  start(): Promise<void> {
    this.#starting ??= this.#start();
    return this.#starting;
  }

  async #start(): Promise<void> {
    const { driver, dryRun } = this.#o;
    if (!dryRun && !(this.#o.privileged ?? defaultPrivileged)(driver)) {
      throw new AgentStartError(`setting GPU clocks with ${driver.kind} needs root: run as root, use --driver zeusd, or --dry-run`);
    }
    const listed = new Set((await driver.listGpus()).map((g) => g.index));
    for (const [index, backendId] of [...this.#o.backends].sort((a, b) => a[0] - b[0])) {
      if (!listed.has(index)) throw new AgentStartError(`GPU ${index} is not on this node (${driver.kind} lists ${[...listed].join(',') || 'none'})`);
      const supportedMHz = await driver.supportedSmClocks(index);
      await this.#reset(index, 'start: clear any lock left by an earlier run');
      const config = this.#config(supportedMHz, 0);
      this.#gpus.push({ index, backendId, supportedMHz, state: initialState(config), appliedMHz: undefined, floorMHz: bounds(config).floorMHz, last: undefined });
      this.#log(`freesh agent: GPU ${index} → backend ${backendId}, ${supportedMHz[0]}–${supportedMHz.at(-1)} MHz (${supportedMHz.length} clocks)`);
    }
    // Stopped while starting: no period runs, so no lock is ever set.
    if (this.#stopped) return;
    const loop = (): void => {
      if (this.#stopped) return;
      this.#running = this.tick().finally(() => {
        this.#running = undefined;
        if (!this.#stopped) this.#timer = this.#clock.setTimer(loop, this.#periodMs);
      });
    };
    this.#timer = this.#clock.setTimer(loop, 0);
  }

  /** Resolves when the period in progress, if any, has ended (tests drive the loop with a virtual clock). */
  async settled(): Promise<void> {
    while (this.#running) await this.#running.catch(() => undefined);
  }

  /** Stops the loop and resets every GPU's clocks (unless dry-run). Safe to call twice. */
  async stop(): Promise<void> {
    if (this.#stopped) return;
    this.#stopped = true;
    // A stop during start waits for it: every GPU it reached is then reset below.
    await this.#starting?.catch(() => undefined);
    this.#timer?.cancel();
    await this.#running?.catch(() => undefined);
    for (const g of this.#gpus) {
      await this.#reset(g.index, 'stop').catch((err: unknown) => this.#log(`freesh agent: GPU ${g.index}: reset failed: ${String(err)}`));
      g.appliedMHz = undefined;
    }
  }

  /** One period. Errors are logged and counted; the loop goes on. */
  async tick(): Promise<void> {
    const nowMs = this.#clock.now();
    const { driver, store } = this.#o;
    let telemetry: readonly ReceivedTelemetry[] | undefined;
    let plan: PublishedPlan | undefined;
    try {
      [telemetry, plan] = await Promise.all([store.readTelemetry(), store.readPlan()]);
      if (store.degraded === true) throw new Error('the store serves from local state');
    } catch (err) {
      telemetry = undefined;
      this.#metrics.errors.labels('store').inc();
      if (!this.#heldForStore) this.#log(`freesh agent: state store unreachable (${String(err)}): holding clocks, default clocks after ${this.#storeTimeoutMs} ms`);
      this.#heldForStore = true;
    }
    this.#metrics.storeUp.set(telemetry ? 1 : 0);
    if (telemetry) this.#o.onTelemetry?.(telemetry);

    if (!telemetry) {
      if (!this.#resetForStore && nowMs - this.#storeOkAtMs >= this.#storeTimeoutMs) {
        this.#resetForStore = true;
        for (const g of this.#gpus) {
          await this.#reset(g.index, 'state store unreachable').catch(() => this.#metrics.errors.labels('driver').inc());
          g.appliedMHz = undefined;
          g.state = initialState(this.#config(g.supportedMHz, g.floorMHz));
        }
      }
    } else {
      if (this.#heldForStore) this.#log('freesh agent: state store back: controlling clocks again');
      this.#heldForStore = false;
      this.#resetForStore = false;
      this.#storeOkAtMs = nowMs;
      for (const g of this.#gpus) await this.#control(g, telemetry, plan);
    }

    // Read after any change, so what is published is the setting in force.
    let readings: readonly GpuTelemetry[] = [];
    try {
      readings = await driver.listGpus();
    } catch (err) {
      this.#metrics.errors.labels('driver').inc();
      this.#log(`freesh agent: reading GPUs failed: ${String(err)}`);
    }

    const publish: Promise<void>[] = [];
    for (const reading of readings) {
      const g = this.#gpus.find((x) => x.index === reading.index);
      if (!g) continue;
      let energyJ: number | undefined;
      try {
        energyJ = (await driver.energy(reading.index))?.joules;
      } catch {
        this.#metrics.errors.labels('driver').inc();
      }
      const labels = { gpu: String(reading.index), UUID: reading.uuid, modelName: reading.name, backend: g.backendId };
      this.#metrics.power.set(labels, reading.powerW);
      this.#metrics.smClock.set(labels, reading.smClockMHz);
      if (energyJ !== undefined) this.#metrics.energy.set(labels, energyJ * 1000);
      this.#metrics.target.set({ gpu: String(reading.index), backend: g.backendId }, g.appliedMHz ?? 0);
      this.#metrics.floor.set({ gpu: String(reading.index), backend: g.backendId }, g.floorMHz);
      if (!telemetry) continue;
      const values: Record<string, number> = { powerW: reading.powerW, smClockMHz: reading.smClockMHz, maxSmClockMHz: reading.maxSmClockMHz, floorMHz: g.floorMHz };
      if (energyJ !== undefined) values.energyJ = energyJ;
      if (g.appliedMHz !== undefined) values.targetMHz = g.appliedMHz;
      publish.push(store.putTelemetry({ source: `agent:${this.#o.nodeId}:gpu${reading.index}`, kind: GPU_TELEMETRY, backendId: g.backendId, values }, 3 * this.#periodMs));
    }
    for (const r of await Promise.allSettled(publish)) if (r.status === 'rejected') this.#metrics.errors.labels('store').inc();
  }

  #config(supportedMHz: readonly number[], floorMHz: number): MiadConfig {
    return miadConfig({ ...this.#constants, supportedMHz, floorMHz: floorMHz > 0 ? floorMHz : supportedMHz.at(-1)! * (this.#o.defaultFloorFraction ?? 0.5) });
  }

  async #control(g: GpuControl, telemetry: readonly ReceivedTelemetry[], plan: PublishedPlan | undefined): Promise<void> {
    const fraction = plan?.clockFraction[g.backendId];
    const config = this.#config(g.supportedMHz, typeof fraction === 'number' && fraction > 0 ? Math.min(1, fraction) * g.supportedMHz.at(-1)! : 0);
    g.floorMHz = bounds(config).floorMHz;
    const step = miadNext(config, g.state, sloSignal(telemetry, g.backendId));
    g.state = step.state;
    g.last = step;
    this.#metrics.actions.labels(step.action, step.reason).inc();
    if (step.clockMHz === g.appliedMHz) return;
    const minMHz = g.supportedMHz[0]!;
    const headroom = sloSignal(telemetry, g.backendId).headroom;
    const why = `${step.action} (${step.reason}${headroom === null ? '' : `, headroom ${headroom.toFixed(2)}`}), floor ${g.floorMHz} MHz`;
    if (this.#o.dryRun) {
      this.#log(`freesh agent: dry run: would lock GPU ${g.index} to ${minMHz},${step.clockMHz} MHz: ${why}`);
      g.appliedMHz = step.clockMHz;
      return;
    }
    try {
      await this.#o.driver.setClockRange(g.index, minMHz, step.clockMHz);
      g.appliedMHz = step.clockMHz;
      this.#log(`freesh agent: GPU ${g.index} locked to ${minMHz},${step.clockMHz} MHz: ${why}`);
    } catch (err) {
      this.#metrics.errors.labels('driver').inc();
      this.#log(`freesh agent: GPU ${g.index}: setting clocks failed: ${String(err)}`);
    }
  }

  async #reset(index: number, why: string): Promise<void> {
    if (this.#o.dryRun) {
      this.#log(`freesh agent: dry run: would reset GPU ${index} clocks (${why})`);
      return;
    }
    await this.#o.driver.resetClocks(index);
    this.#log(`freesh agent: GPU ${index} clocks reset (${why})`);
  }
}

/**
 * The SLO signal of one backend from the routers' records (one per replica, see sloKey): the least
 * headroom any router reports (null when every router says nothing ran), as old as the newest record. No record at all (none
 * published, or all expired): infinitely old, which the controller treats as a risk.
 */
export function sloSignal(records: readonly ReceivedTelemetry[], backendId: string): SloSignal {
  let headroom: number | null = null;
  let ageMs = Number.POSITIVE_INFINITY;
  const inFlightKey = sloKey(backendId, 'inFlight');
  const headroomKey = sloKey(backendId, 'headroom');
  for (const r of records) {
    if (r.kind !== SLO_TELEMETRY || !(inFlightKey in r.values)) continue;
    ageMs = Math.min(ageMs, r.ageMs);
    const h = r.values[headroomKey];
    if (typeof h === 'number' && Number.isFinite(h) && (headroom === null || h < headroom)) headroom = h;
  }
  return { headroom, ageMs };
}

/** DCGM-exporter's names where one fits (its labels too: gpu, UUID, modelName), freesh_agent_* for the controller. */
function agentMetrics(registry: Registry, nodeId: string) {
  registry.setDefaultLabels({ Hostname: nodeId });
  const gpuLabels = ['gpu', 'UUID', 'modelName', 'backend'] as const;
  return {
    power: new Gauge({ name: 'DCGM_FI_DEV_POWER_USAGE', help: 'Power draw (in W).', labelNames: gpuLabels, registers: [registry] }),
    smClock: new Gauge({ name: 'DCGM_FI_DEV_SM_CLOCK', help: 'SM clock frequency (in MHz).', labelNames: gpuLabels, registers: [registry] }),
    energy: new Gauge({ name: 'DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION', help: "Total energy consumption (in mJ): the GPU's counter where the driver reads one (zeusd), else power integrated since the agent started.", labelNames: gpuLabels, registers: [registry] }),
    target: new Gauge({ name: 'freesh_agent_clock_target_mhz', help: 'Top of the SM clock lock the agent set (0: default clocks).', labelNames: ['gpu', 'backend'], registers: [registry] }),
    floor: new Gauge({ name: 'freesh_agent_clock_floor_mhz', help: "The plan's clock floor for the GPU (MHz).", labelNames: ['gpu', 'backend'], registers: [registry] }),
    actions: new Counter({ name: 'freesh_agent_controller_steps_total', help: 'Controller periods by action and reason.', labelNames: ['action', 'reason'], registers: [registry] }),
    errors: new Counter({ name: 'freesh_agent_errors_total', help: 'Driver and store failures.', labelNames: ['source'], registers: [registry] }),
    storeUp: new Gauge({ name: 'freesh_agent_store_up', help: '1 while the state store answers.', registers: [registry] }),
  };
}
