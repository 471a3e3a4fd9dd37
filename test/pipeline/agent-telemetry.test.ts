import { describe, expect, it } from 'vitest';
import { type CostInput, profileCostModel } from '../../src/cost/cost-model.js';
import { DEFAULT_FREQUENCY_MODEL } from '../../src/cost/frequency.js';
import { BUILTIN_PROFILES } from '../../src/cost/profiles.js';
import { AgentTelemetry, GPU_TELEMETRY, measuredPowerW, POWER_FACTOR_MAX, requestHeadroom, SLO_TELEMETRY } from '../../src/pipeline/agent-telemetry.js';
import type { CompletionEvent, Placement } from '../../src/pipeline/lifecycle.js';
import { VirtualClock } from '../../src/sim/virtual-clock.js';
import { MemoryStateStore } from '../../src/state/memory-store.js';
import { backend, request } from '../helpers/fixtures.js';

describe('requestHeadroom', () => {
  it('is the share of the budget left after the remaining service: 1 at arrival with nothing to do, 0 on time, negative late', () => {
    expect(requestHeadroom(1_000, 0, 0, 0)).toBe(1);
    expect(requestHeadroom(1_000, 0, 500, 500)).toBe(0);
    expect(requestHeadroom(1_000, 0, 1_200, 0)).toBeCloseTo(-0.2);
  });
});

describe('measuredPowerW', () => {
  it('sums the fresh GPU records of each backend and ignores the rest', () => {
    const gpu = (source: string, backendId: string | undefined, powerW: number, ageMs: number) => ({ source, kind: GPU_TELEMETRY, backendId, values: { powerW }, ageMs });
    const measured = measuredPowerW([gpu('a:0', 'b0', 100, 10), gpu('a:1', 'b0', 150, 20), gpu('a:2', 'b1', 80, 9_000), gpu('a:3', undefined, 50, 0),
      { source: 'router:r', kind: SLO_TELEMETRY, backendId: 'b0', values: { powerW: 999 }, ageMs: 0 }], 5_000);
    expect([...measured]).toEqual([['b0', 250]]);
  });
});

describe('the cost model with measured power', () => {
  it('scales the energy estimate by measured ÷ modelled power', () => {
    const input: CostInput = {
      request: request(), prediction: { outputTokensP50: 100, outputTokensP90: 300, source: 'test' }, backend: backend('a'),
      state: { inFlight: 0, healthy: true }, queued: 0, promptTokensPerS: 0, prefillBacklogTokens: 0, nowMs: 0, gramsPerKWh: 400,
      clockFraction: 1, latencyFactor: 1, readyInMs: 0,
    };
    const base = profileCostModel.estimate(input);
    const measured = profileCostModel.estimate({ ...input, powerFactor: 1.5 });
    expect(measured.energyJ).toBeCloseTo(base.energyJ * 1.5, 9);
    expect(measured.carbonG).toBeCloseTo(base.carbonG * 1.5, 12);
    expect(measured.e2eMs).toBe(base.e2eMs);
  });
});

describe('AgentTelemetry', () => {
  const b = backend('b0');
  function setup() {
    const clock = new VirtualClock();
    const store = new MemoryStateStore({ clock });
    let inFlight = 0;
    const plugin = new AgentTelemetry({
      store, clock, inFlight: () => inFlight, backends: [b], frequency: DEFAULT_FREQUENCY_MODEL, clockFraction: () => 1,
      replicaId: 'r1', periodMs: 1_000, freshMs: 5_000, onError: (err) => { throw err; },
    });
    return { clock, store, plugin, setInFlight: (n: number) => (inFlight = n) };
  }
  const placement = (deadlineMs: number, serviceMs: number): Placement => ({
    backend: b, prediction: { outputTokensP50: 10, outputTokensP90: 20, source: 't' },
    cost: { waitMs: 0, ttftMs: 100, tbtMs: 50, e2eMs: serviceMs, e2eP90Ms: serviceMs, energyJ: 1, carbonG: 1 },
    requestType: 'short-short' as Placement['requestType'], slo: { ttftBaseMs: 500, ttftPerPromptTokenMs: 0, tbtMs: 100, onLate: 'serve', priority: 0, tbtWindowMs: 2_500 },
    deadlineMs, relaxed: [], trace: undefined,
  });

  it('publishes the least headroom of in-flight and finished requests each period, and none when idle', async () => {
    const { clock, store, plugin } = setup();
    const r1 = { ...request(), id: 'r1', arrivalMs: 0 };
    const r2 = { ...request(), id: 'r2', arrivalMs: 0 };
    plugin.send({ request: r1, placement: placement(2_000, 1_000), nowMs: 0, priority: 0 });
    plugin.send({ request: r2, placement: placement(4_000, 1_000), nowMs: 0, priority: 0 });
    clock.advanceTo(500);
    // r1: deadline 2 s, 0.5 s of service left at 0.5 s: (2000 − 500 − 500) / 2000.
    expect(plugin.headroom('b0', 500)).toBeCloseTo(0.5);
    await plugin.tick();
    let slo = (await store.readTelemetry()).find((r) => r.kind === SLO_TELEMETRY)!;
    expect(slo).toMatchObject({ source: 'router:r1', values: { 'b0/inFlight': 2 } });
    expect(slo.values['b0/headroom']).toBeCloseTo(0.5);

    // r1 finishes late with 11 tokens 200 ms apart (target 100): its TBT headroom, −1, is the least.
    plugin.firstByte({ request: r1, placement: placement(2_000, 1_000), nowMs: 100 });
    clock.advanceTo(2_100);
    plugin.complete({ request: r1, placement: placement(2_000, 1_000), nowMs: 2_100, outcome: 'completed', outputTokens: 11, serviceMs: 2_100 } as CompletionEvent);
    plugin.abort({ request: r2, placement: placement(4_000, 1_000), nowMs: 2_100, outcome: 'client-abort' });
    await plugin.tick();
    slo = (await store.readTelemetry()).find((r) => r.kind === SLO_TELEMETRY)!;
    expect(slo.values).toEqual({ 'b0/inFlight': 0, 'b0/headroom': -1 });
    // Nothing ran since: no headroom, so the agent may lower clocks.
    await plugin.tick();
    slo = (await store.readTelemetry()).find((r) => r.kind === SLO_TELEMETRY)!;
    expect(slo.values).toEqual({ 'b0/inFlight': 0 });
  });

  it('reads fresh agent power as a factor on the profile, bounded, and forgets it when stale', async () => {
    const { clock, store, plugin } = setup();
    const profile = BUILTIN_PROFILES['2xA100']!;
    expect(plugin.powerFactor('b0', 0)).toBe(1);
    await store.putTelemetry({ source: 'agent:n:gpu0', kind: GPU_TELEMETRY, backendId: 'b0', values: { powerW: profile.idleW } }, 10_000);
    await store.putTelemetry({ source: 'agent:n:gpu1', kind: GPU_TELEMETRY, backendId: 'b0', values: { powerW: profile.idleW / 2 } }, 10_000);
    await plugin.tick();
    expect(plugin.powerFactor('b0', clock.now())).toBeCloseTo(1.5);
    await store.putTelemetry({ source: 'agent:n:gpu1', kind: GPU_TELEMETRY, backendId: 'b0', values: { powerW: 100 * profile.idleW } }, 10_000);
    await plugin.tick();
    expect(plugin.powerFactor('b0', clock.now())).toBe(POWER_FACTOR_MAX);
    clock.advance(5_001);
    expect(plugin.powerFactor('b0', clock.now())).toBe(1);
  });
});
