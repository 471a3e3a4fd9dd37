/**
 * `freesh agent`: the GPU agent as a process. Parses its options, builds the driver and the store,
 * serves `/metrics`, and resets clocks on SIGTERM, SIGINT and fatal errors before exiting.
 */
import { createServer, type Server } from 'node:http';
import { parseArgs } from 'node:util';
import { BUILTIN_PROFILES } from '../cost/profiles.js';
import { MemoryStateStore } from '../state/memory-store.js';
import type { StateStore } from '../state/store.js';
import { AgentStartError, GpuAgent } from './agent.js';
import type { GpuDriver } from './driver.js';
import { FakeGpuDriver } from './fake-gpu.js';
import { NvidiaSmiDriver } from './nvidia-smi.js';
import { ZeusdDriver } from './zeusd.js';
import { SLO_TELEMETRY, sloKey } from '../pipeline/agent-telemetry.js';

import { AGENT_USAGE } from './usage.js';

export { AGENT_USAGE };

const OPTIONS = {
  node: { type: 'string' },
  gpus: { type: 'string' },
  backend: { type: 'string', multiple: true },
  driver: { type: 'string', default: 'nvidia-smi' },
  'dry-run': { type: 'boolean', default: false },
  redis: { type: 'string' },
  'key-prefix': { type: 'string', default: 'freesh' },
  'metrics-port': { type: 'string', default: '9401' },
  zeusd: { type: 'string' },
  'zeusd-socket': { type: 'string' },
  'fake-profile': { type: 'string', default: '2xH100' },
  'period-ms': { type: 'string' },
  'store-timeout-ms': { type: 'string' },
  help: { type: 'boolean', short: 'h' },
} as const;

class AgentUsageError extends Error {}

function indices(flag: string, text: string): number[] {
  const list = text.split(',').map((s) => s.trim());
  if (list.length === 0 || list.some((s) => !/^\d+$/.test(s))) throw new AgentUsageError(`${flag} must be a comma-separated list of GPU indices, got \`${text}\``);
  return [...new Set(list.map(Number))];
}

function positiveInt(flag: string, text: string | undefined, min = 1): number | undefined {
  if (text === undefined) return undefined;
  const n = Number(text);
  if (!Number.isInteger(n) || n < min) throw new AgentUsageError(`${flag} must be an integer ≥ ${min}, got \`${text}\``);
  return n;
}

/** GPU index → backend id, from `--backend ID=0,1` flags, or every GPU to `node`. */
export function backendMap(node: string, gpus: readonly number[], flags: readonly string[]): Map<number, string> {
  const map = new Map<number, string>();
  if (flags.length === 0) {
    for (const g of gpus) map.set(g, node);
    return map;
  }
  for (const flag of flags) {
    const match = /^([A-Za-z0-9._:-]{1,64})=(.+)$/.exec(flag);
    if (!match) throw new AgentUsageError(`--backend must be ID=GPUS (e.g. a100-0=0,1), got \`${flag}\``);
    for (const g of indices('--backend', match[2]!)) {
      if (!gpus.includes(g)) throw new AgentUsageError(`--backend ${flag}: GPU ${g} is not in --gpus`);
      if (map.has(g)) throw new AgentUsageError(`GPU ${g} is mapped to two backends (${map.get(g)}, ${match[1]})`);
      map.set(g, match[1]!);
    }
  }
  return map;
}

/** Runs the agent until a signal; resolves with the exit code. */
export async function runAgentCommand(args: string[]): Promise<number> {
  let values: ReturnType<typeof parseArgs<{ args: string[]; options: typeof OPTIONS; strict: true }>>['values'];
  try {
    values = parseArgs({ args, options: OPTIONS, strict: true }).values;
    if (values.help) {
      console.log(AGENT_USAGE);
      return 0;
    }
    if (!values.node || !/^[A-Za-z0-9._:-]{1,64}$/.test(values.node)) throw new AgentUsageError('--node ID is required (1-64 characters of [A-Za-z0-9._:-])');
    if (!values.gpus) throw new AgentUsageError('--gpus 0,1 is required');
  } catch (err) {
    console.error(`freesh agent: ${(err as Error).message.split('\n')[0]} (see \`freesh agent --help\`)`);
    return 2;
  }
  // Signals are handled from before the agent touches a GPU: one that comes during start still ends
  // in a reset (stop waits for start, and no lock is set before start is done).
  let requestStop!: (reason: { why: string; code: number }) => void;
  const stopRequested = new Promise<{ why: string; code: number }>((resolve) => (requestStop = resolve));
  const onInt = (): void => requestStop({ why: 'SIGINT', code: 0 });
  const onTerm = (): void => requestStop({ why: 'SIGTERM', code: 0 });
  const onFatal = (err: unknown): void => {
    console.error(err);
    requestStop({ why: 'fatal error', code: 1 });
  };
  process.on('SIGINT', onInt);
  process.on('SIGTERM', onTerm);
  process.on('uncaughtException', onFatal);
  const unlisten = (): void => {
    process.off('SIGINT', onInt);
    process.off('SIGTERM', onTerm);
    process.off('uncaughtException', onFatal);
  };

  let store: StateStore | undefined;
  let driver: GpuDriver | undefined;
  let agent: GpuAgent | undefined;
  let server: Server | undefined;
  try {
    const gpus = indices('--gpus', values.gpus);
    const backends = backendMap(values.node, gpus, values.backend ?? []);
    const periodMs = positiveInt('--period-ms', values['period-ms'], 100);
    const storeTimeoutMs = positiveInt('--store-timeout-ms', values['store-timeout-ms']);
    const metricsPort = positiveInt('--metrics-port', values['metrics-port'], 0)!;
    if (metricsPort > 65_535) throw new AgentUsageError(`--metrics-port must be 0-65535, got ${metricsPort}`);

    let fake: FakeGpuDriver | undefined;
    if (values.driver === 'nvidia-smi') driver = new NvidiaSmiDriver();
    else if (values.driver === 'zeusd') {
      if ((values.zeusd === undefined) === (values['zeusd-socket'] === undefined)) throw new AgentUsageError('--driver zeusd needs one of --zeusd URL and --zeusd-socket PATH');
      driver = new ZeusdDriver({ url: values.zeusd, socketPath: values['zeusd-socket'], gpus });
    } else if (values.driver === 'fake') {
      const profile = BUILTIN_PROFILES[values['fake-profile']];
      if (!profile) throw new AgentUsageError(`--fake-profile must be one of ${Object.keys(BUILTIN_PROFILES).join(', ')}, got \`${values['fake-profile']}\``);
      driver = fake = new FakeGpuDriver({ count: Math.max(...gpus) + 1, profile });
    }
    else throw new AgentUsageError(`--driver must be nvidia-smi, zeusd or fake, got \`${values.driver}\``);

    if (values.redis !== undefined) {
      const { createRedisStateStore } = await import('../state/redis.js');
      store = createRedisStateStore(values.redis, { keyPrefix: values['key-prefix'], onDegraded: () => undefined, onRecovered: () => undefined });
    } else {
      store = new MemoryStateStore();
      console.log('freesh agent: no --redis: using an in-process state store (no router can reach it)');
    }

    agent = new GpuAgent({
      driver,
      store,
      nodeId: values.node,
      backends,
      dryRun: values['dry-run'],
      storeTimeoutMs,
      miad: periodMs === undefined ? undefined : { periodMs },
      // The fake GPU runs the batch the routers report in flight on its backend, so its power and clock follow real traffic.
      onTelemetry: fake
        ? (records) => {
            for (const [index, backendId] of backends) {
              let inFlight = 0;
              for (const r of records) if (r.kind === SLO_TELEMETRY) inFlight += r.values[sloKey(backendId, 'inFlight')] ?? 0;
              fake.setBatch(index, Math.max(0, Math.round(inFlight)));
            }
          }
        : undefined,
    });
    const registry = agent.registry;
    server = createServer((req, res) => {
      if (req.method === 'GET' && req.url === '/metrics') {
        registry.metrics().then(
          (text) => res.writeHead(200, { 'content-type': registry.contentType }).end(text),
          (err: unknown) => res.writeHead(500).end(String(err)),
        );
      } else res.writeHead(404, { 'content-type': 'text/plain' }).end('not found: the agent serves GET /metrics\n');
    });
    await new Promise<void>((resolve, reject) => {
      server!.once('error', reject);
      server!.listen(metricsPort, '0.0.0.0', resolve);
    });
    const address = server.address();
    const started = agent.start();
    const first = await Promise.race([started.then(() => undefined), stopRequested]);
    const port = typeof address === 'object' && address ? address.port : metricsPort;
    if (first === undefined) console.log(`freesh agent: node ${values.node}, ${values.driver} driver${values['dry-run'] ? ' (dry run)' : ''}, GPUs ${gpus.join(',')}, metrics on http://127.0.0.1:${port}/metrics`);
    // A start that fails after a stop was asked for is reported by the stop below, not left unhandled.
    started.catch(() => undefined);
  } catch (err) {
    unlisten();
    await agent?.stop().catch(() => undefined);
    await closeAll(server, store, driver);
    const message = err instanceof AgentUsageError ? `${err.message} (see \`freesh agent --help\`)` : err instanceof AgentStartError ? err.message : String(err);
    console.error(`freesh agent: ${message}`);
    return err instanceof AgentUsageError ? 2 : 1;
  }

  const { why, code } = await stopRequested;
  unlisten();
  console.log(`freesh agent: ${why}: resetting clocks`);
  try {
    await agent.stop();
    await closeAll(server, store, driver);
    return code;
  } catch (err) {
    console.error(`freesh agent: ${String(err)}`);
    return 1;
  }
}

async function closeAll(server: Server | undefined, store: StateStore | undefined, driver: GpuDriver | undefined): Promise<void> {
  if (server) {
    server.closeAllConnections();
    await new Promise<void>((resolve) => server.close(() => resolve()));
  }
  await store?.close().catch(() => undefined);
  if (driver instanceof ZeusdDriver) await driver.close();
}
