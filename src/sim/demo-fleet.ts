import type { FileConfigInput } from '../config/schema.js';
import { type SimBackend, startSimBackend } from './backend-server.js';
import { FREESH_FLEET, fleetRouterConfig } from './fleet.js';

export const DEMO_MODEL = FREESH_FLEET.model;

export interface DemoFleet {
  readonly backends: readonly SimBackend[];
  /** A proxy config routing to the fleet (listening on `port`), with the dashboard on. */
  readonly config: FileConfigInput;
  close(): Promise<void>;
}

/** The FREESH fleet as simulated HTTP backends on free local ports, with a proxy config for it. */
export async function startDemoFleet(options: { port?: number; host?: string; timeScale?: number } = {}): Promise<DemoFleet> {
  const backends = await Promise.all(
    FREESH_FLEET.backends.map((b, i) => startSimBackend({ profile: b.mode, models: [DEMO_MODEL], timeScale: options.timeScale ?? 1, seed: i + 1 })),
  );
  const urls = new Map(FREESH_FLEET.backends.map((b, i) => [b.id, backends[i]!.baseURL]));
  const config: FileConfigInput = {
    server: { host: options.host ?? '127.0.0.1', port: options.port ?? 8080 },
    ...fleetRouterConfig(FREESH_FLEET, (id) => urls.get(id)!),
    // The demo is for looking: its operator dashboard is on.
    dashboard: { enabled: true },
  };
  return { backends, config, close: async () => void (await Promise.all(backends.map((b) => b.close()))) };
}
