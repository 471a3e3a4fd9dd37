import { channel } from 'node:diagnostics_channel';
import { Readable } from 'node:stream';
import type { CancelSignal } from './cancel.js';
import { carbonSignalFromConfig } from './carbon/from-config.js';
import type { CarbonSignal } from './carbon/signal.js';
import { type Clock, type Rng, systemClock } from './clock.js';
import { ConfigError, parseConfig, type RouterConfig, type RouterConfigInput, routerConfigSchema } from './config/schema.js';
import { type CostModel, createCostModel, prefillTokensPerMs } from './cost/cost-model.js';
import { DEFAULT_FREQUENCY_MODEL, type FrequencyModel } from './cost/frequency.js';
import { LatencyCalibration } from './cost/latency-calibration.js';
import { BUILTIN_PROFILES } from './cost/profiles.js';
import {
  bodyTooLarge,
  clientAborted,
  deadlineUnmeetable,
  FreeshError,
  invalidRequest,
  modelNotFound,
  noBackend,
  routeNotFound,
  toFreeshError,
  upstreamDropped,
  upstreamFailed,
  upstreamStatus,
} from './errors.js';
import { type Outcome, RouterMetrics } from './metrics/metrics.js';
import { ModelPredictor } from './predict/model-predictor.js';
import type { Predictor } from './predict/predictor.js';
import { TokenMeter } from './proxy/token-meter.js';
import { isConnectError, type Transport, UndiciTransport, type UpstreamResponse } from './proxy/transport.js';
import type { Plan } from './plan/plan.js';
import { PoolPlanner } from './plan/pool-planner.js';
import { inThreadSolver, workerSolver } from './plan/solver.js';
import { AdmissionQueue } from './queue/admission-queue.js';
import { FairShare } from './queue/fair-share.js';
import { parseRequest } from './request/parse.js';
import { type RequestType, typeOf } from './request/request-type.js';
import { type SloClass, ttftTargetMs } from './request/slo.js';
import { withPriority } from './request/upstream-body.js';
import { BUILTIN_POLICIES, type PolicyFactory } from './schedule/builtin.js';
import { TBT_HEADROOM } from './schedule/freesh.js';
import { type DecisionTrace, decide } from './schedule/orchestrator.js';
import type { DecisionContext, Policy } from './schedule/policy.js';
import { MemoryStateStore } from './state/memory-store.js';
import { PrefillBacklog } from './state/prefill-backlog.js';
import { RateMeter } from './state/rate-meter.js';
import type { StateStore } from './state/store.js';
import type { Backend, Candidate, CostEstimate, Endpoint, Prediction, RoutingRequest, Site } from './types.js';

/** Everything `createRouter` accepts: the config (see config/schema.ts) plus injected side effects. */
export interface RouterOptions extends Omit<RouterConfigInput, 'policy'> {
  /** A policy name (built-in or from `policies`), or a policy object. Default `freesh`. */
  readonly policy?: string | Policy;
  /** Extra named policies, looked up by `policy`. */
  readonly policies?: Readonly<Record<string, PolicyFactory>>;
  /** Default: monotonic wall clock. */
  readonly clock?: Clock;
  /** Default: Math.random. */
  readonly rng?: Rng;
  /** Default: undici keep-alive pools with the configured timeouts. */
  readonly transport?: Transport;
  /** Default: in-memory (one process). */
  readonly store?: StateStore;
  /** Default: the trained length model in models/ (the heuristic while it loads, or if it cannot). */
  readonly predictor?: Predictor;
  /** Default: the profile-based cost model with `frequencyModel`. */
  readonly costModel?: CostModel;
  /** Grid carbon intensity by site. Default: each site's configured constant. */
  readonly carbon?: CarbonSignal;
  /** How SM clocks change speed and power, for costing and planning. Default: DEFAULT_FREQUENCY_MODEL (an assumption). */
  readonly frequencyModel?: FrequencyModel;
  /** Called with every pool plan (the simulator applies clocks and parking to its instances). */
  readonly onPlan?: (plan: Plan) => void;
}

/** One request as the router receives it from an HTTP layer. */
export interface RouterCall {
  readonly endpoint: Endpoint;
  readonly body: Uint8Array;
  /** Reads a request header by lower-case name. */
  readonly header: (name: string) => string | undefined;
  /** Aborted when the client goes away: removes the request from queues and aborts the upstream. An AbortSignal will do. */
  readonly signal?: CancelSignal | undefined;
}

/** Where a request goes, and what the router expected it to cost there. */
export interface Placement {
  readonly backend: Backend;
  readonly prediction: Prediction;
  readonly cost: CostEstimate;
  readonly requestType: RequestType;
  /** When the request should be finished (router clock, ms). */
  readonly deadlineMs: number;
  readonly trace: DecisionTrace | undefined;
}

export interface RoutedResponse {
  readonly status: number;
  readonly headers: Readonly<Record<string, string | string[]>>;
  /** The backend's body, relayed as it arrives. Destroy it to abort the upstream request. */
  readonly body: Readable;
  /** True when the body is a server-sent event stream (so a failure mid-way gets an SSE error event). */
  readonly eventStream: boolean;
  readonly placement: Placement;
}

/** Published on `freesh:decision` when someone subscribes (node:diagnostics_channel): costs nothing otherwise. */
export const decisionChannel = channel('freesh:decision');
/** Published on `freesh:complete` when a routed request ends. */
export const completionChannel = channel('freesh:complete');

export interface CompletionEvent {
  readonly request: RoutingRequest;
  readonly placement: Placement | undefined;
  readonly outcome: Outcome;
  readonly outputTokens: number | undefined;
  readonly durationMs: number;
  readonly error: FreeshError | undefined;
}

const HOP_BY_HOP = new Set(['connection', 'keep-alive', 'transfer-encoding', 'proxy-authenticate', 'proxy-authorization', 'te', 'trailer', 'upgrade']);
/** Time constant of the per-backend prefill-load estimate: short enough to see a burst coming. */
const PREFILL_LOAD_TAU_MS = 10_000;
const UPSTREAM_PATH: Record<Endpoint, string> = { 'chat.completions': '/chat/completions', completions: '/completions' };

export class Router {
  readonly config: RouterConfig;
  readonly backends: readonly Backend[];
  readonly sites: readonly Site[];
  readonly policy: Policy;
  readonly metrics: RouterMetrics;
  readonly #clock: Clock;
  readonly #rng: Rng;
  readonly #transport: Transport;
  readonly #store: StateStore;
  readonly #predictor: Predictor;
  readonly #costModel: CostModel;
  readonly #frequency: FrequencyModel;
  readonly #carbon: CarbonSignal;
  readonly #planner: PoolPlanner | undefined;
  readonly #fairShare: FairShare | undefined;
  readonly #ready: Promise<void>;
  readonly #byModel = new Map<string, Backend[]>();
  readonly #queues = new Map<string, AdmissionQueue>();
  readonly #prefillLoad = new Map<string, RateMeter>();
  readonly #latency = new LatencyCalibration();
  /** Added to the priority of a request sent too late for its TTFT target: it then comes after every class. */
  readonly #latePriorityOffset: number;
  /** Prompt tokens each backend has been sent and not yet prefilled, by this router's reckoning. */
  readonly #prefillBacklog = new Map<string, PrefillBacklog>();
  /** Per backend, requests running by SLO class: the tightest TBT target and window bound new placements. */
  readonly #running = new Map<string, Map<SloClass, number>>();
  readonly #backendIds: readonly string[];
  readonly #idPrefix = Math.random().toString(36).slice(2, 8);
  #nextId = 0;
  #inFlight = 0;
  #closed = false;
  readonly #idleWaiters: (() => void)[] = [];

  constructor(options: RouterOptions) {
    const { policy, policies, clock, rng, transport, store, predictor, costModel, carbon, frequencyModel, onPlan, ...data } = options;
    this.config = parseConfig(routerConfigSchema, { ...data, policy: typeof policy === 'string' ? policy : undefined }, 'router options');
    this.#clock = clock ?? systemClock;
    this.#rng = rng ?? Math.random;
    const limits = this.config.limits;
    this.#transport =
      transport ??
      new UndiciTransport({
        connectTimeoutMs: limits.connectTimeoutMs,
        headersTimeoutMs: limits.headersTimeoutMs,
        bodyTimeoutMs: limits.bodyTimeoutMs,
      });
    this.#store = store ?? new MemoryStateStore();
    this.#predictor =
      predictor ??
      new ModelPredictor({
        onError: (err) => console.warn(`freesh: the length model is unavailable, using the heuristic predictor: ${String(err)}`),
      });
    const frequency = frequencyModel ?? DEFAULT_FREQUENCY_MODEL;
    this.#frequency = frequency;
    this.#costModel = costModel ?? createCostModel(frequency);

    if (typeof policy === 'object') this.policy = policy;
    else {
      const factory = policies?.[this.config.policy] ?? BUILTIN_POLICIES[this.config.policy];
      if (!factory) {
        const known = [...Object.keys(BUILTIN_POLICIES), ...Object.keys(policies ?? {})].join(', ');
        throw new ConfigError(`Invalid router options:\n- \`policy\`: must be one of ${known}, got \`${JSON.stringify(this.config.policy)}\``);
      }
      this.policy = factory();
    }

    const sites = new Map<string, Site>();
    for (const s of this.config.sites) {
      sites.set(s.id, Object.freeze({ id: s.id, region: s.region, gramsPerKWh: s.carbon.gramsPerKWh, pue: s.pue }));
    }
    this.sites = Object.freeze([...sites.values()]);
    this.#carbon = carbon ?? carbonSignalFromConfig(this.config.sites);
    this.backends = Object.freeze(
      this.config.backends.map((b) =>
        Object.freeze({
          id: b.id,
          site: sites.get(b.site)!,
          baseURL: b.baseURL,
          models: new Set(b.models),
          maxConcurrency: b.maxConcurrency,
          prefillChunkTokens: b.prefillChunkTokens,
          forwardPriority: b.forwardPriority,
          profile: BUILTIN_PROFILES[b.mode]!,
          apiKey: b.apiKey,
        }),
      ),
    );
    this.#backendIds = this.backends.map((b) => b.id);
    const priorities = Object.values(this.config.sloClasses).map((c) => c.priority);
    this.#latePriorityOffset = Math.max(...priorities) - Math.min(...priorities) + 1;
    const admission = this.policy.admission ?? 'fifo';
    this.#fairShare = admission === 'least-laxity-fair' && this.config.fairness.enabled ? new FairShare() : undefined;
    for (const backend of this.backends) {
      for (const model of backend.models) (this.#byModel.get(model) ?? this.#byModel.set(model, []).get(model)!).push(backend);
      this.#prefillLoad.set(backend.id, new RateMeter(PREFILL_LOAD_TAU_MS));
      this.#prefillBacklog.set(backend.id, new PrefillBacklog());
      this.#running.set(backend.id, new Map());
      this.#queues.set(
        backend.id,
        new AdmissionQueue({
          backendId: backend.id,
          concurrency: backend.maxConcurrency,
          maxLength: limits.maxQueueLength,
          maxWaitMs: limits.maxQueueMs,
          clock: this.#clock,
          fairShare: this.#fairShare,
          urgentWithinMs: this.config.fairness.urgentWithinMs,
        }),
      );
    }

    const plan = this.config.plan;
    const planning = plan.enabled ?? this.policy.planner !== undefined;
    this.metrics = new RouterMetrics({
      queues: () => this.#queues.entries(),
      backends: () =>
        this.backends.map((b) => {
          const inForce = this.#planner?.plan;
          return [b.id, { planned: inForce?.active.has(b.id), clockFraction: inForce ? (inForce.clockFraction.get(b.id) ?? 1) : undefined, latencyFactor: this.#latency.factor(b.id) }] as const;
        }),
      planStatus: planning ? () => this.#planner?.plan.status : undefined,
    });
    if (planning) {
      this.#planner = new PoolPlanner({
        backends: this.backends,
        clock: this.#clock,
        carbon: this.#carbon,
        store: this.#store,
        objective: this.config.objective,
        slo: strictestClass(this.config.sloClasses),
        frequency,
        stepMs: plan.stepMs,
        windowMs: plan.windowMs,
        margin: plan.margin,
        maxUtilisation: plan.maxUtilisation,
        clockLevels: this.policy.planner?.clockScaling === false ? [1] : plan.clockLevels,
        onPlan,
        solver: plan.solveInWorker ? workerSolver() : inThreadSolver(),
      });
    }
    this.#ready = this.#planner?.start() ?? Promise.resolve();
    this.#ready.catch(() => {
      // Without a solver the initial plan (everything on) stays in force; ready() reports why.
    });
  }

  /** Resolves once the planner's solver is ready (at once when no planner runs). */
  ready(): Promise<void> {
    return this.#ready;
  }

  /** The pool plan in force, when a planner runs. */
  get plan(): Plan | undefined {
    return this.#planner?.plan;
  }

  /** Model names served by at least one backend, sorted. */
  models(): string[] {
    return [...this.#byModel.keys()].sort();
  }

  /** Requests admitted or waiting, not yet finished. */
  get inFlight(): number {
    return this.#inFlight;
  }

  /** Parses a raw OpenAI body into a RoutingRequest, or throws a 400 FreeshError. */
  parse(call: RouterCall): RoutingRequest {
    const request = parseRequest(call.endpoint, call.body, {
      id: call.header('x-request-id') ?? `req-${this.#idPrefix}-${(this.#nextId++).toString(36)}`,
      arrivalMs: this.#clock.now(),
      defaultTenant: this.config.defaults.tenant,
      defaultSloClass: this.config.defaults.sloClass,
      header: call.header,
    });
    if (!(request.sloClass in this.config.sloClasses)) {
      throw invalidRequest(
        `Unknown SLO class ${JSON.stringify(request.sloClass)} in \`x-freesh-slo\`; known: ${Object.keys(this.config.sloClasses).join(', ')}`,
        'x-freesh-slo',
        'unknown_slo_class',
      );
    }
    return request;
  }

  /** Predicts, costs every backend serving the model and runs the policy. Throws 404 or 503. */
  async route(request: RoutingRequest, exclude?: ReadonlySet<string>): Promise<Placement> {
    const pool = this.#byModel.get(request.model);
    if (!pool) throw modelNotFound(request.model);
    const prediction = await this.#predictor.predict(request);
    return this.#place(request, prediction, pool, exclude);
  }

  /** The whole path: parse, place, admit, forward. Resolves when the backend's headers arrive. */
  async dispatch(call: RouterCall): Promise<RoutedResponse> {
    if (this.#closed) throw noBackend('*', 'the router is shutting down');
    let request: RoutingRequest;
    try {
      request = this.parse(call);
    } catch (err) {
      throw this.#count('rejected-invalid', undefined, toFreeshError(err));
    }
    this.#inFlight++;
    try {
      return await this.#dispatch(request, call.signal);
    } catch (err) {
      this.#settled();
      throw err;
    }
  }

  /** Fetch-API entry point (Hono, Workers-style servers, tests): always resolves with a Response. */
  async handle(request: Request): Promise<Response> {
    const path = new URL(request.url).pathname;
    const endpoint = path.endsWith('/chat/completions') ? 'chat.completions' : path.endsWith('/completions') ? 'completions' : undefined;
    try {
      if (path.endsWith('/models') && request.method === 'GET') return Response.json(this.modelList());
      if (!endpoint) throw routeNotFound(request.method, path);
      const body = new Uint8Array(await request.arrayBuffer());
      if (body.byteLength > this.config.limits.bodyLimitBytes) throw bodyTooLarge(this.config.limits.bodyLimitBytes);
      const routed = await this.dispatch({
        endpoint,
        body,
        header: (name) => request.headers.get(name) ?? undefined,
        signal: request.signal,
      });
      const headers = new Headers();
      for (const [name, value] of Object.entries(routed.headers)) {
        if (Array.isArray(value)) for (const v of value) headers.append(name, v);
        else headers.set(name, value);
      }
      return new Response(Readable.toWeb(routed.body) as ReadableStream<Uint8Array>, { status: routed.status, headers });
    } catch (err) {
      const error = toFreeshError(err);
      return new Response(error.toBody(), { status: error.status, headers: { 'content-type': 'application/json' } });
    }
  }

  /** The `GET /v1/models` body: the union of the fleet's models. */
  modelList(): { object: 'list'; data: { id: string; object: 'model'; created: number; owned_by: string }[] } {
    return { object: 'list', data: this.models().map((id) => ({ id, object: 'model', created: 0, owned_by: 'freesh' })) };
  }

  /** Resolves once nothing is in flight (used to drain on shutdown). */
  whenIdle(): Promise<void> {
    return this.#inFlight === 0 ? Promise.resolve() : new Promise((resolve) => this.#idleWaiters.push(resolve));
  }

  /** Refuses queued requests, closes connections and the store. In-flight responses are cut. */
  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    const stopped = this.#planner?.stop();
    const err = noBackend('*', 'the router is shutting down');
    for (const queue of this.#queues.values()) queue.rejectAll(err);
    await Promise.all([stopped, this.#transport.close(), this.#store.close(), this.#predictor.close?.(), this.#carbon.close?.()]);
  }

  async #dispatch(request: RoutingRequest, signal: CancelSignal | undefined): Promise<RoutedResponse> {
    const pool = this.#byModel.get(request.model);
    if (!pool) throw this.#count('rejected-invalid', undefined, modelNotFound(request.model), request);
    const decisionStarted = performance.now();
    const prediction = await this.#predictor.predict(request);
    this.#planner?.observe(typeOf(request, prediction), request.promptTokens, prediction.outputTokensP50, request.arrivalMs);
    const limits = this.config.limits;
    let excluded: Set<string> | undefined;
    for (let attempt = 0; ; attempt++) {
      let placement: Placement;
      try {
        placement = await this.#place(request, prediction, pool, excluded);
      } catch (err) {
        throw this.#count('rejected-no-backend', undefined, toFreeshError(err), request);
      }
      if (attempt === 0) this.metrics.decisionSeconds.observe((performance.now() - decisionStarted) / 1000);
      const { backend } = placement;
      const queue = this.#queues.get(backend.id)!;
      if (!queue.tryAcquire()) {
        try {
          await queue.wait({ priority: this.#priority(request, placement), tenant: request.tenant, signal });
        } catch (err) {
          const error = toFreeshError(err);
          throw this.#count(outcomeOf(error), backend.id, error, request, placement);
        }
      }
      // Virtual token counters: charged the predicted service at admission, corrected on completion,
      // refunded if the backend never served it.
      const charge = request.promptTokens + FairShare.OUTPUT_WEIGHT * prediction.outputTokensP50;
      this.#fairShare?.charge(request.tenant, charge);
      const leaseId = `${request.id}#${attempt}`;
      const sentAtMs = this.#clock.now();
      this.#prefillLoad.get(backend.id)!.add(request.promptTokens, sentAtMs);
      const slo = this.config.sloClasses[request.sloClass]!;
      const priority = backend.forwardPriority ? this.#upstreamPriority(request, placement, slo, sentAtMs) : 0;
      this.#prefillBacklog.get(backend.id)!.add(request.promptTokens, sentAtMs, priority);
      const running = this.#running.get(backend.id)!;
      running.set(slo, (running.get(slo) ?? 0) + 1);
      // Not awaited: a lease is load accounting, and a remote store's round trip must not delay the
      // request. A store that fails is outlived by the lease TTL.
      this.#store.acquire({ id: leaseId, backendId: backend.id, expiresAtMs: sentAtMs + limits.leaseTtlMs }).catch(ignoreStoreError);
      const free = (): void => {
        const left = running.get(slo)! - 1;
        if (left > 0) running.set(slo, left);
        else running.delete(slo);
        queue.release();
        this.#store.release(leaseId).catch(ignoreStoreError);
      };

      let upstream: UpstreamResponse;
      const meter = new TokenMeter();
      try {
        upstream = await this.#transport.send(backend, {
          method: 'POST',
          path: UPSTREAM_PATH[request.endpoint],
          headers: upstreamHeaders(request, backend),
          body: backend.forwardPriority ? withPriority(request.rawBody, priority) : request.rawBody,
          signal,
          onData: (chunk) => meter.push(chunk, this.#clock.now()),
        });
      } catch (err) {
        free();
        this.#fairShare?.charge(request.tenant, -charge);
        if (signal?.aborted) throw this.#count('client-abort', backend.id, clientAborted(), request, placement);
        if (isConnectError(err)) {
          await this.#store.markUnhealthy(backend.id, this.#clock.now() + limits.unhealthyMs).catch(ignoreStoreError);
          if (attempt < limits.retries) {
            (excluded ??= new Set()).add(backend.id);
            continue;
          }
        }
        throw this.#count('upstream-unreachable', backend.id, upstreamFailed(backend.id, err), request, placement);
      }

      if (upstream.status >= 500) {
        const detail = await readSnippet(upstream.body);
        free();
        this.#fairShare?.charge(request.tenant, -charge);
        // 503 means "busy, try elsewhere"; other 5xx may be the request's own fault, so they are not retried.
        if (upstream.status === 503 && attempt < limits.retries) {
          (excluded ??= new Set()).add(backend.id);
          continue;
        }
        throw this.#count('upstream-status', backend.id, upstreamStatus(backend.id, upstream.status, detail), request, placement);
      }
      return this.#relay(request, placement, upstream, meter, sentAtMs, free, signal);
    }
  }

  async #place(request: RoutingRequest, prediction: Prediction, pool: readonly Backend[], exclude: ReadonlySet<string> | undefined): Promise<Placement> {
    const nowMs = this.#clock.now();
    const states = await this.#store.snapshot(this.#backendIds, nowMs);
    const planView = this.#planner?.view();
    const slo = this.config.sloClasses[request.sloClass]!;
    const candidates: Candidate[] = [];
    for (const backend of pool) {
      if (exclude?.has(backend.id)) continue;
      const state = states.get(backend.id)!;
      const queued = this.#queues.get(backend.id)!.waiting;
      let strictestTbtMs = Number.POSITIVE_INFINITY;
      let windowMs = Math.min(slo.tbtWindowMs, PREFILL_LOAD_TAU_MS);
      for (const running of this.#running.get(backend.id)!.keys()) {
        strictestTbtMs = Math.min(strictestTbtMs, running.tbtMs);
        windowMs = Math.min(windowMs, running.tbtWindowMs);
      }
      // The prefill load as it will be with this prompt sent: its own prefill slows the others too,
      // spent within the shortest TBT window of this request and of those running there.
      const promptTokensPerS = this.#prefillLoad.get(backend.id)!.perSecond(nowMs) + (request.promptTokens * 1000) / windowMs;
      const clockFraction = planView?.plan.clockFraction.get(backend.id) ?? 1;
      const prefillBacklogTokens = this.#prefillBacklog
        .get(backend.id)!
        .pending(nowMs, prefillTokensPerMs(backend, state.inFlight, clockFraction, this.#frequency), backend.forwardPriority ? slo.priority : 0);
      const cost = this.#costModel.estimate({
        request,
        prediction,
        backend,
        state,
        queued,
        promptTokensPerS,
        prefillBacklogTokens,
        nowMs,
        gramsPerKWh: this.#carbon.gramsPerKWh(backend.site.id, nowMs),
        clockFraction,
        latencyFactor: this.#latency.factor(backend.id),
      });
      candidates.push({ backend, state, queued, promptTokensPerS, strictestTbtMs, cost });
    }
    const requestType = typeOf(request, prediction);
    const ctx: DecisionContext = {
      request,
      prediction,
      requestType,
      slo,
      deadlineMs: this.#deadline(request, prediction.outputTokensP50, slo, candidates, (c) => c.cost.e2eMs),
      deadlineP90Ms: this.#deadline(request, prediction.outputTokensP90, slo, candidates, (c) => c.cost.e2eP90Ms),
      nowMs,
      rng: this.#rng,
      objective: this.config.objective,
      candidates,
      plan: planView,
    };
    const decision = decide(this.policy, candidates, ctx, this.config.trace || decisionChannel.hasSubscribers);
    for (const { plugin } of decision.errors) this.metrics.pluginErrors.labels(plugin).inc();
    if (decisionChannel.hasSubscribers) decisionChannel.publish({ request, trace: decision.trace });
    const picked = decision.picked?.candidate;
    if (!picked) {
      throw noBackend(request.model, decision.emptiedBy ? `every candidate was removed by the \`${decision.emptiedBy}\` filter` : 'no candidate left');
    }
    if (slo.onLate === 'reject' && decision.relaxed.includes('deadline')) throw deadlineUnmeetable(request.sloClass);
    this.#planner?.assign(requestType, picked.backend.id);
    return { backend: picked.backend, prediction, cost: picked.cost, requestType, deadlineMs: ctx.deadlineMs, trace: decision.trace };
  }

  /**
   * When a request of `outputTokens` should finish. `targets`: arrival + the class's TTFT target +
   * (tokens − 1) × its TBT target. `slack` (FREESH): arrival + slackFactor × the fastest candidate's
   * `e2e` (the estimate for those tokens) as if idle.
   */
  #deadline(request: RoutingRequest, outputTokens: number, slo: SloClass, candidates: readonly Candidate[], e2e: (c: Candidate) => number): number {
    const rule = this.config.deadline;
    if (rule.mode === 'targets') return request.arrivalMs + ttftTargetMs(slo, request.promptTokens) + (outputTokens - 1) * slo.tbtMs;
    let best = Number.POSITIVE_INFINITY;
    for (const c of candidates) best = Math.min(best, e2e(c) - c.cost.waitMs);
    return request.arrivalMs + rule.slackFactor * (Number.isFinite(best) ? best : 0);
  }

  /**
   * The priority sent upstream: the class's, or — for a request that will miss its TTFT target
   * anyway, by the estimate when it is sent — one after every class's, so it yields to requests that
   * can still make theirs. Serving the hopeless first under overload would make the others late too
   * (the domino effect of deadline-ordered scheduling).
   */
  #upstreamPriority(request: RoutingRequest, placement: Placement, slo: SloClass, sentAtMs: number): number {
    const firstTokenMs = sentAtMs + placement.cost.ttftMs - placement.cost.waitMs;
    return firstTokenMs - request.arrivalMs > ttftTargetMs(slo, request.promptTokens) ? slo.priority + this.#latePriorityOffset : slo.priority;
  }

  /** Queue order: arrival (first come first served), or latest start time = deadline − predicted service (least laxity first). */
  #priority(request: RoutingRequest, placement: Placement): number {
    if ((this.policy.admission ?? 'fifo') === 'fifo') return request.arrivalMs;
    return placement.deadlineMs - (placement.cost.e2eMs - placement.cost.waitMs);
  }

  #relay(
    request: RoutingRequest,
    placement: Placement,
    upstream: UpstreamResponse,
    meter: TokenMeter,
    sentAtMs: number,
    free: () => void,
    signal: CancelSignal | undefined,
  ): RoutedResponse {
    const { backend, cost, prediction } = placement;
    const headers: Record<string, string | string[]> = {};
    for (const name in upstream.headers) {
      const value = upstream.headers[name];
      if (value !== undefined && !HOP_BY_HOP.has(name)) headers[name] = value;
    }
    headers['x-freesh-backend'] = backend.id;
    headers['x-freesh-site'] = backend.site.id;
    headers['x-freesh-predicted-tokens'] = String(prediction.outputTokensP50);
    headers['x-freesh-energy-j'] = cost.energyJ.toFixed(1);
    headers['x-freesh-carbon-g'] = cost.carbonG.toFixed(4);
    headers['x-request-id'] = request.id;
    const contentType = String(upstream.headers['content-type'] ?? '');
    const eventStream = contentType.includes('text/event-stream');

    const body = upstream.body;
    let ended = false;
    const done = (err: unknown): void => {
      if (ended) return;
      ended = true;
      free();
      const tokens = meter.outputTokens();
      const tally = this.metrics.backend(backend.id);
      tally.upstreamSeconds.observe((this.#clock.now() - sentAtMs) / 1000);
      tally.energyJ += cost.energyJ;
      tally.carbonG += cost.carbonG;
      if (tokens !== undefined) tally.outputTokens += tokens;
      let outcome: Outcome = upstream.status >= 400 ? 'upstream-status' : 'completed';
      let error: FreeshError | undefined;
      if (err === CONSUMER_GONE) {
        outcome = 'client-abort';
        error = clientAborted();
      } else if (err) {
        outcome = 'upstream-dropped';
        error = upstreamDropped(backend.id, err);
      } else if (outcome === 'completed' && tokens !== undefined) {
        this.#predictor.observe?.(request, tokens);
        // The model's service time for the true length, against the time the backend took to send
        // its last byte (not to the client's reading it: a slow reader must not look like a slow backend).
        const modelledMs = cost.ttftMs - cost.waitMs + Math.max(0, tokens - 1) * cost.tbtMs;
        this.#latency.observe(backend.id, modelledMs, (meter.lastChunkAtMs ?? this.#clock.now()) - sentAtMs);
      }
      if (tokens !== undefined) this.#fairShare?.charge(request.tenant, FairShare.OUTPUT_WEIGHT * (tokens - prediction.outputTokensP50));
      this.#count(outcome, backend.id, error, request, placement, tokens);
      this.#settled();
    };
    // Once-listeners only: they observe the body without setting it flowing. 'close' without an
    // earlier 'end' or 'error' means the consumer destroyed it; an error after the caller's signal
    // fired is the abort it asked for. Either way the client went away.
    body.once('end', () => done(undefined));
    body.once('error', (err) => done(signal?.aborted ? CONSUMER_GONE : err));
    body.once('close', () => done(CONSUMER_GONE));
    return { status: upstream.status, headers, body, eventStream, placement };
  }

  /** Counts how a request ended and tells completion subscribers; returns the error, for `throw`. */
  #count<E extends FreeshError | undefined>(
    outcome: Outcome,
    backendId: string | undefined,
    error: E,
    request?: RoutingRequest,
    placement?: Placement,
    outputTokens?: number,
  ): E {
    this.metrics.count(outcome, backendId);
    if (request && completionChannel.hasSubscribers) {
      completionChannel.publish({
        request,
        placement,
        outcome,
        outputTokens,
        durationMs: this.#clock.now() - request.arrivalMs,
        error,
      } satisfies CompletionEvent);
    }
    return error;
  }

  #settled(): void {
    this.#inFlight--;
    if (this.#inFlight === 0) for (const resolve of this.#idleWaiters.splice(0)) resolve();
  }
}

export function createRouter(options: RouterOptions): Router {
  return new Router(options);
}

/**
 * The class the planner plans for: the tightest TTFT and TBT targets of any class, with the TBT
 * headroom placements keep, so planned capacity never relies on breaking an SLO.
 */
function strictestClass(classes: Readonly<Record<string, SloClass>>): SloClass {
  const all = Object.values(classes);
  return {
    ttftBaseMs: Math.min(...all.map((c) => c.ttftBaseMs)),
    ttftPerPromptTokenMs: Math.min(...all.map((c) => c.ttftPerPromptTokenMs)),
    tbtMs: TBT_HEADROOM * Math.min(...all.map((c) => c.tbtMs)),
    onLate: 'serve',
    priority: Math.min(...all.map((c) => c.priority)),
    tbtWindowMs: Math.min(...all.map((c) => c.tbtWindowMs)),
  };
}

/** A store outage degrades load accounting only: leases expire by themselves. */
function ignoreStoreError(): void {}

function outcomeOf(error: FreeshError): Outcome {
  switch (error.code) {
    case 'queue_full':
      return 'rejected-queue-full';
    case 'queue_timeout':
      return 'evicted-queue-timeout';
    case 'client_closed':
      return 'client-abort';
    case 'no_backend_available':
      return 'rejected-no-backend';
    default:
      return 'internal-error';
  }
}

function upstreamHeaders(request: RoutingRequest, backend: Backend): Record<string, string> {
  const headers: Record<string, string> = { 'content-type': 'application/json', 'x-request-id': request.id };
  if (backend.apiKey) headers.authorization = `Bearer ${backend.apiKey}`;
  return headers;
}

/** Marks a relay ended because its consumer destroyed the body (the client went away). */
const CONSUMER_GONE = Symbol('consumer gone');

/** Reads at most 512 bytes of an error body for the message, then discards the rest. */
async function readSnippet(body: Readable): Promise<string> {
  let text = '';
  try {
    for await (const chunk of body) {
      text += String(chunk);
      if (text.length >= 512) break;
    }
  } catch {
    // A broken error body still leaves a status to report.
  }
  body.destroy();
  return text.slice(0, 512).replace(/\s+/g, ' ').trim();
}
