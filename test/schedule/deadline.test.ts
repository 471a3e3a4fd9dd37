import { describe, expect, it } from 'vitest';
import { heuristicPredictor } from '../../src/predict/predictor.js';
import { createRouter } from '../../src/router.js';
import { maxScorePicker } from '../../src/schedule/plugins.js';
import type { DecisionContext, Policy } from '../../src/schedule/policy.js';

const config = {
  sites: [{ id: 's', carbon: { gramsPerKWh: 100 } }],
  backends: [
    { id: 'fast', site: 's', baseURL: 'http://127.0.0.1:9/v1', models: ['m'], mode: '4xH100' },
    { id: 'slow', site: 's', baseURL: 'http://127.0.0.1:9/v1', models: ['m'], mode: '2xA100' },
  ],
  plan: { enabled: false },
  // The heuristic's p50 is capped at max_tokens: a deadline these tests can compute.
  predictor: heuristicPredictor(),
};
const body = (tokens: number) => Buffer.from(JSON.stringify({ model: 'm', messages: [{ role: 'user', content: 'x'.repeat(tokens * 4) }], max_tokens: 100 }));
const headers: Record<string, string> = { 'x-freesh-slo': 'interactive' };

describe('deadlines', () => {
  it('targets mode: arrival + the class TTFT target for the prompt + (p50 − 1) × its TBT target', async () => {
    const router = createRouter(config);
    const request = router.parse({ endpoint: 'chat.completions', body: body(1_000), header: (n) => headers[n] });
    const placement = await router.decide(request);
    // interactive: 500 ms + 0.5 ms × 1,000 tokens, then 99 × 100 ms (the heuristic p50 is capped at max_tokens = 100).
    expect(placement.deadlineMs - request.arrivalMs).toBeCloseTo(1_000 + 99 * 100, 6);
    await router.close();
  });

  it('slack mode (FREESH): 1.4 × the service time of the fastest idle candidate', async () => {
    const router = createRouter({ ...config, deadline: { mode: 'slack', slackFactor: 1.4 } });
    const request = router.parse({ endpoint: 'chat.completions', body: body(1_000), header: (n) => headers[n] });
    const placement = await router.decide(request);
    const fastest = placement.backend.id === 'fast' ? placement.cost : undefined;
    expect(fastest).toBeDefined();
    expect(placement.deadlineMs - request.arrivalMs).toBeCloseTo(1.4 * (fastest!.e2eMs - fastest!.waitMs), 6);
    await router.close();
  });

  it('a p90 end is judged against the same rule applied to the p90 length, not against the p50 deadline', async () => {
    const seen: DecisionContext[] = [];
    const recording: Policy = {
      name: 'recording',
      filters: [{ name: 'record', keep: (_c, ctx) => (seen.push(ctx), true) }],
      scorers: [],
      picker: maxScorePicker(),
    };
    const request = (router: ReturnType<typeof createRouter>) =>
      router.parse({ endpoint: 'chat.completions', body: Buffer.from(JSON.stringify({ model: 'm', messages: [{ role: 'user', content: 'x'.repeat(4_000) }], max_tokens: 1_000 })), header: (n) => headers[n] });
    // The heuristic predicts p50 129 and p90 424 tokens.
    const targets = createRouter({ ...config, policy: recording });
    const a = request(targets);
    await targets.decide(a);
    expect(seen.at(-1)!.deadlineMs - a.arrivalMs).toBeCloseTo(1_000 + 128 * 100, 6);
    expect(seen.at(-1)!.deadlineP90Ms - a.arrivalMs).toBeCloseTo(1_000 + 423 * 100, 6);
    await targets.close();

    const slack = createRouter({ ...config, policy: recording, deadline: { mode: 'slack', slackFactor: 1.4 } });
    const b = request(slack);
    await slack.decide(b);
    const ctx = seen.at(-1)!;
    const idle = (pick: (c: DecisionContext['candidates'][number]) => number) => Math.min(...ctx.candidates.map((c) => pick(c) - c.cost.waitMs));
    expect(ctx.deadlineMs - b.arrivalMs).toBeCloseTo(1.4 * idle((c) => c.cost.e2eMs), 6);
    expect(ctx.deadlineP90Ms - b.arrivalMs).toBeCloseTo(1.4 * idle((c) => c.cost.e2eP90Ms), 6);
    expect(ctx.deadlineP90Ms).toBeGreaterThan(ctx.deadlineMs);
    await slack.close();
  });

  it('an unknown SLO class is a 400 naming the known ones; a class may reject late requests with 503', async () => {
    const router = createRouter({
      ...config,
      sloClasses: { strict: { ttftBaseMs: 1, tbtMs: 1, onLate: 'reject' }, standard: { ttftBaseMs: 2_000, tbtMs: 150 } },
    });
    expect(() => router.parse({ endpoint: 'chat.completions', body: body(10), header: (n) => ({ 'x-freesh-slo': 'gold' })[n] })).toThrow(
      /Unknown SLO class "gold".*known: strict, standard/,
    );
    const request = router.parse({ endpoint: 'chat.completions', body: body(10), header: (n) => ({ 'x-freesh-slo': 'strict' })[n] });
    await expect(router.decide(request)).rejects.toMatchObject({ status: 503, code: 'deadline_unmeetable' });
    await router.close();
  });
});
