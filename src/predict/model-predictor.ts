import { createHash } from 'node:crypto';
import { existsSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { LRUCache } from 'lru-cache';
import type { Prediction, RoutingRequest } from '../types.js';
import type * as Features from './features.js';
import type { LengthModel } from './length-model.js';
import { capped, heuristicPredictor, type Predictor } from './predictor.js';

export interface ModelPredictorOptions {
  /** Folder of the trained model. Default: the package's models/length-v1. */
  readonly dir?: string;
  /** Most requests predicted in one network pass. Default 64. */
  readonly maxBatch?: number;
  /** A prediction not ready in this long falls back to the heuristic (ms). Default 20. */
  readonly budgetMs?: number;
  /** Predictions remembered by prompt hash. Default 10,000. */
  readonly cacheSize?: number;
  /** Weight of each new observation in a model's bias correction. Default 0.05 (about the last 20). */
  readonly calibrationRate?: number;
  /** Observations kept for fine-tuning (features only, never prompt text). Default 2,000. */
  readonly bufferSize?: number;
  /**
   * Fine-tune after this many new observations; 0 (the default) turns it off. A round runs on the
   * event loop and stalls requests while it trains (hundreds of ms for 2,000 rows): the overhead
   * benchmark fell from ~14,000 to 140 req/s with rounds every 500 requests. Off until it runs in a
   * worker thread.
   */
  readonly fineTuneEvery?: number;
  /** Epochs of each fine-tuning round (the CPU it may spend). Default 5. */
  readonly fineTuneEpochs?: number;
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

/** One observation for fine-tuning: the prompt's features in sparse form and its question effect. */
interface Observation {
  readonly hashed: Uint16Array;
  readonly dense: Float32Array;
  readonly target: number;
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
 * The trained length model behind the Predictor interface. Concurrent requests are predicted
 * together in one network pass (micro-batching, flushed on the next turn of the event loop or at
 * `maxBatch`); results are cached by prompt hash; anything that is not ready within `budgetMs`, or
 * a model that is missing or broken, falls back to the heuristic — a request never fails because
 * of the predictor. `observe` learns each serving model's bias from its true lengths at once (the
 * model in production may be one the training data never saw); with `fineTuneEvery` set, it also
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
  readonly #cache: LRUCache<string, { readonly logP50: number; readonly p90Offset: number }>;
  /** Per serving model: bias of log(1 + tokens), learnt from observations. */
  readonly #bias = new Map<string, number>();
  #model: LengthModel | undefined;
  /** Loaded with the model: TF.js and the tokenizer load only when a router uses this predictor. */
  #features: typeof Features | undefined;
  #failed = false;
  readonly #loading: Promise<void>;
  #pending: Pending[] = [];
  #scheduled = false;

  constructor(options: ModelPredictorOptions = {}) {
    this.#options = {
      maxBatch: options.maxBatch ?? 64,
      budgetMs: options.budgetMs ?? 20,
      cacheSize: options.cacheSize ?? 10_000,
      calibrationRate: options.calibrationRate ?? 0.05,
      bufferSize: options.bufferSize ?? 2_000,
      fineTuneEvery: options.fineTuneEvery ?? 0,
      fineTuneEpochs: options.fineTuneEpochs ?? 5,
      onError: options.onError,
      onFineTune: options.onFineTune,
    };
    this.#cache = new LRUCache({ max: this.#options.cacheSize });
    this.#loading = Promise.all([import('./length-model.js'), import('./features.js')])
      .then(async ([{ loadLengthModel }, features]) => {
        this.#model = await loadLengthModel(options.dir ?? defaultModelDir());
        this.#features = features;
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
      const timer = setTimeout(() => {
        settled = true;
        void this.#fallback.predict(request).then(resolve);
      }, this.#options.budgetMs);
      timer.unref?.();
      this.#pending.push({
        request,
        key,
        resolve: (prediction) => {
          if (settled) return;
          settled = true;
          clearTimeout(timer);
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
    // The error against the uncorrected prediction: the bias converges to the mean log error.
    const error = Math.log1p(outputTokens) - hit.logP50;
    const model = request.model.toLowerCase();
    const bias = this.#bias.get(model) ?? 0;
    this.#bias.set(model, bias + this.#options.calibrationRate * (error - bias));
    if (this.#options.fineTuneEvery > 0 && this.#model && this.#features) this.#remember(request, outputTokens);
  }

  /** Resolves when the fine-tuning round in progress (if any) has finished. */
  settled(): Promise<void> {
    return this.#tuning ?? Promise.resolve();
  }

  /**
   * Keeps the features (not the text) and the question effect the observation implies, and starts a
   * background fine-tuning round every `fineTuneEvery` observations.
   */
  #remember(request: RoutingRequest, outputTokens: number): void {
    const f = this.#features!;
    const model = this.#model!;
    const row = f.promptFeatures(request.promptText, request.maxTokens, request.messageCount);
    const hashed: number[] = [];
    for (let i = 0; i < f.HASH_BUCKETS; i++) if (row[i] !== 0) hashed.push(i);
    const target = Math.log1p(outputTokens) - model.verbosity(request.model) - this.bias(request.model);
    this.#buffer.push({ hashed: Uint16Array.from(hashed), dense: row.slice(f.HASH_BUCKETS), target });
    if (this.#buffer.length > this.#options.bufferSize) this.#buffer = this.#buffer.slice(-this.#options.bufferSize);
    if (++this.#sinceTuning >= this.#options.fineTuneEvery && !this.#tuning && this.#buffer.length >= 50) {
      this.#sinceTuning = 0;
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
    const rows = this.#buffer;
    const cut = Math.floor(rows.length * 0.8);
    const dense = (part: readonly Observation[]) => {
      const out = new Float32Array(part.length * f.FEATURE_LENGTH);
      part.forEach((o, i) => {
        for (const j of o.hashed) out[i * f.FEATURE_LENGTH + j] = 1;
        out.set(o.dense, i * f.FEATURE_LENGTH + f.HASH_BUCKETS);
      });
      return out;
    };
    const train = rows.slice(0, cut);
    const check = rows.slice(cut);
    const checkFeatures = dense(check);
    const mae = async (m: LengthModel) => {
      const effects = await m.questionEffects(checkFeatures, check.length);
      return check.reduce((s, o, i) => s + Math.abs(effects[i]! - o.target), 0) / check.length;
    };
    try {
      const candidate = current.clone();
      await candidate.fineTune(dense(train), Float32Array.from(train, (o) => o.target), this.#options.fineTuneEpochs);
      const [before, after] = [await mae(current), await mae(candidate)];
      const swapped = after < before && this.#model === current;
      if (swapped) {
        this.#model = candidate;
        this.#cache.clear();
        current.dispose();
      } else candidate.dispose();
      this.#options.onFineTune?.({ maeBefore: before, maeAfter: after, swapped, samples: rows.length });
    } catch (err) {
      this.#options.onError?.(err);
    }
  }

  /** The learnt bias correction of a serving model (log space). */
  bias(model: string): number {
    return this.#bias.get(model.toLowerCase()) ?? 0;
  }

  async close(): Promise<void> {
    await this.#loading;
    await this.settled();
    this.#model?.dispose();
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
      const features = new Float32Array(batch.length * f.FEATURE_LENGTH);
      batch.forEach((p, i) => f.promptFeatures(p.request.promptText, p.request.maxTokens, p.request.messageCount, features, i * f.FEATURE_LENGTH));
      model.predictLog(features, batch.map((p) => p.request.model)).then(
        (logs) => {
          batch.forEach((p, i) => {
            const entry = { logP50: logs[i]!, p90Offset: model.p90Offset(p.request.model) };
            this.#cache.set(p.key, entry);
            p.resolve(this.#finish(p.request, entry.logP50, entry.p90Offset));
          });
        },
        (err: unknown) => this.#fail(batch, err),
      );
    } catch (err) {
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
    key = `${request.model}\u0000${request.maxTokens ?? ''}\u0000${request.messageCount}\u0000${createHash('sha1').update(request.promptText).digest('base64')}`;
    keys.set(request, key);
  }
  return key;
}
