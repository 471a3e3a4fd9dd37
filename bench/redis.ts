/**
 * The Redis cluster-state store under load, in one run:
 *  1. Throughput: autocannon against freesh with the memory store and with the Redis store, one fixed
 *     fast backend whose limit is far above the load (nothing queues), rounds interleaved; req/s,
 *     latency, and CPU per request of the proxies, of Redis and of the load generator.
 *  2. Redis round trips per request on that uncontended path: every command the proxies send, seen
 *     by MONITOR during a run of a fixed number of requests, named by script, less the background
 *     rate measured by MONITOR while idle.
 *  3. 1, 2 and 3 replicas (proxy processes on one Redis, one autocannon per replica, run together;
 *     the total connection count is the same for all), in the same interleaved rounds as 1.
 *  4. Added latency of a queued grant: a backend that holds each request a known time and runs one
 *     at a time (maxConcurrency 1), more clients than that, so every release finds a waiter; at the
 *     backend, from the end of one response to the arrival of the next request (release → store →
 *     forward; with Redis: release script → pub/sub → take script → forward), for the memory store's
 *     in-process queue and the Redis store's shared queue with 1, 2 and 3 replicas.
 * Prints tables; the last line is JSON with every figure.
 *
 * Redis: a private `redis-server` (from PATH) on a free port, no persistence, stopped at the end;
 * `--redis URL` uses another (a fresh key prefix, deleted after the run; its commandstats and MONITOR
 * then include other clients' commands, so prefer a Redis nobody else uses).
 *
 *   npm run bench:redis [-- --seconds 8 --connections 16 --rounds 3 --hold-ms 50 --grant-seconds 15 --redis redis://127.0.0.1:6379]
 */
import { type ChildProcess, execFileSync, spawn } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { createServer } from 'node:net';
import { cpus } from 'node:os';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { Redis } from 'ioredis';
import * as luaScripts from '../src/state/redis-scripts.js';
import { cannon, cpuMs, interleavedRounds, loadOptions, mean, percentile as quantile, printTable, round, runMain, type Server, sleep, startServer } from './lib.js';

const { values } = parseArgs({
  options: {
    ...loadOptions({ seconds: 8, rounds: 3 }),
    redis: { type: 'string' },
    'count-requests': { type: 'string', default: '4000' },
    'idle-seconds': { type: 'string', default: '5' },
    'hold-ms': { type: 'string', default: '50' },
    'grant-seconds': { type: 'string', default: '15' },
    'grant-connections': { type: 'string', default: '6' },
    'grant-rounds': { type: 'string', default: '2' },
  },
});
const seconds = Number(values.seconds);
const connections = Number(values.connections);
const rounds = Number(values.rounds);
const countRequests = Number(values['count-requests']);
const idleSeconds = Number(values['idle-seconds']);
const holdMs = Number(values['hold-ms']);
const grantSeconds = Number(values['grant-seconds']);
const grantConnections = Number(values['grant-connections']);
const grantRounds = Number(values['grant-rounds']);
const C1_SECONDS = 3;
/** Backend limit for the uncontended runs: far above any number of requests in flight. */
const HIGH_LIMIT = 10_000;

const serverScript = fileURLToPath(new URL('./redis-servers.js', import.meta.url));
const children: ChildProcess[] = [];
process.on('exit', () => {
  for (const child of children) if (child.exitCode === null) child.kill();
});

const t0 = performance.now();
/** Store degradations the proxies reported (`FREESH_STORE_DEGRADED` warnings), by server and seconds since the start. */
const degradations: { server: string; atS: number }[] = [];
const phases: { name: string; atS: number }[] = [];
function phase(name: string): void {
  const atS = round((performance.now() - t0) / 1000, 1);
  phases.push({ name, atS });
  process.stderr.write(`-- ${name} (+${atS}s)\n`);
}

/** Starts a server of redis-servers.ts; its stderr lines are prefixed with `name` and the time, and store degradations noted. */
function start(role: string, arg?: string, name = role): Promise<Server> {
  return startServer(serverScript, [role, ...(arg === undefined ? [] : [arg])], {
    name: role,
    onSpawn: (child) => children.push(child),
    stderr: (text) => {
      const atS = (performance.now() - t0) / 1000;
      if (text.includes('FREESH_STORE_DEGRADED')) degradations.push({ server: name, atS: round(atS, 1) });
      for (const line of text.split('\n')) if (line.trim() !== '') process.stderr.write(`[${name} +${atS.toFixed(1)}s] ${line}\n`);
    },
  });
}

async function stop(servers: readonly Server[]): Promise<void> {
  await Promise.all(
    servers.map(
      (s) =>
        new Promise<void>((resolve) => {
          if (s.child.exitCode !== null) return resolve();
          s.child.once('exit', () => resolve());
          s.child.kill('SIGTERM');
        }),
    ),
  );
}

// ---------------------------------------------------------------------------------------------
// Redis: a private server, its CPU, its commandstats, and a MONITOR tally by script name.

async function freePort(): Promise<number> {
  const server = createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as { port: number };
  await new Promise<void>((resolve) => server.close(() => resolve()));
  return port;
}

async function startRedis(): Promise<{ url: string; child: ChildProcess }> {
  const port = await freePort();
  const child = spawn('redis-server', ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no', '--loglevel', 'warning'], {
    stdio: ['ignore', 'ignore', 'inherit'],
  });
  children.push(child);
  const url = `redis://127.0.0.1:${port}`;
  for (let i = 0; i < 100; i++) {
    const probe = new Redis(url, { lazyConnect: true, maxRetriesPerRequest: 0, retryStrategy: () => null });
    probe.on('error', () => undefined);
    try {
      await probe.connect();
      await probe.ping();
      probe.disconnect();
      return { url, child };
    } catch {
      probe.disconnect();
      await sleep(100);
    }
  }
  throw new Error('redis-server did not start');
}

/** User + system CPU time of Redis so far (ms), from INFO: works for a Redis this run did not start too. */
async function redisCpuMs(admin: Redis): Promise<number> {
  const info = await admin.info('cpu');
  const field = (name: string) => Number(new RegExp(`^${name}:([0-9.]+)`, 'm').exec(info)?.[1] ?? Number.NaN);
  return (field('used_cpu_user') + field('used_cpu_sys')) * 1000;
}

/** Calls per command so far (`INFO commandstats`), commands run inside scripts included. */
async function commandCalls(admin: Redis): Promise<Map<string, { calls: number; usec: number }>> {
  const info = await admin.info('commandstats');
  const calls = new Map<string, { calls: number; usec: number }>();
  for (const m of info.matchAll(/^cmdstat_([^:]+):calls=(\d+),usec=(\d+)/gm)) calls.set(m[1]!, { calls: Number(m[2]), usec: Number(m[3]) });
  return calls;
}

/** Script calls (EVALSHA and EVAL: only clients send them) and Redis's time in them (µs) between two commandstats readings. */
function scriptCalls(before: Map<string, { calls: number; usec: number }>, after: Map<string, { calls: number; usec: number }>): { calls: number; usec: number } {
  let calls = 0;
  let usec = 0;
  for (const name of ['evalsha', 'eval', 'evalsha_ro', 'eval_ro']) {
    calls += (after.get(name)?.calls ?? 0) - (before.get(name)?.calls ?? 0);
    usec += (after.get(name)?.usec ?? 0) - (before.get(name)?.usec ?? 0);
  }
  return { calls, usec };
}

/** The store's scripts by SHA1 (what EVALSHA names them by), named as ./src/state/redis-scripts.ts exports them. */
const SCRIPT_NAMES = new Map<string, string>(
  Object.entries(luaScripts as Record<string, unknown>)
    .filter((entry): entry is [string, string] => typeof entry[1] === 'string')
    .map(([name, lua]) => [createHash('sha1').update(lua).digest('hex'), name] as const),
);

/** Scripts a request runs on its own path; anything else the proxies send is background (refresh, renewals, planner, pub/sub). */
const PER_REQUEST = new Set(['TRY_ACQUIRE', 'ACQUIRE_OR_QUEUE', 'RELEASE_AND_GRANT', 'TAKE_GRANTS', 'WITHDRAW', 'RENEW']);

/**
 * Counts the commands clients other than this bench's own send, by name (`evalsha:SCRIPT` for
 * scripts), while `during` runs. Commands run by scripts (source `lua`) are not round trips and are
 * left out.
 */
async function tally<T>(admin: Redis, prefixes: readonly string[] | undefined, during: () => Promise<T>): Promise<{ result: T; counts: Map<string, number> }> {
  const monitor = await admin.monitor();
  const own = new Set<string>();
  for (const client of [admin, monitor]) {
    // The bench's own connections (INFO, MONITOR) are not the proxies'.
    const addr = /addr=(\S+)/.exec(String(await client.call('CLIENT', 'INFO').catch(() => '')))?.[1];
    if (addr) own.add(addr);
  }
  const counts = new Map<string, number>();
  monitor.on('monitor', (_time: string, args: string[], source: string) => {
    if (source === 'lua' || own.has(source)) return;
    const command = String(args[0]).toLowerCase();
    // On a shared Redis (\`prefixes\` given), only commands on this run's keys count, and those naming no key at all.
    if (prefixes && args.length > 1 && !args.some((a) => prefixes.some((p) => String(a).includes(p)))) return;
    let name = command;
    if (command === 'evalsha') name = `evalsha:${SCRIPT_NAMES.get(String(args[1])) ?? String(args[1]).slice(0, 8)}`;
    else if (command === 'eval') name = `eval:${SCRIPT_NAMES.get(createHash('sha1').update(String(args[1])).digest('hex')) ?? '?'}`;
    counts.set(name, (counts.get(name) ?? 0) + 1);
  });
  try {
    const result = await during();
    // MONITOR lines of the last commands may still be on their way.
    await sleep(200);
    return { result, counts };
  } finally {
    monitor.disconnect();
  }
}

async function deleteKeys(admin: Redis, pattern: string): Promise<number> {
  let cursor = '0';
  let deleted = 0;
  do {
    const [next, keys] = await admin.scan(cursor, 'MATCH', pattern, 'COUNT', 1000);
    cursor = next;
    if (keys.length > 0) deleted += await admin.del(...keys);
  } while (cursor !== '0');
  return deleted;
}

// ---------------------------------------------------------------------------------------------
// Load and CPU.

const selfCpuMs = () => {
  const { user, system } = process.cpuUsage();
  return (user + system) / 1000;
};

/** `total` connections over `n` targets, as evenly as whole numbers go. */
function split(total: number, n: number): number[] {
  return Array.from({ length: n }, (_, i) => Math.floor(total / n) + (i < total % n ? 1 : 0));
}

interface Run {
  rps: number;
  requests: number;
  errors: number;
  p50Ms: number;
  p99Ms: number;
  /** CPU per request (µs): the proxies together, Redis, and this process (the load generator). */
  proxyCpuUs: number;
  redisCpuUs: number;
  loadCpuUs: number;
  /** EVALSHA/EVAL calls per request (commandstats; background ones included). */
  scriptsPerRequest: number;
  /** Redis's own time per script call (µs, commandstats). */
  usPerScript: number;
}

/** All targets loaded together for `durationS`, the connections split among them. */
async function loadTogether(admin: Redis | undefined, targets: readonly Server[], conns: number, durationS: number): Promise<Run> {
  const pids = targets.map((t) => t.child.pid);
  const cpuBefore = pids.map(cpuMs);
  const redisBefore = admin ? await redisCpuMs(admin) : Number.NaN;
  const statsBefore = admin ? await commandCalls(admin) : new Map<string, { calls: number; usec: number }>();
  const selfBefore = selfCpuMs();
  const loads = await Promise.all(targets.map((t, i) => cannon(t.url, split(conns, targets.length)[i]!, { duration: durationS })));
  const selfCpu = selfCpuMs() - selfBefore;
  const redisCpu = admin ? (await redisCpuMs(admin)) - redisBefore : Number.NaN;
  const statsAfter = admin ? await commandCalls(admin) : new Map<string, { calls: number; usec: number }>();
  const scripts = scriptCalls(statsBefore, statsAfter);
  const proxyCpu = pids.reduce<number>((sum, pid, i) => sum + cpuMs(pid) - cpuBefore[i]!, 0);
  const requests = loads.reduce((n, l) => n + l.requests, 0);
  const latencies = loads.flatMap((l) => l.latencies).sort((a, b) => a - b);
  const per = (ms: number) => (ms * 1000) / Math.max(1, requests);
  return {
    rps: requests / durationS,
    requests,
    errors: loads.reduce((n, l) => n + l.errors, 0),
    p50Ms: quantile(latencies, 0.5),
    p99Ms: quantile(latencies, 0.99),
    proxyCpuUs: per(proxyCpu),
    redisCpuUs: admin ? per(redisCpu) : Number.NaN,
    loadCpuUs: per(selfCpu),
    scriptsPerRequest: admin ? scripts.calls / Math.max(1, requests) : Number.NaN,
    usPerScript: scripts.calls > 0 ? scripts.usec / scripts.calls : Number.NaN,
  };
}

// ---------------------------------------------------------------------------------------------
// Proxy configs.

function proxyConfig(backendURL: string, limit: number, redis?: { url: string; keyPrefix: string; replicaId: string; replicas: number }): string {
  return JSON.stringify({
    server: { port: 0 },
    sites: [{ id: 'local' }],
    backends: [{ id: 'b', site: 'local', baseURL: `${backendURL}/v1`, models: ['fixed'], maxConcurrency: limit }],
    ...(redis ? { state: { redis: { url: redis.url, keyPrefix: redis.keyPrefix, replicas: redis.replicas }, replicaId: redis.replicaId } } : {}),
  });
}

// ---------------------------------------------------------------------------------------------

/** Gaps at the backend from each response's end to the next request's arrival (ms): the grant's added latency. */
function grantGaps(arrivals: readonly number[], ends: readonly number[]): number[] {
  const gaps: number[] = [];
  let a = 0;
  for (let e = 0; e < ends.length; e++) {
    while (a < arrivals.length && arrivals[a]! < ends[e]!) a++;
    if (a >= arrivals.length) break;
    // A gap only where the next arrival came before the next end: with one request at a time, always.
    if (e + 1 < ends.length && arrivals[a]! > ends[e + 1]!) continue;
    gaps.push(arrivals[a]! - ends[e]!);
  }
  return gaps;
}

async function main(): Promise<void> {
  const started = new Date();
  const commit = (() => {
    try {
      return execFileSync('git', ['rev-parse', '--short', 'HEAD'], { encoding: 'utf8' }).trim();
    } catch {
      return 'unknown';
    }
  })();
  const privateRedis = values.redis ? undefined : await startRedis();
  const redisURL = values.redis ?? privateRedis!.url;
  const admin = new Redis(redisURL, { maxRetriesPerRequest: 1 });
  const redisVersion = /^redis_version:(\S+)/m.exec(await admin.info('server'))?.[1] ?? '?';
  const prefix = `freesh-bench-${randomBytes(4).toString('hex')}`;
  const tputPrefix = `${prefix}-t`;
  const grantPrefix = `${prefix}-g`;
  process.stderr.write(`Redis ${redisVersion} at ${redisURL}${privateRedis ? ' (private)' : ''}; key prefix ${prefix}\n`);

  try {
    // ---- 1–3: throughput, replicas, round trips ----
    phase('throughput: starting servers');
    const fixed = await start('fixed');
    const memory = await start('proxy', proxyConfig(fixed.url, HIGH_LIMIT), 'memory');
    const replicas = await Promise.all(
      [1, 2, 3].map((i) => start('proxy', proxyConfig(fixed.url, HIGH_LIMIT, { url: redisURL, keyPrefix: tputPrefix, replicaId: `r${i}`, replicas: 3 }), `r${i}`)),
    );
    const configs = [
      { name: 'memory ×1', store: 'memory', n: 1, targets: [memory] },
      { name: 'redis ×1', store: 'redis', n: 1, targets: replicas.slice(0, 1) },
      { name: 'redis ×2', store: 'redis', n: 2, targets: replicas.slice(0, 2) },
      { name: 'redis ×3', store: 'redis', n: 3, targets: replicas },
    ].map((c) => ({ ...c, runs: [] as Run[], c1: [] as Run[] }));
    for (const c of configs) await loadTogether(undefined, c.targets, connections, 2); // warm up JIT, pools, scripts
    phase('throughput: measuring');
    // Forward in even rounds, backward in odd ones: drift over a round hits every config alike.
    await interleavedRounds(
      configs,
      rounds,
      async (c, r) => {
        c.runs.push(await loadTogether(admin, c.targets, connections, seconds));
        if (c.n === 1) c.c1.push(await loadTogether(admin, c.targets, 1, C1_SECONDS));
        process.stderr.write(`round ${r + 1}/${rounds} ${c.name}: ${Math.round(c.runs.at(-1)!.rps)} req/s\n`);
      },
      { alternate: true },
    );

    // Round trips: MONITOR while idle (background only), then during a fixed number of requests to one replica.
    process.stderr.write(`round trips: ${idleSeconds}s idle, then ${countRequests} requests to one replica, under MONITOR\n`);
    const onlyOurs = privateRedis ? undefined : [tputPrefix];
    const idle = await tally(admin, onlyOurs, () => sleep(idleSeconds * 1000));
    const counted = await tally(admin, onlyOurs, async () => {
      const t0 = performance.now();
      const load = await cannon(replicas[0]!.url, connections, { amount: countRequests });
      return { load, wallS: (performance.now() - t0) / 1000 };
    });
    await stop([fixed, memory, ...replicas]);

    // ---- 4: queued grants ----
    phase('grants: starting servers');
    const hold = await start('hold', String(holdMs));
    const memoryG = await start('proxy', proxyConfig(hold.url, 1), 'memory-g');
    const grantReplicas = await Promise.all(
      [1, 2, 3].map((i) => start('proxy', proxyConfig(hold.url, 1, { url: redisURL, keyPrefix: grantPrefix, replicaId: `g${i}`, replicas: 3 }), `g${i}`)),
    );
    const grantConfigs = [
      { name: 'memory ×1', targets: [memoryG] },
      { name: 'redis ×1', targets: grantReplicas.slice(0, 1) },
      { name: 'redis ×2', targets: grantReplicas.slice(0, 2) },
      { name: 'redis ×3', targets: grantReplicas },
    ].map((c) => ({ ...c, gaps: [] as number[], served: 0, errors: 0, maxInFlight: 0, latencies: [] as number[], seconds: 0 }));
    const events = async () => (await (await fetch(`${hold.url}/bench/events`)).json()) as { arrivals: number[]; ends: number[]; maxInFlight: number };
    for (const c of grantConfigs) await Promise.all(c.targets.map((t, i) => cannon(t.url, split(grantConnections, c.targets.length)[i]!, { duration: 2 })));
    phase('grants: measuring');
    await interleavedRounds(
      grantConfigs,
      grantRounds,
      async (c, r) => {
        const loads = Promise.all(c.targets.map((t, i) => cannon(t.url, split(grantConnections, c.targets.length)[i]!, { duration: grantSeconds })));
        // Steady state only: from once every client waits, to before the clients stop.
        await sleep(1500);
        await events();
        const t0 = performance.now();
        await sleep((grantSeconds - 2.5) * 1000);
        const window = await events();
        c.seconds += (performance.now() - t0) / 1000;
        const done = await loads;
        const gaps = grantGaps(window.arrivals, window.ends);
        c.gaps.push(...gaps);
        c.served += window.ends.length;
        c.maxInFlight = Math.max(c.maxInFlight, window.maxInFlight);
        c.errors += done.reduce((n, l) => n + l.errors, 0);
        c.latencies.push(...done.flatMap((l) => l.latencies));
        process.stderr.write(`grants round ${r + 1}/${grantRounds} ${c.name}: ${gaps.length} grants, p50 ${quantile([...gaps].sort((a, b) => a - b), 0.5).toFixed(3)} ms\n`);
      },
      { alternate: true },
    );
    await stop([hold, memoryG, ...grantReplicas]);

    // ---- Report ----
    phase('done');
    console.log(
      degradations.length === 0
        ? '\nNo proxy reported the Redis store degraded.'
        : `\nProxies reported the Redis store degraded (a command unanswered within 500 ms) ${degradations.length} times: ${degradations.map((d) => `${d.server} at +${d.atS}s`).join(', ')} (phases: ${phases.map((p) => `${p.name} +${p.atS}s`).join(', ')})`,
    );
    const summaries = configs.map((c) => ({
      name: c.name,
      n: c.n,
      rps: mean(c.runs.map((x) => x.rps)),
      rpsPerRound: c.runs.map((x) => Math.round(x.rps)),
      p50Ms: mean(c.runs.map((x) => x.p50Ms)),
      p99Ms: mean(c.runs.map((x) => x.p99Ms)),
      proxyCpuUs: mean(c.runs.map((x) => x.proxyCpuUs)),
      redisCpuUs: mean(c.runs.map((x) => x.redisCpuUs)),
      loadCpuUs: mean(c.runs.map((x) => x.loadCpuUs)),
      scriptsPerRequest: mean(c.runs.map((x) => x.scriptsPerRequest)),
      usPerScript: mean(c.runs.map((x) => x.usPerScript)),
      errors: c.runs.reduce((n, x) => n + x.errors, 0) + c.c1.reduce((n, x) => n + x.errors, 0),
      p50MsC1: c.c1.length ? mean(c.c1.map((x) => x.p50Ms)) : Number.NaN,
      p99MsC1: c.c1.length ? mean(c.c1.map((x) => x.p99Ms)) : Number.NaN,
    }));
    const [mem, r1, r2, r3] = summaries as [(typeof summaries)[0], (typeof summaries)[0], (typeof summaries)[0], (typeof summaries)[0]];

    console.log(`\nThroughput, uncontended (backend limit ${HIGH_LIMIT}): ${connections} connections in all × ${seconds}s, ${rounds} interleaved rounds; c=1 runs of ${C1_SECONDS}s`);
    const f = (x: number, d = 1) => (Number.isFinite(x) ? x.toFixed(d) : '–');
    printTable(
      [
        'store × replicas',
        'req/s',
        { title: 'req/s per round', align: 'left' },
        'p50 ms',
        'p99 ms',
        'p50 ms (c=1)',
        'p99 ms (c=1)',
        'proxy CPU µs/req',
        'Redis CPU µs/req',
        'load generator CPU µs/req',
        'scripts/req (commandstats)',
        'Redis µs/script',
        'errors',
      ],
      summaries.map((s) => [
        s.name,
        Math.round(s.rps),
        s.rpsPerRound.join(', '),
        f(s.p50Ms, 3),
        f(s.p99Ms, 3),
        f(s.p50MsC1, 3),
        f(s.p99MsC1, 3),
        f(s.proxyCpuUs),
        f(s.redisCpuUs),
        f(s.loadCpuUs),
        f(s.scriptsPerRequest, 3),
        f(s.usPerScript),
        s.errors,
      ]),
    );

    // Round trips.
    const served = counted.result.load.requests;
    const wallS = counted.result.wallS;
    const names = [...new Set([...idle.counts.keys(), ...counted.counts.keys()])].sort();
    const rows = names.map((name) => {
      const during = counted.counts.get(name) ?? 0;
      const idlePerS = (idle.counts.get(name) ?? 0) / idleSeconds;
      const script = name.includes(':') ? name.slice(name.indexOf(':') + 1) : '';
      const perRequest = PER_REQUEST.has(script);
      // Background: what idle replicas send anyway, over the counted run's wall time.
      const perReq = perRequest ? during / served : Math.max(0, during - idlePerS * wallS) / served;
      return { name, during, idlePerS, perRequest, perReq };
    });
    const perRequestTotal = rows.filter((x) => x.perRequest).reduce((n, x) => n + x.during, 0) / served;
    const allTotal = rows.reduce((n, x) => n + x.during, 0) / served;
    console.log(
      `\nRedis round trips (MONITOR; proxies' commands only, none run inside scripts): ${served} requests to one replica, 16 connections, ${wallS.toFixed(2)} s; idle window ${idleSeconds} s, three replicas up`,
    );
    printTable(
      ['command', { title: 'kind', align: 'left' }, 'calls in the run', 'per request', 'idle calls/s (3 replicas)'],
      rows.map((x) => [
        x.name,
        x.perRequest ? 'per request' : 'background',
        x.during,
        x.during / served < 0.0005 ? (x.during / served).toExponential(1) : (x.during / served).toFixed(3),
        x.idlePerS.toFixed(1),
      ]),
    );
    console.log(`per-request round trips: ${perRequestTotal.toFixed(3)} (target ≤ 2); all commands during the run per request: ${allTotal.toFixed(3)}; load errors ${counted.result.load.errors}`);

    console.log(`\nReplicas on one Redis (same ${connections} connections in all, split evenly, one autocannon per replica in this process):`);
    printTable(
      [{ title: 'replicas', align: 'right' }, 'req/s', '× one replica', 'proxy CPU µs/req (all)', 'Redis CPU µs/req', 'load generator CPU µs/req'],
      [r1, r2, r3].map((s) => [s.n, Math.round(s.rps), (s.rps / r1.rps).toFixed(3), f(s.proxyCpuUs), f(s.redisCpuUs), f(s.loadCpuUs)]),
    );

    const grantRows = grantConfigs.map((c) => {
      const gaps = [...c.gaps].sort((a, b) => a - b);
      const lat = [...c.latencies].sort((a, b) => a - b);
      return {
        name: c.name,
        grants: gaps.length,
        p50Ms: quantile(gaps, 0.5),
        p90Ms: quantile(gaps, 0.9),
        p99Ms: quantile(gaps, 0.99),
        maxMs: gaps.at(-1) ?? Number.NaN,
        over100Ms: gaps.filter((g) => g > 100).length,
        grantsPerS: c.served / c.seconds,
        maxInFlight: c.maxInFlight,
        responseP50Ms: quantile(lat, 0.5),
        errors: c.errors,
      };
    });
    console.log(
      `\nQueued grants: one backend, maxConcurrency 1, each request held ${holdMs} ms; ${grantConnections} clients in all; ${grantRounds} interleaved rounds of ${grantSeconds} s, ` +
        `steady-state window measured at the backend (response end → next request's arrival)`,
    );
    printTable(
      ['store × replicas', 'grants', 'p50 ms', 'p90 ms', 'p99 ms', 'max ms', '> 100 ms', 'grants/s', 'max in flight at backend', 'client p50 ms', 'errors'],
      grantRows.map((g) => [g.name, g.grants, f(g.p50Ms, 3), f(g.p90Ms, 3), f(g.p99Ms, 3), f(g.maxMs, 3), g.over100Ms, f(g.grantsPerS), g.maxInFlight, f(g.responseP50Ms, 1), g.errors]),
    );

    const ratio = r1.rps / mem.rps;
    console.log(
      `\nRedis / memory throughput (1 replica): ${ratio.toFixed(3)} (target ≥ 0.7: ${ratio >= 0.7 ? 'met' : 'missed'}); proxy CPU per request ${f(mem.proxyCpuUs)} → ${f(r1.proxyCpuUs)} µs (${(r1.proxyCpuUs / mem.proxyCpuUs).toFixed(2)}×), plus Redis ${f(r1.redisCpuUs)} µs`,
    );
    console.log(
      `CPU per request, memory ÷ Redis: proxy alone ${(mem.proxyCpuUs / r1.proxyCpuUs).toFixed(3)}, proxy + Redis ${(mem.proxyCpuUs / (r1.proxyCpuUs + r1.redisCpuUs)).toFixed(3)} (the throughput ratio a CPU-bound machine would see)`,
    );
    console.log(`per-request round trips ${perRequestTotal.toFixed(3)} (target ≤ 2: ${perRequestTotal <= 2 ? 'met' : 'missed'})`);
    const [gm, g1, , g3] = grantRows as [(typeof grantRows)[0], (typeof grantRows)[0], (typeof grantRows)[0], (typeof grantRows)[0]];
    console.log(`queued grant p99: memory ${f(gm.p99Ms, 3)} ms, Redis ×1 ${f(g1.p99Ms, 3)} ms, Redis ×3 ${f(g3.p99Ms, 3)} ms (Redis adds ${f(g1.p99Ms - gm.p99Ms, 3)} ms at p99, ${f(g1.p50Ms - gm.p50Ms, 3)} at p50)`);

    const result = {
      date: started.toISOString(),
      commit,
      machine: { cpus: cpus().length, model: cpus()[0]?.model ?? '?', node: process.version },
      redis: { version: redisVersion, private: privateRedis !== undefined },
      options: { seconds, connections, rounds, countRequests, idleSeconds, holdMs, grantSeconds, grantConnections, grantRounds },
      throughput: Object.fromEntries(
        summaries.map((s) => [
          s.name.replace(/ ×/, 'x'),
          {
            rps: round(s.rps, 0),
            p50Ms: round(s.p50Ms),
            p99Ms: round(s.p99Ms),
            p50MsC1: Number.isFinite(s.p50MsC1) ? round(s.p50MsC1) : undefined,
            proxyCpuUs: round(s.proxyCpuUs, 1),
            redisCpuUs: Number.isFinite(s.redisCpuUs) ? round(s.redisCpuUs, 1) : undefined,
            loadCpuUs: round(s.loadCpuUs, 1),
            scriptsPerRequest: Number.isFinite(s.scriptsPerRequest) ? round(s.scriptsPerRequest) : undefined,
            usPerScript: Number.isFinite(s.usPerScript) ? round(s.usPerScript, 1) : undefined,
            errors: s.errors,
          },
        ]),
      ),
      redisOverMemory: round(ratio),
      proxyCpuRedisOverMemory: round(r1.proxyCpuUs / mem.proxyCpuUs),
      cpuRatio: { proxy: round(mem.proxyCpuUs / r1.proxyCpuUs), proxyAndRedis: round(mem.proxyCpuUs / (r1.proxyCpuUs + r1.redisCpuUs)) },
      addedP50MsC1: round(r1.p50MsC1 - mem.p50MsC1),
      roundTrips: {
        requests: served,
        perRequest: round(perRequestTotal),
        allCommandsPerRequest: round(allTotal),
        byCommand: Object.fromEntries(rows.map((x) => [x.name, { perRequest: round(x.during / served, 4), idlePerS: round(x.idlePerS, 2), kind: x.perRequest ? 'request' : 'background' }])),
      },
      replicas: [r1, r2, r3].map((s) => ({ n: s.n, rps: round(s.rps, 0), vsOne: round(s.rps / r1.rps), proxyCpuUs: round(s.proxyCpuUs, 1), redisCpuUs: round(s.redisCpuUs, 1) })),
      grant: Object.fromEntries(
        grantRows.map((g) => [
          g.name.replace(/ ×/, 'x'),
          { grants: g.grants, p50Ms: round(g.p50Ms), p90Ms: round(g.p90Ms), p99Ms: round(g.p99Ms), maxMs: round(g.maxMs), over100Ms: g.over100Ms, maxInFlight: g.maxInFlight, errors: g.errors },
        ]),
      ),
      degradations,
      phases,
      targets: { throughputRatio: ratio >= 0.7, roundTrips: perRequestTotal <= 2 },
    };
    console.log(JSON.stringify(result));
  } finally {
    const deleted = await deleteKeys(admin, `{${prefix}-*`).catch(() => 0);
    process.stderr.write(`deleted ${deleted} keys of ${prefix}\n`);
    admin.disconnect();
    if (privateRedis) privateRedis.child.kill();
  }
}

runMain(main);
