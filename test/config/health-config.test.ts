import { describe, expect, it } from 'vitest';
import { fileConfigSchema, parseConfig } from '../../src/config/schema.js';

const valid = {
  sites: [{ id: 'loc1', carbon: { gramsPerKWh: 100 } }],
  backends: [{ id: 'b1', site: 'loc1', baseURL: 'http://127.0.0.1:9/v1', models: ['m'] }],
};

describe('the health config section', () => {
  it('defaults to the documented values (Envoy\'s where it has one)', () => {
    expect(parseConfig(fileConfigSchema, valid).health).toEqual({
      probes: true,
      probePath: '/models',
      probeIntervalMs: 5_000,
      probeTimeoutMs: 1_000,
      unhealthyThreshold: 1,
      consecutiveFailures: 5,
      baseEjectionMs: 30_000,
      maxEjectionMs: 300_000,
      maxEjectedPercent: 50,
      retryBudgetPercent: 20,
      retryBudgetMin: 3,
    });
  });

  it.each([
    [{ probePath: 'models' }, /`health\.probePath`: must be a path starting with \/, got `"models"`/],
    [{ probeIntervalMs: 10 }, /`health\.probeIntervalMs`: .*got `10`/],
    [{ maxEjectedPercent: 101 }, /`health\.maxEjectedPercent`: .*got `101`/],
    [{ consecutiveFailures: 0 }, /`health\.consecutiveFailures`: .*got `0`/],
    [{ retryBudgetPercent: -1 }, /`health\.retryBudgetPercent`: .*got `-1`/],
    [{ probe: true }, /`health`: Unrecognized key: "probe"/],
  ])('refuses %j, naming the field and the value', (health, message) => {
    expect(() => parseConfig(fileConfigSchema, { ...valid, health })).toThrow(message);
  });
});
