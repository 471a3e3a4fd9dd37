/**
 * Training and fine-tuning the length model's network — the only module that imports TensorFlow.js,
 * loaded only by `npm run train:predictor` and the fine-tuning worker: serving runs the saved
 * network in plain JS (length-model.ts). The network learns a prompt's question effect from its
 * features (trained on each question's effect averaged over the models that answered it, which
 * removes most of the per-answer noise).
 */
import * as tf from '@tensorflow/tfjs-core';
import * as tfl from '@tensorflow/tfjs-layers';
import { mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { FEATURE_LENGTH } from './features.js';
import { type LengthModelSpec, ModelLoadError, readSavedModel } from './length-model.js';

let backend: Promise<string> | undefined;

/**
 * tfjs-node when it is installed (it cannot install without network access), else WebAssembly, else
 * plain JS. Only TF.js's core, layers and these backends are (optional peer) dependencies: the
 * umbrella package would add WebGL, the graph-model converter and the data pipeline, which no path
 * here loads.
 */
export function initBackend(): Promise<string> {
  backend ??= (async () => {
    try {
      await import(/* optional */ '@tensorflow/tfjs-node' as string);
      await tf.setBackend('tensorflow');
    } catch {
      try {
        await import('@tensorflow/tfjs-backend-wasm');
        await tf.setBackend('wasm');
      } catch {
        await import('@tensorflow/tfjs-backend-cpu');
        await tf.setBackend('cpu');
      }
    }
    await tf.ready();
    return tf.getBackend();
  })();
  return backend;
}

/** Branches averaged in the network: the question effect is noisy to learn from ~640 prompts. */
export const ENSEMBLE = 5;

/**
 * The network: ENSEMBLE branches of features → 32 ReLU units (dropout) → a question effect, each
 * from its own initialisation, averaged (less variance than any one branch).
 */
export function buildNetwork(seed: number): tfl.LayersModel {
  const l2 = tfl.regularizers.l2({ l2: 1e-3 });
  const input = tfl.input({ shape: [FEATURE_LENGTH], name: 'features' });
  const branches = Array.from({ length: ENSEMBLE }, (_, k) => {
    const s = seed + 10 * k;
    const hidden = tfl.layers.dense({ units: 32, activation: 'relu', kernelRegularizer: l2, kernelInitializer: tfl.initializers.glorotUniform({ seed: s }) }).apply(input);
    const dropped = tfl.layers.dropout({ rate: 0.3, seed: s + 1 }).apply(hidden);
    return tfl.layers.dense({ units: 1, kernelRegularizer: l2, kernelInitializer: tfl.initializers.glorotUniform({ seed: s + 2 }) }).apply(dropped) as tfl.SymbolicTensor;
  });
  const output = tfl.layers.average().apply(branches) as tfl.SymbolicTensor;
  return tfl.model({ inputs: input, outputs: output, name: 'length' });
}

/** Fits the network to question effects (mean squared error, Adam). */
export async function fitNetwork(
  network: tfl.LayersModel,
  features: Float32Array,
  targets: Float32Array,
  options: { epochs: number; learningRate?: number; onEpoch?: (epoch: number, loss: number) => void },
): Promise<void> {
  const n = targets.length;
  const x = tf.tensor2d(features, [n, FEATURE_LENGTH]);
  const y = tf.tensor2d(targets, [n, 1]);
  network.compile({ optimizer: tf.train.adam(options.learningRate ?? 0.001), loss: 'meanSquaredError' });
  await network.fit(x, y, {
    epochs: options.epochs,
    batchSize: 32,
    shuffle: false, // rows come pre-shuffled by the seeded split: runs repeat exactly
    verbose: 0,
    callbacks: { onEpochEnd: (epoch, logs) => options.onEpoch?.(epoch, Number(logs?.loss ?? Number.NaN)) },
  });
  tf.dispose([x, y]);
}

/** Question effects for feature rows (log space), for training-time use. */
export async function questionEffects(network: tfl.LayersModel, features: Float32Array, rows: number): Promise<Float32Array> {
  const out = tf.tidy(() => network.predict(tf.tensor2d(features, [rows, FEATURE_LENGTH])) as tf.Tensor);
  const values = (await out.data()) as Float32Array;
  out.dispose();
  return values;
}

/**
 * The network in TF.js, to fine-tune: weights travel in and out in manifest order, the order the
 * plain-JS model (length-model.ts) keeps them in.
 */
export class TrainableNetwork {
  readonly #network: tfl.LayersModel;
  readonly #seed: number;

  constructor(network: tfl.LayersModel, seed: number) {
    this.#network = network;
    this.#seed = seed;
  }

  /** A copy with its own weights, for fine-tuning without touching the network it came from. */
  clone(): TrainableNetwork {
    const network = buildNetwork(this.#seed);
    network.setWeights(this.#network.getWeights());
    return new TrainableNetwork(network, this.#seed);
  }

  /** The network's weights, copied out. */
  weightData(): Float32Array[] {
    return this.#network.getWeights().map((w) => (w.dataSync() as Float32Array).slice());
  }

  /** A copy carrying other weights (the ones in service). */
  withWeights(data: readonly Float32Array[]): TrainableNetwork {
    const copy = this.clone();
    const shapes = this.#network.getWeights().map((w) => w.shape);
    if (data.length !== shapes.length) throw new RangeError(`Expected ${shapes.length} weight tensors, got ${data.length}`);
    const tensors = data.map((d, i) => tf.tensor(d, shapes[i]));
    copy.#network.setWeights(tensors);
    tf.dispose(tensors);
    return copy;
  }

  /** Mean absolute error of the question effect on (features, effect) rows. */
  async questionEffectError(features: Float32Array, targets: Float32Array): Promise<number> {
    const effects = await questionEffects(this.#network, features, targets.length);
    let sum = 0;
    for (let i = 0; i < targets.length; i++) sum += Math.abs(effects[i]! - targets[i]!);
    return sum / Math.max(1, targets.length);
  }

  /** The question effect of each feature row (log space). */
  questionEffects(features: Float32Array, rows: number): Promise<Float32Array> {
    return questionEffects(this.#network, features, rows);
  }

  /** Trains the question-effect network further on (features, question effect) rows. */
  fineTune(features: Float32Array, targets: Float32Array, epochs: number): Promise<void> {
    return fitNetwork(this.#network, features, targets, { epochs, learningRate: 0.0005 });
  }

  dispose(): void {
    this.#network.dispose();
  }
}

/** Writes model.json (topology and weights manifest), weights.bin and spec.json into `dir`. */
export async function saveLengthModel(network: tfl.LayersModel, spec: LengthModelSpec, dir: string): Promise<void> {
  await mkdir(dir, { recursive: true });
  await network.save(
    tf.io.withSaveHandler(async (artifacts) => {
      const weights = artifacts.weightData instanceof ArrayBuffer ? artifacts.weightData : tf.io.concatenateArrayBuffers(artifacts.weightData as ArrayBuffer[]);
      await writeFile(join(dir, 'weights.bin'), Buffer.from(weights));
      await writeFile(join(dir, 'model.json'), JSON.stringify({ modelTopology: artifacts.modelTopology, weightsManifest: [{ paths: ['weights.bin'], weights: artifacts.weightSpecs }] }));
      return { modelArtifactsInfo: { dateSaved: new Date(), modelTopologyType: 'JSON' } };
    }),
  );
  await writeSpec(spec, dir);
}

/** Writes spec.json alone (the weights stay as they are). */
export async function writeSpec(spec: LengthModelSpec, dir: string): Promise<void> {
  await writeFile(join(dir, 'spec.json'), `${JSON.stringify(spec, null, 2)}\n`);
}

/** Loads the network of a saved model into TF.js; refuses a missing, corrupt or mismatched one. */
export async function loadTrainableNetwork(dir: string): Promise<TrainableNetwork> {
  await initBackend();
  const saved = await readSavedModel(dir);
  try {
    const weightSpecs = saved.weightSpecs as tf.io.WeightsManifestEntry[];
    const network = await tfl.loadLayersModel(tf.io.fromMemory({ modelTopology: saved.modelTopology, weightSpecs, weightData: saved.weightData }));
    return new TrainableNetwork(network, saved.spec.seed);
  } catch (err) {
    throw new ModelLoadError(`the length model in ${dir} is corrupt: ${(err as Error).message}`);
  }
}
