import { describe, expect, it } from 'vitest';
import { decodePowerW, decodeStepMs, type InstanceProfile, prefillMs } from '../../src/cost/profiles.js';
import { SimInstance } from '../../src/sim/instance.js';
import { VirtualClock } from '../../src/sim/virtual-clock.js';

const flat: InstanceProfile = {
  id: 'flat',
  gpu: 'X',
  gpus: 1,
  idleW: 100,
  prefillW: 400,
  decodeW: 300,
  decodeStepMs: [[1, 10], [9, 10]],
  prefillMs: [[100, 50]],
  maxBatch: 4,
};

function job(promptTokens: number, outputTokens: number, clock: VirtualClock) {
  const times: number[] = [];
  let doneAt = -1;
  return {
    spec: { promptTokens, outputTokens, onToken: () => times.push(clock.now()), onDone: () => (doneAt = clock.now()) },
    times,
    doneAt: () => doneAt,
  };
}

describe('SimInstance', () => {
  it('idle instances draw idle power: energy = idle W × time', () => {
    const clock = new VirtualClock();
    const instance = new SimInstance({ profile: flat, clock });
    clock.advance(10_000);
    expect(instance.energyJ).toBeCloseTo(100 * 10, 9);
  });

  it('a single request: TTFT = prefill + one decode step, then one token per step', () => {
    const clock = new VirtualClock();
    const instance = new SimInstance({ profile: flat, clock });
    const j = job(100, 3, clock);
    instance.submit(j.spec);
    while (clock.runNext());
    expect(j.times).toEqual([60, 70, 80]);
    expect(j.doneAt()).toBe(80);
    // Energy: 50 ms prefill at 400 W, 3 decode steps of 10 ms at batch-1 decode power.
    const expected = (50 * 400 + 30 * decodePowerW(flat, 1)) / 1000;
    expect(instance.energyJ).toBeCloseTo(expected, 9);
  });

  it('energy at constant batch = decode power at that batch × time', () => {
    const clock = new VirtualClock();
    const instance = new SimInstance({ profile: { ...flat, prefillMs: [[100, 0]] }, clock });
    // The first job starts a step alone; the other three join at the next step boundary.
    for (let i = 0; i < 4; i++) instance.submit(job(100, 100, clock).spec);
    clock.advance(10);
    const before = instance.energyJ;
    clock.advance(500);
    expect(instance.batch).toBe(4);
    expect(instance.energyJ - before).toBeCloseTo((decodePowerW(flat, 4) * 500) / 1000, 9);
  });

  it('batches up to maxBatch, holds the rest, and slows steps as the batch grows', () => {
    const clock = new VirtualClock();
    const profile = { ...flat, prefillMs: [[100, 0]] as const, decodeStepMs: [[1, 10], [4, 16]] as const, maxBatch: 2 };
    const instance = new SimInstance({ profile, clock });
    const jobs = [job(0, 3, clock), job(0, 3, clock), job(0, 3, clock)];
    for (const j of jobs) instance.submit(j.spec);
    let largest = 0;
    while (clock.runNext()) largest = Math.max(largest, instance.batch);
    expect(largest).toBe(2);
    const one = decodeStepMs(profile, 1);
    const two = decodeStepMs(profile, 2);
    expect(two).toBe(12);
    expect(jobs[0]!.times).toEqual([one, one + two, one + 2 * two]);
    expect(jobs[1]!.times).toEqual([one + two, one + 2 * two, one + 3 * two]);
    // The third waits for a free place in the batch: job 0 leaves after its third token.
    expect(jobs[2]!.times[0]).toBe(one + 3 * two);
    expect(instance.completed).toBe(3);
    expect(instance.outputTokens).toBe(9);
  });

  it('cancelled jobs stop producing tokens', () => {
    const clock = new VirtualClock();
    const instance = new SimInstance({ profile: flat, clock });
    const j = job(0, 100, clock);
    const cancel = instance.submit(j.spec);
    clock.advance(35);
    cancel();
    while (clock.runNext());
    expect(j.times.length).toBe(3);
    expect(j.doneAt()).toBe(-1);
    expect(instance.batch).toBe(0);
  });

  it('prefill time follows the profile curve through zero', () => {
    expect(prefillMs(flat, 50)).toBe(25);
  });
});
