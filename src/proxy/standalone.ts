import { readFile } from 'node:fs/promises';
import type { IncomingMessage, Server, ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { ConfigError, type FileConfig, type FileConfigInput, fileConfigSchema, parseConfig } from '../config/schema.js';
import { createLogger, type Logger } from '../log/logger.js';
import { type Router, type RouterOptions, createRouter } from '../router.js';
import { MemoryStateStore } from '../state/memory-store.js';
import type { StateStore } from '../state/store.js';
import { createProxyServer } from './server.js';

export interface RunningProxy {
  /** The router serving new requests (replaced by `reload`). */
  readonly router: Router;
  readonly server: Server;
  /** e.g. `http://127.0.0.1:8080` */
  readonly url: string;
  /**
   * Drains, then closes: new requests get 503 `draining` (with `retry-after`) and `/healthz` 503 while
   * the server still listens, so load balancers stop sending; in-flight and queued requests finish for
   * up to `graceMs` (default `server.drainTimeoutMs`); then connections still open are cut and
   * everything is closed.
   */
  shutdown(graceMs?: number): Promise<void>;
  /**
   * Replaces the router with one for `input`, without dropping a request: requests already in the old
   * router (queued, streaming, or still uploading their body) finish there, new ones go to the new
   * one, and both take slots from the same state store, so capacity is not counted twice. Throws a
   * ConfigError, and keeps the running router, when `input` is invalid or changes `server` or `state`
   * (they need a restart).
   */
  reload(input: FileConfigInput): Promise<void>;
}

export interface ProxyOptions {
  /** Where the proxy logs (Redis outages, reloads). Default: a logger from the config's `log` section. */
  readonly logger?: Logger;
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

/** How often a replaced router is checked for the end of its last request. */
const RETIRE_POLL_MS = 100;

/** Starts the OpenAI-compatible proxy for a config (plus any injected router options). */
export async function startProxy(input: FileConfigInput, inject: Partial<RouterOptions> = {}, options: ProxyOptions = {}): Promise<RunningProxy> {
  const config = parseConfig(fileConfigSchema, input, 'config');
  const { server: listen, state } = config;
  // Made on first use: a proxy that never logs opens no stream on stdout.
  let own: Logger | undefined;
  const log = (): Logger => options.logger ?? (own ??= createLogger(config.log));
  // The Redis store (and ioredis) load only when configured. One store outlives the routers a reload replaces.
  const store = inject.store ?? (state.redis ? await openRedisStore(state.redis, log) : new MemoryStateStore({ clock: inject.clock }));
  const shared = unclosable(store);
  let generation = 0;
  const routerFor = (c: FileConfig): Router => {
    const { server: _server, state: _state, log: _log, ...routerConfig } = c;
    // Each router owns its tickets in a shared queue (and bids for planning) under a name of its own:
    // one that took the other's grants would release them and send its waiters to the back.
    const replicaId = state.replicaId === undefined || generation === 0 ? state.replicaId : `${state.replicaId}.${generation}`;
    generation++;
    return createRouter({ ...routerConfig, replicaId, ...inject, store: shared });
  };
  let router = routerFor(config);
  const retiring = new Set<Router>();
  /** HTTP requests in progress per router, from their first byte to their response's end (a body may still be uploading). */
  const open = new Map<Router, number>();
  const server = createProxyServer(() => router, listen);
  server.on('request', (_req: IncomingMessage, res: ServerResponse) => {
    const serving = router;
    open.set(serving, (open.get(serving) ?? 0) + 1);
    res.on('close', () => open.set(serving, open.get(serving)! - 1));
  });
  const idle = (r: Router): boolean => r.inFlight === 0 && (open.get(r) ?? 0) === 0;
  const untilIdle = async (routers: readonly Router[]): Promise<void> => {
    while (!routers.every(idle)) await delay(RETIRE_POLL_MS);
  };
  const retire = async (old: Router): Promise<void> => {
    retiring.add(old);
    await untilIdle([old]);
    // Shut down after a deadline instead: close() is then called there.
    if (!retiring.delete(old)) return;
    open.delete(old);
    await old.close();
  };

  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(listen.port, listen.host, () => {
      server.off('error', reject);
      resolve();
    });
  });
  const { port } = server.address() as AddressInfo;
  const host = listen.host.includes(':') ? `[${listen.host}]` : listen.host;
  let stopping: Promise<void> | undefined;
  return {
    get router() {
      return router;
    },
    server,
    url: `http://${host}:${port}`,
    async reload(next) {
      if (stopping) throw new ConfigError('the proxy is shutting down');
      const parsed = parseConfig(fileConfigSchema, next, 'config');
      for (const section of ['server', 'state'] as const) {
        if (JSON.stringify(parsed[section]) !== JSON.stringify(config[section])) throw new ConfigError(`\`${section}\` changed: it takes a restart, not a reload`);
      }
      const old = router;
      router = routerFor(parsed);
      const { backends, policy } = router;
      log().info(
        { event: 'reload', backends: backends.length, policy: policy.name, finishing: old.inFlight },
        `config reloaded: ${backends.length} backends, policy ${policy.name}; ${old.inFlight} request(s) finish on the previous config`,
      );
      void retire(old).catch((err: unknown) => log().error({ event: 'reload', err }, 'closing the previous router failed'));
    },
    shutdown(graceMs = listen.drainTimeoutMs) {
      stopping ??= (async () => {
        const routers = [router, ...retiring];
        retiring.clear();
        for (const r of routers) r.drain();
        let timer: NodeJS.Timeout | undefined;
        await Promise.race([untilIdle(routers), new Promise<void>((resolve) => (timer = setTimeout(resolve, graceMs)))]);
        clearTimeout(timer);
        const cut = routers.reduce((n, r) => n + r.inFlight, 0);
        if (cut > 0) log().warn({ event: 'drain', cut }, `drain deadline (${graceMs} ms) passed: cutting ${cut} request(s)`);
        const closed = new Promise<void>((resolve) => server.close(() => resolve()));
        server.closeAllConnections();
        await closed;
        await Promise.all(routers.map((r) => r.close()));
        await store.close();
      })();
      return stopping;
    },
  };
}

/** The store with `close` made a no-op: routers close their store, and this one outlives them. */
function unclosable(store: StateStore): StateStore {
  return new Proxy(store, {
    get(target, key) {
      if (key === 'close') return () => Promise.resolve();
      const value: unknown = Reflect.get(target, key, target);
      // Bound to the store itself: its methods use private fields, which a proxy receiver does not have.
      return typeof value === 'function' ? (value as (...args: unknown[]) => unknown).bind(target) : value;
    },
  });
}

const delay = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));

async function openRedisStore(options: NonNullable<FileConfig['state']['redis']>, log: () => Logger): Promise<StateStore> {
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
    onDegraded: (err) => log().warn({ event: 'state-degraded' }, `Redis does not answer (${err instanceof Error ? err.message : String(err)}); serving on local state`),
    onRecovered: () => log().warn({ event: 'state-recovered' }, 'Redis answers again; shared state resumed'),
  });
}
