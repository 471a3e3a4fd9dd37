import OpenAI from 'openai';
import { afterEach, describe, expect, it } from 'vitest';
import { post, streamPost } from '../helpers/servers.js';
import { chat, expectNothingLeaked, type Fault, faultBackend, type FaultProxy, faultProxy, untilHealthy } from './fault-backend.js';

const cleanup: (() => unknown)[] = [];
afterEach(async () => {
  for (const fn of cleanup.splice(0).reverse()) await fn();
});

const messages = [{ role: 'user' as const, content: 'Hello there' }];

/** The whole body of a streamed request over a raw socket, as the client read it. */
async function streamed(url: string): Promise<{ status: number; text: string; ms: number }> {
  const started = performance.now();
  const { status, response } = await streamPost(`${url}/v1/chat/completions`, chat('solo', { stream: true }));
  let text = '';
  for await (const chunk of response) text += String(chunk);
  return { status, text, ms: performance.now() - started };
}

/** After the fault is cleared: the backend is back in rotation (a probe passed) and serves `solo` again; nothing leaked. */
async function expectRecovered(f: FaultProxy, id: string): Promise<void> {
  const backend = f.backends.find((b) => b.id === id)!;
  backend.fault = 'ok';
  await untilHealthy(f, id, true);
  const res = await post(`${f.proxy.url}/v1/chat/completions`, chat('solo'));
  expect(res.status).toBe(200);
  expect(res.headers.get('x-freesh-backend')).toBe(id);
  await expectNothingLeaked(f);
}

/** Probes are slowed so the ejection is seen before a probe (which the faulty backend passes) lifts it. */
const SLOW_PROBES = { probeIntervalMs: 1_000, consecutiveFailures: 2 };

describe('faults before the response headers', () => {
  it.each([
    ['stalls', 'stall-before-headers', /UND_ERR_HEADERS_TIMEOUT/],
    ['resets the socket', 'reset-before-headers', /UND_ERR_SOCKET|ECONNRESET|socket/i],
  ] as const)('a backend that %s: the client gets 502 upstream_unreachable promptly, the backend is ejected after two in a row, and recovers', async (_name, fault: Fault, cause) => {
    const [faulty, good] = [await faultBackend('faulty', fault), await faultBackend('good')];
    const f = await faultProxy([faulty, good], cleanup, { health: SLOW_PROBES });
    const client = new OpenAI({ baseURL: `${f.proxy.url}/v1`, apiKey: 'unused', maxRetries: 0 });
    for (const stream of [false, true]) {
      const started = performance.now();
      const err = (await client.chat.completions.create({ model: 'solo', messages, stream }).catch((e: unknown) => e)) as InstanceType<typeof OpenAI.APIError>;
      expect(err).toBeInstanceOf(OpenAI.APIError);
      expect(err.status).toBe(502);
      expect(err.code).toBe('upstream_unreachable');
      expect(err.message).toMatch(cause);
      // The headers timeout is 400 ms: the client is answered in well under a second, not minutes.
      expect(performance.now() - started).toBeLessThan(2_000);
    }
    // Read by the backend, so never sent to a second one (it might be generating).
    expect(faulty.completions).toBe(2);
    expect(good.completions).toBe(0);
    expect(f.events).toContainEqual(expect.objectContaining({ kind: 'ejected', backendId: 'faulty', reason: expect.stringMatching(cause) }));
    expect(f.proxy.router.health().usable).toBe(1);
    // Every stalled or reset exchange is closed on the backend too.
    await expectNothingLeaked(f);
    await expectRecovered(f, 'faulty');
  });
});

describe('faults mid-stream, after the client has its first bytes', () => {
  it.each([
    ['stalls', 'stall-mid-stream', /UND_ERR_BODY_TIMEOUT/],
    ['resets the socket', 'reset-mid-stream', /UND_ERR_SOCKET|ECONNRESET|terminated|other side closed/i],
  ] as const)('a backend that %s: the client gets the first chunk then an SSE error event upstream_dropped; the stream drop is published; the backend is ejected and recovers', async (_name, fault: Fault, cause) => {
    const [faulty, good] = [await faultBackend('faulty', fault), await faultBackend('good')];
    const f = await faultProxy([faulty, good], cleanup, { health: SLOW_PROBES });

    // On the wire: 200, the backend's chunk, then one error event, and the response ends.
    const raw = await streamed(f.proxy.url);
    expect(raw.status).toBe(200);
    const events = raw.text.split('\n\n').filter(Boolean);
    expect(events).toHaveLength(2);
    expect(events[0]).toContain('"content":"Hello"');
    const error = JSON.parse(events[1]!.replace(/^data: /, '')) as { error: { code: string; type: string; message: string } };
    expect(error.error).toMatchObject({ code: 'upstream_dropped', type: 'upstream_error' });
    expect(error.error.message).toMatch(cause);
    expect(raw.ms).toBeLessThan(2_000);

    // The openai client reads the chunk, then throws the error event as an APIError.
    const client = new OpenAI({ baseURL: `${f.proxy.url}/v1`, apiKey: 'unused', maxRetries: 0 });
    const stream = await client.chat.completions.create({ model: 'solo', messages, stream: true });
    const read: string[] = [];
    const err = await (async () => {
      for await (const chunk of stream) read.push(chunk.choices[0]?.delta.content ?? '');
    })().catch((e: unknown) => e);
    expect(read).toEqual(['Hello']);
    expect(err).toBeInstanceOf(OpenAI.APIError);
    expect((err as InstanceType<typeof OpenAI.APIError>).code).toBe('upstream_dropped');

    expect(f.events.filter((e) => e.kind === 'stream-dropped' && e.backendId === 'faulty')).toHaveLength(2);
    expect(f.events).toContainEqual(expect.objectContaining({ kind: 'ejected', backendId: 'faulty' }));
    expect(await f.metric('freesh_requests_total')).toContain('freesh_requests_total{outcome="upstream-dropped",backend="faulty"} 2');
    await expectNothingLeaked(f);
    await expectRecovered(f, 'faulty');
  });
});
