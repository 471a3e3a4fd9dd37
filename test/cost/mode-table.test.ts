import { describe, expect, it } from 'vitest';
import { tableFromProfile } from '../../src/cost/mode-table.js';
import { BUILTIN_PROFILES } from '../../src/cost/profiles.js';
import { loadSolver, solveLp } from '../../src/plan/planner.js';
import { planPoolWindow } from '../../src/plan/pools.js';

const shapes = { SS: { promptTokens: 300, outputTokens: 120 }, LS: { promptTokens: 3_000, outputTokens: 120 }, SL: { promptTokens: 300, outputTokens: 800 } };

describe('tableFromProfile', () => {
  it('derives a table whose figures move as the physics says', () => {
    const a2 = tableFromProfile(BUILTIN_PROFILES['2xA100']!, shapes, 64);
    const a8 = tableFromProfile(BUILTIN_PROFILES['8xA100']!, shapes, 64);
    const p = BUILTIN_PROFILES['2xA100']!;
    // Long prompts cost prefill: fewer requests/s, later first tokens, longer stalls between tokens.
    expect(a2.LS!.maxQps).toBeLessThan(a2.SS!.maxQps);
    expect(a2.LS!.ttftMs).toBeGreaterThan(a2.SS!.ttftMs);
    expect(a2.LS!.tbtMs).toBeGreaterThan(a2.SS!.tbtMs);
    // Long answers hold a batch slot longer.
    expect(a2.SL!.maxQps).toBeLessThan(a2.SS!.maxQps);
    // Wider tensor parallelism at the same batch: shorter steps, more power.
    expect(a8.SS!.tbtMs).toBeLessThan(a2.SS!.tbtMs);
    expect(a8.SS!.powerW).toBeGreaterThan(a2.SS!.powerW);
    for (const e of [a2.SS!, a2.LS!]) {
      expect(e.powerW).toBeGreaterThan(p.idleW);
      expect(e.powerW).toBeLessThanOrEqual(Math.max(p.prefillW, p.decodeW));
      expect(e.e2eMs).toBeCloseTo(e.ttftMs + 119 * e.tbtMs, 6);
    }
    expect(a2.SL!.e2eMs).toBeCloseTo(a2.SL!.ttftMs + 799 * a2.SL!.tbtMs, 6);
  });

  it('feeds the pool planner: demand of 2.5 instances’ rate gets 3 instances of the derived mode', async () => {
    const table = tableFromProfile(BUILTIN_PROFILES['4xH100']!, shapes, 64);
    const highs = await loadSolver();
    const plan = await planPoolWindow(
      {
        fleet: { sites: [{ id: 's', gpus: { 'H100-80GB': 16 } }], modes: [{ id: '4xH100', gpu: 'H100-80GB', gpus: 4 }], types: ['SS'], tables: { '4xH100': table }, slo: { ttftMs: 1_000, tbtMs: 200 } },
        demandQps: [{ SS: 2.5 * table.SS!.maxQps }],
        gramsPerKWh: [{ s: 100 }],
        margin: 1,
        stepHours: 1,
      },
      (lp) => solveLp(highs, lp),
    );
    expect(plan.allocation).toEqual([{ site: 's', type: 'SS', mode: '4xH100', instances: 3 }]);
    expect(plan.gramsCO2).toBeCloseTo((3 * table.SS!.powerW * 100) / 1000, 6);
  });
});
