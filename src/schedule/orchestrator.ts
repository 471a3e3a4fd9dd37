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
 */
export function decide(policy: Policy, candidates: readonly Candidate[], ctx: DecisionContext, trace = false): Decision {
  const errors: PluginError[] = [];
  const pluginUs: Record<string, number> = {};
  const dropped = trace ? new Map<Candidate, string>() : undefined;
  const time = trace ? (name: string, started: number) => { pluginUs[name] = (pluginUs[name] ?? 0) + (performance.now() - started) * 1000; } : undefined;

  let kept = candidates;
  let emptiedBy: string | undefined;
  const relaxed: string[] = [];
  for (const filter of policy.filters) {
    const started = time ? performance.now() : 0;
    const next = kept.filter((candidate) => {
      let keep = true;
      try {
        keep = filter.keep(candidate, ctx);
      } catch (err) {
        errors.push({ plugin: `filter:${filter.name}`, message: (err as Error).message });
      }
      if (!keep) dropped?.set(candidate, filter.name);
      return keep;
    });
    time?.(`filter:${filter.name}`, started);
    if (next.length === 0 && kept.length > 0) {
      if (filter.soft) {
        relaxed.push(filter.name);
        if (dropped) for (const c of kept) dropped.delete(c);
        continue;
      }
      emptiedBy = filter.name;
    }
    kept = next;
  }

  const perScorer = trace ? new Map<Candidate, Record<string, number>>() : undefined;
  let scorers = policy.scorers;
  for (const name of relaxed) scorers = policy.whenRelaxed?.[name] ?? scorers;
  const totalWeight = scorers.reduce((sum, s) => sum + s.weight, 0);
  const scored: Scored[] = kept.map((candidate) => ({ candidate, score: 0 }));
  for (const { scorer, weight } of scorers) {
    const started = time ? performance.now() : 0;
    for (let i = 0; i < scored.length; i++) {
      const entry = scored[i]!;
      let value = 0;
      try {
        value = clamp01(scorer.score(entry.candidate, ctx));
      } catch (err) {
        errors.push({ plugin: `scorer:${scorer.name}`, message: (err as Error).message });
      }
      if (perScorer) (perScorer.get(entry.candidate) ?? perScorer.set(entry.candidate, {}).get(entry.candidate)!)[scorer.name] = value;
      scored[i] = { candidate: entry.candidate, score: entry.score + (weight * value) / totalWeight };
    }
    time?.(`scorer:${scorer.name}`, started);
  }

  let picked: Scored | undefined;
  if (scored.length > 0) {
    const started = time ? performance.now() : 0;
    try {
      picked = policy.picker.pick(scored, ctx);
      if (!scored.includes(picked)) throw new Error('returned an entry it was not given');
    } catch (err) {
      errors.push({ plugin: `picker:${policy.picker.name}`, message: (err as Error).message });
      picked = scored.reduce((a, b) => (b.score > a.score ? b : a));
    }
    time?.(`picker:${policy.picker.name}`, started);
  }

  return {
    picked,
    emptiedBy,
    errors,
    relaxed,
    trace: trace
      ? {
          policy: policy.name,
          candidates: candidates.map((c) => {
            const by = dropped?.get(c);
            const entry = scored.find((s) => s.candidate === c);
            return by ? { backend: c.backend.id, droppedBy: by } : { backend: c.backend.id, scores: perScorer?.get(c) ?? {}, score: entry?.score ?? 0 };
          }),
          pluginUs,
          picked: picked?.candidate.backend.id,
          errors,
          relaxed,
        }
      : undefined,
  };
}

function clamp01(value: number): number {
  if (!(value > 0)) return 0; // also NaN
  return value > 1 ? 1 : value;
}
