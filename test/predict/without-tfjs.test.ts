import { execFile } from 'node:child_process';
import { cp, mkdir, mkdtemp, readdir, rm, symlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

const root = fileURLToPath(new URL('../..', import.meta.url));

/**
 * The compiled package beside a node_modules holding every installed package but TF.js, as
 * `npm install freesh` leaves it: the optional peers are not installed. `npm test` builds first.
 */
async function installWithoutTfjs(): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), 'freesh-no-tfjs-'));
  for (const entry of ['dist', 'models', 'package.json']) await cp(join(root, entry), join(dir, entry), { recursive: true });
  const modules = join(root, 'node_modules');
  await mkdir(join(dir, 'node_modules'));
  for (const name of await readdir(modules)) {
    if (name.startsWith('.') || name === '@tensorflow') continue;
    if (!name.startsWith('@')) {
      await symlink(join(modules, name), join(dir, 'node_modules', name));
      continue;
    }
    await mkdir(join(dir, 'node_modules', name));
    for (const scoped of await readdir(join(modules, name))) await symlink(join(modules, name, scoped), join(dir, 'node_modules', name, scoped));
  }
  return dir;
}

const script = `
const warnings = [];
console.warn = (...args) => warnings.push(args.join(' '));
const { ModelPredictor } = await import('./dist/src/predict/model-predictor.js');
const { parseRequest } = await import('./dist/src/request/parse.js');
const request = (content) => parseRequest('chat.completions', Buffer.from(JSON.stringify({ model: 'gpt-4-0314', messages: [{ role: 'user', content }] })), {
  id: 'r', arrivalMs: 0, defaultTenant: 't', defaultSloClass: 'standard', header: () => undefined,
});
let tfjs = 'installed';
await import('@tensorflow/tfjs-core').catch((err) => (tfjs = err.code));
const errors = [];
const rounds = [];
const options = { fineTuneEvery: 10, fineTuneIntervalMs: 0, calibrationRate: 0.5, onError: (e) => errors.push(String(e)), onFineTune: (r) => rounds.push(r) };
const predictors = [new ModelPredictor(options), new ModelPredictor(options)];
const ready = await Promise.all(predictors.map((p) => p.ready()));
const sources = new Set();
for (const predictor of predictors) {
  for (let i = 0; i < 60; i++) {
    const r = request('Tell me about zebra herd number ' + i + '.');
    sources.add((await predictor.predict(r)).source);
    predictor.observe(r, 3000);
  }
  await predictor.settled();
}
const bias = predictors[0].bias('gpt-4-0314');
await Promise.all(predictors.map((p) => p.close()));
console.log(JSON.stringify({ tfjs, ready, sources: [...sources], bias, warnings, errors, rounds: rounds.length }));
`;

describe('ModelPredictor without TF.js installed', () => {
  let dir: string;
  beforeAll(async () => {
    dir = await installWithoutTfjs();
    await writeFile(join(dir, 'check.mjs'), script);
  });
  afterAll(() => rm(dir, { recursive: true, force: true }));

  it('predicts with the model and calibrates, and says once that it will not fine-tune', async () => {
    const { stdout } = await promisify(execFile)(process.execPath, ['check.mjs'], { cwd: dir });
    const result = JSON.parse(stdout.trim().split('\n').at(-1)!);
    expect(result.tfjs).toBe('ERR_MODULE_NOT_FOUND');
    expect(result.ready).toEqual([true, true]);
    expect(result.sources).toEqual(['model']);
    expect(result.bias).toBeGreaterThan(0.5);
    expect(result.rounds).toBe(0);
    expect(result.errors).toEqual([]);
    expect(result.warnings).toHaveLength(1);
    expect(result.warnings[0]).toMatch(/will not fine-tune.*@tensorflow\/tfjs-core, @tensorflow\/tfjs-layers, @tensorflow\/tfjs-backend-wasm are not installed.*npm install @tensorflow\/tfjs-core/);
  });
});
