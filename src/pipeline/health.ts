import { CancelToken } from '../cancel.js';
import { describeCause } from '../errors.js';
import type { Clock, Timer } from '../clock.js';
import type { ClusterView } from '../state/cluster-view.js';
import type { Transport } from '../transport/transport.js';
import type { Backend } from '../types.js';
import type { BackendGuard } from './backend-guard.js';

/** An on-demand check (/healthz) asks the backends at most this often (ms). */
const CHECK_EVERY_MS = 2_000;

export interface FleetHealth {
  /** Backends the router may send work to now. */
  readonly usable: number;
  readonly total: number;
  /** With a shared state store: true while it serves from local state (Redis unreachable). */
  readonly stateDegraded?: boolean;
}

export interface HealthCheckOptions {
  readonly backends: readonly Backend[];
  /** The plain transport: a probe is not failed over. */
  readonly transport: Transport;
  readonly view: ClusterView;
  readonly clock: Clock;
  /** Hears each probe's verdict, and takes backends out of rotation and back. */
  readonly guard: BackendGuard;
  /** Path probed below each backend's baseURL, e.g. `/models`. */
  readonly probePath: string;
  /** Time between background rounds (ms); undefined: no background probing. */
  readonly probeIntervalMs: number | undefined;
  readonly probeTimeoutMs: number;
  /** Consecutive failed probes that take a backend out. */
  readonly unhealthyThreshold: number;
  /** How long a failed probe keeps a backend out if no later probe says otherwise (ms). */
  readonly unhealthyMs: number;
}

/**
 * The fleet's health as decisions see it, and as the backends answer: each is asked GET
 * `probePath`, in the background every `probeIntervalMs` and when /healthz asks (at most every
 * CHECK_EVERY_MS). `unhealthyThreshold` failures in a row (refused, timed out, 5xx) take a backend
 * out of rotation; one probe that passes puts it back at once, whatever ejected it. Probes run on
 * the injected clock's timers (the system clock's do not keep the process alive) and stop with
 * `stop()`, which also abandons probes on their way.
 */
export class HealthCheck {
  readonly #o: HealthCheckOptions;
  readonly #failures = new Map<string, number>();
  readonly #pending = new Set<CancelToken>();
  #round: Promise<void> | undefined;
  #checkedAtMs = Number.NEGATIVE_INFINITY;
  #timer: Timer | undefined;
  #stopped = false;

  constructor(options: HealthCheckOptions) {
    this.#o = options;
  }

  /** Starts background probing, if configured; the first round runs one interval from now. */
  start(): void {
    if (this.#o.probeIntervalMs === undefined || this.#stopped) return;
    const interval = this.#o.probeIntervalMs;
    const tick = (): void => {
      if (this.#stopped) return;
      void this.#probeAll().finally(() => {
        if (!this.#stopped) this.#timer = this.#o.clock.setTimer(tick, interval);
      });
    };
    this.#timer = this.#o.clock.setTimer(tick, interval);
  }

  /** Stops background probing and abandons probes in progress. */
  stop(): void {
    this.#stopped = true;
    this.#timer?.cancel();
    for (const cancel of this.#pending) cancel.abort();
  }

  /** From the cluster view, now. */
  now(): FleetHealth {
    const nowMs = this.#o.clock.now();
    let usable = 0;
    for (const b of this.#o.backends) if (this.#o.view.get(b.id, nowMs).healthy) usable++;
    return { usable, total: this.#o.backends.length };
  }

  /** After probing the backends, unless that was done in the last CHECK_EVERY_MS. */
  check(): Promise<FleetHealth> {
    const nowMs = this.#o.clock.now();
    if (!this.#round || nowMs - this.#checkedAtMs >= CHECK_EVERY_MS) {
      this.#checkedAtMs = nowMs;
      this.#round = this.#probeAll();
    }
    return this.#round.then(() => this.now());
  }

  #probeAll(): Promise<void> {
    return Promise.all(this.#o.backends.map((b) => this.#probeOne(b))).then(() => undefined);
  }

  async #probeOne(backend: Backend): Promise<void> {
    const { clock, transport, guard } = this.#o;
    if (this.#stopped) return;
    const cancel = new CancelToken();
    this.#pending.add(cancel);
    const timer = clock.setTimer(() => cancel.abort(new Error(`no answer within ${this.#o.probeTimeoutMs} ms`)), this.#o.probeTimeoutMs);
    let failure: string | undefined;
    try {
      const headers: Record<string, string> = backend.apiKey ? { authorization: `Bearer ${backend.apiKey}` } : {};
      const response = await transport.send(backend, { method: 'GET', path: this.#o.probePath, headers, signal: cancel });
      response.body.on('error', () => undefined).resume();
      if (response.status >= 500) failure = `answered ${response.status}`;
    } catch (err) {
      failure = cancel.aborted && cancel.reason instanceof Error ? cancel.reason.message : describeCause(err);
    } finally {
      timer.cancel();
      this.#pending.delete(cancel);
    }
    // A probe abandoned by stop() says nothing about the backend.
    if (this.#stopped) return;
    if (failure === undefined) {
      this.#failures.set(backend.id, 0);
      guard.probed(backend.id, 'pass', '', 0);
      return;
    }
    const failures = (this.#failures.get(backend.id) ?? 0) + 1;
    this.#failures.set(backend.id, failures);
    // Out until the next round can say otherwise, however the intervals and unhealthyMs compare.
    const forMs = Math.max(this.#o.unhealthyMs, (this.#o.probeIntervalMs ?? 0) + this.#o.probeTimeoutMs);
    guard.probed(backend.id, failures >= this.#o.unhealthyThreshold ? 'down' : 'fail', failure, forMs);
  }
}
