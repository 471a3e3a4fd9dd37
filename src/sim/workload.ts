import { seededRng } from '../clock.js';
import type { Trace, TraceRequest } from './trace.js';

/** One replayed request with what the simulator assigns it: tenant, SLO class, prediction noise. */
export interface WorkloadRequest extends TraceRequest {
  readonly id: string;
  readonly tenant: string;
  readonly sloClass: string;
  /** A standard normal draw: the prediction error of this request, the same under every policy. */
  readonly noise: number;
}

export interface Workload {
  readonly trace: Trace;
  readonly requests: readonly WorkloadRequest[];
}

export interface WorkloadOptions {
  readonly seed?: number;
  /**
   * Tenants and their shares of requests. Default four tenants at 40/30/20/10%: as in the FREESH
   * authors' simulator there are four clients, skewed here so one tenant presses on the others.
   */
  readonly tenants?: Readonly<Record<string, number>>;
  /** SLO classes and their shares. Default 20% interactive, 70% standard, 10% batch. */
  readonly sloMix?: Readonly<Record<string, number>>;
}

export const DEFAULT_TENANTS = Object.freeze({ 'tenant-a': 0.4, 'tenant-b': 0.3, 'tenant-c': 0.2, 'tenant-d': 0.1 });
export const DEFAULT_SLO_MIX = Object.freeze({ interactive: 0.2, standard: 0.7, batch: 0.1 });

/** Assigns tenant, class and noise to every request from one seeded stream: same seed, same workload. */
export function buildWorkload(trace: Trace, options: WorkloadOptions = {}): Workload {
  const rng = seededRng(options.seed ?? 1);
  const pickTenant = chooser(options.tenants ?? DEFAULT_TENANTS);
  const pickClass = chooser(options.sloMix ?? DEFAULT_SLO_MIX);
  const requests = trace.requests.map((r, i) => {
    const u1 = rng();
    const u2 = rng();
    const z = Math.sqrt(-2 * Math.log(1 - rng())) * Math.cos(2 * Math.PI * rng());
    return Object.freeze({ ...r, id: `sim-${i}`, tenant: pickTenant(u1), sloClass: pickClass(u2), noise: z });
  });
  return Object.freeze({ trace, requests: Object.freeze(requests) });
}

function chooser(shares: Readonly<Record<string, number>>): (u: number) => string {
  const entries = Object.entries(shares).filter(([, w]) => w > 0);
  const total = entries.reduce((s, [, w]) => s + w, 0);
  if (entries.length === 0 || !(total > 0)) throw new RangeError('shares must include a positive weight');
  return (u) => {
    let acc = 0;
    for (const [name, w] of entries) {
      acc += w / total;
      if (u < acc) return name;
    }
    return entries.at(-1)![0];
  };
}
