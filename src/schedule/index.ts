/** `freesh/policies`: the built-in policies, their filters, scorers and pickers, queue orders, and the orchestrator. */
export { BUILTIN_POLICIES, DEFAULT_POLICY, type PolicyFactory } from './builtin.js';
export { carbonGreedy, cleanSiteScorer, headroomFilter, leastLoadedPlanned } from './baselines.js';
export { capacityFilter, deadlineFilter, freesh, freeshPublished, laxityScorer, objectiveScorer, plannedFilter, planShareScorer, TBT_HEADROOM } from './freesh.js';
export { healthyFilter, loadScorer, maxScorePicker, randomPicker, roundRobinPicker } from './plugins.js';
export { type Decision, type DecisionTrace, decide } from './orchestrator.js';
export type { DecisionContext, Filter, Picker, Policy, Scored, Scorer, WeightedScorer } from './policy.js';
export { fifoOrder, leastLaxityFairOrder, leastLaxityOrder, type QueueOrder } from '../queue/order.js';
export { DEFAULT_SLO_CLASSES, type SloClass, ttftTargetMs } from '../request/slo.js';
export { type RequestType, requestType } from '../request/request-type.js';
