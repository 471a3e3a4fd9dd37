import type { Candidate } from '../types.js';
import { plannedFilter } from './freesh.js';
import { healthyFilter, loadScorer, maxScorePicker } from './plugins.js';
import type { DecisionContext, Filter, Policy, Scorer } from './policy.js';

/**
 * The rules an operator would run without freesh, as policies of the same router, so that every
 * comparison runs on the same pipeline, queues and transport and differs only in the decision.
 */

/** Keeps backends whose in-flight plus queued work is below `share` of their concurrency (soft: when none is, all stay). */
export function headroomFilter(share: number): Filter {
  if (!(share > 0 && share <= 1)) throw new RangeError(`Expected \`share\` in (0, 1], got \`${share}\``);
  const roomy = (c: Candidate): boolean => c.state.inFlight + c.queued < share * c.backend.maxConcurrency;
  return Object.freeze<Filter>({
    name: 'headroom',
    soft: true,
    keep: roomy,
    keepAll(candidates, _ctx, out) {
      for (let i = 0; i < candidates.length; i++) out[i] = roomy(candidates[i]!) ? 1 : 0;
    },
  });
}

/** The site's carbon intensity now, as the cost model priced it: grams per joule of this request. */
function intensity(c: Candidate): number {
  return c.cost.energyJ > 0 ? c.cost.carbonG / c.cost.energyJ : 0;
}

function cleanest(ctx: DecisionContext): number {
  let best = Number.POSITIVE_INFINITY;
  for (const c of ctx.candidates) best = Math.min(best, intensity(c));
  return best;
}

function relative(value: number, best: number): number {
  return value <= 0 ? 1 : best / value;
}

/** 1 for the candidates on the cleanest grid now, best / intensity for the others: the site, not the request's energy. */
export const cleanSiteScorer: Scorer = Object.freeze<Scorer>({
  name: 'clean-site',
  score: (candidate, ctx) => relative(intensity(candidate), cleanest(ctx)),
  scoreAll(candidates, ctx, out) {
    const best = cleanest(ctx);
    for (let i = 0; i < candidates.length; i++) out[i] = relative(intensity(candidates[i]!), best);
  },
});

/** Least-loaded among the backends freesh's pool planner keeps on, at the clocks it sets. */
export const leastLoadedPlanned = (): Policy => ({
  name: 'least-loaded-planned',
  filters: [healthyFilter, plannedFilter],
  scorers: [{ scorer: loadScorer, weight: 1 }],
  picker: maxScorePicker(),
  planner: { clockScaling: true },
});

/**
 * Carbon-greedy: the cleanest site that has a backend below half its concurrency, least-loaded
 * within it (the load score only breaks ties between equally clean backends). Run it with idle
 * shutdown of instances (e.g. after 5 idle minutes) for the energy side an operator would add.
 */
export const carbonGreedy = (): Policy => ({
  name: 'carbon-greedy',
  filters: [healthyFilter, headroomFilter(0.5)],
  scorers: [
    { scorer: cleanSiteScorer, weight: 1 },
    { scorer: loadScorer, weight: 1e-3 },
  ],
  picker: maxScorePicker(),
});
