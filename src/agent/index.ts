/** The GPU agent (`freesh agent`) as a library: the agent loop, its drivers and the MIAD controller. */
export { AgentStartError, GpuAgent, type GpuAgentOptions, type GpuStatus, type MiadConstants, sloSignal } from './agent.js';
export { type EnergyReading, type GpuDriver, GpuDriverError, type GpuTelemetry } from './driver.js';
export { FakeGpuDriver, type FakeGpuOptions, H200_SM_CLOCKS_MHZ } from './fake-gpu.js';
export { MIAD_DEFAULTS, type MiadConfig, miadController, type SloSignal } from './miad.js';
export { NvidiaSmiDriver, type NvidiaSmiDriverOptions } from './nvidia-smi.js';
export { ZeusdDriver, type ZeusdDriverOptions } from './zeusd.js';
