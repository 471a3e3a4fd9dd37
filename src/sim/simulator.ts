import type { CarbonSeries } from '../carbon/series.js';
import { seriesSignal } from '../carbon/signal.js';
import { seededRng } from '../clock.js';
import { decodeStepMs, type InstanceProfile, prefillMs } from '../cost/profiles.js';
import { FreeshError } from '../errors.js';
import type { ForecastError } from '../plan/forecast.js';
import type { PoolPlanView } from '../plan/live-pools.js';
import type { RoutingRequest } from '../types.js';
import { createRouter, type Router, type RouterOptions } from '../router.js';
import type { Policy } from '../schedule/policy.js';
import { fleetRouterConfig, type FleetSpec } from './fleet.js';
import { fleetHardware, type Hardware } from './hardware.js';
import { hardwareOptions, SimInstance } from './instance.js';
import { simPredictor } from './sim-predictor.js';
import { SimTransport } from './sim-transport.js';
import { VirtualClock } from './virtual-clock.js';
import { GpuAgent, type MiadConstants } from '../agent/agent.js';
import { MemoryStateStore } from '../state/memory-store.js';
import { SimGpuDriver } from './sim-gpu.js';
import type { Workload, WorkloadRequest } from './workload.js';

/** One policy run: a name for the report, and how to build its router. */
export interface RunSpec {
  readonly name: string;
  /** Router policy name or object. */
  readonly policy: string | Policy;
  /** Log-space σ of prediction error, or `oracle` for true lengths. */
  readonly prediction: number | 'oracle';
  /** SM clock fraction every instance runs at. Default 1 (maximum clock). */
  readonly clockFraction?: number;
  /** Anything else for the router (limits, policies...). */
  readonly router?: Partial<RouterOptions>;
  /**
   * Instances power off after this long idle (ms), as an operator's idle shutdown would, whatever
   * the router does; the next request boots them. Default: only a plan parks them.
   */
  readonly idleOffAfterMs?: number;
  /**
   * Run the GPU agent's MIAD clock controller (the agent itself, on the simulated instances) with
   * these constants: the plan's clocks become its floors instead of the clocks run. Default: none,
   * clocks are the plan's (or `clockFraction`).
   */
  readonly miad?: MiadConstants;
}

export interface SimulationOptions {
  readonly fleet: FleetSpec;
  readonly workload: Workload;
  /** Carbon intensity over simulated time, per site id. */
  readonly carbon: ReadonlyMap<string, CarbonSeries>;
  readonly run: RunSpec;
  /**
   * What each backend's instance really is (per backend id). Default: the router's own model
   * (`fleetHardware(fleet, { truth: 'model' })`), with the shared default boot time.
   */
  readonly hardware?: ReadonlyMap<string, Hardware>;
  readonly seed?: number;
  /** Sampling period for energy, carbon and fairness (ms of simulated time). Default 60,000. */
  readonly sampleEveryMs?: number;
  /** Called now and then with requests settled so far. */
  readonly onProgress?: (settled: number, total: number) => void;
}

export interface RequestRecord {
  readonly request: WorkloadRequest;
  backend: string | undefined;
  /** Set when the request was refused or failed: the error code. */
  rejected: string | undefined;
  firstTokenMs: number | undefined;
  doneMs: number | undefined;
  /** The router's e2e estimate at dispatch, queueing excluded (FREESH's "predicted latency"). */
  predictedLatencyMs: number | undefined;
  /** Latency alone on the chosen backend: prefill plus true tokens at batch-1 step time. */
  idealLatencyMs: number | undefined;
}

export interface Sample {
  readonly timeMs: number;
  /** Cumulative facility energy (J) and carbon (g) up to timeMs. */
  readonly energyJ: number;
  readonly carbonG: number;
  readonly sites: readonly { readonly id: string; readonly powerW: number; readonly gramsPerKWh: number; readonly inFlight: number }[];
  /** Service (input + 2 × output tokens) each tenant received in this sampling period. */
  readonly tenantService: Readonly<Record<string, number>>;
  /** Tenants that had requests waiting for their first token throughout the period. */
  readonly backlogged: readonly string[];
}

export interface SimulationResult {
  readonly run: RunSpec;
  readonly records: readonly RequestRecord[];
  readonly samples: readonly Sample[];
  readonly endMs: number;
  readonly energyJ: number;
  readonly carbonG: number;
  readonly gpuHoursActive: number;
  readonly wallMs: number;
  /** The planner's per-step demand forecast error at the end of the run (runs with a planner). */
  readonly forecastError?: ForecastError | undefined;
  /** Every GPU pool partition the planner published (fleets whose sites declare `gpus`). */
  readonly poolPlans?: readonly PoolPlanView[] | undefined;
}

const MODEL_BASE = 'http://sim.invalid';

/**
 * Replays a workload through the real router on a virtual clock: arrivals and instance steps are
 * timers on that clock, and between events every promise the router started is allowed to settle
 * (one macrotask turn) before time moves on. Nothing here makes a routing decision.
 */
export async function simulate(options: SimulationOptions): Promise<SimulationResult> {
  const started = performance.now();
  const { fleet, workload, run, carbon } = options;
  const clock = new VirtualClock();
  const sites = new Map(fleet.sites.map((s) => [s.id, s]));
  const instances = new Map<string, SimInstance>();
  const parkedPower = run.router?.plan?.parkedPower ?? 'idle';
  const hardware = options.hardware ?? fleetHardware(fleet, { truth: 'model' });
  for (const b of fleet.backends) {
    const truth = hardware.get(b.id);
    if (!truth) throw new RangeError(`no hardware given for backend \`${b.id}\``);
    const instance = new SimInstance({ ...hardwareOptions(truth), clock, parkedPower, idleOffAfterMs: run.idleOffAfterMs });
    instance.clockFraction = run.clockFraction ?? 1;
    instances.set(b.id, instance);
  }
  const byId = new Map(workload.requests.map((r) => [r.id, r]));
  const records = new Map<string, RequestRecord>();
  const tenants = [...new Set(workload.requests.map((r) => r.tenant))].sort();
  const service = new Map(tenants.map((t) => [t, 0]));
  const waiting = new Map(tenants.map((t) => [t, 0]));
  let backloggedAll = new Set(tenants);
  let settled = 0;

  const markStarted = (record: RequestRecord) => {
    const tenant = record.request.tenant;
    waiting.set(tenant, waiting.get(tenant)! - 1);
    if (waiting.get(tenant) === 0) backloggedAll.delete(tenant);
  };

  const transport = new SimTransport(instances, {
    job: (id) => byId.get(id)!,
    onFirstToken(id) {
      const record = records.get(id)!;
      record.firstTokenMs = clock.now();
      service.set(record.request.tenant, service.get(record.request.tenant)! + record.request.promptTokens);
      markStarted(record);
    },
    onDone(id) {
      const record = records.get(id)!;
      record.doneMs = clock.now();
      service.set(record.request.tenant, service.get(record.request.tenant)! + 2 * record.request.outputTokens);
    },
  });

  // With the agent, router and agent share one store: the SLO signal, plans and power pass through it.
  const store = run.miad ? new MemoryStateStore({ clock }) : undefined;
  let forecastError: ForecastError | undefined;
  const poolPlans: PoolPlanView[] = [];
  const router: Router = createRouter({
    ...fleetRouterConfig(fleet, (id) => `${MODEL_BASE}/${id}/v1`),
    ...run.router,
    // The SLO signal is published only for an agent to read (it costs a timer per simulated second).
    agent: { ...run.router?.agent, sloSignalMs: run.miad ? (run.router?.agent?.sloSignalMs ?? 1_000) : 0 },
    ...(store ? { store } : {}),
    // Solving in line keeps plans at exact virtual times: a worker would answer in real time.
    plan: { ...run.router?.plan, solveInWorker: false },
    policy: run.policy,
    clock,
    rng: seededRng(options.seed ?? 1),
    transport,
    predictor: simPredictor((id) => byId.get(id), run.prediction),
    carbon: seriesSignal(carbon, (siteId) => sites.get(siteId)?.gramsPerKWh ?? 400),
    // The plan's clocks and parking take effect on the simulated instances at once.
    onPlan(plan) {
      if (plan.forecastError) forecastError = plan.forecastError;
      if (plan.pools) poolPlans.push(plan.pools);
      for (const [id, instance] of instances) {
        instance.parked = !plan.active.has(id);
        if (!run.miad) instance.clockFraction = plan.clockFraction.get(id) ?? run.clockFraction ?? 1;
      }
    },
  });
  await router.ready();
  const agent = store
    ? new GpuAgent({
        driver: new SimGpuDriver(fleet.backends.map((b) => instances.get(b.id)!)),
        store,
        clock,
        nodeId: 'sim',
        backends: new Map(fleet.backends.map((b, i) => [i, b.id])),
        miad: run.miad,
        log: () => undefined,
      })
    : undefined;
  await agent?.start();

  // Energy and carbon are integrated per sampling period at the intensity in force at its start.
  const sampleEveryMs = options.sampleEveryMs ?? 60_000;
  const samples: Sample[] = [];
  const lastEnergy = new Map([...instances].map(([id, inst]) => [id, inst.energyJ]));
  let energyJ = 0;
  let carbonG = 0;
  let lastSampleMs = 0;
  let lastService = new Map(service);
  const sample = () => {
    const now = clock.now();
    const periodS = Math.max(1e-9, (now - lastSampleMs) / 1000);
    const perSite = new Map<string, { energy: number; inFlight: number }>();
    for (const b of fleet.backends) {
      const inst = instances.get(b.id)!;
      const e = inst.energyJ;
      const site = perSite.get(b.site) ?? { energy: 0, inFlight: 0 };
      site.energy += e - lastEnergy.get(b.id)!;
      site.inFlight += inst.batch + inst.waiting;
      perSite.set(b.site, site);
      lastEnergy.set(b.id, e);
    }
    const siteRows = [...perSite].map(([id, s]) => {
      const pue = sites.get(id)?.pue ?? 1.2;
      const intensity = carbon.get(id)?.at(lastSampleMs) ?? sites.get(id)!.gramsPerKWh;
      energyJ += s.energy * pue;
      carbonG += ((s.energy * pue) / 3.6e6) * intensity;
      return { id, powerW: (s.energy * pue) / periodS, gramsPerKWh: intensity, inFlight: s.inFlight };
    });
    const tenantService: Record<string, number> = {};
    for (const t of tenants) tenantService[t] = service.get(t)! - lastService.get(t)!;
    samples.push({ timeMs: now, energyJ, carbonG, sites: siteRows, tenantService, backlogged: [...backloggedAll] });
    lastService = new Map(service);
    backloggedAll = new Set(tenants.filter((t) => waiting.get(t)! > 0));
    lastSampleMs = now;
  };

  const total = workload.requests.length;
  const progressEvery = Math.max(1, Math.floor(total / 200));
  const settle = () => {
    settled++;
    if (options.onProgress && settled % progressEvery === 0) options.onProgress(settled, total);
  };

  // The router is handed each request parsed, with the trace's prompt length: no body is made up
  // for it to count tokens in. The body forwarded to the simulated instances is never read.
  const rawBody = Buffer.from(JSON.stringify({ model: fleet.model, messages: [{ role: 'user', content: '' }] }));
  const parsedBody = Object.freeze({ model: fleet.model });
  const routingRequest = (request: WorkloadRequest): RoutingRequest => ({
    id: request.id,
    endpoint: 'chat.completions',
    model: fleet.model,
    promptText: '',
    promptTokens: request.promptTokens,
    messageCount: 1,
    maxTokens: undefined,
    stream: false,
    tenant: request.tenant,
    sloClass: request.sloClass,
    arrivalMs: clock.now(),
    body: parsedBody,
    rawBody,
  });

  const issue = (request: WorkloadRequest) => {
    const record: RequestRecord = {
      request,
      backend: undefined,
      rejected: undefined,
      firstTokenMs: undefined,
      doneMs: undefined,
      predictedLatencyMs: undefined,
      idealLatencyMs: undefined,
    };
    records.set(request.id, record);
    waiting.set(request.tenant, waiting.get(request.tenant)! + 1);
    router.serve(routingRequest(request)).then(
      (routed) => {
        const { backend, cost } = routed.placement;
        record.backend = backend.id;
        record.predictedLatencyMs = cost.e2eMs - cost.waitMs;
        record.idealLatencyMs = idealLatency(instances.get(backend.id)!.profile, request);
        routed.body.once('end', settle);
        routed.body.once('error', () => {
          record.rejected ??= 'upstream_dropped';
          settle();
        });
        routed.body.resume();
      },
      (err: unknown) => {
        record.rejected = err instanceof FreeshError ? err.code : 'internal_error';
        if (record.firstTokenMs === undefined) markStarted(record);
        settle();
      },
    );
  };

  const turn = () => new Promise<void>((resolve) => setImmediate(resolve));
  const arrivals = workload.requests;
  let next = 0;
  let nextSampleMs = sampleEveryMs;
  while (next < arrivals.length || settled < total) {
    const timerAt = clock.nextAtMs() ?? Number.POSITIVE_INFINITY;
    const arrivalAt = next < arrivals.length ? arrivals[next]!.arrivalMs : Number.POSITIVE_INFINITY;
    const at = Math.min(timerAt, arrivalAt, nextSampleMs);
    if (at === Number.POSITIVE_INFINITY) {
      await turn();
      if (clock.nextAtMs() === undefined && settled < total) throw new Error(`simulation stalled with ${total - settled} requests unsettled`);
      continue;
    }
    if (at === nextSampleMs && at < timerAt && at < arrivalAt) {
      clock.advanceTo(at);
      sample();
      nextSampleMs += sampleEveryMs;
      continue;
    }
    if (arrivalAt <= timerAt) {
      clock.advanceTo(arrivalAt);
      while (next < arrivals.length && arrivals[next]!.arrivalMs === arrivalAt) issue(arrivals[next++]!);
    } else {
      clock.runNext();
    }
    await turn();
  }
  sample();
  await agent?.stop();
  await router.close();

  let busyGpuMs = 0;
  for (const b of fleet.backends) busyGpuMs += instances.get(b.id)!.busyMs * instances.get(b.id)!.profile.gpus;
  return {
    run,
    records: [...records.values()],
    samples,
    endMs: clock.now(),
    energyJ,
    carbonG,
    gpuHoursActive: busyGpuMs / 3.6e6,
    wallMs: performance.now() - started,
    forecastError,
    poolPlans,
  };
}

function idealLatency(profile: InstanceProfile, request: WorkloadRequest): number {
  const step = decodeStepMs(profile, 1);
  return prefillMs(profile, request.promptTokens) + request.outputTokens * step;
}
