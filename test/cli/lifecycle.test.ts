import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { mkdtemp, writeFile } from 'node:fs/promises';
import type { ServerResponse } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterEach, describe, expect, it } from 'vitest';
import { FIXED_COMPLETION } from '../../src/sim/fixed-backend.js';
import { chatBody, post, streamPost, type Upstream, upstream } from '../helpers/servers.js';

// The compiled CLI, as `npx freesh` runs it (`npm run build` first).
const CLI = fileURLToPath(new URL('../../dist/src/cli.js', import.meta.url));
const cleanups: (() => unknown)[] = [];
afterEach(async () => {
  for (const fn of cleanups.splice(0).reverse()) await fn();
});

/** `freesh serve --config FILE`, its stdout and stderr together, and its log lines as parsed JSON. */
async function serve(config: object) {
  const dir = await mkdtemp(join(tmpdir(), 'freesh-lifecycle-'));
  const file = join(dir, 'config.json');
  await writeFile(file, JSON.stringify(config));
  const child = spawn(process.execPath, [CLI, 'serve', '--config', file], { stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  child.stdout.on('data', (c: Buffer) => (out += c.toString()));
  child.stderr.on('data', (c: Buffer) => (out += c.toString()));
  const exited = once(child, 'exit') as Promise<[number | null, string | null]>;
  cleanups.push(() => {
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
    return exited;
  });
  const logs = () =>
    out
      .split('\n')
      .filter((l) => l.startsWith('{'))
      .map((l) => JSON.parse(l) as Record<string, unknown>);
  const waitFor = async (pattern: RegExp, timeoutMs = 15_000) => {
    const end = Date.now() + timeoutMs;
    while (!pattern.test(out)) {
      if (Date.now() > end) throw new Error(`no ${pattern} in:\n${out}`);
      await new Promise((r) => setTimeout(r, 20));
    }
  };
  await waitFor(/freesh listening on (\S+)/);
  const url = /freesh listening on (\S+)/.exec(out)![1]!;
  return { child, file, url, exited, logs, waitFor, output: () => out, rewrite: (next: object | string) => writeFile(file, typeof next === 'string' ? next : JSON.stringify(next)) };
}

/** A backend streaming `chunks` SSE chunks `everyMs` apart; counts the requests it runs at once. */
async function slowStreams(chunks: number, everyMs: number) {
  const state = { running: 0, most: 0, served: 0 };
  const up = await upstream((req, res) => {
    // The proxy's health check lists models.
    if (req.method === 'GET') return void res.writeHead(200, { 'content-type': 'application/json' }).end('{"object":"list","data":[]}');
    state.running++;
    state.most = Math.max(state.most, state.running);
    res.writeHead(200, { 'content-type': 'text/event-stream' });
    let sent = 0;
    const timer = setInterval(() => {
      if (sent < chunks) return void res.write(`data: ${JSON.stringify({ object: 'chat.completion.chunk', choices: [{ index: 0, delta: { content: `t${sent++}` } }] })}\n\n`);
      clearInterval(timer);
      state.running--;
      state.served++;
      res.end('data: [DONE]\n\n');
    }, everyMs);
    res.on('close', () => clearInterval(timer));
  });
  cleanups.push(() => up.close());
  return { up, state };
}

async function fixed(): Promise<Upstream> {
  const up = await upstream((_req, res: ServerResponse) => {
    res.writeHead(200, { 'content-type': 'application/json' }).end(FIXED_COMPLETION);
  });
  cleanups.push(() => up.close());
  return up;
}

const configFor = (backends: { id: string; baseURL: string; maxConcurrency?: number }[], extra: object = {}) => ({
  server: { host: '127.0.0.1', port: 0 },
  sites: [{ id: 'loc1', carbon: { gramsPerKWh: 300 } }],
  backends: backends.map((b) => ({ site: 'loc1', models: ['m'], ...b })),
  plan: { enabled: false },
  ...extra,
});

/** A streamed request read to its end: the data events it got, and whether `[DONE]` closed it. */
async function readStream(url: string) {
  const { status, response } = await streamPost(`${url}/v1/chat/completions`, chatBody({ stream: true }));
  let text = '';
  try {
    for await (const chunk of response) text += String(chunk);
  } catch {
    // Cut mid-stream: what arrived says how far it got.
  }
  return { status, events: text.split('\n\n').filter((e) => e.startsWith('data: {')).length, done: text.includes('data: [DONE]') };
}

describe('freesh serve: SIGTERM drains', () => {
  it('finishes in-flight and queued streams while new requests get 503 draining and /healthz 503, then exits 0', async () => {
    const { up, state } = await slowStreams(10, 100);
    const p = await serve(configFor([{ id: 'b', baseURL: up.baseURL, maxConcurrency: 2 }], { server: { host: '127.0.0.1', port: 0, drainTimeoutMs: 20_000 } }));
    // Two stream at once; the third waits in the queue.
    const streams = [readStream(p.url), readStream(p.url), readStream(p.url)];
    while (state.running < 2) await new Promise((r) => setTimeout(r, 10));
    p.child.kill('SIGTERM');
    await p.waitFor(/SIGTERM: draining 3 in-flight/);

    const refused = await post(`${p.url}/v1/chat/completions`, chatBody());
    expect(refused.status).toBe(503);
    expect(refused.json()).toMatchObject({ error: { code: 'draining', type: 'server_error' } });
    expect([refused.headers.get('retry-after'), refused.headers.get('retry-after-ms')]).toEqual(['1', '1000']);
    const health = await fetch(`${p.url}/healthz`);
    expect(health.status).toBe(503);
    expect(health.headers.get('retry-after')).toBe('1');
    expect(await health.json()).toMatchObject({ status: 'draining' });

    // Every stream, the queued one included, runs to its end.
    expect(await Promise.all(streams)).toEqual([0, 1, 2].map(() => ({ status: 200, events: 10, done: true })));
    const [code] = await p.exited;
    expect(code).toBe(0);
    expect(state.served).toBe(3);
    await expect(fetch(`${p.url}/healthz`)).rejects.toThrow();
    // The requests were logged, the refused one with its code, and not the drain deadline.
    const lines = p.logs().filter((l) => l.event === 'request');
    expect(lines.filter((l) => l.outcome === 'completed'), p.output()).toHaveLength(3);
    expect(p.output()).not.toMatch(/drain deadline/);
  });

  it('cuts what is still running at the drain deadline and exits', async () => {
    const { up, state } = await slowStreams(1_000, 100);
    const p = await serve(configFor([{ id: 'b', baseURL: up.baseURL }], { server: { host: '127.0.0.1', port: 0, drainTimeoutMs: 300 } }));
    const stream = readStream(p.url);
    while (state.running < 1) await new Promise((r) => setTimeout(r, 10));
    const started = Date.now();
    p.child.kill('SIGTERM');
    const [code] = await p.exited;
    expect(code).toBe(0);
    // 300 ms of drain, then the cut: well under 10 s even on a loaded machine.
    expect(Date.now() - started).toBeLessThan(10_000);
    expect(await stream).toMatchObject({ status: 200, done: false });
    expect(p.output()).toMatch(/drain deadline \(300 ms\) passed: cutting 1 request/);
  });
});

describe('freesh serve: SIGHUP reloads the config file', () => {
  it('a good config takes over without dropping a request; the in-flight one finishes; capacity is not counted twice', async () => {
    const { up: a, state } = await slowStreams(10, 100);
    const b = await fixed();
    const p = await serve(configFor([{ id: 'a', baseURL: a.baseURL, maxConcurrency: 1 }]));
    const inflight = readStream(p.url);
    while (state.running < 1) await new Promise((r) => setTimeout(r, 10));

    // Traffic throughout: every request must get its answer.
    let stop = false;
    const statuses: number[] = [];
    const traffic = (async () => {
      while (!stop) statuses.push((await post(`${p.url}/v1/chat/completions`, chatBody({ stream: true }))).status);
    })();

    // Same backend and slot limit, another policy: the new router's requests wait for the slot the old one holds.
    await p.rewrite(configFor([{ id: 'a', baseURL: a.baseURL, maxConcurrency: 1 }], { policy: 'round-robin' }));
    p.child.kill('SIGHUP');
    await p.waitFor(/config reloaded: 1 backends, policy round-robin; [12] request\(s\) finish on the previous config/);
    // Sent to the new router while the old one holds the slot: it waits for it.
    const afterReload = readStream(p.url);
    expect(await inflight).toEqual({ status: 200, events: 10, done: true });
    expect(await afterReload).toEqual({ status: 200, events: 10, done: true });

    await p.rewrite(configFor([{ id: 'b', baseURL: b.baseURL }]));
    p.child.kill('SIGHUP');
    await p.waitFor(/config reloaded: 1 backends, policy freesh/);
    const moved = await post(`${p.url}/v1/chat/completions`, chatBody());
    expect(moved.status).toBe(200);
    expect(moved.headers.get('x-freesh-backend')).toBe('b');
    stop = true;
    await traffic;
    expect(statuses.length).toBeGreaterThanOrEqual(2);
    expect(new Set(statuses)).toEqual(new Set([200]));
    // One slot on `a`, held across the reload by the old router, was never handed out twice.
    expect(state.most).toBe(1);
  });

  it('a bad config is refused in one log line and the running one is kept', async () => {
    const b = await fixed();
    const good = configFor([{ id: 'b', baseURL: b.baseURL }]);
    const p = await serve(good);
    await p.rewrite(configFor([{ id: 'b', baseURL: b.baseURL, maxConcurrency: 0 }]));
    p.child.kill('SIGHUP');
    await p.waitFor(/reload refused/);
    await p.rewrite('{"sites": [');
    p.child.kill('SIGHUP');
    await p.waitFor(/reload refused.*not valid JSON/);
    await p.rewrite({ ...good, server: { host: '127.0.0.1', port: 1 } });
    p.child.kill('SIGHUP');
    await p.waitFor(/reload refused.*`server` changed: it takes a restart/);

    const refusals = p.logs().filter((l) => l.event === 'reload-refused');
    expect(refusals).toHaveLength(3);
    expect(refusals[0]).toMatchObject({ level: 50, msg: expect.stringMatching(/`backends\[0\]\.maxConcurrency`.*got `0`/) });
    // One line each: no stack trace, nothing else written.
    expect(p.output().split('\n').filter((l) => l && !l.startsWith('{'))).toEqual([]);
    const still = await post(`${p.url}/v1/chat/completions`, chatBody());
    expect(still.status).toBe(200);
    expect(still.headers.get('x-freesh-backend')).toBe('b');
  });
});
