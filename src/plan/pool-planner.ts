import { channel } from 'node:diagnostics_channel';
import type { CarbonSignal } from '../carbon/signal.js';
import type { Clock, Timer } from '../clock.js';
import type { FrequencyModel } from '../cost/frequency.js';
import { REQUEST_TYPES, type RequestType } from '../request/request-type.js';
import type { SloClass } from '../request/slo.js';
import { TBT_HEADROOM } from '../schedule/freesh.js';
import type { PlanRecord, PublishedPlan, StateStore } from '../state/store.js';
import type { Backend } from '../types.js';
import { type ExternalForecast, SeasonalForecaster, type StepForecast } from './forecast.js';
import { livePoolInput, type PoolPlanView, type PoolSites } from './live-pools.js';
import { initialPlan, type Plan, type PlanView } from './plan.js';
import { formulate, type PlanInput, readSolution, type TypeDemand } from './planner.js';
import { planPoolWindow } from './pools.js';
import type { Solver } from './solver.js';

/** Published on `freesh:plan` (node:diagnostics_channel) for every new plan. */
export const planChannel = channel('freesh:plan');

export interface PoolPlannerOptions {
  readonly backends: readonly Backend[];
  readonly clock: Clock;
  readonly carbon: CarbonSignal;
  readonly store: StateStore;
  readonly objective: 'carbon' | 'energy';
  readonly slo: SloClass;
  readonly frequency: FrequencyModel;
  readonly stepMs: number;
  readonly windowMs: number;
  readonly margin: number;
  /**
   * Plan for this quantile of the per-minute request rate in the window when it is above the
   * margin over the mean (bursty traffic, rising demand); 0 plans for the margin over the mean.
   */
  readonly peakQuantile?: number;
  readonly maxUtilisation: number;
  readonly clockLevels: readonly number[];
  /** Called with every new plan (the simulator applies clocks and parking to its instances here). */
  readonly onPlan?: ((plan: Plan) => void) | undefined;
  /** Where MILPs are solved: a worker thread in production, the calling thread in the simulator. */
  readonly solver: Solver;
  /** This replica's name in the planner's leader lease and in the plans it publishes. */
  readonly replicaId: string;
  /**
   * GPU pools to partition every step for the coming window (sites that declare GPU inventory);
   * the plan then carries them for an operator, agent or scaler to apply. Default: none.
   */
  readonly pools?: PoolSites | undefined;
  /** Demand forecast per step and type from outside; default: the seasonal forecaster over observed arrivals. */
  readonly forecast?: ExternalForecast | undefined;
  /** The seasonal forecaster's season and level span in steps. Defaults 288 (a day of 5-minute steps) and 6. */
  readonly seasonSteps?: number | undefined;
  readonly levelSteps?: number | undefined;
}

/** The leader lease's name in the state store: one replica plans per step. */
const LEADER_ROLE = 'planner';

/** Arrivals of one stretch of time, summed per request type: memory stays bounded at any rate. */
interface Bucket {
  readonly startMs: number;
  readonly count: Record<RequestType, number>;
  readonly promptTokens: Record<RequestType, number>;
  readonly predictedTokens: Record<RequestType, number>;
}

const BUCKET_MS = 10_000;
const zeros = (): Record<RequestType, number> => ({ SS: 0, SL: 0, LS: 0, LL: 0 });

/**
 * Runs the planner every step on the router's clock, over the demand seen in the last window, and
 * publishes each plan (to the state store for other replicas and the GPU agents, and to `onPlan`).
 * Until the first step has passed there is no forecast, so everything runs at full clock.
 *
 * With several replicas sharing a store, one plans per step: the holder of the `planner` lease
 * (held for two steps, renewed each step it plans). The others follow the plans it publishes, as
 * the store's plan watch delivers them; a replica's own demand observations then go unused, which
 * is fine while load balancers spread traffic evenly. If the leader dies, its lease lapses and
 * another replica plans from the next step on.
 */
export class PoolPlanner {
  readonly #options: PoolPlannerOptions;
  #buckets: Bucket[] = [];
  #plan: Plan;
  #assigned = new Map<RequestType, Map<string, number>>();
  #timer: Timer | undefined;
  #stopped = false;
  #unwatch: (() => void) | undefined;
  /** Version of the last plan published or adopted. */
  #version = 0;
  readonly #startedMs: number;
  readonly #forecaster: SeasonalForecaster;

  constructor(options: PoolPlannerOptions) {
    this.#options = options;
    this.#startedMs = options.clock.now();
    this.#forecaster = new SeasonalForecaster({ stepMs: options.stepMs, seasonSteps: options.seasonSteps, levelSteps: options.levelSteps, originMs: this.#startedMs });
    this.#plan = initialPlan(options.backends.map((b) => b.id), this.#startedMs);
  }

  get plan(): Plan {
    return this.#plan;
  }

  view(): PlanView {
    return { plan: this.#plan, assigned: this.#assigned };
  }

  /** Readies the solver and schedules the first re-plan one step from now. */
  async start(): Promise<void> {
    this.#unwatch ??= this.#options.store.watchPlans((plan) => this.#adopt(plan));
    await this.#options.solver.ready();
    if (!this.#stopped && !this.#timer) this.#schedule();
  }

  stop(): Promise<void> {
    this.#stopped = true;
    this.#timer?.cancel();
    this.#unwatch?.();
    const o = this.#options;
    return Promise.all([o.solver.close(), o.store.resign(LEADER_ROLE, o.replicaId).catch(() => undefined)]).then(() => undefined);
  }

  /** Records an arrival for the demand forecast. */
  observe(type: RequestType, promptTokens: number, predictedTokens: number, nowMs: number): void {
    // Extra buckets only take memory: the window sums them alike.
    // Stryker disable next-line UnaryOperator: reading an older bucket than the last only starts new ones sooner
    let bucket = this.#buckets.at(-1);
    // Stryker disable next-line ArithmeticOperator: an earlier threshold only starts a new bucket per arrival
    if (!bucket || nowMs >= bucket.startMs + BUCKET_MS) {
      bucket = { startMs: nowMs - (nowMs % BUCKET_MS), count: zeros(), promptTokens: zeros(), predictedTokens: zeros() };
      this.#buckets.push(bucket);
    }
    bucket.count[type]++;
    this.#forecaster.observe(type, nowMs);
    bucket.promptTokens[type] += promptTokens;
    bucket.predictedTokens[type] += predictedTokens;
  }

  /**
   * What the mean rate is multiplied by so that margin × forecast covers the window's
   * `peakQuantile` per-minute rate: 1 when the margin already covers it (smooth traffic).
   */
  #peakFactor(now: number, spanS: number): number {
    const q = this.#options.peakQuantile ?? 0;
    if (!(q > 0)) return 1;
    const minutes = Math.max(1, Math.floor(spanS / 60));
    const perMinute = new Float64Array(minutes);
    let total = 0;
    for (const b of this.#buckets) {
      // Minutes counted back from now by each bucket's end; one that began a whole window ago still
      // lies in it and counts in the oldest minute.
      const age = Math.min(minutes - 1, Math.max(0, Math.floor((now - b.startMs - BUCKET_MS) / 60_000)));
      let n = 0;
      for (const k of REQUEST_TYPES) n += b.count[k];
      total += n;
      perMinute[age]! += n;
    }
    if (total === 0) return 1;
    perMinute.sort();
    const atQuantile = perMinute[Math.min(minutes - 1, Math.floor(q * minutes))]!;
    return Math.max(1, (atQuantile * minutes) / total / this.#options.margin);
  }

  /** Records where a request of a type was sent, for the plan-share scorer. */
  assign(type: RequestType, backendId: string): void {
    let byBackend = this.#assigned.get(type);
    if (!byBackend) this.#assigned.set(type, (byBackend = new Map()));
    byBackend.set(backendId, (byBackend.get(backendId) ?? 0) + 1);
  }

  /** Makes a plan now from the window's demand. */
  async replan(): Promise<Plan> {
    const o = this.#options;
    const now = o.clock.now();
    const since = now - o.windowMs;
    this.#buckets = this.#buckets.filter((b) => b.startMs + BUCKET_MS > since);
    const spanS = Math.max(1, (now - Math.max(since, this.#startedMs)) / 1000);
    const peak = this.#peakFactor(now, spanS);
    const demand = {} as Record<RequestType, TypeDemand>;
    for (const k of REQUEST_TYPES) {
      let count = 0;
      let prompt = 0;
      let predicted = 0;
      for (const b of this.#buckets) {
        count += b.count[k];
        prompt += b.promptTokens[k];
        predicted += b.predictedTokens[k];
      }
      demand[k] = {
        rps: (peak * count) / spanS,
        meanPromptTokens: count ? prompt / count : 512,
        meanOutputTokens: count ? predicted / count : 128,
      };
    }
    const windowSteps = Math.max(1, Math.round(o.windowMs / o.stepMs));
    const stepForecast = this.#stepForecast(now, windowSteps);
    // The step's forecast raises the trailing estimate once it rests on a season of history (or an
    // external forecast): rising demand then finds instances on before it arrives.
    if (o.forecast || this.#forecaster.seasonal(now)) {
      for (const k of REQUEST_TYPES) demand[k] = { ...demand[k], rps: Math.max(demand[k].rps, stepForecast[0]?.[k] ?? 0) };
    }
    const input: PlanInput = {
      backends: o.backends,
      nowMs: now,
      demand,
      gramsPerKWh: (siteId) => o.carbon.gramsPerKWh(siteId, now),
      objective: o.objective,
      clockLevels: o.clockLevels,
      margin: o.margin,
      maxUtilisation: o.maxUtilisation,
      slo: o.slo,
      frequency: o.frequency,
    };
    const started = performance.now();
    const formulation = formulate(input);
    const solution = await o.solver.solve(formulation.lp);
    if (this.#stopped) return this.#plan;
    const backendPlan = readSolution(input, formulation, solution, performance.now() - started);
    const pools = o.pools ? await this.#planPools(o.pools, demand, stepForecast, now) : undefined;
    if (this.#stopped) return this.#plan;
    const plan: Plan = {
      ...backendPlan,
      stepForecastRps: stepForecast,
      forecastError: this.#forecaster.error(),
      ...(typeof pools === 'string' ? { note: `${backendPlan.note}; pools not planned: ${pools}` } : { pools }),
    };
    this.#follow(plan);
    o.store.publishPlan(planRecord(plan, o.replicaId)).then(
      (version) => (this.#version = Math.max(this.#version, version)),
      () => {
        // Publishing is for other replicas and agents; this router already follows the plan.
      },
    );
    return plan;
  }

  #stepForecast(now: number, steps: number): StepForecast {
    const own = this.#forecaster.forecast(now, steps);
    const external = this.#options.forecast?.(now, steps, this.#options.stepMs);
    if (!external) return own;
    return own.map((fallback, h) => {
      const rates = { ...fallback };
      for (const k of REQUEST_TYPES) {
        const value = external[h]?.[k];
        if (value !== undefined && Number.isFinite(value)) rates[k] = Math.max(0, value);
      }
      return rates;
    });
  }

  /** The pool partition for the coming window, or why there is none (the backend plan stands either way). */
  async #planPools(pools: PoolSites, demand: Readonly<Record<RequestType, TypeDemand>>, forecast: StepForecast, now: number): Promise<PoolPlanView | string> {
    const o = this.#options;
    const shapes = Object.fromEntries(REQUEST_TYPES.map((k) => [k, { promptTokens: demand[k].meanPromptTokens, outputTokens: demand[k].meanOutputTokens }])) as Record<RequestType, { promptTokens: number; outputTokens: number }>;
    const input = livePoolInput({
      pools,
      backends: o.backends,
      shapes,
      slo: o.slo,
      forecast,
      gramsPerKWhAt: (siteId, step) => o.carbon.gramsPerKWh(siteId, now + step * o.stepMs),
      margin: o.margin,
      stepMs: o.stepMs,
    });
    try {
      const { solveMs: _, ...window } = await planPoolWindow(input, (lp) => o.solver.solve(lp));
      return { ...window, windowSteps: forecast.length, stepMs: o.stepMs };
    } catch (err) {
      return String(err);
    }
  }

  /** Plans if this replica leads the step (or the store cannot say), else waits for the leader's plan. */
  async #step(): Promise<void> {
    const o = this.#options;
    const leads = await o.store.tryLead(LEADER_ROLE, o.replicaId, 2 * o.stepMs).catch(() => true);
    if (leads) await this.replan();
  }

  #follow(plan: Plan): void {
    this.#plan = plan;
    this.#assigned = new Map();
    this.#options.onPlan?.(plan);
    if (planChannel.hasSubscribers) planChannel.publish(plan);
  }

  /** A plan published by the store: another replica's is followed; our own is already in force. */
  #adopt(published: PublishedPlan): void {
    if (this.#stopped || published.version <= this.#version) return;
    this.#version = published.version;
    if (published.origin === this.#options.replicaId) return;
    this.#follow(fromRecord(published, this.#options.clock.now()));
  }

  #schedule(): void {
    this.#timer = this.#options.clock.setTimer(() => {
      this.#timer = undefined;
      if (this.#stopped) return;
      this.#step().then(
        () => this.#schedule(),
        (err: unknown) => {
          // Keep the plan in force; try again next step.
          if (planChannel.hasSubscribers) planChannel.publish({ error: String(err) });
          this.#schedule();
        },
      );
    }, this.#options.stepMs);
  }
}

export function planRecord(plan: Plan, origin: string): PlanRecord {
  return {
    origin,
    status: plan.status,
    active: [...plan.active],
    clockFraction: Object.fromEntries(plan.clockFraction),
    shares: Object.fromEntries([...plan.shares].map(([k, m]) => [k, Object.fromEntries(m)])),
    forecastRps: plan.forecastRps,
    objectiveRate: plan.objectiveRate,
    note: plan.note,
    ...(plan.pools ? { pools: plan.pools } : {}),
    ...(plan.stepForecastRps ? { stepForecastRps: plan.stepForecastRps } : {}),
  };
}

/** A published plan as this replica follows it, made now by its clock. */
function fromRecord(record: PlanRecord, nowMs: number): Plan {
  const status = record.status === 'optimal' || record.status === 'degraded' ? record.status : 'initial';
  return {
    createdMs: nowMs,
    active: new Set(record.active),
    clockFraction: new Map(Object.entries(record.clockFraction)),
    shares: new Map(Object.entries(record.shares).map(([type, byBackend]) => [type as RequestType, new Map(Object.entries(byBackend))])),
    status,
    forecastRps: { SS: 0, SL: 0, LS: 0, LL: 0, ...record.forecastRps },
    objectiveRate: record.objectiveRate,
    solveMs: 0,
    note: `${record.note} (planned by ${record.origin})`,
    pools: record.pools,
    stepForecastRps: record.stepForecastRps?.map((rates) => ({ SS: 0, SL: 0, LS: 0, LL: 0, ...rates })),
  };
}

/**
 * The class the planner plans for: the tightest TTFT and TBT targets of any class, with the TBT
 * headroom placements keep, so planned capacity never relies on breaking an SLO.
 */
export function planningClass(classes: Readonly<Record<string, SloClass>>): SloClass {
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
