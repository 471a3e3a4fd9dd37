import { type ChildProcess, spawn } from 'node:child_process';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import type { IncomingMessage, ServerResponse } from 'node:http';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Redis } from 'ioredis';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import type { FileConfigInput } from '../../src/config/schema.js';
import { deleteFleet, freshPrefix, type RedisServer, startPrivateRedis } from '../helpers/redis-server.js';
import { chatBody, post, proxyFor, type Upstream, upstream } from '../helpers/servers.js';

/**
 * Several proxy processes (`freesh serve`, the built CLI) sharing one real Redis, in front of backends
 * that count their own concurrent requests: the ground truth of what the replicas admitted together.
 */
const CLI = resolve(dirname(fileURLToPath(import.meta.url)), '../../dist/src/cli.js');

let redis: RedisServer;
let dir: string;
const cleanups: (() => Promise<unknown>)[] = [];

beforeAll(async () => {
  // A private server: one test stops and restarts it.
  redis = await startPrivateRedis();
  dir = await mkdtemp(join(tmpdir(), 'freesh-replicas-'));
});

afterEach(async () => {
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
});

afterAll(async () => {
  await redis?.stop();
  await rm(dir, { recursive: true, force: true });
});

interface Arrival {
  readonly label: string;
  readonly atMs: number;
}

/** A backend that holds each request `holdMs`, then answers; it records arrivals and the most requests it ever had at once. */
async function countingBackend(holdMs: number): Promise<Upstream & { arrivals: Arrival[]; max: () => number; active: () => number }> {
  let active = 0;
  let max = 0;
  const current = new Set<string>();
  const arrivals: Arrival[] = [];
  const u = await upstream((req: IncomingMessage, res: ServerResponse, body: string) => {
    if (req.method === 'GET') {
      res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify({ object: 'list', data: [{ id: 'm', object: 'model' }] }));
      return;
    }
    active++;
    current.add(`${req.headers['x-request-id']}@${Date.now() % 100_000}`);
    if (active > max && process.env.FREESH_DEBUG_REPLICAS) console.log('max', active, [...current].join(' '));
    max = Math.max(max, active);
    const label = /"content":"([^"]+)"/.exec(body)?.[1] ?? '?';
    arrivals.push({ label, atMs: Date.now() });
    let done = false;
    const mine = `${req.headers['x-request-id']}@${Date.now() % 100_000}`;
    const finish = (): void => {
      if (done) return;
      done = true;
      current.delete(mine);
      active--;
    };
    // A proxy that dies leaves its requests: they end here when its socket closes.
    res.on('close', finish);
    setTimeout(() => {
      if (done) return;
      res.writeHead(200, { 'content-type': 'application/json' });
      res.end(
        JSON.stringify({
          id: `c-${label}`,
          object: 'chat.completion',
          created: 0,
          model: 'm',
          choices: [{ index: 0, message: { role: 'assistant', content: 'ok' }, finish_reason: 'stop' }],
          usage: { prompt_tokens: 5, completion_tokens: 1, total_tokens: 6 },
        }),
      );
      finish();
    }, holdMs);
  });
  cleanups.push(() => u.close());
  return Object.assign(u, { arrivals, max: () => max, active: () => active });
}

interface Replica {
  readonly url: string;
  readonly child: ChildProcess;
}

/** Starts `freesh serve` on a config; resolves once it listens. */
async function startReplica(name: string, config: FileConfigInput): Promise<Replica> {
  const file = join(dir, `${name}.json`);
  await writeFile(file, JSON.stringify(config));
  const child = spawn(process.execPath, [CLI, 'serve', '--config', file], { stdio: ['ignore', 'pipe', 'pipe'] });
  let output = '';
  child.stderr!.on('data', (chunk: Buffer) => {
    output += chunk.toString();
    if (process.env.FREESH_DEBUG_REPLICAS) process.stderr.write(`[${name}] ${chunk.toString()}`);
  });
  const url = await new Promise<string>((resolveUrl, reject) => {
    const timer = setTimeout(() => reject(new Error(`${name} did not start: ${output}`)), 15_000);
    child.stdout!.on('data', (chunk: Buffer) => {
      output += chunk.toString();
      const match = /freesh listening on (\S+)/.exec(output);
      if (match) {
        clearTimeout(timer);
        resolveUrl(match[1]!);
      }
    });
    child.once('exit', (code) => reject(new Error(`${name} exited (${code}): ${output}`)));
  });
  cleanups.push(
    () =>
      new Promise<void>((done) => {
        if (child.exitCode !== null || child.signalCode !== null) return done();
        child.once('exit', () => done());
        child.kill('SIGTERM');
      }),
  );
  return { url, child };
}

function fleetConfig(backends: Upstream[], keyPrefix: string, replicaId: string, limit: number, extra: Partial<FileConfigInput> = {}): FileConfigInput {
  return {
    server: { host: '127.0.0.1', port: 0 },
    sites: [{ id: 'loc1', carbon: { gramsPerKWh: 300 } }],
    backends: backends.map((b, i) => ({ id: `b${i + 1}`, site: 'loc1', baseURL: b.baseURL, models: ['m'], maxConcurrency: limit })),
    policy: 'freesh',
    plan: { enabled: false },
    sloClasses: {
      urgent: { ttftBaseMs: 20_000, tbtMs: 1_000 },
      relaxed: { ttftBaseMs: 600_000, tbtMs: 1_000 },
    },
    defaults: { sloClass: 'relaxed' },
    limits: { leaseTtlMs: 3_000, maxQueueMs: 60_000 },
    // Urgent requests (latest start ~20 s away) always go first; relaxed ones (~600 s) by tenant service.
    fairness: { urgentWithinMs: 60_000 },
    state: { redis: { url: redis.url, keyPrefix, replicas: 3 }, replicaId },
    ...extra,
  };
}

async function replicas(backends: Upstream[], limit: number, extra: Partial<FileConfigInput> = {}): Promise<{ urls: string[]; children: ChildProcess[]; keyPrefix: string }> {
  const keyPrefix = freshPrefix();
  cleanups.push(() => deleteFleet(redis.url, keyPrefix));
  const started = await Promise.all(['r1', 'r2', 'r3'].map((id) => startReplica(id, fleetConfig(backends, keyPrefix, id, limit, extra))));
  return { urls: started.map((r) => r.url), children: started.map((r) => r.child), keyPrefix };
}

function send(url: string, label: string, slo: string, tenant: string) {
  return post(`${url}/v1/chat/completions`, chatBody({ messages: [{ role: 'user', content: label }], max_tokens: 1 }), {
    'x-freesh-slo': slo,
    'x-freesh-tenant': tenant,
  });
}

/** Sizes of every per-backend key of the fleet: leases, tags, queue, tickets, grants and grant expiries. */
async function leftovers(keyPrefix: string, backendIds: string[]): Promise<number> {
  const client = new Redis(redis.url);
  try {
    const p = `{${keyPrefix}}`;
    let total = 0;
    for (const id of backendIds) {
      total += (await client.zcard(`${p}:leases:${id}`)) + (await client.hlen(`${p}:tags:${id}`)) + (await client.zcard(`${p}:queue:${id}`));
      total += (await client.hlen(`${p}:tickets:${id}`)) + (await client.hlen(`${p}:grants:${id}`)) + (await client.zcard(`${p}:grant-expiry:${id}`));
    }
    return total;
  } finally {
    client.disconnect();
  }
}

describe('three proxy processes sharing one Redis', () => {
  it('never exceed a backend limit together, grant the most urgent waiting request of any replica first, and leave nothing behind', async () => {
    const backends = [await countingBackend(150), await countingBackend(150)];
    const { urls, keyPrefix } = await replicas(backends, 2);
    // Warm: every replica has connected to Redis and the backends and served a request.
    await Promise.all(urls.flatMap((url, r) => [0, 1].map((i) => send(url, `warm-${r}-${i}`, 'relaxed', 'warm'))));
    for (const b of backends) b.arrivals.length = 0;
    // Urgent requests go through r1 only; r2 and r3 carry relaxed ones. Queues local to each replica
    // would let r2 and r3 take freed slots while r1's urgent requests wait.
    const sends = Array.from({ length: 90 }, (_, i) => {
      const urgent = i % 3 === 0;
      return send(urls[i % 3]!, `${urgent ? 'urgent' : 'relaxed'}-${i}`, urgent ? 'urgent' : 'relaxed', `tenant-${i % 4}`);
    });
    // From when every request has reached a backend or waits in Redis, each backend's queue holds them
    // all: from then on no relaxed request may reach a backend while an urgent one placed there waits.
    const client = new Redis(redis.url);
    cleanups.push(async () => client.disconnect());
    let allQueuedMs = Number.POSITIVE_INFINITY;
    const watching = (async () => {
      while (allQueuedMs === Number.POSITIVE_INFINITY) {
        const arrived = backends.reduce((n, b) => n + b.arrivals.length, 0);
        const queued = (await client.zcard(`{${keyPrefix}}:queue:b1`)) + (await client.zcard(`{${keyPrefix}}:queue:b2`));
        if (arrived + queued >= 90) allQueuedMs = Date.now();
        else await new Promise((r) => setTimeout(r, 5));
      }
    })();
    const answers = await Promise.all(sends);
    await watching;
    expect(answers.map((a) => a.status)).toEqual(answers.map(() => 200));
    expect(backends.map((b) => b.max())).toEqual([2, 2]);
    expect(backends.flatMap((b) => b.arrivals)).toHaveLength(90);
    let inversions = 0;
    let checked = 0;
    for (const { arrivals } of backends) {
      // A request granted just before the last one queued may still be on its way: give it 300 ms.
      const later = arrivals.filter((a) => a.atMs > allQueuedMs + 300);
      checked += later.length;
      later.forEach((a, i) => {
        if (a.label.startsWith('relaxed')) inversions += later.slice(i + 1).filter((b) => b.label.startsWith('urgent')).length;
      });
    }
    // Most of the burst waited (the check is not vacuous), in least-laxity order across replicas: the
    // store grants in that order; what reaches a backend can still swap a pair when the replica that
    // took an urgent grant forwards it later than another forwards its grant (here r1 carries every
    // urgent request). Queues local to each replica give ~180 inversions in this test.
    expect(checked).toBeGreaterThan(50);
    expect(inversions).toBeLessThanOrEqual(2);
    expect(await leftovers(keyPrefix, ['b1', 'b2'])).toBe(0);
  });

  it("returns a killed replica's slots within the lease TTL, and the others keep serving", async () => {
    const backends = [await countingBackend(1_500), await countingBackend(1_500)];
    const { urls, children, keyPrefix } = await replicas(backends, 1);
    // r1 takes both backends' only slot, then dies without a word.
    const dying = [send(urls[0]!, 'dying-0', 'relaxed', 't')];
    await until(() => backends.some((b) => b.arrivals.length === 1));
    dying.push(send(urls[0]!, 'dying-1', 'relaxed', 't'));
    await until(() => backends.every((b) => b.arrivals.length === 1));
    children[0]!.kill('SIGKILL');
    const killedAt = Date.now();
    await Promise.allSettled(dying);
    const after = Array.from({ length: 4 }, (_, i) => send(urls[1 + (i % 2)]!, `after-${i}`, 'relaxed', 't'));
    const answers = await Promise.all(after);
    expect(answers.map((a) => a.status)).toEqual([200, 200, 200, 200]);
    const firstAfter = Math.min(...backends.flatMap((b) => b.arrivals.filter((a) => a.label.startsWith('after')).map((a) => a.atMs)));
    // The dead replica's leases held its slots until they expired (renewed every TTL/3 = 1 s, TTL 3 s), not longer.
    expect(firstAfter - killedAt).toBeGreaterThan(1_500);
    expect(firstAfter - killedAt).toBeLessThan(3_000 + 1_500);
    expect(backends.map((b) => b.max())).toEqual([1, 1]);
    expect(await leftovers(keyPrefix, ['b1', 'b2'])).toBe(0);
  }, 30_000);

  it('keep serving while Redis is stopped and restarted under load, near the limit, and leave no lease behind', async () => {
    const backends = [await countingBackend(150), await countingBackend(150)];
    // A limit the three replicas' local shares add up to exactly (⌈3 / 3⌉ each) while Redis is away.
    const { urls, keyPrefix } = await replicas(backends, 3);
    const sends: Promise<{ status: number }>[] = [];
    const load = (async () => {
      for (let i = 0; i < 120; i++) {
        sends.push(send(urls[i % 3]!, `r-${i}`, i % 2 === 0 ? 'urgent' : 'relaxed', `tenant-${i % 3}`));
        await new Promise((r) => setTimeout(r, 25));
      }
    })();
    await new Promise((r) => setTimeout(r, 800));
    if (process.env.FREESH_DEBUG_REPLICAS) console.log('stop', Date.now() % 100_000);
    await redis.stop();
    await new Promise((r) => setTimeout(r, 1_200));
    if (process.env.FREESH_DEBUG_REPLICAS) console.log('restart', Date.now() % 100_000);
    await redis.restart();
    if (process.env.FREESH_DEBUG_REPLICAS) console.log('restarted', Date.now() % 100_000);
    await load;
    const answers = await Promise.all(sends);
    expect(answers.map((a) => a.status)).toEqual(answers.map(() => 200));
    expect(backends.flatMap((b) => b.arrivals)).toHaveLength(120);
    // While replicas switch between Redis and local state (each then admits ⌈3 / 3⌉ = 1 less the Redis
    // leases it still runs), a switch can overlap a grant made on the other side: up to two over the
    // limit were seen on this machine (of 120 requests, in a 1.2 s outage). Outside outages the first
    // test holds the limit exactly.
    expect(Math.max(...backends.map((b) => b.max()))).toBeLessThanOrEqual(3 + 2);
    // Leases released while Redis was away expire there by their TTL (3 s); nothing else remains.
    await until(async () => (await leftovers(keyPrefix, ['b1', 'b2'])) === 0, 6_000);
  }, 60_000);
});

describe('a proxy on Redis', () => {
  it('says on /healthz and in /metrics when it serves on local state, and again when Redis is back', async () => {
    const backends = [await countingBackend(10)];
    const keyPrefix = freshPrefix();
    cleanups.push(() => deleteFleet(redis.url, keyPrefix));
    const config = fleetConfig(backends, keyPrefix, 'solo', 4);
    const proxy = await proxyFor({ ...config, state: { redis: { url: redis.url, keyPrefix, commandTimeoutMs: 300 }, replicaId: 'solo' } });
    cleanups.push(() => proxy.shutdown(1_000));
    const health = async () => (await fetch(`${proxy.url}/healthz`)).json() as Promise<{ status: string; state?: string }>;
    const gauge = async () => /^freesh_state_store_degraded (\d)/m.exec(await (await fetch(`${proxy.url}/metrics`)).text())?.[1];
    expect(await health()).toMatchObject({ status: 'ok', state: 'shared' });
    expect(await gauge()).toBe('0');

    await redis.stop();
    // The next request finds Redis gone and is served on local state all the same.
    expect((await send(proxy.url, 'during', 'relaxed', 't')).status).toBe(200);
    expect(await health()).toMatchObject({ status: 'degraded', state: 'local' });
    expect(await gauge()).toBe('1');

    await redis.restart();
    await until(async () => (await health()).state === 'shared');
    expect(await health()).toMatchObject({ status: 'ok' });
    expect(await gauge()).toBe('0');
    expect((await send(proxy.url, 'after', 'relaxed', 't')).status).toBe(200);
  }, 30_000);
});

async function until(check: () => boolean | Promise<boolean>, timeoutMs = 10_000): Promise<void> {
  const end = Date.now() + timeoutMs;
  while (!(await check())) {
    if (Date.now() > end) throw new Error('condition not met in time');
    await new Promise((r) => setTimeout(r, 20));
  }
}
