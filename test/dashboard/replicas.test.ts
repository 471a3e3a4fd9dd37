import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { DashboardState } from '../../src/dashboard/state.js';
import type { RunningProxy } from '../../src/proxy/standalone.js';
import { deleteFleet, freshPrefix, type RedisServer, startPrivateRedis } from '../helpers/redis-server.js';
import { chatBody, post, proxyFor, until, upstream } from '../helpers/servers.js';

describe('the dashboard of one replica among several sharing a Redis store', () => {
  let redis: RedisServer;
  beforeAll(async () => {
    redis = await startPrivateRedis();
  });
  afterAll(() => redis?.stop());

  it("shows the load other replicas put on the fleet, and only its own totals", async () => {
    const held: (() => void)[] = [];
    const backend = await upstream((_req, res) => {
      held.push(() => {
        res.writeHead(200, { 'content-type': 'application/json' });
        res.end(JSON.stringify({ id: 'x', object: 'chat.completion', choices: [{ index: 0, message: { role: 'assistant', content: 'hi' }, finish_reason: 'stop' }], usage: { prompt_tokens: 3, completion_tokens: 1, total_tokens: 4 } }));
      });
    });
    const keyPrefix = freshPrefix();
    const replica = (id: string): Promise<RunningProxy> =>
      proxyFor({
        server: { host: '127.0.0.1', port: 0 },
        sites: [{ id: 's' }],
        backends: [{ id: 'b', site: 's', baseURL: backend.baseURL, models: ['m'], maxConcurrency: 4 }],
        plan: { enabled: false },
        dashboard: { enabled: true },
        state: { redis: { url: redis.url, keyPrefix, replicas: 2 }, replicaId: id },
      });
    const [watching, serving] = await Promise.all([replica('r1'), replica('r2')]);
    try {
      const replies = [0, 1].map(() => post(`${serving.url}/v1/chat/completions`, chatBody()).catch((err: unknown) => ({ status: String(err) })));
      await until(() => held.length === 2);
      const state = async (p: RunningProxy) => (await (await fetch(`${p.url}/dashboard/api/state`)).json()) as DashboardState;
      // The snapshot a replica reads is refreshed from the store in the background.
      await until(async () => (await state(watching)).backends[0]!.inFlight === 2, 3_000);
      const metrics = await (await fetch(`${watching.url}/metrics`)).text();
      expect(metrics).toMatch(/^freesh_cluster_in_flight_requests\{backend="b"\} 2$/m);
      expect(metrics).toMatch(/^freesh_in_flight_requests\{backend="b"\} 0$/m);
      for (const release of held) release();
      for (const r of await Promise.all(replies)) expect(r.status).toBe(200);
      const [w, s] = await Promise.all([state(watching), state(serving)]);
      expect(w.fleet.served).toBe(0);
      expect(w.decisions).toHaveLength(0);
      expect(s.fleet.served).toBe(2);
      expect(s.decisions).toHaveLength(2);
    } finally {
      await Promise.all([watching.shutdown(500), serving.shutdown(500)]);
      await backend.close();
      await deleteFleet(redis.url, keyPrefix);
    }
  });
});
