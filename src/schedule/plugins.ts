import type { Candidate } from '../types.js';
import type { Filter, Picker, Scored, Scorer } from './policy.js';

// Built-in filters and scorers give their batch form (`keepAll`, `scoreAll`) too: each loop is
// written out in its own plugin, because a loop shared between plugins would be one call site again
// (see Filter.keepAll).

const healthy = (candidate: Candidate): boolean => candidate.state.healthy;

/** Keeps backends the state store has not marked unhealthy. */
export const healthyFilter: Filter = Object.freeze<Filter>({
  name: 'healthy',
  keep: healthy,
  keepAll(candidates, _ctx, out) {
    for (let i = 0; i < candidates.length; i++) out[i] = healthy(candidates[i]!) ? 1 : 0;
  },
});

function load(candidate: Candidate): number {
  const load = (candidate.state.inFlight + candidate.queued) / candidate.backend.maxConcurrency;
  return 1 / (1 + load);
}

/** 1 for an idle backend, falling towards 0 as in-flight plus queued work grows past its concurrency. */
export const loadScorer: Scorer = Object.freeze<Scorer>({
  name: 'load',
  score: load,
  scoreAll(candidates, _ctx, out) {
    for (let i = 0; i < candidates.length; i++) out[i] = load(candidates[i]!);
  },
});

/** Highest score wins; ties go to a random one of the best, so equal backends share the work. */
export function maxScorePicker(): Picker {
  return {
    name: 'max-score',
    pick(scored, ctx) {
      let best = -1;
      let ties = 0;
      let chosen: Scored = scored[0]!;
      for (const entry of scored) {
        if (entry.score > best) {
          best = entry.score;
          chosen = entry;
          ties = 1;
        } else if (entry.score === best && ctx.rng() * ++ties < 1) {
          // Reservoir sampling keeps each tied entry with equal probability in one pass.
          chosen = entry;
        }
      }
      return chosen;
    },
  };
}

/** Cycles through the candidates it is given; the cursor is private to one policy instance. */
export function roundRobinPicker(): Picker {
  let cursor = 0;
  return {
    name: 'round-robin',
    pick(scored) {
      const entry = scored[cursor % scored.length]!;
      cursor = (cursor + 1) % 1_000_000_007;
      return entry;
    },
  };
}

export function randomPicker(): Picker {
  return {
    name: 'random',
    pick: (scored, ctx) => scored[Math.floor(ctx.rng() * scored.length)] ?? scored[0]!,
  };
}
