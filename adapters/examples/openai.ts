/**
 * The official openai client, routed by freesh in-process: a streamed completion, its usage and
 * routing decision, a batch-class call for another tenant, and the router's refusal as the client's
 * error class.
 *
 *   npm run example:openai
 *
 * In an application the imports are `freesh`, `freesh/openai` (and `freesh/sim` only for the demo
 * backend); this file sits in the freesh repository, so it imports the sources.
 */
import OpenAI from 'openai';
import { createRouter } from '../../src/index.js';
import { startSimBackend } from '../../src/sim/index.js';
import { decisionOf, routedClientOptions } from '../openai/index.js';

const backend = await startSimBackend({ models: ['llama-3-70b'], timeScale: 0.05 });
const router = createRouter({
  sites: [{ id: 'fr', carbon: { gramsPerKWh: 50 } }],
  backends: [{ id: 'paris', site: 'fr', baseURL: backend.baseURL, models: ['llama-3-70b'], maxConcurrency: 1 }],
  limits: { maxQueueLength: 0 }, // so that the last call below is refused at once
});

const client = new OpenAI(routedClientOptions(router));

// 1. A streamed completion, routed and metered as through the proxy.
const { data: stream, response } = await client.chat.completions
  .create({ model: 'llama-3-70b', messages: [{ role: 'user', content: 'Tell me a story' }], max_tokens: 24, stream: true, stream_options: { include_usage: true } })
  .withResponse();
const decision = decisionOf(response.headers);
console.log(`routed to ${decision?.backend} (${decision?.site}), predicted ${decision?.predictedTokens} tokens, ~${decision?.energyJ} J`);
for await (const chunk of stream) {
  process.stdout.write(chunk.choices[0]?.delta.content ?? '');
  if (chunk.usage) console.log(`\nusage: ${JSON.stringify(chunk.usage)}`);
}

// 2. Tenant and SLO class per call.
const batch = await client.chat.completions.create(
  { model: 'llama-3-70b', messages: [{ role: 'user', content: 'Summarise the report' }], max_tokens: 8 },
  { headers: { 'x-freesh-tenant': 'acme', 'x-freesh-slo': 'batch' } },
);
console.log(`batch call for acme: ${batch.choices[0]?.message.content}`);

// 3. The one slot busy and no queue: the router refuses, the client throws RateLimitError at once (no retries on top of the router's).
const busy = await client.chat.completions.create({ model: 'llama-3-70b', messages: [{ role: 'user', content: 'Hi' }], max_tokens: 64, stream: true });
try {
  await client.chat.completions.create({ model: 'llama-3-70b', messages: [{ role: 'user', content: 'Hi again' }] });
} catch (err) {
  if (!(err instanceof OpenAI.RateLimitError)) throw err;
  console.log(`refused: ${err.status} ${err.code}, retry-after ${err.headers?.get('retry-after')} s`);
}
busy.controller.abort();

await router.close();
await backend.close();
