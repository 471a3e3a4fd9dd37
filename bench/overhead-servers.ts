/**
 * The three servers of the overhead benchmark, one per process so each gets its own event loop:
 *   fixed            a backend that answers every POST with the same completion
 *   bare  UPSTREAM   a pass-through proxy on the same stack as freesh (node:http + undici Pool), no routing
 *   freesh UPSTREAM  freesh's proxy with its default policy, one backend
 * Each prints `ready URL` when listening.
 */
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { Pool } from 'undici';
import { startProxy } from '../src/proxy/standalone.js';
import { startFixedBackend } from '../src/sim/fixed-backend.js';
import { oneBackendConfig, serveUntilTerminated } from './lib.js';

const [role, upstream] = process.argv.slice(2);

async function main(): Promise<string> {
  if (role === 'fixed') return (await startFixedBackend()).baseURL.replace(/\/v1$/, '');
  if (!upstream) throw new Error(`${role} needs an upstream URL`);
  if (role === 'bare') {
    const pool = new Pool(upstream, { connections: 128, keepAliveTimeout: 60_000 });
    const server = createServer({ keepAliveTimeout: 65_000 }, (req, res) => {
      const chunks: Buffer[] = [];
      req.on('data', (c: Buffer) => chunks.push(c));
      req.on('end', () => {
        pool
          .request({ method: 'POST', path: req.url ?? '/', headers: { 'content-type': 'application/json' }, body: Buffer.concat(chunks) })
          .then((up) => {
            const headers: Record<string, string | string[]> = {};
            for (const [k, v] of Object.entries(up.headers)) if (v !== undefined && k !== 'connection' && k !== 'keep-alive') headers[k] = v;
            res.writeHead(up.statusCode, headers);
            up.body.pipe(res);
          })
          .catch(() => res.writeHead(502).end());
      });
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    return `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  }
  if (role === 'freesh') {
    const proxy = await startProxy({ server: { port: 0 }, ...oneBackendConfig(upstream) });
    return proxy.url;
  }
  throw new Error(`unknown role ${role}`);
}

// Exits cleanly on SIGTERM so `node --cpu-prof` can write its profile.
serveUntilTerminated(main);
