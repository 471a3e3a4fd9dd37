import { request as httpRequest } from 'node:http';
import { connect } from 'node:net';
import { afterEach, describe, expect, it } from 'vitest';
import type { FileConfigInput } from '../../src/config/schema.js';
import type { RunningProxy } from '../../src/proxy/standalone.js';
import { chatBody, fleetConfig, proxyFor, type Upstream, upstream } from '../helpers/servers.js';

/** The proxy's connection limits as real clients meet them: the 413 read mid-upload, timeouts that spare slow answers. */
describe('proxy edge limits', () => {
  const cleanup: (() => Promise<unknown>)[] = [];
  afterEach(async () => {
    for (const fn of cleanup.splice(0).reverse()) await fn();
  });

  async function serve(handler: Parameters<typeof upstream>[0], extra: Partial<FileConfigInput> = {}): Promise<{ proxy: RunningProxy; backend: Upstream }> {
    const backend = await upstream(handler);
    cleanup.push(() => backend.close());
    const proxy = await proxyFor(fleetConfig([{ id: 'b1', baseURL: backend.baseURL }], { plan: { enabled: false }, ...extra }));
    cleanup.push(() => proxy.shutdown(0));
    return { proxy, backend };
  }
  const ok = (_req: unknown, res: import('node:http').ServerResponse) => void res.writeHead(200, { 'content-type': 'application/json' }).end('{"ok":true}');

  it.each([10, 64])('fetch uploading a %i MB body reads the 413 and its JSON body, not a broken pipe', async (mb) => {
    const { proxy } = await serve(ok, { limits: { bodyLimitBytes: 1024 * 1024 } });
    const body = Buffer.alloc(mb * 1_000_000, 0x20);
    const res = await fetch(`${proxy.url}/v1/chat/completions`, { method: 'POST', headers: { 'content-type': 'application/json' }, body });
    expect(res.status).toBe(413);
    expect(await res.json()).toMatchObject({ error: { code: 'body_too_large', type: 'invalid_request_error' } });
    // The connection survived the upload: the next request is served.
    expect((await fetch(`${proxy.url}/v1/chat/completions`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: chatBody() })).status).toBe(200);
  });

  it.each([
    ['with its length declared', true],
    ['chunked', false],
  ])('http.request streaming a 10 MB body %s gets the 413 before it finishes uploading, and no error', async (_name, declared) => {
    const { proxy } = await serve(ok, { limits: { bodyLimitBytes: 1024 * 1024 } });
    const total = 10_000_000;
    // Node's client stops uploading once the response has ended; a client that errored would have seen EPIPE or a reset.
    const result = await new Promise<{ status: number; body: string; sentWhenAnswered: number; error?: string }>((resolve) => {
      let sent = 0;
      let error: string | undefined;
      const req = httpRequest(
        `${proxy.url}/v1/chat/completions`,
        { method: 'POST', headers: declared ? { 'content-type': 'application/json', 'content-length': String(total) } : { 'content-type': 'application/json' } },
        (res) => {
          const sentWhenAnswered = sent;
          let body = '';
          res.on('data', (c: Buffer) => (body += c.toString()));
          res.on('end', () =>
            setTimeout(() => {
              resolve({ status: res.statusCode ?? 0, body, sentWhenAnswered, ...(error === undefined ? {} : { error }) });
              req.destroy();
            }, 100),
          );
        },
      );
      req.on('error', (err: NodeJS.ErrnoException) => {
        error ??= err.code ?? err.message;
        resolve({ status: 0, body: '', sentWhenAnswered: sent, error });
      });
      const piece = Buffer.alloc(64 * 1024, 0x20);
      const write = (): void => {
        while (sent < total) {
          sent += piece.length;
          if (!req.write(piece)) return void req.once('drain', write);
        }
        req.end();
      };
      write();
    });
    expect(result.error).toBeUndefined();
    expect(result.status).toBe(413);
    expect(JSON.parse(result.body)).toMatchObject({ error: { code: 'body_too_large' } });
    expect(result.sentWhenAnswered).toBeLessThan(total);
  });

  it('a response slower than the request timeout is not cut: the timeouts bound what the client sends', async () => {
    const { proxy } = await serve((_req, res) => setTimeout(() => ok(_req, res), 900), {
      server: { host: '127.0.0.1', port: 0, headersTimeoutMs: 200, requestTimeoutMs: 300 },
    });
    const started = Date.now();
    const res = await fetch(`${proxy.url}/v1/chat/completions`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: chatBody() });
    expect(res.status).toBe(200);
    expect(await res.json()).toEqual({ ok: true });
    expect(Date.now() - started).toBeGreaterThanOrEqual(850);
  });

  it('an idle keep-alive connection is closed after keepAliveTimeoutMs', async () => {
    const { proxy } = await serve(ok, { server: { host: '127.0.0.1', port: 0, keepAliveTimeoutMs: 300 } });
    const socket = connect(Number(new URL(proxy.url).port), '127.0.0.1');
    let received = '';
    socket.on('data', (c: Buffer) => (received += c.toString()));
    const closed = new Promise<number>((resolve) => socket.on('close', () => resolve(Date.now())));
    socket.write('GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n');
    const started = Date.now();
    const at = await closed;
    expect(received).toMatch(/^HTTP\/1\.1 200 /);
    expect(received).toMatch(/keep-alive/i);
    expect(at - started).toBeGreaterThanOrEqual(250);
    expect(at - started).toBeLessThan(2_000);
  });
});
