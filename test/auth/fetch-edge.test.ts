import { spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { afterEach, describe, expect, it } from 'vitest';
import { hashKey } from '../../src/auth/keys.js';
import { heuristicPredictor } from '../../src/predict/predictor.js';
import { createRouter } from '../../src/router.js';
import { startFixedBackend } from '../../src/sim/fixed-backend.js';
import { chatBody } from '../helpers/servers.js';

const cleanups: (() => unknown)[] = [];
afterEach(async () => {
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
});

const KEY = 'fsk-fetch-0123456789abcdef';
const ADMIN = 'fsk-fetch-admin-0123456789';

describe('keys on the fetch edge (Hono, Workers-style servers)', () => {
  it('answers the same 401, 403 and 429 as the node listener, with the limit headers on success', async () => {
    const backend = await startFixedBackend();
    cleanups.push(() => backend.close());
    const router = createRouter({
      sites: [{ id: 'loc1', carbon: { gramsPerKWh: 300 } }],
      backends: [{ id: 'b1', site: 'loc1', baseURL: backend.baseURL, models: ['m'] }],
      plan: { enabled: false },
      predictor: heuristicPredictor(),
      auth: { keys: [{ id: 'k', sha256: hashKey(KEY), tenant: 't', limits: { requestsPerMinute: 1 } }], adminKeys: [hashKey(ADMIN)] },
    });
    cleanups.push(() => router.close());
    const chat = (headers: Record<string, string>) =>
      router.handle(new Request('http://gw/v1/chat/completions', { method: 'POST', headers: { 'content-type': 'application/json', ...headers }, body: chatBody() }));

    const missing = await chat({});
    expect(missing.status).toBe(401);
    expect((await missing.json()).error.code).toBe('invalid_api_key');
    const served = await chat({ authorization: `Bearer ${KEY}` });
    expect(served.status).toBe(200);
    expect(served.headers.get('x-ratelimit-remaining-requests')).toBe('0');
    await served.text();
    const refused = await chat({ 'api-key': KEY });
    expect(refused.status).toBe(429);
    expect(Number(refused.headers.get('retry-after-ms'))).toBeGreaterThan(59_000);

    const metrics = (headers: Record<string, string>) => router.handle(new Request('http://gw/metrics', { headers }));
    expect((await metrics({})).status).toBe(401);
    expect((await metrics({ authorization: `Bearer ${KEY}` })).status).toBe(403);
    expect((await metrics({ authorization: `Bearer ${ADMIN}` })).status).toBe(200);
  });
});

describe('freesh key', () => {
  it('prints a new key and its sha256, and documents itself with --help', () => {
    const cli = fileURLToPath(new URL('../../dist/src/cli.js', import.meta.url));
    const out = spawnSync(process.execPath, [cli, 'key'], { encoding: 'utf8' });
    expect(out.status).toBe(0);
    const [, key, sha256] = /^key: +(\S+)\nsha256: +([0-9a-f]{64})\n$/.exec(out.stdout) ?? [];
    expect(key).toMatch(/^fsk-/);
    expect(sha256).toBe(hashKey(key!));
    const help = spawnSync(process.execPath, [cli, 'key', '--help'], { encoding: 'utf8' });
    expect(help.status).toBe(0);
    expect(help.stdout).toContain('Usage: freesh key');
    expect(spawnSync(process.execPath, [cli, 'key', '--bogus'], { encoding: 'utf8' }).status).toBe(2);
  });
});
