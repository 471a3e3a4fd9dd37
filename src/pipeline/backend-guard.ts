import type { Clock } from '../clock.js';
import type { ClusterView } from '../state/cluster-view.js';
import type { OutlierSink } from '../transport/outlier.js';
import { publishBackendEvent } from './backend-events.js';

export type CircuitState = 'closed' | 'open' | 'half-open';

/** Why a backend left rotation: consecutive failed requests, failed probes, or a refused connection. */
export type EjectReason = 'outlier' | 'probe' | 'unreachable';

export interface BackendGuardOptions {
  readonly backendIds: readonly string[];
  readonly view: ClusterView;
  readonly clock: Clock;
  /** Consecutive failures that eject a backend. */
  readonly consecutiveFailures: number;
  /** First ejection's length (ms); the n-th consecutive one lasts n times as long, up to `maxEjectionMs`. */
  readonly baseEjectionMs: number;
  readonly maxEjectionMs: number;
  /** Most of the fleet (percent) ejected at once by outlier detection; at least one backend. */
  readonly maxEjectedPercent: number;
  /** Told of each ejection (for metrics). */
  readonly onEject?: (backendId: string, reason: EjectReason) => void;
  readonly onStoreError: (err: unknown) => void;
}

interface Circuit {
  state: CircuitState;
  /** Consecutive failed requests since the last success. */
  failures: number;
  /** Consecutive ejections without a successful request between them: the backoff multiplier. */
  ejections: number;
  /** End of the current ejection (router clock). */
  openUntilMs: number;
  /** A half-open trial request is on its way. */
  trial: boolean;
  /** Out of rotation until then (router clock), besides the circuit, because probes failed or it refused a connection; a passing probe ends it. */
  downUntilMs: number;
}

/**
 * Passive outlier detection and a circuit breaker per backend, folded into one state machine since
 * an ejection is the circuit's open state:
 * - closed: requests flow; `consecutiveFailures` failures in a row eject the backend (open) for
 *   base × n ms (n-th ejection in a row, capped), unless `maxEjectedPercent` of the fleet already is;
 * - open: the cluster view (through the state store, so every replica agrees) keeps it out of
 *   placement; a send that still reaches it is refused, so it fails over before reaching the client;
 * - half-open: once the ejection ends, the next request is the single trial; while it runs the
 *   backend stays out of placement. A non-5xx answer closes the circuit; a failure opens it again for
 *   longer. A passing probe closes it at once from either state.
 * The trial is per replica; the others see the backend out of rotation while it runs.
 */
export class BackendGuard implements OutlierSink {
  readonly #o: BackendGuardOptions;
  readonly #circuits = new Map<string, Circuit>();

  constructor(options: BackendGuardOptions) {
    this.#o = options;
    for (const id of options.backendIds) this.#circuits.set(id, { state: 'closed', failures: 0, ejections: 0, openUntilMs: 0, trial: false, downUntilMs: 0 });
  }

  /** The circuit's state now (open turns half-open when its ejection has ended). */
  state(backendId: string): CircuitState {
    const c = this.#circuits.get(backendId);
    if (!c) return 'closed';
    if (c.state === 'open' && this.#o.clock.now() >= c.openUntilMs) this.#transition(backendId, c, 'half-open', 'the ejection ended');
    return c.state;
  }

  /**
   * Asked before each send to `backendId`: 'go' for a closed circuit, 'trial' for the single trial of
   * a half-open one (report its verdict with `trialAnswered`), 'refuse' otherwise.
   */
  admit(backendId: string): 'go' | 'trial' | 'refuse' {
    const c = this.#circuits.get(backendId);
    if (!c) return 'go';
    const state = this.state(backendId);
    if (state === 'closed') return 'go';
    if (state === 'open' || c.trial) return 'refuse';
    c.trial = true;
    // Out of placement, here and on every replica, until the trial answers (bounded in case this replica dies).
    this.#mark(backendId, this.#o.maxEjectionMs);
    return 'trial';
  }

  /** A trial's response headers arrived: a non-5xx status closes the circuit. Without a verdict (the client left), the trial is given back. */
  trialAnswered(backendId: string, verdict: 'ok' | 'failed' | 'none', reason: string): void {
    const c = this.#circuits.get(backendId);
    if (!c || !c.trial) return;
    c.trial = false;
    if (verdict === 'ok') {
      c.failures = 0;
      c.ejections = 0;
      this.#close(backendId, c, `trial request succeeded`);
    } else if (verdict === 'failed') {
      // The trial's hold is replaced by the (shorter) ejection, not extended by it: marks only grow.
      void this.#o.view.markHealthy(backendId).catch(this.#o.onStoreError);
      this.#eject(backendId, c, `trial request failed: ${reason}`);
    } else if (c.state === 'half-open' && !this.#isDown(c)) {
      void this.#o.view.markHealthy(backendId).catch(this.#o.onStoreError);
    }
  }

  /** A request on a closed circuit ended well (any status below 500, the whole body read). */
  succeeded(backendId: string): void {
    const c = this.#circuits.get(backendId);
    if (!c || c.state !== 'closed') return;
    c.failures = 0;
    c.ejections = 0;
  }

  /** A request failed on the backend: 5xx, refused connection, timeout or a broken body. */
  failed(backendId: string, reason: string): void {
    const c = this.#circuits.get(backendId);
    if (!c || c.state !== 'closed') return;
    c.failures++;
    if (c.failures < this.#o.consecutiveFailures) return;
    if (this.#ejectedCount() >= this.#maxEjected()) return;
    this.#eject(backendId, c, `${c.failures} consecutive failures, the last: ${reason}`);
  }

  /**
   * A probe's verdict. A pass puts the backend back at once (whatever ejected it); `down` says the
   * failed probes reached the threshold, and it is out for `forMs` (renewed by each failed round).
   */
  probed(backendId: string, verdict: 'pass' | 'down' | 'fail', reason: string, forMs: number): void {
    const c = this.#circuits.get(backendId);
    if (!c) return;
    if (verdict === 'pass') {
      const wasOut = this.#isDown(c) || c.state !== 'closed';
      c.downUntilMs = 0;
      c.trial = false;
      this.#transition(backendId, c, 'closed', 'a probe passed');
      if (wasOut) publishBackendEvent({ kind: 'restored', backendId, reason: 'a probe passed' });
      // Also when only another replica's mark keeps it out; a backend in rotation costs no store write.
      if (wasOut || !this.#o.view.get(backendId, this.#o.clock.now()).healthy) void this.#o.view.markHealthy(backendId).catch(this.#o.onStoreError);
      return;
    }
    if (verdict === 'fail') return;
    this.#down(backendId, c, 'probe', `probe failed: ${reason}`, forMs);
  }

  /** A connection to the backend was refused: it is out for `forMs`, or until a probe passes. */
  unreachable(backendId: string, reason: string, forMs: number): void {
    const c = this.#circuits.get(backendId);
    if (c) this.#down(backendId, c, 'unreachable', `unreachable: ${reason}`, forMs);
  }

  #down(backendId: string, c: Circuit, why: EjectReason, reason: string, forMs: number): void {
    this.#mark(backendId, forMs);
    const wasDown = this.#isDown(c);
    c.downUntilMs = Math.max(c.downUntilMs, this.#o.clock.now() + forMs);
    if (wasDown) return;
    this.#o.onEject?.(backendId, why);
    publishBackendEvent({ kind: 'ejected', backendId, reason, untilMs: why === 'probe' ? undefined : this.#o.clock.now() + forMs });
  }

  #eject(backendId: string, c: Circuit, reason: string): void {
    c.ejections++;
    c.failures = 0;
    const forMs = Math.min(this.#o.baseEjectionMs * c.ejections, this.#o.maxEjectionMs);
    c.openUntilMs = this.#o.clock.now() + forMs;
    this.#mark(backendId, forMs);
    this.#o.onEject?.(backendId, 'outlier');
    publishBackendEvent({ kind: 'ejected', backendId, reason, untilMs: c.openUntilMs });
    this.#transition(backendId, c, 'open', reason);
  }

  #close(backendId: string, c: Circuit, reason: string): void {
    this.#transition(backendId, c, 'closed', reason);
    if (!this.#isDown(c)) {
      publishBackendEvent({ kind: 'restored', backendId, reason });
      void this.#o.view.markHealthy(backendId).catch(this.#o.onStoreError);
    }
  }

  #transition(backendId: string, c: Circuit, state: CircuitState, reason: string): void {
    if (c.state === state) return;
    c.state = state;
    publishBackendEvent({ kind: 'circuit', backendId, state, reason });
  }

  #isDown(c: Circuit): boolean {
    return c.downUntilMs > this.#o.clock.now();
  }

  #mark(backendId: string, forMs: number): void {
    void this.#o.view.markUnhealthy(backendId, forMs, this.#o.clock.now()).catch(this.#o.onStoreError);
  }

  #ejectedCount(): number {
    let n = 0;
    for (const c of this.#circuits.values()) if (c.state !== 'closed') n++;
    return n;
  }

  #maxEjected(): number {
    return Math.max(1, Math.floor((this.#circuits.size * this.#o.maxEjectedPercent) / 100));
  }
}
