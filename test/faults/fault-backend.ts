import { subscribe, unsubscribe } from 'node:diagnostics_channel';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo, Socket } from 'node:net';
import { expect } from 'vitest';
import type { FileConfigInput } from '../../src/config/schema.js';
import type { BackendEvent } from '../../src/pipeline/backend-events.js';
import { heuristicPredictor } from '../../src/predict/predictor.js';
import { type RunningProxy, startProxy } from '../../src/proxy/standalone.js';
import { MemoryStateStore } from '../../src/state/memory-store.js';
import { until } from '../helpers/servers.js';

/** How a fault backend answers completions. */
export type Fault =
  | 'ok'
  /** 500 with an error body. */
  | 'error-500'
  /** 503 with an error body: busy, the request was not taken. */
  | 'busy-503'
  /** 400 with an error body: the backend judged the request bad. */
  | 'error-400'
  /** Reads the request, never answers. */
  | 'stall-before-headers'
  /** 200 and one SSE chunk, then silence. */
  | 'stall-mid-stream'
  /** Reads the request, destroys the socket. */
  | 'reset-before-headers'
  /** 200 and one SSE chunk, then destroys the socket. */
  | 'reset-mid-stream';

/** A real node:http backend whose faults the test sets, and which counts what it was asked. */
export interface FaultBackend {
  readonly id: string;
  readonly baseURL: string;
  /** How completions are answered now. */
  fault: Fault;
  /** Whether GET /v1/models answers 200 (else 503). */
  probesPass: boolean;
  /** With fault `ok`, the time before its headers (ms). Default 0. */
  delayMs: number;
  /** Completion requests received. */
  readonly completions: number;
  /** Probes (GET /v1/models) received. */
  readonly probes: number;
  /** Exchanges begun whose socket is still open and whose response is unfinished: a leak if non-zero once traffic stops. */
  readonly open: number;
  /** TCP connections open to it now. */
  connections(): Promise<number>;
  /** Stops listening and drops every connection: its port refuses connections. */
  die(): Promise<void>;
  /** Listens on the same port again. */
  revive(): Promise<void>;
  close(): Promise<void>;
}

const CHUNK = (text: string) => `data: ${JSON.stringify({ object: 'chat.completion.chunk', choices: [{ index: 0, delta: { content: text } }] })}\n\n`;

export async function faultBackend(id: string, fault: Fault = 'ok'): Promise<FaultBackend> {
  let completions = 0;
  let probes = 0;
  let open = 0;
  const sockets = new Set<Socket>();
  const state = { fault, probesPass: true, delayMs: 0 };

  const handle = (req: IncomingMessage, res: ServerResponse): void => {
    if (req.method === 'GET') {
      probes++;
      if (state.probesPass) res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify({ object: 'list', data: [{ id: 'm', object: 'model' }] }));
      else res.writeHead(503, { 'content-type': 'application/json' }).end('{"error":"not ready"}');
      return;
    }
    let body = '';
    req.on('data', (c: Buffer) => (body += c.toString()));
    req.on('end', () => {
      completions++;
      open++;
      let counted = true;
      const settle = (): void => {
        if (counted) open--;
        counted = false;
      };
      res.on('finish', settle);
      res.on('close', settle);
      const stream = (JSON.parse(body) as { stream?: boolean }).stream === true;
      if (state.fault === 'ok' && state.delayMs > 0) setTimeout(() => answer(req, res, 'ok', stream), state.delayMs);
      else answer(req, res, state.fault, stream);
    });
  };

  const answer = (req: IncomingMessage, res: ServerResponse, fault: Fault, stream: boolean): void => {
    switch (fault) {
      case 'ok':
        if (stream) {
          res.writeHead(200, { 'content-type': 'text/event-stream' });
          res.write(CHUNK('Hello'));
          res.end(`${CHUNK(' there')}data: [DONE]\n\n`);
        } else {
          res.writeHead(200, { 'content-type': 'application/json' });
          res.end(JSON.stringify({ object: 'chat.completion', choices: [{ index: 0, message: { role: 'assistant', content: 'Hello there' }, finish_reason: 'stop' }], usage: { prompt_tokens: 3, completion_tokens: 2 } }));
        }
        return;
      case 'error-500':
        res.writeHead(500, { 'content-type': 'application/json' }).end('{"error":{"message":"CUDA error: out of memory"}}');
        return;
      case 'error-400':
        res.writeHead(400, { 'content-type': 'application/json' }).end('{"error":{"message":"prompt too long for this model"}}');
        return;
      case 'busy-503':
        res.writeHead(503, { 'content-type': 'application/json' }).end('{"error":{"message":"server overloaded"}}');
        return;
      case 'stall-before-headers':
        return;
      case 'stall-mid-stream':
        res.writeHead(200, { 'content-type': 'text/event-stream' });
        res.write(CHUNK('Hello'));
        return;
      case 'reset-before-headers':
        req.socket.destroy();
        return;
      case 'reset-mid-stream':
        res.writeHead(200, { 'content-type': 'text/event-stream' });
        res.write(CHUNK('Hello'), () => setTimeout(() => req.socket.destroy(), 20));
        return;
    }
  };

  let server: Server;
  const listen = (port: number): Promise<number> => {
    server = createServer(handle);
    server.on('connection', (socket) => {
      sockets.add(socket);
      socket.on('close', () => sockets.delete(socket));
    });
    return new Promise((resolve) => server.listen(port, '127.0.0.1', () => resolve((server.address() as AddressInfo).port)));
  };
  const stop = (): Promise<void> =>
    new Promise((resolve) => {
      server.close(() => resolve());
      for (const socket of sockets) socket.destroy();
    });
  const port = await listen(0);

  return {
    id,
    baseURL: `http://127.0.0.1:${port}/v1`,
    get fault() {
      return state.fault;
    },
    set fault(f: Fault) {
      state.fault = f;
    },
    get delayMs() {
      return state.delayMs;
    },
    set delayMs(ms: number) {
      state.delayMs = ms;
    },
    get probesPass() {
      return state.probesPass;
    },
    set probesPass(pass: boolean) {
      state.probesPass = pass;
    },
    get completions() {
      return completions;
    },
    get probes() {
      return probes;
    },
    get open() {
      return open;
    },
    connections: () => new Promise((resolve, reject) => server.getConnections((err, n) => (err ? reject(err) : resolve(n)))),
    die: stop,
    revive: async () => void (await listen(port)),
    close: stop,
  };
}

/** Timeouts short enough for the suite to run in seconds; each test overrides what it studies. */
export const FAST = {
  limits: { connectTimeoutMs: 500, headersTimeoutMs: 400, bodyTimeoutMs: 400, unhealthyMs: 60_000, retries: 1 },
  health: { probeIntervalMs: 100, probeTimeoutMs: 200, consecutiveFailures: 2, baseEjectionMs: 60_000, maxEjectionMs: 120_000 },
} as const;

export interface FaultProxy {
  readonly proxy: RunningProxy;
  readonly store: MemoryStateStore;
  readonly backends: readonly FaultBackend[];
  /** Backend events published since the proxy started, with when (performance.now(), the router's clock). */
  readonly events: (BackendEvent & { readonly atMs: number })[];
  /** One Prometheus metric as text. */
  metric(name: string): Promise<string>;
}

/**
 * The standalone proxy over fault backends (`solo` served by the first only, `m` by all), round-robin,
 * with the memory store the test reads. Pushes its teardown on `cleanup`.
 */
export async function faultProxy(
  backends: readonly FaultBackend[],
  cleanup: (() => unknown)[],
  config: { limits?: Record<string, number>; health?: Record<string, number | boolean | string> } = {},
): Promise<FaultProxy> {
  const events: (BackendEvent & { atMs: number })[] = [];
  const listener = (event: unknown): void => void events.push({ ...(event as BackendEvent), atMs: performance.now() });
  subscribe('freesh:backend', listener);
  const store = new MemoryStateStore();
  const input: FileConfigInput = {
    server: { host: '127.0.0.1', port: 0 },
    sites: [{ id: 'loc1', carbon: { gramsPerKWh: 300 } }],
    backends: backends.map((b, i) => ({ id: b.id, site: 'loc1', baseURL: b.baseURL, models: i === 0 ? ['m', 'solo'] : ['m'], maxConcurrency: 8 })),
    policy: 'round-robin',
    plan: { enabled: false },
    limits: { ...FAST.limits, ...config.limits },
    health: { ...FAST.health, ...config.health },
  };
  const proxy = await startProxy(input, { predictor: heuristicPredictor(), store });
  cleanup.push(async () => {
    unsubscribe('freesh:backend', listener);
    await proxy.shutdown(0);
    // Nothing outlives the router: every connection to every backend is closed.
    for (const b of backends) await until(async () => (await b.connections()) === 0, 3_000);
    for (const b of backends) await b.close();
  });
  return { proxy, store, backends, events, metric: (name) => proxy.router.metrics.registry.getSingleMetricAsString(name) };
}

/**
 * Nothing leaked: no request in flight in the router, no lease held in the store, no queue, and no
 * exchange left open on any backend (its socket was closed or its response finished).
 */
export async function expectNothingLeaked(f: FaultProxy): Promise<void> {
  await until(() => f.proxy.router.inFlight === 0, 3_000);
  const snapshot = await f.store.snapshot(f.backends.map((b) => b.id));
  for (const b of f.backends) expect(snapshot.get(b.id)?.inFlight, `leases held on ${b.id}`).toBe(0);
  expect(await f.metric('freesh_queue_length')).not.toMatch(/} [1-9]/);
  expect(await f.metric('freesh_in_flight_requests')).not.toMatch(/} [1-9]/);
  await until(() => f.backends.every((b) => b.open === 0), 3_000);
}

/** Waits until the router has `id` in rotation (true) or out of it (false), by its metric. */
export async function untilHealthy(f: FaultProxy, id: string, healthy: boolean, timeoutMs = 3_000): Promise<void> {
  const line = `freesh_backend_healthy{backend="${id}"} ${healthy ? 1 : 0}`;
  await until(async () => (await f.metric('freesh_backend_healthy')).includes(line), timeoutMs);
}

type Ejection = Extract<BackendEvent, { kind: 'ejected' }> & { readonly atMs: number };

/** The ejection events of a backend, in order. */
export function ejectionsOf(f: FaultProxy, id: string): Ejection[] {
  return f.events.filter((e): e is Ejection => e.kind === 'ejected' && e.backendId === id);
}

export const chat = (model = 'solo', extra: Record<string, unknown> = {}) => JSON.stringify({ model, messages: [{ role: 'user', content: 'Hello there' }], ...extra });
