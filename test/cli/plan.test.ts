import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { mkdtemp, readFile, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';

// The compiled CLI (`npm run build` first).
const CLI = fileURLToPath(new URL('../../dist/src/cli.js', import.meta.url));
const EXAMPLE = fileURLToPath(new URL('../../examples/plan/', import.meta.url));

async function run(args: string[]): Promise<{ code: number; output: string }> {
  const child = spawn(process.execPath, [CLI, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
  let output = '';
  child.stdout.on('data', (c: Buffer) => (output += c.toString()));
  child.stderr.on('data', (c: Buffer) => (output += c.toString()));
  const [code] = (await once(child, 'exit')) as [number];
  return { code, output };
}

interface Fleet {
  sites: { id: string; gpus: Record<string, number> }[];
  modes: { id: string; gpu: string; gpus: number }[];
  tables: Record<string, Record<string, { maxQps: number; powerW: number; ttftMs: number; tbtMs: number; e2eMs: number }>>;
  slo: { ttftMs: number; tbtMs: number; byType: Record<string, { ttftMs?: number; e2eMs?: number }> };
}
interface PlanFile {
  windows: { index: number; status: string; gramsCO2: number; shortfallQps: number; allocation: { site: string; type: string; mode: string; instances: number }[] }[];
}

const csv = (text: string) => text.trim().split('\n').slice(1).map((l) => l.split(','));
const args = (out: string, over: Record<string, string> = {}) =>
  ['plan', ...Object.entries({ fleet: join(EXAMPLE, 'fleet.json'), demand: join(EXAMPLE, 'demand.csv'), carbon: join(EXAMPLE, 'carbon.csv'), out, ...over }).flatMap(([k, v]) => [`--${k}`, v])];

describe('freesh plan', () => {
  it('plans the example day-ahead: inventory kept, every step covered, SLOs kept, carbon as the formula says', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'freesh-plan-'));
    const out = join(dir, 'plan.json');
    const { code, output } = await run(args(out));
    expect(output).toMatch(/4 windows \(0 infeasible\)/);
    expect(code).toBe(0);
    const plan = JSON.parse(await readFile(out, 'utf8')) as PlanFile;
    const fleet = JSON.parse(await readFile(join(EXAMPLE, 'fleet.json'), 'utf8')) as Fleet;
    const demand = csv(await readFile(join(EXAMPLE, 'demand.csv'), 'utf8'));
    const carbon = csv(await readFile(join(EXAMPLE, 'carbon.csv'), 'utf8'));
    expect(plan.windows.map((w) => w.index)).toEqual([0, 1, 2, 3]);
    for (const w of plan.windows) {
      expect(Object.keys(w).sort()).toEqual(['allocation', 'gramsCO2', 'index', 'shortfallQps', 'status']);
      expect(w.status).toBe('optimal');
      expect(w.shortfallQps).toBe(0);
      for (const site of fleet.sites) {
        for (const [gpu, count] of Object.entries(site.gpus)) {
          const used = w.allocation.filter((a) => a.site === site.id).reduce((s, a) => s + (fleet.modes.find((m) => m.id === a.mode)!.gpu === gpu ? a.instances * fleet.modes.find((m) => m.id === a.mode)!.gpus : 0), 0);
          expect(used).toBeLessThanOrEqual(count);
        }
      }
      for (const a of w.allocation) {
        const e = fleet.tables[a.mode]![a.type]!;
        const targets = { ...fleet.slo, ...fleet.slo.byType[a.type] };
        expect(e.maxQps).toBeGreaterThan(0);
        expect(e.ttftMs).toBeLessThanOrEqual(targets.ttftMs);
        expect(e.tbtMs).toBeLessThanOrEqual(targets.tbtMs);
        expect(e.e2eMs).toBeLessThanOrEqual(targets.e2eMs!);
      }
      let grams = 0;
      for (let step = w.index * 6; step < w.index * 6 + 6; step++) {
        for (const [s, type, qps] of demand) {
          if (Number(s) !== step) continue;
          const capacity = w.allocation.filter((a) => a.type === type).reduce((sum, a) => sum + a.instances * fleet.tables[a.mode]![a.type]!.maxQps, 0);
          expect(capacity).toBeGreaterThanOrEqual(1.1 * Number(qps) - 1e-9);
        }
        for (const a of w.allocation) {
          const g = Number(carbon.find(([s, site]) => Number(s) === step && site === a.site)![2]);
          grams += (g * a.instances * fleet.tables[a.mode]![a.type]!.powerW) / 1000 / 12;
        }
      }
      expect(w.gramsCO2).toBeCloseTo(grams, 6);
    }
  });

  it('plans an infeasible window as the best degraded allocation, with its shortfall, under other step and window lengths', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'freesh-plan-'));
    const demand = join(dir, 'demand.csv');
    // 200 req/s of SS at step 1 is beyond the whole fleet; step 0 is easy. One 2-step window of 10 minutes.
    await writeFile(demand, 'step,type,qps\n0,SS,1\n1,SS,200\n');
    const out = join(dir, 'plan.json');
    const { code } = await run([...args(out, { demand }), '--step-minutes', '10', '--window-steps', '2', '--margin', '1']);
    expect(code).toBe(0);
    const plan = JSON.parse(await readFile(out, 'utf8')) as PlanFile;
    expect(plan.windows).toHaveLength(1);
    const [w] = plan.windows;
    expect(w!.status).toBe('infeasible');
    const fleet = JSON.parse(await readFile(join(EXAMPLE, 'fleet.json'), 'utf8')) as Fleet;
    const capacity = w!.allocation.reduce((s, a) => s + a.instances * fleet.tables[a.mode]![a.type]!.maxQps, 0);
    expect(capacity).toBeGreaterThan(50);
    expect(w!.shortfallQps).toBeCloseTo(200 - capacity, 6);
    expect(w!.gramsCO2).not.toBe(0);
  });

  it.each([
    ['demand', 'step,type,qps\n0,SS,1\n1,XX,2\n', /demand\.csv line 3: type must be one of the fleet's types \(SS, SL, LS, LL\), got `XX`/],
    ['demand', 'step,type,qps\n0,SS,-1\n', /demand\.csv line 2: qps must be a non-negative number, got `-1`/],
    ['demand', 'step,qps\n0,1\n', /demand\.csv line 1: expected the header `step,type,qps`/],
    ['carbon', 'step,site,gramsPerKWh\n0,loc1,abc\n', /carbon\.csv line 2: gramsPerKWh must be a number, got `abc`/],
    ['carbon', 'step,site,gramsPerKWh\n0,loc1,1\n0,loc2,1\n0,loc3,1\n', /carbon\.csv: no value for step 1 at site loc1/],
  ])('refuses a bad %s file with one line naming the file and the line, exit 2', async (which, text, message) => {
    const dir = await mkdtemp(join(tmpdir(), 'freesh-plan-'));
    const file = join(dir, `${which}.csv`);
    await writeFile(file, text);
    const { code, output } = await run(args(join(dir, 'plan.json'), { [which]: file }));
    expect(code).toBe(2);
    expect(output).toMatch(message);
    expect(output.trim().split('\n')).toHaveLength(1);
  });

  it('names a missing option and the bad fleet field', async () => {
    const missing = await run(['plan', '--fleet', join(EXAMPLE, 'fleet.json')]);
    expect(missing.code).toBe(2);
    expect(missing.output).toMatch(/plan needs --demand FILE/);
    const dir = await mkdtemp(join(tmpdir(), 'freesh-plan-'));
    const fleet = join(dir, 'fleet.json');
    const good = JSON.parse(await readFile(join(EXAMPLE, 'fleet.json'), 'utf8')) as Fleet;
    await writeFile(fleet, JSON.stringify({ ...good, modes: [{ ...good.modes[0], gpus: 0 }, ...good.modes.slice(1)] }));
    const bad = await run(args(join(dir, 'plan.json'), { fleet }));
    expect(bad.code).toBe(2);
    expect(bad.output).toMatch(/`modes\[0\]\.gpus`.*got `0`/);
  });
});
