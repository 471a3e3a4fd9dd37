import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { chmodSync, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { delimiter, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, describe, expect, it } from 'vitest';
import { QUERY_ARGS } from '../../src/agent/nvidia-smi.js';
import type { AddressInfo } from 'node:net';
import { closeServer } from '../../src/sim/backend-server.js';
import { until } from '../helpers/servers.js';
import { zeusdStandIn } from '../helpers/zeusd-stand-in.js';

// The compiled CLI (`npm run build` first).
const CLI = fileURLToPath(new URL('../../dist/src/cli.js', import.meta.url));
const FIXTURES = new URL('../fixtures/nvidia-smi/', import.meta.url);
const fixture = (name: string) => readFileSync(new URL(name, FIXTURES), 'utf8');

/**
 * A directory holding a stand-in `nvidia-smi`: it appends its argv to a log and prints the output
 * recorded on a real H200 for the query and the clock table, and nvidia-smi's answers to -lgc/-rgc.
 * Put first on the CLI's PATH, it is the one the agent runs.
 */
const dir = mkdtempSync(join(tmpdir(), 'freesh-agent-cli-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

function standInPath(name: string): { path: string; calls: () => string[][] } {
  const log = join(dir, `${name}.log`);
  const outputs = {
    query: fixture('h200-query.csv'),
    supported: fixture('h200-supported-clocks.txt'),
    lgc: 'GPU clocks set to "(gpuClkMin 345, gpuClkMax 1980)" for GPU 00000000:00:06.0\nAll done.\n',
    rgc: 'All done.\n',
  };
  writeFileSync(join(dir, `${name}.js`), `const fs = require('node:fs');
const args = process.argv.slice(2);
fs.appendFileSync(${JSON.stringify(log)}, JSON.stringify(args) + '\\n');
const out = ${JSON.stringify(outputs)};
if (args[0] && args[0].startsWith('--query-gpu=')) process.stdout.write(out.query);
else if (args.includes('SUPPORTED_CLOCKS')) setTimeout(() => process.stdout.write(out.supported), Number(process.env.STANDIN_SLOW_MS ?? 0));
else if (args.includes('-lgc')) process.stdout.write(out.lgc);
else if (args.includes('-rgc')) process.stdout.write(out.rgc);
else { process.stderr.write('unknown command'); process.exit(2); }
`);
  const binDir = join(dir, `${name}-bin`);
  mkdirSync(binDir);
  const script = join(binDir, 'nvidia-smi');
  writeFileSync(script, `#!/bin/sh\nexec ${JSON.stringify(process.execPath)} ${JSON.stringify(join(dir, `${name}.js`))} "$@"\n`);
  chmodSync(script, 0o755);
  return { path: binDir, calls: () => (existsSync(log) ? readFileSync(log, 'utf8').trim().split('\n').filter(Boolean).map((l) => JSON.parse(l) as string[]) : []) };
}

function run(args: string[], pathDir?: string, extraEnv: Record<string, string> = {}) {
  const env = { ...process.env, ...extraEnv, PATH: pathDir ? `${pathDir}${delimiter}${process.env.PATH ?? ''}` : process.env.PATH };
  const child = spawn(process.execPath, [CLI, ...args], { stdio: ['ignore', 'pipe', 'pipe'], env });
  let out = '';
  child.stdout.on('data', (c: Buffer) => (out += c.toString()));
  child.stderr.on('data', (c: Buffer) => (out += c.toString()));
  return { child, output: () => out };
}

const root = process.geteuid?.() === 0;

describe('freesh agent', () => {
  it('prints its options with --help and refuses bad ones in one line with exit code 2', async () => {
    const help = run(['agent', '--help']);
    expect((await once(help.child, 'exit'))[0]).toBe(0);
    expect(help.output()).toContain('Usage: freesh agent --node ID --gpus 0,1 [--driver nvidia-smi|zeusd|fake] [--dry-run]');
    const bad = run(['agent', '--node', 'n1', '--gpus', '0,x']);
    expect((await once(bad.child, 'exit'))[0]).toBe(2);
    expect(bad.output().trim()).toBe('freesh agent: --gpus must be a comma-separated list of GPU indices, got `0,x` (see `freesh agent --help`)');
    const driver = run(['agent', '--node', 'n1', '--gpus', '0', '--driver', 'nvml']);
    expect((await once(driver.child, 'exit'))[0]).toBe(2);
    expect(driver.output()).toContain('--driver must be nvidia-smi, zeusd or fake');
    const profile = run(['agent', '--node', 'n1', '--gpus', '0', '--driver', 'fake', '--fake-profile', 'nope']);
    expect((await once(profile.child, 'exit'))[0]).toBe(2);
    expect(profile.output()).toContain('--fake-profile must be one of 2xA100, 4xA100, 8xA100, 2xH100, 4xH100, got `nope`');
  });

  it.runIf(root)('runs nvidia-smi with the exact argv: reset at start, locks, and the reset on SIGTERM', async () => {
    const smi = standInPath('smi');
    const agent = run(['agent', '--node', 'n1', '--gpus', '0', '--metrics-port', '0', '--period-ms', '100'], smi.path);
    await until(() => /metrics on (http:\/\/\S+)/.test(agent.output()), 10_000);
    await until(() => smi.calls().filter((c) => c[0] === QUERY_ARGS[0]).length >= 3, 10_000);
    const metricsUrl = /metrics on (http:\/\/\S+)/.exec(agent.output())![1]!;
    const metrics = await (await fetch(metricsUrl)).text();
    expect(metrics).toMatch(/DCGM_FI_DEV_POWER_USAGE\{gpu="0",UUID="GPU-00000000-0000-0000-0000-000000000000",modelName="NVIDIA H200",backend="n1",Hostname="n1"\} 78.27/);
    agent.child.kill('SIGTERM');
    const [code] = await once(agent.child, 'exit');
    expect(code).toBe(0);
    expect(agent.output()).toContain('freesh agent: SIGTERM: resetting clocks');
    const calls = smi.calls();
    expect(calls.slice(0, 4)).toEqual([
      [...QUERY_ARGS],
      ['-i', '0', '-q', '-d', 'SUPPORTED_CLOCKS'],
      ['-i', '0', '-rgc'],
      // No router publishes to its in-process store: the signal is stale, so the clock stays at the top.
      ['-i', '0', '-lgc', '345,1980'],
    ]);
    expect(calls.slice(4, -1).every((c) => c[0] === QUERY_ARGS[0])).toBe(true);
    expect(calls.at(-1)).toEqual(['-i', '0', '-rgc']);
  }, 30_000);

  it.runIf(root)('a SIGTERM during start still ends in a reset, and no lock is ever set', async () => {
    const smi = standInPath('slow');
    // The clock table takes 1.5 s to come: the signal arrives while the agent is starting.
    const agent = run(['agent', '--node', 'n1', '--gpus', '0', '--metrics-port', '0', '--period-ms', '100'], smi.path, { STANDIN_SLOW_MS: '1500' });
    await until(() => smi.calls().some((c) => c.includes('SUPPORTED_CLOCKS')), 10_000);
    agent.child.kill('SIGTERM');
    expect((await once(agent.child, 'exit'))[0]).toBe(0);
    expect(agent.output()).toContain('freesh agent: SIGTERM: resetting clocks');
    expect(agent.output()).not.toContain('metrics on http');
    const calls = smi.calls();
    expect(calls.filter((c) => c.includes('-lgc'))).toEqual([]);
    expect(calls.at(-1)).toEqual(['-i', '0', '-rgc']);
  }, 30_000);

  it.runIf(root)('in dry run queries but never locks or resets', async () => {
    const smi = standInPath('dry');
    const agent = run(['agent', '--node', 'n1', '--gpus', '0', '--metrics-port', '0', '--period-ms', '100', '--dry-run'], smi.path);
    await until(() => agent.output().includes('dry run: would lock GPU 0 to 345,1980 MHz'), 10_000);
    agent.child.kill('SIGINT');
    expect((await once(agent.child, 'exit'))[0]).toBe(0);
    expect(smi.calls().filter((c) => c.includes('-lgc') || c.includes('-rgc'))).toEqual([]);
    expect(agent.output()).toContain('dry run: would reset GPU 0 clocks (stop)');
  }, 30_000);

  it.runIf(!root)('refuses to set clocks with nvidia-smi when not root, in one line', async () => {
    const smi = standInPath('noroot');
    const agent = run(['agent', '--node', 'n1', '--gpus', '0', '--metrics-port', '0'], smi.path);
    expect((await once(agent.child, 'exit'))[0]).toBe(1);
    expect(agent.output()).toContain('freesh agent: setting GPU clocks with nvidia-smi needs root: run as root, use --driver zeusd, or --dry-run');
    expect(smi.calls()).toEqual([]);
  }, 30_000);

  it('drives zeusd over HTTP without root: reset at start, a lock, and the reset on SIGTERM', async () => {
    const zeusd = zeusdStandIn(2);
    await new Promise<void>((resolve) => zeusd.server.listen(0, '127.0.0.1', resolve));
    try {
      zeusd.powerMw.set(1, 250_000);
      const url = `http://127.0.0.1:${(zeusd.server.address() as AddressInfo).port}`;
      const agent = run(['agent', '--node', 'n1', '--gpus', '1', '--driver', 'zeusd', '--zeusd', url, '--metrics-port', '0', '--period-ms', '100']);
      // The first lock comes from the first period, after start (and its reset) is done.
      await until(() => zeusd.calls.some((c) => c.startsWith('POST /gpu/set_gpu_locked_clocks')), 10_000);
      agent.child.kill('SIGTERM');
      expect((await once(agent.child, 'exit'))[0]).toBe(0);
      const writes = zeusd.calls.filter((c) => c.startsWith('POST'));
      expect(writes[0]).toBe('POST /gpu/reset_gpu_locked_clocks?gpu_ids=1&block=true');
      // No router publishes to its in-process store: the signal is stale, so the clock stays at the top.
      expect(writes[1]).toBe('POST /gpu/set_gpu_locked_clocks?gpu_ids=1&min_clock_mhz=345&max_clock_mhz=1980&block=true');
      expect(writes.at(-1)).toBe('POST /gpu/reset_gpu_locked_clocks?gpu_ids=1&block=true');
      expect(zeusd.calls).toContain('GET /gpu/get_power?gpu_ids=1');
      expect(zeusd.locks.size).toBe(0);
    } finally {
      await closeServer(zeusd.server);
    }
  }, 30_000);
});
