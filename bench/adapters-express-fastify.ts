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
import type { AddressInfo } from 'node:net';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { Pool } from 'undici';
import { createRouter, type Router } from '../src/index.js';
import { startFixedBackend } from '../src/sim/fixed-backend.js';
import { interleavedRounds, loadOptions, loadRun, oneBackendConfig, printTable, round, type Run, runMain, type Server, serveUntilTerminated, startServer, type Summary, summarise } from './lib.js';

const HOP_BY_HOP = new Set(['connection', 'keep-alive', 'transfer-encoding']);

function routerFor(upstream: string): Router {
  return createRouter(oneBackendConfig(upstream));
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

/** Starts this script as the server `role` (see `serve`). */
function start(role: string, upstream?: string): Promise<Server> {
  return startServer(fileURLToPath(import.meta.url), ['--serve', role, ...(upstream ? [upstream] : [])], { name: role });
}

async function drive(seconds: number, connections: number, rounds: number): Promise<void> {
  const fixed = await start('fixed');
  const roles = ['express-bare', 'express-freesh', 'fastify-bare', 'fastify-freesh', 'fastify-node'] as const;
  const servers = new Map<string, Server>();
  try {
    for (const role of roles) servers.set(role, await start(role, fixed.url));
    const runs = new Map<string, Run[]>(roles.map((r) => [r, []]));
    for (const role of roles) await loadRun(servers.get(role)!.url, connections, 2); // warm up JIT and pools
    // Alternate the order each round, so neither side of a pair always runs first.
    await interleavedRounds(
      roles,
      rounds,
      async (role, r) => {
        const server = servers.get(role)!;
        runs.get(role)!.push(await loadRun(server.url, connections, seconds, server.child.pid));
        process.stderr.write(`round ${r + 1}/${rounds} ${role}: ${Math.round(runs.get(role)!.at(-1)!.rps)} req/s\n`);
      },
      { alternate: true },
    );
    const summary = Object.fromEntries(roles.map((role) => [role, summarise(role, runs.get(role)!)])) as Record<(typeof roles)[number], Summary>;
    console.log(`\nAdapter overhead: ${connections} connections × ${seconds}s, ${rounds} interleaved rounds`);
    printTable(
      ['target', 'req/s', { title: 'per round', align: 'left' }, 'p50 ms', 'p99 ms', 'server CPU µs/request', 'errors'],
      roles.map((role) => {
        const s = summary[role];
        return [role, Math.round(s.rps), s.rpsPerRound.join(', '), s.p50Ms.toFixed(2), s.p99Ms.toFixed(2), s.cpuUs.toFixed(1), s.errors];
      }),
    );
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
    ...loadOptions({ seconds: 8, rounds: 3 }),
  },
});

if (values.serve) {
  const role = values.serve;
  serveUntilTerminated(() => serve(role, positionals[0]));
} else {
  runMain(() => drive(Number(values.seconds), Number(values.connections), Number(values.rounds)));
}
