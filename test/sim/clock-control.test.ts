import { describe, expect, it } from 'vitest';
import { constantSeries } from '../../src/carbon/series.js';
import { CLOCK_RUNS, clockRun } from '../../src/sim/clock-control.js';
import type { FleetSpec } from '../../src/sim/fleet.js';
import { simulate } from '../../src/sim/simulator.js';
import type { Trace } from '../../src/sim/trace.js';
import { buildWorkload } from '../../src/sim/workload.js';

const FLEET: FleetSpec = {
  model: 'm',
  sites: [{ id: 's', region: 'X', gramsPerKWh: 100, pue: 1 }],
  backends: [{ id: 'a', site: 's', mode: '2xA100', maxConcurrency: 16 }, { id: 'b', site: 's', mode: '2xA100', maxConcurrency: 16 }],
};
const carbon = new Map([['s', constantSeries(100)]]);

/** Light load, one request every 2 s for ten minutes: room to lower clocks almost all the time. */
function light(): Trace {
  const requests = Array.from({ length: 300 }, (_, i) => ({ arrivalMs: i * 2_000, promptTokens: 300 + ((i * 37) % 400), outputTokens: 20 + ((i * 53) % 200) }));
  return { name: 'light', requests, durationMs: requests.at(-1)!.arrivalMs };
}

describe('the MIAD controller in the simulator', () => {
  it('runs the agent on the simulated instances: less energy than the fixed maximum clock at light load, latency within 20%', async () => {
    const run = (name: string) => simulate({ fleet: FLEET, workload: buildWorkload(light(), { seed: 3 }), carbon, run: clockRun(name) });
    const fixed = await run('fixed-max');
    const miad = await run('miad');
    expect(miad.records.length).toBe(fixed.records.length);
    expect(miad.records.every((r) => r.doneMs !== undefined)).toBe(true);
    // Decode is memory-bound: lower clocks cut power far more than they stretch steps.
    expect(miad.energyJ).toBeLessThan(0.97 * fixed.energyJ);
    const late = (r: (typeof miad.records)[number]) => r.doneMs! - r.request.arrivalMs;
    const mean = (xs: number[]) => xs.reduce((a, b) => a + b, 0) / xs.length;
    expect(mean(miad.records.map(late))).toBeGreaterThan(mean(fixed.records.map(late)));
    expect(mean(miad.records.map(late))).toBeLessThan(1.2 * mean(fixed.records.map(late)));
  }, 60_000);

  it('names every run it offers', () => {
    for (const name of CLOCK_RUNS) expect(clockRun(name).name).toBe(name);
    expect(clockRun('miad').miad).toEqual({});
    expect(() => clockRun('nope')).toThrow(/unknown clock-control run/);
  });
});
