/**
 * Adapter overhead (issue #12): each framework adapter against that framework's own bare pass-through
 * route, in one run, rounds interleaved so drift on a shared machine hits all alike. Every server is
 * a process of its own (its own event loop) in front of the same fixed backend:
 *   express-bare     an Express POST route: read the body, forward it with an undici Pool, pipe the answer back
 *   express-freesh   an Express app with `app.use(freesh(router))`
 *   fastify-bare     a Fastify POST route: the body as bytes, forwarded with an undici Pool, the answer sent as a stream
 *   fastify-freesh   a Fastify app with `app.register(freesh, { router })`
 *   fastify-node     for reference: the router's node listener on a hijacked Fastify reply (no decoration, no logging)
 * The router is the proxy's default (default policy and predictor, one backend with 256 slots).
 * Prints a table and the ratios (target: each adapter's throughput ≥ 0.85 of its bare route's); the
 * last line is JSON. On Linux it also reads each server's CPU time per request (/proc).
 *
 *   npm run bench:adapters:ef [-- --seconds 8 --connections 16 --rounds 3]
 */
import { type ChildProcess, execFileSync, spawn } from 'node:child_process';
import { readFileSync } from 'node:fs';
import type { AddressInfo } from 'node:net';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import autocannon from 'autocannon';
import { Pool } from 'undici';
import { createRouter, type Router } from '../src/index.js';
import { startFixedBackend } from '../src/sim/fixed-backend.js';

const BODY = JSON.stringify({ model: 'fixed', messages: [{ role: 'user', content: 'Say hello in five words.' }], max_tokens: 16 });
const HOP_BY_HOP = new Set(['connection', 'keep-alive', 'transfer-encoding']);

function routerFor(upstream: string): Router {
  return createRouter({
    sites: [{ id: 'local' }],
    backends: [{ id: 'fixed', site: 'local', baseURL: `${upstream}/v1`, models: ['fixed'], maxConcurrency: 256 }],
  });
}

function relayed(headers: Record<string, string | string[] | undefined>): Record<string, string | string[]> {
  const out: Record<string, string | string[]> = {};
  for (const [k, v] of Object.entries(headers)) if (v !== undefined && !HOP_BY_HOP.has(k)) out[k] = v;
  return out;
}

/** One server: prints `ready URL` once listening. */
async function serve(role: string, upstream: string | undefined): Promise<string> {
  if (role === 'fixed') return (await startFixedBackend()).baseURL.replace(/\/v1$/, '');
  if (!upstream) throw new Error(`${role} needs an upstream URL`);
  const pool = new Pool(upstream, { connections: 128, keepAliveTimeout: 60_000 });
  if (role.startsWith('express')) {
    const { default: express } = await import('express');
    const app = express();
    if (role === 'express-freesh') {
      const { freesh } = await import('../adapters/express/index.js');
      app.use(freesh(routerFor(upstream)));
    } else {
      app.post('/v1/chat/completions', (req, res) => {
        const chunks: Buffer[] = [];
        req.on('data', (c: Buffer) => chunks.push(c));
        req.on('end', () => {
          pool
            .request({ method: 'POST', path: req.url, headers: { 'content-type': 'application/json' }, body: Buffer.concat(chunks) })
            .then((up) => {
              res.writeHead(up.statusCode, relayed(up.headers));
              up.body.pipe(res);
            })
            .catch(() => void res.status(502).end());
        });
      });
    }
    const server = app.listen(0, '127.0.0.1');
    server.keepAliveTimeout = 65_000;
    await new Promise<void>((resolve) => server.once('listening', resolve));
    return `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  }
  if (role.startsWith('fastify')) {
    const { default: Fastify } = await import('fastify');
    const app = Fastify({ logger: false, keepAliveTimeout: 65_000 });
    if (role === 'fastify-freesh') {
      const { default: freesh } = await import('../adapters/fastify/index.js');
      await app.register(freesh, { router: routerFor(upstream) });
    } else if (role === 'fastify-node') {
      // For reference, not a product: the same router through the node listener, on a hijacked reply.
      const { createNodeHandler } = await import('../src/index.js');
      const node = createNodeHandler(routerFor(upstream));
      app.post('/v1/chat/completions', { onRequest: (request, reply, done) => {
        reply.hijack();
        node(request.raw, reply.raw);
        done();
      } }, async () => undefined);
    } else {
      app.register(async (routes) => {
        routes.removeAllContentTypeParsers();
        routes.addContentTypeParser('*', { parseAs: 'buffer' }, (_request, body, done) => done(null, body));
        routes.post('/v1/chat/completions', async (request, reply) => {
          const up = await pool.request({ method: 'POST', path: request.url, headers: { 'content-type': 'application/json' }, body: request.body as Buffer });
          return reply.code(up.statusCode).headers(relayed(up.headers)).send(up.body);
        });
      });
    }
    return app.listen({ port: 0, host: '127.0.0.1' });
  }
  throw new Error(`unknown role ${role}`);
}

// ---- the driver ----

interface Run {
  rps: number;
  p50Ms: number;
  p99Ms: number;
  errors: number;
  /** CPU time of the server process per request (µs), where /proc can tell. */
  cpuUsPerRequest: number;
}

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
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    return ((Number(fields[11]) + Number(fields[12])) * 1000) / CLK_TCK;
  } catch {
    return Number.NaN;
  }
}

async function start(role: string, upstream?: string): Promise<{ url: string; child: ChildProcess }> {
  const child = spawn(process.execPath, [fileURLToPath(import.meta.url), '--serve', role, ...(upstream ? [upstream] : [])], { stdio: ['ignore', 'pipe', 'inherit'] });
  let out = '';
  for await (const chunk of child.stdout!) {
    out += String(chunk);
    const m = /ready (\S+)/.exec(out);
    if (m) return { url: m[1]!, child };
  }
  throw new Error(`${role} server exited before it was ready`);
}

async function load(url: string, connections: number, durationS: number, pid?: number): Promise<Run> {
  const latencies: number[] = [];
  const cpuBefore = cpuMs(pid);
  const result = await new Promise<autocannon.Result>((resolve, reject) => {
    const instance = autocannon(
      { url: `${url}/v1/chat/completions`, method: 'POST', headers: { 'content-type': 'application/json' }, body: BODY, connections, duration: durationS },
      (err, res) => (err ? reject(err) : resolve(res)),
    );
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

async function drive(seconds: number, connections: number, rounds: number): Promise<void> {
  const fixed = await start('fixed');
  const roles = ['express-bare', 'express-freesh', 'fastify-bare', 'fastify-freesh', 'fastify-node'] as const;
  const servers = new Map<string, { url: string; child: ChildProcess }>();
  try {
    for (const role of roles) servers.set(role, await start(role, fixed.url));
    const runs = new Map<string, Run[]>(roles.map((r) => [r, []]));
    for (const role of roles) await load(servers.get(role)!.url, connections, 2); // warm up JIT and pools
    for (let r = 0; r < rounds; r++) {
      // Alternate the order each round, so neither side of a pair always runs first.
      for (const role of r % 2 === 0 ? roles : [...roles].reverse()) {
        const server = servers.get(role)!;
        runs.get(role)!.push(await load(server.url, connections, seconds, server.child.pid));
        process.stderr.write(`round ${r + 1}/${rounds} ${role}: ${Math.round(runs.get(role)!.at(-1)!.rps)} req/s\n`);
      }
    }
    const summary = Object.fromEntries(
      roles.map((role) => {
        const rs = runs.get(role)!;
        return [
          role,
          {
            rps: mean(rs.map((x) => x.rps)),
            p50Ms: mean(rs.map((x) => x.p50Ms)),
            p99Ms: mean(rs.map((x) => x.p99Ms)),
            cpuUs: mean(rs.map((x) => x.cpuUsPerRequest)),
            errors: rs.reduce((n, x) => n + x.errors, 0),
            perRound: rs.map((x) => Math.round(x.rps)),
          },
        ];
      }),
    ) as Record<(typeof roles)[number], { rps: number; p50Ms: number; p99Ms: number; cpuUs: number; errors: number; perRound: number[] }>;
    console.log(`\nAdapter overhead: ${connections} connections × ${seconds}s, ${rounds} interleaved rounds`);
    console.log('| target | req/s | per round | p50 ms | p99 ms | server CPU µs/request | errors |');
    console.log('|---|---:|---|---:|---:|---:|---:|');
    for (const role of roles) {
      const s = summary[role];
      console.log(`| ${role} | ${Math.round(s.rps)} | ${s.perRound.join(', ')} | ${s.p50Ms.toFixed(2)} | ${s.p99Ms.toFixed(2)} | ${s.cpuUs.toFixed(1)} | ${s.errors} |`);
    }
    const pair = (fw: 'express' | 'fastify') => {
      const bare = summary[`${fw}-bare`];
      const adapter = summary[`${fw}-freesh`];
      return {
        bareRps: round(bare.rps, 0),
        adapterRps: round(adapter.rps, 0),
        ratio: round(adapter.rps / bare.rps),
        cpuUsPerRequest: { bare: round(bare.cpuUs, 1), adapter: round(adapter.cpuUs, 1) },
        cpuRatio: round(bare.cpuUs / adapter.cpuUs),
      };
    };
    const result = { connections, seconds, rounds, express: pair('express'), fastify: pair('fastify'), errors: roles.reduce((n, r) => n + summary[r].errors, 0) };
    for (const fw of ['express', 'fastify'] as const) {
      const p = result[fw];
      console.log(`${fw}: adapter / bare route throughput ${p.ratio} (target ≥ 0.85); CPU per request bare ${p.cpuUsPerRequest.bare} µs, adapter ${p.cpuUsPerRequest.adapter} µs (bare / adapter ${p.cpuRatio})`);
    }
    console.log(JSON.stringify(result));
  } finally {
    for (const s of [fixed, ...servers.values()]) s.child.kill();
  }
}

const { values, positionals } = parseArgs({
  allowPositionals: true,
  options: {
    serve: { type: 'string' },
    seconds: { type: 'string', default: '8' },
    connections: { type: 'string', default: '16' },
    rounds: { type: 'string', default: '3' },
  },
});

if (values.serve) {
  serve(values.serve, positionals[0]).then(
    (url) => console.log(`ready ${url}`),
    (err: unknown) => {
      console.error(err);
      process.exit(1);
    },
  );
  process.on('SIGTERM', () => process.exit(0));
} else {
  drive(Number(values.seconds), Number(values.connections), Number(values.rounds)).catch((err: unknown) => {
    console.error(err);
    process.exit(1);
  });
}
