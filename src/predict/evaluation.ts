import type { LengthExample } from './dataset.js';

/** How well predicted lengths match true ones on held-out questions. */
export interface LengthMetrics {
  /** Kendall's τ-b between predicted and true lengths, per answering model over the held-out questions, averaged over models. */
  readonly kendallTau: number;
  /** Mean absolute error of log(1 + tokens). */
  readonly maeLog1p: number;
  /** Mean of the recalls of the short and long classes (long at ≥ 444 tokens), predicting with the p50. */
  readonly shortLongAccuracy: number;
}

export const LONG_TOKENS = 444;

/** Scores predictions (p50 tokens, one per example) against the examples' true lengths. */
export function lengthMetrics(examples: readonly LengthExample[], predicted: readonly number[]): LengthMetrics {
  const byModel = new Map<string, { truth: number[]; guess: number[] }>();
  let absLog = 0;
  let longHit = 0;
  let longAll = 0;
  let shortHit = 0;
  let shortAll = 0;
  examples.forEach((e, i) => {
    const p = predicted[i]!;
    absLog += Math.abs(Math.log1p(p) - Math.log1p(e.outputTokens));
    const long = e.outputTokens >= LONG_TOKENS;
    const guessLong = p >= LONG_TOKENS;
    if (long) {
      longAll++;
      if (guessLong) longHit++;
    } else {
      shortAll++;
      if (!guessLong) shortHit++;
    }
    let m = byModel.get(e.model);
    if (!m) byModel.set(e.model, (m = { truth: [], guess: [] }));
    m.truth.push(e.outputTokens);
    m.guess.push(p);
  });
  const taus = [...byModel.values()].map((m) => kendallTauB(m.guess, m.truth));
  return {
    kendallTau: taus.reduce((s, t) => s + t, 0) / Math.max(1, taus.length),
    maeLog1p: absLog / Math.max(1, examples.length),
    shortLongAccuracy: ((longAll ? longHit / longAll : 0) + (shortAll ? shortHit / shortAll : 0)) / 2,
  };
}

/** Kendall's τ-b (ties corrected); 0 when either side is constant. O(n²): fine for hundreds. */
export function kendallTauB(x: readonly number[], y: readonly number[]): number {
  let concordant = 0;
  let discordant = 0;
  let tiesX = 0;
  let tiesY = 0;
  for (let i = 0; i < x.length; i++) {
    for (let j = i + 1; j < x.length; j++) {
      const dx = Math.sign(x[i]! - x[j]!);
      const dy = Math.sign(y[i]! - y[j]!);
      if (dx === 0 && dy === 0) continue;
      if (dx === 0) tiesX++;
      else if (dy === 0) tiesY++;
      else if (dx === dy) concordant++;
      else discordant++;
    }
  }
  const denominator = Math.sqrt((concordant + discordant + tiesX) * (concordant + discordant + tiesY));
  return denominator === 0 ? 0 : (concordant - discordant) / denominator;
}

/** Baseline: each model's mean log length on the training set (unknown models: the overall mean). */
export function perModelMeanBaseline(train: readonly LengthExample[]): (e: LengthExample) => number {
  const sums = new Map<string, { s: number; n: number }>();
  let total = 0;
  for (const e of train) {
    const m = sums.get(e.model) ?? { s: 0, n: 0 };
    m.s += Math.log1p(e.outputTokens);
    m.n++;
    sums.set(e.model, m);
    total += Math.log1p(e.outputTokens);
  }
  const overall = total / Math.max(1, train.length);
  return (e) => {
    const m = sums.get(e.model);
    return Math.expm1(m ? m.s / m.n : overall);
  };
}

/** Baseline: least-squares line of log length against log prompt length, pooled over models. */
export function promptLengthBaseline(train: readonly LengthExample[], promptTokens: (e: LengthExample) => number): (e: LengthExample) => number {
  const xs = train.map((e) => Math.log1p(promptTokens(e)));
  const ys = train.map((e) => Math.log1p(e.outputTokens));
  const mx = xs.reduce((s, v) => s + v, 0) / xs.length;
  const my = ys.reduce((s, v) => s + v, 0) / ys.length;
  let sxy = 0;
  let sxx = 0;
  xs.forEach((x, i) => {
    sxy += (x - mx) * (ys[i]! - my);
    sxx += (x - mx) ** 2;
  });
  const slope = sxx === 0 ? 0 : sxy / sxx;
  return (e) => Math.expm1(my + slope * (Math.log1p(promptTokens(e)) - mx));
}
