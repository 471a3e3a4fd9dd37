/**
 * Proxy overhead: autocannon against (a) the fixed backend directly, (b) a bare pass-through proxy on
 * the same HTTP stack, (c) freesh with its default policy, in one run, rounds interleaved so drift
 * on a shared machine hits all three alike. Prints a table and the ratios; the last line is JSON.
 * On Linux it also reads each server process's CPU time (/proc) around its throughput runs: CPU per
 * request is steadier than throughput on a machine whose cores are shared with the load generator.
 * `--compare DIR[,DIR...]` adds freesh servers of other compiled builds (their `bench/overhead-servers.js`,
 * e.g. a copy of `dist` made before a change) to the same interleaved rounds, so a change is judged
 * against its baseline in one run.
 *
 *   npm run bench:overhead [-- --seconds 8 --connections 16 --rounds 2 --compare /tmp/dist-before]
 */
import { basename, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { interleavedRounds, loadOptions, loadRun, printTable, round, type Run, runMain, type Server, startServer, summarise } from './lib.js';

const { values } = parseArgs({
  options: {
    ...loadOptions({ seconds: 8, rounds: 2 }),
    compare: { type: 'string' },
  },
});
const seconds = Number(values.seconds);
const connections = Number(values.connections);
const rounds = Number(values.rounds);
const serverScript = fileURLToPath(new URL('./overhead-servers.js', import.meta.url));
/** Other builds' server scripts, by the name their rows get (`freesh@` and the folder's name). */
const compared = (values.compare ?? '')
  .split(',')
  .filter((dir) => dir !== '')
  .map((dir) => [`freesh@${basename(resolve(dir))}`, join(resolve(dir), 'bench', 'overhead-servers.js')] as const);

const start = (role: string, upstream?: string, script = serverScript): Promise<Server> => startServer(script, [role, ...(upstream ? [upstream] : [])]);

async function main(): Promise<void> {
  const fixed = await start('fixed');
  const bare = await start('bare', fixed.url);
  const freesh = await start('freesh', fixed.url);
  const others: (readonly [string, Server])[] = [];
  for (const [name, script] of compared) others.push([name, await start('freesh', fixed.url, script)]);
  interface Target {
    readonly name: string;
    readonly url: string;
    /** The process that serves it: the backend itself for `direct`. */
    readonly pid: number | undefined;
    readonly tput: Run[];
    readonly c1: Run[];
  }
  const target = (name: string, server: Server): Target => ({ name, url: server.url, pid: server.child.pid, tput: [], c1: [] });
  const targets = [target('direct', fixed), target('bare', bare), target('freesh', freesh), ...others.map(([name, server]) => target(name, server))];
  try {
    for (const t of targets) await loadRun(t.url, connections, 2); // warm up JIT and pools
    await interleavedRounds(targets, rounds, async (t, r) => {
      t.tput.push(await loadRun(t.url, connections, seconds, t.pid));
      t.c1.push(await loadRun(t.url, 1, Math.max(3, seconds / 2)));
      process.stderr.write(`round ${r + 1}/${rounds} ${t.name}: ${Math.round(t.tput.at(-1)!.rps)} req/s\n`);
    });
  } finally {
    for (const s of [fixed, bare, freesh, ...others.map(([, server]) => server)]) s.child.kill();
  }
  const summaries = targets.map((t) => summarise(t.name, t.tput, t.c1));
  const summary = Object.fromEntries(summaries.map((x) => [x.name, x]));

  console.log(`\nProxy overhead: ${connections} connections × ${seconds}s, ${rounds} interleaved rounds; concurrency-1 runs of ${Math.max(3, seconds / 2)}s`);
  printTable(
    ['target', 'req/s', 'p50 ms', 'p99 ms', 'p50 ms (c=1)', 'p99 ms (c=1)', 'server CPU µs/request', 'errors'],
    summaries.map((s) => [s.name, Math.round(s.rps), s.p50Ms.toFixed(3), s.p99Ms.toFixed(3), s.p50MsC1.toFixed(3), s.p99MsC1.toFixed(3), s.cpuUs.toFixed(1), s.errors]),
  );
  const direct = summary.direct!;
  const bareRun = summary.bare!;
  const freeshRun = summary.freesh!;
  const result = {
    connections,
    seconds,
    rounds,
    directRps: round(direct.rps, 0),
    bareRps: round(bareRun.rps, 0),
    freeshRps: round(freeshRun.rps, 0),
    ratioVsBare: round(freeshRun.rps / bareRun.rps),
    ratioVsDirect: round(freeshRun.rps / direct.rps),
    p50MsC1: { direct: round(direct.p50MsC1), bare: round(bareRun.p50MsC1), freesh: round(freeshRun.p50MsC1) },
    addedP50MsC1: round(freeshRun.p50MsC1 - bareRun.p50MsC1),
    // Proxy CPU per request: the throughput ratio a CPU-bound machine would see, free of the load generator's share.
    cpuUsPerRequest: { bare: round(bareRun.cpuUs, 1), freesh: round(freeshRun.cpuUs, 1) },
    cpuRatioVsBare: round(bareRun.cpuUs / freeshRun.cpuUs),
    errors: summaries.reduce((n, r) => n + r.errors, 0),
    // Other builds' freesh in the same rounds (`--compare`): throughput and CPU per request against the bare proxy's.
    ...(others.length > 0
      ? {
          compared: Object.fromEntries(
            others.map(([name]) => {
              const run = summary[name]!;
              return [name, { rps: round(run.rps, 0), ratioVsBare: round(run.rps / bareRun.rps), cpuUsPerRequest: round(run.cpuUs, 1), cpuTimesBare: round(run.cpuUs / bareRun.cpuUs) }];
            }),
          ),
        }
      : {}),
  };
  const times = (cpuUs: number) => (cpuUs / bareRun.cpuUs).toFixed(2);
  console.log(`\nfreesh / bare throughput: ${result.ratioVsBare} (target ≥ 0.85); added p50 at c=1: ${result.addedP50MsC1} ms (target ≤ 0.3)`);
  console.log(
    `proxy CPU per request: bare ${result.cpuUsPerRequest.bare} µs, freesh ${result.cpuUsPerRequest.freesh} µs: ${times(freeshRun.cpuUs)}× the bare proxy's (target ≤ 1.25; bare / freesh ${result.cpuRatioVsBare})`,
  );
  for (const [name] of others) {
    const run = summary[name]!;
    console.log(`${name}: throughput ${round(run.rps / bareRun.rps)} of the bare proxy's, CPU per request ${run.cpuUs.toFixed(1)} µs (${times(run.cpuUs)}×)`);
  }
  console.log(JSON.stringify(result));
}

runMain(main);
