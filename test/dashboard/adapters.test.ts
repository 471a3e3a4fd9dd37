import type { Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { serve, type ServerType } from '@hono/node-server';
import express from 'express';
import Fastify from 'fastify';
import { Hono } from 'hono';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { freesh as expressFreesh } from '../../adapters/express/index.js';
import fastifyFreesh from '../../adapters/fastify/index.js';
import { type FreeshEnv, freesh as honoFreesh } from '../../adapters/hono/index.js';
import type { DashboardState } from '../../src/dashboard/state.js';
import { heuristicPredictor } from '../../src/predict/predictor.js';
import { createRouter, type Router } from '../../src/router.js';
import { closeServer } from '../../src/sim/backend-server.js';
import { startFixedBackend } from '../../src/sim/fixed-backend.js';
import { chatBody, post } from '../helpers/servers.js';

const cleanups: (() => Promise<unknown>)[] = [];
let router: Router;
beforeAll(async () => {
  const backend = await startFixedBackend();
  cleanups.push(() => backend.close());
  router = createRouter({
    sites: [{ id: 's' }],
    backends: [{ id: 'b', site: 's', baseURL: backend.baseURL, models: ['m'] }],
    plan: { enabled: false },
    predictor: heuristicPredictor(),
    dashboard: { enabled: true },
  });
  cleanups.push(() => router.close());
});
afterAll(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

async function origin(server: Server | ServerType): Promise<string> {
  const s = server as Server;
  if (!s.listening) await new Promise<void>((resolve) => s.listen(0, '127.0.0.1', resolve));
  cleanups.push(() => closeServer(s));
  return `http://127.0.0.1:${(s.address() as AddressInfo).port}`;
}

const apps: Record<string, () => Promise<string>> = {
  Express: async () => {
    const app = express();
    app.use('/ops', expressFreesh(router));
    return `${await origin(app.listen(0, '127.0.0.1'))}/ops`;
  },
  Fastify: async () => {
    const app = Fastify();
    await app.register(fastifyFreesh, { router, basePath: '/ops' });
    await app.listen({ port: 0, host: '127.0.0.1' });
    cleanups.push(() => app.close());
    return `http://127.0.0.1:${(app.server.address() as AddressInfo).port}/ops`;
  },
  Hono: async () => {
    const app = new Hono<FreeshEnv>();
    app.use('/ops/*', honoFreesh(router, { basePath: '/ops' }));
    const server = await new Promise<ServerType>((resolve) => {
      const s = serve({ fetch: app.fetch, port: 0, hostname: '127.0.0.1' }, () => resolve(s));
    });
    return `${await origin(server)}/ops`;
  },
};

describe.each(Object.keys(apps))('the dashboard inside a %s app', (name) => {
  it('is served under the mount path, with the JSON of the router it wraps', async () => {
    const base = await apps[name]!();
    const served = router.dashboard!.state().fleet.served;
    const res = await post(`${base}/v1/chat/completions`, chatBody({ max_tokens: 2 }));
    expect(res.status).toBe(200);
    const page = await fetch(`${base}/dashboard`);
    expect(page.status).toBe(200);
    expect(page.headers.get('content-type')).toBe('text/html; charset=utf-8');
    expect(await page.text()).toContain('Decision inspector');
    const state = (await (await fetch(`${base}/dashboard/api/state`)).json()) as DashboardState;
    expect(state.fleet.served).toBe(served + 1);
    expect(state.decisions[0]!.picked).toBe('b');
    expect((await fetch(`${base}/dashboard/chart.js`)).status).toBe(200);
  });
});
