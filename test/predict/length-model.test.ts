import { copyFile, mkdtemp, readFile, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { FEATURE_LENGTH, promptFeatures, sparseFeatures } from '../../src/predict/features.js';
import { type LengthModel, loadLengthModel } from '../../src/predict/length-model.js';
import { loadTrainableNetwork, type TrainableNetwork } from '../../src/predict/length-training.js';
import { defaultModelDir } from '../../src/predict/model-predictor.js';

/** A sample of the arena prompt sets the model was trained and evaluated on (test/fixtures/README.md). */
async function arenaPrompts(): Promise<string[]> {
  return (await readFile(new URL('../fixtures/arena-prompts-sample.jsonl', import.meta.url), 'utf8'))
    .split('\n')
    .filter((line) => line.trim() !== '')
    .map((line) => (JSON.parse(line) as { prompt: string }).prompt);
}

async function copyModel(): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), 'freesh-model-'));
  for (const f of ['model.json', 'weights.bin', 'spec.json']) await copyFile(join(defaultModelDir(), f), join(dir, f));
  return dir;
}

describe('LengthModel (plain JS)', () => {
  let model: LengthModel;
  let network: TrainableNetwork;
  beforeAll(async () => {
    model = await loadLengthModel(defaultModelDir());
    network = await loadTrainableNetwork(defaultModelDir());
  });
  afterAll(() => network.dispose());

  it('gives the question effects TF.js gives, on arena prompts and odd ones', async () => {
    const prompts = await arenaPrompts();
    expect(prompts.length).toBe(80);
    prompts.push('', 'x'.repeat(100_000), 'Answer with one word.', '```js\nconsole.log(1)\n```\nWhy?');
    // max_tokens and message counts vary so that every dense input is exercised.
    const rows = prompts.length;
    const features = new Float32Array(rows * FEATURE_LENGTH);
    prompts.forEach((p, i) => promptFeatures(p, i % 3 === 0 ? undefined : 16 * (i + 1), 1 + (i % 4), features, i * FEATURE_LENGTH));
    const expected = await network.questionEffects(features, rows);
    const dense = model.questionEffects(features, rows);
    let worst = 0;
    for (let i = 0; i < rows; i++) {
      const sparse = model.questionEffect(sparseFeatures(features, i * FEATURE_LENGTH));
      worst = Math.max(worst, Math.abs(sparse - expected[i]!), Math.abs(dense[i]! - expected[i]!));
    }
    expect(worst).toBeLessThan(1e-5);
  });

  it('keeps its weights in the order TF.js gives and takes them, and runs the weights it is given', async () => {
    const weights = network.weightData();
    expect(model.weightData()).toEqual(weights);
    // A network with other weights (as fine-tuning returns them) predicts as TF.js does with them.
    const shifted = weights.map((w, i) => w.map((v, j) => v + 0.01 * Math.sin(7 * i + j)));
    const other = network.withWeights(shifted);
    const features = promptFeatures('Write a detailed essay about tides.', undefined);
    const [expected] = await other.questionEffects(features, 1);
    other.dispose();
    const changed = model.withWeights(shifted);
    expect(Math.abs(changed.questionEffect(sparseFeatures(features)) - expected!)).toBeLessThan(1e-5);
    expect(changed.questionEffect(sparseFeatures(features))).not.toBeCloseTo(model.questionEffect(sparseFeatures(features)), 3);
    expect(() => model.withWeights(shifted.slice(1))).toThrow(/Expected 20 weight tensors, got 19/);
    expect(() => model.withWeights([shifted[0]!.subarray(1), ...shifted.slice(1)])).toThrow(/to hold 33088 values, got 33087/);
  });

  it.each([
    [
      'another activation',
      (m: { modelTopology: { config: { layers: { name: string; config: { activation?: string } }[] } } }) => {
        m.modelTopology.config.layers.find((l) => l.name === 'dense_Dense3')!.config.activation = 'tanh';
      },
      /not a network this build can run: branch dense_Dense4 reads Dense dense_Dense3, not ReLU units/,
    ],
    [
      'a kernel of another shape in the manifest',
      (m: { weightsManifest: { weights: { name: string; shape: number[] }[] }[] }) => {
        m.weightsManifest[0]!.weights[10]!.shape = [1, 32];
      },
      /corrupt: dense_Dense2\/kernel has shape \[1, 32\], not \[32, 1\]/,
    ],
  ])('refuses a network with %s', async (_name, damage, message) => {
    const dir = await copyModel();
    const saved = JSON.parse(await readFile(join(dir, 'model.json'), 'utf8'));
    damage(saved);
    await writeFile(join(dir, 'model.json'), JSON.stringify(saved));
    await expect(loadLengthModel(dir)).rejects.toThrow(message);
  });
});
