import { describe, expect, it } from 'vitest';
import { heuristicPredictor } from '../../src/predict/predictor.js';
import { createRouter, type RouterOptions } from '../../src/router.js';
import type { LifecyclePlugin } from '../../src/pipeline/lifecycle.js';

const body = Buffer.from(JSON.stringify({ model: 'm', messages: [{ role: 'user', content: 'hello there' }] }));
const call = { endpoint: 'chat.completions' as const, body, header: () => undefined };

/** Records the hooks it sees, in order. */
function recorder(): LifecyclePlugin & { readonly seen: string[] } {
  const seen: string[] = [];
  return {
    name: 'recorder',
    seen,
    arrive: (request) => void seen.push(`arrive ${request.id}`),
    place: ({ request }) => void seen.push(`place ${request.id}`),
    admit: ({ request }) => void seen.push(`admit ${request.id}`),
    send: ({ request }) => void seen.push(`send ${request.id}`),
    complete: ({ request, outcome, outputTokens }) => void seen.push(`complete ${request.id} ${outcome} ${outputTokens}`),
    abort: ({ request, outcome }) => void seen.push(`abort ${request.id} ${outcome}`),
  };
}

function router(extra: Partial<RouterOptions> = {}) {
  return createRouter({
    sites: [{ id: 's' }],
    backends: [{ id: 'b', site: 's', baseURL: 'http://127.0.0.1:9/v1/', models: ['m'], maxConcurrency: 1 }],
    plan: { enabled: false },
    predictor: heuristicPredictor({ p50Tokens: 20, p90Tokens: 40 }),
    ...extra,
  });
}

describe('decide, then admit: an application that forwards requests itself', () => {
  it('decide changes nothing: no slot is taken, no hook runs, nothing is counted', async () => {
    const plugin = recorder();
    const r = router({ plugins: [plugin] });
    for (let i = 0; i < 5; i++) {
      const placement = await r.decide(r.parse(call));
      expect(placement.backend.id).toBe('b');
      expect(placement.prediction.outputTokensP50).toBe(20);
    }
    expect(plugin.seen).toEqual([]);
    expect(r.inFlight).toBe(0);
    expect(await r.metrics.registry.getSingleMetricAsString('freesh_requests_total')).not.toMatch(/freesh_requests_total\{/);
    // The one slot is still free: an admission gets it at once.
    const request = r.parse(call);
    const admission = await r.admit(request, await r.decide(request));
    expect(r.inFlight).toBe(1);
    admission.complete('completed', 7);
    expect(r.inFlight).toBe(0);
    await r.close();
  });

  it('admit holds the slot until complete or abort, and tells the lifecycle plugins in order', async () => {
    const plugin = recorder();
    const r = router({ plugins: [plugin] });
    const first = r.parse({ ...call, header: (n) => (n === 'x-request-id' ? 'one' : undefined) });
    const second = r.parse({ ...call, header: (n) => (n === 'x-request-id' ? 'two' : undefined) });
    const a = await r.admit(first, await r.decide(first));
    expect(a.upstream.url).toBe('http://127.0.0.1:9/v1/chat/completions');
    expect(Buffer.from(a.upstream.body).equals(body)).toBe(true);
    expect(a.upstream.headers['x-request-id']).toBe('one');
    let secondAdmitted = false;
    const b = r.admit(second, await r.decide(second)).then((admission) => ((secondAdmitted = true), admission));
    await new Promise((resolve) => setImmediate(resolve));
    expect(secondAdmitted).toBe(false);
    a.complete('completed', 12);
    a.complete('completed', 12); // a second end is ignored
    const admittedB = await b;
    admittedB.abort('upstream-status');
    expect(r.inFlight).toBe(0);
    expect(plugin.seen).toEqual([
      'arrive one',
      'place one',
      'admit one',
      'send one',
      'arrive two',
      'place two',
      'complete one completed 12',
      'admit two',
      'send two',
      'abort two upstream-status',
    ]);
    const metrics = await r.metrics.registry.getSingleMetricAsString('freesh_requests_total');
    expect(metrics).toMatch(/outcome="completed",backend="b"} 1/);
    await r.close();
  });

  it('admit on a backend that takes priorities sends the SLO class priority in the body', async () => {
    const r = createRouter({
      sites: [{ id: 's' }],
      backends: [{ id: 'b', site: 's', baseURL: 'http://127.0.0.1:9/v1', models: ['m'], forwardPriority: true }],
      plan: { enabled: false },
      predictor: heuristicPredictor(),
    });
    const request = r.parse({ ...call, header: (n) => (n === 'x-freesh-slo' ? 'batch' : undefined) });
    const admission = await r.admit(request, await r.decide(request));
    expect(JSON.parse(Buffer.from(admission.upstream.body).toString()).priority).toBe(2);
    admission.complete('completed', 1);
    await r.close();
  });
});
