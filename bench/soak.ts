/**
 * `npm run bench:soak [-- --seconds N] [--load X] [--capacity RPS]`: the proxy (a process of its own,
 * bench/soak-server.ts) in front of seven simulated backends with the demo fleet's GPU profiles,
 * offered `--load` × the fleet's capacity (default 2×) by autocannon for `--seconds` (default 180),
 * one third each of the interactive, standard and batch classes. Reports requests served, shed (by
 * status and class), lost (sent but never answered: must be 0), latency, the proxy's memory after a
 * GC before and after the load (must be flat), and one JSON line at the end.
 *
 * Capacity is modelled: each backend's throughput at its admitted batch (`SLOTS`) for this request
 * (a fixed prompt, exactly `MAX_TOKENS` output tokens: the simulated backends emit that many), the
 * simulators slowed (time scale) so the fleet serves `--capacity` requests a second; the served rate
 * measured under overload checks it. Policy least-loaded and no planner, so every instance serves.
 *
 * autocannon's `overallRate` gives each of `rate` connections one request a second, so it offers the
 * full rate only while answers take under a second: hence few slots per backend (short service) and
 * short queues (a short wait before admission, or 504). The offered rate is measured and reported.
 */
import { spawn } from 'node:child_process';
import type { IncomingHttpHeaders } from 'node:http';
import { mkdtemp, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { createInterface } from 'node:readline';
import type autocannon from 'autocannon';
import { BUILTIN_PROFILES, decodeStepMs, prefillMs, throughputRps } from '../src/cost/profiles.js';
import { estimateTokens } from '../src/request/parse.js';
import { startSimBackend } from '../src/sim/backend-server.js';
import { FREESH_FLEET, fleetRouterConfig } from '../src/sim/fleet.js';
import { printTable, round, runMain, sleep } from './lib.js';

const { values } = parseArgs({
  options: {
    seconds: { type: 'string', default: '180' },
    load: { type: 'string', default: '2' },
    capacity: { type: 'string', default: '100' },
  },
});
const SECONDS = Number(values.seconds);
const LOAD = Number(values.load);
const CAPACITY_RPS = Number(values.capacity);
/** Output tokens of every request. */
const MAX_TOKENS = 16;
/** Requests each backend runs at once. */
const SLOTS = 8;
const CLASSES = ['interactive', 'standard', 'batch'] as const;
const CONTENT = 'Write a short poem about the sea.';
/** Requests waiting per backend, and the longest wait: an admitted request is answered within about a second (see above). */
const LIMITS = { maxQueueLength: 8, maxQueueMs: 1_000 };
/** A flat heap: at most this much more after the soak than before it, after a GC each time. */
const FLAT_HEAP_BYTES = 16 * 1024 * 1024;

/** Requests a second the fleet serves at time scale 1 (real time): the sum of each backend's throughput at its admitted batch. */
function capacityAtRealTime(): number {
  const promptTokens = estimateTokens(CONTENT);
  let total = 0;
  for (const b of FREESH_FLEET.backends) {
    const profile = BUILTIN_PROFILES[b.mode]!;
    const batch = Math.min(SLOTS, profile.maxBatch);
    total += throughputRps(batch, decodeStepMs(profile, batch), prefillMs(profile, promptTokens), MAX_TOKENS);
  }
  return total;
}

interface Memory {
  readonly rss: number;
  readonly heapUsed: number;
}

/** The proxy process: its URL, memory after a GC on demand, and the request lines it logged by outcome. */
async function startProxyProcess(configPath: string) {
  const script = fileURLToPath(new URL('./soak-server.js', import.meta.url));
  const child = spawn(process.execPath, ['--expose-gc', script, configPath], { stdio: ['ignore', 'pipe', 'pipe'] });
  const logged = new Map<string, number>();
  const memWaiters: ((m: Memory) => void)[] = [];
  let url: string | undefined;
  const ready = new Promise<string>((resolve, reject) => {
    child.once('exit', (code) => reject(new Error(`the proxy exited (${code}) before it was ready`)));
    createInterface({ input: child.stdout! }).on('line', (line) => {
      if (!url && line.startsWith('ready ')) return resolve((url = line.slice(6)));
      if (!line.includes('"event":"request"')) return;
      const outcome = /"outcome":"([^"]+)"/.exec(line)?.[1] ?? '?';
      logged.set(outcome, (logged.get(outcome) ?? 0) + 1);
    });
  });
  createInterface({ input: child.stderr! }).on('line', (line) => {
    if (line.startsWith('mem ')) memWaiters.shift()?.(JSON.parse(line.slice(4)) as Memory);
    else process.stderr.write(`proxy: ${line}\n`);
  });
  return {
    child,
    url: await ready,
    logged,
    memory: () =>
      new Promise<Memory>((resolve) => {
        memWaiters.push(resolve);
        child.kill('SIGUSR2');
      }),
  };
}

interface ClassTally {
  readonly statuses: Map<number, number>;
  retryAfterMsSum: number;
  retryAfterMsCount: number;
}

async function load(url: string, rate: number, amount: number, connections: number, tallies: Map<string, ClassTally>): Promise<autocannon.Result> {
  const { default: cannon } = await import('autocannon');
  const requests = CLASSES.map((cls) => ({
    method: 'POST' as const,
    path: '/v1/chat/completions',
    headers: { 'content-type': 'application/json', 'x-freesh-slo': cls },
    body: JSON.stringify({ model: FREESH_FLEET.model, messages: [{ role: 'user', content: CONTENT }], max_tokens: MAX_TOKENS }),
    onResponse: (status: number, _body: string, _context: object, headers: IncomingHttpHeaders | undefined) => {
      const tally = tallies.get(cls)!;
      tally.statuses.set(status, (tally.statuses.get(status) ?? 0) + 1);
      const ms = headers?.['retry-after-ms'];
      if (ms !== undefined) {
        tally.retryAfterMsSum += Number(ms);
        tally.retryAfterMsCount++;
      }
    },
  }));
  return new Promise((resolve, reject) => {
    cannon({ url, connections, overallRate: rate, amount, timeout: 60, requests }, (err, result) => (err ? reject(err) : resolve(result)));
  });
}

const mib = (bytes: number) => round(bytes / 1024 / 1024, 1);

async function main(): Promise<void> {
  if (!(SECONDS > 0 && LOAD > 0 && CAPACITY_RPS > 0)) throw new Error('--seconds, --load and --capacity must be positive');
  const timeScale = capacityAtRealTime() / CAPACITY_RPS;
  const backends = await Promise.all(
    FREESH_FLEET.backends.map((b, i) => startSimBackend({ profile: b.mode, models: [FREESH_FLEET.model], timeScale, seed: i + 1, outputLength: 'max-tokens' })),
  );
  const urls = new Map(FREESH_FLEET.backends.map((b, i) => [b.id, backends[i]!.baseURL]));
  const fleet = fleetRouterConfig(FREESH_FLEET, (id) => urls.get(id)!);
  const config = {
    server: { host: '127.0.0.1', port: 0 },
    sites: fleet.sites,
    backends: fleet.backends.map((b) => ({ ...b, maxConcurrency: SLOTS })),
    policy: 'least-loaded',
    plan: { enabled: false },
    limits: LIMITS,
    log: { level: 'info' },
  };
  const dir = await mkdtemp(join(tmpdir(), 'freesh-soak-'));
  const configPath = join(dir, 'config.json');
  await writeFile(configPath, JSON.stringify(config));
  const proxy = await startProxyProcess(configPath);
  try {
    const rate = Math.round(LOAD * CAPACITY_RPS);
    // autocannon opens one connection per request a second of `overallRate`.
    const connections = rate;
    console.log(`soak: ${FREESH_FLEET.backends.length} simulated backends (time scale ${round(timeScale, 2)}), modelled capacity ${CAPACITY_RPS} req/s; offering ${rate} req/s (${LOAD}×) for ${SECONDS} s over ${connections} connections`);

    // Warm-up at capacity, so the start figure is the proxy's steady state rather than its cold start.
    const warmTallies = new Map(CLASSES.map((c) => [c, { statuses: new Map<number, number>(), retryAfterMsSum: 0, retryAfterMsCount: 0 }]));
    await load(proxy.url, CAPACITY_RPS, CAPACITY_RPS * 10, CAPACITY_RPS, warmTallies);
    await sleep(2_000);
    const loggedBefore = [...proxy.logged.values()].reduce((a, b) => a + b, 0);
    const before = await proxy.memory();

    const tallies = new Map(CLASSES.map((c) => [c, { statuses: new Map<number, number>(), retryAfterMsSum: 0, retryAfterMsCount: 0 }]));
    const started = Date.now();
    const result = await load(proxy.url, rate, rate * SECONDS, connections, tallies);
    const elapsedS = (Date.now() - started) / 1000;
    await sleep(3_000);
    const after = await proxy.memory();
    const logged = [...proxy.logged.values()].reduce((a, b) => a + b, 0) - loggedBefore;

    const count = (cls: string | undefined, match: (s: number) => boolean) =>
      [...tallies]
        .filter(([c]) => cls === undefined || c === cls)
        .reduce((n, [, t]) => n + [...t.statuses].filter(([s]) => match(s)).reduce((m, [, k]) => m + k, 0), 0);
    const sent = rate * SECONDS;
    const answered = count(undefined, () => true);
    const served = count(undefined, (s) => s === 200);
    const shed429 = count(undefined, (s) => s === 429);
    const shed503 = count(undefined, (s) => s === 503);
    const timedOut504 = count(undefined, (s) => s === 504);
    const other = answered - served - shed429 - shed503 - timedOut504;
    const lost = sent - answered + result.errors;
    const heapGrowth = after.heapUsed - before.heapUsed;

    console.log(`\n${sent} requests in ${round(elapsedS, 1)} s (offered ${round(sent / elapsedS, 1)} req/s), served ${round(served / elapsedS, 1)} req/s\n`);
    printTable(
      ['class', 'sent', '200 served', '429 shed', '503 full', '504 waited', 'mean retry-after-ms'],
      CLASSES.map((cls) => {
        const t = tallies.get(cls)!;
        return [
          cls,
          count(cls, () => true),
          count(cls, (s) => s === 200),
          count(cls, (s) => s === 429),
          count(cls, (s) => s === 503),
          count(cls, (s) => s === 504),
          t.retryAfterMsCount ? Math.round(t.retryAfterMsSum / t.retryAfterMsCount) : '–',
        ];
      }),
    );
    console.log(
      `\nlost ${lost} (autocannon errors ${result.errors}, timeouts ${result.timeouts}); other statuses ${other}; request lines logged ${logged}` +
        `\nlatency of every answer: p50 ${result.latency.p50} ms, p99 ${result.latency.p99} ms, max ${result.latency.max} ms` +
        `\nproxy memory after GC: before rss ${mib(before.rss)} MiB, heap ${mib(before.heapUsed)} MiB; after rss ${mib(after.rss)} MiB, heap ${mib(after.heapUsed)} MiB (${heapGrowth >= 0 ? '+' : ''}${mib(heapGrowth)} MiB)`,
    );
    const summary = {
      bench: 'soak',
      seconds: SECONDS,
      load: LOAD,
      capacityRps: CAPACITY_RPS,
      offeredRps: round(sent / elapsedS, 1),
      servedRps: round(served / elapsedS, 1),
      sent,
      served,
      shed: { 429: shed429, 503: shed503, 504: timedOut504, other },
      servedByClass: Object.fromEntries(CLASSES.map((c) => [c, count(c, (s) => s === 200)])),
      lost,
      logged,
      latencyMs: { p50: result.latency.p50, p99: result.latency.p99, max: result.latency.max },
      memoryMiB: { rssBefore: mib(before.rss), rssAfter: mib(after.rss), heapBefore: mib(before.heapUsed), heapAfter: mib(after.heapUsed) },
      heapFlat: heapGrowth < FLAT_HEAP_BYTES,
    };
    console.log(JSON.stringify(summary));
    if (lost !== 0 || !summary.heapFlat) process.exitCode = 1;
  } finally {
    proxy.child.kill('SIGTERM');
    await Promise.all(backends.map((b) => b.close()));
  }
}

runMain(main);
