import { CancelToken } from '../cancel.js';
import type { Clock } from '../clock.js';
import type { ClusterView } from '../state/cluster-view.js';
import type { Transport } from '../transport/transport.js';
import type { Backend } from '../types.js';

/** A health check asks the backends at most this often (ms), and waits for each at most PROBE_TIMEOUT_MS. */
const PROBE_EVERY_MS = 2_000;
const PROBE_TIMEOUT_MS = 1_000;

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
  /** How long a backend that fails a probe stays out of rotation (ms). */
  readonly unhealthyMs: number;
  readonly onStoreError: (err: unknown) => void;
}

/**
 * The fleet's health as decisions see it, and, on request, as the backends answer: each is asked
 * GET `/models` (at most every PROBE_EVERY_MS); one that refuses the connection, times out or
 * answers 5xx is taken out of rotation, one that answers is put back. So a health endpoint tells
 * the truth without traffic.
 */
export class HealthCheck {
  readonly #o: HealthCheckOptions;
  #probe: Promise<void> | undefined;
  #probedAtMs = 0;

  constructor(options: HealthCheckOptions) {
    this.#o = options;
  }

  /** From the cluster view, now. */
  now(): FleetHealth {
    const nowMs = this.#o.clock.now();
    let usable = 0;
    for (const b of this.#o.backends) if (this.#o.view.get(b.id, nowMs).healthy) usable++;
    return { usable, total: this.#o.backends.length };
  }

  /** After probing the backends, unless that was done in the last PROBE_EVERY_MS. */
  check(): Promise<FleetHealth> {
    const nowMs = this.#o.clock.now();
    if (!this.#probe || nowMs - this.#probedAtMs >= PROBE_EVERY_MS) {
      this.#probedAtMs = nowMs;
      this.#probe = Promise.all(this.#o.backends.map((b) => this.#probeOne(b))).then(() => undefined);
    }
    return this.#probe.then(() => this.now());
  }

  async #probeOne(backend: Backend): Promise<void> {
    const { clock, transport, view } = this.#o;
    const cancel = new CancelToken();
    const timer = clock.setTimer(() => cancel.abort(), PROBE_TIMEOUT_MS);
    let healthy: boolean;
    try {
      const headers: Record<string, string> = backend.apiKey ? { authorization: `Bearer ${backend.apiKey}` } : {};
      const response = await transport.send(backend, { method: 'GET', path: '/models', headers, signal: cancel });
      response.body.resume();
      healthy = response.status < 500;
    } catch {
      healthy = false;
    } finally {
      timer.cancel();
    }
    const marked = healthy ? view.markHealthy(backend.id) : view.markUnhealthy(backend.id, this.#o.unhealthyMs, clock.now());
    await marked.catch(this.#o.onStoreError);
  }
}
