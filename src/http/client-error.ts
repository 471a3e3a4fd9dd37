import { STATUS_CODES } from 'node:http';
import type { Duplex } from 'node:stream';
import { type FreeshError, headersTooLarge, malformedHttp, requestTimeout } from '../errors.js';

/** What the node server enforces before a request reaches the listener (`server` in the config). */
export interface ClientErrorLimits {
  readonly headersTimeoutMs: number;
  readonly requestTimeoutMs: number;
  readonly maxHeaderBytes: number;
}

/** How long a refused connection stays open for reading after its answer, so the client reads it rather than a reset. */
export const LINGER_MS = 500;

/**
 * Sockets whose current request has already been answered while its body is still arriving (a
 * refused route or an oversized body, drained): a framing error later in that body gets no second answer.
 */
const answeredEarly = new WeakSet<object>();

/** Marks the socket's request answered before its body ended, until the body ends. */
export function answeredBeforeBody(socket: object): void {
  answeredEarly.add(socket);
}

/** The request answered early has ended; the next one on the socket is answered as usual. */
export function bodyEnded(socket: object): void {
  answeredEarly.delete(socket);
}

/** The answer to what Node's HTTP parser or its timers refused: 408, 431 or 400, OpenAI-shaped. */
export function clientErrorAnswer(err: Error & { code?: string; reason?: string }, limits: ClientErrorLimits): FreeshError {
  if (err.code === 'ERR_HTTP_REQUEST_TIMEOUT') return requestTimeout(limits.headersTimeoutMs, limits.requestTimeoutMs);
  if (err.code === 'HPE_HEADER_OVERFLOW') return headersTooLarge(limits.maxHeaderBytes);
  const reason = typeof err.reason === 'string' && err.reason ? err.reason : err.message.replace(/^Parse Error: /, '');
  return malformedHttp(err.code?.startsWith('HPE_') ? `${reason} (${err.code})` : reason);
}

/**
 * A `clientError` listener for a node `http.Server`: bad framing, oversized headers and slow clients
 * get an OpenAI-shaped JSON error (Node's own answer is an empty 400, 431 or 408) with
 * `connection: close`, written on the raw socket when nothing of a response has gone out on it yet;
 * the socket is then half-closed, read and discarded for `LINGER_MS`, and destroyed. A reset, or a
 * response already under way, only destroys the socket.
 */
export function clientErrorListener(limits: ClientErrorLimits): (err: Error & { code?: string }, socket: Duplex) => void {
  return (err, socket) => {
    const inFlight = (socket as { _httpMessage?: { headersSent?: boolean } })._httpMessage;
    const canAnswer = err.code !== 'ECONNRESET' && !answeredEarly.has(socket) && socket.writable && !socket.writableEnded && !(inFlight?.headersSent ?? false);
    if (!canAnswer) {
      socket.destroy();
      return;
    }
    const error = clientErrorAnswer(err, limits);
    const body = error.toBody();
    const head = [
      `HTTP/1.1 ${error.status} ${STATUS_CODES[error.status] ?? 'Error'}`,
      'content-type: application/json',
      `content-length: ${Buffer.byteLength(body)}`,
      'x-should-retry: false',
      'connection: close',
    ];
    socket.on('error', () => undefined);
    socket.end(`${head.join('\r\n')}\r\n\r\n${body}`);
    socket.resume();
    setTimeout(() => socket.destroy(), LINGER_MS).unref();
  };
}
