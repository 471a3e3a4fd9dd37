import type { Readable } from 'node:stream';
import { channel } from 'node:diagnostics_channel';
import { Gate, type Principal } from './auth/gate.js';
import { hasLimits, RateLimiter } from './auth/limiter.js';
import type { CancelSignal } from './cancel.js';
import { carbonSignalFromConfig } from './carbon/from-config.js';
import type { CarbonSignal } from './carbon/signal.js';
import { type Clock, type Rng, systemClock } from './clock.js';
import { parseConfig, type RouterConfig, type RouterConfigInput, routerConfigSchema } from './config/schema.js';
import { type CostModel, createCostModel } from './cost/cost-model.js';
import { DEFAULT_FREQUENCY_MODEL, type FrequencyModel } from './cost/frequency.js';
import {
  clientAborted,
  describeCause,
  draining,
  FreeshError,
  invalidRequest,
  modelNotFound,
  noBackend,
  toFreeshError,
  upstreamDropped,
  upstreamFailed,
  upstreamStatus,
} from './errors.js';
import { createFetchHandler, type FetchHandler } from './http/fetch-handler.js';
import { type Outcome, outcomeOf, RouterMetrics } from './metrics/metrics.js';
import { fleetOf, resolvePolicy } from './pipeline/fleet.js';
import { DashboardCollector } from './dashboard/collector.js';
import { type FleetHealth, HealthCheck } from './pipeline/health.js';
import { publishBackendEvent } from './pipeline/backend-events.js';
import { BackendGuard } from './pipeline/backend-guard.js';
import { FairShareAccounting, LatencyCalibrator, PlannerFeed, PowerStates, PrefillTracker, PredictorFeedback } from './pipeline/bookkeepers.js';
import { type CompletionEvent, Lifecycle, type LifecyclePlugin, type Placement } from './pipeline/lifecycle.js';
import { Placer } from './pipeline/place.js';
import { CONSUMER_GONE, onRelayEnd, readSnippet, responseHeaders, UPSTREAM_PATH, upstreamHeaders } from './pipeline/relay.js';
import { Slots } from './pipeline/slots.js';
import { TbtCap } from './pipeline/tbt-cap.js';
import { AgentTelemetry } from './pipeline/agent-telemetry.js';
import type { Plan } from './plan/plan.js';
import { poolSitesFromConfig } from './plan/live-pools.js';
import { planningClass, PoolPlanner } from './plan/pool-planner.js';
import { inThreadSolver, workerSolver } from './plan/solver.js';
import { ModelPredictor } from './predict/model-predictor.js';
import type { Predictor } from './predict/predictor.js';
import { TokenMeter } from './pipeline/token-meter.js';
import { shareFairShare } from './queue/fair-share.js';
import { fifoOrder } from './queue/order.js';
import { classQueueShares } from './queue/shedding.js';
import { parseRequest } from './request/parse.js';
import { type SloClass, ttftTargetMs } from './request/slo.js';
import { withPriority } from './request/upstream-body.js';
import type { PolicyFactory } from './schedule/builtin.js';
import type { Policy } from './schedule/policy.js';
import { ClusterView } from './state/cluster-view.js';
import { MemoryStateStore } from './state/memory-store.js';
import { isQueueingStore, type Lease, type StateStore } from './state/store.js';
import { failover, healthMarking } from './transport/layers.js';
import { outlierDetection } from './transport/outlier.js';
import { RetryBudget } from './transport/retry-budget.js';
import { compose, isConnectError, type Retarget, type Transport, type UpstreamRequest, type UpstreamResponse } from './transport/transport.js';
import { UndiciTransport } from './transport/undici.js';
import type { Backend, Endpoint, Prediction, RoutingRequest, Site } from './types.js';

/** Everything `createRouter` accepts: the config (see config/schema.ts) plus injected side effects. */
export interface RouterOptions extends Omit<RouterConfigInput, 'policy'> {
  /** A policy name (built-in or from `policies`), or a policy object. Default `freesh`. */
  readonly policy?: string | Policy;
  /** Extra named policies, looked up by `policy`. */
  readonly policies?: Readonly<Record<string, PolicyFactory>>;
  /** Lifecycle plugins run after the router's own and the policy's (see LifecyclePlugin). */
  readonly plugins?: readonly LifecyclePlugin[];
  /** Default: monotonic wall clock. */
  readonly clock?: Clock;
  /** Default: Math.random. */
  readonly rng?: Rng;
  /** Default: undici keep-alive pools with the configured timeouts. The router adds failover and health marking around it. */
  readonly transport?: Transport;
  /** Shared cluster state. Default: in-memory (one process), on `clock`. */
  readonly store?: StateStore;
  /** Default: the trained length model in models/ (the heuristic while it loads, or if it cannot). */
  readonly predictor?: Predictor;
  /** Default: the profile-based cost model with `frequencyModel`. */
  readonly costModel?: CostModel;
  /** Grid carbon intensity by site. Default: each site's configured signal. */
  readonly carbon?: CarbonSignal;
  /** How SM clocks change speed and power, for costing and planning. Default: DEFAULT_FREQUENCY_MODEL (an assumption). */
  readonly frequencyModel?: FrequencyModel;
  /** Called with every pool plan (the simulator applies clocks and parking to its instances). */
  readonly onPlan?: (plan: Plan) => void;
  /** This replica's name in the shared store (the planner's leader lease, published plans). Default: random. */
  readonly replicaId?: string;
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

export interface RoutedResponse {
  readonly status: number;
  readonly headers: Readonly<Record<string, string | string[]>>;
  /** The backend's body, relayed as it arrives. Destroy it to abort the upstream request. */
  readonly body: Readable;
  /** True when the body is a server-sent event stream (so a failure mid-way gets an SSE error event). */
  readonly eventStream: boolean;
  readonly placement: Placement;
}

/**
 * A request holding a slot on its backend, ready to go upstream: what `admit` gives an application
 * that forwards requests itself. It must call `complete` or `abort` exactly once (later calls are
 * ignored); until then the slot stays taken.
 */
export interface Admission {
  readonly request: RoutingRequest;
  readonly placement: Placement;
  /** Where and what to send: the backend's URL for the endpoint, headers, and the body (with the SLO priority for backends that take one). */
  readonly upstream: { readonly url: string; readonly headers: Readonly<Record<string, string>>; readonly body: Uint8Array };
  /**
   * The response ended: `completed`, `upstream-status` (a 4xx relayed), `upstream-dropped` or
   * `client-abort`. `serviceMs`: from admission to the backend's last byte, when known.
   */
  complete(outcome: CompletionEvent['outcome'], outputTokens?: number, serviceMs?: number): void;
  /** It was never served (the backend refused it, failed before answering, or the client left first). */
  abort(outcome: Outcome, error?: FreeshError): void;
}

/** Published on `freesh:complete` when a routed request ends. */
export const completionChannel = channel('freesh:complete');

export interface RequestEnd {
  readonly request: RoutingRequest;
  readonly placement: Placement | undefined;
  readonly outcome: Outcome;
  readonly outputTokens: number | undefined;
  readonly durationMs: number;
  readonly error: FreeshError | undefined;
}

/** How often the cluster snapshot that decisions read is refreshed from the store (ms). */
const SNAPSHOT_REFRESH_MS = 250;
/** How often tenants' counters are shared through a shared store (each round: one update, one read). */
const FAIR_SHARE_SYNC_MS = 500;
/** Told to a request refused while draining: another replica behind the load balancer can take it at once. */
const DRAINING_RETRY_AFTER_MS = 1_000;

/**
 * Wires the request pipeline: parse → predict → place (policy over costed candidates) → admit (a
 * slot from the state store, waiting in the backend's queue) → forward (composed transport) →
 * relay. State that follows requests lives in lifecycle plugins; the router only calls them.
 */
export class Router {
  readonly config: RouterConfig;
  readonly backends: readonly Backend[];
  readonly sites: readonly Site[];
  readonly policy: Policy;
  readonly metrics: RouterMetrics;
  /** Gateway API keys and admin keys, when the config has an `auth` section. */
  readonly auth: Gate | undefined;
  readonly #limiter: RateLimiter | undefined;
  /** What the operator dashboard shows, when `dashboard.enabled`. */
  readonly dashboard: DashboardCollector | undefined;
  readonly #clock: Clock;
  readonly #transport: Transport;
  readonly #health: HealthCheck;
  readonly #guard: BackendGuard;
  #fetch: FetchHandler | undefined;
  readonly #store: StateStore;
  readonly #predictor: Predictor;
  readonly #carbon: CarbonSignal;
  readonly #planner: PoolPlanner | undefined;
  readonly #view: ClusterView;
  readonly #slots: Slots;
  readonly #stopSharingFairShare: (() => void) | undefined;
  readonly #placer: Placer;
  readonly #lifecycle: Lifecycle;
  readonly #latency: LatencyCalibrator;
  /** The SLO signal published for GPU agents and their measured power read back, unless `agent.sloSignalMs` is 0. */
  readonly #agentTelemetry: AgentTelemetry | undefined;
  readonly #ready: Promise<void>;
  readonly #byModel: ReadonlyMap<string, readonly Backend[]>;
  /** Added to the priority of a request sent too late for its TTFT target: it then comes after every class. */
  readonly #latePriorityOffset: number;
  readonly #idPrefix = Math.random().toString(36).slice(2, 8);
  #nextId = 0;
  #inFlight = 0;
  #closed = false;
  #draining = false;
  readonly #idleWaiters: (() => void)[] = [];

  constructor(options: RouterOptions) {
    const { policy, policies, plugins, clock, rng, transport, store, predictor, costModel, carbon, frequencyModel, onPlan, replicaId, ...data } = options;
    this.config = parseConfig(routerConfigSchema, { ...data, policy: typeof policy === 'string' ? policy : undefined }, 'router options');
    const config = this.config;
    const limits = config.limits;
    this.#clock = clock ?? systemClock;
    this.#store = store ?? new MemoryStateStore({ clock: this.#clock });
    this.#predictor =
      predictor ??
      new ModelPredictor({
        onError: (err) => console.warn(`freesh: the length model is unavailable, using the heuristic predictor: ${String(err)}`),
      });
    const frequency = frequencyModel ?? DEFAULT_FREQUENCY_MODEL;
    this.policy = typeof policy === 'object' ? policy : resolvePolicy(config.policy, policies);

    const fleet = fleetOf(config);
    this.sites = fleet.sites;
    this.backends = fleet.backends;
    this.#byModel = fleet.byModel;
    this.#carbon = carbon ?? carbonSignalFromConfig(config.sites);
    const backendIds = this.backends.map((b) => b.id);
    const priorities = Object.values(config.sloClasses).map((c) => c.priority);
    this.#latePriorityOffset = Math.max(...priorities) - Math.min(...priorities) + 1;

    const planning = config.plan.enabled ?? this.policy.planner !== undefined;
    // Parked instances powered off take a boot to serve again: placement waits for it.
    const power =
      planning && config.plan.parkedPower === 'off' && config.plan.bootMs > 0
        ? new PowerStates(backendIds, config.plan.bootMs, (id, nowMs) => this.#view.at(this.#view.ref(id), nowMs).inFlight)
        : undefined;
    const following = power ? (plan: Plan) => (power.follow(plan, this.#clock.now()), onPlan?.(plan)) : onPlan;
    this.#planner = planning ? this.#createPlanner(frequency, following, replicaId ?? `replica-${this.#idPrefix}`) : undefined;
    const prefill = new PrefillTracker(backendIds);
    this.#latency = new LatencyCalibrator();
    const fair = (this.policy.queue ?? fifoOrder).tenantFair && config.fairness.enabled ? new FairShareAccounting() : undefined;
    this.metrics = new RouterMetrics({
      queues: () => this.#slots.samples(),
      backends: () =>
        this.backends.map((b) => {
          const inForce = this.#planner?.plan;
          return [b.id, { planned: inForce?.active.has(b.id), clockFraction: inForce ? (inForce.clockFraction.get(b.id) ?? 1) : undefined, latencyFactor: this.#latency.factor(b.id) }] as const;
        }),
      planStatus: planning ? () => this.#planner?.plan.status : undefined,
      storeDegraded: 'degraded' in this.#store ? () => this.#store.degraded === true : undefined,
      health: () => {
        const nowMs = this.#clock.now();
        return this.backends.map((b) => [b.id, { healthy: this.#view.get(b.id, nowMs).healthy, circuit: this.#guard.state(b.id) }] as const);
      },
    });
    this.auth = config.auth && new Gate(config.auth);
    this.#limiter =
      config.auth && hasLimits(config.auth)
        ? new RateLimiter({
            store: this.#store,
            clock: this.#clock,
            leaseTtlMs: limits.leaseTtlMs,
            tenants: config.auth.tenants,
            outputTokensEstimate: config.auth.outputTokensEstimate,
            onStoreError: () => this.metrics.pluginErrors.labels('store').inc(),
          })
        : undefined;
    this.dashboard = config.dashboard.enabled
      ? new DashboardCollector({
          config,
          clock: this.#clock,
          sites: this.sites,
          backends: this.backends,
          carbon: this.#carbon,
          load: (id, nowMs) => ({ inFlight: this.#view.get(id, nowMs).inFlight, queued: this.#slots.queue(id).waiting }),
          healthy: (id, nowMs) => this.#view.get(id, nowMs).healthy,
          plan: () => this.#planner?.plan,
          registry: this.metrics.registry,
        })
      : undefined;
    const agentTelemetry = (this.#agentTelemetry =
      config.agent.sloSignalMs > 0
        ? new AgentTelemetry({
            store: this.#store,
            clock: this.#clock,
            inFlight: (id, nowMs) => this.#view.at(this.#view.ref(id), nowMs).inFlight,
            backends: this.backends,
            frequency,
            clockFraction: (id) => this.#planner?.plan.clockFraction.get(id) ?? 1,
            replicaId: replicaId ?? `replica-${this.#idPrefix}`,
            periodMs: config.agent.sloSignalMs,
            freshMs: config.agent.measuredPowerFreshMs,
            onError: () => this.metrics.pluginErrors.labels('agent-telemetry').inc(),
          })
        : undefined);
    this.#lifecycle = new Lifecycle(
      [
        ...(this.#limiter ? [this.#limiter] : []),
        prefill,
        this.#latency,
        new PredictorFeedback(this.#predictor),
        ...(fair ? [fair] : []),
        ...(this.#planner ? [new PlannerFeed(this.#planner)] : []),
        ...(power ? [power] : []),
        ...(agentTelemetry ? [agentTelemetry] : []),
        ...(this.policy.plugins ?? []),
        ...(plugins ?? []),
        ...(this.dashboard ? [this.dashboard] : []),
      ],
      (plugin) => this.metrics.pluginErrors.labels(`lifecycle:${plugin}`).inc(),
    );

    const storeError = (): void => this.metrics.pluginErrors.labels('store').inc();
    this.#view = new ClusterView({ store: this.#store, backendIds, clock: this.#clock, refreshMs: SNAPSHOT_REFRESH_MS, onError: storeError });
    const tbtCap = this.policy.tbtCap
      ? new TbtCap({ config, view: this.#view, prefill, latency: this.#latency, frequency, plan: () => this.#planner?.plan })
      : undefined;
    this.#slots = new Slots({
      backends: this.backends,
      store: this.#store,
      view: this.#view,
      clock: this.#clock,
      leaseTtlMs: limits.leaseTtlMs,
      maxQueueLength: limits.maxQueueLength,
      maxQueueMs: limits.maxQueueMs,
      shareOf: shareOfClass(classQueueShares(config.sloClasses, config.overload.shareStep, config.overload.minShare)),
      fairShare: fair?.counters,
      urgentWithinMs: config.fairness.urgentWithinMs,
      demoteLate: (this.policy.queue ?? fifoOrder).latestStart,
      onStoreError: storeError,
      onLeaseLost: () => this.metrics.pluginErrors.labels('lease-lost').inc(),
      owner: replicaId ?? `replica-${this.#idPrefix}`,
      limit: tbtCap ? (backend, tag, promptTokens) => tbtCap.limit(backend, tag, promptTokens, this.#clock.now()) : undefined,
    });
    // Replicas on a shared store order their queues by the service each tenant got from the whole fleet.
    this.#stopSharingFairShare =
      fair && isQueueingStore(this.#store) ? shareFairShare(fair.counters, this.#store, this.#clock, FAIR_SHARE_SYNC_MS, storeError) : undefined;
    this.#placer = new Placer({
      config,
      policy: this.policy,
      costModel: costModel ?? createCostModel(frequency),
      frequency,
      carbon: this.#carbon,
      rng: rng ?? Math.random,
      view: this.#view,
      prefill,
      latency: this.#latency,
      power,
      queue: (id) => this.#slots.queue(id),
      plan: () => this.#planner?.view(),
      powerFactor: agentTelemetry ? (id, nowMs) => agentTelemetry.powerFactor(id, nowMs) : undefined,
      onPluginErrors: (errors) => {
        for (const { plugin } of errors) this.metrics.pluginErrors.labels(plugin).inc();
      },
    });
    const baseTransport =
      transport ?? new UndiciTransport({ connectTimeoutMs: limits.connectTimeoutMs, headersTimeoutMs: limits.headersTimeoutMs, bodyTimeoutMs: limits.bodyTimeoutMs });
    const health = config.health;
    this.#guard = new BackendGuard({
      backendIds,
      view: this.#view,
      clock: this.#clock,
      consecutiveFailures: health.consecutiveFailures,
      baseEjectionMs: health.baseEjectionMs,
      maxEjectionMs: health.maxEjectionMs,
      maxEjectedPercent: health.maxEjectedPercent,
      onEject: (backendId, reason) => this.metrics.ejections.labels(backendId, reason).inc(),
      onStoreError: storeError,
    });
    this.#health = new HealthCheck({
      backends: this.backends,
      transport: baseTransport,
      view: this.#view,
      clock: this.#clock,
      guard: this.#guard,
      probePath: health.probePath,
      probeIntervalMs: health.probes ? health.probeIntervalMs : undefined,
      probeTimeoutMs: health.probeTimeoutMs,
      unhealthyThreshold: health.unhealthyThreshold,
      unhealthyMs: limits.unhealthyMs,
    });
    const budget = new RetryBudget({
      percent: health.retryBudgetPercent,
      min: health.retryBudgetMin,
      inFlight: () => this.#inFlight,
      onRetry: (failed, cause, upstream) => {
        this.metrics.retries.labels(failed.id).inc();
        publishBackendEvent({ kind: 'failover', backendId: failed.id, requestId: upstream.headers['x-request-id'] ?? '', reason: describeCause(cause) });
      },
      onExhausted: (failed) => this.metrics.retryBudgetExhausted.labels(failed.id).inc(),
    });
    this.#transport = compose(
      baseTransport,
      healthMarking((backend, cause) => this.#guard.unreachable(backend.id, describeCause(cause), limits.unhealthyMs)),
      outlierDetection(this.#guard),
      failover({ retries: limits.retries, budget }),
    );
    this.#health.start();

    agentTelemetry?.start();
    this.#ready = Promise.all([this.#planner?.start(), this.#view.start()]).then(() => undefined);
    this.#ready.catch(() => {
      // Without a solver the initial plan (everything on) stays in force; ready() reports why.
    });
  }

  /** Resolves once the planner's solver is ready and the first cluster snapshot is read. */
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

  /** The `GET /v1/models` body: the union of the fleet's models. */
  modelList(): { object: 'list'; data: { id: string; object: 'model'; created: number; owned_by: string }[] } {
    return { object: 'list', data: this.models().map((id) => ({ id, object: 'model', created: 0, owned_by: 'freesh' })) };
  }

  /** Requests admitted or waiting, not yet finished. */
  get inFlight(): number {
    return this.#inFlight;
  }

  /** Backends the router may send work to now (healthy in the cluster view), out of all. */
  health(): FleetHealth {
    return this.#health.now();
  }

  /** `health()` after asking every backend (GET `health.probePath`) unless that was done in the last 2 s. */
  async checkHealth(): Promise<FleetHealth> {
    const health = await this.#health.check();
    return 'degraded' in this.#store ? { ...health, stateDegraded: this.#store.degraded === true } : health;
  }

  /** Parses a raw OpenAI body into a RoutingRequest, or throws a 400 FreeshError. */
  parse(call: RouterCall): RoutingRequest {
    const request = parseRequest(call.endpoint, call.body, {
      id: call.header('x-request-id') ?? `req-${this.#idPrefix}-${(this.#nextId++).toString(36)}`,
      arrivalMs: this.#clock.now(),
      defaultTenant: this.config.defaults.tenant,
      defaultSloClass: this.config.defaults.sloClass,
      header: call.header,
      maxJsonDepth: this.config.limits.maxJsonDepth,
      strict: this.config.limits.strictRequests ? { maxOutputTokens: this.config.limits.maxOutputTokens } : undefined,
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

  /**
   * Where the request would go now, and what it would cost there: predicts, costs every backend
   * serving the model and runs the policy. Changes nothing — no slot taken, no counter moved — so an
   * application may ask, then `admit` and forward the request itself. Throws 404 or 503.
   */
  async decide(request: RoutingRequest, options: { readonly exclude?: ReadonlySet<string> } = {}): Promise<Placement> {
    const pool = this.#byModel.get(request.model);
    if (!pool) throw modelNotFound(request.model);
    const prediction = await this.#predictor.predict(request);
    return this.#placer.place(request, prediction, pool, this.#clock.now(), options.exclude);
  }

  /**
   * Takes a slot for a decided request (waiting in its backend's queue if needed; rejects with 429,
   * 504 or 499) and returns what to send upstream. For applications that forward requests themselves.
   */
  async admit(request: RoutingRequest, placement: Placement, options: { readonly signal?: CancelSignal } = {}): Promise<Admission> {
    if (this.#closed) throw noBackend('*', 'the router is shutting down');
    if (this.#draining) throw this.#count('rejected-draining', undefined, draining(DRAINING_RETRY_AFTER_MS), request);
    this.#lifecycle.arrive(request, placement.prediction, placement.requestType, this.#clock.now());
    this.#inFlight++;
    try {
      const held = await this.#admit(request, placement, options.signal);
      const settle = (): void => this.#settled();
      const url = placement.backend.baseURL.replace(/\/+$/, '') + UPSTREAM_PATH[request.endpoint];
      return {
        request,
        placement,
        upstream: { url, headers: held.upstream.headers, body: held.upstream.body ?? new Uint8Array() },
        complete: (outcome, outputTokens, serviceMs) => {
          if (held.complete(outcome, outputTokens, serviceMs ?? this.#clock.now() - held.sentAtMs)) settle();
        },
        abort: (outcome, error) => {
          if (held.abort(outcome, error)) settle();
        },
      };
    } catch (err) {
      this.#settled();
      throw this.#count(outcomeOf(toFreeshError(err)), placement.backend.id, toFreeshError(err), request, placement);
    }
  }

  /** The whole path for a raw call: parse, then `serve`. */
  dispatch(call: RouterCall): Promise<RoutedResponse> {
    // Not an async function: it hands back `serve`'s promise rather than wrapping it in another.
    if (this.#closed) return Promise.reject(noBackend('*', 'the router is shutting down'));
    if (this.#draining) return Promise.reject(this.#count('rejected-draining', undefined, draining(DRAINING_RETRY_AFTER_MS)));
    if (this.auth !== undefined) return this.#dispatchWithKey(call, this.auth);
    let request: RoutingRequest;
    try {
      request = this.parse(call);
    } catch (err) {
      return Promise.reject(this.#count('rejected-invalid', undefined, toFreeshError(err)));
    }
    return this.serve(request, call.signal);
  }

  /** Places, admits and forwards a parsed request; resolves when the backend's headers arrive. */
  async serve(request: RoutingRequest, signal?: CancelSignal): Promise<RoutedResponse> {
    if (this.#closed) throw noBackend('*', 'the router is shutting down');
    if (this.#draining) throw this.#count('rejected-draining', undefined, draining(DRAINING_RETRY_AFTER_MS), request);
    this.#inFlight++;
    try {
      return await this.#serve(request, signal);
    } catch (err) {
      this.#settled();
      throw err;
    }
  }

  /** The fetch-API edge over this router (`createFetchHandler(router)`): always resolves with a Response. */
  handle(request: Request): Promise<Response> {
    this.#fetch ??= createFetchHandler(this);
    return this.#fetch(request);
  }

  /**
   * Stops taking new requests (503 `draining`, `/healthz` 503) while those in flight and queued go on;
   * `whenIdle` says when they are done. For a graceful stop, before `close`.
   */
  drain(): void {
    this.#draining = true;
  }

  /** True once `drain` was called. */
  get draining(): boolean {
    return this.#draining;
  }

  /** Resolves once nothing is in flight (used to drain on shutdown). */
  whenIdle(): Promise<void> {
    return this.#inFlight === 0 ? Promise.resolve() : new Promise((resolve) => this.#idleWaiters.push(resolve));
  }

  /** Refuses queued requests, closes connections and the store. In-flight responses are cut. */
  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    this.#limiter?.close();
    this.dashboard?.close();
    this.#view.stop();
    this.#health.stop();
    this.#agentTelemetry?.stop();
    this.#stopSharingFairShare?.();
    this.#slots.close(noBackend('*', 'the router is shutting down'));
    await Promise.all([this.#planner?.stop(), this.#transport.close(), this.#store.close(), this.#predictor.close?.(), this.#carbon.close?.()]);
  }

  async #serve(request: RoutingRequest, signal: CancelSignal | undefined): Promise<RoutedResponse> {
    const pool = this.#byModel.get(request.model);
    if (!pool) throw this.#count('rejected-invalid', undefined, modelNotFound(request.model), request);
    const decisionStarted = performance.now();
    const prediction = await this.#predictor.predict(request);
    let placement = this.#place(request, prediction, pool, undefined);
    this.metrics.decisionSeconds.observe((performance.now() - decisionStarted) / 1000);
    this.#lifecycle.arrive(request, prediction, placement.requestType, this.#clock.now());

    let held: Held;
    try {
      held = await this.#admit(request, placement, signal);
    } catch (err) {
      const error = toFreeshError(err);
      throw this.#count(outcomeOf(error), placement.backend.id, error, request, placement);
    }
    const metering = new Metering(this.#clock);
    let excluded: Set<string> | undefined;
    const reroute = async (failed: Backend, cause: unknown): Promise<Retarget> => {
      // The failed attempt never reached the client: give its slot back and place again elsewhere.
      held.abort(isConnectError(cause) ? 'upstream-unreachable' : 'upstream-status');
      excluded ??= new Set();
      excluded.add(failed.id);
      try {
        placement = this.#place(request, prediction, pool, excluded);
      } catch (err) {
        throw this.#count('rejected-no-backend', undefined, toFreeshError(err), request);
      }
      try {
        held = await this.#admit(request, placement, signal);
      } catch (err) {
        const error = toFreeshError(err);
        throw this.#count(outcomeOf(error), placement.backend.id, error, request, placement);
      }
      metering.meter = new TokenMeter();
      // The next attempt is metered, and may fail over again, like the first.
      return { backend: placement.backend, request: tapped(held.upstream, metering.onData, reroute) };
    };

    let upstream: UpstreamResponse;
    try {
      upstream = await this.#transport.send(placement.backend, tapped(held.upstream, metering.onData, reroute));
    } catch (err) {
      if (err instanceof FreeshError) throw err; // from reroute, already counted
      const backendId = placement.backend.id;
      if (signal?.aborted) {
        held.abort('client-abort');
        throw this.#count('client-abort', backendId, clientAborted(), request, placement);
      }
      held.abort('upstream-unreachable');
      throw this.#count('upstream-unreachable', backendId, upstreamFailed(backendId, err), request, placement);
    }

    if (upstream.status >= 500) {
      const detail = await readSnippet(upstream.body, placement.backend.apiKey);
      held.abort('upstream-status');
      throw this.#count('upstream-status', placement.backend.id, upstreamStatus(placement.backend.id, upstream.status, detail), request, placement);
    }
    this.#lifecycle.firstByte({ request, placement, nowMs: this.#clock.now() });

    const final = placement;
    const finalHeld = held;
    const body = upstream.body;
    onRelayEnd(
      body,
      () => signal?.aborted === true,
      (err) => {
        const meter = metering.meter;
        const tokens = meter.outputTokens();
        let outcome: CompletionEvent['outcome'] = upstream.status >= 400 ? 'upstream-status' : 'completed';
        let error: FreeshError | undefined;
        if (err === CONSUMER_GONE) {
          outcome = 'client-abort';
          error = clientAborted();
        } else if (err) {
          outcome = 'upstream-dropped';
          error = upstreamDropped(final.backend.id, err);
          publishBackendEvent({ kind: 'stream-dropped', backendId: final.backend.id, requestId: request.id, reason: describeCause(err) });
        }
        finalHeld.complete(outcome, tokens, (meter.lastChunkAtMs ?? this.#clock.now()) - finalHeld.sentAtMs, error);
        this.#settled();
      },
    );
    const contentType = String(upstream.headers['content-type'] ?? '');
    return { status: upstream.status, headers: responseHeaders(request, final, upstream), body, eventStream: contentType.includes('text/event-stream'), placement: final };
  }

  /**
   * `dispatch` with gateway keys: the key (401), its tenant and the headers it may set, what it may
   * use (403), and its and its tenant's limits (429), then `serve`, whose response carries the
   * `x-ratelimit-*` headers. The request's slots are freed and its tokens settled when it ends.
   */
  async #dispatchWithKey(call: RouterCall, gate: Gate): Promise<RoutedResponse> {
    let principal: Principal | undefined;
    try {
      principal = gate.authenticate(call.header);
    } catch (err) {
      throw this.#count('rejected-auth', undefined, toFreeshError(err));
    }
    let request: RoutingRequest;
    try {
      request = this.parse(principal ? { endpoint: call.endpoint, body: call.body, header: gate.headers(principal, call.header), signal: call.signal } : call);
    } catch (err) {
      throw this.#count('rejected-invalid', undefined, toFreeshError(err));
    }
    const limiter = this.#limiter;
    if (principal === undefined) return this.serve(request, call.signal);
    let limitHeaders: Record<string, string> | undefined;
    try {
      gate.authorize(principal, request);
      limitHeaders = await limiter?.acquire(principal, request);
    } catch (err) {
      const error = toFreeshError(err);
      throw this.#count(error.status === 429 ? 'rejected-rate-limit' : 'rejected-auth', undefined, error, request);
    }
    let routed: RoutedResponse;
    try {
      routed = await this.serve(request, call.signal);
    } catch (err) {
      // Never served: it produced nothing, and is charged its prompt only.
      limiter?.end(request, 0);
      throw err;
    }
    return limitHeaders === undefined ? routed : { ...routed, headers: { ...routed.headers, ...limitHeaders } };
  }

  #place(request: RoutingRequest, prediction: Prediction, pool: readonly Backend[], exclude: ReadonlySet<string> | undefined): Placement {
    try {
      return this.#placer.place(request, prediction, pool, this.#clock.now(), exclude);
    } catch (err) {
      throw this.#count('rejected-no-backend', undefined, toFreeshError(err), request);
    }
  }

  /** Takes a slot (the lifecycle's place, admit and send), and builds what goes upstream. */
  async #admit(request: RoutingRequest, placement: Placement, signal: CancelSignal | undefined): Promise<Held> {
    const { backend, slo } = placement;
    this.#lifecycle.place({ request, placement, nowMs: this.#clock.now() });
    const lease = await this.#slots.acquire({
      backend,
      priority: (this.policy.queue ?? fifoOrder).priority(request, placement),
      tenant: request.tenant,
      tag: request.sloClass,
      promptTokens: request.promptTokens,
      signal,
    });
    const sentAtMs = this.#clock.now();
    this.#lifecycle.admit({ request, placement, nowMs: sentAtMs });
    const priority = backend.forwardPriority ? this.#upstreamPriority(request, placement, slo, sentAtMs) : 0;
    this.#lifecycle.send({ request, placement, nowMs: sentAtMs, priority });
    const upstream: UpstreamRequest = {
      method: 'POST',
      path: UPSTREAM_PATH[request.endpoint],
      headers: upstreamHeaders(request, backend),
      body: backend.forwardPriority ? withPriority(request.rawBody, priority) : request.rawBody,
      signal,
    };
    return new Held(request, placement, lease, sentAtMs, upstream, (held, outcome, tokens, serviceMs, error) => this.#end(held, outcome, tokens, serviceMs, error));
  }

  /** Ends a held slot: lifecycle hooks and, for a served request, metrics and the completion channel. */
  #end(held: Held, outcome: Outcome, outputTokens: number | undefined, serviceMs: number | undefined, error: FreeshError | undefined): void {
    const { request, placement } = held;
    this.#slots.release(held.lease);
    // Events are written out field by field: an object spread (`{ ...event, outcome }`) here cost
    // ~1 KB of allocation per call, a third of it promoted out of the young generation (V8's spread
    // copy with a double field), against ~30 B for the literal (measured with --trace-gc-nvp).
    const nowMs = this.#clock.now();
    if (serviceMs === undefined) {
      this.#lifecycle.abort({ request, placement, nowMs, outcome });
      return;
    }
    this.#lifecycle.complete({ request, placement, nowMs, outcome: outcome as CompletionEvent['outcome'], outputTokens, serviceMs });
    const tally = this.metrics.backend(placement.backend.id);
    tally.upstreamSeconds.observe(serviceMs / 1000);
    tally.energyJ += placement.cost.energyJ;
    tally.carbonG += placement.cost.carbonG;
    if (outputTokens !== undefined) tally.outputTokens += outputTokens;
    this.#count(outcome, placement.backend.id, error, request, placement, outputTokens);
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

  #createPlanner(frequency: FrequencyModel, onPlan: ((plan: Plan) => void) | undefined, replicaId: string): PoolPlanner {
    const plan = this.config.plan;
    return new PoolPlanner({
      backends: this.backends,
      clock: this.#clock,
      carbon: this.#carbon,
      store: this.#store,
      objective: this.config.objective,
      slo: planningClass(this.config.sloClasses),
      frequency,
      stepMs: plan.stepMs,
      windowMs: plan.windowMs,
      margin: plan.margin,
      peakQuantile: plan.peakQuantile,
      maxUtilisation: plan.maxUtilisation,
      clockLevels: this.policy.planner?.clockScaling === false ? [1] : plan.clockLevels,
      onPlan,
      solver: plan.solveInWorker ? workerSolver() : inThreadSolver(),
      replicaId,
      pools: poolSitesFromConfig(this.config.sites),
      seasonSteps: plan.forecast.seasonSteps,
      levelSteps: plan.forecast.levelSteps,
    });
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
    if (error && request) error.requestId ??= request.id;
    if (request && completionChannel.hasSubscribers) {
      completionChannel.publish({
        request,
        placement,
        outcome,
        outputTokens,
        durationMs: this.#clock.now() - request.arrivalMs,
        error,
      } satisfies RequestEnd);
    }
    return error;
  }

  #settled(): void {
    this.#inFlight--;
    if (this.#inFlight === 0) for (const resolve of this.#idleWaiters.splice(0)) resolve();
  }
}

type EndHeld = (held: Held, outcome: Outcome, outputTokens: number | undefined, serviceMs: number | undefined, error: FreeshError | undefined) => void;

/** A slot held for one attempt of a request: ended exactly once, by completion or abort. */
class Held {
  #ended = false;

  constructor(
    readonly request: RoutingRequest,
    readonly placement: Placement,
    readonly lease: Lease,
    readonly sentAtMs: number,
    readonly upstream: UpstreamRequest,
    readonly end: EndHeld,
  ) {}

  /** True the first time. */
  complete(outcome: CompletionEvent['outcome'], outputTokens: number | undefined, serviceMs: number, error?: FreeshError): boolean {
    if (this.#ended) return false;
    this.#ended = true;
    this.end(this, outcome, outputTokens, Math.max(0, serviceMs), error);
    return true;
  }

  /** True the first time. Outcomes are counted by whoever reports the request's final failure. */
  abort(outcome: Outcome, _error?: FreeshError): boolean {
    if (this.#ended) return false;
    this.#ended = true;
    this.end(this, outcome, undefined, undefined, undefined);
    return true;
  }
}

/**
 * The token meter of a request's current attempt, and the tap that feeds it. The tap is made here,
 * not as a closure in `#serve`: undici's body holds it, and a closure there kept the whole request
 * (its context, the response, the relay) alive past two scavenges, so ~7 KB a request was promoted
 * to the old generation (measured with --trace-gc-nvp under bench:overhead's load; 0.3 KB without).
 */
class Metering {
  meter = new TokenMeter();
  readonly onData: (chunk: Buffer) => void;

  constructor(clock: Clock) {
    this.onData = (chunk) => this.meter.push(chunk, clock.now());
  }
}

/** The first attempt's request with the body tap and the failover hook (a literal: see `#end` on spreads). */
function tapped(u: UpstreamRequest, onData: UpstreamRequest['onData'], reroute: UpstreamRequest['reroute']): UpstreamRequest {
  return { method: u.method, path: u.path, headers: u.headers, body: u.body, signal: u.signal, onData, reroute };
}

/** A class's share of each queue; a tag that is no class (none is) may fill it all. */
function shareOfClass(shares: ReadonlyMap<string, number>): (tag: string | undefined) => number {
  return (tag) => (tag === undefined ? 1 : (shares.get(tag) ?? 1));
}

export function createRouter(options: RouterOptions): Router {
  return new Router(options);
}
