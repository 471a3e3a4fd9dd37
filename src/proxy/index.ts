/** `freesh/proxy`: the standalone proxy, its config file, and the transport it forwards with. */
export { loadConfigFile, type RunningProxy, startProxy } from './standalone.js';
export { createProxyServer, type ProxyServerOptions } from './server.js';
export { clientErrorListener, type ClientErrorLimits } from '../http/client-error.js';
export { ConfigError, type FileConfig, type FileConfigInput, fileConfigSchema, parseConfig, routerConfigSchema } from '../config/schema.js';
export { UndiciTransport, type UndiciTransportOptions } from '../transport/undici.js';
export { compose, isConnectError } from '../transport/transport.js';
export { failover, healthMarking } from '../transport/layers.js';
export { RouterMetrics } from '../metrics/metrics.js';
export { BUILTIN_PROFILES, type Curve, type InstanceProfile } from '../cost/profiles.js';
export { createCostModel, profileCostModel } from '../cost/cost-model.js';
export { DEFAULT_FREQUENCY_MODEL, type FrequencyModel, frequencyModel } from '../cost/frequency.js';
export { scaledClock, seededRng, systemClock } from '../clock.js';
export { CancelToken } from '../cancel.js';
