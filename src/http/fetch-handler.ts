import type { Readable } from 'node:stream';
import { CancelToken } from '../cancel.js';
import { type FreeshError, routeNotFound, toFreeshError } from '../errors.js';
import type { Router } from '../router.js';
import { checkAccess, errorHeaders, info, match, readLimited, sseErrorEvent } from './routes.js';

export interface FetchHandlerOptions {
  /** Path the routes are mounted under, e.g. `/llm` serves `/llm/v1/chat/completions`. Default ''. */
  readonly basePath?: string;
}

/** A fetch-API handler (Hono, Workers-style servers, tests): always resolves with a Response. */
export type FetchHandler = (request: Request) => Promise<Response>;

/**
 * The router as a fetch `(Request) → Response` handler, over the same route table, body limit,
 * error answers and stream error event as the node listener. The client going away — the request's
 * signal aborted, or the response body cancelled — aborts the upstream.
 */
export function createFetchHandler(router: Router, options: FetchHandlerOptions = {}): FetchHandler {
  const base = (options.basePath ?? '').replace(/\/+$/, '');
  const bodyLimit = router.config.limits.bodyLimitBytes;

  return async function freeshFetchHandler(request) {
    let path = new URL(request.url).pathname;
    if (base) {
      if (path !== base && !path.startsWith(`${base}/`)) return errorResponse(routeNotFound(request.method, path));
      path = path.slice(base.length) || '/';
    }
    const route = match(request.method, path);
    if ('code' in route) return errorResponse(route);
    try {
      if (route.kind !== 'completion') {
        const denied = checkAccess(router, route, (name) => request.headers.get(name) ?? undefined);
        if (denied) return errorResponse(denied);
        const answer = await info(router, route.kind);
        return new Response(request.method === 'HEAD' ? null : answer.body, { status: answer.status, headers: answer.headers });
      }
      const length = request.headers.get('content-length');
      const body = await readLimited(request.body ? chunksOf(request.body) : [], length === null ? undefined : Number(length), bodyLimit);
      const gone = clientGone(request.signal);
      const routed = await router.dispatch({
        endpoint: route.endpoint,
        body,
        header: (name) => request.headers.get(name) ?? undefined,
        signal: gone,
      });
      const headers = new Headers();
      for (const [name, value] of Object.entries(routed.headers)) {
        if (Array.isArray(value)) for (const v of value) headers.append(name, v);
        else headers.set(name, value);
      }
      return new Response(relay(routed.body, gone, routed.eventStream ? (err) => sseErrorEvent(routed.placement.backend.id, err) : undefined), {
        status: routed.status,
        headers,
      });
    } catch (err) {
      return errorResponse(toFreeshError(err));
    }
  };
}

/**
 * The upstream body as a web stream. A failure mid-way ends an event stream with the error event
 * (`onError`'s text) and errors any other stream; cancelling it (the client left) fires `gone`,
 * which aborts the upstream.
 */
function relay(body: Readable, gone: CancelToken, onError: ((err: unknown) => string) | undefined): ReadableStream<Uint8Array> {
  // A server cancels the stream and aborts the request's signal when its client leaves; the abort
  // errors the upstream body a tick after the cancel closed the stream, and a closed controller
  // throws on every call (out of an event handler: an uncaught exception).
  let cancelled = false;
  return new ReadableStream<Uint8Array>({
    start(controller) {
      body.on('data', (chunk: Buffer) => {
        if (cancelled) return;
        controller.enqueue(chunk);
        if ((controller.desiredSize ?? 1) <= 0) body.pause();
      });
      body.once('end', () => {
        if (!cancelled) controller.close();
      });
      body.once('error', (err) => {
        if (cancelled) return;
        if (onError) {
          controller.enqueue(Buffer.from(onError(err)));
          controller.close();
        } else controller.error(err);
      });
    },
    pull() {
      body.resume();
    },
    cancel() {
      cancelled = true;
      gone.abort();
      body.destroy();
    },
  });
}

/**
 * A signal for the router that fires when the client leaves by either way a fetch server reports it:
 * the request's signal, or (see `relay`) the response body cancelled. Only an aborted signal tells
 * the router a relay that ended early was the client's doing, not the backend dropping it (a
 * destroyed upstream body ends with an error either way).
 */
function clientGone(signal: AbortSignal): CancelToken {
  const gone = new CancelToken();
  if (signal.aborted) gone.abort(signal.reason);
  else signal.addEventListener('abort', () => gone.abort(signal.reason), { once: true });
  return gone;
}

/** A web stream's chunks; what is left unread when the reader stops early is cancelled. */
async function* chunksOf(stream: ReadableStream<Uint8Array>): AsyncGenerator<Uint8Array> {
  const reader = stream.getReader();
  let done = false;
  try {
    while (!done) {
      const next = await reader.read();
      done = next.done;
      if (next.value) yield next.value;
    }
  } finally {
    if (!done) void reader.cancel().catch(() => undefined);
    reader.releaseLock();
  }
}

function errorResponse(error: FreeshError): Response {
  const text = error.toBody();
  return new Response(text, { status: error.status, headers: errorHeaders(error, text) });
}
