#!/usr/bin/env node
/**
 * `npm run test:mutation`: StrykerJS over the core modules (stryker.config.json), then the mutation
 * score per file and overall, ending with one JSON line. Extra arguments go to `stryker run`
 * (e.g. `--mutate 'src/queue/**\/*.ts'`). Slow (tens of minutes on two cores): not part of CI.
 */
import { spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';

const REPORT = 'bench/out/mutation.json';
const run = spawnSync('npx', ['stryker', 'run', ...process.argv.slice(2)], { stdio: 'inherit' });
if (run.status !== 0) process.exit(run.status ?? 1);

const report = JSON.parse(readFileSync(REPORT, 'utf8'));
const DETECTED = new Set(['Killed', 'Timeout']);
const UNDETECTED = new Set(['Survived', 'NoCoverage']);
const rows = [];
let detected = 0;
let undetected = 0;
for (const [file, { mutants }] of Object.entries(report.files)) {
  const d = mutants.filter((m) => DETECTED.has(m.status)).length;
  const u = mutants.filter((m) => UNDETECTED.has(m.status)).length;
  detected += d;
  undetected += u;
  if (d + u > 0) rows.push([file, d, u, (100 * d) / (d + u)]);
}
rows.sort((a, b) => a[3] - b[3]);
console.log('\n| file | detected | survived or uncovered | score |\n|---|---:|---:|---:|');
for (const [file, d, u, score] of rows) console.log(`| ${file} | ${d} | ${u} | ${score.toFixed(1)}% |`);
const mutationScore = Math.round((10_000 * detected) / Math.max(1, detected + undetected)) / 100;
console.log(`\n${detected} of ${detected + undetected} mutants detected (killed or timed out); compile and runtime errors are not counted.`);
console.log(JSON.stringify({ mutationScore, detected, undetected }));
