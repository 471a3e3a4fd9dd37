import { afterEach, describe, expect, it } from 'vitest';
import { post } from '../helpers/servers.js';
import { chat, expectNothingLeaked, faultBackend, faultProxy } from './fault-backend.js';

const cleanup: (() => unknown)[] = [];
afterEach(async () => {
  for (const fn of cleanup.splice(0).reverse()) await fn();
});

/**
 * `busy` answers 503 (it did not take the request, so failover may send it elsewhere); `good`
 * answers after 300 ms, so each retry stays in progress that long and the budget's use does not
 * depend on timing. Failures never eject here, and probes pass: only the budget decides.
 */
async function busyAndSlow(health: Record<string, number>) {
  const [busy, good] = [await faultBackend('busy', 'busy-503'), await faultBackend('good')];
  good.delayMs = 300;
  const f = await faultProxy([busy, good], cleanup, { health: { consecutiveFailures: 1_000, ...health } });
  return { busy, good, f };
}

/** A counter's value for backend `busy` (0 before its first increment). */
async function sample(metric: (name: string) => Promise<string>, name: string): Promise<number> {
  const match = new RegExp(`${name}\\{backend="busy"\\} (\\d+)`).exec(await metric(name));
  return Number(match?.[1] ?? 0);
}

/** `n` requests for `m` at once; round-robin sends about half to `busy` first. */
const atOnce = (url: string, n: number) => Promise.all(Array.from({ length: n }, () => post(`${url}/v1/chat/completions`, chat('m'))));

describe('the retry budget', () => {
  it('retries in progress are capped (here at one): the others get the 503 their backend gave, and /metrics counts both', async () => {
    const { busy, good, f } = await busyAndSlow({ retryBudgetPercent: 0, retryBudgetMin: 1 });
    const answers = await atOnce(f.proxy.url, 6);
    // Every 503 arrives within the 300 ms the one retry stays in progress: the first is retried, the rest are not.
    const turnedAway = busy.completions;
    expect(turnedAway).toBeGreaterThanOrEqual(2);
    expect(good.completions).toBe(6 - turnedAway + 1);
    expect(answers.filter((a) => a.status === 200)).toHaveLength(6 - turnedAway + 1);
    const refused = answers.filter((a) => a.status !== 200);
    expect(refused).toHaveLength(turnedAway - 1);
    for (const r of refused) {
      expect(r.status).toBe(502);
      expect(r.json().error).toMatchObject({ code: 'upstream_error', message: expect.stringContaining('busy answered 503: {"error":{"message":"server overloaded"}}') });
    }
    expect(await f.metric('freesh_retries_total')).toContain('freesh_retries_total{backend="busy"} 1');
    expect(await f.metric('freesh_retry_budget_exhausted_total')).toContain(`freesh_retry_budget_exhausted_total{backend="busy"} ${turnedAway - 1}`);
    await expectNothingLeaked(f);
  });

  it('the default floor (three retries in progress) lets three at once through', async () => {
    const { busy, good, f } = await busyAndSlow({});
    const answers = await atOnce(f.proxy.url, 3);
    expect(answers.map((a) => a.status)).toEqual(Array(3).fill(200));
    expect(busy.completions).toBeGreaterThanOrEqual(1);
    expect(good.completions).toBe(3);
    expect(await f.metric('freesh_retries_total')).toContain(`freesh_retries_total{backend="busy"} ${busy.completions}`);
    expect(await f.metric('freesh_retry_budget_exhausted_total')).not.toContain('backend=');
    await expectNothingLeaked(f);
  });

  it('grows with the requests in flight: 50% of at most 8 in flight allows at most four, and no floor', async () => {
    const { busy, f } = await busyAndSlow({ retryBudgetPercent: 50, retryBudgetMin: 0 });
    const answers = await atOnce(f.proxy.url, 8);
    const retried = await sample(f.metric, 'freesh_retries_total');
    // In flight when the 503s come back: all eight, or nearly (they arrive within a few ms of each other).
    expect(retried).toBeGreaterThanOrEqual(1);
    expect(retried).toBeLessThanOrEqual(Math.min(busy.completions, 4));
    expect(answers.filter((a) => a.status === 200)).toHaveLength(8 - busy.completions + retried);
    expect(await sample(f.metric, 'freesh_retry_budget_exhausted_total')).toBe(busy.completions - retried);
    await expectNothingLeaked(f);
  });
});
