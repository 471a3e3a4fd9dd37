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

  it('prefill chunks and admission go by priority (lower first), then by arrival', () => {
    const clock = new VirtualClock();
    const instance = new SimInstance({ profile: flat, clock, prefillChunkTokens: 100, maxBatch: 2 });
    const low = job(400, 1, clock);
    const high = job(100, 1, clock);
    const later = job(100, 1, clock);
    const waiting = job(100, 1, clock);
    instance.submit({ ...low.spec, priority: 2 });
    instance.submit({ ...later.spec, priority: 1 }); // the batch of 2 is full from here
    instance.submit({ ...waiting.spec, priority: 2 });
    instance.submit({ ...high.spec, priority: 0 });
    while (clock.runNext());
    // Step 1 (50 ms) prefills 100 of low's tokens: the others came after it began. Then each free
    // slot goes to the highest priority waiting (high, then later), and each chunk to the highest
    // priority running; waiting, of low's priority, comes after low.
    expect([high.times[0], later.times[0], low.times[0], waiting.times[0]]).toEqual([100, 150, 300, 350]);
  });

  it('a single request: the first token ends its prefill, then one token per decode step', () => {
    const clock = new VirtualClock();
    const instance = new SimInstance({ profile: flat, clock });
    const j = job(100, 3, clock);
    instance.submit(j.spec);
    while (clock.runNext());
    expect(j.times).toEqual([50, 60, 70]);
    expect(j.doneAt()).toBe(70);
    // Energy: 50 ms prefill at 400 W, then 2 decode steps of 10 ms at batch-1 decode power.
    const expected = (50 * 400 + 20 * decodePowerW(flat, 1)) / 1000;
    expect(instance.energyJ).toBeCloseTo(expected, 9);
  });

  it('energy at constant batch = decode power at that batch × time', () => {
    const clock = new VirtualClock();
    const instance = new SimInstance({ profile: { ...flat, prefillMs: [[100, 0]] }, clock });
    // The first job starts a (zero-length) prefill step alone; the other three prefill in the next
    // step, while the first decodes, and all four decode together from the third step on.
    for (let i = 0; i < 4; i++) instance.submit(job(100, 1_000, clock).spec);
    clock.advance(20);
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
    // The first job starts alone; the second joins at the next step.
    expect(jobs[0]!.times).toEqual([one, one + two, one + 2 * two]);
    expect(jobs[1]!.times).toEqual([one + two, one + 2 * two, one + 3 * two]);
    // The third waits for a place in the batch: job 0 leaves after its third token, and the third
    // job's (empty) prompt is prefilled alongside job 1's last decode step.
    expect(jobs[2]!.times[0]).toBe(one + 3 * two);
    expect(instance.completed).toBe(3);
    expect(instance.outputTokens).toBe(9);
  });

  it('prefills long prompts in chunks, so decoding sequences keep producing tokens', () => {
    const clock = new VirtualClock();
    const profile = { ...flat, prefillMs: [[100, 50]] as const };
    const instance = new SimInstance({ profile, clock, prefillChunkTokens: 100 });
    const short = job(0, 10, clock);
    instance.submit(short.spec);
    const long = job(300, 1, clock);
    instance.submit(long.spec);
    while (clock.runNext());
    // Three chunks of 100 tokens (50 ms each) ride along with decode steps of 10 ms.
    expect(long.times).toEqual([decodeStepMs(profile, 1) + 3 * 60]);
    const gaps = short.times.slice(1).map((t, i) => t - short.times[i]!);
    expect(Math.max(...gaps)).toBe(60);
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

  describe('power states', () => {
    it('a parked instance with parkedPower off draws nothing; work boots it at idle power and starts when the boot ends', () => {
      const clock = new VirtualClock();
      const instance = new SimInstance({ profile: flat, clock, parkedPower: 'off', bootMs: 1_000 });
      instance.parked = true;
      expect(instance.power).toBe('off');
      clock.advance(5_000);
      expect(instance.energyJ).toBe(0);
      const j = job(100, 2, clock);
      instance.submit(j.spec);
      expect(instance.power).toBe('booting');
      clock.advance(500);
      expect(instance.energyJ).toBeCloseTo(100 * 0.5, 9);
      while (clock.runNext());
      // Boot (1 s), then prefill (50 ms) and one decode step (10 ms), from t = 5 s.
      expect(j.times).toEqual([6_050, 6_060]);
      expect(instance.boots).toBe(1);
      // It is unparked by the work, so it stays on at idle power afterwards.
      expect(instance.power).toBe('on');
    });

    it('unparking boots an instance ahead of work, and work arriving mid-boot waits for the rest of it', () => {
      const clock = new VirtualClock();
      const instance = new SimInstance({ profile: flat, clock, parkedPower: 'off', bootMs: 1_000 });
      instance.parked = true;
      clock.advance(100);
      instance.parked = false;
      expect(instance.power).toBe('booting');
      clock.advance(700);
      const j = job(100, 1, clock);
      instance.submit(j.spec);
      while (clock.runNext());
      expect(j.times).toEqual([1_100 + 50]);
      expect(instance.boots).toBe(1);
    });

    it('a parked instance finishes its work before powering off', () => {
      const clock = new VirtualClock();
      const instance = new SimInstance({ profile: flat, clock, parkedPower: 'off', bootMs: 1_000 });
      const j = job(100, 3, clock);
      instance.submit(j.spec);
      clock.advance(20);
      instance.parked = true;
      expect(instance.power).toBe('on');
      while (clock.runNext());
      expect(j.times).toEqual([50, 60, 70]);
      expect(instance.power).toBe('off');
      const before = instance.energyJ;
      clock.advance(10_000);
      expect(instance.energyJ).toBe(before);
    });

    it('idle shutdown: off after idleOffAfterMs with nothing to do, and the timer restarts after each spell of work', () => {
      const clock = new VirtualClock();
      const instance = new SimInstance({ profile: flat, clock, bootMs: 2_000, idleOffAfterMs: 300_000 });
      clock.advance(200_000);
      const j = job(100, 1, clock);
      instance.submit(j.spec);
      clock.advance(299_000);
      expect(instance.power).toBe('on');
      clock.advance(2_000);
      expect(instance.power).toBe('off');
      // Idle power for 200 s + the step + 300 s of idling after it; nothing since.
      expect(instance.energyJ).toBeCloseTo(100 * 200 + 400 * 0.05 + 100 * 300, 6);
      const k = job(100, 1, clock);
      const at = clock.now();
      instance.submit(k.spec);
      while (clock.runNext() && instance.power !== 'off');
      expect(k.times).toEqual([at + 2_000 + 50]);
    });

    it('the decode power follows the given small-batch curve', () => {
      const clock = new VirtualClock();
      const instance = new SimInstance({ profile: flat, clock, decodePowerShare: () => 1 });
      instance.submit(job(0, 11, clock).spec);
      clock.advance(5);
      // Decoding at batch 1 draws the full decode power with this curve (b / (b + 4) would give 140 W).
      expect(instance.powerW).toBeCloseTo(300, 9);
    });
  });
});
