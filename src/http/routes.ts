import { bodyTooLarge, type FreeshError, invalidRequest, methodNotAllowed, routeNotFound, upstreamDropped } from '../errors.js';
import type { Router } from '../router.js';
import type { Endpoint } from '../types.js';

/**
 * The route table both HTTP edges share (the node listener and the fetch handler), so they answer
 * the same requests the same way.
 */
export type Route =
  | { readonly kind: 'completion'; readonly endpoint: Endpoint }
  | { readonly kind: 'models' | 'healthz' | 'metrics' };

const ROUTES: Readonly<Record<string, Route>> = {
  '/v1/chat/completions': { kind: 'completion', endpoint: 'chat.completions' },
  '/v1/completions': { kind: 'completion', endpoint: 'completions' },
  '/v1/models': { kind: 'models' },
  '/healthz': { kind: 'healthz' },
  '/metrics': { kind: 'metrics' },
};

/**
 * The route for a method and path (below the mount path, without the query), or the error to
 * answer: 404 for an unknown path, 405 for a known path with the wrong method.
 */
export function match(method: string, path: string): Route | FreeshError {
  const route = ROUTES[path];
  if (!route) return routeNotFound(method, path);
  if (route.kind === 'completion') return method === 'POST' ? route : methodNotAllowed(method, path, 'POST');
  return method === 'GET' || method === 'HEAD' ? route : methodNotAllowed(method, path, 'GET');
}

/** True for paths the edge serves (an adapter hands the others to the app). */
export function serves(path: string): boolean {
  return path in ROUTES;
}

/** A finished answer to a GET route. */
export interface InfoResponse {
  readonly status: number;
  /** `content-type`, `content-length` (a HEAD answer keeps the GET's), and `retry-after` on a 503. */
  readonly headers: Readonly<Record<string, string>>;
  readonly body: string;
}

/** Answers `/v1/models`, `/healthz` (503 when no backend is usable or the router drains) and `/metrics`. */
export async function info(router: Router, kind: 'models' | 'healthz' | 'metrics'): Promise<InfoResponse> {
  if (kind === 'models') return json(200, router.modelList());
  if (kind === 'healthz') {
    const { usable, total, stateDegraded } = await router.checkHealth();
    const status = router.draining ? 'draining' : usable === 0 ? 'unavailable' : usable < total || stateDegraded ? 'degraded' : 'ok';
    const state = stateDegraded === undefined ? {} : { state: stateDegraded ? 'local' : 'shared' };
    // Draining answers 503 so load balancers stop sending before the server stops listening.
    return json(usable > 0 && !router.draining ? 200 : 503, { status, backends: { usable, total }, ...state, inFlight: router.inFlight });
  }
  return answer(200, router.metrics.registry.contentType, await router.metrics.registry.metrics());
}

function json(status: number, value: unknown): InfoResponse {
  return answer(status, 'application/json', JSON.stringify(value));
}

function answer(status: number, contentType: string, body: string): InfoResponse {
  return { status, headers: withRetryAfter(status, { 'content-type': contentType, 'content-length': String(Buffer.byteLength(body)) }), body };
}

/**
 * Headers of an error answer: JSON, `x-should-retry: false`, `x-request-id` once the request was
 * parsed, and `retry-after` where waiting helps (429, 503). A refusal that carries its own estimate
 * (load shed, draining) says it in seconds and in `retry-after-ms`, and lets the client retry: the
 * request never reached a backend.
 */
export function errorHeaders(error: FreeshError, body: string): Record<string, string> {
  // The router has already failed over between backends and waited in its queue: an OpenAI client
  // retrying on its own (2 retries by default) would only multiply the load. retry-after still says when.
  const headers = withRetryAfter(error.status, {
    'content-type': 'application/json',
    'content-length': String(Buffer.byteLength(body)),
    'x-should-retry': 'false',
  });
  if (error.requestId !== undefined) headers['x-request-id'] = error.requestId;
  if (error.retryAfterMs !== undefined) {
    const ms = Math.max(1, Math.round(error.retryAfterMs));
    headers['retry-after'] = String(Math.ceil(ms / 1000));
    headers['retry-after-ms'] = String(ms);
    headers['x-should-retry'] = 'true';
  }
  return headers;
}

/** `retry-after` on a 429 or 503 from any route, `/healthz` included: each says the fleet may take work again shortly. */
function withRetryAfter(status: number, headers: Record<string, string>): Record<string, string> {
  if (status === 429 || status === 503) headers['retry-after'] = '1';
  return headers;
}

/** The event a streaming client gets when its backend drops mid-stream, in the shape OpenAI SDKs surface as an error. */
export function sseErrorEvent(backendId: string, cause: unknown): string {
  return `data: ${upstreamDropped(backendId, cause).toBody()}\n\n`;
}

/** The request body as bytes, refused with 413 as soon as it passes `limit` (before it is all buffered). */
export async function readLimited(chunks: AsyncIterable<Uint8Array> | Iterable<Uint8Array>, declaredLength: number | undefined, limit: number): Promise<Uint8Array> {
  if (declaredLength !== undefined && declaredLength > limit) throw bodyTooLarge(limit);
  const parts: Uint8Array[] = [];
  let size = 0;
  try {
    for await (const chunk of chunks) {
      size += chunk.byteLength;
      if (size > limit) throw bodyTooLarge(limit);
      parts.push(chunk);
    }
  } catch (err) {
    if ((err as FreeshError).code === 'body_too_large') throw err;
    throw invalidRequest(`Could not read the request body: ${(err as Error).message}`, undefined, 'body_read_failed');
  }
  return parts.length === 1 ? parts[0]! : Buffer.concat(parts, size);
}
