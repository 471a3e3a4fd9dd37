/**
 * A Fastify gateway with freesh registered as a plugin, over a simulated fleet (the demo's four GPU
 * backends on local ports). Run: `npm run example:fastify`, then try the curl lines it prints.
 *
 * In an app of your own, import from the package: `import freesh from 'freesh/fastify'` and
 * `import { createRouter } from 'freesh'`. This file imports the sources so it runs from a checkout.
 */
import Fastify from 'fastify';
import { createRouter } from '../../src/index.js';
import { DEMO_MODEL, startDemoFleet } from '../../src/sim/index.js';
import freesh from '../fastify/index.js';

const port = Number(process.env.PORT ?? 3000);
const fleet = await startDemoFleet();
const { server: _server, ...config } = fleet.config;
const router = createRouter(config);

const app = Fastify({ logger: true });
await app.register(freesh, { router }); // POST /v1/chat/completions, POST /v1/completions, GET /v1/models
app.get('/', async () => 'A Fastify gateway; the LLM routes are freesh\'s.\n');
// request.freesh: where freesh placed the request, visible in the app's own hooks.
app.addHook('onResponse', async (request, reply) => {
  if (request.freesh) request.log.info({ backend: request.freesh.backend.id, status: reply.statusCode }, 'served by freesh');
});
app.addHook('onClose', async () => {
  await router.close();
  await fleet.close();
});

const base = await app.listen({ port, host: '127.0.0.1' });
console.log(`Fastify gateway on ${base} (model ${DEMO_MODEL} on ${fleet.backends.length} simulated backends)`);
console.log(`  curl -si ${base}/v1/chat/completions -H 'content-type: application/json' -d '{"model":"${DEMO_MODEL}","messages":[{"role":"user","content":"Hello"}],"max_tokens":20}'`);
console.log(`  curl -sN ${base}/v1/chat/completions -H 'content-type: application/json' -d '{"model":"${DEMO_MODEL}","stream":true,"messages":[{"role":"user","content":"Hello"}],"max_tokens":20}'`);
console.log('Ctrl-C to stop.');
process.once('SIGINT', () => void app.close());
