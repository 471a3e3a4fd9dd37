import type { z } from 'zod';
import type { authSchema, rateLimitsSchema } from '../config/schema.js';
import { type FreeshError, invalidApiKey, notAllowed } from '../errors.js';
import { TENANT_HEADER } from '../request/parse.js';
import type { RoutingRequest } from '../types.js';
import { KeyRing, presentedKey } from './keys.js';

export type AuthConfig = z.output<typeof authSchema>;
export type RateLimits = z.output<typeof rateLimitsSchema>;
type HeaderReader = (name: string) => string | undefined;

/** The holder of a valid API key, as its config says. */
export interface Principal {
  /** The key's name (its `id`, or its hash's first 8 hex digits); never the key. */
  readonly id: string;
  readonly tenant: string;
  /** Models it may use; undefined: every one. */
  readonly models: ReadonlySet<string> | undefined;
  /** SLO classes it may use; undefined: every one. */
  readonly sloClasses: ReadonlySet<string> | undefined;
  /** Whether its own `x-freesh-*` headers are read. */
  readonly freeshHeaders: boolean;
  readonly limits: RateLimits;
}

/** Who may use a route once `auth` is configured: anyone, any valid key (or admin key), or an admin key only. */
export type Access = 'open' | 'key' | 'admin';

const FREESH_PREFIX = 'x-freesh-';

/**
 * Checks gateway API keys (the config's `auth` section): who a request comes from, what it may use,
 * and which admin routes it may read. Keys are held as hashes only (see KeyRing).
 */
export class Gate {
  readonly #keys: KeyRing<Principal>;
  readonly #admins: KeyRing<true>;

  constructor(config: AuthConfig) {
    this.#keys = new KeyRing(
      config.keys.map((k) => [
        k.sha256,
        Object.freeze({
          id: k.id ?? k.sha256.slice(0, 8),
          tenant: k.tenant,
          models: k.models && new Set(k.models),
          sloClasses: k.sloClasses && new Set(k.sloClasses),
          freeshHeaders: k.freeshHeaders,
          limits: k.limits,
        }),
      ]),
    );
    this.#admins = new KeyRing(config.adminKeys.map((sha256) => [sha256, true as const]));
  }

  /** Whether completions need a key (some are configured). */
  get keysRequired(): boolean {
    return this.#keys.size > 0;
  }

  /**
   * The principal of a completion request; undefined when no keys are configured (completions are
   * open). Throws 401 `invalid_api_key` for a missing, malformed or unknown key.
   */
  authenticate(header: HeaderReader): Principal | undefined {
    if (!this.keysRequired) return undefined;
    const key = presentedKey(header);
    if (key === undefined) throw invalidApiKey('Missing API key');
    if (key === null) throw invalidApiKey('The Authorization header is not a bearer token');
    const principal = this.#keys.find(key);
    if (principal === undefined) throw invalidApiKey('Invalid API key');
    return principal;
  }

  /**
   * The headers the router reads for this principal: its tenant in place of the client's
   * `x-freesh-tenant`, and no other `x-freesh-*` header, unless the key may set them (then a
   * client's tenant header still wins over the key's).
   */
  headers(principal: Principal, header: HeaderReader): HeaderReader {
    if (principal.freeshHeaders) {
      return function keyHeaders(name) {
        return name === TENANT_HEADER ? (header(name) || principal.tenant) : header(name);
      };
    }
    return function keyHeaders(name) {
      if (name === TENANT_HEADER) return principal.tenant;
      return name.startsWith(FREESH_PREFIX) ? undefined : header(name);
    };
  }

  /** Throws 403 when the principal may not use the request's model or SLO class. */
  authorize(principal: Principal, request: RoutingRequest): void {
    if (principal.models !== undefined && !principal.models.has(request.model)) {
      throw notAllowed(`API key \`${principal.id}\` may not use model \`${request.model}\``, 'model_not_allowed', 'model');
    }
    if (principal.sloClasses !== undefined && !principal.sloClasses.has(request.sloClass)) {
      throw notAllowed(`API key \`${principal.id}\` may not use SLO class \`${request.sloClass}\``, 'slo_class_not_allowed', 'x-freesh-slo');
    }
  }

  /** The refusal (401, 403) of a route of this access to the request's key, or undefined when it may use it. */
  check(access: Access, header: HeaderReader): FreeshError | undefined {
    if (access === 'open' || (access === 'key' && !this.keysRequired)) return undefined;
    const key = presentedKey(header);
    if (key === undefined) return invalidApiKey(access === 'admin' ? 'Missing admin key' : 'Missing API key');
    if (key === null) return invalidApiKey('The Authorization header is not a bearer token');
    if (this.#admins.find(key)) return undefined;
    if (this.#keys.find(key) === undefined) return invalidApiKey('Invalid API key');
    return access === 'admin' ? notAllowed('This route needs an admin key', 'admin_key_required') : undefined;
  }
}
