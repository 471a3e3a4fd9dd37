import { type ChildProcess, spawn } from 'node:child_process';
import { once } from 'node:events';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import type { ServerResponse } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { hashKey } from '../../src/auth/keys.js';
import type { FileConfigInput } from '../../src/config/schema.js';
import { heuristicPredictor } from '../../src/predict/predictor.js';
import { deleteFleet, freshPrefix, type RedisServer, startRedis } from '../helpers/redis-server.js';
import { chatBody, nextChunk, post, proxyFor, streamPost, until, upstream, type Upstream } from '../helpers/servers.js';

/**
 * Limits shared by replicas through one real Redis: two proxies in this process, and one `freesh
 * serve` process (the built CLI) killed while it holds a concurrency slot.
 */
const CLI = fileURLToPath(new URL('../../dist/src/cli.js', import.meta.url));
const KEY = 'fsk-shared-0123456789abcdef';
const auth = { authorization: `Bearer ${KEY}` };

let redis: RedisServer;
let dir: string;
const cleanups: (() => unknown)[] = [];

beforeAll(async () => {
  redis = await startRedis();
  dir = await mkdtemp(join(tmpdir(), 'freesh-auth-'));
});
afterEach(async () => {
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
});
afterAll(async () => {
  await redis?.stop();
  await rm(dir, { recursive: true, force: true });
});

/** A backend that streams one chunk and holds the stream open until the test ends it. */
async function holdingBackend(): Promise<Upstream & { held: ServerResponse[] }> {
  const held: ServerResponse[] = [];
  const u = await upstream((req, res, body) => {
    if (req.method === 'GET') return void res.writeHead(200, { 'content-type': 'application/json' }).end('{"object":"list","data":[]}');
    if ((JSON.parse(body) as { stream?: boolean }).stream) {
      res.writeHead(200, { 'content-type': 'text/event-stream' });
      res.write('data: {"choices":[{"index":0,"delta":{"content":"hi"}}]}\n\n');
      return void held.push(res);
    }
    res.writeHead(200, { 'content-type': 'application/json' });
    res.end('{"id":"c","object":"chat.completion","created":0,"model":"m","choices":[{"index":0,"message":{"role":"assistant","content":"ok"},"finish_reason":"stop"}],"usage":{"prompt_tokens":3,"completion_tokens":1,"total_tokens":4}}');
  });
  cleanups.push(() => {
    for (const res of held) res.destroy();
    return u.close();
  });
  return Object.assign(u, { held });
}

function config(baseURL: string, keyPrefix: string, replicaId: string): FileConfigInput {
  return {
    server: { host: '127.0.0.1', port: 0 },
    sites: [{ id: 'loc1', carbon: { gramsPerKWh: 300 } }],
    backends: [{ id: 'b1', site: 'loc1', baseURL, models: ['m'], maxConcurrency: 100 }],
    plan: { enabled: false },
    // Renewed every second; long enough that a replica starved by a loaded test machine keeps it.
    limits: { leaseTtlMs: 3_000 },
    state: { redis: { url: redis.url, keyPrefix }, replicaId },
    auth: { keys: [{ id: 'shared', sha256: hashKey(KEY), tenant: 'acme', limits: { requestsPerMinute: 4, maxConcurrent: 1 } }] },
  };
}

async function replicas(baseURL: string): Promise<{ a: string; b: string; keyPrefix: string }> {
  const keyPrefix = freshPrefix();
  cleanups.push(() => deleteFleet(redis.url, keyPrefix));
  const [a, b] = await Promise.all(['a', 'b'].map((id) => proxyFor(config(baseURL, keyPrefix, id), { predictor: heuristicPredictor() })));
  cleanups.push(() => a!.shutdown(0), () => b!.shutdown(0));
  return { a: a!.url, b: b!.url, keyPrefix };
}

const chat = (url: string) => post(`${url}/v1/chat/completions`, chatBody(), auth);

describe('limits shared through Redis', () => {
  it('two replicas take from one request bucket', async () => {
    const be = await holdingBackend();
    const { a, b } = await replicas(be.baseURL);
    const answers = [];
    for (const url of [a, b, a, b, a, b]) answers.push(await chat(url));
    expect(answers.map((r) => r.status)).toEqual([200, 200, 200, 200, 429, 429]);
    expect(answers.map((r) => r.headers.get('x-ratelimit-remaining-requests'))).toEqual(['3', '2', '1', '0', '0', '0']);
    expect(answers[5]!.json().error.code).toBe('rate_limit_exceeded');
  });

  it('two replicas share one concurrency cap; the slot frees when the stream ends', async () => {
    const be = await holdingBackend();
    const { a, b } = await replicas(be.baseURL);
    const open = await streamPost(`${a}/v1/chat/completions`, chatBody({ stream: true }), auth);
    expect(open.status).toBe(200);
    await nextChunk(open.response);
    const refused = await chat(b);
    expect(refused.status).toBe(429);
    expect(refused.json().error.message).toContain('concurrent');
    expect((await chat(a)).status).toBe(429);

    be.held.shift()!.end('data: [DONE]\n\n');
    await new Promise((resolve) => open.response.on('end', resolve).resume());
    await until(async () => (await chat(b)).status === 200);
  });

  it('frees a slot held by a replica that died once its lease expires (3 s), not before', async () => {
    const be = await holdingBackend();
    const keyPrefix = freshPrefix();
    cleanups.push(() => deleteFleet(redis.url, keyPrefix));
    const dying = await startReplica(config(be.baseURL, keyPrefix, 'dying'));
    const survivor = await proxyFor(config(be.baseURL, keyPrefix, 'survivor'), { predictor: heuristicPredictor() });
    cleanups.push(() => survivor.shutdown(0));

    const open = await streamPost(`${dying.url}/v1/chat/completions`, chatBody({ stream: true }), auth);
    await nextChunk(open.response);
    open.response.on('error', () => undefined);
    // Held past renewals (every second) and past the lease's first term: it lives while its replica does.
    await new Promise((r) => setTimeout(r, 3_500));
    expect((await chat(survivor.url)).status).toBe(429);

    dying.child.kill('SIGKILL');
    await once(dying.child, 'exit');
    const killedAt = Date.now();
    // Its lease was renewed at most a second ago: still held.
    expect((await chat(survivor.url)).status).toBe(429);
    await until(async () => (await chat(survivor.url)).status === 200, 10_000);
    const freedAfterMs = Date.now() - killedAt;
    expect(freedAfterMs).toBeLessThan(6_000);
  });
});

/** `freesh serve` on a config file; resolves once it listens. */
async function startReplica(cfg: FileConfigInput): Promise<{ url: string; child: ChildProcess }> {
  const file = join(dir, `${String(cfg.state?.replicaId)}.json`);
  await writeFile(file, JSON.stringify(cfg));
  const child = spawn(process.execPath, [CLI, 'serve', '--config', file], { stdio: ['ignore', 'pipe', 'pipe'] });
  cleanups.push(() => {
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
  });
  let output = '';
  child.stderr!.on('data', (chunk: Buffer) => (output += chunk.toString()));
  const url = await new Promise<string>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`the replica did not start: ${output}`)), 15_000);
    child.stdout!.on('data', (chunk: Buffer) => {
      output += chunk.toString();
      const match = /freesh listening on (\S+)/.exec(output);
      if (match) {
        clearTimeout(timer);
        resolve(match[1]!);
      }
    });
    child.once('exit', (code) => reject(new Error(`the replica exited (${code}): ${output}`)));
  });
  return { url, child };
}
