import { bodyTooLarge, type FreeshError, invalidRequest, methodNotAllowed, routeNotFound, upstreamDropped } from '../errors.js';
import type { Access } from '../auth/gate.js';
import { type DashboardRouteKind, dashboardInfo } from '../dashboard/http.js';
import type { Router } from '../router.js';
import type { Endpoint } from '../types.js';

/**
 * The route table both HTTP edges share (the node listener and the fetch handler), so they answer
 * the same requests the same way. `access` says who may use a route once the config has an `auth`
 * section (`admin`: an admin key; `key`: any valid key, once keys are configured; default: anyone);
 * completions check their key in `Router.dispatch`.
 */
export type Route =
  | { readonly kind: 'completion'; readonly endpoint: Endpoint; readonly access?: undefined }
  | { readonly kind: 'models' | 'healthz' | 'metrics'; readonly access?: Access }
  | { readonly kind: DashboardRouteKind; readonly access?: Access };

const ROUTES: Readonly<Record<string, Route>> = {
  '/v1/chat/completions': { kind: 'completion', endpoint: 'chat.completions' },
  '/v1/completions': { kind: 'completion', endpoint: 'completions' },
  '/v1/models': { kind: 'models', access: 'key' },
  '/healthz': { kind: 'healthz' },
  '/metrics': { kind: 'metrics', access: 'admin' },
  // The page and chart.js hold no data (served to anyone while the dashboard is on); the data needs an admin key.
  '/dashboard': { kind: 'dashboard' },
  '/dashboard/api/state': { kind: 'dashboard-state', access: 'admin' },
  '/dashboard/chart.js': { kind: 'dashboard-chart' },
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

const DASHBOARD_PATHS: Readonly<Record<DashboardRouteKind, string>> = { dashboard: '/dashboard', 'dashboard-state': '/dashboard/api/state', 'dashboard-chart': '/dashboard/chart.js' };

/** True for paths the edge serves (an adapter hands the others to the app). */
export function serves(path: string): boolean {
  return path in ROUTES;
}

/** The refusal (401, 403) of a route to the request's key, or undefined when it may use the route. */
export function checkAccess(router: Router, route: Route, header: (name: string) => string | undefined): FreeshError | undefined {
  return route.access === undefined || router.auth === undefined ? undefined : router.auth.check(route.access, header);
}

/** A finished answer to a GET route. */
export interface InfoResponse {
  readonly status: number;
  /** `content-type`, `content-length` (a HEAD answer keeps the GET's), and `retry-after` on a 503. */
  readonly headers: Readonly<Record<string, string>>;
  readonly body: string;
}

/** Answers `/v1/models`, `/healthz` (503 when no backend is usable or the router drains), `/metrics` and the dashboard's routes. */
export async function info(router: Router, kind: Exclude<Route['kind'], 'completion'>): Promise<InfoResponse> {
  if (kind === 'models') return json(200, router.modelList());
  if (kind === 'dashboard' || kind === 'dashboard-state' || kind === 'dashboard-chart') return dashboardInfo(router, kind, DASHBOARD_PATHS[kind]);
  if (kind === 'healthz') {
    const { usable, total, stateDegraded } = await router.checkHealth();
    const status = router.draining ? 'draining' : usable === 0 ? 'unavailable' : usable < total || stateDegraded ? 'degraded' : 'ok';
    // Draining answers 503 so load balancers stop sending before the server stops listening.
    const code = usable > 0 && !router.draining ? 200 : 503;
    // Open to load balancers even with keys: then it tells the status only, not the fleet's size or load.
    if (router.auth !== undefined) return json(code, { status });
    const state = stateDegraded === undefined ? {} : { state: stateDegraded ? 'local' : 'shared' };
    return json(code, { status, backends: { usable, total }, ...state, inFlight: router.inFlight });
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
  return error.headers === undefined ? headers : Object.assign(headers, error.headers);
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
