import { z } from 'zod';
import { BUILTIN_PROFILES } from '../cost/profiles.js';
import { DEFAULT_BOOT_MS } from '../plan/plan.js';
import { DEFAULT_SLO_CLASSES } from '../request/slo.js';


/**
 * The configuration schema: the single source of both the config file's types and its validation.
 * Every field's default is stated here.
 */
const label = z.string().regex(/^[A-Za-z0-9._:-]{1,64}$/, 'must be 1-64 characters of [A-Za-z0-9._:-]');

const apiCarbon = {
  /** Re-fetch after this (ms). Default 5 minutes. */
  ttlMs: z.int().positive().default(300_000),
  /** Give up on a fetch after this (ms). Default 5,000. */
  timeoutMs: z.int().positive().default(5_000),
  /** Used until the first successful fetch (gCO2e/kWh). Default 400. */
  gramsPerKWh: z.number().nonnegative().default(400),
  /** Override the API's address (a proxy, a test server). */
  baseURL: z.url({ protocol: /^https?$/ }).optional(),
};

/**
 * A site's carbon signal: a constant; the Electricity Maps or WattTime API (secrets may be written
 * `env:NAME` to read them from the environment); or a CSV series replayed by wall-clock time
 * (Electricity Maps hourly exports by hour of the year, the FREESH 5-minute series by time of day).
 */
export const carbonSchema = z.union([
  z.strictObject({ gramsPerKWh: z.number().nonnegative() }),
  z.strictObject({ provider: z.literal('electricitymaps'), zone: z.string().min(1), apiKey: z.string().min(1), ...apiCarbon }),
  z.strictObject({ provider: z.literal('watttime'), region: z.string().min(1), username: z.string().min(1), password: z.string().min(1), ...apiCarbon }),
  z.strictObject({
    provider: z.literal('csv'),
    path: z.string().min(1),
    format: z.enum(['electricitymaps', 'freesh']),
    /** Column of a FREESH series (0-based). Default 0. */
    column: z.int().min(0).default(0),
    /** Used for a site whose series cannot be read (gCO2e/kWh). Default 400. */
    gramsPerKWh: z.number().nonnegative().default(400),
  }),
]);

export const siteSchema = z.strictObject({
  id: label,
  /** Grid region, free text (e.g. `DE`, `US-CAL-CISO`). Default ''. */
  region: z.string().default(''),
  /** Carbon signal. Default a constant 400 gCO2e/kWh (roughly a world-average grid). */
  carbon: carbonSchema.default({ gramsPerKWh: 400 }),
  /** Power usage effectiveness of the facility. Default 1.2. */
  pue: z.number().min(1).max(3).default(1.2),
  /**
   * GPU inventory, count per GPU type (`A100-80GB`, `H100-80GB`: the built-in profiles' `gpu`). Optional; when
   * any site declares it, the planner also partitions each such site's GPUs into parallelism modes
   * per request type every step and publishes the partition with the plan. Default: none.
   */
  gpus: z.record(label, z.int().nonnegative().max(1_000_000)).optional(),
});

export const backendSchema = z.strictObject({
  id: label,
  /** Id of the site this backend runs in. */
  site: label,
  /** OpenAI-compatible base URL including its path prefix, e.g. `http://10.0.0.5:8000/v1`. */
  baseURL: z.url({ protocol: /^https?$/ }),
  /** Model names this backend serves. */
  models: z.array(z.string().min(1)).min(1),
  /** Requests run at once; more wait in the router's queue. Default 64. */
  maxConcurrency: z.int().positive().max(100_000).default(64),
  /**
   * Prompt tokens the backend prefills per step with chunked prefill (vLLM's `max_num_batched_tokens`).
   * The cost model queues prompts behind each other at this rate. Default 512.
   */
  prefillChunkTokens: z.int().positive().max(1_000_000).default(512),
  /**
   * Send each request's SLO class priority in the upstream body's `priority` field, for backends
   * that schedule by it (vLLM started with `--scheduling-policy priority`; others may reject the
   * field). The cost model then queues a prompt only behind the prompts of its priority or higher.
   * Default false.
   */
  forwardPriority: z.boolean().default(false),
  /** Parallelism mode naming a built-in instance profile (`2xA100`, `4xA100`, `8xA100`, `2xH100`, `4xH100`). Default `2xA100`. */
  mode: z.enum(Object.keys(BUILTIN_PROFILES) as [string, ...string[]]).default('2xA100'),
  /** Bearer token sent to this backend instead of the caller's Authorization header. */
  apiKey: z.string().min(1).optional(),
});

export const limitsSchema = z.strictObject({
  /** Requests waiting per backend before 503 (lower SLO classes are shed with 429 earlier: see `overload`). Default 1,000. */
  maxQueueLength: z.int().nonnegative().default(1_000),
  /** Longest wait in an admission queue before 504 (ms). Default 30,000. */
  maxQueueMs: z.int().positive().default(30_000),
  /** Largest accepted request body (bytes). Default 8 MiB. */
  bodyLimitBytes: z.int().positive().default(8 * 1024 * 1024),
  /** Other backends tried when one refuses the connection, has its circuit open or answers 503, before any byte (within `health`'s retry budget). Default 1. */
  retries: z.int().min(0).max(5).default(1),
  /** How long a backend that refused a connection or failed a probe stays out of rotation, unless a probe passes sooner (ms). Default 10,000. */
  unhealthyMs: z.int().positive().default(10_000),
  /**
   * How long a slot outlives its replica's last renewal (ms): running requests renew theirs every third
   * of it, so a replica that dies frees its slots this long after. Default 30,000.
   */
  leaseTtlMs: z.int().min(1_000).default(30_000),
  /** Time to connect to a backend (ms). Default 5,000. */
  connectTimeoutMs: z.int().positive().default(5_000),
  /** Time to a backend's response headers, i.e. the whole of a non-streamed generation (ms). Default 600,000. */
  headersTimeoutMs: z.int().positive().default(600_000),
  /** Longest silence between streamed chunks (ms). Default 300,000. */
  bodyTimeoutMs: z.int().positive().default(300_000),
  /**
   * Deepest nesting of arrays and objects accepted in a request body; deeper is answered 400
   * `json_too_deep` before the body is parsed (Python backends fail on a few thousand levels). Default 128.
   */
  maxJsonDepth: z.int().min(2).max(10_000).default(128),
  /**
   * Validate the OpenAI request schema at the edge: types and ranges of the common fields
   * (`temperature` 0–2, `top_p` 0–1, `n` ≥ 1, `max_tokens` 1–`maxOutputTokens`, message roles,
   * non-empty `messages`, `stream` boolean…), answered 400 `invalid_type` / `invalid_value` naming the
   * field, as OpenAI, vLLM and LiteLLM do. Fields it does not know still pass through. Default false
   * (only what routing needs is checked; the backend judges the rest); on in `freesh demo`.
   */
  strictRequests: z.boolean().default(false),
  /** With `strictRequests`, the largest `max_tokens` / `max_completion_tokens` accepted. Default 1,048,576. */
  maxOutputTokens: z.int().positive().default(1_048_576),
});

/**
 * Backend faults, after Envoy's health checking, outlier detection and retry budget. Active probes
 * run in the background; passive outlier detection ejects a backend that keeps failing real
 * requests; an ejected backend is a per-backend circuit that is open, lets one trial request through
 * (half-open) once its ejection ends, and closes when that trial or any probe passes.
 */
export const healthSchema = z.strictObject({
  /** Probe every backend in the background (GET `probePath`). The simulator's transport answers probes too. Default true. */
  probes: z.boolean().default(true),
  /** Path probed, below the backend's baseURL (which conventionally ends in `/v1`, so GET /v1/models). Default `/models`. */
  probePath: z.string().regex(/^\/[^\s]*$/, 'must be a path starting with /').default('/models'),
  /** Time between rounds of probes (ms); the first round runs one interval after start. Default 5,000. */
  probeIntervalMs: z.int().min(100).max(3_600_000).default(5_000),
  /** A probe not answered in this time fails (ms). Default 1,000. */
  probeTimeoutMs: z.int().min(10).max(600_000).default(1_000),
  /**
   * Consecutive failed probes (refused, timed out or 5xx) that take a backend out of rotation until a
   * probe passes. One passing probe puts it back. Default 1 (a /healthz check marks at once, too).
   */
  unhealthyThreshold: z.int().min(1).max(100).default(1),
  /** Consecutive failed requests (5xx, refused connection, timeout, broken stream; not 4xx nor a client leaving) that eject a backend. Default 5 (Envoy's consecutive_5xx). */
  consecutiveFailures: z.int().min(1).max(1_000).default(5),
  /** First ejection's length (ms); the n-th consecutive one lasts n times as long. Default 30,000 (Envoy's base_ejection_time). */
  baseEjectionMs: z.int().min(1).max(3_600_000).default(30_000),
  /** Longest ejection (ms). Default 300,000 (Envoy's max_ejection_time). */
  maxEjectionMs: z.int().min(1).max(86_400_000).default(300_000),
  /**
   * Most of the fleet, in percent, that outlier detection ejects at once (rounded down, at least one
   * backend), so a failure shared by every backend does not empty the pool. Default 50.
   */
  maxEjectedPercent: z.int().min(0).max(100).default(50),
  /** Retries in progress allowed, as a percentage of the requests in flight (Envoy's retry budget). Default 20. */
  retryBudgetPercent: z.number().min(0).max(100).default(20),
  /** Retries in progress always allowed, whatever the requests in flight (Envoy's min_retry_concurrency). Default 3. */
  retryBudgetMin: z.int().min(0).max(10_000).default(3),
});

export const sloClassSchema = z.strictObject({
  /** TTFT target for an empty prompt (ms). */
  ttftBaseMs: z.number().positive(),
  /** TTFT allowance per prompt token (ms). Default 0. */
  ttftPerPromptTokenMs: z.number().nonnegative().default(0),
  /** Mean time-between-tokens target (ms). */
  tbtMs: z.number().positive(),
  /** When no backend can meet the deadline: `serve` (default) on the least-late backend, or `reject` with 503. */
  onLate: z.enum(['serve', 'reject']).default('serve'),
  /**
   * Scheduling priority sent to backends with `forwardPriority` (lower is served first). Default 0;
   * the built-in classes use 0 (interactive), 1 (standard) and 2 (batch).
   */
  priority: z.int().min(-1_000_000).max(1_000_000).default(0),
  /**
   * Span over which the router judges the class's TBT (ms): a prompt placed on a backend running a
   * request of this class counts its whole prefill as spent within this span, so a short span keeps
   * long prompts away from short, strict answers. Default 10,000 (the prefill-load window); the
   * built-in interactive class uses 2,500.
   */
  tbtWindowMs: z.int().positive().max(3_600_000).default(10_000),
});

export const planSchema = z.strictObject({
  /** Run the pool planner. Default: on when the policy is `freesh` or `freesh-published`. */
  enabled: z.boolean().optional(),
  /** Re-plan this often (ms). Default 5 minutes (FREESH's step). */
  stepMs: z.int().positive().default(5 * 60_000),
  /** Forecast demand from the arrivals of this window (ms). Default 30 minutes (FREESH's window). */
  windowMs: z.int().positive().default(30 * 60_000),
  /** Planned capacity over forecast demand. Default 1.1 (FREESH's margin). */
  margin: z.number().min(1).max(3).default(1.1),
  /**
   * Plan for this quantile of the window's per-minute request rate when it is above `margin` ×
   * the mean, so bursts and rising demand find instances on; 0 plans for margin × the mean.
   * Default 0.9: on the bursty code trace at 0.3 of SLO capacity it raised attainment by 11 to 14
   * points for +15% energy; on conversation traffic +0.3 to +3 points for +1 to +7% (bench/README).
   */
  peakQuantile: z.number().min(0).max(1).default(0.9),
  /** Highest planned load of an instance, as a fraction of its capacity. Default 0.8. */
  maxUtilisation: z.number().gt(0).max(1).default(0.8),
  /** SM clock levels (fractions of maximum) the planner may choose; [1] disables frequency scaling. Default [1, 0.85, 0.7]. */
  clockLevels: z.array(z.number().gte(0.5).lte(1)).min(1).default([1, 0.85, 0.7]),
  /** What parked instances draw: `idle` (default; they stay on) or `off` (powered down). */
  parkedPower: z.enum(['idle', 'off']).default('idle'),
  /** With `parkedPower: off`, the time a parked instance takes to serve again (ms). Default 3 minutes. */
  bootMs: z.int().nonnegative().max(3_600_000).default(DEFAULT_BOOT_MS),
  /** Solve in a worker thread (default), so a solve never stalls requests; the simulator solves in line to stay deterministic. */
  solveInWorker: z.boolean().default(true),
  /**
   * Per-step demand forecast (seasonal naive with a level correction, src/plan/forecast.ts): the
   * rate a season ago at the same step, shifted by how the recent level moved since.
   */
  forecast: z
    .strictObject({
      /** Steps in a season. Default 288: a day of 5-minute steps. */
      seasonSteps: z.int().min(1).max(100_000).default(288),
      /** Complete steps averaged for the recent level. Default 6: the 30-minute window. */
      levelSteps: z.int().min(1).max(10_000).default(6),
    })
    .prefault({}),
});

/** A key as the config holds it: its sha256, never the key itself (`freesh key` mints one and prints both). */
const SHA256_HEX = /^[0-9a-f]{64}$/;
const sha256Hex = z.string().check((ctx) => {
  // A key pasted here by mistake must not end up in the error, and so in a log.
  if (!SHA256_HEX.test(ctx.value)) ctx.issues.push({ code: 'custom', message: 'must be the sha256 of the key as 64 lower-case hex digits (`freesh key` prints it)', input: '(not shown)' });
});

/** Limits of an API key or a tenant; each is shared by every replica through the state store. */
export const rateLimitsSchema = z.strictObject({
  /** Requests per minute: a bucket of this many, refilled evenly over the minute. Default: none. */
  requestsPerMinute: z.int().positive().optional(),
  /**
   * Tokens per minute, as a bucket like `requestsPerMinute`: a request takes its prompt tokens plus
   * its `max_tokens` (or `auth.outputTokensEstimate`) when admitted, settled with the tokens it
   * really produced when it ends. Default: none.
   */
  tokensPerMinute: z.int().positive().optional(),
  /** Requests in flight at once. Default: none. */
  maxConcurrent: z.int().positive().optional(),
});

export const apiKeySchema = z.strictObject({
  /** Name of the key in metrics and messages (the key itself is never shown). Default: the hash's first 8 hex digits. */
  id: label.optional(),
  /** sha256 of the key, in hex. */
  sha256: sha256Hex,
  /** Tenant of the key's requests. */
  tenant: label,
  /** Models the key may use; another is answered 403. Default: every model. */
  models: z.array(z.string().min(1)).optional(),
  /** SLO classes the key may use; another is answered 403. Default: every class. */
  sloClasses: z.array(label).optional(),
  /** Whether the key's own `x-freesh-*` headers (tenant, SLO class) are read; otherwise they are ignored. Default false. */
  freeshHeaders: z.boolean().default(false),
  /** The key's own limits. Default: none. */
  limits: rateLimitsSchema.prefault({}),
});

/**
 * Gateway API keys. Without this section the gateway is open, as before. With it, admin routes
 * (`/metrics`) need an admin key, `/healthz` tells only the status, and — when `keys` is not empty —
 * every completion and `/v1/models` needs a key (401 without, 403 for a model or class it may not use).
 */
export const authSchema = z
  .strictObject({
    /** API keys, sent as `Authorization: Bearer <key>` or `api-key: <key>`. Default: none (completions stay open). */
    keys: z.array(apiKeySchema).default([]),
    /** Limits per tenant, over every key of the tenant. Default: none. */
    tenants: z.record(label, rateLimitsSchema).default({}),
    /** sha256 of the keys that may read admin routes (`/metrics`). Default: none (admin routes are closed). */
    adminKeys: z.array(sha256Hex).default([]),
    /** Output tokens a request without `max_tokens` is taken to produce, until its real count is known. Default 1,024. */
    outputTokensEstimate: z.int().positive().default(1_024),
  })
  .superRefine((auth, ctx) => {
    const seen = new Set<string>();
    const check = (sha256: string, path: (string | number)[]): void => {
      if (seen.has(sha256)) ctx.addIssue({ code: 'custom', path, message: 'the same key is configured twice', input: sha256 });
      seen.add(sha256);
    };
    auth.keys.forEach((key, i) => check(key.sha256, ['keys', i, 'sha256']));
    const ids = new Set<string>();
    auth.keys.forEach((key, i) => {
      const id = key.id ?? key.sha256.slice(0, 8);
      if (ids.has(id)) ctx.addIssue({ code: 'custom', path: ['keys', i, 'id'], message: 'two keys have this id (their limits would be shared)', input: id });
      ids.add(id);
    });
    auth.adminKeys.forEach((sha256, i) => check(sha256, ['adminKeys', i]));
  });
/**
 * The operator dashboard (`/dashboard`, its JSON at `/dashboard/api/state`): an admin route. What it
 * collects is bounded by the sizes below, whatever the traffic.
 */
export const dashboardSchema = z.strictObject({
  /** Serve the dashboard and collect what it shows (decision traces are then recorded for every request). Default false; `freesh demo` turns it on. */
  enabled: z.boolean().default(false),
  /** Routing decisions kept for the inspector, newest first. Default 50. */
  decisions: z.int().min(1).max(1_000).default(50),
  /** Recent streamed completions per backend that TTFT and TBT quantiles are taken over. Default 200. */
  latencyWindow: z.int().min(10).max(10_000).default(200),
  /** Recent placements that each site's recent traffic share is taken over. Default 500. */
  shareWindow: z.int().min(10).max(100_000).default(500),
  /** How often each site's carbon intensity is sampled for its history (ms, router clock). Default 60,000. */
  carbonSampleMs: z.int().min(100).max(3_600_000).default(60_000),
  /** Carbon samples kept per site. Default 360 (6 hours at the default interval). */
  carbonSamples: z.int().min(2).max(10_000).default(360),
  /** Tenants tracked for fairness; beyond it the least recently seen is dropped. Default 100. */
  maxTenants: z.int().min(1).max(10_000).default(100),
  /** How often the page asks for fresh state (ms). Default 2,000. */
  refreshMs: z.int().min(250).max(60_000).default(2_000),
});

const routerShape = {
  sites: z.array(siteSchema).min(1),
  backends: z.array(backendSchema).min(1),
  /** Policy name: `freesh` (default), `freesh-published`, `least-loaded`, `least-loaded-planned`, `carbon-greedy`, `round-robin`, `random`, or one registered with the router. */
  policy: z.string().min(1).default('freesh'),
  limits: limitsSchema.prefault({}),
  /** Health probes, outlier ejection, circuit breaking and the retry budget (see healthSchema). */
  health: healthSchema.prefault({}),
  defaults: z
    .strictObject({
      /** Tenant of requests without an `x-freesh-tenant` header. Default `default`. */
      tenant: label.default('default'),
      /** SLO class of requests without an `x-freesh-slo` header. Default `standard`. */
      sloClass: label.default('standard'),
    })
    .prefault({}),
  /** Record a decision trace for every request (costs time; for debugging). Default false. */
  trace: z.boolean().default(false),
  /** What the `freesh` policy and the planner minimise: `carbon` (default) or `energy`. */
  objective: z.enum(['carbon', 'energy']).default('carbon'),
  /** SLO classes by name, chosen per request with `x-freesh-slo`. Default interactive, standard and batch. */
  sloClasses: z.record(label, sloClassSchema).default(() => structuredClone(DEFAULT_SLO_CLASSES) as Record<string, z.output<typeof sloClassSchema>>),
  /**
   * How a request's deadline is set: `targets` (default): arrival + its class's TTFT target + (p50 − 1) × its TBT
   * target; `slack`: FREESH's arrival + slackFactor × (TTFT + (p50 − 1) × TBT) on the fastest idle backend.
   */
  deadline: z.strictObject({ mode: z.enum(['targets', 'slack']).default('targets'), slackFactor: z.number().min(1).default(1.4) }).prefault({}),
  /** Least-laxity-first admission with per-tenant virtual token counters. */
  fairness: z
    .strictObject({
      /** Order queues by tenant service (VTC) as well as laxity. Default true. */
      enabled: z.boolean().default(true),
      /** A waiter whose latest start is this close (ms) goes first regardless of its tenant's service. Default 1,000. */
      urgentWithinMs: z.number().nonnegative().default(1_000),
    })
    .prefault({}),
  plan: planSchema.prefault({}),
  /** Gateway API keys, their tenants and limits, and admin keys (see authSchema). Default: none (open). */
  auth: authSchema.optional(),
  dashboard: dashboardSchema.prefault({}),
  /** What the router exchanges with GPU agents (`freesh agent`) through the state store. */
  agent: z
    .strictObject({
      /**
       * Publish each backend's SLO signal (least headroom of its requests) this often (ms), for the
       * agents' clock controllers, and read their measured power as often; 0 turns both off.
       * Default 1,000 (the controller's period).
       */
      sloSignalMs: z.int().nonnegative().max(60_000).default(1_000),
      /** Use an agent's measured power for a backend while its reading is at most this old (ms). Default 5,000. */
      measuredPowerFreshMs: z.int().positive().max(600_000).default(5_000),
    })
    .prefault({}),
  /** Load shedding: under overload the lowest-priority SLO classes are refused (429) first; a full queue refuses everyone (503). */
  overload: z
    .strictObject({
      /**
       * Share of each backend's queue (`limits.maxQueueLength`) lost per priority rank below the
       * highest class: with the built-in classes and 0.2, batch is shed once a queue is 60 % full,
       * standard at 80 %, interactive only when it is full. 0 turns class shedding off. Default 0.2.
       */
      shareStep: z.number().min(0).max(1).default(0.2),
      /** The least share of the queue any class keeps. Default 0.2. */
      minShare: z.number().min(0).max(1).default(0.2),
    })
    .prefault({}),
};

type FleetConfig = {
  sites: readonly { id: string }[];
  backends: readonly { id: string; site: string }[];
  sloClasses?: Readonly<Record<string, unknown>>;
  defaults?: { sloClass: string };
};

/** Ids are unique and every backend names a configured site. */
function checkReferences(config: FleetConfig, ctx: z.RefinementCtx): void {
  const siteIds = new Set<string>();
  config.sites.forEach((site, i) => {
    if (siteIds.has(site.id)) ctx.addIssue({ code: 'custom', path: ['sites', i, 'id'], message: 'duplicate site id', input: site.id });
    siteIds.add(site.id);
  });
  const backendIds = new Set<string>();
  config.backends.forEach((backend, i) => {
    if (backendIds.has(backend.id)) ctx.addIssue({ code: 'custom', path: ['backends', i, 'id'], message: 'duplicate backend id', input: backend.id });
    backendIds.add(backend.id);
    if (!siteIds.has(backend.site)) {
      ctx.addIssue({ code: 'custom', path: ['backends', i, 'site'], message: `must name one of the sites (${[...siteIds].join(', ')})`, input: backend.site });
    }
  });
  if (config.sloClasses && config.defaults && !(config.defaults.sloClass in config.sloClasses)) {
    ctx.addIssue({
      code: 'custom',
      path: ['defaults', 'sloClass'],
      message: `must name one of the SLO classes (${Object.keys(config.sloClasses).join(', ')})`,
      input: config.defaults.sloClass,
    });
  }
}

export const routerConfigSchema = z.strictObject(routerShape).superRefine(checkReferences);

export const serverSchema = z
  .strictObject({
    /** Interface to listen on. Default 127.0.0.1. */
    host: z.string().min(1).default('127.0.0.1'),
    /** Port to listen on; 0 picks a free one. Default 8080. */
    port: z.int().min(0).max(65_535).default(8080),
    /** Time a client has to send a request's headers before 408 and a closed connection (ms). Default 10,000. */
    headersTimeoutMs: z.int().positive().max(3_600_000).default(10_000),
    /**
     * Time a client has to send a whole request, headers and body, before 408 and a closed connection
     * (ms); the response may take as long as it takes. At least `headersTimeoutMs`. Default 30,000.
     */
    requestTimeoutMs: z.int().positive().max(3_600_000).default(30_000),
    /** How long an idle keep-alive connection stays open between requests (ms). Default 65,000. */
    keepAliveTimeoutMs: z.int().positive().max(3_600_000).default(65_000),
    /** Largest request line plus headers (bytes); more is answered 431. Default 16,384 (Node's). */
    maxHeaderBytes: z.int().min(1_024).max(1_048_576).default(16_384),
    /**
     * On SIGTERM, how long in-flight and queued requests may take to finish before their connections
     * are cut (ms); meanwhile new requests get 503 `draining` and `/healthz` answers 503. Default 30,000.
     */
    drainTimeoutMs: z.int().nonnegative().max(3_600_000).default(30_000),
  })
  .refine((server) => server.headersTimeoutMs <= server.requestTimeoutMs, {
    message: 'headersTimeoutMs must not exceed requestTimeoutMs',
    path: ['headersTimeoutMs'],
  })
  .prefault({});

/** Where the proxy keeps the cluster state: in process (default) or in Redis, shared by every replica. */
export const stateSchema = z
  .strictObject({
    /** Share slots, queues and plans with the other replicas of the fleet through Redis. Default: none (one replica, in memory). */
    redis: z
      .strictObject({
        /** `redis://[:password@]host:port/db` or `rediss://…`. */
        url: z.string().regex(/^rediss?:\/\//, 'must be a redis:// or rediss:// URL'),
        /** Prefix of every key, so several fleets share one Redis. Default `freesh`. */
        keyPrefix: z.string().min(1).default('freesh'),
        /** Longest wait for one Redis command before the replica serves on local state (ms). Default 500. */
        commandTimeoutMs: z.int().positive().default(500),
        /** Replicas in the fleet: while Redis is unreachable each grants at most ⌈limit / replicas⌉ slots per backend. Default 1. */
        replicas: z.int().positive().default(1),
      })
      .optional(),
    /** This replica's name in the shared state. Default: random per process. */
    replicaId: label.optional(),
  })
  .prefault({});

/** The standalone proxy's logs (pino): one line per request, backend events and plan changes. */
export const logSchema = z
  .strictObject({
    /** Least level written: `fatal`, `error`, `warn`, `info` (one line per request), `debug`, `trace` or `silent`. Default `info`. */
    level: z.enum(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent']).default('info'),
    /** `json` (default): pino's one JSON object a line, for collectors; `text`: `time level message key=value…` for people. */
    format: z.enum(['json', 'text']).default('json'),
  })
  .prefault({});

/** The standalone proxy's config file: the router's config plus where to listen, where to keep state and how to log. */
export const fileConfigSchema = z.strictObject({ ...routerShape, server: serverSchema, state: stateSchema, log: logSchema }).superRefine(checkReferences);

export type RouterConfigInput = z.input<typeof routerConfigSchema>;
export type RouterConfig = z.output<typeof routerConfigSchema>;
export type FileConfigInput = z.input<typeof fileConfigSchema>;
export type FileConfig = z.output<typeof fileConfigSchema>;

export class ConfigError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'ConfigError';
  }
}

/** Validates and defaults a config, or throws a ConfigError naming every bad field and its value. */
export function parseConfig<S extends z.ZodType>(schema: S, input: unknown, source = 'config'): z.output<S> {
  const result = schema.safeParse(input, { reportInput: true });
  if (result.success) return result.data;
  const lines = result.error.issues.map((issue) => {
    const where = issue.path.length === 0 ? source : `\`${formatPath(issue.path)}\``;
    const got = issue.code === 'unrecognized_keys' ? '' : `, got \`${preview((issue as { input?: unknown }).input)}\``;
    return `- ${where}: ${issue.message}${got}`;
  });
  throw new ConfigError(`Invalid ${source}:\n${lines.join('\n')}`);
}

function formatPath(path: readonly PropertyKey[]): string {
  return path.reduce<string>((out, key) => (typeof key === 'number' ? `${out}[${key}]` : out ? `${out}.${String(key)}` : String(key)), '');
}

function preview(value: unknown): string {
  if (value === undefined) return 'nothing';
  const text = JSON.stringify(value) ?? String(value);
  return text.length > 60 ? `${text.slice(0, 60)}…` : text;
}
