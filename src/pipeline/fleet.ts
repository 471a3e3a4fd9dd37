import type { RouterConfig } from '../config/schema.js';
import { ConfigError } from '../config/schema.js';
import { BUILTIN_PROFILES } from '../cost/profiles.js';
import { BUILTIN_POLICIES, type PolicyFactory } from '../schedule/builtin.js';
import type { Policy } from '../schedule/policy.js';
import type { Backend, Site } from '../types.js';

export interface Fleet {
  readonly sites: readonly Site[];
  readonly backends: readonly Backend[];
  /** The backends serving each model, in config order. */
  readonly byModel: ReadonlyMap<string, readonly Backend[]>;
}

/** Sites and backends as the pipeline reads them, frozen, from a validated config. */
export function fleetOf(config: RouterConfig): Fleet {
  const sites = new Map<string, Site>();
  for (const s of config.sites) sites.set(s.id, Object.freeze({ id: s.id, region: s.region, gramsPerKWh: s.carbon.gramsPerKWh, pue: s.pue }));
  const backends = config.backends.map((b) =>
    Object.freeze({
      id: b.id,
      site: sites.get(b.site)!,
      baseURL: b.baseURL,
      models: new Set(b.models),
      maxConcurrency: b.maxConcurrency,
      prefillChunkTokens: b.prefillChunkTokens,
      forwardPriority: b.forwardPriority,
      profile: BUILTIN_PROFILES[b.mode]!,
      apiKey: b.apiKey,
    }),
  );
  const byModel = new Map<string, Backend[]>();
  for (const backend of backends) {
    for (const model of backend.models) (byModel.get(model) ?? byModel.set(model, []).get(model)!).push(backend);
  }
  return { sites: Object.freeze([...sites.values()]), backends: Object.freeze(backends), byModel };
}

/** A fresh policy by name: one of `policies`, else a built-in; a ConfigError naming the known ones otherwise. */
export function resolvePolicy(name: string, policies: Readonly<Record<string, PolicyFactory>> | undefined): Policy {
  const factory = policies?.[name] ?? BUILTIN_POLICIES[name];
  if (!factory) {
    const known = [...Object.keys(BUILTIN_POLICIES), ...Object.keys(policies ?? {})].join(', ');
    throw new ConfigError(`Invalid router options:\n- \`policy\`: must be one of ${known}, got \`${JSON.stringify(name)}\``);
  }
  return factory();
}
