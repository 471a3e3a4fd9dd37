import type { CarbonSeries } from './series.js';

/**
 * Grid carbon intensity by site, as the router needs it on every decision. Contract: synchronous and
 * never throws — an implementation that talks to an API refreshes in the background and answers
 * from its cache, falling back to a configured value.
 */
export interface CarbonSignal {
  /** Intensity at a site now (gCO2e/kWh). */
  gramsPerKWh(siteId: string, nowMs: number): number;
  close?(): Promise<void>;
}

/**
 * Time series per site, with `originMs` the router-clock time at which each series starts (the
 * simulator starts its virtual clock at 0). Sites without a series get `fallback(siteId)`.
 */
export function seriesSignal(series: ReadonlyMap<string, CarbonSeries>, fallback: (siteId: string) => number, originMs = 0): CarbonSignal {
  return {
    gramsPerKWh: (siteId, nowMs) => series.get(siteId)?.at(nowMs - originMs) ?? fallback(siteId),
  };
}
