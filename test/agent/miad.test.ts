import { describe, expect, it } from 'vitest';
import { H200_SM_CLOCKS_MHZ } from '../../src/agent/fake-gpu.js';
import { bounds, initialState, laxityHeadroom, leastHeadroom, miadConfig, miadController, miadNext, MIAD_DEFAULTS, tbtHeadroom, type MiadState } from '../../src/agent/miad.js';

const H200 = H200_SM_CLOCKS_MHZ;
const fresh = (headroom: number | null) => ({ headroom, ageMs: 0 });
const risk = fresh(0);
const room = fresh(0.5);
const band = fresh(0.2);
const at = (clockMHz: number, holdPeriods = 0): MiadState => ({ clockMHz, holdPeriods });

describe('MIAD controller', () => {
  const c = miadController({ supportedMHz: H200, floorMHz: 990 });

  it('starts at the maximum supported clock', () => {
    expect(c.initial()).toEqual({ clockMHz: 1980, holdPeriods: 0 });
  });

  it('raises multiplicatively under risk, snapped down to a supported clock, and reaches the max in three periods', () => {
    const path: number[] = [];
    let state = at(990);
    for (let i = 0; i < 4; i++) {
      const step = c.next(state, risk);
      path.push(step.clockMHz);
      state = step.state;
    }
    expect(path).toEqual([1275, 1650, 1980, 1980]);
    expect(c.next(at(990), risk)).toMatchObject({ action: 'raise', reason: 'risk' });
    expect(c.next(at(1980), risk)).toMatchObject({ action: 'hold', reason: 'at-bound', clockMHz: 1980 });
  });

  it('lowers additively with room, by decreaseStepMHz each period, down to the floor and no further', () => {
    let state = at(1980);
    const path: number[] = [];
    for (let i = 0; i < 40; i++) {
      const step = c.next(state, room);
      path.push(step.clockMHz);
      state = step.state;
    }
    expect(path.slice(0, 3)).toEqual([1950, 1920, 1890]);
    expect(path.indexOf(990)).toBe(32); // 33 periods from 1980 to 990
    expect(path.slice(33).every((mhz) => mhz === 990)).toBe(true);
    expect(c.next(at(990), room)).toMatchObject({ action: 'hold', reason: 'at-bound' });
  });

  it('holds inside the hysteresis band, at both of its edges', () => {
    for (const headroom of [0.1, 0.2, 0.3]) {
      expect(c.next(at(1500), fresh(headroom))).toMatchObject({ clockMHz: 1500, action: 'hold', reason: 'band' });
    }
    expect(c.next(at(1500), fresh(0.0999)).action).toBe('raise');
    expect(c.next(at(1500), fresh(0.3001)).action).toBe('lower');
  });

  it('a signal oscillating inside the band never moves the clock', () => {
    let state = at(1500);
    const values = [0.1, 0.3, 0.15, 0.29, 0.2, 0.11, 0.25];
    for (let i = 0; i < 50; i++) state = c.next(state, fresh(values[i % values.length]!)).state;
    expect(state.clockMHz).toBe(1500);
  });

  it('holds for holdAfterRaise periods after a raise before lowering again, but raises again at once', () => {
    let step = c.next(at(990), risk);
    expect(step.state.holdPeriods).toBe(MIAD_DEFAULTS.holdAfterRaise);
    const clock = step.clockMHz;
    for (let i = 0; i < 3; i++) {
      step = c.next(step.state, room);
      expect(step).toMatchObject({ clockMHz: clock, action: 'hold', reason: 'cooldown' });
    }
    expect(c.next(step.state, room)).toMatchObject({ clockMHz: clock - 30, action: 'lower' });
    expect(c.next(c.next(at(990), risk).state, risk).clockMHz).toBe(1650);
  });

  it('never moves more than maxChangePerPeriodMHz in a period', () => {
    const fast = miadController({ supportedMHz: H200, floorMHz: 345, increaseFactor: 3, maxChangePerPeriodMHz: 300, decreaseStepMHz: 500 });
    expect(fast.next(at(600), risk).clockMHz).toBe(900);
    expect(fast.next(at(1200), room).clockMHz).toBe(900);
    let state = at(345);
    for (let i = 0; i < 20; i++) {
      const next = fast.next(state, risk).state;
      expect(next.clockMHz - state.clockMHz).toBeLessThanOrEqual(300);
      state = next;
    }
    expect(state.clockMHz).toBe(1980);
  });

  it('only ever returns clocks from the supported list, also for an irregular list and off-list inputs', () => {
    const list = [210, 405, 600, 615, 900, 1410];
    const odd = miadController({ supportedMHz: list, floorMHz: 400, maxMHz: 1000, decreaseStepMHz: 7, increaseFactor: 1.01 });
    expect(bounds(odd.config)).toEqual({ floorMHz: 405, maxMHz: 900 });
    const signals = [risk, room, band, fresh(null), fresh(-3), { headroom: 0.5, ageMs: 10_000 }];
    for (const start of [0, 100, 404, 601, 899, 1410, 5000]) {
      let state = at(start);
      for (let i = 0; i < 30; i++) {
        state = odd.next(state, signals[(i * 5 + start) % signals.length]!).state;
        expect(list).toContain(state.clockMHz);
        expect(state.clockMHz).toBeGreaterThanOrEqual(405);
        expect(state.clockMHz).toBeLessThanOrEqual(900);
      }
    }
    // A tiny factor or step still moves one supported clock.
    expect(odd.next(at(600), risk).clockMHz).toBe(615);
    expect(odd.next(at(615), room).clockMHz).toBe(600);
  });

  it('applies a new plan floor at once and keeps the clock within [floor, max]', () => {
    const raised = miadConfig({ supportedMHz: H200, floorMHz: 1500 });
    expect(miadNext(raised, at(990), room)).toMatchObject({ clockMHz: 1500, action: 'hold', reason: 'at-bound' });
    expect(miadNext(raised, at(990), band).clockMHz).toBe(1500);
    const capped = miadConfig({ supportedMHz: H200, floorMHz: 345, maxMHz: 1400 });
    expect(initialState(capped).clockMHz).toBe(1395);
    expect(miadNext(capped, at(1980), risk).clockMHz).toBe(1395);
  });

  it('a floor above the max yields the max: the SLO side wins', () => {
    const config = miadConfig({ supportedMHz: H200, floorMHz: 1800, maxMHz: 1500 });
    expect(bounds(config)).toEqual({ floorMHz: 1500, maxMHz: 1500 });
    expect(miadNext(config, at(990), room).clockMHz).toBe(1500);
  });

  it('treats a stale signal as a risk, and idleness as room unless configured to hold', () => {
    expect(c.next(at(990), { headroom: 0.9, ageMs: 3001 })).toMatchObject({ action: 'raise', reason: 'stale' });
    expect(c.next(at(990), { headroom: 0.9, ageMs: 3000 }).action).toBe('hold');
    expect(c.next(at(1500), fresh(null))).toMatchObject({ clockMHz: 1470, action: 'lower', reason: 'idle' });
    const holding = miadController({ supportedMHz: H200, floorMHz: 990, idle: 'hold' });
    expect(holding.next(at(1500), fresh(null))).toMatchObject({ clockMHz: 1500, action: 'hold', reason: 'idle' });
  });

  it('rejects bad constants', () => {
    const base = { supportedMHz: H200, floorMHz: 990 };
    expect(() => miadConfig({ ...base, supportedMHz: [] })).toThrow(RangeError);
    expect(() => miadConfig({ ...base, supportedMHz: [1.5] })).toThrow(RangeError);
    expect(() => miadConfig({ ...base, increaseFactor: 1 })).toThrow(/increaseFactor/);
    expect(() => miadConfig({ ...base, riskThreshold: 0.3, roomThreshold: 0.3 })).toThrow(/riskThreshold/);
    expect(() => miadConfig({ ...base, decreaseStepMHz: 0 })).toThrow(/decreaseStepMHz/);
    expect(() => miadConfig({ ...base, floorMHz: Number.NaN })).toThrow(/floorMHz/);
    expect(() => miadConfig({ ...base, holdAfterRaise: 1.5 })).toThrow(/holdAfterRaise/);
  });

  it('headroom helpers: TBT share left, laxity share, the least of several', () => {
    expect(tbtHeadroom(100, 80)).toBeCloseTo(0.2);
    expect(tbtHeadroom(100, 120)).toBeCloseTo(-0.2);
    expect(laxityHeadroom(250, 1000)).toBe(0.25);
    expect(leastHeadroom([0.4, -0.1, 0.2])).toBe(-0.1);
    expect(leastHeadroom([])).toBeNull();
  });
});
