import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { afterEach, describe, expect, it } from 'vitest';
import { post, until } from '../helpers/servers.js';
import { chat, expectNothingLeaked, faultBackend, faultProxy, untilHealthy } from './fault-backend.js';

const cleanup: (() => unknown)[] = [];
afterEach(async () => {
  for (const fn of cleanup.splice(0).reverse()) await fn();
});

describe('a backend that dies and comes back', () => {
  it('while down, its requests go to another backend before any byte (retries counted) or get 503; once back, a probe restores it long before unhealthyMs', async () => {
    const [dying, good] = [await faultBackend('dying'), await faultBackend('good')];
    // Probes that need three failures a second apart leave the refused requests to find the death first.
    const f = await faultProxy([dying, good], cleanup, { limits: { unhealthyMs: 60_000 }, health: { probeIntervalMs: 1_000, unhealthyThreshold: 3 } });
    expect((await post(`${f.proxy.url}/v1/chat/completions`, chat('solo'))).status).toBe(200);

    await dying.die();
    // Whichever backend round-robin picks, every request for `m` is served; the refused ones by a retry.
    for (let i = 0; i < 4; i++) {
      const res = await post(`${f.proxy.url}/v1/chat/completions`, chat('m'));
      expect(res.status).toBe(200);
      expect(res.headers.get('x-freesh-backend')).toBe('good');
    }
    await untilHealthy(f, 'dying', false);
    // `solo` has no other backend: 503, the OpenAI-shaped error a client retries on.
    const alone = await post(`${f.proxy.url}/v1/chat/completions`, chat('solo'));
    expect(alone.status).toBe(503);
    expect(alone.json().error.code).toBe('no_backend_available');
    expect(Number(alone.headers.get('retry-after'))).toBeGreaterThan(0);
    expect(await f.metric('freesh_retries_total')).toMatch(/freesh_retries_total{backend="dying"} [1-9]/);
    expect(f.events).toContainEqual(expect.objectContaining({ kind: 'failover', backendId: 'dying', reason: expect.stringContaining('ECONNREFUSED') }));
    expect(f.events).toContainEqual(expect.objectContaining({ kind: 'ejected', backendId: 'dying', reason: expect.stringContaining('unreachable: ECONNREFUSED') }));

    const revived = performance.now();
    await dying.revive();
    await untilHealthy(f, 'dying', true, 5_000);
    // At the next probe, within a second: unhealthyMs alone would take 60 s.
    expect(performance.now() - revived).toBeLessThan(2_500);
    expect(f.events).toContainEqual(expect.objectContaining({ kind: 'restored', backendId: 'dying', reason: 'a probe passed' }));
    expect((await post(`${f.proxy.url}/v1/chat/completions`, chat('solo'))).headers.get('x-freesh-backend')).toBe('dying');
    const served = new Set<string | null>();
    for (let i = 0; i < 4; i++) served.add((await post(`${f.proxy.url}/v1/chat/completions`, chat('m'))).headers.get('x-freesh-backend'));
    expect(served).toEqual(new Set(['dying', 'good']));
    await expectNothingLeaked(f);
  });
});

describe('background probes', () => {
  it('ask GET {baseURL}{probePath} every probeIntervalMs, and stop when the router closes', async () => {
    const b = await faultBackend('b');
    const f = await faultProxy([b], cleanup, { health: { probeIntervalMs: 100, probePath: '/models' } });
    await until(() => b.probes >= 4, 3_000);
    await f.proxy.router.close();
    const after = b.probes;
    await new Promise((r) => setTimeout(r, 300));
    expect(b.probes).toBe(after);
  });

  it('are off with `probes: false`', async () => {
    const b = await faultBackend('b');
    await faultProxy([b], cleanup, { health: { probes: false, probeIntervalMs: 100 } });
    await new Promise((r) => setTimeout(r, 400));
    expect(b.probes).toBe(0);
  });

  const ROUTER = fileURLToPath(new URL('../../dist/src/router.js', import.meta.url));
  const PREDICTOR = fileURLToPath(new URL('../../dist/src/predict/predictor.js', import.meta.url));
  it.skipIf(!existsSync(ROUTER))('never keep the process alive: a process that leaves its router open exits on its own (needs npm run build)', async () => {
    const b = await faultBackend('b');
    cleanup.push(() => b.close());
    // The router probes every 100 ms; a 500 ms timer is the only thing the script itself keeps.
    const script = `
      const { createRouter } = await import(${JSON.stringify(ROUTER)});
      const { heuristicPredictor } = await import(${JSON.stringify(PREDICTOR)});
      createRouter({
        sites: [{ id: 's' }],
        backends: [{ id: 'b', site: 's', baseURL: ${JSON.stringify(b.baseURL)}, models: ['m'] }],
        plan: { enabled: false },
        predictor: heuristicPredictor(),
        health: { probeIntervalMs: 100 },
      });
      setTimeout(() => {}, 500);`;
    const child = spawn(process.execPath, ['--input-type=module', '-e', script], { stdio: 'inherit' });
    const exit = await new Promise<number | null>((resolve) => {
      const killer = setTimeout(() => child.kill(), 10_000);
      child.on('exit', (code) => (clearTimeout(killer), resolve(code)));
    });
    expect(exit).toBe(0);
    expect(b.probes).toBeGreaterThanOrEqual(3);
  });
});
