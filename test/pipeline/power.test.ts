import { describe, expect, it } from 'vitest';
import { PowerStates } from '../../src/pipeline/bookkeepers.js';
import type { RequestEvent } from '../../src/pipeline/lifecycle.js';
import { initialPlan } from '../../src/plan/plan.js';
import { backend, request } from '../helpers/fixtures.js';

const BOOT = 180_000;

function setup() {
  const inFlight = new Map<string, number>([['a', 0], ['b', 0]]);
  const power = new PowerStates(['a', 'b'], BOOT, (id) => inFlight.get(id) ?? 0);
  const plan = (active: string[], nowMs: number) => power.follow({ ...initialPlan(['a', 'b'], nowMs), active: new Set(active) }, nowMs);
  const readyIn = (id: string, nowMs: number) => power.readyInMs(power.of(id)!, inFlight.get(id)!, nowMs);
  const placeOn = (id: string, nowMs: number) => power.place({ request: request(), placement: { backend: backend(id) }, nowMs } as unknown as RequestEvent);
  return { inFlight, plan, readyIn, placeOn };
}

describe('power states (parked instances powered off)', () => {
  it('backends start on; a parked one with nothing in flight is off and would take a whole boot', () => {
    const { plan, readyIn } = setup();
    expect(readyIn('b', 0)).toBe(0);
    plan(['a'], 1_000);
    expect(readyIn('a', 1_000)).toBe(0);
    expect(readyIn('b', 1_000)).toBe(BOOT);
  });

  it('a parked backend still draining is on: no boot while requests run there', () => {
    const { inFlight, plan, readyIn } = setup();
    inFlight.set('b', 3);
    plan(['a'], 0);
    expect(readyIn('b', 10)).toBe(0);
    // Brought back while draining: it never went off, so no boot either.
    plan(['a', 'b'], 20);
    inFlight.set('b', 0);
    expect(readyIn('b', 30)).toBe(0);
  });

  it('a plan that brings back a powered-off backend boots it: ready a boot after the plan', () => {
    const { plan, readyIn } = setup();
    plan(['a'], 0);
    plan(['a', 'b'], 60_000);
    expect(readyIn('b', 60_000)).toBe(BOOT);
    expect(readyIn('b', 100_000)).toBe(BOOT - 40_000);
    expect(readyIn('b', 60_000 + BOOT)).toBe(0);
    // A later plan keeping it active does not boot it again.
    plan(['a', 'b'], 400_000);
    expect(readyIn('b', 400_000)).toBe(0);
  });

  it('a request placed on a powered-off backend boots it once; later requests wait for the rest of that boot', () => {
    const { inFlight, plan, readyIn, placeOn } = setup();
    plan(['a'], 0);
    placeOn('b', 10_000);
    inFlight.set('b', 1);
    expect(readyIn('b', 70_000)).toBe(BOOT - 60_000);
    placeOn('b', 70_000);
    expect(readyIn('b', 70_000)).toBe(BOOT - 60_000);
    // Served and drained after the boot: off again, and the next request takes a whole boot.
    inFlight.set('b', 0);
    expect(readyIn('b', 10_000 + BOOT + 1)).toBe(BOOT);
  });
});
