/**
 * freesh for the official `openai` client (`freesh/openai`): a `fetch` that hands the client's
 * requests to the router in-process (the fetch edge, `createFetchHandler`; no HTTP hop), so
 * `client.chat.completions.create({ stream: true, … })` is routed, streamed and metered as through
 * the proxy.
 *
 *   const client = new OpenAI(routedClientOptions(router));
 *   const client = new OpenAI({ baseURL: ROUTED_BASE_URL, apiKey: 'unused', fetch: routedFetch(router) });
 *
 * Tenant and SLO class go per call as headers (`{ headers: { 'x-freesh-tenant': 'acme',
 * 'x-freesh-slo': 'batch' } }`) or for every call as the client's `defaultHeaders`.
 *
 * Retries do not multiply: the router already fails over between backends before the first byte
 * (`limits.retries`) and waits for a slot in its queue (`limits.maxQueueMs`), so every error it
 * answers itself carries `x-should-retry: false` (as through the proxy), which the client obeys
 * whatever its `maxRetries`. Its error keeps the router's status, body and `retry-after`: a full queue is a
 * `RateLimitError` (429), no usable backend an `InternalServerError` (503). A backend's own answer
 * (a relayed 4xx) is left to the client's usual rules.
 */
import { createFetchHandler, type Router } from '../../src/index.js';

export type { FreeshDecision } from '../common/answer.js';
export { decisionOf } from '../common/answer.js';

/** A placeholder base URL for a routed client: only its path (`/v1`) matters, nothing connects to it. */
export const ROUTED_BASE_URL = 'http://freesh.local/v1';

/** The `fetch` signature the openai client takes (and the global `fetch` has). */
export type RoutedFetch = (input: string | URL | Request, init?: RequestInit) => Promise<Response>;

export interface RoutedFetchOptions {
  /**
   * The path the routes are mounted under in the client's `baseURL`: with `basePath: '/llm'`, the
   * base URL is `http://freesh.local/llm/v1`. Default ''.
   */
  readonly basePath?: string;
}

/** A `fetch` for the openai client (its `fetch` option) that sends each request through the router in this process. */
export function routedFetch(router: Router, options: RoutedFetchOptions = {}): RoutedFetch {
  const handle = createFetchHandler(router, { basePath: options.basePath ?? '' });
  return function freeshFetch(input, init) {
    return handle(new Request(input, init));
  };
}

/** What `new OpenAI(…)` needs to go through the router: a placeholder base URL and API key, and the routed fetch. */
export function routedClientOptions(router: Router, options: RoutedFetchOptions = {}): { baseURL: string; apiKey: string; fetch: RoutedFetch } {
  const base = (options.basePath ?? '').replace(/\/+$/, '');
  return { baseURL: `http://freesh.local${base}/v1`, apiKey: 'freesh-routed', fetch: routedFetch(router, options) };
}
