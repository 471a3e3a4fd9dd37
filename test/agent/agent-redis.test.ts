import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { fileURLToPath } from 'node:url';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { type CostInput, createCostModel, type CostModel } from '../../src/cost/cost-model.js';
import { BUILTIN_PROFILES } from '../../src/cost/profiles.js';
import { GpuAgent } from '../../src/agent/agent.js';
import { FakeGpuDriver } from '../../src/agent/fake-gpu.js';
import { GPU_TELEMETRY, SLO_TELEMETRY, sloKey } from '../../src/pipeline/agent-telemetry.js';
import { createRedisStateStore } from '../../src/state/redis.js';
import { deleteFleet, freshPrefix, type RedisServer, startPrivateRedis } from '../helpers/redis-server.js';
import { chatBody, fleetConfig, post, proxyFor, until, upstream } from '../helpers/servers.js';

/**
 * `freesh agent --driver fake` as a process (the compiled CLI: `npm run build` first) and the router
 * in this process, sharing a real Redis: the published plan's floor reaches the agent, the agent's
 * measured power reaches the router's cost model, and SIGTERM resets the clocks.
 */
const CLI = fileURLToPath(new URL('../../dist/src/cli.js', import.meta.url));

let redis: RedisServer;
beforeAll(async () => {
  redis = await startPrivateRedis();
});
afterAll(() => redis.stop());
const cleanups: (() => unknown)[] = [];
afterEach(async () => {
  for (const fn of cleanups.splice(0).reverse()) await fn();
});

describe('freesh agent over Redis with the router', () => {
  it('reads the plan floor and the SLO signal from Redis, and its power reaches the cost model', async () => {
    const keyPrefix = freshPrefix();
    cleanups.push(() => deleteFleet(redis.url, keyPrefix));
    const backend = await upstream((_req, res) => res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify({
      id: 'c', object: 'chat.completion', created: 0, model: 'm', choices: [{ index: 0, message: { role: 'assistant', content: 'ok' }, finish_reason: 'stop' }],
      usage: { prompt_tokens: 5, completion_tokens: 1, total_tokens: 6 },
    })));
    cleanups.push(() => backend.close());
    const inner = createCostModel();
    const powerFactors: number[] = [];
    const costModel: CostModel = { estimate: (input: CostInput) => (powerFactors.push(input.powerFactor ?? 1), inner.estimate(input)) };
    const proxy = await proxyFor(
      fleetConfig([{ id: 'b0', baseURL: backend.baseURL }], {
        policy: 'least-loaded', plan: { enabled: false }, agent: { sloSignalMs: 100 }, state: { redis: { url: redis.url, keyPrefix }, replicaId: 'r1' },
      }),
      { costModel },
    );
    cleanups.push(() => proxy.shutdown(0));
    // A second client on the fleet's keys, as another replica's planner: publishes b0 at 0.9 of its clock.
    const store = createRedisStateStore(redis.url, { keyPrefix });
    cleanups.push(() => store.close());
    await store.publishPlan({ origin: 'planner', status: 'ok', active: ['b0'], clockFraction: { b0: 0.9 }, shares: {}, forecastRps: {}, objectiveRate: 0, note: '' });

    const child = spawn(process.execPath, [CLI, 'agent', '--node', 'n1', '--gpus', '0,1', '--backend', 'b0=0,1', '--driver', 'fake', '--redis', redis.url, '--key-prefix', keyPrefix, '--period-ms', '100', '--metrics-port', '0'], { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    child.stdout.on('data', (c: Buffer) => (out += c.toString()));
    child.stderr.on('data', (c: Buffer) => (out += c.toString()));
    cleanups.push(() => (child.exitCode === null ? child.kill('SIGKILL') : undefined));

    // The router publishes "nothing in flight" for b0; the agent lowers both GPUs to the plan's floor, 0.9 × 1980 → 1785.
    const gpuRecords = async () => (await store.readTelemetry()).filter((r) => r.kind === GPU_TELEMETRY && r.backendId === 'b0');
    await until(async () => {
      const records = await gpuRecords();
      return records.length === 2 && records.every((r) => r.values.targetMHz === 1785 && r.values.floorMHz === 1785);
    }, 20_000);
    expect(out).toContain('GPU 0 locked to 345,1785 MHz: lower (idle), floor 1785 MHz');

    // The fake draws the 2×H100 profile's power; the router's b0 is a 2×A100: the factor is their idle ratio.
    const expected = BUILTIN_PROFILES['2xH100']!.idleW / BUILTIN_PROFILES['2xA100']!.idleW;
    await until(async () => (await post(`${proxy.url}/v1/chat/completions`, chatBody({ max_tokens: 1 }))).status === 200 && Math.abs(powerFactors.at(-1)! - expected) < 1e-6, 10_000);

    child.kill('SIGTERM');
    const [code] = await once(child, 'exit');
    expect(code).toBe(0);
    expect(out).toContain('freesh agent: SIGTERM: resetting clocks');
    expect(out).toContain('GPU 0 clocks reset (stop)');
    expect(out).toContain('GPU 1 clocks reset (stop)');
  }, 60_000);

  it('holds its clocks while Redis is down, resets them after the store timeout, and resumes when Redis is back', async () => {
    const own = await startPrivateRedis();
    cleanups.push(() => own.stop());
    const keyPrefix = freshPrefix();
    const store = createRedisStateStore(own.url, { keyPrefix, commandTimeoutMs: 200, healthCheckIntervalMs: 100, onDegraded: () => undefined, onRecovered: () => undefined });
    cleanups.push(() => store.close());
    const driver = new FakeGpuDriver();
    const lines: string[] = [];
    const agent = new GpuAgent({ driver, store, nodeId: 'n1', backends: new Map([[0, 'b0']]), miad: { periodMs: 100 }, storeTimeoutMs: 1_500, log: (l) => lines.push(l) });
    // A router's signal with room, long-lived: the agent lowers the clock period by period.
    await store.putTelemetry({ source: 'router:r1', kind: SLO_TELEMETRY, values: { [sloKey('b0', 'headroom')]: 0.9, [sloKey('b0', 'inFlight')]: 1 } }, 60_000);
    await agent.start();
    cleanups.push(() => agent.stop());
    await until(() => (agent.gpus[0]!.appliedMHz ?? 1980) <= 1860, 10_000);

    await own.stop();
    await until(() => lines.some((l) => l.includes('state store unreachable')), 5_000);
    const held = agent.gpus[0]!.appliedMHz;
    const locks = driver.commands.length;
    // Held: no command until the timeout, then one reset to default clocks.
    await until(() => driver.commands.length > locks, 5_000);
    expect(driver.commands.slice(locks)).toEqual(['-i 0 -rgc']);
    expect(held).toBeLessThanOrEqual(1860);
    expect(agent.gpus[0]!.appliedMHz).toBeUndefined();

    // Redis is back, empty: no router signal, which the controller treats as a risk: the maximum.
    await own.restart();
    await until(() => lines.includes('freesh agent: state store back: controlling clocks again'), 10_000);
    await until(() => agent.gpus[0]!.appliedMHz === 1980, 5_000);
    expect(driver.commands.at(-1)).toBe('-i 0 -lgc 345,1980');
  }, 60_000);
});
