import type { Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { FreeshError } from '../../src/errors.js';
import { errorHeaders } from '../../src/http/routes.js';
import { closeServer } from '../../src/sim/backend-server.js';
import type { Edge } from '../http/edge.case.js';

/**
 * The app's own answer to a path nothing in it serves, written as the proxy writes its 404, so the
 * shared edge suite's not-found cases apply to an app with an adapter inside. (An adapter hands such
 * paths to the app: what the app answers is the app's.)
 */
export function appNotFound(method: string, url: string): { status: number; headers: Record<string, string>; body: string } {
  const q = url.indexOf('?');
  const error = new FreeshError(`Unknown route: ${method} ${q === -1 ? url : url.slice(0, q)}`, { code: 'route_not_found', status: 404, type: 'not_found_error' });
  const body = error.toBody();
  return { status: 404, headers: errorHeaders(error, body), body };
}

/** A listening server on 127.0.0.1 as an `Edge`: real sockets, real `fetch`. */
export async function serverEdge(server: Server, close: () => Promise<unknown> = () => closeServer(server)): Promise<Edge & { origin: string }> {
  if (!server.listening) await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const origin = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  return {
    origin,
    async send(request) {
      const url = new URL(request.url);
      // A declared length is sent as such (fetch sets it for a body it holds); otherwise the body streams, chunked.
      const declared = request.headers.has('content-length');
      const headers = new Headers(request.headers);
      headers.delete('content-length');
      const body = request.body === null ? undefined : declared ? await request.arrayBuffer() : request.body;
      return fetch(origin + url.pathname + url.search, { method: request.method, headers, body, signal: request.signal, duplex: 'half' } as RequestInit);
    },
    bufferedBytes: 64 * 1024 * 1024,
    close: async () => {
      await close();
    },
  };
}
