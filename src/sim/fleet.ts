import type { RouterConfigInput } from '../config/schema.js';

/**
 * A simulated fleet: sites and instances. The router config is derived from it; the simulator and
 * the demo start one simulated instance per backend.
 */
export interface FleetSpec {
  /** `gpus`: the site's GPU inventory per GPU type, for the planner's pools (optional). */
  readonly sites: readonly { readonly id: string; readonly region: string; readonly gramsPerKWh: number; readonly pue?: number; readonly gpus?: Readonly<Record<string, number>> }[];
  readonly backends: readonly { readonly id: string; readonly site: string; readonly mode: string; readonly maxConcurrency: number; readonly forwardPriority?: boolean }[];
  readonly model: string;
}

/**
 * The FREESH fleet (arXiv 2511.00807's profile table: 3 sites, 24 A100 and 6 H100) laid out in the
 * published parallelism modes. loc1: 4 A100 + 4 H100; loc2: 12 A100 (its 2 H100 fit no published
 * mode); loc3: 8 A100. Regions map the sites onto Electricity Maps zones (CAISO, DE, FR) whose 2023
 * averages are ~261, ~395 and ~49 gCO2e/kWh. maxConcurrency is the batch the router admits: large
 * enough for throughput, small enough that the step time stays well under FREESH's 150 ms TBT. The
 * instances schedule by priority (vLLM's `--scheduling-policy priority`), so the router forwards
 * each request's SLO class priority to them, whatever the policy.
 */
export const FREESH_FLEET: FleetSpec = Object.freeze({
  model: 'llama-3-70b',
  sites: [
    { id: 'loc1', region: 'US-CAL-CISO', gramsPerKWh: 261 },
    { id: 'loc2', region: 'DE', gramsPerKWh: 395 },
    { id: 'loc3', region: 'FR', gramsPerKWh: 49 },
  ],
  backends: [
    { id: 'loc1-h100-0', site: 'loc1', mode: '4xH100', maxConcurrency: 64, forwardPriority: true },
    { id: 'loc1-a100-0', site: 'loc1', mode: '2xA100', maxConcurrency: 32, forwardPriority: true },
    { id: 'loc1-a100-1', site: 'loc1', mode: '2xA100', maxConcurrency: 32, forwardPriority: true },
    { id: 'loc2-a100-0', site: 'loc2', mode: '4xA100', maxConcurrency: 48, forwardPriority: true },
    { id: 'loc2-a100-1', site: 'loc2', mode: '4xA100', maxConcurrency: 48, forwardPriority: true },
    { id: 'loc2-a100-2', site: 'loc2', mode: '4xA100', maxConcurrency: 48, forwardPriority: true },
    { id: 'loc3-a100-0', site: 'loc3', mode: '8xA100', maxConcurrency: 64, forwardPriority: true },
  ],
});

/** Router sites and backends for a fleet, given each backend's base URL. */
export function fleetRouterConfig(fleet: FleetSpec, baseURL: (backendId: string) => string): Pick<RouterConfigInput, 'sites' | 'backends'> {
  return {
    sites: fleet.sites.map((s) => ({ id: s.id, region: s.region, carbon: { gramsPerKWh: s.gramsPerKWh }, ...(s.pue ? { pue: s.pue } : {}), ...(s.gpus ? { gpus: { ...s.gpus } } : {}) })),
    backends: fleet.backends.map((b) => ({ ...b, baseURL: baseURL(b.id), models: [fleet.model] })),
  };
}
