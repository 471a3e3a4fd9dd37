import type { FileConfigInput } from '../config/schema.js';
import { type SimBackend, startSimBackend } from './backend-server.js';

/**
 * The FREESH fleet's layout (3 sites, 24 A100 and 6 H100; arXiv 2511.00807's profile table), run as
 * simulated instances. Carbon intensities are Electricity Maps' 2023 averages for the regions we
 * map the sites onto (CAISO ~261, DE ~395, FR ~49 gCO2e/kWh).
 */
export const DEMO_SITES = [
  { id: 'loc1', region: 'US-CAL-CISO', carbon: { gramsPerKWh: 261 } },
  { id: 'loc2', region: 'DE', carbon: { gramsPerKWh: 395 } },
  { id: 'loc3', region: 'FR', carbon: { gramsPerKWh: 49 } },
] as const;

/** loc1: 4 A100 + 4 H100; loc2: 12 A100 (its 2 H100 fit no 4×H100 mode); loc3: 8 A100. */
const LAYOUT: readonly { id: string; site: string; mode: string; maxConcurrency: number }[] = [
  { id: 'loc1-h100-0', site: 'loc1', mode: '4xH100', maxConcurrency: 64 },
  { id: 'loc1-a100-0', site: 'loc1', mode: '2xA100', maxConcurrency: 32 },
  { id: 'loc1-a100-1', site: 'loc1', mode: '2xA100', maxConcurrency: 32 },
  { id: 'loc2-a100-0', site: 'loc2', mode: '4xA100', maxConcurrency: 48 },
  { id: 'loc2-a100-1', site: 'loc2', mode: '4xA100', maxConcurrency: 48 },
  { id: 'loc2-a100-2', site: 'loc2', mode: '4xA100', maxConcurrency: 48 },
  { id: 'loc3-a100-0', site: 'loc3', mode: '8xA100', maxConcurrency: 64 },
];

export const DEMO_MODEL = 'llama-3-70b';

export interface DemoFleet {
  readonly backends: readonly SimBackend[];
  /** A proxy config routing to the fleet (listening on `port`). */
  readonly config: FileConfigInput;
  close(): Promise<void>;
}

export async function startDemoFleet(options: { port?: number; host?: string; timeScale?: number } = {}): Promise<DemoFleet> {
  const backends = await Promise.all(
    LAYOUT.map((b, i) => startSimBackend({ profile: b.mode, models: [DEMO_MODEL], timeScale: options.timeScale ?? 1, seed: i + 1 })),
  );
  const config: FileConfigInput = {
    server: { host: options.host ?? '127.0.0.1', port: options.port ?? 8080 },
    sites: DEMO_SITES.map((s) => ({ ...s, carbon: { ...s.carbon } })),
    backends: LAYOUT.map((b, i) => ({ ...b, baseURL: backends[i]!.baseURL, models: [DEMO_MODEL] })),
  };
  return { backends, config, close: async () => void (await Promise.all(backends.map((b) => b.close()))) };
}
