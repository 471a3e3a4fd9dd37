import type { Candidate } from '../types.js';
import type { DecisionContext, Policy, Scored } from './policy.js';

export interface PluginError {
  /** `filter:NAME`, `scorer:NAME` or `picker:NAME`. */
  readonly plugin: string;
  readonly message: string;
}

export interface CandidateTrace {
  readonly backend: string;
  /** Name of the filter that dropped it, if one did. */
  readonly droppedBy?: string;
  readonly scores?: Readonly<Record<string, number>>;
  readonly score?: number;
}

/** What a decision looked like, recorded only when asked for (it costs allocations and clock reads). */
export interface DecisionTrace {
  readonly policy: string;
  readonly candidates: readonly CandidateTrace[];
  /** Time spent in each plugin, microseconds. */
  readonly pluginUs: Readonly<Record<string, number>>;
  readonly picked: string | undefined;
  /** Plugins that threw; their verdicts were replaced by safe defaults. */
  readonly errors: readonly PluginError[];
  readonly relaxed: readonly string[];
}

export interface Decision {
  readonly picked: Scored | undefined;
  /** Why nothing was picked: the filter that removed the last candidates. */
  readonly emptiedBy: string | undefined;
  /** Plugins that threw or misbehaved in this decision. */
  readonly errors: readonly PluginError[];
  /** Soft filters that would have removed every candidate, and so were not applied. */
  readonly relaxed: readonly string[];
  readonly trace: DecisionTrace | undefined;
}

/**
 * Runs a policy over candidates and enforces the plugin contracts: a throwing filter keeps the
 * candidate, a throwing or out-of-range scorer counts as 0 (clamped to [0, 1]), a throwing picker
 * falls back to the highest score. Plugins stay pure; this is the one place that guards them.
 *
 * Linear in the candidates, and allocation-light: one array per filter, one running sum per
 * candidate and one `Scored` per candidate at the end. An entry per candidate per scorer, and a
 * closure per filter, made the decision's garbage grow with scorers × candidates (bench:decision,
 * 1,000 backends: see bench/README.md).
 */
export function decide(policy: Policy, candidates: readonly Candidate[], ctx: DecisionContext, trace = false): Decision {
  let errors: PluginError[] | undefined;
  const pluginUs: Record<string, number> | undefined = trace ? {} : undefined;
  const dropped = trace ? new Map<Candidate, string>() : undefined;
  const started = (): number => (pluginUs ? performance.now() : 0);
  const time = (name: string, since: number): void => {
    if (pluginUs) pluginUs[name] = (pluginUs[name] ?? 0) + (performance.now() - since) * 1000;
  };

  let kept = candidates;
  let emptiedBy: string | undefined;
  let relaxed: string[] | undefined;
  for (const filter of policy.filters) {
    const since = started();
    const next: Candidate[] = [];
    for (let i = 0; i < kept.length; i++) {
      const candidate = kept[i]!;
      let keep = true;
      try {
        keep = filter.keep(candidate, ctx);
      } catch (err) {
        (errors ??= []).push({ plugin: `filter:${filter.name}`, message: (err as Error).message });
      }
      if (keep) next.push(candidate);
      else dropped?.set(candidate, filter.name);
    }
    time(`filter:${filter.name}`, since);
    if (next.length === 0 && kept.length > 0) {
      if (filter.soft) {
        (relaxed ??= []).push(filter.name);
        if (dropped) for (const c of kept) dropped.delete(c);
        continue;
      }
      emptiedBy = filter.name;
    }
    kept = next;
  }

  const perScorer = trace ? new Map<Candidate, Record<string, number>>() : undefined;
  let scorers = policy.scorers;
  if (relaxed) for (const name of relaxed) scorers = policy.whenRelaxed?.[name] ?? scorers;
  let totalWeight = 0;
  for (const s of scorers) totalWeight += s.weight;
  // Each candidate's weighted sum, added scorer by scorer in the policy's order (the same
  // floating-point sums as one entry per scorer gave).
  const sums = new Float64Array(kept.length);
  for (const { scorer, weight } of scorers) {
    const since = started();
    for (let i = 0; i < kept.length; i++) {
      const candidate = kept[i]!;
      let value = 0;
      try {
        value = clamp01(scorer.score(candidate, ctx));
      } catch (err) {
        (errors ??= []).push({ plugin: `scorer:${scorer.name}`, message: (err as Error).message });
      }
      if (perScorer) (perScorer.get(candidate) ?? perScorer.set(candidate, {}).get(candidate)!)[scorer.name] = value;
      sums[i] = sums[i]! + (weight * value) / totalWeight;
    }
    time(`scorer:${scorer.name}`, since);
  }
  const scored: Scored[] = new Array<Scored>(kept.length);
  for (let i = 0; i < kept.length; i++) scored[i] = { candidate: kept[i]!, score: sums[i]! };

  let picked: Scored | undefined;
  if (scored.length > 0) {
    const since = started();
    try {
      picked = policy.picker.pick(scored, ctx);
      if (!scored.includes(picked)) throw new Error('returned an entry it was not given');
    } catch (err) {
      (errors ??= []).push({ plugin: `picker:${policy.picker.name}`, message: (err as Error).message });
      picked = scored.reduce((a, b) => (b.score > a.score ? b : a));
    }
    time(`picker:${policy.picker.name}`, since);
  }

  const errorList: readonly PluginError[] = errors ?? NONE;
  const relaxedList: readonly string[] = relaxed ?? NONE;
  return {
    picked,
    emptiedBy,
    errors: errorList,
    relaxed: relaxedList,
    trace: pluginUs
      ? {
          policy: policy.name,
          candidates: candidates.map((c) => {
            const by = dropped?.get(c);
            const entry = scored.find((s) => s.candidate === c);
            return by ? { backend: c.backend.id, droppedBy: by } : { backend: c.backend.id, scores: perScorer?.get(c) ?? {}, score: entry?.score ?? 0 };
          }),
          pluginUs,
          picked: picked?.candidate.backend.id,
          errors: errorList,
          relaxed: relaxedList,
        }
      : undefined,
  };
}

/** Shared by every decision without errors or relaxed filters: read-only, so it is frozen. */
const NONE: readonly never[] = Object.freeze([]);

function clamp01(value: number): number {
  if (!(value > 0)) return 0; // also NaN
  return value > 1 ? 1 : value;
}
