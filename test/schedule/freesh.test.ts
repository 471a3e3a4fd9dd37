import { describe, expect, it } from 'vitest';
import { initialPlan, type PlanView } from '../../src/plan/plan.js';
import { DEFAULT_SLO_CLASSES } from '../../src/request/slo.js';
import { freesh } from '../../src/schedule/freesh.js';
import { capacityFilter, deadlineFilter, laxityScorer, objectiveScorer, plannedFilter, planShareScorer } from '../../src/schedule/freesh.js';
import { decide } from '../../src/schedule/orchestrator.js';
import type { Candidate } from '../../src/types.js';
import { candidate, decisionContext } from '../helpers/fixtures.js';

const costed = (id: string, cost: Partial<Candidate['cost']>, extra: Partial<Candidate> = {}): Candidate => {
  const c = candidate(id);
  return { ...c, ...extra, cost: { ...c.cost, ...cost } };
};

describe('freesh plugins', () => {
  it('the objective scorer rates the cleanest candidate 1 and the others by ratio; energy when asked', () => {
    const a = costed('a', { carbonG: 1, energyJ: 40 });
    const b = costed('b', { carbonG: 4, energyJ: 10 });
    const carbon = decisionContext({ candidates: [a, b], objective: 'carbon' });
    expect([objectiveScorer.score(a, carbon), objectiveScorer.score(b, carbon)]).toEqual([1, 0.25]);
    const energy = decisionContext({ candidates: [a, b], objective: 'energy' });
    expect([objectiveScorer.score(a, energy), objectiveScorer.score(b, energy)]).toEqual([0.25, 1]);
  });

  it('the deadline filter checks TTFT, TBT (against the tightest running target too) and the p90 end against the p90 deadline', () => {
    const slo = DEFAULT_SLO_CLASSES.standard!; // TTFT 2 s + 1 ms/token, TBT 150 ms
    // Prompt of 512 tokens: TTFT target 2,512 ms. The p50 deadline is not what a p90 end is held to.
    const ctx = decisionContext({ slo, nowMs: 0, deadlineMs: 12_000, deadlineP90Ms: 20_000 });
    const ok = costed('ok', { ttftMs: 2_000, tbtMs: 100, e2eP90Ms: 19_000 });
    expect(deadlineFilter.keep(ok, ctx)).toBe(true);
    expect(deadlineFilter.keep(costed('slow-start', { ttftMs: 2_600, tbtMs: 100, e2eP90Ms: 19_000 }), ctx)).toBe(false);
    expect(deadlineFilter.keep(costed('slow-tokens', { ttftMs: 2_000, tbtMs: 140, e2eP90Ms: 19_000 }), ctx)).toBe(false); // > 0.85 × 150
    expect(deadlineFilter.keep(costed('late', { ttftMs: 2_000, tbtMs: 100, e2eP90Ms: 21_000 }), ctx)).toBe(false);
    expect(deadlineFilter.keep(costed('protects', { ttftMs: 2_000, tbtMs: 100, e2eP90Ms: 19_000 }, { strictestTbtMs: 100 }), ctx)).toBe(false);
  });

  it('laxity: 0.5 at zero slack, more with slack, less when late', () => {
    const ctx = decisionContext({ nowMs: 0, deadlineMs: 10_000 });
    expect(laxityScorer.score(costed('x', { e2eMs: 10_000 }), ctx)).toBe(0.5);
    expect(laxityScorer.score(costed('x', { e2eMs: 5_000 }), ctx)).toBe(0.75);
    expect(laxityScorer.score(costed('x', { e2eMs: 15_000 }), ctx)).toBe(0.25);
  });

  it('plan shares: backends behind their share score higher; neutral without shares', () => {
    const plan = { ...initialPlan(['a', 'b'], 0), shares: new Map([['SS' as const, new Map([['a', 0.75], ['b', 0.25]])]]) };
    const view: PlanView = { plan, assigned: new Map([['SS', new Map([['a', 1], ['b', 1]])]]) };
    const ctx = decisionContext({ plan: view, requestType: 'SS' });
    expect(planShareScorer.score(candidate('a'), ctx)).toBeCloseTo(1, 9);
    expect(planShareScorer.score(candidate('b'), ctx)).toBeCloseTo(0, 9);
    expect(planShareScorer.score(candidate('a'), decisionContext({ plan: view, requestType: 'LL' }))).toBe(0.5);
  });

  it('parked and full backends are filtered softly', () => {
    const plan = { ...initialPlan(['a'], 0) };
    const ctx = decisionContext({ plan: { plan, assigned: new Map() } });
    expect(plannedFilter.keep(candidate('a'), ctx)).toBe(true);
    expect(plannedFilter.keep(candidate('b'), ctx)).toBe(false);
    expect(plannedFilter.soft && capacityFilter.soft && deadlineFilter.soft).toBe(true);
    expect(capacityFilter.keep(candidate('a', 9, 0), ctx)).toBe(true);
    expect(capacityFilter.keep(candidate('a', 9, 1), ctx)).toBe(false);
  });
});

describe('freesh policy', () => {
  it('picks the cleanest backend that meets the deadline', () => {
    const clean = costed('clean', { carbonG: 1, ttftMs: 500, tbtMs: 50, e2eP90Ms: 5_000 });
    const cleanButLate = costed('clean-late', { carbonG: 0.5, ttftMs: 500, tbtMs: 50, e2eP90Ms: 50_000 });
    const dirty = costed('dirty', { carbonG: 5, ttftMs: 500, tbtMs: 50, e2eP90Ms: 5_000 });
    const candidates = [dirty, cleanButLate, clean];
    const d = decide(freesh(), candidates, decisionContext({ candidates, deadlineMs: 20_000 }), true);
    expect(d.picked?.candidate.backend.id).toBe('clean');
    expect(d.relaxed).toEqual([]);
  });

  it('when no backend can meet the deadline, relaxes the filter and takes the least late, whatever its carbon', () => {
    const late = costed('late', { carbonG: 9, e2eMs: 30_000, e2eP90Ms: 40_000 });
    const later = costed('later', { carbonG: 1, e2eMs: 60_000, e2eP90Ms: 80_000 });
    const candidates = [later, late];
    const d = decide(freesh(), candidates, decisionContext({ candidates, deadlineMs: 20_000 }), true);
    expect(d.relaxed).toEqual(['deadline']);
    expect(d.picked?.candidate.backend.id).toBe('late');
    // The late-request scorers replaced the carbon ones.
    expect(Object.keys(d.trace!.candidates[0]!.scores!)).toEqual(['laxity', 'load']);
  });

  it('declares least-laxity-first fair admission and a planner with clock scaling', () => {
    expect(freesh().queue?.name).toBe('least-laxity-fair');
    expect(freesh().queue?.tenantFair).toBe(true);
    expect(freesh().planner).toEqual({ clockScaling: true });
  });
});
