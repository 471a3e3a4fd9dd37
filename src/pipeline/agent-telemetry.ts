/**
 * The router's side of the GPU agents (`freesh agent`, src/agent/agent.ts), through the state store:
 *   - it publishes, every `sloSignalMs` and per backend, the SLO signal the agents' clock
 *     controllers read: the least headroom among the backend's requests (in flight, and finished
 *     since the last publication), 1 = nothing of the budget used, 0 = on target, negative = late;
 *     none when nothing ran (the agent may then lower clocks);
 *   - it reads the agents' GPU records and gives the cost model, per backend, measured power ÷
 *     the profile's modelled power at the backend's batch and planned clock, while fresh.
 */
import type { Clock, Timer } from '../clock.js';
import type { FrequencyModel } from '../cost/frequency.js';
import { decodePowerAtW } from '../cost/profiles.js';
import type { ReceivedTelemetry, StateStore } from '../state/store.js';
import type { Backend, RoutingRequest } from '../types.js';
import type { AbortEvent, CompletionEvent, LifecyclePlugin, RequestEvent, SendEvent } from './lifecycle.js';

/**
 * `kind` of a replica's SLO-signal record: one record per replica (`router:<replicaId>`), one write
 * a period whatever the fleet's size, with per backend `<id>/inFlight` and, when something ran,
 * `<id>/headroom` (see sloKey).
 */
export const SLO_TELEMETRY = 'slo';

/** The key of a backend's figure in an SLO-signal record (backend ids never hold `/`). */
export function sloKey(backendId: string, figure: 'headroom' | 'inFlight'): string {
  return `${backendId}/${figure}`;
}
/** `kind` of an agent's per-GPU records: `values.powerW`, `smClockMHz`, `maxSmClockMHz`, `energyJ`, `targetMHz`. */
export const GPU_TELEMETRY = 'gpu';

/**
 * Measured over modelled power is kept within these bounds: outside them the reading, or the
 * GPU-to-backend mapping, is wrong rather than the profile (an H100 profile's idle-to-full range is
 * about 3×), and a wild factor would steer every decision.
 */
export const POWER_FACTOR_MIN = 0.25;
export const POWER_FACTOR_MAX = 4;

/** The least headroom among the requests of one backend, in flight and finished since the last publication. */
export function requestHeadroom(deadlineMs: number, arrivalMs: number, nowMs: number, remainingMs: number): number {
  const budgetMs = Math.max(1, deadlineMs - arrivalMs);
  return (deadlineMs - nowMs - remainingMs) / budgetMs;
}

interface Running {
  readonly deadlineMs: number;
  readonly arrivalMs: number;
  readonly sentMs: number;
  /** The cost model's service time (ms), sending to last token. */
  readonly serviceMs: number;
  readonly tbtTargetMs: number;
  firstByteMs: number | undefined;
}

interface PerBackend {
  /** Keyed by the request itself: its id is the client's `x-request-id`, which two requests may share. */
  readonly running: Map<RoutingRequest, Running>;
  /** Least headroom of requests finished since the last publication. */
  finished: number | undefined;
}

export interface AgentTelemetryOptions {
  readonly store: StateStore;
  readonly clock: Clock;
  /** Requests in flight on a backend now, across replicas. */
  readonly inFlight: (backendId: string, nowMs: number) => number;
  readonly backends: readonly Backend[];
  readonly frequency: FrequencyModel;
  /** The planned clock fraction of a backend (1 without a plan). */
  readonly clockFraction: (backendId: string) => number;
  /** This replica's name: its record is `router:<replicaId>`. */
  readonly replicaId: string;
  /** Publication and reading period (ms); 0 neither publishes nor reads. */
  readonly periodMs: number;
  readonly freshMs: number;
  readonly onError: (err: unknown) => void;
}

export class AgentTelemetry implements LifecyclePlugin {
  readonly name = 'agent-telemetry';
  readonly #o: AgentTelemetryOptions;
  readonly #backends = new Map<string, PerBackend>();
  readonly #byId: ReadonlyMap<string, Backend>;
  /** Per backend: the measured/modelled power factor and when (router clock) it was read. */
  readonly #power = new Map<string, { factor: number; atMs: number }>();
  #timer: Timer | undefined;
  #stopped = false;

  constructor(options: AgentTelemetryOptions) {
    this.#o = options;
    this.#byId = new Map(options.backends.map((b) => [b.id, b]));
    for (const b of options.backends) this.#backends.set(b.id, { running: new Map(), finished: undefined });
  }

  start(): void {
    if (this.#o.periodMs <= 0 || this.#timer) return;
    const tick = (): void => {
      if (this.#stopped) return;
      void this.tick().finally(() => {
        if (!this.#stopped) this.#timer = this.#o.clock.setTimer(tick, this.#o.periodMs);
      });
    };
    this.#timer = this.#o.clock.setTimer(tick, this.#o.periodMs);
  }

  stop(): void {
    this.#stopped = true;
    this.#timer?.cancel();
  }

  send(event: SendEvent): void {
    const { request, placement, nowMs } = event;
    this.#backends.get(placement.backend.id)?.running.set(request, {
      deadlineMs: placement.deadlineMs,
      arrivalMs: request.arrivalMs,
      sentMs: nowMs,
      serviceMs: Math.max(0, placement.cost.e2eMs - placement.cost.waitMs),
      tbtTargetMs: placement.slo.tbtMs,
      firstByteMs: undefined,
    });
  }

  firstByte(event: RequestEvent): void {
    const running = this.#backends.get(event.placement.backend.id)?.running.get(event.request);
    if (running) running.firstByteMs = event.nowMs;
  }

  complete(event: CompletionEvent): void {
    const state = this.#backends.get(event.placement.backend.id);
    const running = state?.running.get(event.request);
    if (!state || !running) return;
    state.running.delete(event.request);
    if (event.outcome !== 'completed') return;
    let headroom = requestHeadroom(running.deadlineMs, running.arrivalMs, event.nowMs, 0);
    // The time between tokens it got, against its class's target: what a clock cut stretches first.
    const tokens = event.outputTokens ?? 0;
    if (running.firstByteMs !== undefined && tokens > 1) {
      const tbtMs = (event.nowMs - running.firstByteMs) / (tokens - 1);
      headroom = Math.min(headroom, 1 - tbtMs / running.tbtTargetMs);
    }
    state.finished = state.finished === undefined ? headroom : Math.min(state.finished, headroom);
  }

  abort(event: AbortEvent): void {
    this.#backends.get(event.placement.backend.id)?.running.delete(event.request);
  }

  /** The least headroom on a backend now (see SloSignal); undefined when nothing ran since the last publication. */
  headroom(backendId: string, nowMs: number): number | undefined {
    const state = this.#backends.get(backendId);
    if (!state) return undefined;
    let least = state.finished;
    for (const r of state.running.values()) {
      // A request past its expected service time has, at best, nothing left to do.
      const remainingMs = Math.max(0, r.serviceMs - (nowMs - r.sentMs));
      const h = requestHeadroom(r.deadlineMs, r.arrivalMs, nowMs, remainingMs);
      if (least === undefined || h < least) least = h;
    }
    return least;
  }

  /** Measured ÷ modelled power of a backend, while an agent's reading is fresh; 1 otherwise. */
  powerFactor(backendId: string, nowMs: number): number {
    const entry = this.#power.get(backendId);
    return entry && nowMs - entry.atMs <= this.#o.freshMs ? entry.factor : 1;
  }

  /** One period: publish every backend's signal, then read the agents' GPU records. */
  async tick(): Promise<void> {
    const o = this.#o;
    const nowMs = o.clock.now();
    // Records outlive a few missed periods, not a dead replica for long.
    const ttlMs = Math.max(3 * o.periodMs, 1_000);
    const values: Record<string, number> = {};
    for (const [backendId, state] of this.#backends) {
      const headroom = this.headroom(backendId, nowMs);
      state.finished = undefined;
      values[sloKey(backendId, 'inFlight')] = state.running.size;
      if (headroom !== undefined) values[sloKey(backendId, 'headroom')] = headroom;
    }
    const results = await Promise.allSettled([o.store.putTelemetry({ source: `router:${o.replicaId}`, kind: SLO_TELEMETRY, values }, ttlMs), this.#readPower(nowMs)]);
    for (const r of results) if (r.status === 'rejected') o.onError(r.reason);
  }

  async #readPower(nowMs: number): Promise<void> {
    const o = this.#o;
    const records = await o.store.readTelemetry();
    const measured = measuredPowerW(records, o.freshMs);
    for (const [backendId, powerW] of measured) {
      const backend = this.#byId.get(backendId);
      if (!backend) continue;
      const inFlight = o.inFlight(backendId, nowMs);
      const modelledW = decodePowerAtW(backend.profile, inFlight, o.frequency.dynamicPower(o.clockFraction(backendId)));
      if (!(modelledW > 0)) continue;
      const factor = Math.min(POWER_FACTOR_MAX, Math.max(POWER_FACTOR_MIN, powerW / modelledW));
      this.#power.set(backendId, { factor, atMs: nowMs });
    }
  }
}

/** Sum of the fresh GPU readings per backend (a backend may span several GPUs). */
export function measuredPowerW(records: readonly ReceivedTelemetry[], freshMs: number): Map<string, number> {
  const out = new Map<string, number>();
  for (const r of records) {
    const powerW = r.values.powerW;
    if (r.kind !== GPU_TELEMETRY || r.backendId === undefined || r.ageMs > freshMs || !(typeof powerW === 'number' && Number.isFinite(powerW) && powerW >= 0)) continue;
    out.set(r.backendId, (out.get(r.backendId) ?? 0) + powerW);
  }
  return out;
}
