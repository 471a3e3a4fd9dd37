/**
 * The servers of the Redis-store benchmark, one per process so each gets its own event loop:
 *   fixed           a backend that answers every POST with the same completion at once
 *   hold MS         a backend that answers every POST after MS ms, and records when each POST arrives
 *                   and when its response has been written: GET /bench/events returns
 *                   `{ arrivals, ends, maxInFlight }` (ms, this process's monotonic clock) and clears them
 *   proxy CONFIG    freesh's proxy (`startProxy`) for a JSON config given as the argument
 * Each prints `ready URL` when listening.
 */
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { performance } from 'node:perf_hooks';
import { startProxy } from '../src/proxy/standalone.js';
import { FIXED_COMPLETION, startFixedBackend } from '../src/sim/fixed-backend.js';
import { serveUntilTerminated } from './lib.js';

const [role, arg] = process.argv.slice(2);

/** A backend that holds each POST `holdMs` and keeps the ground truth of when requests came and went. */
async function startHoldBackend(holdMs: number): Promise<string> {
  let arrivals: number[] = [];
  let ends: number[] = [];
  let inFlight = 0;
  let maxInFlight = 0;
  const server = createServer((req, res) => {
    if (req.method === 'GET') {
      if (req.url === '/bench/events') {
        const body = JSON.stringify({ arrivals, ends, maxInFlight });
        arrivals = [];
        ends = [];
        maxInFlight = inFlight;
        res.writeHead(200, { 'content-type': 'application/json' });
        return void res.end(body);
      }
      res.writeHead(200, { 'content-type': 'application/json' });
      return void res.end('{"object":"list","data":[{"id":"fixed","object":"model","created":0,"owned_by":"sim"}]}');
    }
    // The request's headers are in: it has reached the backend.
    arrivals.push(performance.now());
    inFlight++;
    maxInFlight = Math.max(maxInFlight, inFlight);
    // 'close' comes for every response, also one the proxy cut (its client left at the end of a run).
    res.once('close', () => inFlight--);
    req.resume();
    req.once('end', () => {
      setTimeout(() => {
        // 'finish': the whole response has been handed to the kernel, i.e. the backend is done with the slot.
        res.once('finish', () => ends.push(performance.now()));
        res.writeHead(200, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(FIXED_COMPLETION) });
        res.end(FIXED_COMPLETION);
      }, holdMs);
    });
  });
  server.keepAliveTimeout = 65_000;
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
}

async function main(): Promise<string> {
  if (role === 'fixed') return (await startFixedBackend()).baseURL.replace(/\/v1$/, '');
  if (role === 'hold') return startHoldBackend(Number(arg ?? 50));
  if (role === 'proxy') {
    if (!arg) throw new Error('proxy needs a JSON config');
    return (await startProxy(JSON.parse(arg) as Parameters<typeof startProxy>[0])).url;
  }
  throw new Error(`unknown role ${role}`);
}

// Exits cleanly on SIGTERM (the proxy's Redis connections close with the process).
serveUntilTerminated(main);
