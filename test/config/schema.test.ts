import { mkdtemp, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { ConfigError, fileConfigSchema, parseConfig } from '../../src/config/schema.js';
import { loadConfigFile } from '../../src/proxy/standalone.js';
import { createRouter } from '../../src/router.js';

const valid = {
  sites: [{ id: 'loc1', carbon: { gramsPerKWh: 100 } }],
  backends: [{ id: 'b1', site: 'loc1', baseURL: 'http://127.0.0.1:9/v1', models: ['m'] }],
};

describe('config', () => {
  it('fills every default', () => {
    const config = parseConfig(fileConfigSchema, valid);
    expect(config.server).toEqual({
      host: '127.0.0.1',
      port: 8080,
      headersTimeoutMs: 10_000,
      requestTimeoutMs: 30_000,
      keepAliveTimeoutMs: 65_000,
      maxHeaderBytes: 16_384,
      drainTimeoutMs: 30_000,
    });
    expect(config.policy).toBe('freesh');
    expect(config.limits.maxQueueLength).toBe(1_000);
    expect(config.limits).toMatchObject({ maxJsonDepth: 128, strictRequests: false, maxOutputTokens: 1_048_576 });
    expect(config.backends[0]).toMatchObject({ maxConcurrency: 64, mode: '2xA100' });
    expect(config.sites[0]).toMatchObject({ pue: 1.2, region: '' });
  });

  it('refuses a headers timeout longer than the request timeout', () => {
    expect(() => parseConfig(fileConfigSchema, { ...valid, server: { headersTimeoutMs: 5_000, requestTimeoutMs: 1_000 } })).toThrow(
      /`server\.headersTimeoutMs`: headersTimeoutMs must not exceed requestTimeoutMs/,
    );
  });

  it('names the field and quotes the bad value', () => {
    const bad = { ...valid, backends: [valid.backends[0], { ...valid.backends[0], id: 'b2', maxConcurrency: 0 }] };
    expect(() => parseConfig(fileConfigSchema, bad)).toThrow(/`backends\[1\]\.maxConcurrency`: .*got `0`/);
  });

  it('reports every problem at once: unknown keys, bad URLs, dangling site references, duplicates, unknown modes', () => {
    const bad = {
      sites: [{ id: 'loc1' }, { id: 'loc1' }],
      backends: [
        { id: 'b1', site: 'nowhere', baseURL: 'ftp://x', models: ['m'], mode: '3xTPU' },
        { id: 'b1', site: 'loc1', baseURL: 'http://x/v1', models: [] },
      ],
      colour: 'blue',
    };
    let message = '';
    try {
      parseConfig(fileConfigSchema, bad, 'config file f.json');
    } catch (err) {
      expect(err).toBeInstanceOf(ConfigError);
      message = (err as Error).message;
    }
    expect(message).toMatch(/^Invalid config file f\.json:/);
    expect(message).toContain('`backends[0].baseURL`');
    expect(message).toContain('got `"ftp://x"`');
    expect(message).toContain('`backends[0].mode`');
    expect(message).toContain('`backends[1].models`');
    expect(message).toContain('config file f.json: Unrecognized key: "colour"');
  });

  it('checks references once the shapes are valid', () => {
    const bad = { ...valid, backends: [{ ...valid.backends[0], site: 'nowhere' }, { ...valid.backends[0] }] };
    const run = () => parseConfig(fileConfigSchema, bad);
    expect(run).toThrow(/`backends\[0\]\.site`: must name one of the sites \(loc1\), got `"nowhere"`/);
    expect(run).toThrow(/`backends\[1\]\.id`: duplicate backend id, got `"b1"`/);
  });

  it('rejects an unknown policy name when the router is created', () => {
    expect(() => createRouter({ ...valid, policy: 'fastest' })).toThrow(/`policy`: must be one of round-robin, random, freesh, freesh-published, least-loaded, least-loaded-planned, carbon-greedy, got `"fastest"`/);
  });

  it('loads a file, and explains unreadable or malformed files', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'freesh-config-'));
    const good = join(dir, 'good.json');
    await writeFile(good, JSON.stringify({ ...valid, server: { port: 9000 } }));
    expect((await loadConfigFile(good)).server.port).toBe(9000);
    const broken = join(dir, 'broken.json');
    await writeFile(broken, '{"sites": [');
    await expect(loadConfigFile(broken)).rejects.toThrow(/broken\.json is not valid JSON/);
    await expect(loadConfigFile(join(dir, 'missing.json'))).rejects.toThrow(/Cannot read config file/);
    const wrong = join(dir, 'wrong.json');
    await writeFile(wrong, JSON.stringify({ ...valid, server: { port: 70000 } }));
    await expect(loadConfigFile(wrong)).rejects.toThrow(/`server\.port`.*got `70000`/);
  });
});
