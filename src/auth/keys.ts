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
 * Keys by their hashes. A presented key is hashed, then compared with every configured hash in
 * constant time and without stopping at a match, so neither the compare nor the number of compares
 * tells an attacker how close a guess came (about 0.1 µs per configured key).
 */
export class KeyRing<T> {
  readonly #entries: readonly { readonly digest: Buffer; readonly value: T }[];

  constructor(entries: readonly (readonly [sha256Hex: string, value: T])[]) {
    this.#entries = entries.map(([sha256, value]) => ({ digest: Buffer.from(sha256, 'hex'), value }));
  }

  get size(): number {
    return this.#entries.length;
  }

  find(key: string): T | undefined {
    const digest = createHash('sha256').update(key, 'utf8').digest();
    let found: T | undefined;
    for (const entry of this.#entries) {
      if (timingSafeEqual(digest, entry.digest)) found = entry.value;
    }
    return found;
  }
}
