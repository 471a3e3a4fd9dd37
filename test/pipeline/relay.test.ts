import { afterEach, describe, expect, it } from 'vitest';
import { heuristicPredictor } from '../../src/predict/predictor.js';
import { createRouter } from '../../src/router.js';
import { until, upstream, type Upstream } from '../helpers/servers.js';

const open: { close(): Promise<unknown> }[] = [];
afterEach(async () => {
  await Promise.all(open.splice(0).map((o) => o.close()));
});

describe('relay: how a relayed response ends', () => {
  it('a caller that destroys the body without a signal ends the request as a client abort, frees the slot and cuts the upstream', async () => {
    let upstreamClosed = false;
    const backend: Upstream = await upstream((req, res) => {
      res.writeHead(200, { 'content-type': 'text/event-stream' });
      res.write('data: {"choices":[{"delta":{"content":"a"}}]}\n\n');
      req.socket.once('close', () => (upstreamClosed = true));
    });
    open.push(backend);
    const router = createRouter({
      sites: [{ id: 's' }],
      backends: [{ id: 'b', site: 's', baseURL: backend.baseURL, models: ['m'], maxConcurrency: 1 }],
      plan: { enabled: false },
      predictor: heuristicPredictor(),
    });
    open.push(router);
    const body = Buffer.from(JSON.stringify({ model: 'm', stream: true, messages: [{ role: 'user', content: 'hi' }] }));
    const routed = await router.dispatch({ endpoint: 'chat.completions', body, header: () => undefined });
    await new Promise((resolve) => routed.body.once('data', resolve));
    routed.body.destroy();
    await until(() => router.inFlight === 0 && upstreamClosed);
    const counts = await router.metrics.registry.getSingleMetricAsString('freesh_requests_total');
    expect(counts).toMatch(/outcome="client-abort",backend="b"} 1/);
    expect(counts).not.toMatch(/upstream-dropped/);
  });
});
