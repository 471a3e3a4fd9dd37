import { subscribe, unsubscribe } from 'node:diagnostics_channel';
import { LRUCache } from 'lru-cache';
import { Counter, Gauge, type Registry } from 'prom-client';
import type { CarbonSignal } from '../carbon/signal.js';
import { type Clock, seededRng, type Timer } from '../clock.js';
import type { RouterConfig } from '../config/schema.js';
import type { Outcome } from '../metrics/metrics.js';
import type { AbortEvent, CompletionEvent, LifecyclePlugin, RequestEvent, SendEvent } from '../pipeline/lifecycle.js';
import type { Plan } from '../plan/plan.js';
import { ttftTargetMs } from '../request/slo.js';
import { BUILTIN_POLICIES } from '../schedule/builtin.js';
import { decide, type DecisionTrace } from '../schedule/orchestrator.js';
import type { DecisionContext, Policy } from '../schedule/policy.js';
import type { Backend, RoutingRequest, Site } from '../types.js';
import { quantile, Ring } from './ring.js';
import type { BackendRow, DashboardState, DecisionRow, SiteRow } from './state.js';

/** The baseline every decision is compared with: the least-loaded healthy backend. */
export const BASELINE_POLICY = 'least-loaded';

/** How the saving is estimated, said in the JSON so a reader of the numbers has the method beside them. */
export const BASELINE_METHOD =
  'For every routed request, the least-loaded policy is run over the same costed candidates at the same instant; ' +
  'the energy and carbon the cost model estimated for its pick are summed when the request ends, as the dispatch estimates of the actual picks are. ' +
  'It holds the fleet state fixed: the load the baseline would itself have caused is not simulated.';

export interface DashboardSources {
  readonly config: RouterConfig;
  readonly clock: Clock;
  readonly sites: readonly Site[];
  readonly backends: readonly Backend[];
  readonly carbon: CarbonSignal;
  /**
   * A backend's load as the cluster view has it: requests holding a lease across every replica
   * sharing the store, and requests waiting in its queue (the shared queue's count with a shared store).
   */
  readonly load: (backendId: string, nowMs: number) => { readonly inFlight: number; readonly queued: number };
  readonly healthy: (backendId: string, nowMs: number) => boolean;
  readonly plan: () => Plan | undefined;
  /** Where the dashboard's metrics go (the router's registry), so `/metrics` has every number it shows. */
  readonly registry: Registry;
}

/** What a decision channel message carries (see `decisionChannel` in pipeline/place.ts). */
interface DecisionMessage {
  readonly request: RoutingRequest;
  readonly trace: DecisionTrace | undefined;
  readonly context?: DecisionContext;
}

/** A request's end as published on `freesh:complete` (see `RequestEnd` in router.ts). */
interface EndMessage {
  readonly request: RoutingRequest;
  readonly placement: RequestEvent['placement'] | undefined;
  readonly outcome: Outcome;
  readonly outputTokens: number | undefined;
  readonly durationMs: number;
}

interface Baseline {
  readonly backend: string;
  readonly energyJ: number;
  readonly carbonG: number;
}

interface BackendStats {
  readonly backend: Backend;
  readonly ttftMs: Ring<number>;
  readonly tbtMs: Ring<number>;
  /** Requests placed here and not yet admitted, with their latest start (router clock, ms) and when they were placed. */
  readonly waiting: Map<RoutingRequest, { readonly latestStartMs: number; readonly placedMs: number }>;
  served: number;
  energyJ: number;
  carbonG: number;
  outputTokens: number;
}

interface TenantStats {
  ended: number;
  completed: number;
  outputTokens: number;
}

interface SloStats {
  ended: number;
  attained: number;
}

/** Entries waiting longer than the queue allows plus this are dropped as stale (a request whose end was never seen). */
const STALE_MARGIN_MS = 5_000;

/**
 * Everything the operator dashboard shows, collected as a lifecycle plugin (timings, energy and the
 * baseline of served requests) and from the router's channels (decision traces, how each request
 * ended). Memory is bounded: ring buffers, a tenant LRU, and per-request notes held in WeakMaps
 * that go with the request. Never keeps prompt text.
 */
export class DashboardCollector implements LifecyclePlugin {
  readonly name = 'dashboard';
  readonly #s: DashboardSources;
  readonly #o: RouterConfig['dashboard'];
  readonly #baselinePolicy: Policy;
  /** Ties in the baseline's picker draw from this, not the router's generator, so turning the dashboard on changes no decision. */
  readonly #rng = seededRng(1);
  readonly #backends = new Map<Backend, BackendStats>();
  readonly #sentMs = new WeakMap<RoutingRequest, number>();
  readonly #firstByteMs = new WeakMap<RoutingRequest, number>();
  readonly #decided = new WeakMap<RoutingRequest, { readonly trace: DecisionTrace | undefined; readonly baseline: Baseline | undefined }>();
  readonly #rows = new WeakMap<RoutingRequest, DecisionRow>();
  readonly #decisions: Ring<DecisionRow>;
  readonly #carbon = new Map<string, Ring<{ readonly atMs: number; readonly gramsPerKWh: number }>>();
  readonly #placedBySite = new Map<string, number>();
  readonly #recentSites: Ring<string>;
  readonly #slo = new Map<string, SloStats>();
  readonly #tenants: LRUCache<string, TenantStats>;
  readonly #startedMs: number;
  readonly #fleet = { served: 0, energyJ: 0, carbonG: 0, outputTokens: 0, baselineEnergyJ: 0, baselineCarbonG: 0, withBaseline: 0 };
  #timer: Timer | undefined;
  #closed = false;
  readonly #onDecision = (message: unknown): void => this.#decision(message as DecisionMessage);
  readonly #onEnd = (message: unknown): void => this.#end(message as EndMessage);

  constructor(sources: DashboardSources) {
    this.#s = sources;
    this.#o = sources.config.dashboard;
    this.#baselinePolicy = BUILTIN_POLICIES[BASELINE_POLICY]!();
    this.#decisions = new Ring(this.#o.decisions);
    this.#recentSites = new Ring(this.#o.shareWindow);
    this.#tenants = new LRUCache({ max: this.#o.maxTenants });
    this.#startedMs = sources.clock.now();
    for (const backend of sources.backends) {
      this.#backends.set(backend, {
        backend,
        ttftMs: new Ring(this.#o.latencyWindow),
        tbtMs: new Ring(this.#o.latencyWindow),
        waiting: new Map(),
        served: 0,
        energyJ: 0,
        carbonG: 0,
        outputTokens: 0,
      });
    }
    for (const site of sources.sites) this.#carbon.set(site.id, new Ring(this.#o.carbonSamples));
    for (const name of Object.keys(sources.config.sloClasses)) this.#slo.set(name, { ended: 0, attained: 0 });
    this.#sampleCarbon();
    subscribe('freesh:decision', this.#onDecision);
    subscribe('freesh:complete', this.#onEnd);
    this.#registerMetrics(sources.registry);
  }

  /** Stops sampling and listening. */
  close(): void {
    this.#closed = true;
    this.#timer?.cancel();
    unsubscribe('freesh:decision', this.#onDecision);
    unsubscribe('freesh:complete', this.#onEnd);
  }

  place(event: RequestEvent): void {
    const { request, placement, nowMs } = event;
    const stats = this.#backends.get(placement.backend);
    if (!stats) return;
    const latestStartMs = placement.deadlineMs - (placement.cost.e2eMs - placement.cost.waitMs);
    stats.waiting.set(request, { latestStartMs, placedMs: nowMs });
    const site = placement.backend.site.id;
    this.#placedBySite.set(site, (this.#placedBySite.get(site) ?? 0) + 1);
    this.#recentSites.push(site);
    const decided = this.#decided.get(request);
    const row: DecisionRow = {
      requestId: request.id,
      atMs: nowMs,
      model: request.model,
      tenant: request.tenant,
      sloClass: request.sloClass,
      stream: request.stream,
      promptTokens: request.promptTokens,
      predictedOutputTokens: { p50: placement.prediction.outputTokensP50, p90: placement.prediction.outputTokensP90 },
      requestType: placement.requestType,
      picked: placement.backend.id,
      site,
      estimate: {
        energyJ: placement.cost.energyJ,
        carbonG: placement.cost.carbonG,
        ttftMs: placement.cost.ttftMs,
        e2eMs: placement.cost.e2eMs,
      },
      baseline: decided?.baseline ? { policy: BASELINE_POLICY, ...decided.baseline } : null,
      relaxed: [...placement.relaxed],
      policy: decided?.trace?.policy ?? null,
      candidates: decided?.trace?.candidates.map((c) => ({ ...c })) ?? [],
      pluginUs: decided?.trace ? { ...decided.trace.pluginUs } : {},
      errors: decided?.trace?.errors.map((e) => ({ ...e })) ?? [],
      outcome: null,
      outputTokens: null,
    };
    this.#rows.set(request, row);
    this.#decisions.push(row);
  }

  admit(event: RequestEvent): void {
    this.#backends.get(event.placement.backend)?.waiting.delete(event.request);
  }

  /** An attempt that held a slot and was never served (on failover, the attempt before the next placement). */
  abort(event: AbortEvent): void {
    this.#backends.get(event.placement.backend)?.waiting.delete(event.request);
    const row = this.#rows.get(event.request);
    if (row && row.picked === event.placement.backend.id) row.outcome = event.outcome;
  }

  send(event: SendEvent): void {
    this.#sentMs.set(event.request, event.nowMs);
  }

  firstByte(event: RequestEvent): void {
    this.#firstByteMs.set(event.request, event.nowMs);
  }

  complete(event: CompletionEvent): void {
    const { request, placement, outputTokens } = event;
    const stats = this.#backends.get(placement.backend);
    if (!stats) return;
    const fleet = this.#fleet;
    const { energyJ, carbonG } = placement.cost;
    // The same figures, at the same moment, as the router's per-backend energy and carbon tallies.
    stats.served++;
    stats.energyJ += energyJ;
    stats.carbonG += carbonG;
    fleet.served++;
    fleet.energyJ += energyJ;
    fleet.carbonG += carbonG;
    if (outputTokens !== undefined) {
      stats.outputTokens += outputTokens;
      fleet.outputTokens += outputTokens;
    }
    const baseline = this.#decided.get(request)?.baseline;
    if (baseline) {
      fleet.baselineEnergyJ += baseline.energyJ;
      fleet.baselineCarbonG += baseline.carbonG;
      fleet.withBaseline++;
    } else {
      // No baseline was computed (a decision made before the dashboard listened): counted as no saving.
      fleet.baselineEnergyJ += energyJ;
      fleet.baselineCarbonG += carbonG;
    }
    const first = this.#firstByteMs.get(request);
    const sent = this.#sentMs.get(request);
    // Only a stream's first byte is its first token; a whole JSON answer arrives at once.
    if (!request.stream || first === undefined || sent === undefined || event.outcome !== 'completed') return;
    stats.ttftMs.push(first - request.arrivalMs);
    if (outputTokens !== undefined && outputTokens >= 2) stats.tbtMs.push((sent + event.serviceMs - first) / (outputTokens - 1));
  }

  /** The whole dashboard state, as served at `/dashboard/api/state` (see state.ts for every field). */
  state(): DashboardState {
    const nowMs = this.#s.clock.now();
    const plan = this.#s.plan();
    const fleet = this.#fleet;
    const recent = new Map<string, number>();
    for (const site of this.#recentSites.toArray()) recent.set(site, (recent.get(site) ?? 0) + 1);
    const placed = [...this.#placedBySite.values()].reduce((a, b) => a + b, 0);
    const sites: SiteRow[] = this.#s.sites.map((site) => {
      const backends = this.#s.backends.filter((b) => b.site === site);
      const samples = this.#carbon.get(site.id)!.toArray();
      return {
        id: site.id,
        region: site.region,
        gramsPerKWh: this.#s.carbon.gramsPerKWh(site.id, nowMs),
        carbonHistory: samples.map((s) => ({ ageS: round((nowMs - s.atMs) / 1000, 1), gramsPerKWh: s.gramsPerKWh })),
        placed: this.#placedBySite.get(site.id) ?? 0,
        share: placed > 0 ? (this.#placedBySite.get(site.id) ?? 0) / placed : null,
        recentShare: this.#recentSites.size > 0 ? (recent.get(site.id) ?? 0) / this.#recentSites.size : null,
        instances: backends.length,
        activeInstances: backends.filter((b) => plan?.active.has(b.id) ?? true).length,
        clocks: backends.map((b) => ({ backend: b.id, clockFraction: plan ? (plan.active.has(b.id) ? (plan.clockFraction.get(b.id) ?? 1) : null) : 1 })),
      };
    });
    const backends: BackendRow[] = [...this.#backends.values()].map((stats) => {
      const id = stats.backend.id;
      const load = this.#s.load(id, nowMs);
      const ttft = stats.ttftMs.toArray();
      const tbt = stats.tbtMs.toArray();
      return {
        id,
        site: stats.backend.site.id,
        healthy: this.#s.healthy(id, nowMs),
        planned: plan ? plan.active.has(id) : null,
        clockFraction: plan ? (plan.clockFraction.get(id) ?? null) : null,
        inFlight: load.inFlight,
        queued: load.queued,
        leastLaxityMs: this.#leastLaxity(stats, nowMs),
        ttftMs: ttft.length > 0 ? { p50: quantile(ttft, 0.5)!, p90: quantile(ttft, 0.9)!, samples: ttft.length } : null,
        tbtMs: tbt.length > 0 ? { p50: quantile(tbt, 0.5)!, p90: quantile(tbt, 0.9)!, samples: tbt.length } : null,
        served: stats.served,
        energyJ: stats.energyJ,
        carbonG: stats.carbonG,
        outputTokens: stats.outputTokens,
      };
    });
    const tenants = [...this.#tenants.entries()].map(([tenant, t]) => ({ tenant, ...t }));
    const tokens = tenants.reduce((a, t) => a + t.outputTokens, 0);
    return {
      version: 1,
      refreshMs: this.#o.refreshMs,
      uptimeS: round((nowMs - this.#startedMs) / 1000, 1),
      policy: this.#s.config.policy,
      objective: this.#s.config.objective,
      sites,
      backends,
      fleet: {
        served: fleet.served,
        outputTokens: fleet.outputTokens,
        energyJ: fleet.energyJ,
        carbonG: fleet.carbonG,
        joulesPerOutputToken: fleet.outputTokens > 0 ? fleet.energyJ / fleet.outputTokens : null,
        gramsPerRequest: fleet.served > 0 ? fleet.carbonG / fleet.served : null,
        baseline: {
          policy: BASELINE_POLICY,
          method: BASELINE_METHOD,
          requests: fleet.withBaseline,
          energyJ: fleet.baselineEnergyJ,
          carbonG: fleet.baselineCarbonG,
          savedEnergyJ: fleet.baselineEnergyJ - fleet.energyJ,
          savedCarbonG: fleet.baselineCarbonG - fleet.carbonG,
          savedEnergyFraction: fleet.baselineEnergyJ > 0 ? 1 - fleet.energyJ / fleet.baselineEnergyJ : null,
          savedCarbonFraction: fleet.baselineCarbonG > 0 ? 1 - fleet.carbonG / fleet.baselineCarbonG : null,
        },
      },
      slo: [...this.#slo].map(([name, s]) => ({ class: name, ended: s.ended, attained: s.attained, attainment: s.ended > 0 ? s.attained / s.ended : null })),
      tenants: {
        jainIndex: jain(tenants.map((t) => t.outputTokens)),
        tenants: tenants
          .map((t) => ({ ...t, share: tokens > 0 ? t.outputTokens / tokens : null }))
          .sort((a, b) => b.outputTokens - a.outputTokens || a.tenant.localeCompare(b.tenant)),
      },
      plan: plan
        ? {
            status: plan.status,
            note: plan.note,
            ageS: round((nowMs - plan.createdMs) / 1000, 1),
            active: [...plan.active].sort(),
            parked: this.#s.backends.map((b) => b.id).filter((id) => !plan.active.has(id)),
            clockFraction: Object.fromEntries([...plan.clockFraction].sort(([a], [b]) => a.localeCompare(b))),
            forecastRps: { ...plan.forecastRps },
            solveMs: plan.solveMs,
          }
        : null,
      decisions: this.#decisions
        .toArray()
        .reverse()
        .map(({ atMs, ...row }) => ({ ...row, ageS: round((nowMs - atMs) / 1000, 1) })),
    };
  }

  /** The most urgent request waiting for this backend: its latest start minus now (ms; negative when already late). */
  #leastLaxity(stats: BackendStats, nowMs: number): number | null {
    let least = Number.POSITIVE_INFINITY;
    const staleMs = this.#s.config.limits.maxQueueMs + STALE_MARGIN_MS;
    for (const [request, w] of stats.waiting) {
      if (nowMs - w.placedMs > staleMs) stats.waiting.delete(request);
      else least = Math.min(least, w.latestStartMs - nowMs);
    }
    return Number.isFinite(least) ? least : null;
  }

  /** A decision: its trace, and the baseline policy's pick over the same costed candidates. */
  #decision(message: DecisionMessage): void {
    const ctx = message.context;
    const first = ctx?.candidates[0];
    if (!ctx || !first || !this.#backends.has(first.backend)) return; // another router's decision
    const picked = decide(this.#baselinePolicy, ctx.candidates, { ...ctx, rng: this.#rng }).picked?.candidate;
    this.#decided.set(message.request, {
      trace: message.trace,
      baseline: picked ? { backend: picked.backend.id, energyJ: picked.cost.energyJ, carbonG: picked.cost.carbonG } : undefined,
    });
  }

  /** A request's end (any outcome once placed): SLO attainment, tenant service, the inspector's outcome. */
  #end(end: EndMessage): void {
    const placement = end.placement;
    if (!placement) return;
    const stats = this.#backends.get(placement.backend);
    if (!stats) return; // another router's request
    const { request } = end;
    stats.waiting.delete(request);
    const row = this.#rows.get(request);
    if (row) {
      row.outcome = end.outcome;
      row.outputTokens = end.outputTokens ?? null;
    }
    const completed = end.outcome === 'completed';
    const slo = this.#slo.get(request.sloClass);
    if (slo) {
      slo.ended++;
      if (completed && this.#attained(end)) slo.attained++;
    }
    let tenant = this.#tenants.get(request.tenant);
    if (!tenant) this.#tenants.set(request.tenant, (tenant = { ended: 0, completed: 0, outputTokens: 0 }));
    tenant.ended++;
    if (completed) tenant.completed++;
    tenant.outputTokens += end.outputTokens ?? 0;
  }

  /**
   * A completed request met its class's targets: its first byte within the TTFT target and, for a
   * stream of two tokens or more, a mean TBT within the TBT target; an answer that is not streamed
   * must end within the TTFT target plus the TBT target per further token.
   */
  #attained(end: EndMessage): boolean {
    const { request, placement } = end;
    const slo = placement!.slo;
    const ttftTarget = ttftTargetMs(slo, request.promptTokens);
    const tokens = end.outputTokens ?? 1;
    if (!request.stream) return end.durationMs <= ttftTarget + Math.max(0, tokens - 1) * slo.tbtMs;
    const first = this.#firstByteMs.get(request);
    if (first === undefined || first - request.arrivalMs > ttftTarget) return false;
    if (tokens < 2) return true;
    const lastMs = request.arrivalMs + end.durationMs;
    return (lastMs - first) / (tokens - 1) <= slo.tbtMs;
  }

  #sampleCarbon(): void {
    if (this.#closed) return;
    const nowMs = this.#s.clock.now();
    for (const [site, ring] of this.#carbon) ring.push({ atMs: nowMs, gramsPerKWh: this.#s.carbon.gramsPerKWh(site, nowMs) });
    this.#timer = this.#s.clock.setTimer(() => this.#sampleCarbon(), this.#o.carbonSampleMs);
  }

  /** Every number the dashboard shows that `/metrics` did not have yet, read at scrape time. */
  #registerMetrics(registry: Registry): void {
    let scrape: DashboardState | undefined;
    // One state per scrape: a registry calls every collect() in the same tick, so the first computes
    // it and the rest reuse it until the tick ends.
    const current = (): DashboardState => {
      if (!scrape) {
        scrape = this.state();
        queueMicrotask(() => (scrape = undefined));
      }
      return scrape;
    };
    const gauge = (name: string, help: string, labelNames: readonly string[], fill: (g: Gauge<string>, s: DashboardState) => void) =>
      new Gauge({
        name,
        help,
        labelNames,
        registers: [registry],
        collect() {
          this.reset();
          fill(this, current());
        },
      });
    gauge(
      'freesh_site_carbon_intensity_grams_per_kwh',
      'Grid carbon intensity at each site now, as the router prices it (gCO2e/kWh)',
      ['site'],
      (g, s) => {
        for (const site of s.sites) g.set({ site: site.id }, site.gramsPerKWh);
      },
    );
    gauge('freesh_site_traffic_share', 'Share of routed requests placed at each site, over the last dashboard.shareWindow placements', ['site'], (g, s) => {
      for (const site of s.sites) if (site.recentShare !== null) g.set({ site: site.id }, site.recentShare);
    });
    gauge('freesh_site_active_instances', 'Instances the pool plan in force runs at each site (all of them without a planner)', ['site'], (g, s) => {
      for (const site of s.sites) g.set({ site: site.id }, site.activeInstances);
    });
    gauge('freesh_cluster_in_flight_requests', 'Requests holding a slot on each backend across every replica sharing the state store', ['backend'], (g, s) => {
      for (const b of s.backends) g.set({ backend: b.id }, b.inFlight);
    });
    gauge('freesh_cluster_queue_length', "Requests waiting for each backend (with a shared store: in its shared queue, as last counted)", ['backend'], (g, s) => {
      for (const b of s.backends) g.set({ backend: b.id }, b.queued);
    });
    // Health is the router's own freesh_backend_healthy (src/metrics/metrics.ts).
    gauge('freesh_queue_least_laxity_seconds', 'Latest start minus now of the most urgent request waiting for each backend (negative: already late)', ['backend'], (g, s) => {
      for (const b of s.backends) if (b.leastLaxityMs !== null) g.set({ backend: b.id }, b.leastLaxityMs / 1000);
    });
    const latency = (name: string, help: string, read: (b: BackendRow) => BackendRow['ttftMs']) =>
      gauge(name, help, ['backend', 'quantile'], (g, s) => {
        for (const b of s.backends) {
          const q = read(b);
          if (!q) continue;
          g.set({ backend: b.id, quantile: '0.5' }, q.p50 / 1000);
          g.set({ backend: b.id, quantile: '0.9' }, q.p90 / 1000);
        }
      });
    latency('freesh_ttft_seconds', 'Time to the first byte of recent streamed completions, by backend (over the last dashboard.latencyWindow)', (b) => b.ttftMs);
    latency('freesh_tbt_seconds', 'Mean time between tokens of recent streamed completions, by backend (over the last dashboard.latencyWindow)', (b) => b.tbtMs);
    gauge('freesh_fleet_joules_per_output_token', 'Estimated energy per output token of served requests, fleet-wide (J)', [], (g, s) => {
      if (s.fleet.joulesPerOutputToken !== null) g.set(s.fleet.joulesPerOutputToken);
    });
    gauge('freesh_fleet_grams_per_request', 'Estimated carbon per served request, fleet-wide (gCO2e)', [], (g, s) => {
      if (s.fleet.gramsPerRequest !== null) g.set(s.fleet.gramsPerRequest);
    });
    const baseline = (name: string, help: string, read: (s: DashboardState) => number) =>
      new Counter({
        name,
        help,
        registers: [registry],
        collect() {
          this.reset();
          this.inc(read(current()));
        },
      });
    baseline('freesh_baseline_estimated_energy_joules_total', `Energy the ${BASELINE_POLICY} policy's picks would have cost for the served requests (same cost model, same instants)`, (s) => s.fleet.baseline.energyJ);
    baseline('freesh_baseline_estimated_carbon_grams_total', `Carbon the ${BASELINE_POLICY} policy's picks would have cost for the served requests, gCO2e`, (s) => s.fleet.baseline.carbonG);
    const slo = this.#slo;
    new Counter({
      name: 'freesh_slo_requests_total',
      help: 'Requests that ended after placement, by SLO class and whether they attained its targets',
      labelNames: ['class', 'attained'] as const,
      registers: [registry],
      collect() {
        this.reset();
        for (const [name, s] of slo) {
          this.inc({ class: name, attained: 'true' }, s.attained);
          this.inc({ class: name, attained: 'false' }, s.ended - s.attained);
        }
      },
    });
    gauge('freesh_tenant_output_tokens', 'Output tokens served per tenant (the dashboard.maxTenants most recently seen)', ['tenant'], (g, s) => {
      for (const t of s.tenants.tenants) g.set({ tenant: t.tenant }, t.outputTokens);
    });
    gauge("freesh_tenant_fairness_index", "Jain's index of output tokens served per tenant (1: equal service)", [], (g, s) => {
      if (s.tenants.jainIndex !== null) g.set(s.tenants.jainIndex);
    });
    gauge('freesh_plan_age_seconds', 'Time since the pool plan in force was made', [], (g, s) => {
      if (s.plan) g.set(s.plan.ageS);
    });
  }
}

/** Jain's fairness index, (Σx)² / (n·Σx²): 1 when all are equal, 1/n when one has everything; null for none. */
export function jain(values: readonly number[]): number | null {
  if (values.length === 0) return null;
  let sum = 0;
  let squares = 0;
  for (const v of values) {
    sum += v;
    squares += v * v;
  }
  return squares > 0 ? (sum * sum) / (values.length * squares) : 1;
}

function round(value: number, digits: number): number {
  const f = 10 ** digits;
  return Math.round(value * f) / f;
}
