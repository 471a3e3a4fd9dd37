/**
 * Servers of the Hono adapter benchmark (`bench/adapters-hono-openai.ts`), one per process so each
 * gets its own event loop, all on Node through @hono/node-server:
 *   hono-bare   UPSTREAM   a Hono app whose POST /v1/chat/completions passes the request through (undici Pool, as freesh forwards)
 *   hono-proxy  UPSTREAM   the same route through Hono's own `proxy` helper (fetch)
 *   hono-freesh UPSTREAM   a Hono app with freesh's middleware (`freesh/hono`), default policy, one backend
 *   fetch-freesh UPSTREAM  freesh's fetch handler served by @hono/node-server without Hono: what the middleware adds is the difference
 * Each prints `ready URL` when listening.
 */
import type { AddressInfo } from 'node:net';
import type { Readable } from 'node:stream';
import { serve } from '@hono/node-server';
import { Hono } from 'hono';
import { proxy } from 'hono/proxy';
import { Pool } from 'undici';
import { freesh } from '../adapters/hono/index.js';
import { createFetchHandler, createRouter, type Router } from '../src/index.js';
import { oneBackendConfig, serveUntilTerminated } from './lib.js';

const [role, upstream] = process.argv.slice(2);

function listen(fetch: (request: Request) => Response | Promise<Response>): Promise<string> {
  return new Promise((resolve) => {
    const server = serve({ fetch, port: 0, hostname: '127.0.0.1' }, () => resolve(`http://127.0.0.1:${(server.address() as AddressInfo).port}`));
    (server as { keepAliveTimeout?: number }).keepAliveTimeout = 65_000;
  });
}

/**
 * A node stream as a web stream, chunk by chunk (Node 20's `Readable.toWeb` throws on undici's
 * bodies): what any Hono route relaying an undici response must do, freesh's fetch edge included.
 * Once the server cancels it (the client left), later chunks are dropped, not enqueued.
 */
function webStream(body: Readable): ReadableStream<Uint8Array> {
  let cancelled = false;
  return new ReadableStream<Uint8Array>({
    start(controller) {
      body.on('data', (chunk: Buffer) => {
        if (!cancelled) controller.enqueue(chunk);
      });
      body.on('end', () => {
        if (!cancelled) controller.close();
      });
      body.on('error', (err) => {
        if (!cancelled) controller.error(err);
      });
    },
    cancel() {
      cancelled = true;
      body.destroy();
    },
  });
}

function routerTo(url: string): Router {
  return createRouter(oneBackendConfig(url));
}

async function main(): Promise<string> {
  if (!upstream) throw new Error(`${role} needs an upstream URL`);
  if (role === 'hono-bare') {
    const pool = new Pool(upstream, { connections: 128, keepAliveTimeout: 60_000 });
    const app = new Hono();
    app.post('/v1/chat/completions', async (c) => {
      const up = await pool.request({ method: 'POST', path: c.req.path, headers: { 'content-type': 'application/json' }, body: Buffer.from(await c.req.arrayBuffer()) });
      const headers = new Headers();
      for (const [k, v] of Object.entries(up.headers)) if (typeof v === 'string' && k !== 'connection' && k !== 'keep-alive') headers.set(k, v);
      return new Response(webStream(up.body), { status: up.statusCode, headers });
    });
    return listen(app.fetch);
  }
  if (role === 'hono-proxy') {
    const app = new Hono();
    app.post('/v1/chat/completions', (c) => proxy(`${upstream}${c.req.path}`, c.req));
    return listen(app.fetch);
  }
  if (role === 'hono-freesh') {
    const app = new Hono();
    app.use(freesh(routerTo(upstream)));
    app.get('/', (c) => c.text('app'));
    return listen(app.fetch);
  }
  if (role === 'fetch-freesh') return listen(createFetchHandler(routerTo(upstream)));
  throw new Error(`unknown role ${role}`);
}

serveUntilTerminated(main);
