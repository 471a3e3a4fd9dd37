import { chmodSync, existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { GpuDriverError } from '../../src/agent/driver.js';
import { NvidiaSmiDriver, parseGpuQuery, parseSupportedClocks, QUERY_ARGS, smClocksAtHighestMemory } from '../../src/agent/nvidia-smi.js';
import type { Clock } from '../../src/clock.js';

const FIXTURES = new URL('../fixtures/nvidia-smi/', import.meta.url);
const fixture = (name: string) => readFileSync(new URL(name, FIXTURES), 'utf8');
const QUERY = fixture('h200-query.csv');
const SUPPORTED = fixture('h200-supported-clocks.txt');

function expectDriverError(fn: () => unknown, kind: string, field: string, raw?: string): void {
  try {
    fn();
  } catch (error) {
    expect(error).toBeInstanceOf(GpuDriverError);
    const e = error as GpuDriverError;
    expect({ kind: e.kind, field: e.field }).toEqual({ kind, field });
    if (raw !== undefined) expect(e.raw).toBe(raw);
    return;
  }
  throw new Error('expected a GpuDriverError');
}

describe('parseGpuQuery', () => {
  it('reads the captured H200 line', () => {
    expect(parseGpuQuery(QUERY)).toEqual([{
      index: 0, uuid: 'GPU-00000000-0000-0000-0000-000000000000', name: 'NVIDIA H200',
      powerW: 78.27, smClockMHz: 345, maxSmClockMHz: 1980, powerLimitW: 700,
    }]);
  });

  it('reads several GPUs and returns them in index order', () => {
    const line1 = QUERY.trim().replace(/^0,/, '1,').replace('78.27', '412.50').replace(' 345,', ' 1980,');
    const gpus = parseGpuQuery(`${line1}\n${QUERY}`);
    expect(gpus.map((g) => [g.index, g.powerW, g.smClockMHz])).toEqual([[0, 78.27, 345], [1, 412.5, 1980]]);
  });

  it('reports [N/A] and [Not Supported] as unavailable, naming the field', () => {
    expectDriverError(() => parseGpuQuery(QUERY.replace('78.27', '[N/A]')), 'unavailable', 'power.draw', '[N/A]');
    expectDriverError(() => parseGpuQuery(QUERY.replace(' 345,', ' [Not Supported],')), 'unavailable', 'clocks.sm', '[Not Supported]');
    expectDriverError(() => parseGpuQuery(QUERY.replace('700.00', '[N/A]')), 'unavailable', 'enforced.power.limit');
  });

  it('reports values in an unexpected format instead of guessing', () => {
    expectDriverError(() => parseGpuQuery(QUERY.replace('78.27', '78.27 W')), 'parse', 'power.draw', '78.27 W');
    expectDriverError(() => parseGpuQuery(QUERY.replace(' 345,', ' 345 MHz,')), 'parse', 'clocks.sm');
    expectDriverError(() => parseGpuQuery(QUERY.replace(' 1980,', ' -1,')), 'parse', 'clocks.max.sm');
    expectDriverError(() => parseGpuQuery(QUERY.replace(' 345,', ' 2100,')), 'parse', 'clocks.sm');
    expectDriverError(() => parseGpuQuery(QUERY.replace('GPU-00000000', 'GPU-0000')), 'parse', 'uuid');
    expectDriverError(() => parseGpuQuery(QUERY.replace(/^0,/, 'x,')), 'parse', 'index');
    expectDriverError(() => parseGpuQuery(QUERY.replace('78.27', '1e400')), 'parse', 'power.draw');
    expectDriverError(() => parseGpuQuery(QUERY.replace(', 700.00', '')), 'parse', 'query');
    expectDriverError(() => parseGpuQuery(`${QUERY}${QUERY}`), 'parse', 'index');
    expectDriverError(() => parseGpuQuery('\n'), 'parse', 'query');
    expectDriverError(() => parseGpuQuery(fixture('h200-energy-field-error.txt')), 'parse', 'query');
  });
});

describe('parseSupportedClocks', () => {
  it('reads the captured H200 table: two memory clocks, 110 SM clocks each', () => {
    const [gpu, ...rest] = parseSupportedClocks(SUPPORTED);
    expect(rest).toEqual([]);
    expect(gpu!.busId).toBe('00000000:00:06.0');
    expect(gpu!.memory.map((m) => [m.memoryMHz, m.graphicsMHz.length])).toEqual([[3201, 110], [2201, 110]]);
    const sm = smClocksAtHighestMemory(gpu!);
    expect(sm[0]).toBe(345);
    expect(sm.at(-1)).toBe(1980);
    expect(sm.every((mhz, i) => i === 0 || mhz - sm[i - 1]! === 15)).toBe(true);
  });

  it('picks the highest memory clock whatever the order', () => {
    const swapped = { busId: 'x', memory: [{ memoryMHz: 2201, graphicsMHz: [900, 800] }, { memoryMHz: 3201, graphicsMHz: [1980, 345, 345] }] };
    expect(smClocksAtHighestMemory(swapped)).toEqual([345, 1980]);
  });

  it('reports N/A, stray lines and empty tables', () => {
    expectDriverError(() => parseSupportedClocks(SUPPORTED.replace(/    Supported Clocks\n[\s\S]*$/, '    Supported Clocks                                   : N/A\n')), 'unavailable', 'Supported Clocks', 'N/A');
    expectDriverError(() => parseSupportedClocks(SUPPORTED.replace('1965 MHz', '1965 GHz')), 'parse', 'Graphics', '1965 GHz');
    expectDriverError(() => parseSupportedClocks(SUPPORTED.replace('1965 MHz', 'N/A')), 'unavailable', 'Graphics');
    expectDriverError(() => parseSupportedClocks(SUPPORTED.replace('            Graphics                                   : 1965 MHz', '            Boost: 1965 MHz')), 'parse', 'SUPPORTED_CLOCKS');
    expectDriverError(() => parseSupportedClocks(SUPPORTED.replace(/    Supported Clocks\n[\s\S]*$/, '    Supported Clocks\n')), 'parse', 'Supported Clocks');
    expectDriverError(() => parseSupportedClocks('No devices were found\n'), 'parse', 'SUPPORTED_CLOCKS');
  });
});

/**
 * A stand-in nvidia-smi: a node script that appends its argv to a log and prints the recorded
 * output for the command it was given (or fails as nvidia-smi does without privileges).
 */
const dir = mkdtempSync(join(tmpdir(), 'freesh-nvidia-smi-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

function standIn(name: string, options: { fail?: boolean } = {}): { binary: string; calls: () => string[][] } {
  const log = join(dir, `${name}.log`);
  const binary = join(dir, name);
  const outputs = {
    query: QUERY,
    supported: SUPPORTED,
    lgc: 'GPU clocks set to "(gpuClkMin 990, gpuClkMax 1980)" for GPU 00000000:00:06.0\nAll done.\n',
    rgc: 'All done.\n',
  };
  writeFileSync(binary, `#!${process.execPath}
const fs = require('node:fs');
const args = process.argv.slice(2);
fs.appendFileSync(${JSON.stringify(log)}, JSON.stringify(args) + '\\n');
const out = ${JSON.stringify(outputs)};
if (${options.fail === true}) { process.stdout.write('Changing locked clocks is not supported for GPU 00000000:00:06.0.\\nTreating as warning and moving on.\\nInsufficient Permissions\\n'); process.exit(4); }
if (args[0] && args[0].startsWith('--query-gpu=')) process.stdout.write(out.query);
else if (args.includes('SUPPORTED_CLOCKS')) process.stdout.write(out.supported);
else if (args.includes('-lgc')) process.stdout.write(out.lgc);
else if (args.includes('-rgc')) process.stdout.write(out.rgc);
else { process.stderr.write('unknown command'); process.exit(2); }
`);
  chmodSync(binary, 0o755);
  return { binary, calls: () => readFileSync(log, 'utf8').trim().split('\n').map((line) => JSON.parse(line) as string[]) };
}

describe('NvidiaSmiDriver with a stand-in nvidia-smi', () => {
  it('runs the exact argv for query, supported clocks, set and reset', async () => {
    const smi = standIn('ok');
    const driver = new NvidiaSmiDriver({ binary: smi.binary });
    expect((await driver.listGpus())[0]).toMatchObject({ index: 0, powerW: 78.27, maxSmClockMHz: 1980 });
    const clocks = await driver.supportedSmClocks(0);
    expect([clocks.length, clocks[0], clocks.at(-1)]).toEqual([110, 345, 1980]);
    await driver.setClockRange(0, 990, 1980);
    await driver.resetClocks(0);
    expect(smi.calls()).toEqual([
      ['--query-gpu=index,uuid,name,power.draw,clocks.sm,clocks.max.sm,enforced.power.limit', '--format=csv,noheader,nounits'],
      ['-i', '0', '-q', '-d', 'SUPPORTED_CLOCKS'],
      ['-i', '0', '-lgc', '990,1980'],
      ['-i', '0', '-rgc'],
    ]);
    expect(QUERY_ARGS).toEqual(smi.calls()[0]);
  });

  it('passes shell metacharacters through untouched: no shell runs', async () => {
    const smi = standIn('with space; $(touch pwned)');
    const driver = new NvidiaSmiDriver({ binary: smi.binary });
    await driver.resetClocks(3);
    expect(smi.calls()).toEqual([['-i', '3', '-rgc']]);
  });

  it('rejects bad clock ranges before running anything', async () => {
    const smi = standIn('guard');
    const driver = new NvidiaSmiDriver({ binary: smi.binary });
    await expect(driver.setClockRange(0, 1980, 990)).rejects.toThrow(RangeError);
    await expect(driver.setClockRange(0, 990.5, 1980)).rejects.toThrow(RangeError);
    await expect(driver.setClockRange(-1, 990, 1980)).rejects.toThrow(RangeError);
    await expect(driver.resetClocks(0.5)).rejects.toThrow(RangeError);
    expect(existsSync(join(dir, 'guard.log'))).toBe(false);
  });

  it('reports a failing command with its exit status and output', async () => {
    const smi = standIn('denied', { fail: true });
    const driver = new NvidiaSmiDriver({ binary: smi.binary });
    const error = await driver.setClockRange(0, 990, 1980).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(GpuDriverError);
    expect(error).toMatchObject({ kind: 'command', field: '-lgc' });
    expect((error as GpuDriverError).raw).toContain('Insufficient Permissions');
    expect((error as Error).message).toContain('exit 4');
  });

  it('reports a missing binary as a command failure', async () => {
    const driver = new NvidiaSmiDriver({ binary: join(dir, 'does-not-exist') });
    await expect(driver.listGpus()).rejects.toMatchObject({ kind: 'command', field: '--query-gpu' });
  });

  it('integrates power between reads into energy (trapezoid rule)', async () => {
    let now = 0;
    const clock: Clock = { now: () => now, setTimer: () => ({ cancel() {} }) };
    const powers = ['100.00', '300.00', '300.00'];
    let call = 0;
    const driver = new NvidiaSmiDriver({
      clock,
      exec: async () => ({ stdout: QUERY.replace('78.27', powers[call++]!), stderr: '' }),
      maxIntegrationGapMs: 5000,
    });
    expect(await driver.energy(0)).toBeUndefined();
    await driver.listGpus();
    expect(await driver.energy(0)).toEqual({ joules: 0, source: 'integrated' });
    now = 1000;
    await driver.listGpus();
    expect((await driver.energy(0))!.joules).toBeCloseTo(200);
    now = 11_000; // a gap longer than maxIntegrationGapMs is not bridged
    await driver.listGpus();
    expect((await driver.energy(0))!.joules).toBeCloseTo(200);
  });
});
