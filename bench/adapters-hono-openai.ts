/**
 * What the Hono adapter and the openai adapter cost, each against its framework's own way of doing
 * without freesh, in one run with rounds interleaved (drift on a shared machine hits all alike).
 *
 * Hono (autocannon, a small chat completion, each server in its own process, see adapters-ho-servers.ts):
 *   direct        the fixed backend itself
 *   hono-bare     a Hono route passing the request through (undici Pool, as freesh forwards)
 *   hono-proxy    the same route through Hono's `proxy` helper (fetch)
 *   hono-freesh   a Hono app with `freesh(router)` middleware
 *   fetch-freesh  freesh's fetch handler on @hono/node-server, no Hono (the middleware's own share is the gap to hono-freesh)
 * Reported: requests/s, p50/p99, p50 at concurrency 1, the server process's CPU per request (/proc).
 *
 * openai client (requests/s of `client.chat.completions.create` from `--connections` concurrent loops, in this process):
 *   client-direct  the client pointed straight at the backend
 *   client-routed  the client with freesh's routed fetch (the router in this process)
 *   client-proxy   the client through freesh's proxy over HTTP (another process), for reference
 * Reported: requests/s, p50, and this process's CPU per request (client, plus the router when routed).
 *
 *   npm run bench:adapters:ho [-- --seconds 5 --connections 16 --rounds 2 --only hono|openai]
 */
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import OpenAI from 'openai';
import { routedClientOptions } from '../adapters/openai/index.js';
import { createRouter } from '../src/index.js';
import { interleavedRounds, loadOptions, loadRun, oneBackendConfig, percentile, printTable, round, type Run, runMain, type Server, startServer, type Summary, summarise } from './lib.js';

const { values } = parseArgs({
  options: {
    ...loadOptions({ seconds: 5, rounds: 2 }),
    only: { type: 'string' },
  },
});
const seconds = Number(values.seconds);
const connections = Number(values.connections);
const rounds = Number(values.rounds);
const c1Seconds = Math.max(3, seconds / 2);
const overheadServers = fileURLToPath(new URL('./overhead-servers.js', import.meta.url));
const adapterServers = fileURLToPath(new URL('./adapters-ho-servers.js', import.meta.url));

const start = (script: string, role: string, upstream?: string): Promise<Server> => startServer(script, [role, ...(upstream ? [upstream] : [])]);

/** `conns` loops calling the client back to back for `durationS`. CPU: this process's (client, and the router when routed in-process). */
async function loop(client: OpenAI, conns: number, durationS: number): Promise<Run> {
  const latencies: number[] = [];
  let errors = 0;
  const end = performance.now() + durationS * 1000;
  const cpuBefore = process.cpuUsage();
  await Promise.all(
    Array.from({ length: conns }, async () => {
      while (performance.now() < end) {
        const t = performance.now();
        try {
          await client.chat.completions.create({ model: 'fixed', messages: [{ role: 'user', content: 'Say hello in five words.' }], max_tokens: 16 });
          latencies.push(performance.now() - t);
        } catch {
          errors++;
        }
      }
    }),
  );
  const cpu = process.cpuUsage(cpuBefore);
  latencies.sort((a, b) => a - b);
  return {
    rps: latencies.length / durationS,
    p50Ms: percentile(latencies, 0.5),
    p99Ms: percentile(latencies, 0.99),
    errors,
    cpuUsPerRequest: (cpu.user + cpu.system) / Math.max(1, latencies.length),
  };
}

interface Row {
  readonly name: string;
  readonly tput: Run[];
  readonly c1: Run[];
}

/**
 * Full-load and concurrency-1 runs of every row's target, `rounds` interleaved rounds, after a warm-up
 * run each. `measured` is true for the full-load runs alone: the ones whose CPU per request is reported.
 */
async function measureRows<T>(
  kind: string,
  rows: readonly (readonly [Row, T])[],
  measure: (target: T, conns: number, durationS: number, measured: boolean) => Promise<Run>,
): Promise<void> {
  for (const [, target] of rows) await measure(target, connections, 2, false);
  await interleavedRounds(rows, rounds, async ([row, target], r) => {
    row.tput.push(await measure(target, connections, seconds, true));
    row.c1.push(await measure(target, 1, c1Seconds, false));
    process.stderr.write(`${kind} round ${r + 1}/${rounds} ${row.name}: ${Math.round(row.tput.at(-1)!.rps)} req/s\n`);
  });
}

function table(title: string, summaries: Summary[], cpuLabel: string): void {
  console.log(`\n${title}`);
  printTable(
    ['target', 'req/s', 'p50 ms', 'p99 ms', 'p50 ms (c=1)', `${cpuLabel} µs/request`, 'errors'],
    summaries.map((s) => [s.name, Math.round(s.rps), s.p50Ms.toFixed(3), s.p99Ms.toFixed(3), Number.isNaN(s.p50MsC1) ? '' : s.p50MsC1.toFixed(3), s.cpuUs.toFixed(1), s.errors]),
  );
}

async function hono(fixedURL: string): Promise<Record<string, unknown>> {
  const servers = {
    'hono-bare': await start(adapterServers, 'hono-bare', fixedURL),
    'hono-proxy': await start(adapterServers, 'hono-proxy', fixedURL),
    'hono-freesh': await start(adapterServers, 'hono-freesh', fixedURL),
    'fetch-freesh': await start(adapterServers, 'fetch-freesh', fixedURL),
  };
  const targets: { name: string; url: string; pid: number | undefined }[] = [
    { name: 'direct', url: fixedURL, pid: undefined },
    ...Object.entries(servers).map(([name, s]) => ({ name, url: s.url, pid: s.child.pid })),
  ];
  const rows: Row[] = targets.map((t) => ({ name: t.name, tput: [], c1: [] }));
  try {
    await measureRows('hono', targets.map((t, i) => [rows[i]!, t] as const), (t, conns, durationS, measured) => loadRun(t.url, conns, durationS, measured ? t.pid : undefined));
  } finally {
    for (const s of Object.values(servers)) s.child.kill();
  }
  const summaries = rows.map((r) => summarise(r.name, r.tput, r.c1));
  table(`Hono: ${connections} connections × ${seconds}s, ${rounds} interleaved rounds; concurrency-1 runs of ${c1Seconds}s`, summaries, 'server CPU');
  const by = Object.fromEntries(summaries.map((s) => [s.name, s]));
  const bare = by['hono-bare']!;
  const adapter = by['hono-freesh']!;
  const fetchEdge = by['fetch-freesh']!;
  const result = {
    rps: Object.fromEntries(summaries.map((s) => [s.name, round(s.rps, 0)])),
    cpuUsPerRequest: Object.fromEntries(summaries.filter((s) => s.name !== 'direct').map((s) => [s.name, round(s.cpuUs, 1)])),
    ratioVsBare: round(adapter.rps / bare.rps),
    cpuTimesBare: round(adapter.cpuUs / bare.cpuUs),
    addedP50MsC1: round(adapter.p50MsC1 - bare.p50MsC1),
    middlewareCpuUs: round(adapter.cpuUs - fetchEdge.cpuUs, 1),
    ratioVsFetchEdge: round(adapter.rps / fetchEdge.rps),
  };
  console.log(
    `hono-freesh / hono-bare: throughput ${result.ratioVsBare} (target ≥ 0.85), CPU per request ${result.cpuTimesBare}× (target ≤ 1.15); added p50 at c=1 ${result.addedP50MsC1} ms; ` +
      `Hono + middleware over the bare fetch handler: ${result.middlewareCpuUs} µs a request, throughput ${result.ratioVsFetchEdge}`,
  );
  return result;
}

async function openai(fixedURL: string): Promise<Record<string, unknown>> {
  const proxy = await start(overheadServers, 'freesh', fixedURL);
  const router = createRouter(oneBackendConfig(fixedURL));
  const clients: [string, OpenAI][] = [
    ['client-direct', new OpenAI({ baseURL: `${fixedURL}/v1`, apiKey: 'unused' })],
    ['client-routed', new OpenAI(routedClientOptions(router))],
    ['client-proxy', new OpenAI({ baseURL: `${proxy.url}/v1`, apiKey: 'unused' })],
  ];
  const rows: Row[] = clients.map(([name]) => ({ name, tput: [], c1: [] }));
  try {
    await measureRows('openai', clients.map(([, client], i) => [rows[i]!, client] as const), loop);
  } finally {
    proxy.child.kill();
    await router.close();
  }
  const summaries = rows.map((r) => summarise(r.name, r.tput, r.c1));
  table(`openai client: ${connections} concurrent loops × ${seconds}s, ${rounds} interleaved rounds; one loop for c=1 (${c1Seconds}s)`, summaries, 'client process CPU');
  const by = Object.fromEntries(summaries.map((s) => [s.name, s]));
  const direct = by['client-direct']!;
  const routed = by['client-routed']!;
  const viaProxy = by['client-proxy']!;
  const result = {
    rps: Object.fromEntries(summaries.map((s) => [s.name, round(s.rps, 0)])),
    cpuUsPerRequest: Object.fromEntries(summaries.map((s) => [s.name, round(s.cpuUs, 1)])),
    routedVsDirect: round(routed.rps / direct.rps),
    routedVsProxy: round(routed.rps / viaProxy.rps),
    addedP50MsC1: round(routed.p50MsC1 - direct.p50MsC1),
  };
  console.log(`routed / direct: throughput ${result.routedVsDirect} (target ≥ 0.85); routed / through the proxy: ${result.routedVsProxy}; added p50 at c=1 ${result.addedP50MsC1} ms`);
  return result;
}

async function main(): Promise<void> {
  const fixed = await start(overheadServers, 'fixed');
  try {
    const result: Record<string, unknown> = { connections, seconds, rounds };
    if (values.only !== 'openai') result.hono = await hono(fixed.url);
    if (values.only !== 'hono') result.openai = await openai(fixed.url);
    console.log(JSON.stringify(result));
  } finally {
    fixed.child.kill();
  }
}

runMain(main);
