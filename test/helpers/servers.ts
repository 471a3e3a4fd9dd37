import { createServer, type IncomingMessage, request as httpRequest, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import type { FileConfigInput } from '../../src/config/schema.js';
import { closeServer } from '../../src/sim/backend-server.js';
import { type RunningProxy, startProxy } from '../../src/proxy/standalone.js';
import { createRouter, type Router, type RouterOptions } from '../../src/router.js';
import { heuristicPredictor } from '../../src/predict/predictor.js';

export interface Upstream {
  readonly baseURL: string;
  readonly server: Server;
  close(): Promise<void>;
}

/** A backend whose behaviour the test writes. */
export async function upstream(handler: (req: IncomingMessage, res: ServerResponse, body: string) => void): Promise<Upstream> {
  const server = createServer((req, res) => {
    let body = '';
    req.on('data', (c: Buffer) => (body += c.toString()));
    req.on('end', () => handler(req, res, body));
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  return {
    baseURL: `http://127.0.0.1:${port}/v1`,
    server,
    close: () => closeServer(server),
  };
}

/** A port that refuses connections (a server was there and is gone). */
export async function deadBaseURL(): Promise<string> {
  const u = await upstream(() => undefined);
  await u.close();
  return u.baseURL;
}

export function fleetConfig(backends: { id: string; baseURL: string; models?: string[]; maxConcurrency?: number }[], extra: Partial<FileConfigInput> = {}): FileConfigInput {
  return {
    server: { host: '127.0.0.1', port: 0 },
    sites: [{ id: 'loc1', carbon: { gramsPerKWh: 300 } }],
    backends: backends.map((b) => ({ site: 'loc1', models: ['m'], ...b })),
    ...extra,
  };
}

export async function proxyFor(config: FileConfigInput, inject: Partial<RouterOptions> = {}): Promise<RunningProxy> {
  return startProxy(config, inject);
}

export const chatBody = (extra: Record<string, unknown> = {}) =>
  JSON.stringify({ model: 'm', messages: [{ role: 'user', content: 'Hello there' }], ...extra });

export async function post(url: string, body: string, headers: Record<string, string> = {}): Promise<{ status: number; headers: Headers; text: string; json: () => any }> {
  const res = await fetch(url, { method: 'POST', headers: { 'content-type': 'application/json', ...headers }, body });
  const text = await res.text();
  return { status: res.status, headers: res.headers, text, json: () => JSON.parse(text) };
}

/** A streamed POST over a real socket: the response as it arrives, and `abort` to leave mid-stream. */
export function streamPost(
  url: string,
  body: string,
  headers: Record<string, string> = {},
): Promise<{ status: number; headers: IncomingMessage['headers']; response: IncomingMessage; abort: () => void }> {
  return new Promise((resolve, reject) => {
    const req = httpRequest(url, { method: 'POST', headers: { 'content-type': 'application/json', ...headers } }, (response) =>
      resolve({ status: response.statusCode ?? 0, headers: response.headers, response, abort: () => req.destroy() }),
    );
    req.on('error', reject);
    req.end(body);
  });
}

export function nextChunk(response: IncomingMessage): Promise<string> {
  return new Promise((resolve, reject) => {
    response.once('data', (c: Buffer) => resolve(c.toString()));
    response.once('error', reject);
  });
}

export async function until(check: () => boolean | Promise<boolean>, timeoutMs = 5_000): Promise<void> {
  const end = Date.now() + timeoutMs;
  while (!(await check())) {
    if (Date.now() > end) throw new Error('condition not met in time');
    await new Promise((r) => setTimeout(r, 10));
  }
}

/** A one-site router over the given backends of model `m`, no planner, the heuristic predictor; closed by `cleanups`. */
export function testRouter(backends: { id: string; baseURL: string; maxConcurrency?: number }[], limits: Record<string, number>, cleanups: (() => unknown)[]): Router {
  const router = createRouter({
    sites: [{ id: 'loc1', carbon: { gramsPerKWh: 300 } }],
    backends: backends.map((b) => ({ site: 'loc1', models: ['m'], ...b })),
    limits,
    plan: { enabled: false },
    predictor: heuristicPredictor(),
  });
  cleanups.push(() => router.close());
  return router;
}
