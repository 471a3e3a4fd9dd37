import type { CarbonSignal } from './signal.js';

/** Fetches a site's current carbon intensity (gCO2e/kWh). May throw; the cache handles failure. */
export interface IntensitySource {
  readonly name: string;
  fetch(signal: AbortSignal): Promise<number>;
}

type Fetch = (url: string, init: { headers?: Record<string, string>; signal: AbortSignal }) => Promise<Response>;

export interface ElectricityMapsOptions {
  readonly zone: string;
  readonly apiKey: string;
  /** Default `https://api.electricitymap.org`. */
  readonly baseURL?: string;
  /** Default: global fetch. */
  readonly fetch?: Fetch;
}

/** Electricity Maps v3 `GET /v3/carbon-intensity/latest?zone=...` with an `auth-token` header. */
export function electricityMapsSource(options: ElectricityMapsOptions): IntensitySource {
  const base = (options.baseURL ?? 'https://api.electricitymap.org').replace(/\/+$/, '');
  const doFetch = options.fetch ?? fetch;
  return {
    name: `electricitymaps:${options.zone}`,
    async fetch(signal) {
      const res = await doFetch(`${base}/v3/carbon-intensity/latest?zone=${encodeURIComponent(options.zone)}`, {
        headers: { 'auth-token': options.apiKey, accept: 'application/json' },
        signal,
      });
      const body = await jsonOf(res, 'Electricity Maps');
      return finiteIntensity((body as { carbonIntensity?: unknown }).carbonIntensity, 'Electricity Maps `carbonIntensity`');
    },
  };
}

export interface WattTimeOptions {
  readonly region: string;
  readonly username: string;
  readonly password: string;
  /** Default `https://api.watttime.org`. */
  readonly baseURL?: string;
  /** Default `co2_moer`. */
  readonly signalType?: string;
  readonly fetch?: Fetch;
}

/** Pounds per MWh to grams per kWh: 453.59237 g/lb ÷ 1000 kWh/MWh. */
export const LBS_PER_MWH_TO_G_PER_KWH = 0.45359237;

/**
 * WattTime v3: `GET /login` with HTTP Basic credentials for a bearer token, then
 * `GET /v3/forecast?region=...&signal_type=co2_moer&horizon_hours=0`, whose first point is the
 * current rate in lbs/MWh. An expired token (401) is renewed once.
 */
export function wattTimeSource(options: WattTimeOptions): IntensitySource {
  const base = (options.baseURL ?? 'https://api.watttime.org').replace(/\/+$/, '');
  const doFetch = options.fetch ?? fetch;
  let token: string | undefined;
  const login = async (signal: AbortSignal): Promise<string> => {
    const basic = Buffer.from(`${options.username}:${options.password}`).toString('base64');
    const body = await jsonOf(await doFetch(`${base}/login`, { headers: { authorization: `Basic ${basic}` }, signal }), 'WattTime login');
    const value = (body as { token?: unknown }).token;
    if (typeof value !== 'string' || value === '') throw new Error('WattTime login answered without a token');
    return value;
  };
  const query = `region=${encodeURIComponent(options.region)}&signal_type=${encodeURIComponent(options.signalType ?? 'co2_moer')}&horizon_hours=0`;
  return {
    name: `watttime:${options.region}`,
    async fetch(signal) {
      for (let attempt = 0; attempt < 2; attempt++) {
        token ??= await login(signal);
        const res = await doFetch(`${base}/v3/forecast?${query}`, { headers: { authorization: `Bearer ${token}` }, signal });
        if (res.status === 401 && attempt === 0) {
          token = undefined;
          await res.body?.cancel();
          continue;
        }
        const body = (await jsonOf(res, 'WattTime')) as { data?: { value?: unknown }[]; meta?: { units?: unknown } };
        const units = body.meta?.units;
        if (units !== 'lbs_co2_per_mwh') throw new Error(`WattTime answered in units ${JSON.stringify(units)}, expected lbs_co2_per_mwh`);
        return finiteIntensity(body.data?.[0]?.value, 'WattTime forecast value') * LBS_PER_MWH_TO_G_PER_KWH;
      }
      throw new Error('WattTime refused a fresh token');
    },
  };
}

export interface CachedSignalOptions {
  /** A source per site id; sites without one get `fallback`. */
  readonly sources: ReadonlyMap<string, IntensitySource>;
  /** Value per site when nothing was ever fetched (gCO2e/kWh). */
  readonly fallback: (siteId: string) => number;
  /** A fetched value is refreshed after this (ms). Default 5 minutes. */
  readonly ttlMs?: number;
  /** A fetch taking longer is abandoned (ms). Default 5,000. */
  readonly timeoutMs?: number;
  /** Wall-clock milliseconds (injected for tests). Default Date.now. */
  readonly now?: () => number;
  /** Told of each failed fetch (the last value stays in use). */
  readonly onError?: (siteId: string, error: unknown) => void;
}

interface Entry {
  value: number | undefined;
  fetchedAt: number;
  inFlight: Promise<void> | undefined;
}

/**
 * A carbon signal over remote sources: answers from a cache at once, refreshing in the background
 * when a value is older than its TTL; on failure or timeout keeps the last known value, or the
 * fallback when there is none. Never throws and never makes a request wait.
 */
export class CachedCarbonSignal implements CarbonSignal {
  readonly #options: CachedSignalOptions;
  readonly #entries = new Map<string, Entry>();
  #closed = false;
  readonly #aborts = new Set<AbortController>();

  constructor(options: CachedSignalOptions) {
    this.#options = options;
    for (const siteId of options.sources.keys()) this.#entries.set(siteId, { value: undefined, fetchedAt: Number.NEGATIVE_INFINITY, inFlight: undefined });
  }

  gramsPerKWh(siteId: string): number {
    const entry = this.#entries.get(siteId);
    if (!entry) return this.#options.fallback(siteId);
    const now = (this.#options.now ?? Date.now)();
    if (now - entry.fetchedAt >= (this.#options.ttlMs ?? 300_000)) void this.#refresh(siteId, entry);
    return entry.value ?? this.#options.fallback(siteId);
  }

  /** Fetches every site now (or joins fetches in flight); resolves when all have settled. */
  async refreshAll(): Promise<void> {
    await Promise.all([...this.#entries].map(([siteId, entry]) => this.#refresh(siteId, entry)));
  }

  close(): Promise<void> {
    this.#closed = true;
    for (const abort of this.#aborts) abort.abort();
    return Promise.resolve();
  }

  #refresh(siteId: string, entry: Entry): Promise<void> {
    if (this.#closed) return Promise.resolve();
    entry.inFlight ??= (async () => {
      const abort = new AbortController();
      this.#aborts.add(abort);
      const timer = setTimeout(() => abort.abort(new Error(`timed out after ${this.#options.timeoutMs ?? 5_000} ms`)), this.#options.timeoutMs ?? 5_000);
      try {
        entry.value = await this.#options.sources.get(siteId)!.fetch(abort.signal);
      } catch (err) {
        this.#options.onError?.(siteId, abort.signal.aborted ? abort.signal.reason : err);
      } finally {
        clearTimeout(timer);
        this.#aborts.delete(abort);
        // A failed fetch also waits a TTL before the next try, so a dead API is not hammered.
        entry.fetchedAt = (this.#options.now ?? Date.now)();
        entry.inFlight = undefined;
      }
    })();
    return entry.inFlight;
  }
}

async function jsonOf(res: Response, what: string): Promise<unknown> {
  const text = await res.text();
  if (!res.ok) throw new Error(`${what} answered ${res.status}: ${text.slice(0, 200)}`);
  try {
    return JSON.parse(text);
  } catch {
    throw new Error(`${what} answered with something that is not JSON: ${JSON.stringify(text.slice(0, 80))}`);
  }
}

function finiteIntensity(value: unknown, what: string): number {
  if (typeof value !== 'number' || !Number.isFinite(value) || value < 0) throw new Error(`${what} is not a non-negative number: ${JSON.stringify(value)}`);
  return value;
}
