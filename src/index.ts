export { type Clock, type Rng, scaledClock, seededRng, systemClock, type Timer } from './clock.js';
export {
  ConfigError,
  type FileConfig,
  type FileConfigInput,
  fileConfigSchema,
  parseConfig,
  type RouterConfig,
  type RouterConfigInput,
  routerConfigSchema,
} from './config/schema.js';
export { type CostInput, type CostModel, profileCostModel } from './cost/cost-model.js';
export { BUILTIN_PROFILES, type Curve, type InstanceProfile } from './cost/profiles.js';
export { type ErrorType, FreeshError } from './errors.js';
export { OUTCOMES, type Outcome, RouterMetrics } from './metrics/metrics.js';
export { capped, heuristicPredictor, type HeuristicPredictorOptions, type Predictor } from './predict/predictor.js';
export { createProxyServer } from './proxy/server.js';
export { isConnectError, type Transport, UndiciTransport, type UpstreamRequest, type UpstreamResponse } from './proxy/transport.js';
export { AdmissionQueue, type Ticket } from './queue/admission-queue.js';
export { SLO_HEADER, TENANT_HEADER } from './request/parse.js';
export {
  type CompletionEvent,
  completionChannel,
  createRouter,
  decisionChannel,
  type Placement,
  type RoutedResponse,
  Router,
  type RouterCall,
  type RouterOptions,
} from './router.js';
export { BUILTIN_POLICIES, DEFAULT_POLICY, type PolicyFactory } from './schedule/builtin.js';
export type { Decision, DecisionTrace } from './schedule/orchestrator.js';
export { healthyFilter, loadScorer, maxScorePicker, randomPicker, roundRobinPicker } from './schedule/plugins.js';
export type { DecisionContext, Filter, Picker, Policy, Scored, Scorer, WeightedScorer } from './schedule/policy.js';
export { MemoryStateStore } from './state/memory-store.js';
export type { Lease, StateStore } from './state/store.js';
export type { Backend, BackendState, Candidate, CostEstimate, Endpoint, Prediction, RoutingRequest, Site } from './types.js';
export { loadConfigFile, type RunningProxy, startProxy } from './proxy/standalone.js';
export { type CancelSignal, CancelToken } from './cancel.js';
export { CachedCarbonSignal, electricityMapsSource, type IntensitySource, wattTimeSource } from './carbon/providers.js';
export { type CarbonSeries, parseElectricityMapsCsv, parseFreeshCarbonCsv } from './carbon/series.js';
export { type CarbonSignal, seriesSignal } from './carbon/signal.js';
export { DEFAULT_FREQUENCY_MODEL, type FrequencyModel, frequencyModel } from './cost/frequency.js';
export type { Plan, PlanView } from './plan/plan.js';
export { planChannel } from './plan/pool-planner.js';
export { type FineTuneResult, ModelPredictor, type ModelPredictorOptions } from './predict/model-predictor.js';
export { FairShare } from './queue/fair-share.js';
export { type RequestType, requestType } from './request/request-type.js';
export { DEFAULT_SLO_CLASSES, type SloClass } from './request/slo.js';
export { freesh, freeshPublished } from './schedule/freesh.js';
