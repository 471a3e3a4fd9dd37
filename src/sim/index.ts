export { type SimBackend, type SimBackendOptions, startSimBackend } from './backend-server.js';
export { FIXED_COMPLETION, startFixedBackend } from './fixed-backend.js';
export { type SimInstanceOptions, type SimJob, SimInstance } from './instance.js';
export { type DemoFleet, DEMO_MODEL, DEMO_SITES, startDemoFleet } from './demo-fleet.js';
export { VirtualClock } from './virtual-clock.js';
