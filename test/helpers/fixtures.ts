import { BUILTIN_PROFILES } from '../../src/cost/profiles.js';
import { DEFAULT_SLO_CLASSES } from '../../src/request/slo.js';
import type { DecisionContext } from '../../src/schedule/policy.js';
import { seededRng } from '../../src/clock.js';
import type { Backend, BackendState, Candidate, RoutingRequest, Site } from '../../src/types.js';

export const site: Site = { id: 's1', region: 'DE', gramsPerKWh: 400, pue: 1.2 };

export function backend(id: string, overrides: Partial<Backend> = {}): Backend {
  return {
    id,
    site,
    baseURL: 'http://127.0.0.1:1/v1',
    models: new Set(['m']),
    maxConcurrency: 10,
    prefillChunkTokens: 512,
    forwardPriority: false,
    profile: BUILTIN_PROFILES['2xA100']!,
    apiKey: undefined,
    ...overrides,
  };
}

export function candidate(id: string, inFlight = 0, queued = 0, state: Partial<BackendState> = {}): Candidate {
  return {
    backend: backend(id),
    state: { inFlight, healthy: true, ...state },
    queued,
    promptTokensPerS: 0,
    strictestTbtMs: Number.POSITIVE_INFINITY,
    cost: { waitMs: 0, ttftMs: 100, tbtMs: 50, e2eMs: 1000, e2eP90Ms: 2000, energyJ: 10, carbonG: 1 },
  };
}

export function request(overrides: Partial<RoutingRequest> = {}): RoutingRequest {
  return {
    id: 'r',
    endpoint: 'chat.completions',
    model: 'm',
    promptText: 'hello',
    promptTokens: 512,
    messageCount: 1,
    maxTokens: undefined,
    stream: false,
    tenant: 't',
    sloClass: 'standard',
    arrivalMs: 0,
    body: {},
    rawBody: new Uint8Array(),
    ...overrides,
  };
}

export function decisionContext(overrides: Partial<DecisionContext> = {}): DecisionContext {
  return {
    request: request(),
    prediction: { outputTokensP50: 10, outputTokensP90: 20, source: 'test' },
    requestType: 'SS',
    slo: DEFAULT_SLO_CLASSES.standard!,
    deadlineMs: 10_000,
    deadlineP90Ms: 15_000,
    nowMs: 0,
    rng: seededRng(1),
    objective: 'carbon',
    candidates: [],
    plan: undefined,
    ...overrides,
  };
}
