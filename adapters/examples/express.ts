/**
 * An Express gateway with freesh inside, over a simulated fleet (the demo's four GPU backends on
 * local ports). Run: `npm run example:express`, then try the curl lines it prints.
 *
 * In an app of your own, import from the package: `import { freesh } from 'freesh/express'` and
 * `import { createRouter } from 'freesh'`. This file imports the sources so it runs from a checkout.
 */
import express from 'express';
import { createRouter } from '../../src/index.js';
import { DEMO_MODEL, startDemoFleet } from '../../src/sim/index.js';
import { freesh } from '../express/index.js';

const port = Number(process.env.PORT ?? 3000);
const fleet = await startDemoFleet();
const { server: _server, ...config } = fleet.config;
const router = createRouter(config);

const app = express();
app.get('/', (_req, res) => void res.send('An Express gateway; the LLM routes are freesh\'s.\n'));
app.use(freesh(router)); // POST /v1/chat/completions, POST /v1/completions, GET /v1/models
const server = app.listen(port, '127.0.0.1', () => {
  const base = `http://127.0.0.1:${port}`;
  console.log(`Express gateway on ${base} (model ${DEMO_MODEL} on ${fleet.backends.length} simulated backends)`);
  console.log(`  curl -si ${base}/v1/chat/completions -H 'content-type: application/json' -d '{"model":"${DEMO_MODEL}","messages":[{"role":"user","content":"Hello"}],"max_tokens":20}'`);
  console.log(`  curl -sN ${base}/v1/chat/completions -H 'content-type: application/json' -d '{"model":"${DEMO_MODEL}","stream":true,"messages":[{"role":"user","content":"Hello"}],"max_tokens":20}'`);
  console.log('Ctrl-C to stop.');
});

process.once('SIGINT', () => {
  server.close();
  server.closeAllConnections();
  void router.close().then(() => fleet.close());
});
