import { subscribe, unsubscribe } from 'node:diagnostics_channel';
import { afterAll, afterEach, describe, expect, it } from 'vitest';
import type { BackendEvent } from '../../src/pipeline/backend-events.js';
import { BackendGuard } from '../../src/pipeline/backend-guard.js';
import { VirtualClock } from '../../src/sim/virtual-clock.js';
import { ClusterView } from '../../src/state/cluster-view.js';
import { MemoryStateStore } from '../../src/state/memory-store.js';

const events: BackendEvent[] = [];
const listen = (e: unknown): void => void events.push(e as BackendEvent);
subscribe('freesh:backend', listen);
afterEach(() => void events.splice(0));
afterAll(() => void unsubscribe('freesh:backend', listen));

/** A guard over `ids` on a virtual clock and the memory store, with the options the test sets. */
function guardOver(ids: string[], options: Partial<ConstructorParameters<typeof BackendGuard>[0]> = {}) {
  const clock = new VirtualClock();
  const store = new MemoryStateStore({ clock });
  const view = new ClusterView({ store, backendIds: ids, clock, refreshMs: 250 });
  const ejections: string[] = [];
  const guard = new BackendGuard({
    backendIds: ids,
    view,
    clock,
    consecutiveFailures: 3,
    baseEjectionMs: 1_000,
    maxEjectionMs: 2_500,
    maxEjectedPercent: 50,
    onEject: (id, reason) => ejections.push(`${id}:${reason}`),
    onStoreError: (err) => {
      throw err;
    },
    ...options,
  });
  const healthy = (id: string) => view.get(id, clock.now()).healthy;
  return { clock, store, view, guard, ejections, healthy };
}

const failTimes = (guard: BackendGuard, id: string, n: number) => {
  for (let i = 0; i < n; i++) guard.failed(id, 'answered 500');
};

describe('BackendGuard: outlier ejection and the circuit', () => {
  it('ejects after consecutiveFailures in a row, for base × n up to the max, with a single trial after each', () => {
    const { clock, guard, healthy } = guardOver(['a', 'b', 'c', 'd']);
    failTimes(guard, 'a', 2);
    expect(guard.state('a')).toBe('closed');
    guard.failed('a', 'answered 500');
    expect(guard.state('a')).toBe('open');
    expect(healthy('a')).toBe(false);
    expect(guard.admit('a')).toBe('refuse');

    const lengths: number[] = [];
    for (let round = 0; round < 4; round++) {
      const ejectedAt = clock.now();
      clock.advance(1);
      while (guard.state('a') === 'open') clock.advance(50);
      lengths.push(clock.now() - ejectedAt);
      // Half-open: exactly one trial goes through; it keeps the backend out of placement everywhere.
      expect(guard.admit('a')).toBe('trial');
      expect(guard.admit('a')).toBe('refuse');
      expect(healthy('a')).toBe(false);
      guard.trialAnswered('a', 'failed', 'answered 500');
      expect(guard.state('a')).toBe('open');
    }
    // 1×, 2×, capped at 2.5 s (to the 50 ms steps of the loop).
    expect(lengths.map((ms) => Math.ceil(ms / 50) * 50)).toEqual([1_050, 2_050, 2_550, 2_550]);
  });

  it('a successful trial closes the circuit and resets the backoff', () => {
    const { clock, guard, healthy } = guardOver(['a', 'b']);
    failTimes(guard, 'a', 3);
    clock.advance(1_000);
    expect(guard.admit('a')).toBe('trial');
    guard.trialAnswered('a', 'failed', 'answered 500');
    clock.advance(2_000);
    expect(guard.admit('a')).toBe('trial');
    guard.trialAnswered('a', 'ok', '');
    expect(guard.state('a')).toBe('closed');
    expect(healthy('a')).toBe(true);
    expect(guard.admit('a')).toBe('go');
    expect(events).toContainEqual({ kind: 'restored', backendId: 'a', reason: 'trial request succeeded' });
    // The next ejection is the first of a new series: base length again.
    failTimes(guard, 'a', 3);
    clock.advance(999);
    expect(guard.state('a')).toBe('open');
    clock.advance(1);
    expect(guard.state('a')).toBe('half-open');
  });

  it('a trial the client abandoned is no verdict: the next request is the trial', () => {
    const { clock, guard, healthy } = guardOver(['a', 'b']);
    failTimes(guard, 'a', 3);
    clock.advance(1_000);
    expect(guard.admit('a')).toBe('trial');
    guard.trialAnswered('a', 'none', '');
    expect(guard.state('a')).toBe('half-open');
    expect(healthy('a')).toBe(true);
    expect(guard.admit('a')).toBe('trial');
  });

  it('a success resets the count of consecutive failures', () => {
    const { guard } = guardOver(['a', 'b']);
    for (let i = 0; i < 10; i++) {
      failTimes(guard, 'a', 2);
      guard.succeeded('a');
    }
    expect(guard.state('a')).toBe('closed');
  });

  it('never ejects more than maxEjectedPercent of the fleet (at least one backend)', () => {
    const four = guardOver(['a', 'b', 'c', 'd']);
    for (const id of ['a', 'b', 'c', 'd']) failTimes(four.guard, id, 5);
    expect(['a', 'b', 'c', 'd'].map((id) => four.guard.state(id))).toEqual(['open', 'open', 'closed', 'closed']);
    expect(four.ejections).toEqual(['a:outlier', 'b:outlier']);

    const none = guardOver(['a', 'b', 'c'], { maxEjectedPercent: 0 });
    for (const id of ['a', 'b', 'c']) failTimes(none.guard, id, 5);
    expect(['a', 'b', 'c'].map((id) => none.guard.state(id))).toEqual(['open', 'closed', 'closed']);
  });

  it('a passing probe closes an open circuit at once; probes that fail take it out until one passes', () => {
    const { guard, healthy, ejections } = guardOver(['a', 'b']);
    failTimes(guard, 'a', 3);
    guard.probed('a', 'pass', '', 0);
    expect(guard.state('a')).toBe('closed');
    expect(healthy('a')).toBe(true);
    expect(events).toContainEqual({ kind: 'restored', backendId: 'a', reason: 'a probe passed' });

    guard.probed('b', 'fail', 'ECONNREFUSED', 5_000);
    expect(healthy('b')).toBe(true);
    guard.probed('b', 'down', 'ECONNREFUSED', 5_000);
    guard.probed('b', 'down', 'ECONNREFUSED', 5_000);
    expect(healthy('b')).toBe(false);
    // One ejection however many rounds confirm it.
    expect(ejections).toEqual(['a:outlier', 'b:probe']);
    guard.probed('b', 'pass', '', 0);
    expect(healthy('b')).toBe(true);
  });
});
