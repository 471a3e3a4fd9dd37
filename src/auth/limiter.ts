import type { Clock, Timer } from '../clock.js';
import { rateLimited } from '../errors.js';
import type { CompletionEvent, LifecyclePlugin } from '../pipeline/lifecycle.js';
import type { BucketsTaken, BucketTake, Lease, StateStore } from '../state/store.js';
import type { RoutingRequest } from '../types.js';
import type { AuthConfig, Principal, RateLimits } from './gate.js';

export interface RateLimiterOptions {
  readonly store: StateStore;
  readonly clock: Clock;
  /** A concurrency slot is a lease of this duration, renewed every third of it while its request runs (ms). */
  readonly leaseTtlMs: number;
  /** Limits per tenant (`auth.tenants`). */
  readonly tenants: Readonly<Record<string, RateLimits>>;
  /** Output tokens taken for a request without `max_tokens` until its real count is known. */
  readonly outputTokensEstimate: number;
  /**
   * Told of a store failure. The request is then admitted without that limit: a store fault lowers
   * protection, never refuses paying traffic (a Redis store that is down already answers from local
   * state, so this is a slow reply or a bug).
   */
  readonly onStoreError: (err: unknown) => void;
}

/** The named set of buckets (`StateStore.takeTokens`) every replica takes limits from. */
export const RATE_LIMIT_BUCKETS = 'rate-limits';
/** A request refused a concurrency slot is told to come back after this long: slots free as requests end, unannounced. */
const CONCURRENCY_RETRY_MS = 1_000;

type Unit = 'requests' | 'tokens';

interface Subject {
  readonly kind: 'key' | 'tenant';
  readonly name: string;
  readonly limits: RateLimits;
}

interface Take extends BucketTake {
  readonly subject: Subject;
  readonly unit: Unit;
}

/** What an admitted request holds until it ends. */
interface Grant {
  readonly leases: readonly Lease[];
  /** Its token takes, settled at the end with the difference between estimate and real count. */
  readonly tokenTakes: readonly Take[];
  readonly estimatedTokens: number;
}

/** True when the config sets any limit, on a key or a tenant. */
export function hasLimits(config: AuthConfig): boolean {
  return [...config.keys.map((k) => k.limits), ...Object.values(config.tenants)].some(limited);
}

function limited(limits: RateLimits | undefined): limits is RateLimits {
  return limits !== undefined && (limits.requestsPerMinute !== undefined || limits.tokensPerMinute !== undefined || limits.maxConcurrent !== undefined);
}

/**
 * Per-key and per-tenant limits, shared by every replica through the state store: token buckets on
 * requests and on tokens (`takeTokens`, all or none), and a cap on concurrent requests (leases on
 * `limit:key:<id>` and `limit:tenant:<name>`, which expire with a replica that dies). As a lifecycle
 * plugin it learns when a request ends: it frees the request's slots and settles its tokens.
 */
export class RateLimiter implements LifecyclePlugin {
  readonly name = 'rate-limits';
  readonly #o: RateLimiterOptions;
  readonly #grants = new Map<RoutingRequest, Grant>();
  readonly #held = new Set<Lease>();
  #renewal: Timer | undefined;
  #closed = false;

  constructor(options: RateLimiterOptions) {
    this.#o = options;
  }

  /**
   * Takes the request's share of its key's and tenant's limits, or throws 429 `rate_limit_exceeded`
   * (taking nothing). Resolves with the `x-ratelimit-*` headers for the response (undefined when no
   * bucket applies). The request then holds its slots until `end` (or `complete`).
   */
  async acquire(principal: Principal, request: RoutingRequest): Promise<Record<string, string> | undefined> {
    const subjects: Subject[] = [];
    if (limited(principal.limits)) subjects.push({ kind: 'key', name: principal.id, limits: principal.limits });
    const tenantLimits = this.#o.tenants[request.tenant];
    if (limited(tenantLimits)) subjects.push({ kind: 'tenant', name: request.tenant, limits: tenantLimits });
    if (subjects.length === 0) return undefined;

    const leases = await this.#acquireSlots(subjects);
    const estimatedTokens = request.promptTokens + (request.maxTokens ?? this.#o.outputTokensEstimate);
    const takes: Take[] = [];
    for (const subject of subjects) {
      const { requestsPerMinute, tokensPerMinute } = subject.limits;
      if (requestsPerMinute !== undefined) takes.push(take(subject, 'requests', requestsPerMinute, 1));
      if (tokensPerMinute !== undefined) takes.push(take(subject, 'tokens', tokensPerMinute, estimatedTokens));
    }
    let taken: BucketsTaken | undefined;
    if (takes.length > 0) {
      try {
        taken = await this.#o.store.takeTokens(RATE_LIMIT_BUCKETS, takes);
      } catch (err) {
        this.#o.onStoreError(err);
      }
    }
    let headers: Record<string, string> | undefined;
    let tokenTakes: readonly Take[] = [];
    if (taken !== undefined) {
      headers = rateLimitHeaders(takes, taken.levels);
      if (!taken.granted) {
        this.#release(leases);
        const levels = taken.levels;
        const short = takes.find((t, i) => Math.min(t.amount, t.capacity) > levels[i]!) ?? takes[0]!;
        throw rateLimited(
          `Rate limit reached for ${short.subject.kind} \`${short.subject.name}\` on ${short.unit} per minute: limit ${short.capacity}, requested ${short.amount}`,
          taken.retryInMs,
          headers,
        );
      }
      tokenTakes = takes.filter((t) => t.unit === 'tokens');
    }
    if (leases.length > 0 || tokenTakes.length > 0) this.#grants.set(request, { leases, tokenTakes, estimatedTokens });
    return headers;
  }

  /**
   * The request ended (served or not): frees its concurrency slots and, when its output is counted,
   * gives back or takes the difference between its estimated and its real tokens. Idempotent.
   */
  end(request: RoutingRequest, outputTokens: number | undefined): void {
    const grant = this.#grants.get(request);
    if (grant === undefined) return;
    this.#grants.delete(request);
    this.#release(grant.leases);
    if (outputTokens === undefined || grant.tokenTakes.length === 0) return;
    const extra = request.promptTokens + outputTokens - grant.estimatedTokens;
    if (extra === 0) return;
    const settle = grant.tokenTakes.map(({ key, capacity, perSecond }) => ({ key, capacity, perSecond, amount: extra }));
    this.#o.store.takeTokens(RATE_LIMIT_BUCKETS, settle, true).catch(this.#o.onStoreError);
  }

  complete(event: CompletionEvent): void {
    this.end(event.request, event.outputTokens);
  }

  /** Requests holding slots or unsettled tokens. */
  get holding(): number {
    return this.#grants.size;
  }

  /** Stops renewing; held slots expire with their leases. */
  close(): void {
    this.#closed = true;
    this.#renewal?.cancel();
    this.#renewal = undefined;
  }

  async #acquireSlots(subjects: readonly Subject[]): Promise<Lease[]> {
    const leases: Lease[] = [];
    for (const { kind, name, limits } of subjects) {
      if (limits.maxConcurrent === undefined) continue;
      let lease: Lease | undefined;
      try {
        lease = await this.#o.store.tryAcquire(`limit:${kind}:${name}`, limits.maxConcurrent, this.#o.leaseTtlMs);
      } catch (err) {
        this.#o.onStoreError(err);
        continue;
      }
      if (lease === undefined) {
        this.#release(leases);
        throw rateLimited(`Too many concurrent requests for ${kind} \`${name}\`: at most ${limits.maxConcurrent}`, CONCURRENCY_RETRY_MS, {});
      }
      leases.push(lease);
      this.#held.add(lease);
    }
    if (leases.length > 0 && !this.#closed) this.#renewal ??= this.#o.clock.setTimer(() => void this.#renew(), this.#o.leaseTtlMs / 3);
    return leases;
  }

  #release(leases: readonly Lease[]): void {
    for (const lease of leases) {
      this.#held.delete(lease);
      this.#o.store.release(lease).catch(this.#o.onStoreError);
    }
  }

  async #renew(): Promise<void> {
    this.#renewal = undefined;
    await Promise.all(
      [...this.#held].map((lease) =>
        this.#o.store.renew(lease, this.#o.leaseTtlMs).then(
          // Expired in the store (this process stalled past its TTL): the slot may be reused; stop renewing it.
          (kept) => void (kept || this.#held.delete(lease)),
          this.#o.onStoreError,
        ),
      ),
    );
    if (this.#held.size > 0 && !this.#closed) this.#renewal ??= this.#o.clock.setTimer(() => void this.#renew(), this.#o.leaseTtlMs / 3);
  }
}

/** A bucket of `perMinute`, refilled evenly over a minute. */
function take(subject: Subject, unit: Unit, perMinute: number, amount: number): Take {
  return { key: `${subject.kind}:${subject.name}:${unit}`, capacity: perMinute, perSecond: perMinute / 60, amount, subject, unit };
}

/**
 * OpenAI's `x-ratelimit-{limit,remaining,reset}-{requests,tokens}`: for each unit, the bucket (key's
 * or tenant's) with the least left, after this request's take.
 */
export function rateLimitHeaders(takes: readonly (BucketTake & { readonly unit: Unit })[], levels: readonly number[]): Record<string, string> {
  const headers: Record<string, string> = {};
  for (const unit of ['requests', 'tokens'] as const) {
    let tightest = -1;
    takes.forEach((t, i) => {
      if (t.unit === unit && (tightest === -1 || levels[i]! < levels[tightest]!)) tightest = i;
    });
    if (tightest === -1) continue;
    const { capacity, perSecond } = takes[tightest]!;
    const level = levels[tightest]!;
    headers[`x-ratelimit-limit-${unit}`] = String(capacity);
    headers[`x-ratelimit-remaining-${unit}`] = String(Math.max(0, Math.floor(level)));
    headers[`x-ratelimit-reset-${unit}`] = formatReset(((capacity - level) * 1000) / perSecond);
  }
  return headers;
}

/** A duration as OpenAI writes its resets (Go's style): `20ms`, `1.5s`, `6m0s`, `1h2m3s`. */
export function formatReset(ms: number): string {
  const total = Math.max(0, Math.ceil(ms));
  if (total < 1_000) return `${total}ms`;
  const hours = Math.floor(total / 3_600_000);
  const minutes = Math.floor((total % 3_600_000) / 60_000);
  const seconds = (total % 60_000) / 1_000;
  return `${hours > 0 ? `${hours}h` : ''}${hours > 0 || minutes > 0 ? `${minutes}m` : ''}${seconds}s`;
}
