/**
 * A Hono app on Node with freesh mounted under /llm, beside the app's own routes.
 *
 *   npm run example:hono          (PORT=8787 by default)
 *
 * In an application the imports are `freesh`, `freesh/hono` (and `freesh/sim` only for these demo
 * backends); this file sits in the freesh repository, so it imports the sources.
 */
import { serve } from '@hono/node-server';
import { Hono } from 'hono';
import { HTTPException } from 'hono/http-exception';
import { createRouter, FreeshError } from '../../src/index.js';
import { startSimBackend } from '../../src/sim/index.js';
import { type FreeshEnv, freesh } from '../hono/index.js';

// Two simulated inference servers, standing in for real OpenAI-compatible backends.
const [paris, warsaw] = await Promise.all([
  startSimBackend({ models: ['llama-3-70b'], timeScale: 0.05, seed: 1 }),
  startSimBackend({ models: ['llama-3-70b'], timeScale: 0.05, seed: 2 }),
]);

const router = createRouter({
  sites: [
    { id: 'fr', carbon: { gramsPerKWh: 50 } },
    { id: 'pl', carbon: { gramsPerKWh: 650 } },
  ],
  backends: [
    { id: 'paris', site: 'fr', baseURL: paris.baseURL, models: ['llama-3-70b'], maxConcurrency: 8 },
    { id: 'warsaw', site: 'pl', baseURL: warsaw.baseURL, models: ['llama-3-70b'], maxConcurrency: 8 },
  ],
});

const app = new Hono<FreeshEnv>();

// Runs around every request: the routing decision is on the context once freesh has served one.
app.use('*', async (c, next) => {
  await next();
  const decision = c.var.freesh;
  if (decision) console.log(`${c.req.method} ${c.req.path} → ${decision.backend} (${decision.site}), ~${decision.energyJ} J, ~${decision.carbonG} gCO2e`);
});

app.use('/llm/*', freesh(router, { basePath: '/llm' }));
app.get('/', (c) => c.text('The app\'s own routes are untouched. POST /llm/v1/chat/completions for the model.\n'));

// The router's errors arrive as HTTPException with the FreeshError as cause: log them, answer them as the proxy would.
app.onError((err, c) => {
  if (err instanceof HTTPException) {
    if (err.cause instanceof FreeshError) console.warn(`freesh refused ${c.req.path}: ${err.cause.code} (${err.status})`);
    return err.getResponse();
  }
  console.error(err);
  return c.json({ error: { message: 'Internal error', type: 'server_error', param: null, code: null } }, 500);
});

const port = Number(process.env.PORT ?? 8787);
const server = serve({ fetch: app.fetch, port, hostname: '127.0.0.1' }, (info) => {
  const base = `http://127.0.0.1:${info.port}`;
  console.log(`listening on ${base}
try:
  curl ${base}/
  curl ${base}/llm/v1/models
  curl -N ${base}/llm/v1/chat/completions -H 'content-type: application/json' -H 'x-freesh-slo: interactive' \\
    -d '{"model":"llama-3-70b","stream":true,"max_tokens":20,"messages":[{"role":"user","content":"Hello"}]}'
Ctrl-C to stop.`);
});

process.once('SIGINT', () => {
  server.close();
  void Promise.all([router.close(), paris.close(), warsaw.close()]).then(() => process.exit(0));
});
