import { carbonGreedy, leastLoadedPlanned } from './baselines.js';
import { freesh, freeshPublished } from './freesh.js';
import type { Policy } from './policy.js';
import { healthyFilter, loadScorer, maxScorePicker, randomPicker, roundRobinPicker } from './plugins.js';

/** Makes a fresh policy (pickers may hold state, so each router gets its own). */
export type PolicyFactory = () => Policy;

export const BUILTIN_POLICIES: Readonly<Record<string, PolicyFactory>> = Object.freeze({
  'round-robin': () => ({ name: 'round-robin', filters: [healthyFilter], scorers: [], picker: roundRobinPicker() }),
  random: () => ({ name: 'random', filters: [healthyFilter], scorers: [], picker: randomPicker() }),
  freesh,
  'freesh-published': freeshPublished,
  'least-loaded': () => ({
    name: 'least-loaded',
    filters: [healthyFilter],
    scorers: [{ scorer: loadScorer, weight: 1 }],
    picker: maxScorePicker(),
  }),
  'least-loaded-planned': leastLoadedPlanned,
  'carbon-greedy': carbonGreedy,
});

export const DEFAULT_POLICY = 'freesh';
