export { type SimBackend, type SimBackendOptions, startSimBackend } from './backend-server.js';
export { FIXED_COMPLETION, startFixedBackend } from './fixed-backend.js';
export { type SimInstanceOptions, type SimJob, SimInstance } from './instance.js';
export { type DemoFleet, DEMO_MODEL, startDemoFleet } from './demo-fleet.js';
export { FREESH_FLEET, type FleetSpec, fleetRouterConfig } from './fleet.js';
export { parseAzureTrace, scaleTrace, type Trace, type TraceRequest } from './trace.js';
export { VirtualClock } from './virtual-clock.js';
export { DEFAULT_BOUND_CLOCK_LEVELS, type FluidBound, fluidBound, type FluidBoundOptions } from './fluid-bound.js';
