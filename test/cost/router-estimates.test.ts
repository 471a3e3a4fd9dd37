import { Readable } from 'node:stream';
import { describe, expect, it } from 'vitest';
import { heuristicPredictor } from '../../src/predict/predictor.js';
import type { Transport } from '../../src/transport/transport.js';
import { createRouter } from '../../src/router.js';
import { VirtualClock } from '../../src/sim/virtual-clock.js';

/** A transport whose responses end when the test says (a timer on `clock` of `delayMs()`). */
function delayedTransport(clock: VirtualClock, delayMs: () => number): Transport {
  return {
    send(_backend, request) {
      const body = new Readable({ read() {} });
      clock.setTimer(() => {
        const chunk = Buffer.from('{"object":"chat.completion","usage":{"prompt_tokens":512,"completion_tokens":10}}');
        request.onData?.(chunk);
        body.push(chunk);
        body.push(null);
      }, delayMs());
      return Promise.resolve({ status: 200, headers: { 'content-type': 'application/json' }, body });
    },
    close: () => Promise.resolve(),
  };
}

const call = (promptTokens: number, slo = 'standard') => ({
  endpoint: 'chat.completions' as const,
  body: Buffer.from(JSON.stringify({ model: 'm', messages: [{ role: 'user', content: 'x'.repeat(promptTokens * 4) }] })),
  header: (name: string) => (name === 'x-freesh-slo' ? slo : undefined),
});

function routerOn(clock: VirtualClock, transport: Transport, backend: Record<string, unknown> = {}) {
  return createRouter({
    sites: [{ id: 's', carbon: { gramsPerKWh: 100 } }],
    backends: [{ id: 'b', site: 's', baseURL: 'http://127.0.0.1:9/v1', models: ['m'], ...backend }],
    plan: { enabled: false },
    predictor: heuristicPredictor({ p50Tokens: 10, p90Tokens: 10 }),
    policy: 'least-loaded',
    clock,
    transport,
  });
}

describe('the router\'s latency estimates', () => {
  /** TTFT estimate after 100 requests that each took `slowdown` × the first one's modelled service time, over the first estimate. */
  async function ttftRatioAfter(slowdown: number): Promise<number> {
    const clock = new VirtualClock();
    let delayMs = 0;
    const router = routerOn(clock, delayedTransport(clock, () => delayMs));
    const first = (await router.decide(router.parse(call(512)))).cost;
    delayMs = slowdown * (first.e2eMs - first.waitMs);
    for (let i = 0; i < 100; i++) {
      const routed = await router.dispatch(call(512));
      const ended = new Promise((resolve) => routed.body.once('end', resolve));
      routed.body.resume();
      clock.advance(delayMs); // the response ends
      await ended;
      clock.advance(60_000); // long enough for the prefill backlog to drain
    }
    const last = (await router.decide(router.parse(call(512)))).cost;
    await router.close();
    return last.ttftMs / first.ttftMs;
  }

  it('a backend that serves 3× slower than its profile is costed about 3× slower; one that serves as modelled is not', async () => {
    expect(await ttftRatioAfter(3)).toBeCloseTo(3, 1);
    expect(await ttftRatioAfter(1)).toBeCloseTo(1, 2);
  });

  it('a client that reads the response late does not make its backend look slow', async () => {
    const clock = new VirtualClock();
    const router = routerOn(clock, delayedTransport(clock, () => 1_000));
    const first = (await router.decide(router.parse(call(512)))).cost;
    for (let i = 0; i < 50; i++) {
      const routed = await router.dispatch(call(512));
      const ended = new Promise((resolve) => routed.body.once('end', resolve));
      clock.advance(1_000); // the backend sends everything at 1 s...
      clock.advance(59_000); // ...and the client starts reading a minute later
      routed.body.resume();
      await ended;
    }
    const last = (await router.decide(router.parse(call(512)))).cost;
    await router.close();
    // Calibrated to the 1 s the backend took, not to the minute the client took.
    expect(last.ttftMs / first.ttftMs).toBeCloseTo(1_000 / (first.e2eMs - first.waitMs), 1);
  });

  it('a prompt is costed behind the prompts already sent, and its own prefill counts in the load it meets', async () => {
    const clock = new VirtualClock();
    const router = routerOn(clock, delayedTransport(clock, () => 600_000));
    const alone = (await router.decide(router.parse(call(512)))).cost;
    const long = (await router.decide(router.parse(call(4_096)))).cost;
    expect(long.tbtMs).toBeGreaterThan(alone.tbtMs);
    const sent = await router.dispatch(call(4_096));
    sent.body.resume();
    const behind = (await router.decide(router.parse(call(512)))).cost;
    // 4,096 tokens ahead: at least 8 more chunk steps of 512 before this prompt's own.
    expect(behind.ttftMs).toBeGreaterThan(alone.ttftMs * 8);
    await router.close();
  });

  it('a long prompt weighs more on the TBT of a backend running interactive requests (their shorter TBT window)', async () => {
    const tbtBeside = async (running: string, placing: string) => {
      const clock = new VirtualClock();
      const router = routerOn(clock, delayedTransport(clock, () => 600_000));
      (await router.dispatch(call(16, running))).body.resume();
      const { tbtMs } = (await router.decide(router.parse(call(4_096, placing)))).cost;
      await router.close();
      return tbtMs;
    };
    const besideStandard = await tbtBeside('standard', 'standard');
    const besideInteractive = await tbtBeside('interactive', 'standard');
    expect(besideInteractive).toBeGreaterThan(besideStandard * 1.5);
    // An interactive request is judged over its own window too.
    expect(await tbtBeside('standard', 'interactive')).toBeCloseTo(besideInteractive, 9);
  });

  it('on a backend that schedules by priority, an interactive prompt is not costed behind batch prompts', async () => {
    const clock = new VirtualClock();
    const router = routerOn(clock, delayedTransport(clock, () => 600_000), { forwardPriority: true });
    const sent = await router.dispatch(call(4_096, 'batch'));
    sent.body.resume();
    const interactive = (await router.decide(router.parse(call(512, 'interactive')))).cost;
    const batch = (await router.decide(router.parse(call(512, 'batch')))).cost;
    expect(batch.ttftMs).toBeGreaterThan(interactive.ttftMs * 8);
    await router.close();
  });
});
