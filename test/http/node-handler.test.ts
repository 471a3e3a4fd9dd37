import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterEach, describe, expect, it } from 'vitest';
import { createNodeHandler } from '../../src/http/node-handler.js';
import { heuristicPredictor } from '../../src/predict/predictor.js';
import { createRouter, type Router } from '../../src/router.js';
import { closeServer } from '../../src/sim/backend-server.js';
import { startFixedBackend } from '../../src/sim/fixed-backend.js';
import { describeEdge, type Edge, type EdgeOptions } from './edge.case.js';

/** The node listener on a real server on 127.0.0.1, reached with real `fetch`. */
async function nodeEdge(router: Router, options: EdgeOptions): Promise<Edge> {
  const server = createServer(createNodeHandler(router, options));
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const origin = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  return {
    async send(request) {
      const url = new URL(request.url);
      // A declared length is sent as such (fetch sets it for a body it holds); otherwise the body streams, chunked.
      const declared = request.headers.has('content-length');
      const headers = new Headers(request.headers);
      headers.delete('content-length');
      const body = request.body === null ? undefined : declared ? await request.arrayBuffer() : request.body;
      return fetch(origin + url.pathname + url.search, { method: request.method, headers, body, signal: request.signal, duplex: 'half' } as RequestInit);
    },
    // Loopback socket buffers autotune up to net.ipv4.tcp_rmem's and tcp_wmem's maxima (32 and 4 MiB
    // here; 6 and 4 MiB by Linux's defaults); undici's own queue adds a little.
    bufferedBytes: 64 * 1024 * 1024,
    close: () => closeServer(server),
  };
}

describeEdge('node listener', nodeEdge);

describe('node listener as middleware', () => {
  const cleanup: (() => Promise<unknown>)[] = [];
  afterEach(async () => {
    for (const fn of cleanup.splice(0).reverse()) await fn();
  });

  /** The listener inside an app whose own handler answers whatever the listener passes on. */
  async function app(basePath: string | undefined): Promise<string> {
    const fixed = await startFixedBackend();
    cleanup.push(() => fixed.close());
    const router = createRouter({
      sites: [{ id: 's', carbon: { gramsPerKWh: 100 } }],
      backends: [{ id: 'b1', site: 's', baseURL: fixed.baseURL, models: ['m'] }],
      plan: { enabled: false },
      predictor: heuristicPredictor(),
    });
    cleanup.push(() => router.close());
    const freesh = createNodeHandler(router, basePath === undefined ? {} : { basePath });
    const server = createServer((req, res) => freesh(req, res, () => void res.writeHead(200, { 'x-app': 'yes' }).end(`app: ${req.url}`)));
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    cleanup.push(() => closeServer(server));
    return `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  }

  it.each([undefined, '/llm'])('with basePath %s, hands the paths it does not serve to next', async (basePath) => {
    const url = await app(basePath);
    const mount = basePath ?? '';
    for (const path of ['/other', '/v1/embeddings', `${mount}/v1/embeddings`, '/', '/healthzz?x=1']) {
      const res = await fetch(url + path);
      expect(res.headers.get('x-app'), path).toBe('yes');
      expect(await res.text()).toBe(`app: ${path}`);
    }
    // Routes it serves, wrong method included, are its own.
    expect((await fetch(`${url}${mount}/v1/models`)).status).toBe(200);
    const wrong = await fetch(`${url}${mount}/v1/chat/completions`);
    expect(wrong.status).toBe(405);
    expect(wrong.headers.get('x-app')).toBeNull();
  });
});
