import type { Readable } from 'node:stream';
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
  /**
   * Asked (by the `failover` layer) for another target when this one failed before anything reached
   * the client: it gives up the failed attempt and resolves with the next, or rejects with the error
   * the client should see. Absent: no failover.
   */
  readonly reroute?: ((failed: Backend, cause: unknown) => Promise<Retarget>) | undefined;
}

/** Where to try next, and what to send there (headers and body may differ per backend). */
export interface Retarget {
  readonly backend: Backend;
  readonly request: UpstreamRequest;
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

/** Behaviour wrapped around a transport (failover, health marking...), in the manner of composed dispatchers. */
export type TransportLayer = (next: Transport) => Transport;

/** `base` wrapped by `layers`, the first innermost: compose(t, a, b) sends through b, then a, then t. */
export function compose(base: Transport, ...layers: readonly TransportLayer[]): Transport {
  return layers.reduce<Transport>((inner, layer) => layer(inner), base);
}

/**
 * Typed to hold any code: an error's `code` may be of any type, and only these strings match.
 * FREESH_CIRCUIT_OPEN: the outlier layer refused the send (see transport/outlier.ts).
 */
const CONNECT_ERRORS: ReadonlySet<unknown> = new Set(['ECONNREFUSED', 'ENOTFOUND', 'EHOSTUNREACH', 'ENETUNREACH', 'EAI_AGAIN', 'UND_ERR_CONNECT_TIMEOUT', 'FREESH_CIRCUIT_OPEN']);

/**
 * True when the backend never received the request, so sending it elsewhere cannot duplicate work.
 * Looks at the error and at most three causes beneath it (fetch wraps a refused connection in a
 * `TypeError`), so a cyclic chain of causes ends.
 */
export function isConnectError(err: unknown): boolean {
  let current: unknown = err;
  for (let depth = 0; depth < 4 && current instanceof Error; depth++) {
    if (CONNECT_ERRORS.has((current as { code?: unknown }).code)) return true;
    current = current.cause;
  }
  return false;
}
