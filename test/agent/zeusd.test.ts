import type { AddressInfo } from 'node:net';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, afterEach, describe, expect, it } from 'vitest';
import { GpuDriverError } from '../../src/agent/driver.js';
import { ZeusdDriver } from '../../src/agent/zeusd.js';
import { closeServer } from '../../src/sim/backend-server.js';
import { type StandIn, zeusdStandIn } from '../helpers/zeusd-stand-in.js';

const cleanups: (() => unknown)[] = [];
afterEach(async () => {
  for (const fn of cleanups.splice(0).reverse()) await fn();
});
const dir = mkdtempSync(join(tmpdir(), 'freesh-zeusd-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

async function overTcp(gpuCount: number, gpus: number[]): Promise<{ zeusd: StandIn; driver: ZeusdDriver }> {
  const zeusd = zeusdStandIn(gpuCount);
  await new Promise<void>((resolve) => zeusd.server.listen(0, '127.0.0.1', resolve));
  const driver = new ZeusdDriver({ url: `http://127.0.0.1:${(zeusd.server.address() as AddressInfo).port}`, gpus });
  cleanups.push(() => closeServer(zeusd.server), () => driver.close());
  return { zeusd, driver };
}

describe('ZeusdDriver against a zeusd stand-in', () => {
  it('sets and resets locked clocks with the exact requests zeusd expects', async () => {
    const { zeusd, driver } = await overTcp(2, [0, 1]);
    await driver.setClockRange(1, 345, 1500);
    await driver.resetClocks(0);
    expect(zeusd.calls).toEqual([
      'POST /gpu/set_gpu_locked_clocks?gpu_ids=1&min_clock_mhz=345&max_clock_mhz=1500&block=true',
      'POST /gpu/reset_gpu_locked_clocks?gpu_ids=0&block=true',
    ]);
    expect(zeusd.locks.get(1)).toEqual([345, 1500]);
  });

  it('reads power (mW → W) and reports the locked clock as the SM clock', async () => {
    const { zeusd, driver } = await overTcp(2, [0, 1]);
    zeusd.powerMw.set(0, 78_270).set(1, 412_500);
    await driver.setClockRange(1, 345, 1500);
    const gpus = await driver.listGpus();
    expect(gpus.map((g) => [g.index, g.powerW, g.smClockMHz, g.maxSmClockMHz])).toEqual([[0, 78.27, 1980, 1980], [1, 412.5, 1500, 1980]]);
    expect(zeusd.calls.at(-1)).toBe('GET /gpu/get_power?gpu_ids=0%2C1');
  });

  it('reads the cumulative energy counter (mJ → J)', async () => {
    const { zeusd, driver } = await overTcp(1, [0]);
    zeusd.energyMj.set(0, 123_456_789);
    expect(await driver.energy(0)).toEqual({ joules: 123_456.789, source: 'counter' });
    expect(zeusd.calls).toEqual(['GET /gpu/get_cumulative_energy?gpu_ids=0']);
  });

  it('reports HTTP errors, unexpected bodies, unknown GPUs and an unreachable daemon as GpuDriverErrors', async () => {
    const { zeusd, driver } = await overTcp(1, [0]);
    zeusd.failWith = 500;
    await expect(driver.setClockRange(0, 345, 1500)).rejects.toMatchObject({ kind: 'command', field: 'set_gpu_locked_clocks', raw: expect.stringContaining('Insufficient Permissions') });
    zeusd.failWith = undefined;
    await expect(driver.resetClocks(3)).rejects.toMatchObject({ kind: 'command', field: 'gpu_ids' });

    const wrongShape = await overTcp(2, [0, 5]);
    await expect(wrongShape.driver.listGpus()).rejects.toBeInstanceOf(GpuDriverError);
    await closeServer(wrongShape.zeusd.server);
    await expect(wrongShape.driver.energy(0)).rejects.toMatchObject({ kind: 'command', field: 'get_cumulative_energy' });
  });

  it('refuses a clock range outside integers before any request', async () => {
    const { zeusd, driver } = await overTcp(1, [0]);
    await expect(driver.setClockRange(0, 1500, 345)).rejects.toBeInstanceOf(RangeError);
    expect(zeusd.calls).toEqual([]);
  });

  it('works over a Unix socket', async () => {
    const zeusd = zeusdStandIn(1);
    const socketPath = join(dir, 'zeusd.sock');
    await new Promise<void>((resolve) => zeusd.server.listen(socketPath, resolve));
    const driver = new ZeusdDriver({ socketPath, gpus: [0] });
    cleanups.push(() => closeServer(zeusd.server), () => driver.close());
    zeusd.powerMw.set(0, 300_000);
    await driver.setClockRange(0, 345, 990);
    expect((await driver.listGpus())[0]).toMatchObject({ powerW: 300, smClockMHz: 990 });
    expect(zeusd.locks.get(0)).toEqual([345, 990]);
  });
});
