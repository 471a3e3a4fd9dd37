/**
 * The length predictor: accuracy of the shipped model on the held-out questions against two
 * baselines (the model card's figures), its cost per request at 1 and 64 concurrent requests, load
 * time and memory, how online learning improves a model the training never saw, and each bias
 * correction (none, mean, median) per serving model on its own held-out answers. Last line: JSON.
 *
 *   npm run bench:predictor [-- --data ../shared/data/prompts]
 */
import { dirname, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { loadLengthExamples, splitByQuestion } from '../src/predict/dataset.js';
import { lengthMetrics } from '../src/predict/evaluation.js';
import { FEATURE_LENGTH, promptFeatures, sparseFeatures } from '../src/predict/features.js';
import { loadLengthModel } from '../src/predict/length-model.js';
import { defaultModelDir, ModelPredictor, type ModelPredictorOptions } from '../src/predict/model-predictor.js';
import { DEFAULT_SEED, evaluateSaved, TEST_SHARE } from '../src/predict/train.js';
import { parseRequest } from '../src/request/parse.js';
import type { RoutingRequest } from '../src/types.js';

const root = resolve(dirname(fileURLToPath(import.meta.url)), '../..');
const { values } = parseArgs({ options: { data: { type: 'string', default: resolve(root, '../shared/data/prompts') } } });

// Load time and memory first, while nothing of the tokenizer is loaded yet.
const memoryBefore = process.memoryUsage().rss;
const loadStarted = performance.now();
const predictor = new ModelPredictor({ cacheSize: 1, budgetMs: 10_000 });
if (!(await predictor.ready())) throw new Error('the shipped model did not load');
const loadMs = performance.now() - loadStarted;
const loadMiB = (process.memoryUsage().rss - memoryBefore) / 2 ** 20;

const examples = await loadLengthExamples(values.data);
const report = await evaluateSaved(defaultModelDir(), examples, DEFAULT_SEED);
const row = (name: string, m: { kendallTau: number; maeLog1p: number; shortLongAccuracy: number }) =>
  `| ${name} | ${m.kendallTau.toFixed(3)} | ${m.maeLog1p.toFixed(3)} | ${m.shortLongAccuracy.toFixed(3)} |`;
console.log(`Held-out questions: ${report.testRows} answers (${report.questions} questions in all, split by question, seed ${DEFAULT_SEED})`);
console.log('| predictor | Kendall τ (per model, averaged) | MAE log(1+tokens) | short/long balanced accuracy |');
console.log('|---|---:|---:|---:|');
console.log(row('model', report.model));
console.log(row('per-model mean', report.baselines.perModelMean));
console.log(row('prompt-length regression', report.baselines.promptLength));

const toRequest = (prompt: string, model: string, i: number): RoutingRequest =>
  parseRequest('chat.completions', Buffer.from(JSON.stringify({ model, messages: [{ role: 'user', content: prompt }] })), {
    id: `r${i}`,
    arrivalMs: 0,
    defaultTenant: 't',
    defaultSloClass: 'standard',
    header: () => undefined,
  });

// Cost: distinct prompts (no cache hits), one at a time and 64 at once. CPU time beside wall time:
// on a shared machine other processes stretch the wall time, not the CPU time this one spends.
const prompts = [...new Set(examples.map((e) => e.prompt))];
const requests = prompts.map((p, i) => toRequest(`${p} (${i})`, 'gpt-4-0314', i));
for (const r of requests.slice(0, 64)) await predictor.predict(r); // warm up
const cpuUs = (since: NodeJS.CpuUsage) => {
  const used = process.cpuUsage(since);
  return used.user + used.system;
};
let started = performance.now();
let cpu = process.cpuUsage();
const sequential = requests.slice(0, 300);
for (const r of sequential) await predictor.predict(r);
const usSequential = ((performance.now() - started) * 1000) / sequential.length;
const cpuUsSequential = cpuUs(cpu) / sequential.length;
const rounds = 20;
started = performance.now();
cpu = process.cpuUsage();
for (let round = 0; round < rounds; round++) {
  const batch = Array.from({ length: 64 }, (_, i) => toRequest(`${prompts[(round * 64 + i) % prompts.length]} [${round}]`, 'gpt-4-0314', i));
  await Promise.all(batch.map((r) => predictor.predict(r)));
}
const usBatched = ((performance.now() - started) * 1000) / (rounds * 64);
const cpuUsBatched = cpuUs(cpu) / (rounds * 64);
console.log(
  `\nCost: ${usSequential.toFixed(1)} µs a request one at a time, ${usBatched.toFixed(1)} µs a request at 64 concurrent (CPU ${cpuUsSequential.toFixed(1)} and ${cpuUsBatched.toFixed(1)} µs; features, tokenizer and network; target ≤ 50)`,
);
console.log(`Load: ${loadMs.toFixed(0)} ms (tokenizer, model); memory +${loadMiB.toFixed(1)} MiB RSS`);
await predictor.close();

// Where the compute goes: the features (tokenizer and hashing) and the network, each alone, in CPU time.
const model = await loadLengthModel(defaultModelDir());
const dense = new Float32Array(FEATURE_LENGTH);
cpu = process.cpuUsage();
const sparse = prompts.map((p) => {
  dense.fill(0);
  promptFeatures(`${p} {split}`, undefined, 1, dense);
  return sparseFeatures(dense);
});
const cpuUsFeatures = cpuUs(cpu) / prompts.length;
const passes = 10;
let sink = 0;
cpu = process.cpuUsage();
for (let pass = 0; pass < passes; pass++) for (const f of sparse) sink += model.questionEffect(f);
const cpuUsNetwork = cpuUs(cpu) / (passes * prompts.length);
if (!Number.isFinite(sink)) throw new Error('the network gave a non-finite effect');
const setBuckets = sparse.reduce((n, f) => n + f.hashed.length, 0) / sparse.length;
console.log(`Split (CPU, each alone over the ${prompts.length} prompts): features ${cpuUsFeatures.toFixed(1)} µs, network ${cpuUsNetwork.toFixed(1)} µs a prompt (${setBuckets.toFixed(0)} of 1,024 hashed buckets set on average)`);

// Online calibration: serve a model the training never saw (each answer re-labelled as an unknown
// model's), feed its true lengths back, and measure the error on the answers not yet seen.
const { test } = splitByQuestion(examples, TEST_SHARE, DEFAULT_SEED);
// The served-as-unknown model: the one whose verbosity differs most from the default guess.
const spec = (await import('node:fs/promises')).readFile(resolve(defaultModelDir(), 'spec.json'), 'utf8').then((t) => JSON.parse(t) as { verbosity: Record<string, number>; defaultVerbosity: number });
const { verbosity, defaultVerbosity } = await spec;
const unseenModel = Object.keys(verbosity).sort((a, b) => Math.abs(verbosity[b]! - defaultVerbosity) - Math.abs(verbosity[a]! - defaultVerbosity))[0]!;
const unseen = test.filter((e) => e.model === unseenModel);
let swaps = 0;
const learner = new ModelPredictor({ fineTuneEvery: 10, fineTuneIntervalMs: 0, fineTuneEpochs: 10, onFineTune: (r) => void (swaps += r.swapped ? 1 : 0) });
await learner.ready();
const steps: { observed: number; maeLog1p: number; kendallTau: number }[] = [];
const score = async (seen: number, from: number) => {
  const rest = unseen.slice(from);
  const predicted = await Promise.all(rest.map((e, i) => learner.predict(toRequest(e.prompt, 'unseen-model', i)).then((p) => p.outputTokensP50)));
  const m = lengthMetrics(rest.map((e) => ({ ...e, model: 'unseen' })), predicted);
  steps.push({ observed: seen, maeLog1p: Number(m.maeLog1p.toFixed(3)), kendallTau: Number(m.kendallTau.toFixed(3)) });
};
const half = Math.floor(unseen.length / 2);
for (let seen = 0; seen <= half; seen += 10) {
  if (seen > 0) {
    for (const [i, e] of unseen.slice(seen - 10, seen).entries()) {
      const r = toRequest(e.prompt, 'unseen-model', i);
      await learner.predict(r);
      learner.observe(r, e.outputTokens);
    }
    await learner.settled(); // the background fine-tuning round, if one started
  }
  await score(seen, half); // always the same second half, never observed
}
await learner.close();
console.log(`\nLearning online: ${unseenModel}'s held-out answers served under an unknown model name, the default bias calibration and a fine-tuning round every 10 observations (${swaps} swapped in); error on the last ${unseen.length - half}, never observed:`);
console.log('| observed | MAE log(1+tokens) | Kendall τ |');
console.log('|---:|---:|---:|');
for (const s of steps) console.log(`| ${s.observed} | ${s.maeLog1p} | ${s.kendallTau} |`);

// Per-model calibration: each serving model's held-out answers replayed in order under its own
// name; each correction learns from the first half, then the second half (never observed) is scored.
// With --unknown-name as well, the same under a name the model has never seen (the default verbosity),
// where the correction has a real bias to find.
const calibrations: { name: string; options: ModelPredictorOptions }[] = [
  { name: 'none', options: { calibration: 'none' } },
  { name: 'mean 0.05', options: { calibration: 'mean', calibrationRate: 0.05 } },
  { name: 'mean 0.1', options: { calibration: 'mean', calibrationRate: 0.1 } },
  { name: 'median', options: { calibration: 'median' } },
];
const testModels = [...new Set(test.map((e) => e.model))].sort();
const logError = (e: { outputTokens: number }, p50: number) => Math.log1p(e.outputTokens) - Math.log1p(p50);
const medianOf = (xs: readonly number[]) => {
  const s = [...xs].sort((a, b) => a - b);
  return (s[(s.length - 1) >> 1]! + s[s.length >> 1]!) / 2;
};
interface CalibrationRow {
  model: string;
  learnt: number;
  scored: number;
  /** Per calibration: MAE of log(1 + tokens) and median signed log error on the scored half, and the bias learnt. */
  results: { maeLog1p: number; medianError: number; bias: number }[];
}
const calibrationTable = async (served: (model: string) => string): Promise<CalibrationRow[]> => {
  const rows: CalibrationRow[] = [];
  for (const model of testModels) {
    const answers = test.filter((e) => e.model === model);
    const half = Math.floor(answers.length / 2);
    const results = [];
    for (const c of calibrations) {
      const p = new ModelPredictor({ ...c.options, fineTuneEvery: 0, budgetMs: 10_000 });
      await p.ready();
      for (const [i, e] of answers.slice(0, half).entries()) {
        const r = toRequest(e.prompt, served(model), i);
        await p.predict(r);
        p.observe(r, e.outputTokens);
      }
      const rest = answers.slice(half);
      const errors = await Promise.all(rest.map((e, i) => p.predict(toRequest(e.prompt, served(model), half + i)).then((q) => logError(e, q.outputTokensP50))));
      results.push({ maeLog1p: errors.reduce((s, x) => s + Math.abs(x), 0) / errors.length, medianError: medianOf(errors), bias: p.bias(served(model)) });
      await p.close();
    }
    rows.push({ model, learnt: half, scored: answers.length - half, results });
  }
  return rows;
};
const summarise = (rows: readonly CalibrationRow[]) =>
  calibrations.map((c, k) => {
    const mae = (r: CalibrationRow) => r.results[k]!.maeLog1p;
    const none = (r: CalibrationRow) => r.results[0]!.maeLog1p;
    return {
      calibration: c.name,
      meanMaeLog1p: Number((rows.reduce((s, r) => s + mae(r), 0) / rows.length).toFixed(4)),
      better: rows.filter((r) => mae(r) < none(r) - 1e-9).length,
      worse: rows.filter((r) => mae(r) > none(r) + 1e-9).length,
      meanAbsMedianError: Number((rows.reduce((s, r) => s + Math.abs(r.results[k]!.medianError), 0) / rows.length).toFixed(4)),
    };
  });
const printSummary = (summary: ReturnType<typeof summarise>, models: number) => {
  console.log(`| correction | mean MAE over the ${models} models | better than none | worse than none | mean abs. median signed error |`);
  console.log('|---|---:|---:|---:|---:|');
  for (const s of summary) console.log(`| ${s.calibration} | ${s.meanMaeLog1p.toFixed(4)} | ${s.better} | ${s.worse} | ${s.meanAbsMedianError.toFixed(3)} |`);
};
const ownName = await calibrationTable((model) => model);
console.log(
  `\nPer-model calibration under each model's own name: learnt from the first half of its held-out answers (in order), scored on the second half; MAE of log(1+tokens), median signed log error (true − predicted) in brackets, learnt bias after the slash:`,
);
console.log(`| model | learnt / scored | ${calibrations.map((c) => c.name).join(' | ')} |`);
console.log(`|---|---:|${calibrations.map(() => '---:').join('|')}|`);
for (const r of ownName) {
  const cell = (x: CalibrationRow['results'][number], k: number) => `${x.maeLog1p.toFixed(3)} (${x.medianError >= 0 ? '+' : ''}${x.medianError.toFixed(2)})${k > 0 ? ` / ${x.bias >= 0 ? '+' : ''}${x.bias.toFixed(2)}` : ''}`;
  console.log(`| ${r.model} | ${r.learnt} / ${r.scored} | ${r.results.map(cell).join(' | ')} |`);
}
const ownSummary = summarise(ownName);
printSummary(ownSummary, ownName.length);
const unknownSummary = summarise(await calibrationTable(() => 'unseen-model'));
console.log(`\nThe same, each model's answers served under an unknown name (the default verbosity):`);
printSummary(unknownSummary, testModels.length);

const round = (m: { kendallTau: number; maeLog1p: number; shortLongAccuracy: number }) => ({
  kendallTau: Number(m.kendallTau.toFixed(4)),
  maeLog1p: Number(m.maeLog1p.toFixed(4)),
  shortLongAccuracy: Number(m.shortLongAccuracy.toFixed(4)),
});
console.log(
  JSON.stringify({
    ...round(report.model),
    baselines: { perModelMean: round(report.baselines.perModelMean), promptLength: round(report.baselines.promptLength) },
    usPerRequestC1: Number(usSequential.toFixed(1)),
    usPerRequestC64: Number(usBatched.toFixed(1)),
    cpuUsPerRequestC1: Number(cpuUsSequential.toFixed(1)),
    cpuUsPerRequestC64: Number(cpuUsBatched.toFixed(1)),
    cpuUsFeatures: Number(cpuUsFeatures.toFixed(1)),
    cpuUsNetwork: Number(cpuUsNetwork.toFixed(1)),
    loadMs: Math.round(loadMs),
    onlineLearning: { model: unseenModel, fineTuneSwaps: swaps, steps },
    calibration: { ownName: ownSummary, unknownName: unknownSummary },
  }),
);
