/**
 * What the HTTP benchmarks share: starting a server script as a child process and reading the URL it
 * prints, the server side of that handshake, a process's CPU time from /proc, autocannon runs and
 * their summaries, interleaved rounds, and Markdown tables.
 *
 * Server processes import this module too, so it loads nothing heavy at import time: autocannon is
 * imported on the first load run, and `getconf CLK_TCK` asked on the first CPU reading.
 */
import { type ChildProcess, execFileSync, spawn } from 'node:child_process';
import { readFileSync } from 'node:fs';
import type autocannon from 'autocannon';

/** The request every load run sends: a small chat completion for the fixed backend's model. */
export const CHAT_BODY = JSON.stringify({ model: 'fixed', messages: [{ role: 'user', content: 'Say hello in five words.' }], max_tokens: 16 });

/** A server started by {@link startServer}: the URL it printed and its process. */
export interface Server {
  readonly url: string;
  readonly child: ChildProcess;
}

export interface StartOptions {
  /** What error messages call the server; the first argument by default. */
  readonly name?: string;
  /** Where the server's stderr goes: this process's stderr (the default), or a callback given it as text. */
  readonly stderr?: 'inherit' | ((text: string) => void);
  /** Called with the process as soon as it is spawned, before it is ready (e.g. to kill it at exit). */
  readonly onSpawn?: (child: ChildProcess) => void;
}

/**
 * Starts `node SCRIPT ...args` and waits for it to print `ready URL` on stdout (see
 * {@link serveUntilTerminated}); rejects when it exits first.
 */
export async function startServer(script: string, args: readonly string[], options: StartOptions = {}): Promise<Server> {
  const { name = args[0] ?? script, stderr = 'inherit', onSpawn } = options;
  const child = spawn(process.execPath, [script, ...args], { stdio: ['ignore', 'pipe', stderr === 'inherit' ? 'inherit' : 'pipe'] });
  onSpawn?.(child);
  if (stderr !== 'inherit') {
    child.stderr!.setEncoding('utf8');
    child.stderr!.on('data', stderr);
  }
  let out = '';
  for await (const chunk of child.stdout!) {
    out += String(chunk);
    const m = /ready (\S+)/.exec(out);
    if (m) return { url: m[1]!, child };
  }
  throw new Error(`${name} server exited before it was ready`);
}

/**
 * The server side of {@link startServer}: prints `ready URL` once `start` resolves, exits with 1 if
 * it fails, and exits cleanly on SIGTERM (so `node --cpu-prof` can write its profile and connections
 * close with the process).
 */
export function serveUntilTerminated(start: () => Promise<string>): void {
  start().then(
    (url) => console.log(`ready ${url}`),
    (err: unknown) => {
      console.error(err);
      process.exit(1);
    },
  );
  process.on('SIGTERM', () => process.exit(0));
}

/**
 * The `parseArgs` options every load benchmark takes, `--seconds` (per full-load run), `--connections`
 * (16 by default) and `--rounds`, with the benchmark's own defaults.
 */
export function loadOptions(defaults: { seconds: number; rounds: number }) {
  return {
    seconds: { type: 'string', default: String(defaults.seconds) },
    connections: { type: 'string', default: '16' },
    rounds: { type: 'string', default: String(defaults.rounds) },
  } as const;
}

/** Runs a benchmark's `main`, printing its error and exiting with 1 if it fails. */
export function runMain(main: () => Promise<void>): void {
  main().catch((err: unknown) => {
    console.error(err);
    process.exit(1);
  });
}

/** Sites and one backend (`fixed` at `upstream`, 256 slots): the router config the adapter benchmarks serve. */
export function oneBackendConfig(upstream: string) {
  return {
    sites: [{ id: 'local' }],
    backends: [{ id: 'fixed', site: 'local', baseURL: `${upstream}/v1`, models: ['fixed'], maxConcurrency: 256 }],
  };
}

// ---- CPU time ----

let clockTicks: number | undefined | null = null;

/** Clock ticks per second of /proc's CPU times (asked once), or undefined off Linux. */
function clkTck(): number | undefined {
  if (clockTicks === null) {
    try {
      clockTicks = Number(execFileSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }).trim()) || undefined;
    } catch {
      clockTicks = undefined;
    }
  }
  return clockTicks;
}

/** User + system CPU time of a process so far (ms), from /proc/PID/stat; NaN where unavailable. */
export function cpuMs(pid: number | undefined): number {
  const ticks = clkTck();
  if (!ticks || pid === undefined) return Number.NaN;
  try {
    // Fields after the command name (which may contain spaces) start at the closing parenthesis.
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    return ((Number(fields[11]) + Number(fields[12])) * 1000) / ticks;
  } catch {
    return Number.NaN;
  }
}

// ---- load ----

/** What one autocannon run did: requests completed, errors (failures and non-2xx), every 200's response time (ms, unsorted). */
export interface Load {
  requests: number;
  errors: number;
  latencies: number[];
}

let autocannonModule: Promise<typeof autocannon> | undefined;

/**
 * autocannon POSTing {@link CHAT_BODY} to `URL/v1/chat/completions` for a duration (s) or a number of
 * requests. Keeps the exact response times: autocannon's own histogram has 1 ms resolution.
 */
export async function cannon(url: string, connections: number, limit: { duration: number } | { amount: number }): Promise<Load> {
  const run = await (autocannonModule ??= import('autocannon').then((m) => m.default));
  const latencies: number[] = [];
  return new Promise<Load>((resolve, reject) => {
    const instance = run(
      { url: `${url}/v1/chat/completions`, method: 'POST', headers: { 'content-type': 'application/json' }, body: CHAT_BODY, connections, ...limit },
      (err, res) => (err ? reject(err) : resolve({ requests: res.requests.total, errors: res.errors + res.non2xx, latencies })),
    );
    instance.on('response', (_client: unknown, status: number, _bytes: number, responseTimeMs: number) => {
      if (status === 200) latencies.push(responseTimeMs);
    });
  });
}

/** One timed load run against one server. */
export interface Run {
  rps: number;
  p50Ms: number;
  p99Ms: number;
  errors: number;
  /** CPU time per request (µs) of the process measured (the server's, where /proc can tell). */
  cpuUsPerRequest: number;
}

/** {@link cannon} for `durationS` seconds, with the CPU time per request of process `pid` over the run. */
export async function loadRun(url: string, connections: number, durationS: number, pid?: number): Promise<Run> {
  const cpuBefore = cpuMs(pid);
  const load = await cannon(url, connections, { duration: durationS });
  const latencies = load.latencies.sort((a, b) => a - b);
  return {
    rps: load.requests / durationS,
    p50Ms: percentile(latencies, 0.5),
    p99Ms: percentile(latencies, 0.99),
    errors: load.errors,
    cpuUsPerRequest: ((cpuMs(pid) - cpuBefore) * 1000) / Math.max(1, load.requests),
  };
}

/** The means of one target's runs at full load (`tput`) and at concurrency 1 (`c1`; NaN where none). */
export interface Summary {
  name: string;
  rps: number;
  rpsPerRound: number[];
  p50Ms: number;
  p99Ms: number;
  p50MsC1: number;
  p99MsC1: number;
  cpuUs: number;
  /** All runs' errors, summed. */
  errors: number;
}

/** Averages a target's runs into a {@link Summary}. */
export function summarise(name: string, tput: readonly Run[], c1: readonly Run[] = []): Summary {
  return {
    name,
    rps: mean(tput.map((x) => x.rps)),
    rpsPerRound: tput.map((x) => Math.round(x.rps)),
    p50Ms: mean(tput.map((x) => x.p50Ms)),
    p99Ms: mean(tput.map((x) => x.p99Ms)),
    p50MsC1: c1.length ? mean(c1.map((x) => x.p50Ms)) : Number.NaN,
    p99MsC1: c1.length ? mean(c1.map((x) => x.p99Ms)) : Number.NaN,
    cpuUs: mean(tput.map((x) => x.cpuUsPerRequest)),
    errors: [...tput, ...c1].reduce((n, x) => n + x.errors, 0),
  };
}

/**
 * `rounds` rounds of `measure` over every item, one item after another, so drift on a shared machine
 * hits all alike. With `alternate`, odd rounds go backwards, so no item always runs first.
 */
export async function interleavedRounds<T>(
  items: readonly T[],
  rounds: number,
  measure: (item: T, round: number) => Promise<void>,
  { alternate = false }: { alternate?: boolean } = {},
): Promise<void> {
  for (let r = 0; r < rounds; r++) {
    for (const item of alternate && r % 2 === 1 ? [...items].reverse() : items) await measure(item, r);
  }
}

// ---- numbers and tables ----

export const mean = (xs: readonly number[]) => xs.reduce((a, b) => a + b, 0) / xs.length;
export const round = (x: number, d = 3) => Number(x.toFixed(d));
export const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));

/** The `q` quantile of ascending `sorted` (the value at rank ⌊q·n⌋); NaN when empty. */
export function percentile(sorted: readonly number[], q: number): number {
  return sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))] ?? Number.NaN;
}

/** A table column: its title, aligned right unless it is the first or says otherwise. */
export type Column = string | { readonly title: string; readonly align: 'left' | 'right' };

/** Prints a Markdown table: the header, the alignment row, a line per row (cells as given). */
export function printTable(columns: readonly Column[], rows: readonly (readonly (string | number)[])[]): void {
  const cols = columns.map((c, i) => (typeof c === 'string' ? { title: c, align: i === 0 ? 'left' : 'right' } : c));
  console.log(`| ${cols.map((c) => c.title).join(' | ')} |`);
  console.log(`|${cols.map((c) => (c.align === 'left' ? '---' : '---:')).join('|')}|`);
  for (const row of rows) console.log(`| ${row.join(' | ')} |`);
}
