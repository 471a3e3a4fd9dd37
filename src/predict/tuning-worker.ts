/**
 * A worker thread that fine-tunes the length model's network, so training never stalls the router's
 * event loop. Receives the model's folder, the weights in service and training and check rows;
 * answers the check error before and after, and the new weights when they did better. Weights
 * travel in manifest order, the order the plain-JS model keeps them in. TF.js is imported only
 * when a round runs.
 */
import { parentPort } from 'node:worker_threads';
import { FEATURE_LENGTH, HASH_BUCKETS } from './features.js';
import type { TrainableNetwork } from './length-training.js';

/** Feature rows in sparse form, as they travel to the worker: set buckets, then dense tails. */
export interface PackedRows {
  /** Set hashed buckets of every row, concatenated. */
  readonly indices: Uint16Array;
  /** Row r's buckets are indices[offsets[r] .. offsets[r + 1]). */
  readonly offsets: Uint32Array;
  /** FEATURE_LENGTH − HASH_BUCKETS values per row. */
  readonly tails: Float32Array;
  readonly targets: Float32Array;
}

export interface TuningRequest {
  readonly id: number;
  readonly dir: string;
  readonly weights: Float32Array[];
  readonly train: PackedRows;
  readonly check: PackedRows;
  readonly epochs: number;
}

/** The dense feature matrix of packed rows. */
export function unpack(rows: PackedRows): Float32Array {
  const n = rows.targets.length;
  const tail = FEATURE_LENGTH - HASH_BUCKETS;
  const out = new Float32Array(n * FEATURE_LENGTH);
  for (let r = 0; r < n; r++) {
    for (let k = rows.offsets[r]!; k < rows.offsets[r + 1]!; k++) out[r * FEATURE_LENGTH + rows.indices[k]!] = 1;
    out.set(rows.tails.subarray(r * tail, (r + 1) * tail), r * FEATURE_LENGTH + HASH_BUCKETS);
  }
  return out;
}

export interface TuningReply {
  readonly id: number;
  readonly maeBefore?: number;
  readonly maeAfter?: number;
  readonly weights?: Float32Array[];
  readonly error?: string;
}

const port = parentPort;
/** Each model folder's network, loaded once: a round only replaces its weights. */
const loaded = new Map<string, Promise<TrainableNetwork>>();

if (port) {
  port.on('message', (message: TuningRequest) => {
    void fineTune(message).then(
      (reply) => port.postMessage({ id: message.id, ...reply } satisfies TuningReply, reply.weights?.map((w) => w.buffer as ArrayBuffer) ?? []),
      (err: unknown) => port.postMessage({ id: message.id, error: String(err) } satisfies TuningReply),
    );
  });
}

/** Fine-tunes a copy of the weights in service; returns both errors on the check rows, and the copy's weights if better. */
export async function fineTune(m: Omit<TuningRequest, 'id'>): Promise<Omit<TuningReply, 'id'>> {
  let base = loaded.get(m.dir);
  if (!base) loaded.set(m.dir, (base = import('./length-training.js').then(({ loadTrainableNetwork }) => loadTrainableNetwork(m.dir))));
  const current = (await base).withWeights(m.weights);
  const candidate = current.clone();
  try {
    await candidate.fineTune(unpack(m.train), m.train.targets, m.epochs);
    const checkFeatures = unpack(m.check);
    const maeBefore = await current.questionEffectError(checkFeatures, m.check.targets);
    const maeAfter = await candidate.questionEffectError(checkFeatures, m.check.targets);
    return { maeBefore, maeAfter, ...(maeAfter < maeBefore ? { weights: candidate.weightData() } : {}) };
  } finally {
    current.dispose();
    candidate.dispose();
  }
}
