import type { Readable } from 'node:stream';
import { describeCause } from '../errors.js';
import type { Backend } from '../types.js';
import type { Transport, TransportLayer, UpstreamResponse } from './transport.js';

/** What the outlier layer reports to, per backend (BackendGuard in pipeline/ is the implementation). */
export interface OutlierSink {
  /** Before each send: 'go', 'trial' (the single trial of a half-open circuit) or 'refuse' (open). */
  admit(backendId: string): 'go' | 'trial' | 'refuse';
  /** A trial's headers arrived ('ok' below 500, 'failed' otherwise), it failed before them, or the client left ('none'). */
  trialAnswered(backendId: string, verdict: 'ok' | 'failed' | 'none', reason: string): void;
  /** A response below 500 was read to its end. */
  succeeded(backendId: string): void;
  /** 5xx, refused connection, timeout, or a body broken by the backend. */
  failed(backendId: string, reason: string): void;
}

/** A send refused because the backend's circuit is open: the backend never saw the request, so failover may send it elsewhere. */
export class CircuitOpenError extends Error {
  readonly code = 'FREESH_CIRCUIT_OPEN';

  constructor(readonly backendId: string) {
    super(`the circuit of backend ${backendId} is open (ejected after repeated failures)`);
    this.name = 'CircuitOpenError';
  }
}

/**
 * Reports every attempt's fate to `sink` (passive outlier detection) and refuses sends to a backend
 * whose circuit is open. A client that leaves is no verdict on the backend; neither is a 4xx, which
 * counts as a success (the backend is up and judged the request).
 */
export function outlierDetection(sink: OutlierSink): TransportLayer {
  return (next): Transport => ({
    async send(backend: Backend, request) {
      const admission = sink.admit(backend.id);
      if (admission === 'refuse') throw new CircuitOpenError(backend.id);
      const trial = admission === 'trial';
      let response: UpstreamResponse;
      try {
        response = await next.send(backend, request);
      } catch (err) {
        const verdict = request.signal?.aborted ? 'none' : 'failed';
        if (trial) sink.trialAnswered(backend.id, verdict, describeCause(err));
        else if (verdict === 'failed') sink.failed(backend.id, describeCause(err));
        throw err;
      }
      if (response.status >= 500) {
        if (trial) sink.trialAnswered(backend.id, 'failed', `answered ${response.status}`);
        else sink.failed(backend.id, `answered ${response.status}`);
        return response;
      }
      if (trial) sink.trialAnswered(backend.id, 'ok', '');
      watchBody(response.body, () => request.signal?.aborted === true, (err) => {
        if (err === undefined) sink.succeeded(backend.id);
        else sink.failed(backend.id, describeCause(err));
      });
      return response;
    },
    close: () => next.close(),
  });
}

/**
 * Calls `done` when the body ends (undefined) or the backend breaks it (the error); not when the
 * consumer destroys it or the caller aborted. Listeners on 'end' and 'error' do not set it flowing.
 */
function watchBody(body: Readable, aborted: () => boolean, done: (err: unknown) => void): void {
  body.on('end', () => done(undefined));
  body.on('error', (err) => {
    const code = (err as { code?: unknown }).code;
    if (!aborted() && code !== 'UND_ERR_ABORTED' && err.name !== 'AbortError') done(err);
  });
}
