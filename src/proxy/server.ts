import { createServer, type Server, type ServerResponse } from 'node:http';
import { clientErrorListener } from '../http/client-error.js';
import { createNodeHandler } from '../http/node-handler.js';
import { errorHeaders } from '../http/routes.js';
import { expectationFailed, type FreeshError, malformedHttp } from '../errors.js';
import type { Router } from '../router.js';

/** Limits of the node server itself (the config's `server` section; defaults there). */
export interface ProxyServerOptions {
  /** Time to send a request's headers before 408 (ms). Default 10,000. */
  readonly headersTimeoutMs?: number;
  /** Time to send a whole request, headers and body, before 408 (ms). Default 30,000. */
  readonly requestTimeoutMs?: number;
  /** Idle time of a keep-alive connection between requests (ms). Default 65,000. */
  readonly keepAliveTimeoutMs?: number;
  /** Largest request line plus headers (bytes) before 431. Default 16,384. */
  readonly maxHeaderBytes?: number;
}

/** An OpenAI-shaped error before any route, closing the connection (the body, if any, is not read). */
function refuse(res: ServerResponse, error: FreeshError): void {
  const text = error.toBody();
  res.writeHead(error.status, { ...errorHeaders(error, text), connection: 'close' });
  res.end(text);
}

/**
 * The standalone OpenAI-compatible HTTP server over a router (or a getter of the router to use now):
 * the node listener on a server of its own, with request, headers and keep-alive timeouts, a header
 * size limit, and OpenAI-shaped answers to malformed HTTP and slow clients.
 */
export function createProxyServer(router: Router | (() => Router), options: ProxyServerOptions = {}): Server {
  const headersTimeoutMs = options.headersTimeoutMs ?? 10_000;
  const requestTimeoutMs = Math.max(options.requestTimeoutMs ?? 30_000, headersTimeoutMs);
  const keepAliveTimeoutMs = options.keepAliveTimeoutMs ?? 65_000;
  const maxHeaderBytes = options.maxHeaderBytes ?? 16_384;
  // A getter serves each request with the router current when it arrives (the proxy replaces it on reload).
  const current = typeof router === 'function' ? router : () => router;
  let handled = current();
  let handler = createNodeHandler(handled);
  const server = createServer(
    {
      keepAliveTimeout: keepAliveTimeoutMs,
      headersTimeout: headersTimeoutMs,
      requestTimeout: requestTimeoutMs,
      maxHeaderSize: maxHeaderBytes,
      // Node checks the two timeouts this often (30 s by default): a quarter of the shorter, within 50 ms to 1 s.
      connectionsCheckingInterval: Math.min(1_000, Math.max(50, Math.floor(headersTimeoutMs / 4))),
      // Node answers a missing Host with an empty 400 of its own; the listener below answers it.
      requireHostHeader: false,
    },
    (req, res) => {
      if (req.httpVersion === '1.1' && req.headers.host === undefined) return refuse(res, malformedHttp('an HTTP/1.1 request needs a Host header'));
      const now = current();
      if (now !== handled) handler = createNodeHandler((handled = now));
      handler(req, res);
    },
  );
  // Node answers an Expect other than 100-continue with an empty 417 unless this event has a listener.
  server.on('checkExpectation', (req, res) => refuse(res, expectationFailed(String(req.headers.expect ?? ''))));
  server.on('clientError', clientErrorListener({ headersTimeoutMs, requestTimeoutMs, maxHeaderBytes }));
  return server;
}
