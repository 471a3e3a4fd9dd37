import { hash } from 'node:crypto';
import { existsSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Worker } from 'node:worker_threads';
import { LRUCache } from 'lru-cache';
import { type Clock, systemClock } from '../clock.js';
import type { Prediction, RoutingRequest } from '../types.js';
import { type BiasCalibration, type CalibrationKind, MeanBias, MedianBias } from './calibration.js';
import type * as Features from './features.js';
import type { LengthModel } from './length-model.js';
import { capped, heuristicPredictor, type Predictor } from './predictor.js';
import type { PackedRows, TuningReply, TuningRequest } from './tuning-worker.js';

/** The compiled fine-tuning worker; absent when running from TypeScript sources. */
const TUNING_WORKER = fileURLToPath(new URL('./tuning-worker.js', import.meta.url));

/** What installs the optional peer dependencies fine-tuning needs (the WebAssembly backend brings the CPU one). */
const TRAINING_INSTALL = 'npm install @tensorflow/tfjs-core@^4.22.0 @tensorflow/tfjs-layers@^4.22.0 @tensorflow/tfjs-backend-wasm@^4.22.0';

/**
 * The TF.js packages fine-tuning would load (length-training.ts) that are not installed, resolved
 * from here as the worker beside this file resolves them. Serving never needs them.
 */
function missingTrainingPackages(): string[] {
  const require = createRequire(import.meta.url);
  const installed = (name: string) => {
    try {
      require.resolve(name);
      return true;
    } catch {
      return false;
    }
  };
  const missing = ['@tensorflow/tfjs-core', '@tensorflow/tfjs-layers'].filter((name) => !installed(name));
  // Training falls back from the WebAssembly backend to the CPU one (initBackend): either will do.
  if (!installed('@tensorflow/tfjs-backend-wasm') && !installed('@tensorflow/tfjs-backend-cpu')) missing.push('@tensorflow/tfjs-backend-wasm');
  return missing;
}

/** Said once per process however many predictors find TF.js missing, like the report's missing charts. */
let toldNoTraining = false;

export interface ModelPredictorOptions {
  /** Folder of the trained model. Default: the package's models/length-v1. */
  readonly dir?: string;
  /** Most requests predicted in one turn of the event loop. Default 64. */
  readonly maxBatch?: number;
  /** A prediction not ready in this long falls back to the heuristic (ms). Default 20. */
  readonly budgetMs?: number;
  /** Predictions remembered by prompt hash. Default 10,000. */
  readonly cacheSize?: number;
  /**
   * How each serving model's bias (log(1 + tokens)) is learnt from its observed lengths. Default
   * 'median': the median of the model's last `calibrationWindow` errors and `calibrationPrior` zeros
   * (`MedianBias`). 'mean': the exponentially weighted mean error at `calibrationRate` (`MeanBias`),
   * the correction before; a few very long or short answers drag it, and on the held-out answers it
   * made half the models worse (bench/README.md, length predictor). 'none': no correction.
   */
  readonly calibration?: CalibrationKind;
  /** 'mean' only: weight of each new observation. Default 0.05 (about the last 20). */
  readonly calibrationRate?: number;
  /** 'median' only: errors the median is taken over, the newest. Default 64. */
  readonly calibrationWindow?: number;
  /** 'median' only: zero errors counted in with the observed ones, for the trained model's own guess. Default 3. */
  readonly calibrationPrior?: number;
  /** Observations kept for fine-tuning (features only, never prompt text). Default 2,000. */
  readonly bufferSize?: number;
  /**
   * Fine-tune after this many new observations; 0 turns it off. Default 500 where the compiled
   * worker thread exists, else 0: on the event loop a round stalls requests while it trains (the
   * overhead benchmark fell from ~14,000 to 140 req/s with in-line rounds every 500 requests).
   * Fine-tuning needs TF.js, optional peer dependencies; where they are not installed it is off,
   * and a warning on stderr says so once per process.
   */
  readonly fineTuneEvery?: number;
  /** Epochs of each fine-tuning round (the CPU it may spend). Default 5. */
  readonly fineTuneEpochs?: number;
  /**
   * Least time between fine-tuning rounds (ms): the CPU budget. Default 10 minutes — a round of
   * 2,000 rows and 5 epochs takes one core for about 4 s (measured), and back-to-back rounds halved
   * the proxy's throughput on two cores.
   */
  readonly fineTuneIntervalMs?: number;
  /**
   * Time for the prediction budget and the interval between fine-tuning rounds. Default
   * `systemClock`; the simulator passes its virtual clock.
   */
  readonly clock?: Clock;
  /** Told of each fine-tuning round's outcome. */
  readonly onFineTune?: (result: FineTuneResult) => void;
  /** Told when the model cannot be loaded or fails (the heuristic answers meanwhile). */
  readonly onError?: (error: unknown) => void;
}

export interface FineTuneResult {
  /** Error (MAE of log(1 + tokens)) on the held-back slice of recent traffic, before and after. */
  readonly maeBefore: number;
  readonly maeAfter: number;
  /** Whether the new weights went into service (only when they did better). */
  readonly swapped: boolean;
  readonly samples: number;
}

/** One observation for fine-tuning: the prompt's features and its question effect — no text. */
interface Observation extends Features.SparseFeatures {
  readonly target: number;
}

interface CacheEntry {
  readonly logP50: number;
  readonly p90Offset: number;
  readonly features: Features.SparseFeatures;
}

interface Pending {
  readonly request: RoutingRequest;
  readonly key: string;
  readonly resolve: (prediction: Prediction) => void;
}

/** The package root: the nearest folder above this file with a package.json naming freesh. */
export function defaultModelDir(): string {
  let dir = dirname(fileURLToPath(import.meta.url));
  for (let i = 0; i < 6; i++) {
    if (existsSync(join(dir, 'models', 'length-v1', 'spec.json'))) return join(dir, 'models', 'length-v1');
    dir = dirname(dir);
  }
  return join(dirname(fileURLToPath(import.meta.url)), 'models', 'length-v1');
}

/**
 * The trained length model behind the Predictor interface, its network run in plain JS. Requests
 * are predicted on the next turn of the event loop, or at once when `maxBatch` are waiting, so a
 * burst does not hold up the caller; results are cached by prompt hash; anything that is not ready
 * within `budgetMs`, or a model that is missing or broken, falls back to the heuristic — a request
 * never fails because of the predictor. `observe` learns each serving model's bias from its true lengths at once (the
 * model in production may be one the training data never saw; by default the median of its recent
 * log errors, see `calibration`); with `fineTuneEvery` set, it also
 * keeps a bounded buffer of features and true lengths — never prompt text — on which it fine-tunes
 * a copy of the network now and then, swapping the new weights in only if they do better on the
 * newest slice of traffic.
 */
export class ModelPredictor implements Predictor {
  readonly name = 'model';
  readonly #options: Required<Omit<ModelPredictorOptions, 'onError' | 'dir' | 'onFineTune'>> & Pick<ModelPredictorOptions, 'onError' | 'onFineTune'>;
  #buffer: Observation[] = [];
  #sinceTuning = 0;
  #tuning: Promise<void> | undefined;
  readonly #fallback = heuristicPredictor();
  readonly #cache: LRUCache<string, CacheEntry>;
  readonly #dir: string;
  #worker: Worker | undefined;
  #nextTuning = 0;
  /** The first round waits a full interval too: until then there is little traffic to learn from. */
  #lastTuningMs: number;
  /** Per serving model: bias of log(1 + tokens), learnt from observations. */
  readonly #bias = new Map<string, BiasCalibration>();
  #model: LengthModel | undefined;
  /** Loaded with the model: the tokenizer loads only when a router uses this predictor. */
  #features: typeof Features | undefined;
  #failed = false;
  readonly #loading: Promise<void>;
  #pending: Pending[] = [];
  #scheduled = false;

  constructor(options: ModelPredictorOptions = {}) {
    const fineTuneEvery = options.fineTuneEvery ?? (existsSync(TUNING_WORKER) ? 500 : 0);
    const missing = fineTuneEvery > 0 ? missingTrainingPackages() : [];
    this.#options = {
      maxBatch: options.maxBatch ?? 64,
      budgetMs: options.budgetMs ?? 20,
      cacheSize: options.cacheSize ?? 10_000,
      calibration: options.calibration ?? 'median',
      calibrationRate: options.calibrationRate ?? 0.05,
      calibrationWindow: options.calibrationWindow ?? 64,
      calibrationPrior: options.calibrationPrior ?? 3,
      bufferSize: options.bufferSize ?? 2_000,
      // Without TF.js no round could run: no buffer is kept, and the model serves as trained.
      fineTuneEvery: missing.length > 0 ? 0 : fineTuneEvery,
      fineTuneEpochs: options.fineTuneEpochs ?? 5,
      fineTuneIntervalMs: options.fineTuneIntervalMs ?? 600_000,
      clock: options.clock ?? systemClock,
      onError: options.onError,
      onFineTune: options.onFineTune,
    };
    // Thrown here, not at the first observation: a bad window or prior is a configuration error.
    if (this.#options.calibration === 'median') new MedianBias(this.#options.calibrationWindow, this.#options.calibrationPrior);
    this.#lastTuningMs = this.#options.clock.now();
    this.#cache = new LRUCache({ max: this.#options.cacheSize });
    this.#dir = options.dir ?? defaultModelDir();
    this.#loading = Promise.all([import('./length-model.js'), import('./features.js')])
      .then(async ([{ loadLengthModel }, features]) => {
        this.#model = await loadLengthModel(this.#dir);
        this.#features = features;
        if (missing.length > 0 && !toldNoTraining) {
          toldNoTraining = true;
          console.warn(
            `freesh: the length model will not fine-tune on traffic: ${missing.join(', ')} ${missing.length === 1 ? 'is' : 'are'} not installed (optional peer dependencies: ${TRAINING_INSTALL}); it still predicts and calibrates each model's bias`,
          );
        }
      })
      .catch((err: unknown) => {
        this.#failed = true;
        this.#options.onError?.(err);
      });
  }

  /** Resolves once the model is loaded, or has failed to load (then the heuristic answers). */
  ready(): Promise<boolean> {
    return this.#loading.then(() => this.#model !== undefined);
  }

  predict(request: RoutingRequest): Promise<Prediction> {
    if (!this.#model) return this.#fallback.predict(request);
    const key = cacheKey(request);
    const hit = this.#cache.get(key);
    if (hit) return Promise.resolve(this.#finish(request, hit.logP50, hit.p90Offset));
    return new Promise((resolve) => {
      let settled = false;
      const timer = this.#options.clock.setTimer(() => {
        settled = true;
        void this.#fallback.predict(request).then(resolve);
      }, this.#options.budgetMs);
      this.#pending.push({
        request,
        key,
        resolve: (prediction) => {
          if (settled) return;
          settled = true;
          timer.cancel();
          resolve(prediction);
        },
      });
      if (this.#pending.length >= this.#options.maxBatch) this.#flush();
      else if (!this.#scheduled) {
        this.#scheduled = true;
        setImmediate(() => this.#flush());
      }
    });
  }

  observe(request: RoutingRequest, outputTokens: number): void {
    const hit = this.#cache.get(cacheKey(request));
    if (!hit || !(outputTokens > 0)) return;
    // The error against the uncorrected prediction: the correction follows its median (or mean).
    const kind = this.#options.calibration;
    if (kind !== 'none') {
      const model = request.model.toLowerCase();
      let bias = this.#bias.get(model);
      if (!bias) {
        bias = kind === 'mean' ? new MeanBias(this.#options.calibrationRate) : new MedianBias(this.#options.calibrationWindow, this.#options.calibrationPrior);
        this.#bias.set(model, bias);
      }
      bias.observe(Math.log1p(outputTokens) - hit.logP50);
    }
    if (this.#options.fineTuneEvery > 0 && this.#model) this.#remember(request, hit, outputTokens);
  }

  /** Resolves when the fine-tuning round in progress (if any) has finished. */
  settled(): Promise<void> {
    return this.#tuning ?? Promise.resolve();
  }

  /**
   * Keeps the features (not the text) and the question effect the observation implies, and starts a
   * background fine-tuning round every `fineTuneEvery` observations.
   */
  #remember(request: RoutingRequest, hit: CacheEntry, outputTokens: number): void {
    const target = Math.log1p(outputTokens) - this.#model!.verbosity(request.model) - this.bias(request.model);
    // A literal, not `{ ...hit.features, target }`: V8's spread copy cost ~6 µs of the proxy's CPU per
    // request under the overhead benchmark's load (measured with a patched build, 100.1 -> 94.4 µs).
    this.#buffer.push({ hashed: hit.features.hashed, dense: hit.features.dense, target });
    // Trimmed in batches: copying the buffer on every observation would cost O(bufferSize) each.
    if (this.#buffer.length >= 2 * this.#options.bufferSize) this.#buffer = this.#buffer.slice(-this.#options.bufferSize);
    const now = this.#options.clock.now();
    if (++this.#sinceTuning >= this.#options.fineTuneEvery && !this.#tuning && this.#buffer.length >= 50 && now - this.#lastTuningMs >= this.#options.fineTuneIntervalMs) {
      this.#sinceTuning = 0;
      this.#lastTuningMs = now;
      this.#tuning = this.#fineTune().finally(() => {
        this.#tuning = undefined;
      });
    }
  }

  /**
   * Fine-tunes a copy of the network on the older 80% of the buffer and puts it into service only if
   * it does better on the newest 20% — recent traffic it was not trained on.
   */
  async #fineTune(): Promise<void> {
    const current = this.#model;
    const f = this.#features;
    if (!current || !f) return;
    const rows = this.#buffer.slice(-this.#options.bufferSize);
    const cut = Math.floor(rows.length * 0.8);
    const request: Omit<TuningRequest, 'id'> = {
      dir: this.#dir,
      weights: current.weightData(),
      train: pack(rows.slice(0, cut), f.FEATURE_LENGTH - f.HASH_BUCKETS),
      check: pack(rows.slice(cut), f.FEATURE_LENGTH - f.HASH_BUCKETS),
      epochs: this.#options.fineTuneEpochs,
    };
    try {
      const reply: Omit<TuningReply, 'id'> = existsSync(TUNING_WORKER) ? await this.#tuneInWorker(request) : await (await import('./tuning-worker.js')).fineTune(request);
      if (reply.error !== undefined) throw new Error(reply.error);
      const swapped = reply.weights !== undefined && this.#model === current;
      if (swapped) {
        // The worker trained TF.js's copy of the network; serving runs its weights in plain JS.
        this.#model = current.withWeights(reply.weights!);
        this.#cache.clear();
      }
      this.#options.onFineTune?.({ maeBefore: reply.maeBefore!, maeAfter: reply.maeAfter!, swapped, samples: rows.length });
    } catch (err) {
      this.#options.onError?.(err);
    }
  }

  #tuneInWorker(request: Omit<TuningRequest, 'id'>): Promise<TuningReply> {
    if (!this.#worker) {
      this.#worker = new Worker(TUNING_WORKER);
      this.#worker.unref();
    }
    const worker = this.#worker;
    const id = this.#nextTuning++;
    return new Promise((resolve, reject) => {
      const onMessage = (reply: TuningReply) => {
        if (reply.id !== id) return;
        worker.off('message', onMessage);
        worker.off('error', onError);
        resolve(reply);
      };
      const onError = (err: Error) => {
        worker.off('message', onMessage);
        this.#worker = undefined;
        reject(err);
      };
      worker.on('message', onMessage);
      worker.once('error', onError);
      const transfer = [request.train, request.check].flatMap((r) => [r.indices.buffer, r.offsets.buffer, r.tails.buffer, r.targets.buffer]) as ArrayBuffer[];
      worker.postMessage({ ...request, id } satisfies TuningRequest, transfer);
    });
  }

  /** The learnt bias correction of a serving model (log space). */
  bias(model: string): number {
    return this.#bias.get(model.toLowerCase())?.value ?? 0;
  }

  async close(): Promise<void> {
    await this.#loading;
    await this.settled();
    await this.#worker?.terminate();
    this.#worker = undefined;
    this.#model = undefined;
  }

  #flush(): void {
    this.#scheduled = false;
    const batch = this.#pending;
    this.#pending = [];
    const model = this.#model;
    const f = this.#features;
    if (batch.length === 0) return;
    if (!model || !f || this.#failed) {
      for (const p of batch) void this.#fallback.predict(p.request).then(p.resolve);
      return;
    }
    try {
      const row = new Float32Array(f.FEATURE_LENGTH);
      for (const p of batch) {
        row.fill(0);
        f.promptFeatures(p.request.promptText, p.request.maxTokens, p.request.messageCount, row);
        const features = f.sparseFeatures(row);
        const entry: CacheEntry = { logP50: model.predictLog(features, p.request.model), p90Offset: model.p90Offset(p.request.model), features };
        this.#cache.set(p.key, entry);
        p.resolve(this.#finish(p.request, entry.logP50, entry.p90Offset));
      }
    } catch (err) {
      // Requests already answered ignore the fallback.
      this.#fail(batch, err);
    }
  }

  #fail(batch: readonly Pending[], err: unknown): void {
    this.#options.onError?.(err);
    for (const p of batch) void this.#fallback.predict(p.request).then(p.resolve);
  }

  #finish(request: RoutingRequest, logP50: number, p90Offset: number): Prediction {
    const log = logP50 + this.bias(request.model);
    return capped(Math.expm1(log), Math.expm1(log + p90Offset), request.maxTokens, 'model');
  }
}

const keys = new WeakMap<RoutingRequest, string>();

/**
 * Model, max_tokens, message count and a hash of the prompt: what the prediction depends on, without
 * keeping the text. Computed once per request (predict and observe both need it).
 */
function cacheKey(request: RoutingRequest): string {
  let key = keys.get(request);
  if (key === undefined) {
    key = `${request.model}\u0000${request.maxTokens ?? ''}\u0000${request.messageCount}\u0000${hash('sha1', request.promptText, 'base64')}`;
    keys.set(request, key);
  }
  return key;
}

/** Observations packed for the worker: no dense matrix is built on the router's thread. */
function pack(rows: readonly Observation[], tail: number): PackedRows {
  const offsets = new Uint32Array(rows.length + 1);
  rows.forEach((o, r) => (offsets[r + 1] = offsets[r]! + o.hashed.length));
  const indices = new Uint16Array(offsets[rows.length]!);
  const tails = new Float32Array(rows.length * tail);
  rows.forEach((o, r) => {
    indices.set(o.hashed, offsets[r]!);
    tails.set(o.dense, r * tail);
  });
  return { indices, offsets, tails, targets: Float32Array.from(rows, (o) => o.target) };
}
