import { afterEach, describe, expect, it } from 'vitest';
import { LatencyCalibration, MAX_FACTOR } from '../../src/cost/latency-calibration.js';
import { heuristicPredictor } from '../../src/predict/predictor.js';
import { createRouter, type Router } from '../../src/router.js';
import { chatBody, type Upstream, upstream } from '../helpers/servers.js';

describe('latency calibration', () => {
  it('starts at 1 and settles where the calibrated model matches what is observed', () => {
    const calibration = new LatencyCalibration(0.1);
    expect(calibration.factor('a')).toBe(1);
    // The backend takes 1.2× what the uncalibrated model says; each observation is costed with the current factor.
    for (let i = 0; i < 200; i++) calibration.observe('a', 10_000 * calibration.factor('a'), 12_000);
    expect(calibration.factor('a')).toBeCloseTo(1.2, 3);
    expect(calibration.factor('b')).toBe(1);
  });

  it('one outlier moves the factor by about the weight only, within bounds; nonsense is ignored', () => {
    const calibration = new LatencyCalibration(0.05);
    calibration.observe('a', 10_000, 30_000);
    expect(calibration.factor('a')).toBeCloseTo(1.1, 3);
    for (let i = 0; i < 500; i++) calibration.observe('a', 10_000, 10_000_000);
    expect(calibration.factor('a')).toBe(MAX_FACTOR);
    calibration.observe('a', 0, 1_000);
    calibration.observe('a', Number.NaN, 1_000);
    calibration.observe('a', 1_000, -5);
    calibration.observe('a', 1_000, 0);
    calibration.observe('a', 1_000, Number.POSITIVE_INFINITY);
    expect(calibration.factor('a')).toBe(MAX_FACTOR);
  });

  it('splits what the model does not explain between the factor and the overhead by the service against 100 ms', () => {
    // 300 ms of service, 3× the scale: 90% of the 200 unexplained ms count for the factor.
    const long = new LatencyCalibration(0.05);
    long.observe('a', 300, 500);
    expect(long.factor('a')).toBeCloseTo(1 + (0.05 * 0.9 * 200) / 300, 9);
    // At the scale, half.
    const even = new LatencyCalibration(0.05);
    even.observe('a', 100, 300);
    expect(even.factor('a')).toBeCloseTo(1 + (0.05 * 0.5 * 200) / 100, 9);
  });

  it('a 1-token completion, whose time is mostly the request\'s fixed overhead, hardly moves the factor', () => {
    const calibration = new LatencyCalibration();
    // Prefill of a few prompt tokens, against the 2 ms a request takes over loopback HTTP.
    calibration.observe('a', 0.4, 2);
    expect(calibration.factor('a')).toBeGreaterThanOrEqual(0.9);
    expect(calibration.factor('a')).toBeLessThanOrEqual(1.2);
    for (let i = 0; i < 200; i++) calibration.observe('a', 0.4 * calibration.factor('a'), 2);
    expect(calibration.factor('a')).toBeLessThan(1.2);
    // A site 100 ms of round trip away: still overhead, however many.
    for (let i = 0; i < 5_000; i++) calibration.observe('b', 0.4 * calibration.factor('b'), 100);
    expect(calibration.factor('b')).toBeLessThan(1.2);
  });

  it('the overhead learnt from short completions is not read as slowness in ordinary ones', () => {
    const calibration = new LatencyCalibration();
    for (let i = 0; i < 200; i++) calibration.observe('a', 1, 150);
    // Served exactly as modelled, plus the same 150 ms overhead.
    for (let i = 0; i < 50; i++) calibration.observe('a', 1_000 * calibration.factor('a'), 1_150);
    expect(calibration.factor('a')).toBeCloseTo(1, 1);
  });

  it('a backend twice as slow as its profile converges to 2 within a few dozen ordinary completions, among short ones', () => {
    const calibration = new LatencyCalibration();
    let seed = 1;
    const random = () => ((seed = (seed * 48_271) % 2_147_483_647) / 2_147_483_647);
    for (let i = 0; i < 40; i++) {
      // Hundreds of tokens: 2–10 s as profiled, each followed by a 1-token completion with 50 ms of overhead.
      const profiledMs = 2_000 + 8_000 * random();
      calibration.observe('a', profiledMs * calibration.factor('a'), 2 * profiledMs + 50);
      calibration.observe('a', 0.4 * calibration.factor('a'), 2 * 0.4 + 50);
    }
    expect(calibration.factor('a')).toBeGreaterThan(1.8);
    expect(calibration.factor('a')).toBeLessThan(2.2);
  });
});

describe('latency calibration through the router', () => {
  let router: Router | undefined;
  const upstreams: Upstream[] = [];
  afterEach(async () => {
    await router?.close();
    await Promise.all(upstreams.splice(0).map((u) => u.close()));
  });

  /** An OpenAI-compatible backend a 50 ms round trip away: as many completion tokens as `max_tokens` allows, up to 200. */
  const remoteBackend = () =>
    upstream((_req, res, body) => {
      const completionTokens = Math.min(200, (JSON.parse(body) as { max_tokens?: number }).max_tokens ?? 200);
      setTimeout(() => {
        res.writeHead(200, { 'content-type': 'application/json' });
        res.end(JSON.stringify({ object: 'chat.completion', choices: [], usage: { prompt_tokens: 3, completion_tokens: completionTokens } }));
      }, 50);
    });

  const complete = async (extra: Record<string, unknown> = {}) => {
    const res = await router!.handle(new Request('http://freesh.test/v1/chat/completions', { method: 'POST', headers: { 'content-type': 'application/json' }, body: chatBody(extra) }));
    await res.text();
    return res;
  };

  const latencyFactor = async (backend: string) => {
    const match = new RegExp(`^freesh_latency_factor\\{backend="${backend}"\\} (\\S+)$`, 'm').exec(await router!.metrics.registry.metrics());
    return Number(match?.[1]);
  };

  it('one 1-token completion does not push the cleaner backend out of later placements', async () => {
    const [clean, dirty] = await Promise.all([remoteBackend(), remoteBackend()]);
    upstreams.push(clean, dirty);
    router = createRouter({
      sites: [
        { id: 'low-carbon', carbon: { gramsPerKWh: 50 } },
        { id: 'high-carbon', carbon: { gramsPerKWh: 500 } },
      ],
      backends: [
        { id: 'clean', site: 'low-carbon', baseURL: clean.baseURL, models: ['m'] },
        { id: 'dirty', site: 'high-carbon', baseURL: dirty.baseURL, models: ['m'] },
      ],
      plan: { enabled: false },
      predictor: heuristicPredictor(),
    });

    const short = await complete({ max_tokens: 1 });
    expect(short.status).toBe(200);
    expect(short.headers.get('x-freesh-backend')).toBe('clean');

    const ordinary = await complete();
    expect(ordinary.status).toBe(200);
    expect(ordinary.headers.get('x-freesh-backend')).toBe('clean');
    // The short one's 50 ms were the round trip, not a backend serving 40× slower than profiled (the
    // ordinary one, served far faster than profiled by this stub, only lowers the factor by the weight).
    const factor = await latencyFactor('clean');
    expect(factor).toBeGreaterThanOrEqual(0.9);
    expect(factor).toBeLessThanOrEqual(1.2);
  });
});
