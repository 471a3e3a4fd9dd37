import type { IncomingMessage, ServerResponse } from 'node:http';
import type { Readable } from 'node:stream';
import { CancelToken } from '../cancel.js';
import { bodyTooLarge, type FreeshError, invalidRequest, routeNotFound, toFreeshError } from '../errors.js';
import type { Router, RouterCall } from '../router.js';
import type { Endpoint } from '../types.js';
import { answeredBeforeBody, bodyEnded } from './client-error.js';
import { checkAccess, errorHeaders, info, match, sseErrorEvent } from './routes.js';

/**
 * Most of a refused request's body read and discarded after the answer, so the client, still
 * uploading, reads the answer rather than a reset connection; past it the connection is cut. The
 * server's `requestTimeoutMs` bounds the time it takes.
 */
export const DRAIN_LIMIT_BYTES = 64 * 1024 * 1024;

export interface NodeHandlerOptions {
  /** Path the routes are mounted under, e.g. `/llm` serves `/llm/v1/chat/completions`. Default ''. */
  readonly basePath?: string;
}

/** A node `(req, res, next?)` listener: a server's request handler, or Express/Connect middleware. */
export type NodeHandler = (req: IncomingMessage, res: ServerResponse, next?: (err?: unknown) => void) => void;

/**
 * The router as a node HTTP listener. It serves the routes of `routes.ts` under `basePath`; another
 * path goes to `next` when there is one (middleware) and is answered 404 otherwise. A body a parser
 * already read (`req.body` as bytes, a string or parsed JSON) is used as it is.
 */
export function createNodeHandler(router: Router, options: NodeHandlerOptions = {}): NodeHandler {
  const base = (options.basePath ?? '').replace(/\/+$/, '');
  const bodyLimit = router.config.limits.bodyLimitBytes;

  return function freeshNodeHandler(req, res, next) {
    const url = req.url ?? '/';
    const q = url.indexOf('?');
    let path = q === -1 ? url : url.slice(0, q);
    if (base) {
      if (path !== base && !path.startsWith(`${base}/`)) return next ? next() : refuse(req, res, routeNotFound(req.method ?? '', path));
      path = path.slice(base.length) || '/';
    }
    const route = match(req.method ?? '', path);
    if ('code' in route) {
      if (next && route.code === 'route_not_found') return next();
      return refuse(req, res, route);
    }
    if (route.kind === 'completion') return void proxyCompletion(router, route.endpoint, bodyLimit, req, res);
    const denied = checkAccess(router, route, (name) => headerOf(req, name));
    if (denied) return refuse(req, res, denied);
    info(router, route.kind).then(
      (answer) => {
        res.writeHead(answer.status, answer.headers);
        res.end(req.method === 'HEAD' ? undefined : answer.body);
      },
      (err: unknown) => sendError(res, toFreeshError(err)),
    );
  };
}

async function proxyCompletion(router: Router, endpoint: Endpoint, bodyLimit: number, req: IncomingMessage, res: ServerResponse): Promise<void> {
  const abort = new CancelToken();
  // One 'close' listener for the whole exchange, and `on` rather than `once` for events that fire at
  // most once: each `once` wraps its listener (about 150 B a listener, a dozen a request counted
  // with V8's sampling heap profiler under bench:overhead's load).
  let upstream: Readable | undefined;
  res.on('close', () => {
    if (res.writableFinished) return;
    abort.abort();
    upstream?.destroy();
  });
  let body: Uint8Array;
  try {
    body = await readBody(req, bodyLimit);
  } catch (err) {
    // Answered while the client may still be uploading; the rest is drained so it reads the 413.
    return refuse(req, res, toFreeshError(err));
  }
  const call: RouterCall = {
    endpoint,
    body,
    header: (name) => headerOf(req, name),
    signal: abort,
  };
  let routed;
  try {
    routed = await router.dispatch(call);
  } catch (err) {
    sendError(res, toFreeshError(err));
    return;
  }
  if (res.destroyed) {
    routed.body.destroy();
    return;
  }
  res.writeHead(routed.status, routed.headers);
  const relayed = routed.body;
  upstream = relayed;
  relayed.on('data', (chunk: Buffer) => {
    if (!res.write(chunk)) relayed.pause();
  });
  res.on('drain', () => relayed.resume());
  relayed.on('end', () => res.end());
  relayed.on('error', (err) => {
    if (res.destroyed) return;
    // Headers are out, so a status can no longer carry the failure: a stream gets an error event,
    // anything else a cut connection.
    if (routed.eventStream) res.end(sseErrorEvent(routed.placement.backend.id, err));
    else res.destroy();
  });
}

function headerOf(req: IncomingMessage, name: string): string | undefined {
  const value = req.headers[name];
  return Array.isArray(value) ? value[0] : value;
}

/** The body as bytes: one a parser already read, or read here up to the limit. */
export function readBody(req: IncomingMessage, limit: number): Promise<Uint8Array> {
  const parsed = (req as { body?: unknown }).body;
  if (parsed !== undefined && req.readableEnded) return Promise.resolve(preParsed(parsed, limit));
  const declared = Number(req.headers['content-length']);
  if (declared > limit) return Promise.reject(bodyTooLarge(limit));
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let size = 0;
    const onData = (chunk: Buffer): void => {
      size += chunk.length;
      if (size > limit) {
        req.off('data', onData);
        req.pause();
        chunks.length = 0;
        reject(bodyTooLarge(limit));
        return;
      }
      chunks.push(chunk);
    };
    req.on('data', onData);
    req.on('end', () => resolve(chunks.length === 1 ? chunks[0]! : Buffer.concat(chunks, size)));
    req.on('error', (err) => reject(invalidRequest(`Could not read the request body: ${err.message}`, undefined, 'body_read_failed')));
  });
}

/** A body parser's result back to bytes: a Buffer or string as it is, parsed JSON re-serialised. */
function preParsed(body: unknown, limit: number): Uint8Array {
  const bytes = body instanceof Uint8Array ? body : Buffer.from(typeof body === 'string' ? body : JSON.stringify(body));
  if (bytes.byteLength > limit) throw bodyTooLarge(limit);
  return bytes;
}

function sendError(res: ServerResponse, error: FreeshError): void {
  if (res.headersSent || res.destroyed) return;
  const text = error.toBody();
  res.writeHead(error.status, errorHeaders(error, text));
  res.end(text);
}

/**
 * Answers a request whose body will not be used (a refused route, a body over the limit) without
 * waiting for that body, then reads and discards the rest: a client still uploading reads the answer
 * instead of a broken pipe, and the connection stays usable. Past `DRAIN_LIMIT_BYTES` discarded the
 * connection is cut; the server's request timeout cuts a body that never ends.
 */
function refuse(req: IncomingMessage, res: ServerResponse, error: FreeshError): void {
  if (!req.readableEnded && !req.destroyed) {
    const socket = req.socket;
    answeredBeforeBody(socket);
    req.on('end', () => bodyEnded(socket));
    let drained = 0;
    req.on('data', (chunk: Buffer) => {
      drained += chunk.length;
      if (drained > DRAIN_LIMIT_BYTES) req.socket.destroy();
    });
    req.on('error', () => undefined);
    req.resume();
  }
  sendError(res, error);
}
