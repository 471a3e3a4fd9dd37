import type { IncomingMessage, ServerResponse } from 'node:http';
import { afterEach, describe, expect, it } from 'vitest';
import { heuristicPredictor } from '../../src/predict/predictor.js';
import type { RunningProxy } from '../../src/proxy/standalone.js';
import { chatBody, fleetConfig, post, proxyFor, upstream, type Upstream } from '../helpers/servers.js';

const cleanup: (() => Promise<unknown>)[] = [];
afterEach(async () => {
  for (const fn of cleanup.splice(0).reverse()) await fn();
});

/** A backend that counts the requests it read, then answers as `answer` says. */
async function backend(answer: (req: IncomingMessage, res: ServerResponse) => void): Promise<Upstream & { readonly received: () => number }> {
  let received = 0;
  const up = await upstream((req, res) => {
    received++;
    answer(req, res);
  });
  cleanup.push(() => up.close());
  return Object.assign(up, { received: () => received });
}

/** A proxy over `first` and `second`, round-robin from `first`, with one retry allowed. */
async function proxyOver(first: string, second: string): Promise<RunningProxy> {
  const p = await proxyFor(
    fleetConfig(
      [
        { id: 'first', baseURL: first },
        { id: 'second', baseURL: second },
      ],
      { policy: 'round-robin', limits: { retries: 1 } },
    ),
    { predictor: heuristicPredictor() },
  );
  cleanup.push(() => p.shutdown(0));
  return p;
}

const ok = (_req: IncomingMessage, res: ServerResponse) => res.writeHead(200, { 'content-type': 'application/json' }).end('{"ok":true}');

describe('failover sends a request elsewhere only if no backend received it', () => {
  it('a backend that read the request and then dropped the connection is not replaced by another: the client gets 502', async () => {
    const dropping = (req: IncomingMessage) => req.socket.destroy();
    const [a, b] = [await backend(dropping), await backend(dropping)];
    const p = await proxyOver(a.baseURL, b.baseURL);
    const res = await post(`${p.url}/v1/chat/completions`, chatBody());
    expect(res.status).toBe(502);
    // The backend may be generating the answer: a second backend would run the same request twice.
    expect(a.received() + b.received()).toBe(1);
  });

  it('a 500 is answered as the backend gave it, not retried on another backend', async () => {
    const failing = (_req: IncomingMessage, res: ServerResponse) => res.writeHead(500, { 'content-type': 'application/json' }).end('{"error":"CUDA out of memory"}');
    const [a, b] = [await backend(failing), await backend(failing)];
    const p = await proxyOver(a.baseURL, b.baseURL);
    const res = await post(`${p.url}/v1/chat/completions`, chatBody());
    expect(res.status).toBe(502);
    expect(res.json().error.message).toContain('CUDA out of memory');
    expect(a.received() + b.received()).toBe(1);
  });

  it('a 503 (the backend is busy and did not take the request) goes to the next backend', async () => {
    const busy = await backend((_req, res) => res.writeHead(503, { 'content-type': 'application/json' }).end('{"error":"busy"}'));
    const fine = await backend(ok);
    const p = await proxyOver(busy.baseURL, fine.baseURL);
    for (let i = 0; i < 2; i++) {
      const res = await post(`${p.url}/v1/chat/completions`, chatBody());
      expect(res.status).toBe(200);
      expect(res.headers.get('x-freesh-backend')).toBe('second');
    }
    expect(busy.received()).toBe(2);
    expect(fine.received()).toBe(2);
  });

  it('a retried request is metered like the first and may fail over again, up to the retries allowed', async () => {
    const busy = (_req: IncomingMessage, res: ServerResponse) => res.writeHead(503, { 'content-type': 'application/json' }).end('{"error":"busy"}');
    const answering = (_req: IncomingMessage, res: ServerResponse) =>
      res.writeHead(200, { 'content-type': 'application/json' }).end('{"object":"chat.completion","usage":{"prompt_tokens":5,"completion_tokens":7}}');
    const [a, b, c] = [await backend(busy), await backend(busy), await backend(answering)];
    const p = await proxyFor(
      fleetConfig(
        [
          { id: 'first', baseURL: a.baseURL },
          { id: 'second', baseURL: b.baseURL },
          { id: 'third', baseURL: c.baseURL },
        ],
        { policy: 'round-robin', limits: { retries: 2 } },
      ),
      { predictor: heuristicPredictor() },
    );
    cleanup.push(() => p.shutdown(0));
    // Round-robin over the candidates left: the third request tries first, then second, then third.
    for (let i = 0; i < 3; i++) {
      const res = await post(`${p.url}/v1/chat/completions`, chatBody());
      expect(res.status).toBe(200);
      expect(res.headers.get('x-freesh-backend')).toBe('third');
    }
    expect(b.received()).toBeGreaterThan(0);
    const tokens = await p.router.metrics.registry.getSingleMetricAsString('freesh_output_tokens_total');
    expect(tokens).toMatch(/backend="third"} 21/);
  });
});

