import { describe, expect, it } from 'vitest';
import { GpuDriverError } from '../../src/agent/driver.js';
import { FakeGpuDriver, H200_SM_CLOCKS_MHZ } from '../../src/agent/fake-gpu.js';
import type { Clock } from '../../src/clock.js';

function manualClock(): Clock & { advance(ms: number): void } {
  let now = 0;
  return { now: () => now, setTimer: () => ({ cancel() {} }), advance: (ms) => { now += ms; } };
}

describe('FakeGpuDriver', () => {
  it('lists the H200 clock table and per-GPU telemetry', async () => {
    const gpu = new FakeGpuDriver({ count: 2 });
    expect(await gpu.supportedSmClocks(1)).toEqual(H200_SM_CLOCKS_MHZ);
    const [a, b] = await gpu.listGpus();
    expect(a).toMatchObject({ index: 0, smClockMHz: 345, maxSmClockMHz: 1980, powerW: 75, powerLimitW: 700 });
    expect(b!.uuid).toMatch(/^GPU-[0-9a-f-]{36}$/);
  });

  it('a busy GPU runs at the top of its lock; a lower lock cuts power a lot and decode time a little', async () => {
    const gpu = new FakeGpuDriver();
    gpu.setBatch(0, 32);
    const fullW = gpu.powerW(0);
    const fullMs = gpu.stepMs(0);
    expect(gpu.smClockMHz(0)).toBe(1980);
    await gpu.setClockRange(0, 990, 990);
    expect(gpu.smClockMHz(0)).toBe(990);
    const savedPower = 1 - gpu.powerW(0) / fullW;
    const slower = gpu.stepMs(0) / fullMs - 1;
    expect(savedPower).toBeGreaterThan(0.4);
    expect(slower).toBeCloseTo(0.05); // decode sensitivity 5% at half clock
    await gpu.resetClocks(0);
    expect(gpu.powerW(0)).toBe(fullW);
    expect(gpu.commands).toEqual(['-i 0 -lgc 990,990', '-i 0 -rgc']);
  });

  it('power falls with the clock down to the frequency model\'s range', async () => {
    const gpu = new FakeGpuDriver();
    gpu.setBatch(0, 8);
    let last = Infinity;
    for (const mhz of [1980, 1650, 1275, 990]) {
      await gpu.setClockRange(0, mhz, mhz);
      expect(gpu.powerW(0)).toBeLessThan(last);
      last = gpu.powerW(0);
    }
    // Below half the maximum the frequency model has no data and holds its value.
    await gpu.setClockRange(0, 600, 600);
    expect(gpu.powerW(0)).toBe(last);
  });

  it('rounds a lock onto supported clocks and idles at its bottom', async () => {
    const gpu = new FakeGpuDriver();
    await gpu.setClockRange(0, 1000, 1499);
    expect(gpu.smClockMHz(0)).toBe(1005);
    gpu.setBatch(0, 1);
    expect(gpu.smClockMHz(0)).toBe(1485);
  });

  it('counts energy exactly as power × time across changes', async () => {
    const clock = manualClock();
    const gpu = new FakeGpuDriver({ clock });
    const idleW = gpu.powerW(0);
    clock.advance(2000);
    gpu.setBatch(0, 16);
    const busyW = gpu.powerW(0);
    clock.advance(1000);
    expect(await gpu.energy(0)).toEqual({ joules: idleW * 2 + busyW, source: 'counter' });
  });

  it('fails an injected command like a denied nvidia-smi, and unknown GPUs', async () => {
    const gpu = new FakeGpuDriver();
    gpu.failNextCommand('Insufficient Permissions');
    await expect(gpu.setClockRange(0, 990, 1980)).rejects.toBeInstanceOf(GpuDriverError);
    await expect(gpu.setClockRange(0, 990, 1980)).resolves.toBeUndefined();
    await expect(gpu.resetClocks(1)).rejects.toMatchObject({ kind: 'command', field: '-i' });
    expect(() => gpu.setBatch(0, -1)).toThrow(RangeError);
  });
});
