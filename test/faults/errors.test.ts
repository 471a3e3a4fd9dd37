import OpenAI from 'openai';
import { afterEach, describe, expect, it } from 'vitest';
import { nextChunk, post, streamPost, until } from '../helpers/servers.js';
import { chat, ejectionsOf, expectNothingLeaked, faultBackend, faultProxy, untilHealthy } from './fault-backend.js';

const cleanup: (() => unknown)[] = [];
afterEach(async () => {
  for (const fn of cleanup.splice(0).reverse()) await fn();
});

const messages = [{ role: 'user' as const, content: 'Hello there' }];

/** A client as an application has it, without its own retries so each call is one request. */
const clientOf = (url: string) => new OpenAI({ baseURL: `${url}/v1`, apiKey: 'unused', maxRetries: 0 });

describe('a backend that answers 500', () => {
  it('is answered 502 upstream_error to the client, ejected after consecutive failures, tried once after the ejection (half-open), and back when a trial succeeds', async () => {
    const [sick, good] = [await faultBackend('sick', 'error-500'), await faultBackend('good')];
    // No probes: only passive detection and the circuit's trial decide here.
    const f = await faultProxy([sick, good], cleanup, { health: { probes: false, consecutiveFailures: 2, baseEjectionMs: 300, maxEjectionMs: 5_000 } });
    const client = clientOf(f.proxy.url);

    // What the client sees: the status, the code, and the backend's own message.
    for (let i = 0; i < 2; i++) {
      const err = await client.chat.completions.create({ model: 'solo', messages }).catch((e: unknown) => e);
      expect(err).toBeInstanceOf(OpenAI.APIError);
      expect((err as InstanceType<typeof OpenAI.APIError>).status).toBe(502);
      expect((err as InstanceType<typeof OpenAI.APIError>).code).toBe('upstream_error');
      expect((err as Error).message).toContain('CUDA error: out of memory');
    }
    expect(sick.completions).toBe(2);

    // Two in a row: ejected (open), out of rotation, its model has no backend, the others carry the rest.
    const ejected = ejectionsOf(f, 'sick')[0];
    expect(ejected).toMatchObject({ reason: expect.stringContaining('2 consecutive failures') });
    expect(f.events).toContainEqual(expect.objectContaining({ kind: 'circuit', backendId: 'sick', state: 'open' }));
    expect(await f.metric('freesh_backend_ejections_total')).toContain('freesh_backend_ejections_total{backend="sick",reason="outlier"} 1');
    expect(await f.metric('freesh_backend_healthy')).toContain('freesh_backend_healthy{backend="sick"} 0');
    expect(await f.metric('freesh_backend_circuit_state')).toContain('freesh_backend_circuit_state{backend="sick",state="open"} 1');
    const refused = await post(`${f.proxy.url}/v1/chat/completions`, chat('solo'));
    expect(refused.status).toBe(503);
    expect(refused.json().error.code).toBe('no_backend_available');
    for (let i = 0; i < 4; i++) expect((await post(`${f.proxy.url}/v1/chat/completions`, chat('m'))).headers.get('x-freesh-backend')).toBe('good');
    expect(sick.completions).toBe(2);

    // The ejection ends: one trial, which fails, opens the circuit again for twice as long.
    // Back in placement once the store's mark has expired (the view reads it within its refresh bound).
    await untilHealthy(f, 'sick', true);
    expect(performance.now()).toBeGreaterThanOrEqual(ejected!.untilMs!);
    expect((await post(`${f.proxy.url}/v1/chat/completions`, chat('solo'))).status).toBe(502);
    expect(sick.completions).toBe(3);
    const again = ejectionsOf(f, 'sick');
    expect(again).toHaveLength(2);
    expect(again[1]!.reason).toContain('trial request failed');
    expect(again[1]!.untilMs! - again[1]!.atMs).toBeGreaterThan(550);
    expect(again[1]!.untilMs! - again[1]!.atMs).toBeLessThanOrEqual(600);

    // Fixed: the next trial succeeds and closes the circuit; traffic flows to it again.
    sick.fault = 'ok';
    await untilHealthy(f, 'sick', true);
    const trial = await client.chat.completions.create({ model: 'solo', messages });
    expect(trial.choices[0]!.message.content).toBe('Hello there');
    expect(f.events).toContainEqual(expect.objectContaining({ kind: 'restored', backendId: 'sick', reason: 'trial request succeeded' }));
    expect(f.events.filter((e) => e.kind === 'circuit' && e.backendId === 'sick').map((e) => (e as { state: string }).state)).toEqual(['open', 'half-open', 'open', 'half-open', 'closed']);
    const served = new Set<string | null>();
    for (let i = 0; i < 4; i++) served.add((await post(`${f.proxy.url}/v1/chat/completions`, chat('m'))).headers.get('x-freesh-backend'));
    expect(served).toEqual(new Set(['sick', 'good']));
    await expectNothingLeaked(f);
  });

  it('a half-open circuit lets a single trial through: concurrent requests meanwhile are kept away from it', async () => {
    const [sick, good] = [await faultBackend('sick', 'error-500'), await faultBackend('good')];
    const f = await faultProxy([sick, good], cleanup, { health: { probes: false, consecutiveFailures: 1, baseEjectionMs: 200 } });
    expect((await post(`${f.proxy.url}/v1/chat/completions`, chat('solo'))).status).toBe(502);
    // The trial will hang until the headers timeout (400 ms); meanwhile four more requests arrive.
    sick.fault = 'stall-before-headers';
    await untilHealthy(f, 'sick', true);
    const answers = await Promise.all(Array.from({ length: 5 }, () => post(`${f.proxy.url}/v1/chat/completions`, chat('solo'))));
    expect(sick.completions).toBe(2);
    const statuses = answers.map((a) => a.status).sort();
    expect(statuses).toEqual([502, 503, 503, 503, 503]);
    expect(answers.find((a) => a.status === 502)!.json().error.code).toBe('upstream_unreachable');
    // The trial timed out: open again.
    expect(f.events.filter((e) => e.kind === 'ejected')).toHaveLength(2);
    await expectNothingLeaked(f);
  });

  it('never ejects more than maxEjectedPercent of the fleet: when every backend fails, one is ejected and the other keeps answering', async () => {
    const [a, b] = [await faultBackend('a', 'error-500'), await faultBackend('b', 'error-500')];
    const f = await faultProxy([a, b], cleanup, { health: { probes: false, consecutiveFailures: 2, maxEjectedPercent: 50 } });
    const answers = [];
    for (let i = 0; i < 10; i++) answers.push((await post(`${f.proxy.url}/v1/chat/completions`, chat('m'))).status);
    // Every client got the backend's failure; none was told that no backend exists.
    expect(answers).toEqual(Array(10).fill(502));
    expect(f.events.filter((e) => e.kind === 'ejected')).toHaveLength(1);
    expect(f.proxy.router.health()).toEqual({ usable: 1, total: 2 });
    await expectNothingLeaked(f);
  });

  it('neither a 4xx (the request\'s fault) nor a client that leaves mid-stream counts against the backend; a success resets the count', async () => {
    const [flaky, good] = [await faultBackend('flaky', 'error-400'), await faultBackend('good')];
    const f = await faultProxy([flaky, good], cleanup, { health: { probeIntervalMs: 60_000, consecutiveFailures: 3 } });
    for (let i = 0; i < 5; i++) {
      const res = await post(`${f.proxy.url}/v1/chat/completions`, chat('solo'));
      expect(res.status).toBe(400);
      expect(res.text).toContain('prompt too long for this model');
    }
    // Clients that read the first chunk of a stream that then hangs, and leave.
    flaky.fault = 'stall-mid-stream';
    for (let i = 0; i < 4; i++) {
      const { response, abort } = await streamPost(`${f.proxy.url}/v1/chat/completions`, chat('solo', { stream: true }));
      expect(await nextChunk(response)).toContain('Hello');
      abort();
      await until(() => flaky.open === 0);
    }
    // Failures interleaved with successes never reach three in a row.
    for (let i = 0; i < 4; i++) {
      flaky.fault = 'error-500';
      expect((await post(`${f.proxy.url}/v1/chat/completions`, chat('solo'))).status).toBe(502);
      expect((await post(`${f.proxy.url}/v1/chat/completions`, chat('solo'))).status).toBe(502);
      flaky.fault = 'ok';
      expect((await post(`${f.proxy.url}/v1/chat/completions`, chat('solo'))).status).toBe(200);
    }
    expect(ejectionsOf(f, 'flaky')).toHaveLength(0);
    expect(f.proxy.router.health().usable).toBe(2);
    // The third in a row does.
    flaky.fault = 'error-500';
    for (let i = 0; i < 3; i++) await post(`${f.proxy.url}/v1/chat/completions`, chat('solo'));
    expect(ejectionsOf(f, 'flaky')).toHaveLength(1);
    await expectNothingLeaked(f);
  });
});

describe('health probes', () => {
  it('take a backend whose probes fail out of rotation, and put it back as soon as one passes (not after unhealthyMs)', async () => {
    const [sick, good] = [await faultBackend('sick'), await faultBackend('good')];
    const f = await faultProxy([sick, good], cleanup, { health: { probeIntervalMs: 100, unhealthyThreshold: 2 }, limits: { unhealthyMs: 60_000 } });
    sick.probesPass = false;
    await untilHealthy(f, 'sick', false);
    // Two failed probes in a row, at least one interval apart.
    expect(sick.probes).toBeGreaterThanOrEqual(2);
    expect(f.events).toContainEqual(expect.objectContaining({ kind: 'ejected', backendId: 'sick', reason: 'probe failed: answered 503' }));
    expect(await f.metric('freesh_backend_ejections_total')).toContain('freesh_backend_ejections_total{backend="sick",reason="probe"} 1');
    for (let i = 0; i < 3; i++) expect((await post(`${f.proxy.url}/v1/chat/completions`, chat('m'))).headers.get('x-freesh-backend')).toBe('good');
    const out = performance.now();
    sick.probesPass = true;
    await untilHealthy(f, 'sick', true);
    // Within a few probe intervals, far sooner than the 60 s unhealthyMs.
    expect(performance.now() - out).toBeLessThan(2_000);
    expect(f.events).toContainEqual(expect.objectContaining({ kind: 'restored', backendId: 'sick', reason: 'a probe passed' }));
    expect((await post(`${f.proxy.url}/v1/chat/completions`, chat('solo'))).status).toBe(200);
    expect(sick.completions).toBe(1);
    await expectNothingLeaked(f);
  });
});
