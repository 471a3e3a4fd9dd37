import { describe, expect, it } from 'vitest';
import { loadSolver, solveLp } from '../../src/plan/planner.js';
import { exclusion, type ModeTypeEntry, type PoolFleet, type PoolWindowInput, planPoolWindow } from '../../src/plan/pools.js';

const solve = async (lp: string) => solveLp(await loadSolver(), lp);

const entry = (maxQps: number, powerW: number, over: Partial<ModeTypeEntry> = {}): ModeTypeEntry => ({ maxQps, powerW, ttftMs: 100, tbtMs: 40, e2eMs: 5_000, ...over });
const slo = { ttftMs: 300, tbtMs: 100, e2eMs: 10_000 };

function window(fleet: PoolFleet, demand: Record<string, number>[], carbon: Record<string, number>[], margin = 1): PoolWindowInput {
  return { fleet, demandQps: demand, gramsPerKWh: carbon, margin, stepHours: 1 };
}

const byKey = (plan: { allocation: readonly { site: string; type: string; mode: string; instances: number }[] }) =>
  Object.fromEntries(plan.allocation.map((a) => [`${a.site}/${a.type}/${a.mode}`, a.instances]));

describe('pool MILP', () => {
  it('stops at the cleanest site’s GPU inventory and puts the rest at the next site', async () => {
    const fleet: PoolFleet = {
      sites: [{ id: 'clean', gpus: { G: 4 } }, { id: 'dirty', gpus: { G: 8 } }],
      modes: [{ id: 'm2', gpu: 'G', gpus: 2 }],
      types: ['X'],
      tables: { m2: { X: entry(10, 1_000) } },
      slo,
    };
    // 50 req/s needs 5 instances (10 GPUs); the clean site holds only 2 of them.
    const plan = await planPoolWindow(window(fleet, [{ X: 50 }], [{ clean: 100, dirty: 200 }]), solve);
    expect(plan.status).toBe('optimal');
    expect(byKey(plan)).toEqual({ 'clean/X/m2': 2, 'dirty/X/m2': 3 });
    expect(plan.gramsCO2).toBeCloseTo(2 * 100 + 3 * 200, 6);
    expect(plan.shortfallQps).toBe(0);
  });

  it('counts GPUs across modes of one GPU type, and keeps GPU types apart', async () => {
    const fleet: PoolFleet = {
      sites: [{ id: 's', gpus: { A: 8, H: 4 } }],
      modes: [{ id: 'a4', gpu: 'A', gpus: 4 }, { id: 'a2', gpu: 'A', gpus: 2 }, { id: 'h4', gpu: 'H', gpus: 4 }],
      types: ['X', 'Y'],
      tables: { a4: { X: entry(10, 100) }, a2: { Y: entry(5, 100) }, h4: { X: entry(10, 1_000), Y: entry(10, 1_000) } },
      slo,
    };
    // X: 10 → one a4 (4 A GPUs); Y: 10 → two a2 (the other 4 A GPUs); nothing left for a third a2, so h4 stays off.
    const plan = await planPoolWindow(window(fleet, [{ X: 10, Y: 10 }], [{ s: 100 }]), solve);
    expect(byKey(plan)).toEqual({ 's/X/a4': 1, 's/Y/a2': 2 });
    const more = await planPoolWindow(window(fleet, [{ X: 10, Y: 20 }], [{ s: 100 }]), solve);
    expect(more.status).toBe('optimal');
    expect(byKey(more)).toEqual({ 's/X/a4': 1, 's/Y/a2': 2, 's/Y/h4': 1 });
  });

  it.each([
    ['ttftMs', { ttftMs: 301 }],
    ['tbtMs', { tbtMs: 101 }],
    ['e2eMs', { e2eMs: 10_001 }],
  ] as const)('leaves out a mode whose %s breaks the target, though it is cheaper', async (target, breaks) => {
    const fleet = (limits = slo): PoolFleet => ({
      sites: [{ id: 's', gpus: { G: 8 } }],
      modes: [{ id: 'cheap', gpu: 'G', gpus: 2 }, { id: 'fast', gpu: 'G', gpus: 2 }],
      types: ['X'],
      tables: { cheap: { X: entry(10, 100, breaks) }, fast: { X: entry(10, 900) } },
      slo: limits,
    });
    expect(exclusion(fleet().tables.cheap!.X, slo, 'X')).toBe(target.replace('Ms', ''));
    const plan = await planPoolWindow(window(fleet(), [{ X: 20 }], [{ s: 100 }]), solve);
    expect(byKey(plan)).toEqual({ 's/X/fast': 2 });
    // A per-type override that allows it brings the cheaper mode back.
    const relaxed = { ...slo, byType: { X: { [target]: 20_000 } } };
    const allowed = await planPoolWindow(window(fleet(relaxed), [{ X: 20 }], [{ s: 100 }]), solve);
    expect(byKey(allowed)).toEqual({ 's/X/cheap': 2 });
  });

  it('ignores an e2e target where the table has no e2e measurement, and a mode with maxQps 0', () => {
    expect(exclusion({ maxQps: 1, powerW: 1, ttftMs: 1, tbtMs: 1 }, slo, 'X')).toBeUndefined();
    expect(exclusion(entry(0, 100), slo, 'X')).toBe('no capacity');
    expect(exclusion(undefined, slo, 'X')).toBe('no capacity');
  });

  it('covers margin × demand at the peak step, and charges every step its own carbon', async () => {
    const fleet: PoolFleet = {
      sites: [{ id: 's', gpus: { G: 20 } }],
      modes: [{ id: 'm', gpu: 'G', gpus: 2 }],
      types: ['X'],
      tables: { m: { X: entry(10, 1_000) } },
      slo,
    };
    // Peak 30 × 1.1 = 33 req/s needs 4 instances; the mean (20 × 1.1 = 22) would need only 3.
    const plan = await planPoolWindow(window(fleet, [{ X: 10 }, { X: 30 }, { X: 20 }], [{ s: 100 }, { s: 300 }, { s: 50 }], 1.1), solve);
    expect(byKey(plan)).toEqual({ 's/X/m': 4 });
    expect(plan.gramsCO2).toBeCloseTo(4 * (100 + 300 + 50), 6);
  });

  it('accepts negative carbon: a site whose window sums below zero runs all the instances it can', async () => {
    const fleet: PoolFleet = {
      sites: [{ id: 'neg', gpus: { G: 6 } }, { id: 'pos', gpus: { G: 6 } }],
      modes: [{ id: 'm', gpu: 'G', gpus: 2 }],
      types: ['X'],
      tables: { m: { X: entry(10, 1_000) } },
      slo,
    };
    // 'neg' is −100 then +40 (sum −60 per kW): every instance there lowers the objective.
    const plan = await planPoolWindow(window(fleet, [{ X: 5 }, { X: 5 }], [{ neg: -100, pos: 50 }, { neg: 40, pos: 50 }]), solve);
    expect(plan.status).toBe('optimal');
    expect(byKey(plan)).toEqual({ 'neg/X/m': 3 });
    expect(plan.gramsCO2).toBeCloseTo(3 * -60, 6);
  });

  it('gives an infeasible window the least shortfall, then the least carbon, and reports the shortfall', async () => {
    const fleet: PoolFleet = {
      sites: [{ id: 'a', gpus: { A: 8 } }, { id: 'b', gpus: { G: 4 } }, { id: 'c', gpus: { G: 4 } }],
      modes: [{ id: 'x', gpu: 'A', gpus: 4 }, { id: 'y', gpu: 'G', gpus: 2 }],
      types: ['X', 'Y'],
      tables: { x: { X: entry(30, 500) }, y: { Y: entry(10, 500) } },
      slo,
    };
    const carbon = [{ a: 100, b: 900, c: 200 }, { a: 100, b: 900, c: 200 }];
    // X needs 1.1 × 100 = 110 req/s at the peak step; site a holds two x instances (60 req/s).
    const plan = await planPoolWindow(window(fleet, [{ X: 50, Y: 5 }, { X: 100, Y: 5 }], carbon, 1.1), solve);
    expect(plan.status).toBe('infeasible');
    expect(plan.shortfallQps).toBeCloseTo(110 - 60, 6);
    // Y (5.5 req/s) is covered by one instance, at the cleaner of b and c, and no more than one.
    expect(byKey(plan)).toEqual({ 'a/X/x': 2, 'c/Y/y': 1 });
    expect(plan.gramsCO2).toBeCloseTo(2 * 0.5 * 100 * 2 + 0.5 * 200 * 2, 6);
  });

  it('reports a type no mode may serve as shortfall, and still plans the others', async () => {
    const fleet: PoolFleet = {
      sites: [{ id: 's', gpus: { G: 4 } }],
      modes: [{ id: 'm', gpu: 'G', gpus: 2 }],
      types: ['X', 'Y'],
      tables: { m: { X: entry(10, 100), Y: entry(10, 100, { tbtMs: 500 }) } },
      slo,
    };
    const plan = await planPoolWindow(window(fleet, [{ X: 5, Y: 7 }], [{ s: 100 }]), solve);
    expect(plan.status).toBe('infeasible');
    expect(plan.shortfallQps).toBeCloseTo(7, 6);
    expect(byKey(plan)).toEqual({ 's/X/m': 1 });
  });
});
