import { mkdir, readFile, writeFile } from 'node:fs/promises';
import { basename, join } from 'node:path';
import type { FileConfig } from '../config/schema.js';
import { FREESH_FLEET, type FleetSpec } from './fleet.js';
import { type CarbonSource, DEFAULT_PREDICTION_SIGMA, defaultRunNames, loadCarbon, runEvaluation, runSpec } from './harness.js';
import { evaluationJson, headline, htmlReport, markdownTable } from './report.js';
import { parseAzureTrace } from './trace.js';

export interface SimulateCommandOptions {
  readonly tracePath: string;
  /** Folder with `carbon/` series (the shared data folder); without it, each site's configured constant intensity. */
  readonly dataDir?: string | undefined;
  readonly fleet?: FleetSpec;
  readonly policies?: readonly string[];
  readonly utilisation?: number;
  readonly carbon?: CarbonSource;
  readonly carbonStart?: string;
  readonly seed?: number;
  readonly predictionSigma?: number;
  readonly parkedPower?: 'idle' | 'off';
  /** Where the JSON and HTML reports go. */
  readonly outDir: string;
  readonly log?: (line: string) => void;
}

/** Runs the evaluation, prints the table, writes the JSON and HTML reports, prints the JSON line. */
export async function runSimulateCommand(options: SimulateCommandOptions): Promise<void> {
  const log = options.log ?? ((line: string) => console.log(line));
  const fleet = options.fleet ?? FREESH_FLEET;
  const trace = parseAzureTrace(await readFile(options.tracePath, 'utf8'), basename(options.tracePath, '.csv'));
  const carbon = options.dataDir
    ? await loadCarbon(fleet, options.dataDir, options.carbon ?? 'electricitymaps', { start: options.carbonStart })
    : new Map<string, never>();
  const names = options.policies ?? defaultRunNames();
  const progress = progressBar(names.length);
  const evaluation = await runEvaluation({
    trace,
    fleet,
    carbon,
    runs: names.map((name) => runSpec(name, options.predictionSigma ?? DEFAULT_PREDICTION_SIGMA)),
    utilisation: options.utilisation ?? 0.6,
    seed: options.seed ?? 1,
    parkedPower: options.parkedPower,
    onProgress: progress,
  });
  progress.done();
  const notes = [
    (options.dataDir
      ? `Carbon: ${options.carbon ?? 'electricitymaps'} series${options.carbon === 'freesh' ? ' (units unstated by the source; negatives clamped to 0)' : `, from ${options.carbonStart ?? '2023-11-16T18:00Z'}`}. `
      : 'Carbon: each site\'s configured constant intensity. ') +
      `Predictions: log-normal error σ=${options.predictionSigma ?? DEFAULT_PREDICTION_SIGMA} around the true length unless a run uses the oracle.`,
    'GPU frequency model: an assumption (src/cost/frequency.ts); no public source calibrates it.',
    `Instances a plan parks ${evaluation.parkedPower === 'off' ? 'are powered off (0 W)' : 'stay on at idle power'}.`,
  ];
  log(`\n${trace.name}: ${evaluation.requests} requests, parked instances ${evaluation.parkedPower}, ×${evaluation.rateMultiplier.toFixed(3)} rate = ${evaluation.offeredRps.toFixed(2)} req/s; ` +
    `fleet capacity ${evaluation.capacityRps.toFixed(2)} req/s; utilisation ${evaluation.utilisation}\n`);
  log(markdownTable(evaluation));
  log('');
  for (const { spec, metrics } of evaluation.runs) log(`${spec.name}: simulated ${metrics.simulatedMinutes.toFixed(1)} min in ${metrics.wallSeconds.toFixed(1)} s`);
  await mkdir(options.outDir, { recursive: true });
  const stem = join(options.outDir, `trace-${trace.name}-u${evaluation.utilisation}-parked-${evaluation.parkedPower}`);
  await writeFile(`${stem}.json`, JSON.stringify(evaluationJson(evaluation)));
  await writeFile(`${stem}.html`, await htmlReport(evaluation, notes));
  log(`reports: ${stem}.json, ${stem}.html`);
  log(JSON.stringify(headline(evaluation)));
}

/** The simulator's view of a proxy config: sites with regions and intensities, backends with modes. */
export function fleetFromConfig(config: FileConfig): FleetSpec {
  const model = config.backends[0]!.models[0]!;
  return {
    model,
    sites: config.sites.map((s) => ({ id: s.id, region: s.region, gramsPerKWh: s.carbon.gramsPerKWh, pue: s.pue, ...(s.gpus ? { gpus: s.gpus } : {}) })),
    backends: config.backends.filter((b) => b.models.includes(model)).map((b) => ({ id: b.id, site: b.site, mode: b.mode, maxConcurrency: b.maxConcurrency })),
  };
}

/** A progress bar on a terminal; a line per run otherwise (CI logs). */
function progressBar(runs: number): ((run: string, fraction: number) => void) & { done(): void } {
  const tty = process.stderr.isTTY === true;
  let index = 0;
  let current = '';
  const update = (run: string, fraction: number) => {
    if (run !== current) {
      if (current && !tty) process.stderr.write(` done\n`);
      current = run;
      index++;
      if (!tty) process.stderr.write(`[${index}/${runs}] ${run}…`);
    }
    if (tty) {
      const width = 30;
      const filled = Math.round(fraction * width);
      process.stderr.write(`\r[${index}/${runs}] ${run.padEnd(18)} [${'#'.repeat(filled)}${'.'.repeat(width - filled)}] ${(fraction * 100).toFixed(0).padStart(3)}%`);
    }
  };
  return Object.assign(update, { done: () => process.stderr.write(tty ? '\n' : ' done\n') });
}
