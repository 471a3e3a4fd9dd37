import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { bodyTooLarge, type FreeshError, invalidRequest, methodNotAllowed, routeNotFound, toFreeshError, upstreamDropped } from '../errors.js';
import { CancelToken } from '../cancel.js';
import type { Router, RouterCall } from '../router.js';
import type { Endpoint } from '../types.js';

const ENDPOINTS: Readonly<Record<string, Endpoint>> = {
  '/v1/chat/completions': 'chat.completions',
  '/v1/completions': 'completions',
};
const GET_ROUTES = new Set(['/v1/models', '/healthz', '/metrics']);

/**
 * The standalone OpenAI-compatible HTTP server over a router: completions (streamed or not), the
 * model list, health and Prometheus metrics. Every error is an OpenAI-shaped JSON body.
 */
export function createProxyServer(router: Router): Server {
  const bodyLimit = router.config.limits.bodyLimitBytes;

  return createServer({ keepAliveTimeout: 65_000 }, function handleRequest(req, res) {
    const url = req.url ?? '/';
    const q = url.indexOf('?');
    const path = q === -1 ? url : url.slice(0, q);
    const endpoint = ENDPOINTS[path];
    if (endpoint) {
      if (req.method !== 'POST') return sendError(res, methodNotAllowed(req.method ?? '', path, 'POST'), true);
      return void proxyCompletion(router, endpoint, bodyLimit, req, res);
    }
    if (GET_ROUTES.has(path)) {
      if (req.method !== 'GET' && req.method !== 'HEAD') return sendError(res, methodNotAllowed(req.method ?? '', path, 'GET'), true);
      return void serveInfo(router, path, res);
    }
    sendError(res, routeNotFound(req.method ?? '', path), true);
  });
}

async function serveInfo(router: Router, path: string, res: ServerResponse): Promise<void> {
  try {
    if (path === '/v1/models') return sendJson(res, 200, router.modelList());
    if (path === '/healthz') return sendJson(res, 200, { status: 'ok', backends: router.backends.length, inFlight: router.inFlight });
    const text = await router.metrics.registry.metrics();
    res.writeHead(200, { 'content-type': router.metrics.registry.contentType });
    res.end(text);
  } catch (err) {
    sendError(res, toFreeshError(err));
  }
}

async function proxyCompletion(router: Router, endpoint: Endpoint, bodyLimit: number, req: IncomingMessage, res: ServerResponse): Promise<void> {
  const abort = new CancelToken();
  res.once('close', () => {
    if (!res.writableFinished) abort.abort();
  });
  let body: Uint8Array;
  try {
    body = await readBody(req, bodyLimit);
  } catch (err) {
    // The rest of an oversized body is not read: answer, then close the connection.
    return sendError(res, toFreeshError(err), true);
  }
  const call: RouterCall = {
    endpoint,
    body,
    header: (name) => {
      const value = req.headers[name];
      return Array.isArray(value) ? value[0] : value;
    },
    signal: abort,
  };
  let routed;
  try {
    routed = await router.dispatch(call);
  } catch (err) {
    if (!res.headersSent && !res.destroyed) sendError(res, toFreeshError(err));
    return;
  }
  if (res.destroyed) {
    routed.body.destroy();
    return;
  }
  res.writeHead(routed.status, routed.headers);
  const upstream = routed.body;
  upstream.on('data', (chunk: Buffer) => {
    if (!res.write(chunk)) upstream.pause();
  });
  res.on('drain', () => upstream.resume());
  upstream.once('end', () => res.end());
  upstream.once('error', (err) => {
    if (res.destroyed) return;
    if (routed.eventStream) {
      // Tell the streaming client what happened, in the shape OpenAI SDKs surface as an error.
      res.end(`data: ${upstreamDropped(routed.placement.backend.id, err).toBody()}\n\n`);
    } else {
      // Headers are out, so a status can no longer carry the failure: cut the connection.
      res.destroy();
    }
  });
  res.once('close', () => {
    if (!res.writableFinished) upstream.destroy();
  });
}

function readBody(req: IncomingMessage, limit: number): Promise<Uint8Array> {
  const declared = Number(req.headers['content-length']);
  if (declared > limit) return Promise.reject(bodyTooLarge(limit));
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let size = 0;
    req.on('data', (chunk: Buffer) => {
      size += chunk.length;
      if (size > limit) {
        req.removeAllListeners('data');
        req.pause();
        reject(bodyTooLarge(limit));
        return;
      }
      chunks.push(chunk);
    });
    req.once('end', () => resolve(chunks.length === 1 ? chunks[0]! : Buffer.concat(chunks, size)));
    req.once('error', (err) => reject(invalidRequest(`Could not read the request body: ${err.message}`, undefined, 'body_read_failed')));
  });
}

function sendJson(res: ServerResponse, status: number, value: unknown): void {
  const text = JSON.stringify(value);
  res.writeHead(status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(text) });
  res.end(text);
}

function sendError(res: ServerResponse, error: FreeshError, closeConnection = false): void {
  if (res.headersSent || res.destroyed) return;
  const text = error.toBody();
  const headers: Record<string, string | number> = { 'content-type': 'application/json', 'content-length': Buffer.byteLength(text) };
  if (closeConnection) headers.connection = 'close';
  res.writeHead(error.status, headers);
  res.end(text);
}
