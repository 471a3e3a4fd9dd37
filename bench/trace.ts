/**
 * The savings matrix: every baseline, the shipped `freesh` policy and its oracle on each workload ×
 * grid × load, replayed through the real router on simulated hardware that is not the router's
 * model, with a fluid lower bound per cell. Prints a table per workload, freesh against the best
 * baseline per cell, and ends with one JSON line `{"cells":[...]}`.
 *
 *   npm run bench:trace [-- --workloads conv,code,long,diurnal --grids clean-fastest,clean-slowest,no-clean
 *                          --loads 0.3,0.6,0.9 --runs freesh,least-loaded --minutes 20 --truth model --no-bounds
 *                          --plan '{"peakQuantile":0.9}' --pools]
 *
 * `--pools` declares the FREESH sites' GPU inventory: the planner also plans GPU pool partitions, and
 * a table reports, per run that plans, its per-step forecast error and partitions planned.
 *
 * `freesh simulate` runs one trace at one load with the full table of figures.
 *
 *   npm run bench:trace -- --miad [--workloads conv --grids clean-fastest --loads 0.3,0.6,0.9 --minutes 20]
 *
 * runs the GPU agent's MIAD clock controller against fixed clocks instead (src/sim/clock-control.ts),
 * by default on 20 minutes of the conversation trace on one grid at three loads (about a minute).
 */
import { dirname, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { BUILTIN_PROFILES } from '../src/cost/profiles.js';
import { CLOCK_RUNS, clockRun } from '../src/sim/clock-control.js';
import type { RunMetrics } from '../src/sim/evaluate.js';
import { GRIDS, LOADS, type MatrixCell, MATRIX_RUNS, runMatrix, verdicts, WORKLOADS, type WorkloadName } from '../src/sim/matrix.js';

const root = resolve(dirname(fileURLToPath(import.meta.url)), '../..');
const { values } = parseArgs({
  options: {
    workloads: { type: 'string' },
    grids: { type: 'string' },
    loads: { type: 'string', default: LOADS.join(',') },
    runs: { type: 'string' },
    miad: { type: 'boolean', default: false },
    minutes: { type: 'string' },
    seed: { type: 'string', default: '1' },
    truth: { type: 'string', default: 'perturbed' },
    'no-bounds': { type: 'boolean', default: false },
    plan: { type: 'string' },
    pools: { type: 'boolean', default: false },
    data: { type: 'string', default: resolve(root, '../shared/data') },
  },
});
const list = (s: string) => s.split(',').map((x) => x.trim()).filter(Boolean);
const miad = values.miad;
const workloads = list(values.workloads ?? (miad ? 'conv' : WORKLOADS.join(','))) as WorkloadName[];
for (const w of workloads) if (!WORKLOADS.includes(w)) throw new Error(`--workloads: unknown \`${w}\` (${WORKLOADS.join(', ')})`);
const loads = list(values.loads).map(Number);
for (const l of loads) if (!(l > 0 && l < 2)) throw new Error(`--loads must be in (0, 2), got ${values.loads}`);
if (values.truth !== 'perturbed' && values.truth !== 'model') throw new Error(`--truth must be perturbed or model, got ${values.truth}`);

const started = performance.now();
/** Per run that plans: its forecast error and pool partitions (with --pools). */
const planning: { cell: MatrixCell; forecastError: RunMetrics['forecastError']; poolPlans: RunMetrics['poolPlans'] }[] = [];
const { cells, hardware } = await runMatrix({
  dataDir: values.data,
  workloads,
  grids: list(values.grids ?? (miad ? 'clean-fastest' : Object.keys(GRIDS).join(','))),
  loads,
  runs: list(values.runs ?? (miad ? CLOCK_RUNS : MATRIX_RUNS).join(',')),
  runSpec: miad ? clockRun : undefined,
  seed: Number(values.seed),
  minutes: values.minutes ? Number(values.minutes) : miad ? 20 : undefined,
  truth: values.truth,
  bounds: !values['no-bounds'] && !miad,
  plan: values.plan ? JSON.parse(values.plan) : undefined,
  pools: values.pools,
  onCell: (c, m) => {
    if (m?.forecastError) planning.push({ cell: c, forecastError: m.forecastError, poolPlans: m.poolPlans });
    process.stderr.write(`${c.trace} ${c.grid} ${c.load} ${c.policy}: ${c.energyKWh} kWh, ${c.carbonKg} kg, SLO ${c.slo ?? '-'} (${((performance.now() - started) / 1000).toFixed(0)} s)\n`);
  },
});

const pct = (v: number | null) => (v === null ? '—' : `${(v * 100).toFixed(1)}%`);
console.log('\nSimulated hardware (the router costs with the built-in profiles and does not see this):');
console.log('| backend | mode | step × | prefill × | idle W | decode W | prefill W | boot s |\n|---|---|---:|---:|---:|---:|---:|---:|');
for (const [id, h] of hardware) {
  const mode = h.profile.id;
  const base = BUILTIN_PROFILES[mode]!;
  console.log(`| ${id} | ${mode} | ${(h.profile.decodeStepMs[0]![1] / base.decodeStepMs[0]![1]).toFixed(3)} | ${(h.profile.prefillMs[0]![1] / base.prefillMs[0]![1]).toFixed(3)} | ${h.profile.idleW.toFixed(0)} | ${h.profile.decodeW.toFixed(0)} | ${h.profile.prefillW.toFixed(0)} | ${(h.bootMs / 1000).toFixed(0)} |`);
}
for (const trace of workloads) {
  console.log(`\n### ${trace}\n\n| grid | load | policy | energy kWh | carbon kg | SLO | interactive | served / refused |\n|---|---:|---|---:|---:|---:|---:|---:|`);
  for (const c of cells.filter((x: MatrixCell) => x.trace === trace)) {
    console.log(`| ${c.grid} | ${c.load} | ${c.policy} | ${c.energyKWh.toFixed(2)} | ${c.carbonKg.toFixed(3)} | ${pct(c.slo)} | ${pct(c.interactiveSlo)} | ${c.served === null ? '—' : `${c.served} / ${c.refused}`} |`);
  }
}
const v = verdicts(cells);
if (v.length > 0) {
  const signed = (x: number) => `${x > 0 ? '+' : ''}${(x * 100).toFixed(1)}`;
  console.log('\nfreesh against the best baseline of each cell (carbon, energy: % against the lowest; SLO: points against the highest; share: of the fluid bound\'s saving):\n');
  console.log('| workload | grid | load | carbon | (cleanest baseline, its SLO − ours) | carbon, SLO-matched | energy | energy, SLO-matched | SLO pt | interactive pt | carbon share | energy share |\n|---|---|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|');
  const opt = (x: number | null) => (x === null ? 'none matches' : `${signed(x)}%`);
  for (const x of v) {
    console.log(`| ${x.trace} | ${x.grid} | ${x.load} | ${signed(x.carbonVsBest)}% | ${x.carbonBest}, ${signed(x.carbonBestSloVsOurs)} pt | ${opt(x.carbonVsSloMatched)} | ${signed(x.energyVsBest)}% | ${opt(x.energyVsSloMatched)} | ${signed(x.sloVsBest)} | ${signed(x.interactiveVsBest)} | ${pct(x.carbonShareOfBound)} | ${pct(x.energyShareOfBound)} |`);
  }
  const mean = (f: (x: (typeof v)[number]) => number) => v.reduce((s, x) => s + f(x), 0) / v.length;
  const matched = v.filter((x) => x.carbonVsSloMatched !== null);
  const meanMatched = (f: (x: (typeof v)[number]) => number) => matched.reduce((s, x) => s + f(x), 0) / Math.max(1, matched.length);
  console.log(`\nMean over ${v.length} cells: carbon ${signed(mean((x) => x.carbonVsBest))}%, energy ${signed(mean((x) => x.energyVsBest))}%, SLO ${signed(mean((x) => x.sloVsBest))} pt; ` +
    `over the ${matched.length} cells where a baseline matches freesh's SLO: carbon ${signed(meanMatched((x) => x.carbonVsSloMatched!))}%, energy ${signed(meanMatched((x) => x.energyVsSloMatched!))}%; cells with carbon ≤ the cleanest baseline's or its SLO below ours: ${v.filter((x) => x.carbonVsBest <= 0 || x.carbonBestSloVsOurs < 0).length} of ${v.length}; SLO ≥ every baseline's: ${v.filter((x) => x.sloVsBest >= 0).length}; interactive ≥ every baseline's: ${v.filter((x) => x.interactiveVsBest >= 0).length}.`);
}
if (values.pools) {
  console.log('\nPer-step demand forecast and GPU pool partitions (each partition is published with the plan, not applied: routing, energy and carbon are those of the deployed backends):\n');
  console.log('| workload | grid | load | policy | steps scored | forecast error, Σ|f − o| / Σ o | mean abs error req/s | partitions planned | infeasible |\n|---|---|---:|---|---:|---:|---:|---:|---:|');
  for (const { cell: c, forecastError: f, poolPlans: p } of planning) {
    console.log(`| ${c.trace} | ${c.grid} | ${c.load} | ${c.policy} | ${f!.steps} | ${pct(f!.relativeError)} | ${f!.meanAbsErrorRps.toFixed(3)} | ${p?.planned ?? 0} | ${p?.infeasible ?? 0} |`);
  }
}
console.log(`(${((performance.now() - started) / 1000).toFixed(0)} s)`);
console.log(JSON.stringify(values.pools ? { cells, planning: planning.map(({ cell, forecastError, poolPlans }) => ({ trace: cell.trace, grid: cell.grid, load: cell.load, policy: cell.policy, forecastError, poolPlans })) } : { cells }));
