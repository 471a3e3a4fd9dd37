import type { Outcome } from '../metrics/metrics.js';
import type { RequestType } from '../request/request-type.js';
import type { SloClass } from '../request/slo.js';
import type { Backend, CostEstimate, Prediction, RoutingRequest } from '../types.js';
import type { DecisionTrace } from '../schedule/orchestrator.js';

/** Where a request goes, and what the router expected it to cost there. */
export interface Placement {
  readonly backend: Backend;
  readonly prediction: Prediction;
  readonly cost: CostEstimate;
  readonly requestType: RequestType;
  readonly slo: SloClass;
  /** When the request should be finished (router clock, ms). */
  readonly deadlineMs: number;
  /** Soft filters the policy had to relax to place it (`deadline`: it is expected to be late). */
  readonly relaxed: readonly string[];
  readonly trace: DecisionTrace | undefined;
}

/** One request at one point of its life, as lifecycle plugins see it. Read-only. */
export interface RequestEvent {
  readonly request: RoutingRequest;
  readonly placement: Placement;
  /** Router clock (ms). */
  readonly nowMs: number;
}

/** A request on its way upstream. */
export interface SendEvent extends RequestEvent {
  /** The scheduling priority sent with it (0 when the backend does not take one). */
  readonly priority: number;
}

/** How a request that was sent upstream ended. */
export interface CompletionEvent extends RequestEvent {
  readonly outcome: Extract<Outcome, 'completed' | 'upstream-status' | 'upstream-dropped' | 'client-abort'>;
  /** Output tokens reported or counted in the response, when known. */
  readonly outputTokens: number | undefined;
  /** From sending to the backend's last byte (ms): the backend's service time, whoever read it. */
  readonly serviceMs: number;
}

/** A request that held a slot but was never served (refused, failed before any byte, or abandoned). */
export interface AbortEvent extends RequestEvent {
  readonly outcome: Outcome;
}

/**
 * State that follows requests — fair-share counters, prefill load and backlog, latency calibration,
 * planner demand, predictor feedback — lives in plugins with these hooks, in the order of a
 * request's life: `arrive` (predicted, before placement) → `place` (a backend chosen; again on
 * failover) → `admit` (a slot held) → `send` → `firstByte` → `complete`, or `abort` instead of
 * `complete` when an admitted request is never served.
 *
 * Contract: hooks are synchronous and cheap (they run on the request path); they read their event
 * and change only their own state; a hook that throws is counted and ignored (the router isolates
 * it), never failing the request. Every admitted request gets exactly one `complete` or `abort`.
 */
export interface LifecyclePlugin {
  readonly name: string;
  arrive?(request: RoutingRequest, prediction: Prediction, requestType: RequestType, nowMs: number): void;
  place?(event: RequestEvent): void;
  admit?(event: RequestEvent): void;
  send?(event: SendEvent): void;
  firstByte?(event: RequestEvent): void;
  complete?(event: CompletionEvent): void;
  abort?(event: AbortEvent): void;
}

type Hook = Exclude<keyof LifecyclePlugin, 'name'>;
const HOOKS: readonly Hook[] = ['arrive', 'place', 'admit', 'send', 'firstByte', 'complete', 'abort'];

/**
 * Calls every plugin's hook in registration order, isolating errors: a plugin that throws is
 * reported to `onError` and the others still run. Hooks no plugin has cost one empty loop.
 */
export class Lifecycle {
  readonly plugins: readonly LifecyclePlugin[];
  /**
   * Each hook's plugins with the hook bound, resolved once: calling `p[hook].call(p, event)` looked
   * the method up by name on every plugin at every hook of every request (a line of its own in the
   * request path's CPU profile).
   */
  readonly #byHook: Readonly<Record<Hook, readonly BoundHook[]>>;
  readonly #onError: (plugin: string, err: unknown) => void;

  constructor(plugins: readonly LifecyclePlugin[], onError: (plugin: string, err: unknown) => void) {
    const names = new Set<string>();
    for (const p of plugins) {
      if (names.has(p.name)) throw new TypeError(`Two lifecycle plugins are named \`${p.name}\``);
      names.add(p.name);
    }
    this.plugins = Object.freeze([...plugins]);
    const byHook = {} as Record<Hook, BoundHook[]>;
    for (const hook of HOOKS) {
      byHook[hook] = plugins
        .filter((p) => typeof p[hook] === 'function')
        .map((p) => ({ name: p.name, call: (p[hook] as (...args: never[]) => void).bind(p) as BoundHook['call'] }));
    }
    this.#byHook = byHook;
    this.#onError = onError;
  }

  arrive(request: RoutingRequest, prediction: Prediction, requestType: RequestType, nowMs: number): void {
    for (const p of this.#byHook.arrive) {
      try {
        (p.call as NonNullable<LifecyclePlugin['arrive']>)(request, prediction, requestType, nowMs);
      } catch (err) {
        this.#onError(p.name, err);
      }
    }
  }

  place(event: RequestEvent): void {
    this.#run('place', event);
  }

  admit(event: RequestEvent): void {
    this.#run('admit', event);
  }

  send(event: SendEvent): void {
    this.#run('send', event);
  }

  firstByte(event: RequestEvent): void {
    this.#run('firstByte', event);
  }

  complete(event: CompletionEvent): void {
    this.#run('complete', event);
  }

  abort(event: AbortEvent): void {
    this.#run('abort', event);
  }

  #run(hook: Exclude<Hook, 'arrive'>, event: RequestEvent): void {
    for (const p of this.#byHook[hook]) {
      try {
        (p.call as (e: RequestEvent) => void)(event);
      } catch (err) {
        this.#onError(p.name, err);
      }
    }
  }
}

interface BoundHook {
  readonly name: string;
  readonly call: (...args: never[]) => void;
}
