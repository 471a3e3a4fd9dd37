/**
 * Proxy overhead: autocannon against (a) the fixed backend directly, (b) a bare pass-through proxy on
 * the same HTTP stack, (c) freesh with its default policy, in one run, rounds interleaved so drift
 * on a shared machine hits all three alike. Prints a table and the ratios; the last line is JSON.
 * On Linux it also reads each server process's CPU time (/proc) around its throughput runs: CPU per
 * request is steadier than throughput on a machine whose cores are shared with the load generator.
 *
 *   npm run bench:overhead [-- --seconds 8 --connections 16 --rounds 2]
 */
import { type ChildProcess, execFileSync, spawn } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import autocannon from 'autocannon';

const { values } = parseArgs({
  options: {
    seconds: { type: 'string', default: '8' },
    connections: { type: 'string', default: '16' },
    rounds: { type: 'string', default: '2' },
  },
});
const seconds = Number(values.seconds);
const connections = Number(values.connections);
const rounds = Number(values.rounds);
const BODY = JSON.stringify({ model: 'fixed', messages: [{ role: 'user', content: 'Say hello in five words.' }], max_tokens: 16 });
const serverScript = fileURLToPath(new URL('./overhead-servers.js', import.meta.url));

async function start(role: string, upstream?: string): Promise<{ url: string; child: ChildProcess }> {
  const child = spawn(process.execPath, [serverScript, role, ...(upstream ? [upstream] : [])], { stdio: ['ignore', 'pipe', 'inherit'] });
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
  const targets = { direct: fixed.url, bare: bare.url, freesh: freesh.url } as const;
  type Name = keyof typeof targets;
  // The process that serves each target: the backend itself for `direct`.
  const pids: Record<Name, number | undefined> = { direct: fixed.child.pid, bare: bare.child.pid, freesh: freesh.child.pid };
  const tput: Record<Name, Run[]> = { direct: [], bare: [], freesh: [] };
  const c1: Record<Name, Run[]> = { direct: [], bare: [], freesh: [] };
  try {
    for (const url of Object.values(targets)) await load(url, connections, 2); // warm up JIT and pools
    for (let r = 0; r < rounds; r++) {
      for (const name of Object.keys(targets) as Name[]) {
        tput[name].push(await load(targets[name], connections, seconds, pids[name]));
        c1[name].push(await load(targets[name], 1, Math.max(3, seconds / 2)));
        process.stderr.write(`round ${r + 1}/${rounds} ${name}: ${Math.round(tput[name].at(-1)!.rps)} req/s\n`);
      }
    }
  } finally {
    for (const s of [fixed, bare, freesh]) s.child.kill();
  }
  const summary = Object.fromEntries(
    (Object.keys(targets) as Name[]).map((name) => [
      name,
      {
        rps: mean(tput[name].map((r) => r.rps)),
        p50Ms: mean(tput[name].map((r) => r.p50Ms)),
        p99Ms: mean(tput[name].map((r) => r.p99Ms)),
        p50MsC1: mean(c1[name].map((r) => r.p50Ms)),
        p99MsC1: mean(c1[name].map((r) => r.p99Ms)),
        errors: tput[name].reduce((n, r) => n + r.errors, 0) + c1[name].reduce((n, r) => n + r.errors, 0),
        cpuUs: mean(tput[name].map((r) => r.cpuUsPerRequest)),
      },
    ]),
  ) as Record<Name, { rps: number; p50Ms: number; p99Ms: number; p50MsC1: number; p99MsC1: number; errors: number; cpuUs: number }>;

  console.log(`\nProxy overhead: ${connections} connections × ${seconds}s, ${rounds} interleaved rounds; concurrency-1 runs of ${Math.max(3, seconds / 2)}s`);
  console.log('| target | req/s | p50 ms | p99 ms | p50 ms (c=1) | p99 ms (c=1) | server CPU µs/request | errors |');
  console.log('|---|---:|---:|---:|---:|---:|---:|---:|');
  for (const [name, s] of Object.entries(summary)) {
    console.log(
      `| ${name} | ${Math.round(s.rps)} | ${s.p50Ms.toFixed(3)} | ${s.p99Ms.toFixed(3)} | ${s.p50MsC1.toFixed(3)} | ${s.p99MsC1.toFixed(3)} | ${s.cpuUs.toFixed(1)} | ${s.errors} |`,
    );
  }
  const result = {
    connections,
    seconds,
    rounds,
    directRps: round(summary.direct.rps, 0),
    bareRps: round(summary.bare.rps, 0),
    freeshRps: round(summary.freesh.rps, 0),
    ratioVsBare: round(summary.freesh.rps / summary.bare.rps),
    ratioVsDirect: round(summary.freesh.rps / summary.direct.rps),
    p50MsC1: { direct: round(summary.direct.p50MsC1), bare: round(summary.bare.p50MsC1), freesh: round(summary.freesh.p50MsC1) },
    addedP50MsC1: round(summary.freesh.p50MsC1 - summary.bare.p50MsC1),
    // Proxy CPU per request: the throughput ratio a CPU-bound machine would see, free of the load generator's share.
    cpuUsPerRequest: { bare: round(summary.bare.cpuUs, 1), freesh: round(summary.freesh.cpuUs, 1) },
    cpuRatioVsBare: round(summary.bare.cpuUs / summary.freesh.cpuUs),
    errors: summary.direct.errors + summary.bare.errors + summary.freesh.errors,
  };
  console.log(`\nfreesh / bare throughput: ${result.ratioVsBare} (target ≥ 0.85); added p50 at c=1: ${result.addedP50MsC1} ms (target ≤ 0.3)`);
  console.log(`proxy CPU per request: bare ${result.cpuUsPerRequest.bare} µs, freesh ${result.cpuUsPerRequest.freesh} µs (bare / freesh ${result.cpuRatioVsBare})`);
  console.log(JSON.stringify(result));
}

main().catch((err: unknown) => {
  console.error(err);
  process.exit(1);
});
