import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { ConfigError, type FileConfigInput } from '../../src/config/schema.js';
import { startProxy } from '../../src/proxy/standalone.js';
import { type RedisServer, startRedis } from '../helpers/redis-server.js';
import { chatBody, fleetConfig, post, until, upstream } from '../helpers/servers.js';

let redis: RedisServer;
const cleanups: (() => unknown)[] = [];
beforeAll(async () => {
  redis = await startRedis();
});
afterEach(async () => {
  for (const fn of cleanups.splice(0).reverse()) await fn();
});
afterAll(async () => redis?.stop());

/** A backend that answers each request when the test says, counting those it runs at once. */
async function heldBackend() {
  const state = { running: 0, most: 0, releases: [] as (() => void)[] };
  const up = await upstream((req, res) => {
    if (req.method === 'GET') return void res.writeHead(200, { 'content-type': 'application/json' }).end('{"object":"list","data":[]}');
    state.running++;
    state.most = Math.max(state.most, state.running);
    state.releases.push(() => {
      state.running--;
      res.writeHead(200, { 'content-type': 'application/json' }).end('{"object":"chat.completion","choices":[]}');
    });
  });
  cleanups.push(() => up.close());
  return { up, state };
}

describe('reload with the cluster state in Redis', () => {
  it('the new router queues behind the old one\'s slot in the shared queue, and is granted it when the old request ends', async () => {
    const { up, state } = await heldBackend();
    const keyPrefix = `reload-${Math.random().toString(36).slice(2, 8)}`;
    const config = (policy: string): FileConfigInput =>
      fleetConfig([{ id: 'b1', baseURL: up.baseURL, maxConcurrency: 1 }], { policy, plan: { enabled: false }, state: { redis: { url: redis.url, keyPrefix }, replicaId: 'r1' } });
    const p = await startProxy(config('least-loaded'));
    cleanups.push(() => p.shutdown(0));

    const first = post(`${p.url}/v1/chat/completions`, chatBody());
    await until(() => state.running === 1);
    const old = p.router;
    await p.reload(config('round-robin'));
    expect(p.router).not.toBe(old);
    expect(p.router.policy.name).toBe('round-robin');

    const second = post(`${p.url}/v1/chat/completions`, chatBody());
    await until(async () => /^freesh_queue_length\{backend="b1"\} 1$/m.test(await p.router.metrics.registry.metrics()));
    // Still one at a time: the old router's lease counts in the shared store.
    expect(state.running).toBe(1);
    state.releases[0]!();
    expect((await first).status).toBe(200);
    await until(() => state.releases.length === 2);
    state.releases[1]!();
    expect((await second).status).toBe(200);
    expect(state.most).toBe(1);
    // The old router is closed once its last request ended (checked every 100 ms); the store stays open for the new one.
    await until(() => old.inFlight === 0);
    await new Promise((r) => setTimeout(r, 500));
    const third = post(`${p.url}/v1/chat/completions`, chatBody());
    await until(() => state.releases.length === 3);
    state.releases[2]!();
    expect((await third).status).toBe(200);
  });

  it('refuses a reload that changes where state is kept, and keeps the running router', async () => {
    const { up } = await heldBackend();
    const base = fleetConfig([{ id: 'b1', baseURL: up.baseURL }], { plan: { enabled: false } });
    const p = await startProxy(base);
    cleanups.push(() => p.shutdown(0));
    const running = p.router;
    await expect(p.reload({ ...base, state: { redis: { url: redis.url } } })).rejects.toThrow(ConfigError);
    await expect(p.reload({ ...base, backends: [] })).rejects.toThrow(/`backends`/);
    expect(p.router).toBe(running);
  });
});
