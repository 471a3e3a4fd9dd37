/** `freesh/state`: the cluster-state contract and its in-memory implementation (the default, one process). */
export { MemoryStateStore, type MemoryStateStoreOptions } from './memory-store.js';
export type { BackendSnapshot, CounterUpdate, Lease, PlanRecord, PublishedPlan, ReceivedTelemetry, StateStore, TelemetryRecord } from './store.js';
