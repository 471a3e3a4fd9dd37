import { readFile } from 'node:fs/promises';
import { describe, expect, it } from 'vitest';
import { constantSeries } from '../../src/carbon/series.js';
import { BUILTIN_PROFILES } from '../../src/cost/profiles.js';
import { evaluate } from '../../src/sim/evaluate.js';
import type { FleetSpec } from '../../src/sim/fleet.js';
import { simulate } from '../../src/sim/simulator.js';
import { parseAzureTrace, type Trace } from '../../src/sim/trace.js';
import { buildWorkload } from '../../src/sim/workload.js';

describe('simulated planner with GPU pools', () => {
  it('reports the forecast error and every pool partition, each within its site’s inventory', async () => {
    // The conversation trace's first two minutes (test/fixtures/README.md).
    const text = await readFile(new URL('../fixtures/azure-llm-2023-conv-2min.csv', import.meta.url), 'utf8');
    const slice: Trace = { ...parseAzureTrace(text, 'conv-2min'), durationMs: 120_000 };
    const inventory = { clean: { 'A100-80GB': 8 }, dirty: { 'A100-80GB': 16, 'H100-80GB': 4 } };
    const fleet: FleetSpec = {
      model: 'm',
      sites: [
        { id: 'clean', region: 'FR', gramsPerKWh: 50, pue: 1.1, gpus: inventory.clean },
        { id: 'dirty', region: 'DE', gramsPerKWh: 400, pue: 1.1, gpus: inventory.dirty },
      ],
      backends: [
        { id: 'a', site: 'clean', mode: '4xA100', maxConcurrency: 48 },
        { id: 'b', site: 'dirty', mode: '8xA100', maxConcurrency: 64 },
      ],
    };
    const carbon = new Map([['clean', constantSeries(50)], ['dirty', constantSeries(400)]]);
    const result = await simulate({
      fleet,
      workload: buildWorkload(slice),
      carbon,
      run: { name: 'freesh', policy: 'freesh', prediction: 0.8, router: { plan: { stepMs: 20_000, windowMs: 60_000 } } },
    });
    const m = evaluate(result);
    expect(m.completed + m.rejected).toBe(456);
    // Re-planned every 20 s over 2 minutes; every step after the first is scored against its count.
    expect(m.forecastError!.steps).toBeGreaterThanOrEqual(4);
    expect(m.forecastError!.relativeError).toBeGreaterThan(0);
    expect(m.forecastError!.relativeError).toBeLessThan(1);
    expect(m.poolPlans!.planned).toBe(result.poolPlans!.length);
    expect(result.poolPlans!.length).toBeGreaterThanOrEqual(5);
    for (const pools of result.poolPlans!) {
      expect(pools.windowSteps).toBe(3);
      for (const [site, gpus] of Object.entries(inventory)) {
        for (const [gpu, count] of Object.entries(gpus)) {
          const used = pools.allocation.filter((a) => a.site === site && BUILTIN_PROFILES[a.mode]!.gpu === gpu).reduce((s, a) => s + a.instances * BUILTIN_PROFILES[a.mode]!.gpus, 0);
          expect(used).toBeLessThanOrEqual(count);
        }
      }
    }
    // ~3.8 req/s of conversation traffic needs instances: the later partitions run some, at the clean site first.
    const last = result.poolPlans!.at(-1)!;
    expect(last.status).toBe('optimal');
    expect(last.allocation.some((a) => a.site === 'clean')).toBe(true);
  });
});
