import { createHash } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { hashKey, KeyRing, mintKey, presentedKey } from '../../src/auth/keys.js';
import { formatReset } from '../../src/auth/limiter.js';
import { ConfigError, parseConfig, routerConfigSchema } from '../../src/config/schema.js';

const headers = (h: Record<string, string>) => (name: string) => h[name];

describe('gateway keys', () => {
  it('hashes a key as the sha256 hex of its UTF-8 bytes', () => {
    expect(hashKey('fsk-test')).toBe(createHash('sha256').update('fsk-test').digest('hex'));
    expect(hashKey('fsk-test')).toMatch(/^[0-9a-f]{64}$/);
  });

  it('mints distinct random keys, each with its hash', () => {
    const a = mintKey();
    const b = mintKey();
    expect(a.key).toMatch(/^fsk-[A-Za-z0-9_-]{43}$/);
    expect(a.key).not.toBe(b.key);
    expect(a.sha256).toBe(hashKey(a.key));
  });

  it('reads the key from a bearer Authorization, else from api-key', () => {
    expect(presentedKey(headers({ authorization: 'Bearer abc' }))).toBe('abc');
    expect(presentedKey(headers({ authorization: 'bearer  abc ' }))).toBe('abc');
    expect(presentedKey(headers({ 'api-key': ' abc ' }))).toBe('abc');
    expect(presentedKey(headers({ authorization: 'Bearer abc', 'api-key': 'other' }))).toBe('abc');
    expect(presentedKey(headers({}))).toBeUndefined();
    expect(presentedKey(headers({ 'api-key': '' }))).toBeUndefined();
    expect(presentedKey(headers({ authorization: 'Basic dXNlcjpwYXNz' }))).toBeNull();
    expect(presentedKey(headers({ authorization: 'Bearer a b' }))).toBeNull();
  });

  it('finds a key by its hash only, and nothing for any other string', () => {
    const ring = new KeyRing([
      [hashKey('one'), 1],
      [hashKey('two'), 2],
    ]);
    expect(ring.find('one')).toBe(1);
    expect(ring.find('two')).toBe(2);
    expect(ring.find('three')).toBeUndefined();
    expect(ring.find(hashKey('one'))).toBeUndefined();
    expect(ring.find('')).toBeUndefined();
  });
});

describe('rate limit resets', () => {
  it('are written as OpenAI writes them', () => {
    expect(formatReset(0)).toBe('0ms');
    expect(formatReset(19.2)).toBe('20ms');
    expect(formatReset(1_000)).toBe('1s');
    expect(formatReset(1_500)).toBe('1.5s');
    expect(formatReset(360_000)).toBe('6m0s');
    expect(formatReset(3_723_000)).toBe('1h2m3s');
  });
});

describe('auth config', () => {
  const fleet = { sites: [{ id: 's' }], backends: [{ id: 'b', site: 's', baseURL: 'http://127.0.0.1:1/v1', models: ['m'] }] };

  it('defaults to none (open), and fills a key and its limits', () => {
    expect(parseConfig(routerConfigSchema, fleet).auth).toBeUndefined();
    const auth = parseConfig(routerConfigSchema, { ...fleet, auth: { keys: [{ sha256: hashKey('k'), tenant: 't' }] } }).auth!;
    expect(auth.keys[0]).toMatchObject({ tenant: 't', freeshHeaders: false, limits: {} });
    expect(auth).toMatchObject({ tenants: {}, adminKeys: [], outputTokensEstimate: 1_024 });
  });

  it('refuses a key given in clear instead of its hash, a key configured twice and a shared id, naming the field', () => {
    const clear = (() => {
      try {
        parseConfig(routerConfigSchema, { ...fleet, auth: { keys: [{ sha256: 'fsk-plain-key', tenant: 't' }] } });
      } catch (err) {
        return err as Error;
      }
    })();
    expect(clear).toBeInstanceOf(ConfigError);
    expect(clear?.message).toMatch(/`auth\.keys\[0\]\.sha256`: must be the sha256/);
    // A key pasted in clear is not repeated in the error (which goes to a log).
    expect(clear?.message).not.toContain('fsk-plain-key');
    expect(() => parseConfig(routerConfigSchema, { ...fleet, auth: { keys: [{ sha256: hashKey('k'), tenant: 't' }], adminKeys: [hashKey('k')] } })).toThrow(
      /`auth\.adminKeys\[0\]`: the same key is configured twice/,
    );
    const twins = [
      { id: 'x', sha256: hashKey('a'), tenant: 't' },
      { id: 'x', sha256: hashKey('b'), tenant: 't' },
    ];
    expect(() => parseConfig(routerConfigSchema, { ...fleet, auth: { keys: twins } })).toThrow(ConfigError);
    expect(() => parseConfig(routerConfigSchema, { ...fleet, auth: { tenants: { t: { requestsPerMinute: 0 } } } })).toThrow(/requestsPerMinute/);
  });
});
