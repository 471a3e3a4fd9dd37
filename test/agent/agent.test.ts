import { describe, expect, it } from 'vitest';
import { AgentStartError, GpuAgent, sloSignal } from '../../src/agent/agent.js';
import { FakeGpuDriver } from '../../src/agent/fake-gpu.js';
import { GPU_TELEMETRY, SLO_TELEMETRY, sloKey } from '../../src/pipeline/agent-telemetry.js';
import { VirtualClock } from '../../src/sim/virtual-clock.js';
import { MemoryStateStore } from '../../src/state/memory-store.js';
import type { PlanRecord, ReceivedTelemetry, StateStore } from '../../src/state/store.js';

const plan = (clockFraction: Record<string, number>): PlanRecord => ({
  origin: 'r1', status: 'ok', active: Object.keys(clockFraction), clockFraction, shares: {}, forecastRps: {}, objectiveRate: 0, note: '',
});

/** A memory store that can be made unreachable: every call then rejects, as a lost Redis connection would. */
class FlakyStore extends MemoryStateStore {
  down = false;
  override readTelemetry(): Promise<readonly ReceivedTelemetry[]> {
    return this.down ? Promise.reject(new Error('ECONNREFUSED')) : super.readTelemetry();
  }
}

function setup<S extends StateStore = MemoryStateStore>(options: { dryRun?: boolean; store?: (clock: VirtualClock) => S } = {}) {
  const clock = new VirtualClock();
  const store = options.store ? options.store(clock) : (new MemoryStateStore({ clock }) as unknown as S);
  const driver = new FakeGpuDriver({ count: 2, clock });
  const lines: string[] = [];
  const agent = new GpuAgent({
    driver, store, clock, nodeId: 'n1', backends: new Map([[0, 'b0'], [1, 'b1']]), dryRun: options.dryRun, storeTimeoutMs: 5_000,
    log: (line) => lines.push(line),
  });
  // The routers' side: each backend's SLO signal (from a replica of its own here), refreshed each period by the test.
  const signal = (backendId: string, headroom: number | undefined) =>
    store.putTelemetry({
      source: `router:r-${backendId}`, kind: SLO_TELEMETRY,
      values: headroom === undefined ? { [sloKey(backendId, 'inFlight')]: 0 } : { [sloKey(backendId, 'headroom')]: headroom, [sloKey(backendId, 'inFlight')]: 1 },
    }, 3_000);
  const period = async (headrooms: Record<string, number | undefined>) => {
    for (const [b, h] of Object.entries(headrooms)) await signal(b, h);
    // The agent's own loop: one period per second of the virtual clock.
    clock.advance(1_000);
    await agent.settled();
  };
  return { clock, store, driver, agent, lines, period };
}

describe('GpuAgent with the fake driver', () => {
  it('resets every GPU at start, lowers additively with room down to the plan floor, and resets at stop', async () => {
    const { store, driver, agent, period } = setup();
    await store.publishPlan(plan({ b0: 0.75, b1: 1 }));
    await agent.start();
    expect(driver.commands).toEqual(['-i 0 -rgc', '-i 1 -rgc']);
    for (let i = 0; i < 30; i++) await period({ b0: 0.5, b1: 0.5 });
    const [g0, g1] = agent.gpus;
    // 0.75 × 1980 = 1485, a supported clock: reached in 30 MHz steps and held there.
    expect(g0!.appliedMHz).toBe(1485);
    expect(g0!.floorMHz).toBe(1485);
    expect(g0!.step).toMatchObject({ action: 'hold', reason: 'at-bound' });
    // b1's plan keeps it at the maximum: one lock at 1980, never lower.
    expect(g1!.appliedMHz).toBe(1980);
    const locks0 = driver.commands.filter((c) => c.startsWith('-i 0 -lgc'));
    expect(locks0[0]).toBe('-i 0 -lgc 345,1950');
    expect(locks0.at(-1)).toBe('-i 0 -lgc 345,1485');
    // 16 steps of 30 MHz to 1500, then one of 15 to the floor.
    expect(locks0.length).toBe(17);
    expect(driver.commands.filter((c) => c.startsWith('-i 1 -lgc'))).toEqual(['-i 1 -lgc 345,1980']);
    await agent.stop();
    expect(driver.commands.slice(-2)).toEqual(['-i 0 -rgc', '-i 1 -rgc']);
  });

  it('raises multiplicatively when the SLO is at risk, and when the signal stops (stale)', async () => {
    const { store, agent, period } = setup();
    await store.publishPlan(plan({ b0: 0.5, b1: 0.5 }));
    await agent.start();
    for (let i = 0; i < 40; i++) await period({ b0: 0.9, b1: 0.9 });
    expect(agent.gpus.map((g) => g.appliedMHz)).toEqual([990, 990]);
    await period({ b0: -0.2, b1: 0.9 });
    // 990 × 1.3 = 1287 → 1275 (a supported clock at or below the target).
    expect(agent.gpus[0]).toMatchObject({ appliedMHz: 1275, step: { action: 'raise', reason: 'risk' } });
    expect(agent.gpus[1]!.appliedMHz).toBe(990);
    // b1's router stops publishing: its record expires, the controller treats that as a risk.
    for (let i = 0; i < 4; i++) await period({ b0: 0.2 });
    expect(agent.gpus[1]!.step?.reason).toBe('stale');
    expect(agent.gpus[1]!.appliedMHz).toBeGreaterThan(990);
  });

  it('publishes power, clock and energy per GPU, and serves them under DCGM names', async () => {
    const { store, driver, agent, period } = setup();
    await agent.start();
    driver.setBatch(0, 8);
    await period({ b0: 0.5, b1: undefined });
    await period({ b0: 0.5, b1: undefined });
    const gpu = (await store.readTelemetry()).filter((r) => r.kind === GPU_TELEMETRY).sort((a, b) => a.source.localeCompare(b.source));
    expect(gpu.map((r) => [r.source, r.backendId])).toEqual([['agent:n1:gpu0', 'b0'], ['agent:n1:gpu1', 'b1']]);
    expect(gpu[0]!.values.powerW).toBeCloseTo(driver.powerW(0), 6);
    expect(gpu[0]!.values.powerW).toBeGreaterThan(gpu[1]!.values.powerW!);
    // Two periods of room: 1980 → 1950 → 1920, busy so running at the lock's top.
    expect(gpu[0]!.values.smClockMHz).toBe(1920);
    expect(agent.gpus[0]!.appliedMHz).toBe(1920);
    expect(gpu[0]!.values.energyJ).toBeGreaterThan(0);
    const text = await agent.registry.metrics();
    expect(text).toMatch(/DCGM_FI_DEV_POWER_USAGE\{gpu="0",UUID="GPU-[0-9a-f-]+",modelName="Fake GPU",backend="b0",Hostname="n1"\} \d+/);
    expect(text).toContain('DCGM_FI_DEV_SM_CLOCK{gpu="0",UUID="GPU-00000000-0000-0000-0000-000000000000",modelName="Fake GPU",backend="b0",Hostname="n1"} 1920');
    expect(text).toContain('DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION');
    expect(text).toMatch(/freesh_agent_controller_steps_total\{action="lower",reason="room",Hostname="n1"\} 2/);
  });

  it('holds the last setting while the store is unreachable, then resets to default clocks after the timeout, and resumes', async () => {
    const { store, driver, agent, period, lines } = setup({ store: (clock) => new FlakyStore({ clock }) });
    await agent.start();
    for (let i = 0; i < 5; i++) await period({ b0: 0.9, b1: 0.9 });
    const held = agent.gpus.map((g) => g.appliedMHz);
    expect(held).toEqual([1830, 1830]);
    const before = driver.commands.length;
    store.down = true;
    for (let i = 0; i < 4; i++) await period({});
    expect(driver.commands.length).toBe(before);
    expect(agent.gpus.map((g) => g.appliedMHz)).toEqual(held);
    await period({});
    await period({});
    expect(driver.commands.slice(before)).toEqual(['-i 0 -rgc', '-i 1 -rgc']);
    expect(agent.gpus.map((g) => g.appliedMHz)).toEqual([undefined, undefined]);
    expect(lines.some((l) => l.includes('state store unreachable'))).toBe(true);
    store.down = false;
    await period({ b0: 0.9, b1: 0.9 });
    expect(agent.gpus.map((g) => g.appliedMHz)).toEqual([1950, 1950]);
  });

  it('in dry run logs the locks it would set and sets none', async () => {
    const { driver, agent, period, lines } = setup({ dryRun: true });
    await agent.start();
    await period({ b0: 0.9, b1: -1 });
    await agent.stop();
    expect(driver.commands).toEqual([]);
    expect(lines).toContain('freesh agent: dry run: would lock GPU 0 to 345,1950 MHz: lower (room, headroom 0.90), floor 990 MHz');
    expect(lines.filter((l) => l.includes('would reset GPU'))).toHaveLength(4);
  });

  it('refuses to start without the privilege to set clocks, in one line, touching nothing', async () => {
    const driver = new FakeGpuDriver();
    const nvidiaLike = Object.defineProperty(driver, 'kind', { value: 'nvidia-smi' });
    const agent = new GpuAgent({ driver: nvidiaLike, store: new MemoryStateStore(), nodeId: 'n1', backends: new Map([[0, 'b0']]), privileged: () => false, log: () => undefined });
    const error = await agent.start().then(() => undefined, (e: unknown) => e);
    expect(error).toBeInstanceOf(AgentStartError);
    expect((error as Error).message).toBe('setting GPU clocks with nvidia-smi needs root: run as root, use --driver zeusd, or --dry-run');
    expect(driver.commands).toEqual([]);
    // The same agent in dry run needs no privilege.
    const dry = new GpuAgent({ driver: nvidiaLike, store: new MemoryStateStore(), nodeId: 'n1', backends: new Map([[0, 'b0']]), privileged: () => false, dryRun: true, log: () => undefined });
    await expect(dry.start()).resolves.toBeUndefined();
    await dry.stop();
  });

  it('refuses a GPU the driver does not list', async () => {
    const agent = new GpuAgent({ driver: new FakeGpuDriver({ count: 1 }), store: new MemoryStateStore(), nodeId: 'n1', backends: new Map([[3, 'b0']]), log: () => undefined });
    await expect(agent.start()).rejects.toThrow('GPU 3 is not on this node (fake lists 0)');
  });
});

describe('sloSignal', () => {
  const rec = (source: string, values: Record<string, number>, ageMs: number): ReceivedTelemetry => ({ source, kind: SLO_TELEMETRY, values, ageMs });
  it('takes the least headroom over replicas and the newest age of those reporting the backend; none is infinitely old', () => {
    const records = [
      rec('router:a', { 'b0/inFlight': 2, 'b0/headroom': 0.4, 'b1/inFlight': 1, 'b1/headroom': -1 }, 900),
      rec('router:b', { 'b0/inFlight': 1, 'b0/headroom': 0.1 }, 200),
      rec('router:c', { 'b0/inFlight': 0 }, 50),
      rec('router:d', { 'b1/inFlight': 0 }, 5),
      { source: 'agent:n:gpu0', kind: GPU_TELEMETRY, backendId: 'b0', values: { 'b0/inFlight': 0, powerW: 1 }, ageMs: 0 },
    ];
    expect(sloSignal(records, 'b0')).toEqual({ headroom: 0.1, ageMs: 50 });
    expect(sloSignal(records, 'b1')).toEqual({ headroom: -1, ageMs: 5 });
    expect(sloSignal([rec('router:c', { 'b0/inFlight': 0 }, 50)], 'b0')).toEqual({ headroom: null, ageMs: 50 });
    expect(sloSignal(records, 'b9')).toEqual({ headroom: null, ageMs: Number.POSITIVE_INFINITY });
  });
});
