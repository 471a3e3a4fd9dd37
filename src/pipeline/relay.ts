import type { Readable } from 'node:stream';
import type { UpstreamResponse } from '../transport/transport.js';
import type { Backend, Endpoint, RoutingRequest } from '../types.js';
import type { Placement } from './lifecycle.js';

const HOP_BY_HOP = new Set(['connection', 'keep-alive', 'transfer-encoding', 'proxy-authenticate', 'proxy-authorization', 'te', 'trailer', 'upgrade']);

export const UPSTREAM_PATH: Readonly<Record<Endpoint, string>> = { 'chat.completions': '/chat/completions', completions: '/completions' };

/** Headers sent upstream: the body's type, the request id, and the backend's own key in place of the caller's. */
export function upstreamHeaders(request: RoutingRequest, backend: Backend): Record<string, string> {
  const headers: Record<string, string> = { 'content-type': 'application/json', 'x-request-id': request.id };
  if (backend.apiKey) headers.authorization = `Bearer ${backend.apiKey}`;
  return headers;
}

/** The backend's headers less hop-by-hop ones, plus what the router decided (`x-freesh-*`). */
export function responseHeaders(request: RoutingRequest, placement: Placement, upstream: UpstreamResponse): Record<string, string | string[]> {
  const headers: Record<string, string | string[]> = {};
  for (const name in upstream.headers) {
    const value = upstream.headers[name];
    if (value !== undefined && !HOP_BY_HOP.has(name)) headers[name] = value;
  }
  const { backend, cost, prediction } = placement;
  headers['x-freesh-backend'] = backend.id;
  headers['x-freesh-site'] = backend.site.id;
  headers['x-freesh-predicted-tokens'] = String(prediction.outputTokensP50);
  headers['x-freesh-energy-j'] = cost.energyJ.toFixed(1);
  headers['x-freesh-carbon-g'] = cost.carbonG.toFixed(4);
  headers['x-request-id'] = request.id;
  return headers;
}

/** Marks a relay ended because its consumer destroyed the body (the client went away). */
export const CONSUMER_GONE = Symbol('consumer gone');

/**
 * Calls `done` once when the relayed body ends: with nothing on a clean end, CONSUMER_GONE when the
 * consumer destroyed it or its signal fired, or the error that broke it. Listeners for 'end',
 * 'error' and 'close' only: they observe the body without setting it flowing. 'close' without an
 * earlier 'end' or 'error' means the consumer destroyed it; so does an error once the consumer
 * destroyed the body (undici reports a body destroyed before its end as an abort error) or after
 * the caller's signal fired. `on`, not `once`: each fires at most once, and `once` wraps every
 * listener (see the node listener).
 */
export function onRelayEnd(body: Readable, aborted: () => boolean, done: (err: unknown) => void): void {
  let ended = false;
  const end = (err: unknown): void => {
    if (ended) return;
    ended = true;
    done(err);
  };
  body.on('end', () => end(undefined));
  body.on('error', (err) => end(aborted() || isAbort(err) ? CONSUMER_GONE : err));
  body.on('close', () => end(CONSUMER_GONE));
}

/** An error that says the request was aborted from this side (undici's RequestAbortedError, an AbortError). */
function isAbort(err: unknown): boolean {
  const { code, name } = (err ?? {}) as { code?: unknown; name?: unknown };
  return code === 'UND_ERR_ABORTED' || name === 'AbortError';
}

/**
 * Reads at most 512 bytes of an error body for the message, then discards the rest. A `secret` (the
 * backend's key) a backend echoes in it is blanked out: the message goes to the client.
 */
export async function readSnippet(body: Readable, secret?: string): Promise<string> {
  let text = '';
  try {
    for await (const chunk of body) {
      text += String(chunk);
      if (text.length >= 512) break;
    }
  } catch {
    // A broken error body still leaves a status to report.
  }
  body.destroy();
  const snippet = secret ? text.split(secret).join('[redacted]') : text;
  return snippet.slice(0, 512).replace(/\s+/g, ' ').trim();
}
