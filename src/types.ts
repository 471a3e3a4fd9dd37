/** The typed data that flows through the router, from a parsed request to a decision. */
import type { InstanceProfile } from './cost/profiles.js';

export type Endpoint = 'chat.completions' | 'completions';

/** A parsed, validated OpenAI request, with what the router needs to place it. */
export interface RoutingRequest {
  readonly id: string;
  readonly endpoint: Endpoint;
  readonly model: string;
  /** The prompt as plain text (message contents joined), for predictors. */
  readonly promptText: string;
  /** Prompt length estimated before any backend tokenizes it. */
  readonly promptTokens: number;
  readonly messageCount: number;
  /** `max_completion_tokens` or `max_tokens`, when the caller set one. */
  readonly maxTokens: number | undefined;
  readonly stream: boolean;
  readonly tenant: string;
  readonly sloClass: string;
  /** Router clock time at which the request arrived (ms). */
  readonly arrivalMs: number;
  /** The parsed body, read-only; forwarded unchanged as `rawBody`. */
  readonly body: Readonly<Record<string, unknown>>;
  readonly rawBody: Uint8Array;
}

/** Output-length prediction, in tokens. */
export interface Prediction {
  readonly outputTokensP50: number;
  readonly outputTokensP90: number;
  /** What produced it (`heuristic`, `model`, `oracle`, ...), for traces and metrics. */
  readonly source: string;
}

export interface Site {
  readonly id: string;
  readonly region: string;
  /** Grid carbon intensity used for estimates, gCO2e per kWh. */
  readonly gramsPerKWh: number;
  /** Power usage effectiveness of the site (facility energy / IT energy). */
  readonly pue: number;
}

export interface Backend {
  readonly id: string;
  readonly site: Site;
  /** Origin and path prefix of the OpenAI-compatible API, e.g. `http://10.0.0.5:8000/v1`. */
  readonly baseURL: string;
  readonly models: ReadonlySet<string>;
  /** Requests this backend runs at once; more wait in its admission queue. */
  readonly maxConcurrency: number;
  /** Prompt tokens the backend prefills per step (chunked prefill). */
  readonly prefillChunkTokens: number;
  /** Whether requests carry their SLO class priority upstream (the backend schedules by it). */
  readonly forwardPriority: boolean;
  /** Power and speed curves of the instance (GPU type, count and parallelism mode). */
  readonly profile: InstanceProfile;
  /** Sent as `Authorization: Bearer ...` to this backend, replacing the caller's. */
  readonly apiKey: string | undefined;
}

/** What the state store knows about a backend now. */
export interface BackendState {
  /** Requests holding a lease on this backend, across every router sharing the store. */
  readonly inFlight: number;
  readonly healthy: boolean;
}

/** Estimated cost of running one request on one backend, computed once per decision. */
export interface CostEstimate {
  /** Expected wait in the admission queue (ms). */
  readonly waitMs: number;
  /** Time to first token, waiting included (ms). */
  readonly ttftMs: number;
  /** Time between tokens at the batch the request would join (ms). */
  readonly tbtMs: number;
  /** End to end with the p50 length prediction, waiting included (ms). */
  readonly e2eMs: number;
  /** End to end with the p90 length prediction (ms). */
  readonly e2eP90Ms: number;
  /** This request's share of the instance's energy over its lifetime, facility level (J). */
  readonly energyJ: number;
  /** energyJ at the site's carbon intensity now (gCO2e). */
  readonly carbonG: number;
}

/** One backend as the policy sees it: read-only, costed once, shared by every plugin. */
export interface Candidate {
  readonly backend: Backend;
  readonly state: BackendState;
  /** Requests waiting in this router's admission queue for the backend. */
  readonly queued: number;
  /** Prompt tokens this router has sent the backend lately, per second, this request's included (prefill load). */
  readonly promptTokensPerS: number;
  /** The tightest TBT target (ms) among requests running there now: new work must not break it. Infinity when idle. */
  readonly strictestTbtMs: number;
  readonly cost: CostEstimate;
}
