import { afterEach, describe, expect, it } from 'vitest';
import { GpuAgent } from '../../src/agent/agent.js';
import { FakeGpuDriver } from '../../src/agent/fake-gpu.js';
import { type CostInput, createCostModel, type CostModel } from '../../src/cost/cost-model.js';
import { BUILTIN_PROFILES } from '../../src/cost/profiles.js';
import { MemoryStateStore } from '../../src/state/memory-store.js';
import { chatBody, fleetConfig, post, proxyFor, until, upstream } from '../helpers/servers.js';

/**
 * The agent with the fake driver end to end with the real router (HTTP proxy, real upstream
 * server) on one in-process store: the plan's clock floor published in the store reaches the agent,
 * the router's SLO signal drives the controller, and the agent's measured power reaches the
 * router's cost model.
 */
const cleanups: (() => unknown)[] = [];
afterEach(async () => {
  for (const fn of cleanups.splice(0).reverse()) await fn();
});

const completion = JSON.stringify({
  id: 'c1', object: 'chat.completion', created: 0, model: 'm',
  choices: [{ index: 0, message: { role: 'assistant', content: 'ok' }, finish_reason: 'stop' }],
  usage: { prompt_tokens: 5, completion_tokens: 1, total_tokens: 6 },
});

describe('freesh agent with the router on one store', () => {
  it('follows the plan floor and the SLO signal, and its power reaches the cost model', async () => {
    let delayMs = 0;
    const backend = await upstream((_req, res) => {
      setTimeout(() => res.writeHead(200, { 'content-type': 'application/json' }).end(completion), delayMs);
    });
    cleanups.push(() => backend.close());
    const store = new MemoryStateStore();
    // The router's own cost model, recording what it is given about power.
    const inner = createCostModel();
    const powerFactors: number[] = [];
    const costModel: CostModel = { estimate: (input: CostInput) => (powerFactors.push(input.powerFactor ?? 1), inner.estimate(input)) };
    const proxy = await proxyFor(
      fleetConfig([{ id: 'b0', baseURL: backend.baseURL }], { policy: 'least-loaded', plan: { enabled: false }, agent: { sloSignalMs: 50, measuredPowerFreshMs: 5_000 } }),
      { store, costModel },
    );
    cleanups.push(() => proxy.shutdown(0));
    // Without an agent the profile's power stands.
    expect((await post(`${proxy.url}/v1/chat/completions`, chatBody({ max_tokens: 1 }))).status).toBe(200);
    expect(powerFactors).toEqual([1]);

    // The published plan (as the planner of any replica publishes it) runs b0 at 0.9 of its clock.
    await store.publishPlan({ origin: 'planner', status: 'ok', active: ['b0'], clockFraction: { b0: 0.9 }, shares: {}, forecastRps: {}, objectiveRate: 0, note: '' });
    // The fake GPUs draw the 2×H100's power; the router's profile for b0 is the 2×A100's (the default mode).
    const driver = new FakeGpuDriver({ count: 2, profile: BUILTIN_PROFILES['2xH100'] });
    const agent = new GpuAgent({ driver, store, nodeId: 'n1', backends: new Map([[0, 'b0'], [1, 'b0']]), miad: { periodMs: 50, staleAfterMs: 500 }, log: () => undefined });
    await agent.start();
    cleanups.push(() => agent.stop());

    // Idle: the router publishes "nothing in flight", the agent lowers to the floor, 0.9 × 1980 → 1785.
    await until(() => agent.gpus.every((g) => g.appliedMHz === 1785), 10_000);
    expect(agent.gpus[0]!.floorMHz).toBe(1785);
    expect(driver.commands.filter((c) => c.startsWith('-i 0 -lgc')).at(-1)).toBe('-i 0 -lgc 345,1785');
    expect(driver.commands.some((c) => /-lgc 345,(\d+)/.test(c) && Number(/345,(\d+)/.exec(c)![1]) < 1785)).toBe(false);

    // Measured power reaches the cost model: idle, two H100 halves against the A100 profile's idle.
    const expected = BUILTIN_PROFILES['2xH100']!.idleW / BUILTIN_PROFILES['2xA100']!.idleW;
    await until(async () => (await post(`${proxy.url}/v1/chat/completions`, chatBody({ max_tokens: 1 }))).status === 200 && Math.abs(powerFactors.at(-1)! - expected) < 1e-9, 10_000);

    // A request that runs past its interactive deadline: the router's signal goes negative, the agent raises.
    delayMs = 1_500;
    const late = post(`${proxy.url}/v1/chat/completions`, chatBody({ max_tokens: 1 }), { 'x-freesh-slo': 'interactive' });
    await until(() => agent.gpus.some((g) => g.step?.action === 'raise' && g.step.reason === 'risk'), 5_000);
    expect(agent.gpus[0]!.appliedMHz).toBeGreaterThan(1785);
    expect((await late).status).toBe(200);
  }, 30_000);
});
