#!/usr/bin/env node
import { parseArgs } from 'node:util';
import { AGENT_USAGE } from './agent/usage.js';
import { ConfigError, type FileConfig } from './config/schema.js';
import type { Logger } from './log/logger.js';
import type { RunningProxy } from './proxy/standalone.js';
// Each command loads only what it runs (below): `freesh plan` and `--help` start in a fraction of the time.

const COMMANDS = {
  serve: `Usage: freesh serve --config FILE [--port N] [--host ADDR]
  Run the proxy for the fleet in FILE (JSON; every field is documented in src/config/schema.ts).
  SIGHUP re-reads FILE (a bad one is refused and the running config kept); SIGTERM drains
  in-flight requests for up to server.drainTimeoutMs, then exits.`,
  demo: `Usage: freesh demo [--port N] [--host ADDR] [--time-scale X] [--redis URL [--replicas N]]
  Run the proxy in front of a simulated 3-site fleet (strict request validation on); with --redis,
  N replicas (ports N, N+1…) sharing state in Redis.`,
  simulate: `Usage: freesh simulate --trace FILE [--config FILE] [--carbon-dir DIR] [--carbon electricitymaps|freesh]
                [--utilisation 0.6] [--policies baseline,least-loaded] [--seed N] [--out DIR]
  Replay a trace (Azure CSV format) through every policy on the fleet in FILE (default: the FREESH
  fleet) and write reports.`,
  key: `Usage: freesh key
  Mint a gateway API key: prints the key (give it to the client; it is stored nowhere) and its
  sha256 (put it in the config's auth.keys[].sha256, or auth.adminKeys for an admin key).`,
  agent: AGENT_USAGE,
  plan: `Usage: freesh plan --fleet FILE --demand FILE --carbon FILE [--margin 1.1] [--step-minutes 5]
                [--window-steps 6] --out FILE
  Plan GPU pools day-ahead: for every window of steps, the instances of each mode to run at each
  site for each request type (formats: README, "Day-ahead pool plans").`,
  help: `Usage: freesh help [COMMAND]
  Print the commands, or one command's options.`,
} as const;

const USAGE = `freesh — energy- and carbon-aware router for OpenAI-compatible LLM backends

Usage:
  freesh serve --config FILE     run the proxy for the fleet in FILE (JSON)
  freesh demo [--port N] [--time-scale X] [--redis URL [--replicas N]]
                                 run the proxy in front of a simulated 3-site fleet; with
                                 --redis, N replicas (ports N, N+1…) sharing state in Redis
  freesh simulate --trace FILE [--config FILE] [--carbon-dir DIR] [--carbon electricitymaps|freesh]
                  [--utilisation 0.6] [--policies baseline,least-loaded] [--seed N] [--out DIR]
                                 replay a trace (Azure CSV format) through every policy on the
                                 fleet in FILE (default: the FREESH fleet) and write reports
  freesh key                     mint a gateway API key and print it with its sha256 for the config
  freesh agent --node ID --gpus 0,1 [--driver nvidia-smi|zeusd|fake] [--dry-run] [--redis URL]
                                 scale this node's GPU clocks with the MIAD controller (see --help)
  freesh plan --fleet FILE --demand FILE --carbon FILE --out FILE [--margin 1.1]
              [--step-minutes 5] [--window-steps 6]
                                 plan GPU pools per site and window, day-ahead
  freesh help [COMMAND]          this text, or a command's options (also: freesh COMMAND --help)`;

async function main(argv: string[]): Promise<number> {
  const [command = 'help', ...rest] = argv;
  if (command === 'help' || command === '--help' || command === '-h') {
    const topic = rest[0] === '--help' || rest[0] === '-h' ? 'help' : rest[0];
    if (topic !== undefined && !(topic in COMMANDS)) throw new UsageError(`unknown command \`${topic}\``);
    console.log(topic === undefined ? USAGE : COMMANDS[topic as keyof typeof COMMANDS]);
    return 0;
  }
  if (!(command in COMMANDS)) throw new UsageError(`unknown command \`${command}\``);
  currentCommand = command;
  // The agent runs on GPU nodes with options of its own (src/agent/command.ts).
  if (command === 'agent') return (await import('./agent/command.js')).runAgentCommand(rest);
  const values = parseOptions(rest);
  if (values.help) {
    console.log(COMMANDS[command as keyof typeof COMMANDS]);
    return 0;
  }

  if (command === 'serve') {
    const path = values.config;
    if (!path) throw new UsageError('serve needs --config FILE');
    const [{ loadConfigFile, startProxy }, { createLogger, logRouterEvents }] = await Promise.all([import('./proxy/standalone.js'), import('./log/logger.js')]);
    const read = async (): Promise<FileConfig> => {
      const config = await loadConfigFile(path);
      if (values.port !== undefined) config.server.port = portOf(values.port);
      if (values.host !== undefined) config.server.host = values.host;
      return config;
    };
    const config = await read();
    const logger = createLogger(config.log);
    logRouterEvents(logger);
    const proxy = await startProxy(config, {}, { logger });
    logger.info({ event: 'listening', url: proxy.url }, `freesh listening on ${proxy.url} (${proxy.router.backends.length} backends, policy ${proxy.router.policy.name})`);
    return untilSignal(proxy, logger, async () => proxy.reload(await read()));
  }

  if (command === 'demo') {
    const timeScale = values['time-scale'] === undefined ? 1 : Number(values['time-scale']);
    if (!(timeScale > 0)) throw new UsageError(`--time-scale must be a positive number, got ${values['time-scale']}`);
    const replicas = values.replicas === undefined ? 1 : Number(values.replicas);
    if (!(Number.isInteger(replicas) && replicas >= 1 && replicas <= 16)) throw new UsageError(`--replicas must be an integer from 1 to 16, got ${values.replicas}`);
    if (replicas > 1 && values.redis === undefined) throw new UsageError('--replicas needs --redis URL: replicas share their state there');
    const port = values.port === undefined ? Number(process.env.PORT ?? 8080) : portOf(values.port);
    const [{ startProxy }, { createLogger, logRouterEvents }, { DEMO_MODEL, startDemoFleet }] = await Promise.all([
      import('./proxy/standalone.js'),
      import('./log/logger.js'),
      import('./sim/demo-fleet.js'),
    ]);
    const fleet = await startDemoFleet({ port, host: values.host ?? '127.0.0.1', timeScale });
    const proxies: RunningProxy[] = [];
    // Read by people: plain lines rather than JSON.
    const logger = createLogger({ level: 'info', format: 'text' });
    logRouterEvents(logger);
    try {
      for (let i = 0; i < replicas; i++) {
        const state = values.redis === undefined ? {} : { redis: { url: values.redis, keyPrefix: 'freesh-demo', replicas }, replicaId: `demo-${i + 1}` };
        // The demo answers as OpenAI would: requests are validated against the OpenAI schema.
        const limits = { ...fleet.config.limits, strictRequests: true };
        proxies.push(await startProxy({ ...fleet.config, limits, server: { ...fleet.config.server, port: port === 0 ? 0 : port + i }, state }, {}, { logger }));
      }
    } catch (err) {
      await Promise.all(proxies.map((p) => p.shutdown(0)));
      await fleet.close();
      throw err;
    }
    const proxy = proxies[0]!;
    console.log(`freesh demo: ${fleet.backends.length} simulated instances at 3 sites (loc1 CAISO, loc2 DE, loc3 FR)`);
    if (replicas > 1) console.log(`${replicas} replicas sharing slots, queues and plans in ${values.redis}: ${proxies.map((p) => p.url).join(' ')}`);
    console.log(`listening on ${proxy.url}  (metrics: ${proxy.url}/metrics)`);
    console.log(`dashboard: ${proxy.url}/dashboard\n`);
    console.log('Try:');
    console.log(
      `  curl -i ${proxy.url}/v1/chat/completions -H 'content-type: application/json' \\\n` +
        `    -d '{"model":"${DEMO_MODEL}","messages":[{"role":"user","content":"Tell me a story"}],"max_tokens":40,"stream":true}'\n`,
    );
    console.log('Ctrl-C stops it.');
    const codes = await Promise.all(proxies.map((p) => untilSignal(p, logger)));
    await fleet.close();
    return Math.max(...codes);
  }

  if (command === 'key') {
    const { key, sha256 } = (await import('./auth/keys.js')).mintKey();
    console.log(`key:    ${key}\nsha256: ${sha256}`);
    return 0;
  }

  if (command === 'simulate') {
    if (!values.trace) throw new UsageError('simulate needs --trace FILE');
    const utilisation = values.utilisation === undefined ? 0.6 : Number(values.utilisation);
    if (!(utilisation > 0 && utilisation < 2)) throw new UsageError(`--utilisation must be a number in (0, 2), got ${values.utilisation}`);
    const carbon = values.carbon ?? 'electricitymaps';
    if (carbon !== 'electricitymaps' && carbon !== 'freesh') throw new UsageError(`--carbon must be electricitymaps or freesh, got ${carbon}`);
    const [{ loadConfigFile }, { fleetFromConfig, runSimulateCommand }] = await Promise.all([import('./proxy/standalone.js'), import('./sim/command.js')]);
    await runSimulateCommand({
      tracePath: values.trace,
      dataDir: values['carbon-dir'],
      carbon,
      fleet: values.config ? fleetFromConfig(await loadConfigFile(values.config)) : undefined,
      utilisation,
      policies: values.policies?.split(',').map((p) => p.trim()).filter(Boolean),
      seed: values.seed === undefined ? 1 : Number(values.seed),
      outDir: values.out ?? '.',
    });
    return 0;
  }

  if (command === 'plan') return planCommand(values);

  throw new UsageError(`unknown command \`${command}\``);
}

async function planCommand(values: ReturnType<typeof parseOptions>): Promise<number> {
  const need = (name: 'fleet' | 'demand' | 'carbon' | 'out'): string => {
    const value = values[name];
    if (!value) throw new UsageError(`plan needs --${name} FILE`);
    return value;
  };
  const number = (name: 'margin' | 'step-minutes' | 'window-steps', fallback: number, valid: (n: number) => boolean, what: string): number => {
    const text = values[name];
    if (text === undefined) return fallback;
    const n = Number(text);
    if (!valid(n)) throw new UsageError(`--${name} must be ${what}, got ${text}`);
    return n;
  };
  const started = performance.now();
  const { DAY_AHEAD_DEFAULTS, runPlanCommand } = await import('./plan/day-ahead.js');
  const plan = await runPlanCommand({
    fleetPath: need('fleet'),
    demandPath: need('demand'),
    carbonPath: need('carbon'),
    outPath: need('out'),
    margin: number('margin', DAY_AHEAD_DEFAULTS.margin, (n) => n >= 1 && n <= 10, 'a number from 1 to 10'),
    stepMinutes: number('step-minutes', DAY_AHEAD_DEFAULTS.stepMinutes, (n) => n > 0 && n <= 1440, 'a positive number of minutes'),
    windowSteps: number('window-steps', DAY_AHEAD_DEFAULTS.windowSteps, (n) => Number.isInteger(n) && n >= 1 && n <= 10_000, 'a positive integer'),
  });
  const infeasible = plan.windows.filter((w) => w.status === 'infeasible').length;
  const grams = plan.windows.reduce((sum, w) => sum + w.gramsCO2, 0);
  console.log(`freesh plan: ${plan.windows.length} window${plan.windows.length === 1 ? '' : 's'} (${infeasible} infeasible), ${grams.toFixed(1)} gCO2 planned, in ${(performance.now() - started).toFixed(0)} ms → ${values.out}`);
  return 0;
}

const OPTIONS = {
  config: { type: 'string', short: 'c' },
  port: { type: 'string', short: 'p' },
  host: { type: 'string' },
  'time-scale': { type: 'string' },
  trace: { type: 'string' },
  'carbon-dir': { type: 'string' },
  carbon: { type: 'string' },
  utilisation: { type: 'string' },
  policies: { type: 'string' },
  seed: { type: 'string' },
  out: { type: 'string' },
  redis: { type: 'string' },
  replicas: { type: 'string' },
  fleet: { type: 'string' },
  demand: { type: 'string' },
  margin: { type: 'string' },
  'step-minutes': { type: 'string' },
  'window-steps': { type: 'string' },
  help: { type: 'boolean', short: 'h' },
} as const;

/** The command's options; an unknown or malformed one is a one-line UsageError, not a stack trace. */
function parseOptions(args: string[]) {
  try {
    return parseArgs({ args, options: OPTIONS, strict: true }).values;
  } catch (err) {
    throw new UsageError((err as Error).message.split('\n')[0]!.replace(/\.$/, ''));
  }
}

/** The command being run, for the hint after a usage error. */
let currentCommand: string | undefined;

/**
 * Runs until SIGINT or SIGTERM, then drains (see `RunningProxy.shutdown`) and resolves 0. SIGHUP
 * calls `reload` when there is one; a config it refuses is one log line, and the running one stays.
 */
function untilSignal(proxy: RunningProxy, logger: Logger, reload?: () => Promise<void>): Promise<number> {
  return new Promise((resolve) => {
    const hup = (): void => {
      if (!reload) return void logger.warn({ event: 'reload' }, 'SIGHUP: nothing to reload (no config file)');
      reload().catch((err: unknown) => {
        const why = err instanceof Error ? err.message.replace(/\s*\n\s*/g, ' ') : String(err);
        logger.error({ event: 'reload-refused' }, `reload refused, the running config stays: ${why}`);
      });
    };
    const stop = (signal: string): void => {
      process.off('SIGINT', stop);
      process.off('SIGTERM', stop);
      process.off('SIGHUP', hup);
      // Still handled while draining: Node's default action for SIGHUP would end the process and cut the drain.
      const ignoreHup = (): void => void logger.warn({ event: 'reload' }, 'SIGHUP while draining: ignored');
      process.on('SIGHUP', ignoreHup);
      logger.info({ event: 'drain', inFlight: proxy.router.inFlight }, `${signal}: draining ${proxy.router.inFlight} in-flight request(s)…`);
      proxy.shutdown().then(
        () => {
          process.off('SIGHUP', ignoreHup);
          logger.info({ event: 'stopped' }, 'stopped');
          resolve(0);
        },
        (err: unknown) => {
          process.off('SIGHUP', ignoreHup);
          logger.error({ event: 'stopped', err }, 'shutdown failed');
          resolve(1);
        },
      );
    };
    process.on('SIGINT', stop);
    process.on('SIGTERM', stop);
    process.on('SIGHUP', hup);
  });
}

function portOf(text: string): number {
  const port = Number(text);
  if (!Number.isInteger(port) || port < 0 || port > 65_535) throw new UsageError(`--port must be an integer 0-65535, got ${text}`);
  return port;
}

class UsageError extends Error {}

main(process.argv.slice(2)).then(
  (code) => process.exit(code),
  (err: unknown) => {
    if (err instanceof ConfigError) console.error(`freesh: ${err.message}`);
    else if (err instanceof UsageError) console.error(`freesh: ${err.message} (see \`freesh ${currentCommand ?? 'help'}${currentCommand ? ' --help' : ''}\`)`);
    else if (err instanceof Error && (err as { code?: string }).code === 'EADDRINUSE') console.error(`freesh: ${err.message} (choose another with --port)`);
    else console.error(err);
    process.exit(2);
  },
);
