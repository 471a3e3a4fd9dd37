import { readFile } from 'node:fs/promises';
import { describe, expect, it } from 'vitest';
import { fleetCapacityRps, sloCapacityRps } from '../../src/sim/capacity.js';
import { FREESH_FLEET } from '../../src/sim/fleet.js';
import { parseAzureTrace, type Trace } from '../../src/sim/trace.js';
import { diurnalRate, diurnalTrace, firstMinutes, longPromptTrace, MAX_PROMPT_TOKENS } from '../../src/sim/workloads.js';

const fixture = async (): Promise<Trace> =>
  parseAzureTrace(await readFile(new URL('../fixtures/azure-llm-2023-conv-2min.csv', import.meta.url), 'utf8'), 'conv');

/** A trace of one request a second with the given token counts. */
const steady = (n: number, promptTokens = 1_000, outputTokens = 100): Trace => ({
  name: 'steady',
  requests: Array.from({ length: n }, (_, i) => ({ arrivalMs: i * 1_000, promptTokens, outputTokens })),
  durationMs: (n - 1) * 1_000,
});

describe('benchmark workloads', () => {
  it('long prompts: every prompt scaled, capped at the context, arrivals and answers kept', async () => {
    const trace = await fixture();
    const long = longPromptTrace(trace, 8);
    expect(long.requests).toHaveLength(trace.requests.length);
    trace.requests.forEach((r, i) => {
      const l = long.requests[i]!;
      expect(l.promptTokens).toBe(Math.min(MAX_PROMPT_TOKENS, Math.round(8 * r.promptTokens)));
      expect([l.arrivalMs, l.outputTokens]).toEqual([r.arrivalMs, r.outputTokens]);
    });
    expect(longPromptTrace(steady(1, 10_000), 8).requests[0]!.promptTokens).toBe(MAX_PROMPT_TOKENS);
    expect(() => longPromptTrace(trace, 0.5)).toThrow(RangeError);
  });

  it('a diurnal day: the rate follows the day\'s shape (trough at 04:00, peak at 16:00), the same for the same seed', () => {
    expect(diurnalRate(4)).toBeCloseTo(0.3, 12);
    expect(diurnalRate(16)).toBeCloseTo(1, 12);
    const trace = steady(24_000);
    const day = diurnalTrace(trace, 7);
    const inHour = (h: number) => day.requests.filter((r) => Math.floor((24 * r.arrivalMs) / trace.durationMs) === h).length;
    // 1,000 requests an hour before thinning: about 300 kept at 04:00 and 1,000 at 16:00.
    expect(inHour(4)).toBeGreaterThan(250);
    expect(inHour(4)).toBeLessThan(350);
    expect(inHour(16)).toBeGreaterThan(950);
    expect(diurnalTrace(trace, 7).requests).toEqual(day.requests);
    expect(diurnalTrace(trace, 8).requests).not.toEqual(day.requests);
  });

  it('the first minutes of a trace', async () => {
    const cut = firstMinutes(steady(600), 2);
    expect(cut.requests).toHaveLength(120);
    expect(cut.durationMs).toBe(119_000);
  });

  it('SLO-feasible capacity is below raw capacity and falls with a tighter TBT target and with longer prompts', async () => {
    const trace = await fixture();
    const raw = fleetCapacityRps(FREESH_FLEET, trace);
    const slo = sloCapacityRps(FREESH_FLEET, trace);
    expect(slo).toBeGreaterThan(0.3 * raw);
    expect(slo).toBeLessThan(raw);
    expect(sloCapacityRps(FREESH_FLEET, trace, 150)).toBeGreaterThan(slo);
    expect(sloCapacityRps(FREESH_FLEET, longPromptTrace(trace))).toBeLessThan(slo);
  });
});
