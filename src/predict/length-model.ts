/**
 * The length model as it serves, in plain JavaScript. A length is predicted as log(1 + tokens) =
 * question effect + model verbosity: many models answered the same questions in the training data,
 * and how long a question's answers run and how wordy a model is are separate effects. A small
 * network gives the question effect from the prompt's features; each model's verbosity is its mean
 * log length, kept in the spec.
 *
 * The network is read from the files training writes in TF.js's LayersModel format (model.json's
 * topology and weights manifest, weights.bin) but run here without TF.js: it is a few dense layers,
 * and an arena prompt sets 86 of the 1,024 hashed buckets on average, so summing the kernel rows
 * of the set features is about a tenth of the multiply-adds of a dense pass. TF.js
 * (length-training.ts) is needed only to train and to fine-tune; nothing here loads it.
 */
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { FEATURE_LENGTH, FEATURE_VERSION, HASH_BUCKETS, modelSlot, type SparseFeatures } from './features.js';

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

export class ModelLoadError extends Error {
  override readonly name = 'ModelLoadError';
}

/** One tensor of model.json's weights manifest. */
export interface WeightSpec {
  readonly name: string;
  readonly shape: readonly number[];
  readonly dtype: string;
}

/** A saved model as read from its folder, checked against the features this build computes. */
export interface SavedModel {
  readonly spec: LengthModelSpec;
  /** Keras-style JSON topology, as TF.js wrote it. */
  readonly modelTopology: object;
  /** The tensors in weights.bin, in order. */
  readonly weightSpecs: readonly WeightSpec[];
  readonly weightData: ArrayBuffer;
}

/** Reads spec.json, model.json and weights.bin from `dir`; refuses missing files or another feature version. */
export async function readSavedModel(dir: string): Promise<SavedModel> {
  let spec: LengthModelSpec;
  let saved: { modelTopology: object; weightsManifest: { weights: WeightSpec[] }[] };
  let weights: Buffer;
  try {
    spec = JSON.parse(await readFile(join(dir, 'spec.json'), 'utf8')) as LengthModelSpec;
    saved = JSON.parse(await readFile(join(dir, 'model.json'), 'utf8')) as typeof saved;
    weights = await readFile(join(dir, 'weights.bin'));
  } catch (err) {
    throw new ModelLoadError(`cannot read the length model in ${dir}: ${(err as Error).message}`);
  }
  if (typeof saved?.modelTopology !== 'object' || saved.modelTopology === null || !Array.isArray(saved.weightsManifest)) {
    throw new ModelLoadError(`the length model in ${dir} is corrupt: model.json holds no topology and weights manifest`);
  }
  if (spec.featureVersion !== FEATURE_VERSION || spec.hashBuckets !== HASH_BUCKETS || spec.featureLength !== FEATURE_LENGTH) {
    throw new ModelLoadError(
      `the length model in ${dir} was trained on feature version ${spec.featureVersion} (${spec.featureLength} features); this build computes version ${FEATURE_VERSION} (${FEATURE_LENGTH}): retrain it with npm run train:predictor`,
    );
  }
  return {
    spec,
    modelTopology: saved.modelTopology,
    weightSpecs: saved.weightsManifest.flatMap((group) => group.weights ?? []),
    weightData: weights.buffer.slice(weights.byteOffset, weights.byteOffset + weights.byteLength) as ArrayBuffer,
  };
}

/** Reads a saved model from `dir`; refuses a missing, corrupt or mismatched one, or a network of another shape. */
export async function loadLengthModel(dir: string): Promise<LengthModel> {
  const saved = await readSavedModel(dir);
  let branches: readonly EnsembleBranch[];
  try {
    branches = ensembleBranches(saved.modelTopology);
  } catch (err) {
    throw new ModelLoadError(`the length model in ${dir} is not a network this build can run: ${(err as Error).message}`);
  }
  try {
    return LengthModel.create(saved.spec, branches, saved.weightSpecs, readTensors(saved.weightSpecs, saved.weightData));
  } catch (err) {
    throw new ModelLoadError(`the length model in ${dir} is corrupt: ${(err as Error).message}`);
  }
}

/** One branch of the ensemble, by layer name: a ReLU dense layer over the features, then a linear unit. */
export interface EnsembleBranch {
  readonly hidden: string;
  readonly units: number;
  readonly output: string;
}

interface KerasLayer {
  readonly name: string;
  readonly class_name: string;
  readonly config: {
    readonly units?: number;
    readonly activation?: string;
    readonly use_bias?: boolean;
    readonly batch_input_shape?: readonly (number | null)[];
  };
  /** Per call of the layer, its inputs as [layer name, node, tensor, kwargs]. */
  readonly inbound_nodes: readonly (readonly (readonly [string, ...unknown[]])[])[];
}

interface KerasTopology {
  readonly config?: { readonly layers?: readonly KerasLayer[]; readonly output_layers?: readonly (readonly [string, ...unknown[]])[] };
}

/**
 * The branches of the network training builds (length-training.ts, buildNetwork): the average of
 * linear units, each over a dropout (inactive at inference) of ReLU units over the feature input.
 * Anything else is refused rather than run wrongly.
 */
function ensembleBranches(topology: object): EnsembleBranch[] {
  const config = (topology as KerasTopology).config;
  const layers = new Map((config?.layers ?? []).map((layer) => [layer.name, layer]));
  const inputsOf = (layer: KerasLayer): KerasLayer[] =>
    (layer.inbound_nodes[0] ?? []).map(([name]) => {
      const input = layers.get(name);
      if (!input) throw new Error(`layer ${layer.name} reads the unknown layer ${name}`);
      return input;
    });
  const single = (layer: KerasLayer): KerasLayer => {
    const inputs = inputsOf(layer);
    if (inputs.length !== 1 || layer.inbound_nodes.length !== 1) throw new Error(`layer ${layer.name} has ${inputs.length} inputs, not 1`);
    return inputs[0]!;
  };
  const outputs = config?.output_layers ?? [];
  const average = outputs.length === 1 ? layers.get(outputs[0]![0]) : undefined;
  if (average?.class_name !== 'Average') throw new Error(`its output is ${outputs.length === 1 ? (average?.class_name ?? 'missing') : `${outputs.length} layers`}, not an average of branches`);
  const branches = inputsOf(average).map((output): EnsembleBranch => {
    if (output.class_name !== 'Dense' || output.config.units !== 1 || output.config.activation !== 'linear' || output.config.use_bias !== true) {
      throw new Error(`branch ${output.name} does not end in one linear unit with a bias`);
    }
    let hidden = single(output);
    while (hidden.class_name === 'Dropout') hidden = single(hidden);
    const units = hidden.config.units ?? 0;
    if (hidden.class_name !== 'Dense' || hidden.config.activation !== 'relu' || hidden.config.use_bias !== true || !(units > 0)) {
      throw new Error(`branch ${output.name} reads ${hidden.class_name} ${hidden.name}, not ReLU units with a bias`);
    }
    const input = single(hidden);
    if (input.class_name !== 'InputLayer' || input.config.batch_input_shape?.[1] !== FEATURE_LENGTH) {
      throw new Error(`layer ${hidden.name} reads ${input.name}, not the ${FEATURE_LENGTH} features`);
    }
    return { hidden: hidden.name, units, output: output.name };
  });
  if (branches.length === 0) throw new Error('it has no branches');
  if (branches.some((b) => b.units !== branches[0]!.units)) throw new Error('its branches differ in width');
  return branches;
}

/** The tensors of weights.bin: float32, little-endian, one after another in manifest order. */
function readTensors(specs: readonly WeightSpec[], data: ArrayBuffer): Float32Array[] {
  const view = new DataView(data);
  let offset = 0;
  const tensors = specs.map((spec) => {
    if (spec.dtype !== 'float32') throw new Error(`${spec.name} is ${spec.dtype}, not float32`);
    const size = spec.shape.reduce((n, d) => n * d, 1);
    if (offset + 4 * size > data.byteLength) throw new Error(`weights.bin holds ${data.byteLength} bytes; the manifest needs more by ${spec.name}`);
    const values = new Float32Array(size);
    for (let i = 0; i < size; i++) values[i] = view.getFloat32(offset + 4 * i, true);
    offset += 4 * size;
    return values;
  });
  if (offset !== data.byteLength) throw new Error(`weights.bin holds ${data.byteLength} bytes; the manifest describes ${offset}`);
  return tensors;
}

/**
 * A loaded length model. Its network's weights are kept both as saved (manifest order: what a
 * fine-tuning worker receives and sends back) and packed for the forward pass: each feature's
 * kernel row holds the hidden units of all branches side by side, so a set bucket is one
 * contiguous run of additions.
 */
export class LengthModel {
  readonly spec: LengthModelSpec;
  readonly #branches: readonly EnsembleBranch[];
  readonly #specs: readonly WeightSpec[];
  readonly #tensors: readonly Float32Array[];
  /** Hidden units of all branches: branches × units. */
  readonly #width: number;
  /** FEATURE_LENGTH rows of #width. */
  readonly #kernel: Float32Array;
  readonly #bias: Float32Array;
  /** Each hidden unit's weight in its branch's output. */
  readonly #outputKernel: Float32Array;
  readonly #outputBias: Float32Array;
  /** Hidden pre-activations, reused: float64, so the sum adds no rounding of its own. */
  readonly #sums: Float64Array;
  /** Kernel offsets of a prompt's set buckets, reused. */
  readonly #rows = new Int32Array(HASH_BUCKETS);

  /** Checks every tensor the branches need against the manifest's names and shapes, and packs them. */
  static create(spec: LengthModelSpec, branches: readonly EnsembleBranch[], specs: readonly WeightSpec[], tensors: readonly Float32Array[]): LengthModel {
    const units = branches[0]!.units;
    const expected = new Map<string, readonly number[]>();
    for (const b of branches) {
      expected.set(`${b.hidden}/kernel`, [FEATURE_LENGTH, units]);
      expected.set(`${b.hidden}/bias`, [units]);
      expected.set(`${b.output}/kernel`, [units, 1]);
      expected.set(`${b.output}/bias`, [1]);
    }
    const byName = new Map<string, Float32Array>();
    specs.forEach((s, i) => {
      const shape = expected.get(s.name);
      if (!shape) throw new Error(`the manifest holds ${s.name}, which no branch uses`);
      if (shape.join() !== s.shape.join()) throw new Error(`${s.name} has shape [${s.shape.join(', ')}], not [${shape.join(', ')}]`);
      byName.set(s.name, tensors[i]!);
    });
    for (const name of expected.keys()) if (!byName.has(name)) throw new Error(`the manifest lacks ${name}`);
    return new LengthModel(spec, branches, specs, tensors, byName);
  }

  private constructor(spec: LengthModelSpec, branches: readonly EnsembleBranch[], specs: readonly WeightSpec[], tensors: readonly Float32Array[], byName: ReadonlyMap<string, Float32Array>) {
    this.spec = spec;
    this.#branches = branches;
    this.#specs = specs;
    this.#tensors = tensors;
    const units = branches[0]!.units;
    this.#width = branches.length * units;
    this.#kernel = new Float32Array(FEATURE_LENGTH * this.#width);
    this.#bias = new Float32Array(this.#width);
    this.#outputKernel = new Float32Array(this.#width);
    this.#outputBias = new Float32Array(branches.length);
    branches.forEach((b, k) => {
      const kernel = byName.get(`${b.hidden}/kernel`)!;
      for (let j = 0; j < FEATURE_LENGTH; j++) this.#kernel.set(kernel.subarray(j * units, (j + 1) * units), j * this.#width + k * units);
      this.#bias.set(byName.get(`${b.hidden}/bias`)!, k * units);
      this.#outputKernel.set(byName.get(`${b.output}/kernel`)!, k * units);
      this.#outputBias[k] = byName.get(`${b.output}/bias`)![0]!;
    });
    this.#sums = new Float64Array(this.#width);
  }

  /** The network's weights in manifest order, copied (what the fine-tuning worker trains from). */
  weightData(): Float32Array[] {
    return this.#tensors.map((t) => t.slice());
  }

  /** A copy of this model carrying other weights, in manifest order (from a fine-tuning round). */
  withWeights(data: readonly Float32Array[]): LengthModel {
    if (data.length !== this.#specs.length) throw new RangeError(`Expected ${this.#specs.length} weight tensors, got ${data.length}`);
    data.forEach((d, i) => {
      const size = this.#specs[i]!.shape.reduce((n, v) => n * v, 1);
      if (d.length !== size) throw new RangeError(`Expected ${this.#specs[i]!.name} to hold ${size} values, got ${d.length}`);
    });
    return LengthModel.create(this.spec, this.#branches, this.#specs, data.map((d) => d.slice()));
  }

  /** The question effect of one prompt (log space), from its features in sparse form. */
  questionEffect(features: SparseFeatures): number {
    const sums = this.#sums;
    const kernel = this.#kernel;
    const width = this.#width;
    sums.set(this.#bias);
    const hashed = features.hashed;
    const n = hashed.length;
    const rows = this.#rows;
    for (let i = 0; i < n; i++) rows[i] = hashed[i]! * width;
    // Four units at a time over all set rows, in registers: summing row by row into `sums` spends
    // a load and a store per addition, and measured twice as slow.
    let u = 0;
    for (; u + 3 < width; u += 4) {
      let a = 0;
      let b = 0;
      let c = 0;
      let d = 0;
      for (let i = 0; i < n; i++) {
        const at = rows[i]! + u;
        a += kernel[at]!;
        b += kernel[at + 1]!;
        c += kernel[at + 2]!;
        d += kernel[at + 3]!;
      }
      sums[u]! += a;
      sums[u + 1]! += b;
      sums[u + 2]! += c;
      sums[u + 3]! += d;
    }
    for (; u < width; u++) for (let i = 0; i < n; i++) sums[u]! += kernel[rows[i]! + u]!;
    const dense = features.dense;
    for (let t = 0; t < dense.length; t++) {
      const x = dense[t]!;
      if (x === 0) continue;
      const row = (HASH_BUCKETS + t) * width;
      for (let u = 0; u < width; u++) sums[u]! += x * kernel[row + u]!;
    }
    return this.#average();
  }

  /** The question effect of each dense feature row (log space), for training-time evaluation. */
  questionEffects(features: Float32Array, rows: number): Float32Array {
    const out = new Float32Array(rows);
    const sums = this.#sums;
    const kernel = this.#kernel;
    const width = this.#width;
    for (let r = 0; r < rows; r++) {
      sums.set(this.#bias);
      for (let j = 0; j < FEATURE_LENGTH; j++) {
        const x = features[r * FEATURE_LENGTH + j]!;
        if (x === 0) continue;
        const row = j * width;
        for (let u = 0; u < width; u++) sums[u]! += x * kernel[row + u]!;
      }
      out[r] = this.#average();
    }
    return out;
  }

  /** log(1 + tokens) median of a prompt answered by `model`, before any bias correction. */
  predictLog(features: SparseFeatures, model: string): number {
    return this.questionEffect(features) + this.verbosity(model);
  }

  /** ReLU, each branch's linear unit, and their average, from the hidden sums. */
  #average(): number {
    const sums = this.#sums;
    const weights = this.#outputKernel;
    const branches = this.#outputBias.length;
    const units = this.#width / branches;
    let total = 0;
    for (let k = 0; k < branches; k++) {
      let y = this.#outputBias[k]!;
      for (let u = k * units; u < (k + 1) * units; u++) if (sums[u]! > 0) y += sums[u]! * weights[u]!;
      total += y;
    }
    return total / branches;
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
}
