import { describe, expect, it } from 'vitest';
import { initialPlan } from '../../src/plan/plan.js';
import { carbonGreedy, cleanSiteScorer, headroomFilter, leastLoadedPlanned } from '../../src/schedule/baselines.js';
import { decide } from '../../src/schedule/orchestrator.js';
import type { Candidate } from '../../src/types.js';
import { backend, candidate, decisionContext } from '../helpers/fixtures.js';

/** A candidate at a site of `gramsPerKWh` (carbon priced as the cost model does: energy × intensity). */
function at(id: string, gramsPerKWh: number, inFlight = 0, energyJ = 100): Candidate {
  const c = candidate(id, inFlight);
  return { ...c, backend: backend(id, { maxConcurrency: 8 }), cost: { ...c.cost, energyJ, carbonG: (energyJ / 3.6e6) * gramsPerKWh } };
}

const pickOf = (policy: ReturnType<typeof carbonGreedy>, candidates: Candidate[]) =>
  decide(policy, candidates, decisionContext({ candidates }), false).picked?.candidate.backend.id;

describe('baseline policies', () => {
  it('the clean-site scorer rates by the grid, not by the request\'s energy', () => {
    const clean = at('clean', 50, 0, 400);
    const dirty = at('dirty', 400, 0, 100);
    const ctx = decisionContext({ candidates: [clean, dirty] });
    expect(cleanSiteScorer.score(clean, ctx)).toBe(1);
    expect(cleanSiteScorer.score(dirty, ctx)).toBeCloseTo(50 / 400, 12);
  });

  it('carbon-greedy fills the cleanest site up to half its concurrency, then the next cleanest, and overflows to the cleanest when all are past half', () => {
    const policy = carbonGreedy();
    expect(pickOf(policy, [at('dirty', 400), at('clean', 50), at('middle', 200)])).toBe('clean');
    expect(pickOf(policy, [at('dirty', 400), at('clean', 50, 4), at('middle', 200)])).toBe('middle');
    expect(pickOf(policy, [at('dirty', 400, 4), at('clean', 50, 7), at('middle', 200, 5)])).toBe('clean');
  });

  it('carbon-greedy breaks ties within a site by load', () => {
    expect(pickOf(carbonGreedy(), [at('a', 50, 3), at('b', 50, 1), at('c', 50, 2)])).toBe('b');
  });

  it('the headroom filter takes a share of concurrency in (0, 1]', () => {
    expect(() => headroomFilter(0)).toThrow(RangeError);
    expect(headroomFilter(1).keep(at('x', 1, 7), decisionContext())).toBe(true);
    expect(headroomFilter(1).keep(at('x', 1, 8), decisionContext())).toBe(false);
  });

  it('least-loaded-planned asks for the planner and keeps to the backends its plan runs', () => {
    const policy = leastLoadedPlanned();
    expect(policy.planner).toEqual({ clockScaling: true });
    const idle = at('parked', 100, 0);
    const busy = at('running', 100, 6);
    const plan = { ...initialPlan(['running', 'parked'], 0), active: new Set(['running']) };
    const candidates = [idle, busy];
    const decided = decide(policy, candidates, decisionContext({ candidates, plan: { plan, assigned: new Map() } }), false);
    expect(decided.picked?.candidate.backend.id).toBe('running');
    const unplanned = decide(policy, candidates, decisionContext({ candidates }), false);
    expect(unplanned.picked?.candidate.backend.id).toBe('parked');
  });
});
