import { copyFile, mkdtemp, readFile, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { FEATURE_LENGTH, modelSlot, promptFeatures, promptTokenCount } from '../../src/predict/features.js';
import { defaultModelDir, ModelPredictor } from '../../src/predict/model-predictor.js';
import { parseRequest } from '../../src/request/parse.js';
import { VirtualClock } from '../../src/sim/virtual-clock.js';
import type { Prediction, RoutingRequest } from '../../src/types.js';

const request = (content: unknown, model = 'gpt-4-0314', maxTokens?: number): RoutingRequest =>
  parseRequest('chat.completions', Buffer.from(JSON.stringify({ model, messages: [{ role: 'user', content }], ...(maxTokens ? { max_tokens: maxTokens } : {}) })), {
    id: 'r',
    arrivalMs: 0,
    defaultTenant: 't',
    defaultSloClass: 'standard',
    header: () => undefined,
  });

async function copyModel(): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), 'freesh-model-'));
  for (const f of ['model.json', 'weights.bin', 'spec.json']) await copyFile(join(defaultModelDir(), f), join(dir, f));
  return dir;
}

describe('length features', () => {
  it('counts prompt tokens with a real BPE tokenizer, and estimates past 2,000 characters', () => {
    expect(promptTokenCount('Hello world, how are you?')).toBe(7);
    const long = 'word '.repeat(1_000);
    expect(promptTokenCount(long)).toBe(promptTokenCount(long.slice(0, 2_000)) + 750);
  });

  it('fills a fixed-length vector; the same text always gives the same vector', () => {
    const a = promptFeatures('Write a detailed essay about tides.', undefined);
    expect(a).toHaveLength(FEATURE_LENGTH);
    expect(promptFeatures('Write a detailed essay about tides.', undefined)).toEqual(a);
    expect(promptFeatures("Write a detailed essay about tides.", 50)).not.toEqual(a);
    expect(promptFeatures("Write a detailed essay about tides.", undefined, 3)).not.toEqual(a);
  });

  it('maps serving model names onto known ones, and anything else to the unknown slot', () => {
    const known = ['gpt-4-0314', 'mistral-7b-instruct-v0.1', 'claude-2'];
    expect(modelSlot('GPT-4-0314', known)).toBe(0);
    expect(modelSlot('mistral-7b-instruct', known)).toBe(1);
    expect(modelSlot('llama-3-70b', known)).toBe(3);
    expect(modelSlot('', known)).toBe(3);
  });
});

describe('ModelPredictor', () => {
  it('loads the shipped model and tells a one-word answer from an essay', async () => {
    const predictor = new ModelPredictor();
    expect(await predictor.ready()).toBe(true);
    const essay = await predictor.predict(request('Write a detailed, step by step tutorial on building a web server in Rust, with code examples.'));
    const short = await predictor.predict(request('Answer with one word: what is the capital of France?'));
    expect(essay.source).toBe('model');
    expect(essay.outputTokensP50).toBeGreaterThan(short.outputTokensP50);
    expect(essay.outputTokensP90).toBeGreaterThan(essay.outputTokensP50);
    await predictor.close();
  });

  it('caps by max_tokens, answers odd prompts, caches by prompt, and predicts 64 at once', async () => {
    const predictor = new ModelPredictor();
    await predictor.ready();
    expect((await predictor.predict(request('Write a novel.', 'gpt-4-0314', 20))).outputTokensP90).toBeLessThanOrEqual(20);
    for (const odd of ['', 'x'.repeat(1_000_000), [{ type: 'image_url', image_url: { url: 'data:image/png;base64,AAAA' } }]]) {
      const p = await predictor.predict(request(odd, 'some-unknown-model'));
      expect(p.source).toBe('model');
      expect(p.outputTokensP50).toBeGreaterThanOrEqual(1);
    }
    const first = await predictor.predict(request('Explain quicksort.'));
    expect(await predictor.predict(request('Explain quicksort.'))).toEqual(first);
    const many = await Promise.all(Array.from({ length: 64 }, (_, i) => predictor.predict(request(`Question number ${i}: explain topic ${i}.`))));
    expect(many.every((p) => p.source === 'model')).toBe(true);
    await predictor.close();
  });

  it.each([
    ['the median of its errors (the default)', {}],
    ['the mean of its errors', { calibration: 'mean', calibrationRate: 0.5 }],
  ] as const)("learns a serving model's bias from observed lengths: %s", async (_how, options) => {
    const predictor = new ModelPredictor(options);
    await predictor.ready();
    const r = request('Summarise the plot of Hamlet.', 'llama-3-70b');
    const before = await predictor.predict(r);
    for (let i = 0; i < 10; i++) predictor.observe(r, before.outputTokensP50 * 3);
    expect(predictor.bias('llama-3-70b')).toBeCloseTo(Math.log1p(before.outputTokensP50 * 3) - Math.log1p(before.outputTokensP50), 1);
    const after = await predictor.predict(r);
    expect(after.outputTokensP50).toBeGreaterThan(before.outputTokensP50 * 2.5);
    expect(predictor.bias('gpt-4-0314')).toBe(0);
    await predictor.close();
  });

  it('moves the median-based bias to the median of a heavy-tailed error stream, where the mean-based one follows the tail', async () => {
    const median = new ModelPredictor();
    const mean = new ModelPredictor({ calibration: 'mean' });
    const none = new ModelPredictor({ calibration: 'none' });
    await Promise.all([median.ready(), mean.ready(), none.ready()]);
    const errors: number[] = [];
    for (let i = 0; i < 100; i++) {
      const r = request(`Explain sorting algorithm number ${i}.`, 'llama-3-70b');
      // Four in five answers twice the uncorrected prediction; one in five a hundred times as long.
      const logP50 = Math.log1p((await none.predict(r)).outputTokensP50);
      const tokens = Math.round(Math.expm1(logP50) * (i % 5 === 4 ? 100 : 2));
      for (const p of [median, mean, none]) {
        await p.predict(r);
        p.observe(r, tokens);
      }
      errors.push(Math.log1p(tokens) - logP50);
    }
    const sorted = errors.slice(-64).sort((a, b) => a - b);
    const mid = (sorted[31]! + sorted[32]!) / 2;
    const meanError = errors.reduce((s, e) => s + e, 0) / errors.length;
    expect(mid).toBeCloseTo(Math.log(2), 1);
    expect(meanError).toBeGreaterThan(1.3);
    // The served predictions are rounded to whole tokens: the errors here are against them.
    expect(median.bias('llama-3-70b')).toBeCloseTo(mid, 1);
    expect(mean.bias('llama-3-70b')).toBeGreaterThan(1);
    expect(none.bias('llama-3-70b')).toBe(0);
    await Promise.all([median.close(), mean.close(), none.close()]);
  });

  it('refuses a median window or prior that is not a whole number', () => {
    expect(() => new ModelPredictor({ calibrationWindow: 0 })).toThrow(/window/);
    expect(() => new ModelPredictor({ calibrationPrior: 1.5 })).toThrow(/prior/);
  });

  it.each([
    ['on the calling thread (TypeScript sources)', async () => ModelPredictor],
    // The compiled build has the worker thread: `npm test` builds first.
    ['in a worker thread (the compiled build)', async () => (await import(new URL('../../dist/src/predict/model-predictor.js', import.meta.url).href)).ModelPredictor as typeof ModelPredictor],
  ])('fine-tunes %s on observed traffic and swaps the weights in only when they do better', async (_where, load) => {
    const Predictor = await load();
    const results: { swapped: boolean; maeBefore: number; maeAfter: number }[] = [];
    // A generous budget: each observation must find the model's prediction cached, and on a loaded
    // machine the default 20 ms would answer some with the heuristic before the model's pass ran.
    const predictor = new Predictor({ fineTuneEvery: 100, fineTuneIntervalMs: 0, fineTuneEpochs: 30, bufferSize: 400, calibration: 'none', budgetMs: 10_000, onFineTune: (r) => results.push(r) });
    await predictor.ready();
    // A traffic pattern the training data never showed: prompts about zebras get very long answers.
    const prompt = (i: number) => (i % 2 === 0 ? `Tell me about zebra herd number ${i}.` : `Tell me about the weather on day ${i}.`);
    const before = await predictor.predict(request(prompt(1_000)));
    for (let i = 0; i < 100; i++) {
      const r = request(prompt(i));
      await predictor.predict(r);
      predictor.observe(r, i % 2 === 0 ? 3_000 : 50);
    }
    await predictor.settled();
    expect(results).toHaveLength(1);
    expect(results[0]!.swapped).toBe(results[0]!.maeAfter < results[0]!.maeBefore);
    expect(results[0]!.swapped).toBe(true);
    const after = await predictor.predict(request(prompt(1_000)));
    expect(after.outputTokensP50).toBeGreaterThan(before.outputTokensP50);
    await predictor.close();
  });

  it('answers with the heuristic when the model cannot answer within budgetMs, and with the model again once it can', async () => {
    const predictor = new ModelPredictor({ budgetMs: 5 });
    await predictor.ready();
    const r = request('Explain how a hash map handles collisions.');
    // The model's pass runs on the event loop. Here the loop stays busy past the budget before that
    // pass gets its turn (as under a burst of requests), so the budget's timer comes first.
    const late = await new Promise<Prediction>((resolve) =>
      setImmediate(() => {
        resolve(predictor.predict(r));
        const busyUntil = performance.now() + 25;
        while (performance.now() < busyUntil);
      }),
    );
    expect(late.source).toBe('heuristic');
    expect((await predictor.predict(r)).source).toBe('model');
    await predictor.close();
  });

  it('spends its budget and its fine-tuning interval on the clock it is given', async () => {
    const clock = new VirtualClock();
    const rounds: unknown[] = [];
    const predictor = new ModelPredictor({ clock, budgetMs: 20, fineTuneEvery: 10, fineTuneIntervalMs: 60_000, fineTuneEpochs: 1, calibration: 'none', onFineTune: (r) => rounds.push(r) });
    await predictor.ready();
    // The budget runs out when the clock passes it, before the next turn of the event loop.
    const late = predictor.predict(request('Explain quicksort.'));
    clock.advance(20);
    expect((await late).source).toBe('heuristic');
    // However long the real wait, the model answers while the clock stands still.
    const waited = predictor.predict(request('Explain merge sort.'));
    await new Promise((resolve) => setTimeout(resolve, 40));
    expect((await waited).source).toBe('model');

    let n = 0;
    const observe = async (count: number) => {
      for (let i = 0; i < count; i++, n++) {
        const r = request(`Tell me about zebra herd number ${n}.`);
        await predictor.predict(r);
        predictor.observe(r, 3_000);
      }
      await predictor.settled();
    };
    await observe(60);
    clock.advanceTo(59_999);
    await observe(1);
    expect(rounds).toHaveLength(0); // enough observations, not yet a full interval of the clock's time
    clock.advanceTo(60_000);
    await observe(1);
    expect(rounds).toHaveLength(1);
    await observe(20);
    expect(rounds).toHaveLength(1); // the next round waits for the clock again
    clock.advance(60_000);
    await observe(10);
    expect(rounds).toHaveLength(2);
    await predictor.close();
  });

  it.each([
    ['missing', async (dir: string) => writeFile(join(dir, 'spec.json'), '').then(() => import('node:fs/promises')).then((fs) => fs.rm(join(dir, 'weights.bin'))), /cannot read the length model/],
    ['corrupt', async (dir: string) => writeFile(join(dir, 'weights.bin'), Buffer.from('garbage')), /corrupt/],
    [
      'of another feature version',
      async (dir: string) => {
        const spec = JSON.parse(await readFile(join(dir, 'spec.json'), 'utf8'));
        await writeFile(join(dir, 'spec.json'), JSON.stringify({ ...spec, featureVersion: 999 }));
      },
      /feature version 999.*retrain it/,
    ],
  ])('falls back to the heuristic, and says why, when the model is %s', async (_name, damage, message) => {
    const dir = await copyModel();
    await damage(dir);
    const errors: string[] = [];
    const predictor = new ModelPredictor({ dir, onError: (err) => errors.push(String(err)) });
    expect(await predictor.ready()).toBe(false);
    expect(errors).toHaveLength(1);
    expect(errors[0]).toMatch(message);
    const p = await predictor.predict(request('Explain quicksort.'));
    expect(p.source).toBe('heuristic');
    await predictor.close();
  });
});
