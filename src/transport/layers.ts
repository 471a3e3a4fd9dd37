import type { Backend } from '../types.js';
import { isConnectError, type Transport, type TransportLayer, type UpstreamResponse } from './transport.js';

/**
 * Tells `mark` of every backend that refused a connection (it never received the request), then
 * passes the error on. The router takes such a backend out of rotation.
 */
export function healthMarking(mark: (backend: Backend, cause: unknown) => void): TransportLayer {
  return (next) => ({
    async send(backend, request) {
      try {
        return await next.send(backend, request);
      } catch (err) {
        if (isConnectError(err)) mark(backend, err);
        throw err;
      }
    },
    close: () => next.close(),
  });
}

/**
 * Sends elsewhere, up to `retries` times, a request that a backend did not take: a refused
 * connection (it never arrived), or a 503 (the backend says it is busy) — both before any byte
 * reaches the client, so nothing is duplicated. Other 5xx may be the request's own fault and are
 * answered as they are. The request's `reroute` picks the next target.
 */
export function failover(options: { readonly retries: number }): TransportLayer {
  return (next): Transport => ({
    async send(backend, request) {
      for (let attempt = 0; ; attempt++) {
        let response: UpstreamResponse | undefined;
        let cause: unknown;
        try {
          response = await next.send(backend, request);
          if (response.status !== 503) return response;
          cause = new Error(`${backend.id} answered 503`);
        } catch (err) {
          if (!isConnectError(err)) throw err;
          cause = err;
        }
        if (attempt >= options.retries || !request.reroute || request.signal?.aborted) {
          if (response) return response;
          throw cause;
        }
        // The refused answer is discarded unread; undici reports that abort as an 'error' event, which
        // without a listener would be thrown from the emitter.
        response?.body.on('error', () => undefined).destroy();
        ({ backend, request } = await request.reroute(backend, cause));
      }
    },
    close: () => next.close(),
  });
}
