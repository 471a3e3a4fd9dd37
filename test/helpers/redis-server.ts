import { afterAll, afterEach, beforeAll } from 'vitest';
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { createServer } from 'node:net';
import { Redis } from 'ioredis';

/**
 * A real Redis for tests: `REDIS_URL` when set (a shared server: tests keep apart by key prefix),
 * else a private `redis-server` on a free port, without persistence. Never skipped: with neither,
 * starting fails and says what to install.
 */
export interface RedisServer {
  readonly url: string;
  /** Stops the server process (a private one only) and waits until it has exited. */
  stop(): Promise<void>;
  /** Starts it again on the same port, empty, and waits until it answers. */
  restart(): Promise<void>;
}

/** The shared server when `REDIS_URL` is set, else a private one. */
export async function startRedis(): Promise<RedisServer> {
  const url = process.env['REDIS_URL'];
  if (url !== undefined && url !== '') {
    const refuse = (): Promise<void> => Promise.reject(new Error('The server at REDIS_URL is shared: it cannot be stopped by a test'));
    return { url, stop: () => Promise.resolve(), restart: refuse };
  }
  return startPrivateRedis();
}

/** A private `redis-server` that the test may stop and restart (degraded mode). */
export async function startPrivateRedis(): Promise<RedisServer> {
  if (spawnSync('redis-server', ['--version']).error !== undefined) {
    throw new Error('These tests need a real Redis: install redis-server (apt-get install redis-server) or set REDIS_URL');
  }
  const port = await freePort();
  let child: ChildProcess | undefined = await launch(port);
  return {
    url: `redis://127.0.0.1:${port}`,
    async stop() {
      const running = child;
      child = undefined;
      if (running !== undefined) await kill(running);
    },
    async restart() {
      if (child !== undefined) await kill(child);
      child = await launch(port);
    },
  };
}

/** A key prefix no other test uses. */
export function freshPrefix(): string {
  return `test-${randomBytes(6).toString('hex')}`;
}

/** Deletes every key of a fleet, found by SCAN on its prefix (never KEYS). */
export async function deleteFleet(url: string, keyPrefix: string): Promise<void> {
  const client = new Redis(url);
  try {
    let cursor = '0';
    do {
      const [next, keys] = await client.scan(cursor, 'MATCH', `{${keyPrefix}}:*`, 'COUNT', 500);
      if (keys.length > 0) await client.del(...keys);
      cursor = next;
    } while (cursor !== '0');
  } finally {
    client.disconnect();
  }
}

async function launch(port: number): Promise<ChildProcess> {
  const child = spawn('redis-server', ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no'], {
    stdio: 'ignore',
  });
  const deadline = Date.now() + 10_000;
  for (;;) {
    if (child.exitCode !== null) throw new Error(`redis-server exited with code ${child.exitCode} on port ${port}`);
    const client = new Redis({ port, host: '127.0.0.1', lazyConnect: true, maxRetriesPerRequest: 0, retryStrategy: () => null });
    client.on('error', () => undefined);
    const up = await client.connect().then(
      () => client.ping().then(() => true),
      () => false,
    );
    client.disconnect();
    if (up) return child;
    if (Date.now() > deadline) {
      child.kill('SIGKILL');
      throw new Error(`redis-server did not answer on port ${port} within 10 s`);
    }
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
}

function kill(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return Promise.resolve();
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  child.kill('SIGKILL');
  return exited;
}

function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const address = server.address();
      server.close(() => (typeof address === 'object' && address !== null ? resolve(address.port) : reject(new Error('No port'))));
    });
  });
}

/**
 * A Redis for the tests of one file: started before them, stopped after; `cleanups` run after each
 * test, last added first (stores to close, fleets to delete).
 */
export function redisForFile(start: () => Promise<RedisServer> = startRedis): { server(): RedisServer; readonly cleanups: (() => Promise<unknown>)[] } {
  let server: RedisServer | undefined;
  const cleanups: (() => Promise<unknown>)[] = [];
  beforeAll(async () => {
    server = await start();
  });
  afterEach(async () => {
    for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
  });
  afterAll(async () => {
    await server?.stop();
  });
  return { server: () => server!, cleanups };
}
