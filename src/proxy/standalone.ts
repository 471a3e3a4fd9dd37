import { readFile } from 'node:fs/promises';
import type { Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { ConfigError, type FileConfig, type FileConfigInput, fileConfigSchema, parseConfig } from '../config/schema.js';
import { type Router, type RouterOptions, createRouter } from '../router.js';
import type { StateStore } from '../state/store.js';
import { createProxyServer } from './server.js';

export interface RunningProxy {
  readonly router: Router;
  readonly server: Server;
  /** e.g. `http://127.0.0.1:8080` */
  readonly url: string;
  /** Stops accepting, lets in-flight requests finish (up to `graceMs`), then closes everything. */
  shutdown(graceMs?: number): Promise<void>;
}

/** Reads and validates a JSON config file; errors name the file, the field and the bad value. */
export async function loadConfigFile(path: string): Promise<FileConfig> {
  let text: string;
  try {
    text = await readFile(path, 'utf8');
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    const why = code === 'ENOENT' ? 'no such file' : code === 'EACCES' ? 'permission denied' : code === 'EISDIR' ? 'it is a directory' : (err as Error).message;
    throw new ConfigError(`Cannot read config file ${path}: ${why}`);
  }
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch (err) {
    throw new ConfigError(`Config file ${path} is not valid JSON: ${(err as Error).message}`);
  }
  return parseConfig(fileConfigSchema, value, `config file ${path}`);
}

/** Starts the OpenAI-compatible proxy for a config (plus any injected router options). */
export async function startProxy(input: FileConfigInput, inject: Partial<RouterOptions> = {}): Promise<RunningProxy> {
  const { server: listen, state, ...routerConfig } = parseConfig(fileConfigSchema, input, 'config');
  // The Redis store (and ioredis) load only when configured.
  const store = inject.store ?? (state.redis ? await openRedisStore(state.redis) : undefined);
  const router = createRouter({ ...routerConfig, replicaId: state.replicaId, ...inject, store });
  const server = createProxyServer(router, listen);
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(listen.port, listen.host, () => {
      server.off('error', reject);
      resolve();
    });
  });
  const { port } = server.address() as AddressInfo;
  const host = listen.host.includes(':') ? `[${listen.host}]` : listen.host;
  return {
    router,
    server,
    url: `http://${host}:${port}`,
    async shutdown(graceMs = 30_000) {
      const closed = new Promise<void>((resolve) => server.close(() => resolve()));
      server.closeIdleConnections();
      let timer: NodeJS.Timeout | undefined;
      await Promise.race([router.whenIdle(), new Promise<void>((resolve) => (timer = setTimeout(resolve, graceMs)))]);
      clearTimeout(timer);
      server.closeAllConnections();
      await closed;
      await router.close();
    },
  };
}

async function openRedisStore(options: NonNullable<FileConfig['state']['redis']>): Promise<StateStore> {
  let redis: typeof import('../state/redis.js');
  try {
    redis = await import('../state/redis.js');
  } catch (err) {
    throw new Error(`state.redis needs the \`ioredis\` package: npm install ioredis (${(err as Error).message})`);
  }
  return redis.createRedisStateStore(options.url, {
    keyPrefix: options.keyPrefix,
    commandTimeoutMs: options.commandTimeoutMs,
    replicas: options.replicas,
    // Once per outage each way: the metric freesh_state_store_degraded and /healthz say it meanwhile.
    onDegraded: (err) => console.warn(`freesh: Redis does not answer (${err instanceof Error ? err.message : String(err)}); serving on local state`),
    onRecovered: () => console.warn('freesh: Redis answers again; shared state resumed'),
  });
}
