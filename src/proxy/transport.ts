import { Readable } from 'node:stream';
import { Pool } from 'undici';
import type { CancelSignal } from '../cancel.js';
import type { Backend } from '../types.js';

export interface UpstreamRequest {
  readonly method: 'GET' | 'POST';
  /** Path below the backend's baseURL, e.g. `/chat/completions`. */
  readonly path: string;
  readonly headers: Readonly<Record<string, string>>;
  readonly body?: Uint8Array | undefined;
  readonly signal?: CancelSignal | undefined;
  /** Sees each body chunk before the consumer does (token metering); must be cheap and must not throw. */
  readonly onData?: ((chunk: Buffer) => void) | undefined;
}

export interface UpstreamResponse {
  readonly status: number;
  readonly headers: Readonly<Record<string, string | string[] | undefined>>;
  /** The response body as it arrives; destroying it aborts the upstream request. */
  readonly body: Readable;
}

/**
 * Carries a request to a backend. Contract: resolves once the backend's final status and headers
 * arrive; rejects only before that (connection refused, timeout before headers, abort). Errors
 * during the body surface as an 'error' event on `body`; destroying `body` aborts the request.
 */
export interface Transport {
  send(backend: Backend, request: UpstreamRequest): Promise<UpstreamResponse>;
  close(): Promise<void>;
}

export interface UndiciTransportOptions {
  /** Time to establish a connection (ms). Default 5,000. */
  readonly connectTimeoutMs?: number;
  /** Time from sending to the backend's headers, which for non-streamed completions is the whole generation (ms). Default 600,000. */
  readonly headersTimeoutMs?: number;
  /** Longest silence between body chunks (ms). Default 300,000. */
  readonly bodyTimeoutMs?: number;
  /** Idle keep-alive connections are closed after this (ms). Default 60,000. */
  readonly keepAliveTimeoutMs?: number;
}

/** Keep-alive connection pools, one per backend origin, over undici. */
export class UndiciTransport implements Transport {
  readonly #pools = new Map<string, { pool: Pool; prefix: string }>();
  readonly #options: Required<UndiciTransportOptions>;

  constructor(options: UndiciTransportOptions = {}) {
    this.#options = {
      connectTimeoutMs: options.connectTimeoutMs ?? 5_000,
      headersTimeoutMs: options.headersTimeoutMs ?? 600_000,
      bodyTimeoutMs: options.bodyTimeoutMs ?? 300_000,
      keepAliveTimeoutMs: options.keepAliveTimeoutMs ?? 60_000,
    };
  }

  async send(backend: Backend, request: UpstreamRequest): Promise<UpstreamResponse> {
    const { pool, prefix } = this.#poolFor(backend);
    const response = await pool.request({
      method: request.method,
      path: prefix + request.path,
      headers: request.headers,
      body: request.body,
      // undici accepts any object with addEventListener/removeEventListener as a signal.
      signal: request.signal as AbortSignal | undefined,
    });
    const body = request.onData ? tap(response.body, request.onData, request.signal) : response.body;
    return { status: response.statusCode, headers: response.headers, body };
  }

  async close(): Promise<void> {
    const pools = [...this.#pools.values()];
    this.#pools.clear();
    await Promise.all(pools.map(({ pool }) => pool.close().catch(() => pool.destroy())));
  }

  #poolFor(backend: Backend): { pool: Pool; prefix: string } {
    let entry = this.#pools.get(backend.id);
    if (!entry) {
      const url = new URL(backend.baseURL);
      const o = this.#options;
      entry = {
        pool: new Pool(url.origin, {
          // One connection per concurrent request, plus headroom for requests finishing as others start.
          connections: backend.maxConcurrency + 8,
          connect: { timeout: o.connectTimeoutMs },
          headersTimeout: o.headersTimeoutMs,
          bodyTimeout: o.bodyTimeoutMs,
          keepAliveTimeout: o.keepAliveTimeoutMs,
        }),
        prefix: url.pathname.replace(/\/+$/, ''),
      };
      this.#pools.set(backend.id, entry);
    }
    return entry;
  }
}

const CONNECT_ERRORS = new Set(['ECONNREFUSED', 'ENOTFOUND', 'EHOSTUNREACH', 'ENETUNREACH', 'EAI_AGAIN', 'UND_ERR_CONNECT_TIMEOUT']);

/** True when the backend never received the request, so sending it elsewhere cannot duplicate work. */
export function isConnectError(err: unknown): boolean {
  let current: unknown = err;
  for (let depth = 0; depth < 4 && current instanceof Error; depth++) {
    const code = (current as { code?: unknown }).code;
    if (typeof code === 'string' && CONNECT_ERRORS.has(code)) return true;
    current = current.cause;
  }
  return false;
}

/**
 * Relays `source` through a new Readable, handing each chunk to `onData` on the way, with
 * backpressure both ways. (A 'data' listener on `source` itself would set it flowing before the
 * consumer listens, and stream.pipeline() costs an AbortController and a DOMException per call.)
 * Destroying the relay aborts the source; an abort through `signal` ends the relay without an error.
 */
function tap(source: Readable, onData: (chunk: Buffer) => void, signal: CancelSignal | undefined): Readable {
  const relay = new Readable({
    read: () => void source.resume(),
    destroy(err, callback) {
      if (!source.destroyed) source.destroy();
      callback(err);
    },
  });
  source.on('data', (chunk: Buffer) => {
    onData(chunk);
    if (!relay.push(chunk)) source.pause();
  });
  source.once('end', () => relay.push(null));
  source.once('error', (err) => {
    if (!relay.destroyed) relay.destroy(signal?.aborted ? undefined : err);
  });
  return relay;
}
