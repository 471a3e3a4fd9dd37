import { readFileSync } from 'node:fs';
import type { z } from 'zod';
import { ConfigError, type carbonSchema } from '../config/schema.js';
import { CachedCarbonSignal, electricityMapsSource, type IntensitySource, wattTimeSource } from './providers.js';
import { type CarbonSeries, parseElectricityMapsCsv, parseFreeshCarbonCsv } from './series.js';
import type { CarbonSignal } from './signal.js';

type CarbonConfig = z.output<typeof carbonSchema>;

/**
 * The carbon signal a config describes: constants answer at once; API sources sit behind one cache;
 * CSV series are read once, here, and replayed against the wall clock.
 */
export function carbonSignalFromConfig(sites: readonly { id: string; carbon: CarbonConfig }[], now: () => number = Date.now): CarbonSignal {
  const fallback = new Map(sites.map((s) => [s.id, s.carbon.gramsPerKWh]));
  const sources = new Map<string, IntensitySource>();
  const series = new Map<string, { series: CarbonSeries; origin: (wallMs: number) => number }>();
  let ttlMs = Number.POSITIVE_INFINITY;
  let timeoutMs = 5_000;
  for (const { id, carbon } of sites) {
    if (!('provider' in carbon)) continue;
    if (carbon.provider === 'csv') {
      let text: string;
      try {
        text = readFileSync(carbon.path, 'utf8');
      } catch (err) {
        throw new ConfigError(`site \`${id}\`: cannot read carbon series ${carbon.path}: ${(err as Error).message}`);
      }
      if (carbon.format === 'electricitymaps') series.set(id, { series: parseElectricityMapsCsv(text), origin: startOfYear });
      else {
        const column = parseFreeshCarbonCsv(text)[carbon.column];
        if (!column) throw new ConfigError(`site \`${id}\`: carbon series ${carbon.path} has no column ${carbon.column}`);
        series.set(id, { series: column, origin: startOfDay });
      }
      continue;
    }
    ttlMs = Math.min(ttlMs, carbon.ttlMs);
    timeoutMs = Math.max(timeoutMs, carbon.timeoutMs);
    sources.set(
      id,
      carbon.provider === 'electricitymaps'
        ? electricityMapsSource({ zone: carbon.zone, apiKey: secret(carbon.apiKey, id), baseURL: carbon.baseURL })
        : wattTimeSource({ region: carbon.region, username: secret(carbon.username, id), password: secret(carbon.password, id), baseURL: carbon.baseURL }),
    );
  }
  const cached =
    sources.size > 0
      ? new CachedCarbonSignal({
          sources,
          fallback: (siteId) => fallback.get(siteId) ?? 400,
          ttlMs,
          timeoutMs,
          now,
          onError: (siteId, error) => console.warn(`freesh: carbon signal for site ${siteId} failed (keeping the last value): ${String(error)}`),
        })
      : undefined;
  if (cached) void cached.refreshAll();
  return {
    // The router's clock is monotonic; grid data follows the wall clock.
    gramsPerKWh(siteId) {
      const s = series.get(siteId);
      if (s) {
        const wall = now();
        return s.series.at(wall - s.origin(wall));
      }
      return cached ? cached.gramsPerKWh(siteId) : (fallback.get(siteId) ?? 400);
    },
    close: () => cached?.close() ?? Promise.resolve(),
  };
}

/** `env:NAME` reads NAME from the environment, so secrets need not sit in the config file. */
function secret(value: string, siteId: string): string {
  if (!value.startsWith('env:')) return value;
  const name = value.slice(4);
  const found = process.env[name];
  if (!found) throw new ConfigError(`site \`${siteId}\`: environment variable ${name} is not set`);
  return found;
}

function startOfYear(wallMs: number): number {
  return Date.UTC(new Date(wallMs).getUTCFullYear(), 0, 1);
}

function startOfDay(wallMs: number): number {
  const d = new Date(wallMs);
  return Date.UTC(d.getUTCFullYear(), d.getUTCMonth(), d.getUTCDate());
}
