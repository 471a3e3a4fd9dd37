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
import { type ChildProcess, execFileSync, spawn } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { basename, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import autocannon from 'autocannon';

const { values } = parseArgs({
  options: {
    seconds: { type: 'string', default: '8' },
    connections: { type: 'string', default: '16' },
    rounds: { type: 'string', default: '2' },
    compare: { type: 'string' },
  },
});
const seconds = Number(values.seconds);
const connections = Number(values.connections);
const rounds = Number(values.rounds);
const BODY = JSON.stringify({ model: 'fixed', messages: [{ role: 'user', content: 'Say hello in five words.' }], max_tokens: 16 });
const serverScript = fileURLToPath(new URL('./overhead-servers.js', import.meta.url));
/** Other builds' server scripts, by the name their rows get (`freesh@` and the folder's name). */
const compared = (values.compare ?? '')
  .split(',')
  .filter((dir) => dir !== '')
  .map((dir) => [`freesh@${basename(resolve(dir))}`, join(resolve(dir), 'bench', 'overhead-servers.js')] as const);

async function start(role: string, upstream?: string, script = serverScript): Promise<{ url: string; child: ChildProcess }> {
  const child = spawn(process.execPath, [script, role, ...(upstream ? [upstream] : [])], { stdio: ['ignore', 'pipe', 'inherit'] });
  let out = '';
  for await (const chunk of child.stdout!) {
    out += String(chunk);
    const m = /ready (\S+)/.exec(out);
    if (m) return { url: m[1]!, child };
  }
  throw new Error(`${role} server exited before it was ready`);
}

interface Run {
  rps: number;
  p50Ms: number;
  p99Ms: number;
  errors: number;
  /** CPU time of the server process per request (µs), where /proc can tell. */
  cpuUsPerRequest: number;
}

/** Clock ticks per second of /proc's CPU times, or undefined off Linux. */
const CLK_TCK = (() => {
  try {
    return Number(execFileSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }).trim()) || undefined;
  } catch {
    return undefined;
  }
})();

/** User + system CPU time of a process so far (ms), from /proc/PID/stat; NaN where unavailable. */
function cpuMs(pid: number | undefined): number {
  if (!CLK_TCK || pid === undefined) return Number.NaN;
  try {
    // Fields after the command name (which may contain spaces) start at the closing parenthesis.
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    return ((Number(fields[11]) + Number(fields[12])) * 1000) / CLK_TCK;
  } catch {
    return Number.NaN;
  }
}

async function load(url: string, conns: number, durationS: number, pid?: number): Promise<Run> {
  const latencies: number[] = [];
  const cpuBefore = cpuMs(pid);
  const result = await new Promise<autocannon.Result>((resolve, reject) => {
    const instance = autocannon(
      {
        url: `${url}/v1/chat/completions`,
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: BODY,
        connections: conns,
        duration: durationS,
      },
      (err, res) => (err ? reject(err) : resolve(res)),
    );
    // autocannon's own histogram has 1 ms resolution; keep the exact response times for percentiles.
    instance.on('response', (_client: unknown, status: number, _bytes: number, responseTimeMs: number) => {
      if (status === 200) latencies.push(responseTimeMs);
    });
  });
  latencies.sort((a, b) => a - b);
  const at = (q: number) => latencies[Math.min(latencies.length - 1, Math.floor(q * latencies.length))] ?? Number.NaN;
  const cpuUsPerRequest = ((cpuMs(pid) - cpuBefore) * 1000) / Math.max(1, result.requests.total);
  return { rps: result.requests.total / durationS, p50Ms: at(0.5), p99Ms: at(0.99), errors: result.errors + result.non2xx, cpuUsPerRequest };
}

const mean = (xs: number[]) => xs.reduce((a, b) => a + b, 0) / xs.length;
const round = (x: number, d = 3) => Number(x.toFixed(d));

async function main(): Promise<void> {
  const fixed = await start('fixed');
  const bare = await start('bare', fixed.url);
  const freesh = await start('freesh', fixed.url);
  const others: (readonly [string, { url: string; child: ChildProcess }])[] = [];
  for (const [name, script] of compared) others.push([name, await start('freesh', fixed.url, script)]);
  interface Target {
    readonly name: string;
    readonly url: string;
    /** The process that serves it: the backend itself for `direct`. */
    readonly pid: number | undefined;
    readonly tput: Run[];
    readonly c1: Run[];
  }
  const target = (name: string, server: { url: string; child: ChildProcess }): Target => ({ name, url: server.url, pid: server.child.pid, tput: [], c1: [] });
  const targets = [target('direct', fixed), target('bare', bare), target('freesh', freesh), ...others.map(([name, server]) => target(name, server))];
  try {
    for (const t of targets) await load(t.url, connections, 2); // warm up JIT and pools
    for (let r = 0; r < rounds; r++) {
      for (const t of targets) {
        t.tput.push(await load(t.url, connections, seconds, t.pid));
        t.c1.push(await load(t.url, 1, Math.max(3, seconds / 2)));
        process.stderr.write(`round ${r + 1}/${rounds} ${t.name}: ${Math.round(t.tput.at(-1)!.rps)} req/s\n`);
      }
    }
  } finally {
    for (const s of [fixed, bare, freesh, ...others.map(([, server]) => server)]) s.child.kill();
  }
  const summaries = targets.map((t) => ({
    name: t.name,
    rps: mean(t.tput.map((r) => r.rps)),
    p50Ms: mean(t.tput.map((r) => r.p50Ms)),
    p99Ms: mean(t.tput.map((r) => r.p99Ms)),
    p50MsC1: mean(t.c1.map((r) => r.p50Ms)),
    p99MsC1: mean(t.c1.map((r) => r.p99Ms)),
    errors: t.tput.reduce((n, r) => n + r.errors, 0) + t.c1.reduce((n, r) => n + r.errors, 0),
    cpuUs: mean(t.tput.map((r) => r.cpuUsPerRequest)),
  }));
  const summary = Object.fromEntries(summaries.map((x) => [x.name, x]));

  console.log(`\nProxy overhead: ${connections} connections × ${seconds}s, ${rounds} interleaved rounds; concurrency-1 runs of ${Math.max(3, seconds / 2)}s`);
  console.log('| target | req/s | p50 ms | p99 ms | p50 ms (c=1) | p99 ms (c=1) | server CPU µs/request | errors |');
  console.log('|---|---:|---:|---:|---:|---:|---:|---:|');
  for (const s of summaries) {
    console.log(
      `| ${s.name} | ${Math.round(s.rps)} | ${s.p50Ms.toFixed(3)} | ${s.p99Ms.toFixed(3)} | ${s.p50MsC1.toFixed(3)} | ${s.p99MsC1.toFixed(3)} | ${s.cpuUs.toFixed(1)} | ${s.errors} |`,
    );
  }
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

main().catch((err: unknown) => {
  console.error(err);
  process.exit(1);
});
