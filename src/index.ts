/**
 * freesh: an energy- and carbon-aware request router for OpenAI-compatible LLM backends.
 *
 * The root holds the router, its two HTTP edges, the contracts of every extension point, and the
 * error codes and outcomes it reports. Everything else is on a subpath: `freesh/policies`,
 * `freesh/carbon`, `freesh/predict`, `freesh/state`, `freesh/proxy`, `freesh/sim`.
 */
export {
  type Admission,
  completionChannel,
  createRouter,
  type RequestEnd,
  type RoutedResponse,
  type Router,
  type RouterCall,
  type RouterOptions,
} from './router.js';
export { createFetchHandler, type FetchHandler, type FetchHandlerOptions } from './http/fetch-handler.js';
export { createNodeHandler, type NodeHandler, type NodeHandlerOptions } from './http/node-handler.js';
export { ERROR_CODES, type ErrorCode, type ErrorType, FreeshError } from './errors.js';
export { OUTCOMES, type Outcome } from './metrics/metrics.js';
export { decisionChannel } from './pipeline/place.js';

// Contracts of the extension points.
export type { AbortEvent, CompletionEvent, LifecyclePlugin, Placement, RequestEvent, SendEvent } from './pipeline/lifecycle.js';
export type { DecisionContext, Filter, Picker, Policy, Scored, Scorer, WeightedScorer } from './schedule/policy.js';
export type { PolicyFactory } from './schedule/builtin.js';
export type { Decision, DecisionTrace } from './schedule/orchestrator.js';
export type { QueueOrder } from './queue/order.js';
export type { BackendSnapshot, CounterUpdate, Lease, PlanRecord, PublishedPlan, ReceivedTelemetry, StateStore, TelemetryRecord } from './state/store.js';
export type { Retarget, Transport, TransportLayer, UpstreamRequest, UpstreamResponse } from './transport/transport.js';
export type { Predictor } from './predict/predictor.js';
export type { CostInput, CostModel } from './cost/cost-model.js';
export type { CarbonSignal } from './carbon/signal.js';
export type { Clock, Rng, Timer } from './clock.js';
export type { CancelSignal } from './cancel.js';
export type { Plan, PlanView } from './plan/plan.js';
export type { RequestType } from './request/request-type.js';
export type { SloClass } from './request/slo.js';
export type { RouterConfig, RouterConfigInput } from './config/schema.js';
// The dashboard's JSON (`GET /dashboard/api/state`), for scripts and data sources that read it.
export type { DashboardState } from './dashboard/state.js';
export type { Backend, BackendState, Candidate, CostEstimate, Endpoint, Prediction, RoutingRequest, Site } from './types.js';
