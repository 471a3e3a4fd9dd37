import { Readable } from 'node:stream';
import { describe, expect, it } from 'vitest';
import { LatencyCalibration, MAX_FACTOR } from '../../src/cost/latency-calibration.js';
import { heuristicPredictor } from '../../src/predict/predictor.js';
import type { Transport } from '../../src/proxy/transport.js';
import { createRouter } from '../../src/router.js';
import { VirtualClock } from '../../src/sim/virtual-clock.js';

describe('latency calibration', () => {
  it('starts at 1 and settles where the calibrated model matches what is observed', () => {
    const calibration = new LatencyCalibration(0.1);
    expect(calibration.factor('a')).toBe(1);
    // The backend takes 1.2× what the uncalibrated model says; each observation is costed with the current factor.
    for (let i = 0; i < 200; i++) calibration.observe('a', 1_000 * calibration.factor('a'), 1_200);
    expect(calibration.factor('a')).toBeCloseTo(1.2, 3);
    expect(calibration.factor('b')).toBe(1);
  });

  it('one outlier moves the factor by the weight only, within bounds; nonsense is ignored', () => {
    const calibration = new LatencyCalibration(0.05);
    calibration.observe('a', 1_000, 3_000);
    expect(calibration.factor('a')).toBeCloseTo(1.1, 9);
    for (let i = 0; i < 500; i++) calibration.observe('a', 1, 1_000_000);
    expect(calibration.factor('a')).toBe(MAX_FACTOR);
    calibration.observe('a', 0, 1_000);
    calibration.observe('a', Number.NaN, 1_000);
    calibration.observe('a', 1_000, -5);
    expect(calibration.factor('a')).toBe(MAX_FACTOR);
  });
});

describe('the router calibrates its latency estimates from completions', () => {
  /** A router over one backend whose responses take `slowdown` × the first request's modelled service time. */
  async function ttftRatioAfter(slowdown: number): Promise<number> {
    const clock = new VirtualClock();
    let delayMs = 0;
    const transport: Transport = {
      send(_backend, request) {
        const body = new Readable({ read() {} });
        clock.setTimer(() => {
          const chunk = Buffer.from('{"object":"chat.completion","usage":{"prompt_tokens":512,"completion_tokens":10}}');
          request.onData?.(chunk);
          body.push(chunk);
          body.push(null);
        }, delayMs);
        return Promise.resolve({ status: 200, headers: { 'content-type': 'application/json' }, body });
      },
      close: () => Promise.resolve(),
    };
    const router = createRouter({
      sites: [{ id: 's', carbon: { gramsPerKWh: 100 } }],
      backends: [{ id: 'b', site: 's', baseURL: 'http://127.0.0.1:9/v1', models: ['m'] }],
      plan: { enabled: false },
      predictor: heuristicPredictor({ p50Tokens: 10, p90Tokens: 10 }),
      policy: 'least-loaded',
      clock,
      transport,
    });
    const call = () => ({ endpoint: 'chat.completions' as const, body: Buffer.from(JSON.stringify({ model: 'm', messages: [{ role: 'user', content: 'x'.repeat(2_048) }] })), header: () => undefined });
    const first = (await router.route(router.parse(call()))).cost;
    delayMs = slowdown * (first.e2eMs - first.waitMs);
    for (let i = 0; i < 100; i++) {
      const routed = await router.dispatch(call());
      const ended = new Promise((resolve) => routed.body.once('end', resolve));
      routed.body.resume();
      clock.runNext(); // the response ends
      await ended;
      clock.advance(60_000); // long enough for the prefill backlog to drain
    }
    const last = (await router.route(router.parse(call()))).cost;
    await router.close();
    return last.ttftMs / first.ttftMs;
  }

  it('a backend that serves 3× slower than its profile is costed about 3× slower; one that serves as modelled is not', async () => {
    expect(await ttftRatioAfter(3)).toBeCloseTo(3, 1);
    expect(await ttftRatioAfter(1)).toBeCloseTo(1, 2);
  });
});
