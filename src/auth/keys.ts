import { createHash, randomBytes, timingSafeEqual } from 'node:crypto';

/** The sha256 of a key in hex: what the config holds instead of the key. */
export function hashKey(key: string): string {
  return createHash('sha256').update(key, 'utf8').digest('hex');
}

/** A new random gateway key (`fsk-` and 256 random bits, base64url) and its hash for the config. */
export function mintKey(): { readonly key: string; readonly sha256: string } {
  const key = `fsk-${randomBytes(32).toString('base64url')}`;
  return { key, sha256: hashKey(key) };
}

const BEARER = /^bearer[ \t]+(\S+)[ \t]*$/i;

/**
 * The key a request presents: `Authorization: Bearer <key>` (OpenAI clients), else `api-key: <key>`
 * (Azure OpenAI clients). `undefined` when it sends neither, `null` when its Authorization is not a
 * bearer token.
 */
export function presentedKey(header: (name: string) => string | undefined): string | undefined | null {
  const authorization = header('authorization');
  if (authorization !== undefined && authorization !== '') return BEARER.exec(authorization)?.[1] ?? null;
  const apiKey = header('api-key')?.trim();
  return apiKey === undefined || apiKey === '' ? undefined : apiKey;
}

/**
 * Keys by their hashes. A presented key is hashed first, so whatever the lookup's timing reveals is
 * about the hash of the attacker's own guess, which says nothing about a stored key (finding a key
 * whose hash shares a stored hash's prefix takes a preimage search); the match is then confirmed in
 * constant time. One lookup costs a sha256 and a map probe, however many keys are configured
 * (a linear constant-time scan cost 0.2 ms a request with 1,000 keys).
 */
export class KeyRing<T> {
  readonly #byHash: ReadonlyMap<string, { readonly digest: Buffer; readonly value: T }>;

  constructor(entries: readonly (readonly [sha256Hex: string, value: T])[]) {
    this.#byHash = new Map(entries.map(([sha256, value]) => [sha256, { digest: Buffer.from(sha256, 'hex'), value }]));
  }

  get size(): number {
    return this.#byHash.size;
  }

  find(key: string): T | undefined {
    const digest = createHash('sha256').update(key, 'utf8').digest();
    const entry = this.#byHash.get(digest.toString('hex'));
    return entry !== undefined && timingSafeEqual(digest, entry.digest) ? entry.value : undefined;
  }
}
