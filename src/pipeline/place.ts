import { channel } from 'node:diagnostics_channel';
import type { CarbonSignal } from '../carbon/signal.js';
import type { Rng } from '../clock.js';
import type { RouterConfig } from '../config/schema.js';
import { type CostInput, type CostModel, prefillTokensPerMs } from '../cost/cost-model.js';
import type { FrequencyModel } from '../cost/frequency.js';
import { deadlineUnmeetable, noBackend } from '../errors.js';
import type { Plan, PlanView } from '../plan/plan.js';
import { typeOf } from '../request/request-type.js';
import { type SloClass, ttftTargetMs } from '../request/slo.js';
import { decide, type PluginError } from '../schedule/orchestrator.js';
import type { DecisionContext, Policy } from '../schedule/policy.js';
import type { BackendView, ClusterView } from '../state/cluster-view.js';
import type { Backend, Candidate, Prediction, RoutingRequest } from '../types.js';
import { type BackendPower, type BackendPrefill, PREFILL_LOAD_TAU_MS, type LatencyCalibrator, type PowerStates, type PrefillTracker } from './bookkeepers.js';
import type { Placement } from './lifecycle.js';

/**
 * Published on `freesh:decision` when someone subscribes (node:diagnostics_channel): costs nothing
 * otherwise. `{ request, trace, context }`: the context holds every costed candidate, read-only.
 */
export const decisionChannel = channel('freesh:decision');

export interface PlacerOptions {
  readonly config: RouterConfig;
  readonly policy: Policy;
  readonly costModel: CostModel;
  readonly frequency: FrequencyModel;
  readonly carbon: CarbonSignal;
  readonly rng: Rng;
  readonly view: ClusterView;
  readonly prefill: PrefillTracker;
  readonly latency: LatencyCalibrator;
  /** Boots and powered-off backends, when parked instances are powered off. */
  readonly power: PowerStates | undefined;
  /** A backend's admission queue in this router (its `waiting` requests), looked up once per backend. */
  readonly queue: (backendId: string) => { readonly waiting: number };
  readonly plan: () => PlanView | undefined;
  /** Measured ÷ modelled power of a backend (GPU agents' readings); 1, or absent, without one. */
  readonly powerFactor?: ((backendId: string, nowMs: number) => number) | undefined;
  readonly onPluginErrors: (errors: readonly PluginError[]) => void;
}

/** What costing reads of one backend, looked up once: each is a live object read at every decision. */
interface Handle {
  readonly backend: Backend;
  readonly view: BackendView;
  readonly queue: { readonly waiting: number };
  readonly prefill: BackendPrefill | undefined;
  readonly latency: { readonly factor: number };
  readonly power: BackendPower | undefined;
  readonly site: SiteCarbon;
}

/** A site's carbon intensity, read once per decision for all its backends. */
interface SiteCarbon {
  decision: number;
  gramsPerKWh: number;
}

/** The handles of one pool, in its order, and the clock fractions of the plan they were read from. */
interface PoolHandles {
  readonly handles: readonly Handle[];
  plan: Plan | undefined;
  clockFractions: Float64Array;
}

/**
 * Costs every backend that serves a request's model and runs the policy over them. Reads state and
 * changes none: placing a request twice gives the same answer, and a placement that is never used
 * leaves no trace.
 */
export class Placer {
  readonly #o: PlacerOptions;
  /**
   * Per pool (the router's array of a model's backends), each backend's state objects: a decision
   * reads them by position. Looking each up by id per candidate (view, queue, prefill, latency,
   * carbon: six map lookups) was a fifth of bench:decision's profile at 1,000 backends.
   */
  readonly #pools = new WeakMap<readonly Backend[], PoolHandles>();
  readonly #sites = new Map<string, SiteCarbon>();
  #decision = 0;
  /**
   * The cost model's input, refilled for each candidate (see CostModel): made from the first
   * candidate's figures so its fields start with the types they keep.
   */
  #input: Mutable<CostInput> | undefined;

  constructor(options: PlacerOptions) {
    this.#o = options;
  }

  /** Throws 503 when no candidate is left, or when the request would be late and its class rejects late requests. */
  place(request: RoutingRequest, prediction: Prediction, pool: readonly Backend[], nowMs: number, exclude?: ReadonlySet<string>): Placement {
    const o = this.#o;
    const slo = o.config.sloClasses[request.sloClass]!;
    const planView = o.plan();
    const handles = this.#handles(pool, planView?.plan);
    const decision = ++this.#decision;
    const candidates: Candidate[] = [];
    for (let i = 0; i < handles.handles.length; i++) {
      const h = handles.handles[i]!;
      const backend = h.backend;
      if (exclude?.has(backend.id)) continue;
      const state = o.view.at(h.view, nowMs);
      const queued = h.queue.waiting;
      let strictestTbtMs = Number.POSITIVE_INFINITY;
      let windowMs = Math.min(slo.tbtWindowMs, PREFILL_LOAD_TAU_MS);
      if (state.byTag.size > 0) {
        for (const name of state.byTag.keys()) {
          const running = o.config.sloClasses[name];
          if (!running) continue;
          strictestTbtMs = Math.min(strictestTbtMs, running.tbtMs);
          windowMs = Math.min(windowMs, running.tbtWindowMs);
        }
      }
      // The prefill load as it will be with this prompt sent: its own prefill slows the others too,
      // spent within the shortest TBT window of this request and of those running there.
      const promptTokensPerS = (h.prefill?.promptTokensPerS(nowMs) ?? 0) + (request.promptTokens * 1000) / windowMs;
      const clockFraction = handles.clockFractions[i]!;
      const prefillRate = prefillTokensPerMs(backend, state.inFlight, clockFraction, o.frequency);
      const prefillBacklogTokens = h.prefill?.backlogTokens(nowMs, prefillRate, backend.forwardPriority ? slo.priority : 0) ?? 0;
      const site = h.site;
      if (site.decision !== decision) {
        // Read once per site and decision: a signal's answer for a site at one time is one figure.
        site.gramsPerKWh = o.carbon.gramsPerKWh(backend.site.id, nowMs);
        site.decision = decision;
      }
      const readyInMs = h.power ? o.power!.readyInMs(h.power, state.inFlight, nowMs) : 0;
      const powerFactor = o.powerFactor ? o.powerFactor(backend.id, nowMs) : 1;
      let input = this.#input;
      if (input === undefined) {
        this.#input = input = {
          request,
          prediction,
          backend,
          state,
          queued,
          promptTokensPerS,
          prefillBacklogTokens,
          nowMs,
          gramsPerKWh: site.gramsPerKWh,
          clockFraction,
          latencyFactor: h.latency.factor,
          readyInMs,
          powerFactor,
        };
      } else {
        input.request = request;
        input.prediction = prediction;
        input.backend = backend;
        input.state = state;
        input.queued = queued;
        input.promptTokensPerS = promptTokensPerS;
        input.prefillBacklogTokens = prefillBacklogTokens;
        input.nowMs = nowMs;
        input.gramsPerKWh = site.gramsPerKWh;
        input.clockFraction = clockFraction;
        input.latencyFactor = h.latency.factor;
        input.readyInMs = readyInMs;
        input.powerFactor = powerFactor;
      }
      const cost = o.costModel.estimate(input);
      candidates.push({ backend, state, queued, promptTokensPerS, strictestTbtMs, cost });
    }
    const requestType = typeOf(request, prediction);
    const ctx: DecisionContext = {
      request,
      prediction,
      requestType,
      slo,
      deadlineMs: this.#deadline(request, prediction.outputTokensP50, slo, candidates, e2eP50),
      deadlineP90Ms: this.#deadline(request, prediction.outputTokensP90, slo, candidates, e2eP90),
      nowMs,
      rng: o.rng,
      objective: o.config.objective,
      candidates,
      plan: planView,
    };
    const decided = decide(o.policy, candidates, ctx, o.config.trace || decisionChannel.hasSubscribers);
    if (decided.errors.length > 0) o.onPluginErrors(decided.errors);
    if (decisionChannel.hasSubscribers) decisionChannel.publish({ request, trace: decided.trace, context: ctx });
    const picked = decided.picked?.candidate;
    if (!picked) {
      throw noBackend(request.model, decided.emptiedBy ? `every candidate was removed by the \`${decided.emptiedBy}\` filter` : 'no candidate left');
    }
    if (slo.onLate === 'reject' && decided.relaxed.includes('deadline')) throw deadlineUnmeetable(request.sloClass);
    return {
      backend: picked.backend,
      prediction,
      cost: picked.cost,
      requestType,
      slo,
      deadlineMs: ctx.deadlineMs,
      relaxed: decided.relaxed,
      trace: decided.trace,
    };
  }

  /** The pool's handles, with the clock fractions of `plan` (read again only when the plan changes). */
  #handles(pool: readonly Backend[], plan: Plan | undefined): PoolHandles {
    let entry = this.#pools.get(pool);
    if (!entry) {
      const o = this.#o;
      const handles = pool.map((backend): Handle => {
        let site = this.#sites.get(backend.site.id);
        if (!site) this.#sites.set(backend.site.id, (site = { decision: 0, gramsPerKWh: 0 }));
        return {
          backend,
          view: o.view.ref(backend.id),
          queue: o.queue(backend.id),
          prefill: o.prefill.of(backend.id),
          latency: o.latency.of(backend.id),
          power: o.power?.of(backend.id),
          site,
        };
      });
      entry = { handles, plan: undefined, clockFractions: new Float64Array(pool.length).fill(1) };
      this.#pools.set(pool, entry);
    }
    if (entry.plan !== plan) {
      // Plans are made whole and never changed, so their fractions hold until the next plan.
      for (let i = 0; i < pool.length; i++) entry.clockFractions[i] = plan?.clockFraction.get(pool[i]!.id) ?? 1;
      entry.plan = plan;
    }
    return entry;
  }

  /**
   * When a request of `outputTokens` should finish. `targets`: arrival + the class's TTFT target +
   * (tokens − 1) × its TBT target. `slack` (FREESH): arrival + slackFactor × the fastest candidate's
   * `e2e` (the estimate for those tokens) as if idle.
   */
  #deadline(request: RoutingRequest, outputTokens: number, slo: SloClass, candidates: readonly Candidate[], e2e: (c: Candidate) => number): number {
    const rule = this.#o.config.deadline;
    if (rule.mode === 'targets') return request.arrivalMs + ttftTargetMs(slo, request.promptTokens) + (outputTokens - 1) * slo.tbtMs;
    let best = Number.POSITIVE_INFINITY;
    for (const c of candidates) best = Math.min(best, e2e(c) - c.cost.waitMs);
    return request.arrivalMs + rule.slackFactor * (Number.isFinite(best) ? best : 0);
  }
}

type Mutable<T> = { -readonly [K in keyof T]: T[K] };

const e2eP50 = (c: Candidate): number => c.cost.e2eMs;
const e2eP90 = (c: Candidate): number => c.cost.e2eP90Ms;
