/**
 * The TF.js side of the length predictor — the only module that imports TensorFlow.js. A length is
 * predicted as log(1 + tokens) = question effect + model verbosity: many models answered the same
 * questions in the training data, and how long a question's answers run and how wordy a model is
 * are separate effects. The network learns the question effect from the prompt's features (trained
 * on each question's effect averaged over the models that answered it, which removes most of the
 * per-answer noise); each model's verbosity is its mean log length, kept in the spec.
 */
import * as tf from '@tensorflow/tfjs-core';
import * as tfl from '@tensorflow/tfjs-layers';
import { mkdir, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { FEATURE_LENGTH, FEATURE_VERSION, HASH_BUCKETS, modelSlot } from './features.js';

export interface LengthModelSpec {
  readonly featureVersion: number;
  readonly hashBuckets: number;
  readonly featureLength: number;
  /** Mean log(1 + tokens) of each training model's answers; `defaultVerbosity` for any other model. */
  readonly verbosity: Readonly<Record<string, number>>;
  readonly defaultVerbosity: number;
  /** Added to the p50 (log space) to give the p90, per model; from held-back training questions. */
  readonly p90Offset: Readonly<Record<string, number>>;
  readonly defaultP90Offset: number;
  readonly seed: number;
  readonly trainedOn: string;
  readonly metrics?: unknown;
}

let backend: Promise<string> | undefined;

/**
 * tfjs-node when it is installed (it cannot install without network access), else WebAssembly, else
 * plain JS. Only TF.js's core, layers and these backends are dependencies: the umbrella package
 * would add WebGL, the graph-model converter and the data pipeline, which no path here loads.
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

/** A loaded length model: predicts log(1 + tokens) for batches of feature rows. */
export class LengthModel {
  readonly spec: LengthModelSpec;
  readonly #network: tfl.LayersModel;

  /** A copy with its own weights, for fine-tuning without touching the model in service. */
  clone(): LengthModel {
    const network = buildNetwork(this.spec.seed);
    network.setWeights(this.#network.getWeights());
    return new LengthModel(network, this.spec);
  }

  /** The network's weights, copied out (to send to a worker). */
  weightData(): Float32Array[] {
    return this.#network.getWeights().map((w) => w.dataSync() as Float32Array);
  }

  /** A copy of this model carrying other weights (from a fine-tuning worker). */
  withWeights(data: readonly Float32Array[]): LengthModel {
    const copy = this.clone();
    const shapes = this.#network.getWeights().map((w) => w.shape);
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

  /** Trains the question-effect network further on (features, question effect) rows. */
  fineTune(features: Float32Array, targets: Float32Array, epochs: number): Promise<void> {
    return fitNetwork(this.#network, features, targets, { epochs, learningRate: 0.0005 });
  }

  constructor(network: tfl.LayersModel, spec: LengthModelSpec) {
    this.#network = network;
    this.spec = spec;
  }

  /** The question effect of each feature row (log space). */
  questionEffects(features: Float32Array, rows: number): Promise<Float32Array> {
    return questionEffects(this.#network, features, rows);
  }

  /** `features`: one row of FEATURE_LENGTH per model name. Resolves to log(1 + tokens) medians. */
  async predictLog(features: Float32Array, models: readonly string[]): Promise<Float32Array> {
    const values = await questionEffects(this.#network, features, models.length);
    for (let i = 0; i < models.length; i++) values[i]! += this.verbosity(models[i]!);
    return values;
  }

  /** A model's verbosity: by exact name, else the longest known name it contains or is contained in, else the default. */
  verbosity(model: string): number {
    return this.#perModel(model).verbosity;
  }

  /** log p90 − log p50 for a model. */
  p90Offset(model: string): number {
    return this.#perModel(model).p90Offset;
  }

  /** Name matching is a scan of the known names: done once per serving model name. */
  readonly #byName = new Map<string, { verbosity: number; p90Offset: number }>();

  #perModel(model: string): { verbosity: number; p90Offset: number } {
    let entry = this.#byName.get(model);
    if (!entry) {
      const lookup = (table: Readonly<Record<string, number>>, fallback: number) => {
        const known = Object.keys(table);
        const slot = modelSlot(model, known);
        return slot < known.length ? table[known[slot]!]! : fallback;
      };
      entry = { verbosity: lookup(this.spec.verbosity, this.spec.defaultVerbosity), p90Offset: lookup(this.spec.p90Offset, this.spec.defaultP90Offset) };
      if (this.#byName.size < 1_000) this.#byName.set(model, entry);
    }
    return entry;
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

export class ModelLoadError extends Error {
  override readonly name = 'ModelLoadError';
}

/** Reads a saved model from `dir` with no network access; refuses a missing, corrupt or mismatched one. */
export async function loadLengthModel(dir: string): Promise<LengthModel> {
  await initBackend();
  let spec: LengthModelSpec;
  let topology: { modelTopology: object; weightsManifest: { weights: tf.io.WeightsManifestEntry[] }[] };
  let weights: Buffer;
  try {
    spec = JSON.parse(await readFile(join(dir, 'spec.json'), 'utf8')) as LengthModelSpec;
    topology = JSON.parse(await readFile(join(dir, 'model.json'), 'utf8')) as typeof topology;
    weights = await readFile(join(dir, 'weights.bin'));
  } catch (err) {
    throw new ModelLoadError(`cannot read the length model in ${dir}: ${(err as Error).message}`);
  }
  if (spec.featureVersion !== FEATURE_VERSION || spec.hashBuckets !== HASH_BUCKETS || spec.featureLength !== FEATURE_LENGTH) {
    throw new ModelLoadError(
      `the length model in ${dir} was trained on feature version ${spec.featureVersion} (${spec.featureLength} features); this build computes version ${FEATURE_VERSION} (${FEATURE_LENGTH}): retrain it with npm run train:predictor`,
    );
  }
  try {
    const weightSpecs = topology.weightsManifest.flatMap((g) => g.weights);
    const weightData = weights.buffer.slice(weights.byteOffset, weights.byteOffset + weights.byteLength) as ArrayBuffer;
    const network = await tfl.loadLayersModel(tf.io.fromMemory({ modelTopology: topology.modelTopology, weightSpecs, weightData }));
    return new LengthModel(network, spec);
  } catch (err) {
    throw new ModelLoadError(`the length model in ${dir} is corrupt: ${(err as Error).message}`);
  }
}
