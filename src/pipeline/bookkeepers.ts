/**
 * The router's own lifecycle plugins: the state that follows requests and that costing, queue order
 * and planning read. Each keeps its state private and changes it only from its hooks.
 */
import { LatencyCalibration } from '../cost/latency-calibration.js';
import type { Plan } from '../plan/plan.js';
import type { PoolPlanner } from '../plan/pool-planner.js';
import type { Predictor } from '../predict/predictor.js';
import { FairShare } from '../queue/fair-share.js';
import type { RequestType } from '../request/request-type.js';
import { PrefillBacklog } from '../state/prefill-backlog.js';
import { RateMeter } from '../state/rate-meter.js';
import type { Prediction, RoutingRequest } from '../types.js';
import type { AbortEvent, CompletionEvent, LifecyclePlugin, RequestEvent, SendEvent } from './lifecycle.js';

/** Time constant of the per-backend prefill-load estimate: short enough to see a burst coming. */
export const PREFILL_LOAD_TAU_MS = 10_000;

/** One backend's prefill load and backlog, as costing reads them. */
export interface BackendPrefill {
  /** Prompt tokens per second sent to the backend lately. */
  promptTokensPerS(nowMs: number): number;
  /** Tokens still to prefill ahead of a prompt of `priority`, draining at `tokensPerMs` from now on. */
  backlogTokens(nowMs: number, tokensPerMs: number, priority: number): number;
}

class PrefillState implements BackendPrefill {
  readonly load = new RateMeter(PREFILL_LOAD_TAU_MS);
  readonly backlog = new PrefillBacklog();

  promptTokensPerS(nowMs: number): number {
    return this.load.perSecond(nowMs);
  }

  backlogTokens(nowMs: number, tokensPerMs: number, priority: number): number {
    return this.backlog.pending(nowMs, tokensPerMs, priority);
  }
}

/**
 * Prompt tokens sent to each backend: as a decaying rate (prefill load, which stretches everyone's
 * time between tokens) and as a backlog not yet prefilled (which delays the next prompt's first token).
 */
export class PrefillTracker implements LifecyclePlugin {
  readonly name = 'prefill';
  readonly #backends = new Map<string, PrefillState>();

  constructor(backendIds: readonly string[]) {
    for (const id of backendIds) this.#backends.set(id, new PrefillState());
  }

  /** A backend's load and backlog, for a reader that looks it up once and reads it at every decision. */
  of(backendId: string): BackendPrefill | undefined {
    return this.#backends.get(backendId);
  }

  /** Prompt tokens per second sent to the backend lately. */
  promptTokensPerS(backendId: string, nowMs: number): number {
    return this.#backends.get(backendId)?.promptTokensPerS(nowMs) ?? 0;
  }

  /** Tokens still to prefill ahead of a prompt of `priority`, draining at `tokensPerMs` from now on. */
  backlogTokens(backendId: string, nowMs: number, tokensPerMs: number, priority: number): number {
    return this.#backends.get(backendId)?.backlogTokens(nowMs, tokensPerMs, priority) ?? 0;
  }

  send({ request, placement, nowMs, priority }: SendEvent): void {
    const backend = this.#backends.get(placement.backend.id);
    backend?.load.add(request.promptTokens, nowMs);
    backend?.backlog.add(request.promptTokens, nowMs, priority);
  }
}

/** Each backend's observed ÷ modelled service time, from completed requests (see LatencyCalibration). */
export class LatencyCalibrator implements LifecyclePlugin {
  readonly name = 'latency-calibration';
  readonly #calibration = new LatencyCalibration();
  /** Each factor as a field, kept equal to the calibration's: read per candidate without a lookup. */
  readonly #factors = new Map<string, { factor: number }>();

  factor(backendId: string): number {
    return this.#calibration.factor(backendId);
  }

  /** A backend's factor as a live field, for a reader that looks it up once. */
  of(backendId: string): { readonly factor: number } {
    let entry = this.#factors.get(backendId);
    if (!entry) this.#factors.set(backendId, (entry = { factor: this.#calibration.factor(backendId) }));
    return entry;
  }

  complete({ placement, outcome, outputTokens, serviceMs }: CompletionEvent): void {
    if (outcome !== 'completed' || outputTokens === undefined) return;
    const { cost } = placement;
    // The model's service time for the true length, against the time the backend took to send its
    // last byte (not the client's reading it: a slow reader must not look like a slow backend).
    const modelledMs = cost.ttftMs - cost.waitMs + Math.max(0, outputTokens - 1) * cost.tbtMs;
    const id = placement.backend.id;
    this.#calibration.observe(id, modelledMs, serviceMs);
    const entry = this.#factors.get(id);
    if (entry) entry.factor = this.#calibration.factor(id);
  }
}

/**
 * Tenants' virtual token counters: charged the predicted service at admission, corrected by the
 * true length on completion, refunded when the backend never served the request.
 */
export class FairShareAccounting implements LifecyclePlugin {
  readonly name = 'fair-share';
  readonly counters = new FairShare();

  admit({ request, placement }: RequestEvent): void {
    this.counters.charge(request.tenant, request.promptTokens + FairShare.OUTPUT_WEIGHT * placement.prediction.outputTokensP50);
  }

  complete({ request, placement, outputTokens }: CompletionEvent): void {
    if (outputTokens !== undefined) this.counters.charge(request.tenant, FairShare.OUTPUT_WEIGHT * (outputTokens - placement.prediction.outputTokensP50));
  }

  abort({ request, placement }: AbortEvent): void {
    this.counters.charge(request.tenant, -(request.promptTokens + FairShare.OUTPUT_WEIGHT * placement.prediction.outputTokensP50));
  }
}

/** The planner's demand forecast (every arrival) and its view of how the plan is followed (every placement). */
export class PlannerFeed implements LifecyclePlugin {
  readonly name = 'planner';
  readonly #planner: PoolPlanner;

  constructor(planner: PoolPlanner) {
    this.#planner = planner;
  }

  arrive(request: RoutingRequest, prediction: Prediction, requestType: RequestType): void {
    this.#planner.observe(requestType, request.promptTokens, prediction.outputTokensP50, request.arrivalMs);
  }

  place({ placement }: RequestEvent): void {
    this.#planner.assign(placement.requestType, placement.backend.id);
  }
}

/** True output lengths back to the predictor, which corrects its bias and fine-tunes on them. */
export class PredictorFeedback implements LifecyclePlugin {
  readonly name = 'predictor-feedback';
  readonly #predictor: Predictor;

  constructor(predictor: Predictor) {
    this.#predictor = predictor;
  }

  complete({ request, outcome, outputTokens }: CompletionEvent): void {
    if (outcome === 'completed' && outputTokens !== undefined) this.#predictor.observe?.(request, outputTokens);
  }
}

/** One backend's power as placement reads it. */
export interface BackendPower {
  /** The plan parks it. */
  parked: boolean;
  /** When it can serve (router clock, ms): the end of its last boot. */
  readyAtMs: number;
}

/**
 * Which backends are powered off and when booting ones can serve, for plans that power parked
 * instances off (`plan.parkedPower: off`). A backend the plan parks is off once nothing is in
 * flight there; one that a plan brings back, or that a request is placed on while off, serves
 * `bootMs` later. Placement adds that wait to the request's cost, so the deadline filter keeps
 * requests off booting and powered-off backends unless nothing else can meet them. Replicas follow
 * the same plans and so see the same boots; one that a request on another replica started is seen
 * by the rest only through that backend's leases.
 */
export class PowerStates implements LifecyclePlugin {
  readonly name = 'power';
  readonly #bootMs: number;
  readonly #inFlight: (backendId: string, nowMs: number) => number;
  readonly #states = new Map<string, BackendPower>();

  constructor(backendIds: readonly string[], bootMs: number, inFlight: (backendId: string, nowMs: number) => number) {
    this.#bootMs = bootMs;
    this.#inFlight = inFlight;
    for (const id of backendIds) this.#states.set(id, { parked: false, readyAtMs: Number.NEGATIVE_INFINITY });
  }

  of(backendId: string): BackendPower | undefined {
    return this.#states.get(backendId);
  }

  /** A new plan in force: the powered-off backends it brings back start booting now. */
  follow(plan: Plan, nowMs: number): void {
    for (const [id, state] of this.#states) {
      const active = plan.active.has(id);
      if (active) this.#boot(id, state, nowMs);
      state.parked = !active;
    }
  }

  /** Time until the backend can serve a request sent now (ms), given what is in flight there. */
  readyInMs(state: BackendPower, inFlight: number, nowMs: number): number {
    if (state.parked && inFlight === 0 && state.readyAtMs <= nowMs) return this.#bootMs;
    return Math.max(0, state.readyAtMs - nowMs);
  }

  /** A request placed on a powered-off backend boots it. */
  place({ placement, nowMs }: RequestEvent): void {
    const id = placement.backend.id;
    const state = this.#states.get(id);
    if (state) this.#boot(id, state, nowMs);
  }

  #boot(id: string, state: BackendPower, nowMs: number): void {
    if (state.parked && state.readyAtMs <= nowMs && this.#inFlight(id, nowMs) === 0) state.readyAtMs = nowMs + this.#bootMs;
  }
}
