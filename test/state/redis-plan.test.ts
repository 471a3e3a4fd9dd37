import { describe, expect, it } from 'vitest';
import { DEFAULT_FREQUENCY_MODEL } from '../../src/cost/frequency.js';
import { BUILTIN_PROFILES } from '../../src/cost/profiles.js';
import type { Plan } from '../../src/plan/plan.js';
import { PoolPlanner } from '../../src/plan/pool-planner.js';
import { inThreadSolver } from '../../src/plan/solver.js';
import { systemClock } from '../../src/clock.js';
import { DEFAULT_SLO_CLASSES } from '../../src/request/slo.js';
import { RedisStateStore } from '../../src/state/redis.js';
import type { Backend } from '../../src/types.js';
import { backend } from '../helpers/fixtures.js';
import { deleteFleet, freshPrefix, redisForFile } from '../helpers/redis-server.js';

/** Replicas' planners on one real Redis: one plans per step, the others follow its plan within a second. */
const redis = redisForFile();
const { cleanups } = redis;

const at = (id: string, siteId: string): Backend =>
  backend(id, { site: { id: siteId, region: siteId, gramsPerKWh: 0, pue: 1.2 }, maxConcurrency: 32, profile: BUILTIN_PROFILES['4xA100']! });

const STEP_MS = 500;

describe('pool planners of replicas sharing one Redis', () => {
  it('one replica plans each step and the others follow its plan within a second; when it stops, another takes over', async () => {
    const keyPrefix = freshPrefix();
    cleanups.push(() => deleteFleet(redis.server().url, keyPrefix));
    const received = new Map<string, { plan: Plan; atMs: number }[]>();
    const replica = (replicaId: string) => {
      const store = new RedisStateStore(redis.server().url, { keyPrefix });
      const plans: { plan: Plan; atMs: number }[] = [];
      received.set(replicaId, plans);
      const planner = new PoolPlanner({
        backends: [at('clean', 'fr'), at('dirty', 'de')],
        clock: systemClock,
        carbon: { gramsPerKWh: (s) => (s === 'fr' ? 50 : 500) },
        store,
        stepMs: STEP_MS,
        windowMs: 60_000,
        objective: 'carbon',
        clockLevels: [1, 0.85, 0.7],
        margin: 1.1,
        maxUtilisation: 0.8,
        slo: DEFAULT_SLO_CLASSES.standard!,
        frequency: DEFAULT_FREQUENCY_MODEL,
        solver: inThreadSolver(),
        onPlan: (plan) => plans.push({ plan, atMs: Date.now() }),
        replicaId,
      });
      cleanups.push(() => store.close(), () => planner.stop());
      return planner;
    };
    const planners = ['a', 'b', 'c'].map(replica);
    await Promise.all(planners.map((p) => p.start()));
    const now = systemClock.now();
    for (const p of planners) for (let t = 0; t < 50; t++) p.observe('SS', 500, 120, now - t * 100);
    await until(() => [...received.values()].every((plans) => plans.length >= 2), 10_000);

    // Each step's plan was made by one replica and reached the others within a second.
    const planned = [...received.entries()].flatMap(([by, plans]) => plans.filter((p) => !p.plan.note.includes('(planned by')).map((p) => ({ by, ...p })));
    const leaders = new Set(planned.map((p) => p.by));
    expect(leaders.size).toBe(1);
    const leader = [...leaders][0]!;
    const first = planned[0]!;
    for (const [by, plans] of received) {
      if (by === leader) continue;
      const followed = plans.find((p) => p.plan.note === `${first.plan.note} (planned by ${leader})`);
      expect(followed).toBeDefined();
      expect(followed!.atMs - first.atMs).toBeLessThan(1_000);
      expect([...followed!.plan.active]).toEqual([...first.plan.active]);
    }

    // The leader stops (its lease is given up): another replica plans the next step.
    await planners[['a', 'b', 'c'].indexOf(leader)]!.stop();
    const since = Date.now();
    await until(
      () => [...received.entries()].some(([by, plans]) => by !== leader && plans.some((p) => p.atMs > since && !p.plan.note.includes('(planned by'))),
      10_000,
    );
  }, 30_000);
});

async function until(check: () => boolean, timeoutMs: number): Promise<void> {
  const end = Date.now() + timeoutMs;
  while (!check()) {
    if (Date.now() > end) throw new Error('condition not met in time');
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
}
