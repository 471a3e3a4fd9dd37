import { describe, expect, it } from 'vitest';
import { RetryBudget } from '../../src/transport/retry-budget.js';

describe('RetryBudget', () => {
  it('allows max(min, percent × in flight) retries in progress, and one more for each released', () => {
    let inFlight = 10;
    const budget = new RetryBudget({ percent: 20, min: 1, inFlight: () => inFlight });
    expect([budget.tryAcquire(), budget.tryAcquire(), budget.tryAcquire()]).toEqual([true, true, false]);
    expect(budget.active).toBe(2);
    budget.release();
    expect(budget.tryAcquire()).toBe(true);
    // Fewer in flight: only the floor is left, which two retries in progress already exceed.
    inFlight = 1;
    expect(budget.tryAcquire()).toBe(false);
    budget.release();
    budget.release();
    expect(budget.active).toBe(0);
    expect([budget.tryAcquire(), budget.tryAcquire()]).toEqual([true, false]);
  });

  it('with no floor and no share, retries nothing; a release never goes below zero', () => {
    const budget = new RetryBudget({ percent: 0, min: 0, inFlight: () => 1_000 });
    budget.release();
    expect(budget.active).toBe(0);
    expect(budget.tryAcquire()).toBe(false);
  });
});
