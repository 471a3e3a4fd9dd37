import type { IncomingMessage, ServerResponse } from 'node:http';
import { afterEach, describe, expect, it } from 'vitest';
import { carbonSignalFromConfig } from '../../src/carbon/from-config.js';
import { CachedCarbonSignal, electricityMapsSource, LBS_PER_MWH_TO_G_PER_KWH, wattTimeSource } from '../../src/carbon/providers.js';
import { type Upstream, upstream } from '../helpers/servers.js';

let servers: Upstream[] = [];
afterEach(async () => {
  for (const s of servers) await s.close();
  servers = [];
});

/** A local API whose answer the test changes as it goes. */
async function api(handler: (req: IncomingMessage, res: ServerResponse) => void): Promise<string> {
  const s = await upstream((req, res) => handler(req, res));
  servers.push(s);
  return s.baseURL.replace(/\/v1$/, '');
}

const json = (res: ServerResponse, status: number, body: unknown) => res.writeHead(status, { 'content-type': 'application/json' }).end(JSON.stringify(body));

describe('Electricity Maps source', () => {
  it('reads carbonIntensity from /v3/carbon-intensity/latest with the auth-token header', async () => {
    let seen: { url?: string; token?: string | string[] } = {};
    const base = await api((req, res) => {
      seen = { url: req.url, token: req.headers['auth-token'] };
      json(res, 200, { zone: 'DE', carbonIntensity: 302, datetime: '2026-11-26T03:00:00.000Z', updatedAt: '2026-11-26T02:51:00.000Z' });
    });
    const source = electricityMapsSource({ zone: 'DE', apiKey: 'k3y', baseURL: base });
    expect(await source.fetch(new AbortController().signal)).toBe(302);
    expect(seen).toEqual({ url: '/v3/carbon-intensity/latest?zone=DE', token: 'k3y' });
  });

  it.each([
    ['an error status', (res: ServerResponse) => json(res, 401, { message: 'bad token' }), /answered 401/],
    ['a body that is not JSON', (res: ServerResponse) => res.end('<html>oops'), /not JSON/],
    ['a missing figure', (res: ServerResponse) => json(res, 200, { zone: 'DE' }), /carbonIntensity/],
    ['a negative figure', (res: ServerResponse) => json(res, 200, { carbonIntensity: -4 }), /not a non-negative number/],
  ])('rejects %s', async (_name, answer, message) => {
    const base = await api((_req, res) => answer(res));
    await expect(electricityMapsSource({ zone: 'DE', apiKey: 'k', baseURL: base }).fetch(new AbortController().signal)).rejects.toThrow(message);
  });
});

describe('WattTime source', () => {
  it('logs in, reads the forecast\'s first point and converts lbs/MWh to g/kWh; renews an expired token once', async () => {
    let logins = 0;
    let expire = false;
    const base = await api((req, res) => {
      if (req.url === '/login') {
        expect(req.headers.authorization).toBe(`Basic ${Buffer.from('ann:pw').toString('base64')}`);
        logins++;
        return json(res, 200, { token: `t${logins}` });
      }
      expect(req.url).toBe('/v3/forecast?region=CAISO_NORTH&signal_type=co2_moer&horizon_hours=0');
      if (expire && req.headers.authorization === 'Bearer t1') return json(res, 401, { error: 'expired' });
      json(res, 200, { data: [{ point_time: '2026-11-26T03:00:00+00:00', value: 1000 }], meta: { units: 'lbs_co2_per_mwh', region: 'CAISO_NORTH' } });
    });
    const source = wattTimeSource({ region: 'CAISO_NORTH', username: 'ann', password: 'pw', baseURL: base });
    const signal = new AbortController().signal;
    expect(await source.fetch(signal)).toBeCloseTo(1000 * LBS_PER_MWH_TO_G_PER_KWH, 9);
    expect(await source.fetch(signal)).toBeCloseTo(453.59237, 6);
    expect(logins).toBe(1);
    expire = true;
    expect(await source.fetch(signal)).toBeCloseTo(453.59237, 6);
    expect(logins).toBe(2);
  });

  it('refuses figures in units it does not know, and a login without a token', async () => {
    let tokenless = false;
    const base = await api((req, res) => {
      if (req.url === '/login') return json(res, 200, tokenless ? {} : { token: 't' });
      json(res, 200, { data: [{ value: 12 }], meta: { units: 'percentile' } });
    });
    const signal = new AbortController().signal;
    await expect(wattTimeSource({ region: 'R', username: 'u', password: 'p', baseURL: base }).fetch(signal)).rejects.toThrow(/units "percentile"/);
    tokenless = true;
    await expect(wattTimeSource({ region: 'R', username: 'u', password: 'p', baseURL: base }).fetch(signal)).rejects.toThrow(/without a token/);
  });
});

describe('cached carbon signal', () => {
  it('answers the fallback at once, then the fetched value, refreshing after the TTL and keeping the last value through failures and timeouts', async () => {
    let mode: 'ok' | 'error' | 'hang' | 'garbage' = 'ok';
    let value = 250;
    let calls = 0;
    const base = await api((_req, res) => {
      calls++;
      if (mode === 'error') return json(res, 503, { message: 'down' });
      if (mode === 'garbage') return res.end('}{');
      if (mode === 'hang') return; // never answers
      json(res, 200, { carbonIntensity: value });
    });
    let now = 0;
    const errors: string[] = [];
    const signal = new CachedCarbonSignal({
      sources: new Map([['fr', electricityMapsSource({ zone: 'FR', apiKey: 'k', baseURL: base })]]),
      fallback: () => 400,
      ttlMs: 1_000,
      timeoutMs: 200,
      now: () => now,
      onError: (_site, err) => errors.push(String(err)),
    });
    expect(signal.gramsPerKWh('fr')).toBe(400); // nothing fetched yet: the fallback, without waiting
    await signal.refreshAll();
    expect(signal.gramsPerKWh('fr')).toBe(250);
    expect(signal.gramsPerKWh('elsewhere')).toBe(400);

    value = 90;
    now = 500;
    expect(signal.gramsPerKWh('fr')).toBe(250); // within the TTL: no request
    expect(calls).toBe(1);

    for (const failure of ['error', 'garbage', 'hang'] as const) {
      mode = failure;
      now += 1_000;
      signal.gramsPerKWh('fr'); // starts a background refresh
      await signal.refreshAll(); // joins it
      expect(signal.gramsPerKWh('fr')).toBe(250);
    }
    expect(errors).toHaveLength(3);
    expect(errors[2]).toMatch(/timed out after 200 ms/);

    mode = 'ok';
    now += 1_000;
    await signal.refreshAll();
    expect(signal.gramsPerKWh('fr')).toBe(90);
    await signal.close();
  });

  it('is built from config: constants, an API behind the cache, a CSV series by wall-clock hour', async () => {
    const base = await api((_req, res) => json(res, 200, { carbonIntensity: 123 }));
    process.env.FREESH_TEST_EM_KEY = 'from-env';
    const { mkdtemp, writeFile } = await import('node:fs/promises');
    const { join } = await import('node:path');
    const { tmpdir } = await import('node:os');
    const dir = await mkdtemp(join(tmpdir(), 'freesh-carbon-'));
    const csv = join(dir, 'fr.csv');
    await writeFile(csv, 'Data center A,B\n10,20\n11,21\n');
    const wall = Date.UTC(2026, 10, 26, 0, 7); // 00:07 UTC: the second 5-minute step
    const signal = carbonSignalFromConfig(
      [
        { id: 'const', carbon: { gramsPerKWh: 55 } },
        { id: 'api', carbon: { provider: 'electricitymaps', zone: 'DE', apiKey: 'env:FREESH_TEST_EM_KEY', baseURL: base, ttlMs: 60_000, timeoutMs: 1_000, gramsPerKWh: 300 } },
        { id: 'csv', carbon: { provider: 'csv', path: csv, format: 'freesh', column: 1, gramsPerKWh: 400 } },
      ],
      () => wall,
    );
    expect(signal.gramsPerKWh('const', 0)).toBe(55);
    expect(signal.gramsPerKWh('csv', 0)).toBe(21);
    await new Promise((r) => setTimeout(r, 100));
    expect(signal.gramsPerKWh('api', 0)).toBe(123);
    await signal.close?.();
    expect(() => carbonSignalFromConfig([{ id: 'x', carbon: { provider: 'csv', path: join(dir, 'missing.csv'), format: 'freesh', column: 0, gramsPerKWh: 1 } }])).toThrow(/cannot read carbon series/);
  });
});
