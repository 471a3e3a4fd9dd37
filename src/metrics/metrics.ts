import { Counter, Gauge, Histogram, Registry } from 'prom-client';
import type { FreeshError } from '../errors.js';

/** How a request ended: a closed set, used as a metrics label. Details live in the error. */
export const OUTCOMES = [
  'completed',
  'upstream-status',
  'upstream-unreachable',
  'upstream-dropped',
  'client-abort',
  'rejected-invalid',
  'rejected-auth',
  'rejected-rate-limit',
  'rejected-no-backend',
  'rejected-queue-full',
  'rejected-shed',
  'rejected-draining',
  'evicted-queue-timeout',
  'internal-error',
] as const;
export type Outcome = (typeof OUTCOMES)[number];

/**
 * One backend's tallies. The hot path adds to plain numbers; the Prometheus counters copy them when
 * scraped (prom-client hashes labels on every update, measured at a few µs per request).
 */
export class BackendTally {
  readonly outcomes = new Map<Outcome, number>();
  outputTokens = 0;
  energyJ = 0;
  carbonG = 0;
  readonly upstreamSeconds = new PendingObservations();
}

/**
 * Histogram observations held as plain numbers until a scrape (or until many are waiting):
 * prom-client's observe() costs about 0.7 µs, twice per request, on the hot path otherwise.
 */
export class PendingObservations {
  #values: number[] = [];
  #sink: ((value: number) => void) | undefined;

  observe(value: number): void {
    this.#values.push(value);
    if (this.#values.length >= 4096) this.flush();
  }

  /** Where observations go; set once the histogram child exists. */
  bind(sink: (value: number) => void): this {
    this.#sink = sink;
    return this;
  }

  flush(): void {
    const values = this.#values;
    this.#values = [];
    if (this.#sink) for (const value of values) this.#sink(value);
  }
}

/** Load of one backend's admission queue, read when metrics are scraped. */
export interface QueueSample {
  readonly active: number;
  readonly waiting: number;
}

/** What the router reports about each backend at scrape time, besides its queue. */
export interface BackendSample {
  /** In the pool plan in force (1) or parked (0); absent without a planner. */
  readonly planned?: boolean | undefined;
  /** The plan's SM clock target (fraction of maximum); absent without a planner. */
  readonly clockFraction?: number | undefined;
  /** Observed ÷ modelled service time (1 until observed). */
  readonly latencyFactor: number;
}

/** What the metrics read from the router when scraped. */
export interface MetricSources {
  readonly queues: () => Iterable<readonly [backendId: string, sample: QueueSample]>;
  readonly backends: () => Iterable<readonly [backendId: string, sample: BackendSample]>;
  /** Status of the plan in force, when a planner runs. */
  readonly planStatus: () => 'optimal' | 'degraded' | 'initial' | undefined;
  /** Whether a shared state store serves from local state (Redis unreachable), when the store is a shared one. */
  readonly storeDegraded: () => boolean;
  /** Each backend's health as placement sees it, and its circuit's state. */
  readonly health: () => Iterable<readonly [backendId: string, sample: HealthSample]>;
}

/** A backend's health at scrape time. */
export interface HealthSample {
  /** In rotation (the cluster view says healthy). */
  readonly healthy: boolean;
  readonly circuit: 'closed' | 'open' | 'half-open';
}

const CIRCUIT_STATES = ['closed', 'open', 'half-open'] as const;

/** The router's Prometheus metrics, in a registry of its own (no global state). */
export class RouterMetrics {
  readonly #tallies = new Map<string, BackendTally>();
  readonly registry = new Registry();

  /** `sources` are read at scrape time for the gauges. */
  constructor(sources: Partial<MetricSources> = {}) {
    const queues = sources.queues ?? (() => []);
    const backends = sources.backends ?? (() => []);
    const tallies = this.#tallies;
    const decisions = this.#decisions;
    new Counter({
      name: 'freesh_requests_total',
      help: 'Requests by how they ended and the backend that served them ("none" if never placed)',
      labelNames: ['outcome', 'backend'] as const,
      registers: [this.registry],
      collect() {
        this.reset();
        for (const [backend, tally] of tallies) for (const [outcome, n] of tally.outcomes) this.inc({ outcome, backend }, n);
      },
    });
    const perBackend = (name: string, help: string, read: (t: BackendTally) => number) =>
      new Counter({
        name,
        help,
        labelNames: ['backend'] as const,
        registers: [this.registry],
        collect() {
          this.reset();
          for (const [backend, tally] of tallies) if (tally.outcomes.size > 0) this.inc({ backend }, read(tally));
        },
      });
    perBackend('freesh_output_tokens_total', 'Output tokens reported or counted in backend responses, by backend', (t) => t.outputTokens);
    perBackend('freesh_estimated_energy_joules_total', 'Energy estimated at dispatch for the requests sent to each backend', (t) => t.energyJ);
    perBackend('freesh_estimated_carbon_grams_total', 'Carbon estimated at dispatch for the requests sent to each backend, gCO2e', (t) => t.carbonG);
    const decisionHistogram = new Histogram({
      name: 'freesh_decision_duration_seconds',
      help: 'Time to place a request: prediction, snapshot, costing and policy',
      buckets: [0.00001, 0.000025, 0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.01, 0.05],
      registers: [this.registry],
      collect: () => decisions.flush(),
    });
    this.decisionSeconds = decisions.bind((v) => decisionHistogram.observe(v));
    // Per-backend gauges, read at scrape time; a backend whose value is undefined gets no sample.
    const perBackendGauge = <S>(name: string, help: string, rows: () => Iterable<readonly [string, S]>, read: (sample: S) => number | undefined) =>
      new Gauge({
        name,
        help,
        labelNames: ['backend'] as const,
        registers: [this.registry],
        collect() {
          for (const [backend, sample] of rows()) {
            const value = read(sample);
            if (value !== undefined) this.set({ backend }, value);
          }
        },
      });
    perBackendGauge('freesh_in_flight_requests', 'Requests admitted to a backend and not yet finished, by backend', queues, (q) => q.active);
    perBackendGauge('freesh_queue_length', 'Requests waiting in the admission queue, by backend', queues, (q) => q.waiting);
    perBackendGauge(
      'freesh_latency_factor',
      'Observed over modelled service time of recent completions, by backend (the cost model scales its latencies by it)',
      backends,
      (b) => b.latencyFactor,
    );
    const health = sources.health;
    if (health) {
      perBackendGauge('freesh_backend_healthy', '1 while a backend is in rotation, 0 while it is ejected or failed its probes', health, (h) => Number(h.healthy));
      new Gauge({
        name: 'freesh_backend_circuit_state',
        help: "1 for the state each backend's circuit is in (closed, open: ejected, half-open: one trial request allowed), 0 for the others",
        labelNames: ['backend', 'state'] as const,
        registers: [this.registry],
        collect() {
          for (const [backend, sample] of health()) for (const state of CIRCUIT_STATES) this.set({ backend, state }, sample.circuit === state ? 1 : 0);
        },
      });
    }
    const storeDegraded = sources.storeDegraded;
    if (storeDegraded) {
      new Gauge({
        name: 'freesh_state_store_degraded',
        help: '1 while the shared state store (Redis) does not answer and this replica serves on local state, else 0',
        registers: [this.registry],
        collect() {
          this.set(storeDegraded() ? 1 : 0);
        },
      });
    }
    if (!sources.planStatus) return;
    const planStatus = sources.planStatus;
    new Gauge({
      name: 'freesh_plan_degraded',
      help: '1 when the pool plan in force could not serve the forecast demand within the SLOs (best effort), else 0',
      registers: [this.registry],
      collect() {
        this.set(planStatus() === 'degraded' ? 1 : 0);
      },
    });
    perBackendGauge('freesh_plan_active', '1 for backends the pool plan runs, 0 for those it parks', backends, (b) => (b.planned === undefined ? undefined : Number(b.planned)));
    perBackendGauge('freesh_plan_clock_fraction', "The pool plan's SM clock target by backend, as a fraction of the maximum", backends, (b) => b.clockFraction);
  }

  /** The tallies of a backend (`none` for requests never placed). */
  backend(id: string): BackendTally {
    let tally = this.#tallies.get(id);
    if (!tally) {
      tally = new BackendTally();
      const child = this.#upstreamSeconds.labels(id);
      tally.upstreamSeconds.bind((v) => child.observe(v));
      this.#tallies.set(id, tally);
    }
    return tally;
  }

  /** Time taken to place a request (s). */
  readonly decisionSeconds: PendingObservations;
  readonly #decisions = new PendingObservations();

  count(outcome: Outcome, backendId = 'none'): void {
    const outcomes = this.backend(backendId).outcomes;
    outcomes.set(outcome, (outcomes.get(outcome) ?? 0) + 1);
  }

  readonly #upstreamSeconds = new Histogram({
    name: 'freesh_upstream_duration_seconds',
    help: 'Time from sending to a backend until its response ended, by backend',
    labelNames: ['backend'] as const,
    buckets: [0.005, 0.025, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 180],
    registers: [this.registry],
    collect: () => {
      for (const tally of this.#tallies.values()) tally.upstreamSeconds.flush();
    },
  });
  readonly retries = new Counter({
    name: 'freesh_retries_total',
    help: 'Requests sent to another backend after this one did not take them (refused, circuit open, 503), before any byte reached the client',
    labelNames: ['backend'] as const,
    registers: [this.registry],
  });
  readonly retryBudgetExhausted = new Counter({
    name: 'freesh_retry_budget_exhausted_total',
    help: 'Retries not made because the retry budget was spent (the client got the failure), by the backend that failed',
    labelNames: ['backend'] as const,
    registers: [this.registry],
  });
  readonly ejections = new Counter({
    name: 'freesh_backend_ejections_total',
    help: 'Backends taken out of rotation, by reason: outlier (consecutive failed requests, or a failed trial), probe (failed health probes) or unreachable (a refused connection)',
    labelNames: ['backend', 'reason'] as const,
    registers: [this.registry],
  });
  readonly pluginErrors = new Counter({
    name: 'freesh_plugin_errors_total',
    help: 'Plugins that threw (policy: a safe verdict was used; lifecycle: the hook was skipped), state store failures and lost leases, by source',
    labelNames: ['plugin'] as const,
    registers: [this.registry],
  });
}

/** The outcome a refusal or failure is counted under. */
export function outcomeOf(error: FreeshError): Outcome {
  switch (error.code) {
    case 'queue_full':
      return 'rejected-queue-full';
    case 'class_shed':
      return 'rejected-shed';
    case 'draining':
      return 'rejected-draining';
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
