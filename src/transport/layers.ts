import type { Backend } from '../types.js';
import { isConnectError, type Transport, type TransportLayer, type UpstreamRequest, type UpstreamResponse } from './transport.js';

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

/** Limits retries across requests (see RetryBudget) and hears of each retry and each refusal. */
export interface FailoverBudget {
  tryAcquire(): boolean;
  release(): void;
  /** A retry is made: `failed` did not take the request. */
  readonly onRetry?: (failed: Backend, cause: unknown, request: UpstreamRequest) => void;
  /** A retry was wanted but the budget was spent. */
  readonly onExhausted?: (failed: Backend) => void;
}

/**
 * Sends elsewhere, up to `retries` times, a request that a backend did not take: a refused
 * connection (it never arrived), an open circuit, or a 503 (the backend says it is busy) — all
 * before any byte reaches the client, so nothing is duplicated. Other 5xx may be the request's own
 * fault and are answered as they are. The request's `reroute` picks the next target. With a
 * `budget`, a retry also needs room in it; when it is spent the client gets the failure at hand.
 */
export function failover(options: { readonly retries: number; readonly budget?: FailoverBudget | undefined }): TransportLayer {
  const budget = options.budget;
  return (next): Transport => ({
    async send(backend, request) {
      let holding = false;
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
        } finally {
          if (holding) budget?.release();
          holding = false;
        }
        if (attempt >= options.retries || !request.reroute || request.signal?.aborted) {
          if (response) return response;
          throw cause;
        }
        if (budget) {
          if (!budget.tryAcquire()) {
            budget.onExhausted?.(backend);
            if (response) return response;
            throw cause;
          }
          holding = true;
          budget.onRetry?.(backend, cause, request);
        }
        // The refused answer is discarded unread; undici reports that abort as an 'error' event, which
        // without a listener would be thrown from the emitter.
        response?.body.on('error', () => undefined).destroy();
        try {
          ({ backend, request } = await request.reroute(backend, cause));
        } catch (err) {
          if (holding) budget?.release();
          throw err;
        }
      }
    },
    close: () => next.close(),
  });
}
