import { afterEach, describe, expect, it } from 'vitest';
import { createFetchHandler } from '../../src/http/fetch-handler.js';
import { heuristicPredictor } from '../../src/predict/predictor.js';
import { createRouter } from '../../src/router.js';
import { startFixedBackend } from '../../src/sim/fixed-backend.js';
import { chatBody } from '../helpers/servers.js';
import { describeEdge } from './edge.case.js';

// The handler called directly: the Request is the client's, the Response what it receives.
describeEdge('fetch handler', (router, options) => {
  const handler = createFetchHandler(router, options);
  return Promise.resolve({ send: handler, bufferedBytes: 0, close: () => Promise.resolve() });
});

describe('router.handle', () => {
  const cleanup: (() => Promise<unknown>)[] = [];
  afterEach(async () => {
    for (const fn of cleanup.splice(0).reverse()) await fn();
  });

  it('answers as the fetch handler does', async () => {
    const fixed = await startFixedBackend();
    cleanup.push(() => fixed.close());
    const router = createRouter({
      sites: [{ id: 's', carbon: { gramsPerKWh: 100 } }],
      backends: [{ id: 'b1', site: 's', baseURL: fixed.baseURL, models: ['m'] }],
      plan: { enabled: false },
      predictor: heuristicPredictor(),
    });
    cleanup.push(() => router.close());
    const handler = createFetchHandler(router);
    const requests = () => [
      new Request('http://edge.test/v1/chat/completions', { method: 'POST', headers: { 'x-request-id': 'r1' }, body: chatBody() }),
      new Request('http://edge.test/v1/chat/completions', { method: 'POST', body: '{"model":"m"' }),
      new Request('http://edge.test/v1/models'),
      new Request('http://edge.test/v1/embeddings', { method: 'POST', body: '{}' }),
      new Request('http://edge.test/healthz', { method: 'DELETE' }),
    ];
    // The cost estimates move as calibration learns from each completion, so two requests in a row differ there.
    const estimates = new Set(['x-freesh-energy-j', 'x-freesh-carbon-g']);
    const answer = async (res: Response) => ({ status: res.status, headers: [...res.headers].filter(([name]) => !estimates.has(name)), body: await res.text() });
    for (const [viaHandle, viaHandler] of requests().map((r, i) => [r, requests()[i]!] as const)) {
      expect(await answer(await router.handle(viaHandle))).toEqual(await answer(await handler(viaHandler)));
    }
  });
});
