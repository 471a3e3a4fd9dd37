import { Counter, Gauge, Histogram, Registry } from 'prom-client';

/** How a request ended: a closed set, used as a metrics label. Details live in the error. */
export const OUTCOMES = [
  'completed',
  'upstream-status',
  'upstream-unreachable',
  'upstream-dropped',
  'client-abort',
  'rejected-invalid',
  'rejected-no-backend',
  'rejected-queue-full',
  'evicted-queue-timeout',
  'internal-error',
] as const;
export type Outcome = (typeof OUTCOMES)[number];

type CounterChild = ReturnType<Counter['labels']>;
type GaugeChild = ReturnType<Gauge['labels']>;
type HistogramChild = ReturnType<Histogram['labels']>;

/** One backend's labelled series, resolved once: prom-client hashes labels on every `labels()` call. */
export interface BackendMetrics {
  readonly inFlight: GaugeChild;
  readonly queued: GaugeChild;
  readonly upstreamSeconds: HistogramChild;
  readonly outputTokens: CounterChild;
  readonly energyJ: CounterChild;
  readonly carbonG: CounterChild;
}

/** The router's Prometheus metrics, in a registry of its own (no global state). */
export class RouterMetrics {
  readonly #backends = new Map<string, BackendMetrics>();
  readonly #requests = new Map<string, CounterChild>();

  backend(id: string): BackendMetrics {
    let m = this.#backends.get(id);
    if (!m) {
      m = {
        inFlight: this.inFlight.labels(id),
        queued: this.queued.labels(id),
        upstreamSeconds: this.upstreamSeconds.labels(id),
        outputTokens: this.outputTokens.labels(id),
        energyJ: this.estimatedEnergyJ.labels(id),
        carbonG: this.estimatedCarbonG.labels(id),
      };
      this.#backends.set(id, m);
    }
    return m;
  }

  /** The request counter for an outcome at a backend (`none` when the request was never placed). */
  request(outcome: Outcome, backendId = 'none'): CounterChild {
    const key = `${outcome}\u0000${backendId}`;
    let child = this.#requests.get(key);
    if (!child) this.#requests.set(key, (child = this.requests.labels(outcome, backendId)));
    return child;
  }

  readonly registry = new Registry();
  readonly requests = new Counter({
    name: 'freesh_requests_total',
    help: 'Requests by how they ended and the backend that served them ("none" if never placed)',
    labelNames: ['outcome', 'backend'] as const,
    registers: [this.registry],
  });
  readonly inFlight = new Gauge({
    name: 'freesh_in_flight_requests',
    help: 'Requests admitted to a backend and not yet finished, by backend',
    labelNames: ['backend'] as const,
    registers: [this.registry],
  });
  readonly queued = new Gauge({
    name: 'freesh_queue_length',
    help: 'Requests waiting in the admission queue, by backend',
    labelNames: ['backend'] as const,
    registers: [this.registry],
  });
  readonly decisionSeconds = new Histogram({
    name: 'freesh_decision_duration_seconds',
    help: 'Time to place a request: prediction, snapshot, costing and policy',
    buckets: [0.00001, 0.000025, 0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.01, 0.05],
    registers: [this.registry],
  });
  readonly upstreamSeconds = new Histogram({
    name: 'freesh_upstream_duration_seconds',
    help: 'Time from sending to a backend until its response ended, by backend',
    labelNames: ['backend'] as const,
    buckets: [0.005, 0.025, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 180],
    registers: [this.registry],
  });
  readonly outputTokens = new Counter({
    name: 'freesh_output_tokens_total',
    help: 'Output tokens reported or counted in backend responses, by backend',
    labelNames: ['backend'] as const,
    registers: [this.registry],
  });
  readonly estimatedEnergyJ = new Counter({
    name: 'freesh_estimated_energy_joules_total',
    help: 'Energy estimated at dispatch for the requests sent to each backend',
    labelNames: ['backend'] as const,
    registers: [this.registry],
  });
  readonly estimatedCarbonG = new Counter({
    name: 'freesh_estimated_carbon_grams_total',
    help: 'Carbon estimated at dispatch for the requests sent to each backend, gCO2e',
    labelNames: ['backend'] as const,
    registers: [this.registry],
  });
  readonly pluginErrors = new Counter({
    name: 'freesh_plugin_errors_total',
    help: 'Policy plugins that threw; the orchestrator substituted a safe verdict',
    labelNames: ['plugin'] as const,
    registers: [this.registry],
  });
}
