import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { mkdtemp, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, describe, expect, it } from 'vitest';
import { startFixedBackend } from '../../src/sim/fixed-backend.js';
import { chatBody, post } from '../helpers/servers.js';

// The compiled CLI, as `npx freesh` runs it (`npm test` builds first).
const CLI = fileURLToPath(new URL('../../dist/src/cli.js', import.meta.url));

function run(args: string[]) {
  const child = spawn(process.execPath, [CLI, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  child.stdout.on('data', (c: Buffer) => (out += c.toString()));
  child.stderr.on('data', (c: Buffer) => (out += c.toString()));
  return { child, output: () => out };
}

const backend = startFixedBackend();
afterAll(async () => (await backend).close());

describe('freesh serve', () => {
  it('refuses a bad config at start, naming the field and the bad value, with exit code 2', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'freesh-cli-'));
    const file = join(dir, 'bad.json');
    await writeFile(file, JSON.stringify({ sites: [{ id: 'a' }], backends: [{ id: 'b', site: 'a', baseURL: 'http://127.0.0.1:1/v1', models: ['m'], maxConcurrency: 0 }] }));
    const { child, output } = run(['serve', '--config', file]);
    const [code] = await once(child, 'exit');
    expect(code).toBe(2);
    expect(output()).toMatch(/`backends\[0\]\.maxConcurrency`.*got `0`/);
  });

  it('serves a config file, then drains and exits 0 on SIGTERM', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'freesh-cli-'));
    const file = join(dir, 'good.json');
    await writeFile(
      file,
      JSON.stringify({ server: { port: 0 }, sites: [{ id: 'a' }], backends: [{ id: 'b', site: 'a', baseURL: (await backend).baseURL, models: ['m'] }] }),
    );
    const { child, output } = run(['serve', '--config', file]);
    while (!/listening on (\S+)/.test(output())) await new Promise((r) => setTimeout(r, 20));
    const url = /listening on (\S+)/.exec(output())![1]!;
    const res = await post(`${url}/v1/chat/completions`, chatBody());
    expect(res.status).toBe(200);
    expect(res.headers.get('x-freesh-backend')).toBe('b');
    child.kill('SIGTERM');
    const [code] = await once(child, 'exit');
    expect(code).toBe(0);
    expect(output()).toMatch(/SIGTERM: draining/);
  });

  it('logs the pool plan as its status changes and every degraded plan; /metrics shows the plan', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'freesh-cli-'));
    const file = join(dir, 'plan.json');
    const baseURL = (await backend).baseURL;
    await writeFile(
      file,
      JSON.stringify({
        server: { port: 0 },
        sites: [{ id: 'a' }],
        backends: [
          { id: 'b1', site: 'a', baseURL, models: ['m'] },
          { id: 'b2', site: 'a', baseURL, models: ['m'] },
        ],
        // Targets no instance can meet: any demand is beyond what the SLOs allow.
        sloClasses: { standard: { ttftBaseMs: 1, tbtMs: 1 } },
        plan: { stepMs: 300 },
      }),
    );
    const { child, output } = run(['serve', '--config', file]);
    const waitFor = async (pattern: RegExp) => {
      for (let i = 0; i < 500 && !pattern.test(output()); i++) await new Promise((r) => setTimeout(r, 20));
      expect(output()).toMatch(pattern);
    };
    await waitFor(/listening on (\S+)/);
    const url = /listening on (\S+)/.exec(output())![1]!;
    // No demand yet: one instance suffices.
    await waitFor(/"msg":"plan optimal: 1 of 2 instances active/);
    expect((await post(`${url}/v1/chat/completions`, chatBody())).status).toBe(200);
    await waitFor(/"msg":"plan degraded: demand exceeds what the SLOs allow by [\d.]+ req\/s/);
    const metrics = await (await fetch(`${url}/metrics`)).text();
    expect(metrics).toMatch(/^freesh_plan_degraded 1$/m);
    expect(metrics).toMatch(/^freesh_plan_active\{backend="b1"\} [01]$/m);
    expect(metrics).toMatch(/^freesh_latency_factor\{backend="b1"\} [\d.]+$/m);
    child.kill('SIGTERM');
    await once(child, 'exit');
    // Optimal is logged once, not on every step.
    expect(output().match(/plan optimal/g)).toHaveLength(1);
  });

  it('`freesh demo` (npm start) prints the dashboard link, and the dashboard answers there', async () => {
    const { child, output } = run(['demo', '--port', '0', '--time-scale', '0.01']);
    try {
      for (let i = 0; i < 500 && !/dashboard: (\S+)/.test(output()); i++) await new Promise((r) => setTimeout(r, 20));
      const link = /dashboard: (\S+)/.exec(output())?.[1];
      expect(link).toMatch(/^http:\/\/127\.0\.0\.1:\d+\/dashboard$/);
      const page = await fetch(link!);
      expect(page.status).toBe(200);
      expect(await page.text()).toContain('Decision inspector');
      expect((await fetch(`${link}/api/state`)).status).toBe(200);
    } finally {
      child.kill('SIGTERM');
      await once(child, 'exit');
    }
  });

  it.each(['serve', 'demo', 'simulate', 'help'])('`freesh %s --help` prints that command\'s usage and exits 0', async (command) => {
    const { child, output } = run([command, '--help']);
    const [code] = await once(child, 'exit');
    expect(code).toBe(0);
    expect(output()).toMatch(new RegExp(`^Usage: freesh ${command}`));
  });

  it.each([
    ['an unknown flag', ['simulate', '--nope'], /^freesh: Unknown option '--nope' \(see `freesh simulate --help`\)\n$/],
    ['a missing config file', ['serve', '--config', '/nonexistent/freesh.json'], /^freesh: Cannot read config file \/nonexistent\/freesh\.json: no such file\n$/],
    ['a config file that is not JSON', ['serve', '--config', 'BAD_JSON'], /^freesh: Config file .* is not valid JSON: .*\n$/],
    ['a missing required flag', ['serve'], /^freesh: serve needs --config FILE \(see `freesh serve --help`\)\n$/],
  ])('%s is one line on stderr, no stack trace, exit 2', async (_name, args, expected) => {
    const dir = await mkdtemp(join(tmpdir(), 'freesh-cli-'));
    const bad = join(dir, 'bad.json');
    await writeFile(bad, '{"sites": [');
    const { child, output } = run(args.map((a) => (a === 'BAD_JSON' ? bad : a)));
    const [code] = await once(child, 'exit');
    expect(code).toBe(2);
    expect(output()).toMatch(expected);
    expect(output()).not.toMatch(/\n\s+at /);
  });

  it('explains an unknown command', async () => {
    const { child, output } = run(['fly']);
    const [code] = await once(child, 'exit');
    expect(code).toBe(2);
    expect(output()).toMatch(/unknown command `fly`/);
  });
});
