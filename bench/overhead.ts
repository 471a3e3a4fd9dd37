/**
 * Proxy overhead: autocannon against (a) the fixed backend directly, (b) a bare pass-through proxy on
 * the same HTTP stack, (c) freesh with its default policy, in one run, rounds interleaved so drift
 * on a shared machine hits all three alike. Prints a table and the ratios; the last line is JSON.
 *
 *   npm run bench:overhead [-- --seconds 8 --connections 16 --rounds 2]
 */
import { type ChildProcess, spawn } from 'node:child_process';
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
}

async function load(url: string, conns: number, durationS: number): Promise<Run> {
  const latencies: number[] = [];
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
  return { rps: result.requests.total / durationS, p50Ms: at(0.5), p99Ms: at(0.99), errors: result.errors + result.non2xx };
}

const mean = (xs: number[]) => xs.reduce((a, b) => a + b, 0) / xs.length;
const round = (x: number, d = 3) => Number(x.toFixed(d));

async function main(): Promise<void> {
  const fixed = await start('fixed');
  const bare = await start('bare', fixed.url);
  const freesh = await start('freesh', fixed.url);
  const targets = { direct: fixed.url, bare: bare.url, freesh: freesh.url } as const;
  type Name = keyof typeof targets;
  const tput: Record<Name, Run[]> = { direct: [], bare: [], freesh: [] };
  const c1: Record<Name, Run[]> = { direct: [], bare: [], freesh: [] };
  try {
    for (const url of Object.values(targets)) await load(url, connections, 2); // warm up JIT and pools
    for (let r = 0; r < rounds; r++) {
      for (const name of Object.keys(targets) as Name[]) {
        tput[name].push(await load(targets[name], connections, seconds));
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
      },
    ]),
  ) as Record<Name, { rps: number; p50Ms: number; p99Ms: number; p50MsC1: number; p99MsC1: number; errors: number }>;

  console.log(`\nProxy overhead: ${connections} connections × ${seconds}s, ${rounds} interleaved rounds; concurrency-1 runs of ${Math.max(3, seconds / 2)}s`);
  console.log('| target | req/s | p50 ms | p99 ms | p50 ms (c=1) | p99 ms (c=1) | errors |');
  console.log('|---|---:|---:|---:|---:|---:|---:|');
  for (const [name, s] of Object.entries(summary)) {
    console.log(`| ${name} | ${Math.round(s.rps)} | ${s.p50Ms.toFixed(3)} | ${s.p99Ms.toFixed(3)} | ${s.p50MsC1.toFixed(3)} | ${s.p99MsC1.toFixed(3)} | ${s.errors} |`);
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
    errors: summary.direct.errors + summary.bare.errors + summary.freesh.errors,
  };
  console.log(`\nfreesh / bare throughput: ${result.ratioVsBare} (target ≥ 0.85); added p50 at c=1: ${result.addedP50MsC1} ms (target ≤ 0.3)`);
  console.log(JSON.stringify(result));
}

main().catch((err: unknown) => {
  console.error(err);
  process.exit(1);
});
