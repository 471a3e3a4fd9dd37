import { subscribe, unsubscribe } from 'node:diagnostics_channel';
import type { IncomingHttpHeaders, ServerResponse } from 'node:http';
import OpenAI from 'openai';
import { afterEach, describe, expect, it } from 'vitest';
import { hashKey } from '../../src/auth/keys.js';
import type { FileConfigInput } from '../../src/config/schema.js';
import { heuristicPredictor } from '../../src/predict/predictor.js';
import type { RunningProxy } from '../../src/proxy/standalone.js';
import { completionChannel, type RequestEnd } from '../../src/router.js';
import { chatBody, fleetConfig, nextChunk, post, proxyFor, streamPost, until, upstream, type Upstream } from '../helpers/servers.js';

/**
 * Gateway keys over real HTTP: the proxy in front of a real backend that records what reaches it,
 * driven by fetch, raw sockets and the real `openai` client.
 */
const cleanups: (() => unknown)[] = [];
afterEach(async () => {
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
});

const BACKEND_KEY = 'sk-backend-secret-0123456789';
const KEYS = { alice: 'fsk-alice-0123456789abcdef', bob: 'fsk-bob-0123456789abcdef', admin: 'fsk-admin-0123456789abcdef' };

interface Backend extends Upstream {
  /** Headers of every request that reached it. */
  readonly seen: IncomingHttpHeaders[];
  /** Streams it holds open (for bodies with `"hold": true`), to end by hand. */
  readonly held: ServerResponse[];
}

/** Answers JSON with `usage.completion_tokens` = the body's `report` (default 5); streams; holds streams asked to; a 500 echoing the key it got for model `fail`. */
async function backend(): Promise<Backend> {
  const seen: IncomingHttpHeaders[] = [];
  const held: ServerResponse[] = [];
  const u = await upstream((req, res, body) => {
    if (req.method === 'GET') return void res.writeHead(200, { 'content-type': 'application/json' }).end('{"object":"list","data":[]}');
    seen.push(req.headers);
    const parsed = JSON.parse(body) as { model: string; stream?: boolean; hold?: boolean; report?: number };
    if (parsed.model === 'fail') {
      res.writeHead(500, { 'content-type': 'text/plain' }).end(`internal error; request had authorization ${String(req.headers.authorization)}`);
      return;
    }
    if (parsed.stream) {
      res.writeHead(200, { 'content-type': 'text/event-stream' });
      res.write('data: {"choices":[{"index":0,"delta":{"content":"hi"}}]}\n\n');
      if (parsed.hold) return void held.push(res);
      res.end('data: [DONE]\n\n');
      return;
    }
    res.writeHead(200, { 'content-type': 'application/json' });
    res.end(
      JSON.stringify({
        id: 'c1',
        object: 'chat.completion',
        created: 0,
        model: parsed.model,
        choices: [{ index: 0, message: { role: 'assistant', content: 'ok' }, finish_reason: 'stop' }],
        usage: { prompt_tokens: 3, completion_tokens: parsed.report ?? 5, total_tokens: 3 + (parsed.report ?? 5) },
      }),
    );
  });
  cleanups.push(() => {
    for (const res of held) res.destroy();
    return u.close();
  });
  return Object.assign(u, { seen, held });
}

async function start(auth: FileConfigInput['auth'], b?: Backend): Promise<{ url: string; backend: Backend; proxy: RunningProxy }> {
  const be = b ?? (await backend());
  const config = fleetConfig([{ id: 'b1', baseURL: be.baseURL, models: ['m', 'other', 'fail'] }], { auth, plan: { enabled: false } });
  (config.backends[0] as { apiKey?: string }).apiKey = BACKEND_KEY;
  const proxy = await proxyFor(config, { predictor: heuristicPredictor() });
  cleanups.push(() => proxy.shutdown(0));
  return { url: proxy.url, backend: be, proxy };
}

const KEYED: FileConfigInput['auth'] = {
  keys: [
    { id: 'alice', sha256: hashKey(KEYS.alice), tenant: 'acme', models: ['m', 'fail'] },
    { id: 'bob', sha256: hashKey(KEYS.bob), tenant: 'globex', sloClasses: ['standard', 'batch'], freeshHeaders: true },
  ],
  adminKeys: [hashKey(KEYS.admin)],
};

const bearer = (key: string) => ({ authorization: `Bearer ${key}` });
const chat = (url: string, headers: Record<string, string>, extra: Record<string, unknown> = {}) => post(`${url}/v1/chat/completions`, chatBody(extra), headers);
const client = (url: string, apiKey: string) => new OpenAI({ baseURL: `${url}/v1`, apiKey, maxRetries: 0 });

function allHeaders(headers: Headers): string {
  return [...headers].map(([k, v]) => `${k}: ${v}`).join('\n');
}

describe('without an auth section', () => {
  it('stays open: completions and /metrics need no key', async () => {
    const { url } = await start(undefined);
    expect((await chat(url, {})).status).toBe(200);
    expect((await fetch(`${url}/metrics`)).status).toBe(200);
    expect(await (await fetch(`${url}/healthz`)).json()).toMatchObject({ backends: { usable: 1, total: 1 } });
  });
});

describe('API keys', () => {
  it('answers 401 invalid_api_key, OpenAI-shaped, without a key, with an unknown key or a non-bearer Authorization, never quoting it', async () => {
    const { url, backend: be } = await start(KEYED);
    for (const headers of [{} as Record<string, string>, bearer('fsk-guessed-key'), { authorization: `Basic ${Buffer.from('alice:pw').toString('base64')}` }, { 'api-key': 'fsk-guessed-key' }]) {
      const res = await chat(url, headers);
      expect(res.status).toBe(401);
      expect(res.json()).toEqual({ error: { message: expect.any(String), type: 'invalid_request_error', param: null, code: 'invalid_api_key' } });
      expect(res.text).not.toContain('fsk-guessed-key');
      expect(res.headers.get('content-type')).toBe('application/json');
    }
    expect(be.seen).toHaveLength(0);
    const err = await client(url, 'fsk-wrong').chat.completions.create({ model: 'm', messages: [{ role: 'user', content: 'hi' }] }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(OpenAI.AuthenticationError);
    expect((err as InstanceType<typeof OpenAI.AuthenticationError>).code).toBe('invalid_api_key');
  });

  it("serves a valid key sent as a bearer token or as api-key; the backend gets its own key, never the client's", async () => {
    const { url, backend: be } = await start(KEYED);
    const viaBearer = await chat(url, bearer(KEYS.alice));
    const viaApiKey = await chat(url, { 'api-key': KEYS.alice });
    expect([viaBearer.status, viaApiKey.status]).toEqual([200, 200]);
    const completion = await client(url, KEYS.alice).chat.completions.create({ model: 'm', messages: [{ role: 'user', content: 'hi' }] });
    expect(completion.choices[0]?.message.content).toBe('ok');
    expect(be.seen).toHaveLength(3);
    for (const headers of be.seen) {
      expect(headers.authorization).toBe(`Bearer ${BACKEND_KEY}`);
      expect(headers['api-key']).toBeUndefined();
      expect(JSON.stringify(headers)).not.toContain(KEYS.alice);
    }
    for (const res of [viaBearer, viaApiKey]) expect(res.text + allHeaders(res.headers)).not.toContain(BACKEND_KEY);
  });

  it('answers 403 for a model or an SLO class the key may not use', async () => {
    const { url, backend: be } = await start(KEYED);
    const model = await chat(url, bearer(KEYS.alice), { model: 'other' });
    expect(model.status).toBe(403);
    expect(model.json().error).toMatchObject({ code: 'model_not_allowed', param: 'model', type: 'invalid_request_error' });
    const slo = await chat(url, { ...bearer(KEYS.bob), 'x-freesh-slo': 'interactive' });
    expect(slo.status).toBe(403);
    expect(slo.json().error.code).toBe('slo_class_not_allowed');
    expect(be.seen).toHaveLength(0);
    const err = await client(url, KEYS.alice).chat.completions.create({ model: 'other', messages: [{ role: 'user', content: 'hi' }] }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(OpenAI.PermissionDeniedError);
  });

  it('takes the tenant from the key and ignores x-freesh-* headers unless the key may set them', async () => {
    const { url } = await start(KEYED);
    const ends: RequestEnd[] = [];
    const onEnd = (message: unknown): void => void ends.push(message as RequestEnd);
    subscribe(completionChannel.name, onEnd);
    cleanups.push(() => unsubscribe(completionChannel.name, onEnd));

    // Not allowed: a forged tenant and even an unknown class are ignored, not refused.
    expect((await chat(url, { ...bearer(KEYS.alice), 'x-freesh-tenant': 'globex', 'x-freesh-slo': 'no-such-class' })).status).toBe(200);
    // Allowed: both are read.
    expect((await chat(url, { ...bearer(KEYS.bob), 'x-freesh-tenant': 'initech', 'x-freesh-slo': 'batch' })).status).toBe(200);
    expect((await chat(url, bearer(KEYS.bob))).status).toBe(200);
    const bad = await chat(url, { ...bearer(KEYS.bob), 'x-freesh-slo': 'no-such-class' });
    expect(bad.status).toBe(400);
    expect(bad.json().error.code).toBe('unknown_slo_class');

    await until(() => ends.filter((e) => e.outcome === 'completed').length === 3);
    const served = ends.filter((e) => e.outcome === 'completed').map((e) => [e.request.tenant, e.request.sloClass]);
    expect(served).toEqual([
      ['acme', 'standard'],
      ['initech', 'batch'],
      ['globex', 'standard'],
    ]);
  });
});

describe('admin routes', () => {
  it('/metrics needs an admin key; /v1/models a key; /healthz stays open and tells the status only', async () => {
    const { url } = await start(KEYED);
    const metrics = (headers: Record<string, string>) => fetch(`${url}/metrics`, { headers });
    const none = await metrics({});
    expect(none.status).toBe(401);
    expect((await none.json()).error.code).toBe('invalid_api_key');
    const user = await metrics(bearer(KEYS.alice));
    expect(user.status).toBe(403);
    expect((await user.json()).error.code).toBe('admin_key_required');
    const admin = await metrics(bearer(KEYS.admin));
    expect(admin.status).toBe(200);
    expect(await admin.text()).toContain('freesh_');
    // Refusals are counted under their own outcome.
    await chat(url, bearer('fsk-guessed-key'));
    expect(await (await metrics(bearer(KEYS.admin))).text()).toMatch(/outcome="rejected-auth",backend="none"} 1\b/);

    expect((await fetch(`${url}/v1/models`)).status).toBe(401);
    expect((await fetch(`${url}/v1/models`, { headers: bearer(KEYS.alice) })).status).toBe(200);
    expect((await fetch(`${url}/v1/models`, { headers: bearer(KEYS.admin) })).status).toBe(200);

    const health = await fetch(`${url}/healthz`);
    expect(health.status).toBe(200);
    expect(await health.json()).toEqual({ status: 'ok' });
  });

  it('protects admin routes even when completions stay open (no user keys)', async () => {
    const { url } = await start({ adminKeys: [hashKey(KEYS.admin)] });
    expect((await chat(url, {})).status).toBe(200);
    expect((await fetch(`${url}/v1/models`)).status).toBe(200);
    expect((await fetch(`${url}/metrics`)).status).toBe(401);
    expect((await fetch(`${url}/metrics`, { headers: { 'api-key': KEYS.admin } })).status).toBe(200);
  });

  it("guards the dashboard's data with the admin key; the page itself holds none", async () => {
    const be = await backend();
    const config = fleetConfig([{ id: 'b1', baseURL: be.baseURL, models: ['m'] }], { auth: KEYED, plan: { enabled: false }, dashboard: { enabled: true } });
    const proxy = await proxyFor(config, { predictor: heuristicPredictor() });
    cleanups.push(() => proxy.shutdown(0));
    const page = await fetch(`${proxy.url}/dashboard`);
    expect(page.status).toBe(200);
    expect(await page.text()).toContain('#key=');
    expect((await fetch(`${proxy.url}/dashboard/api/state`)).status).toBe(401);
    expect((await fetch(`${proxy.url}/dashboard/api/state`, { headers: bearer(KEYS.alice) })).status).toBe(403);
    const state = await fetch(`${proxy.url}/dashboard/api/state`, { headers: bearer(KEYS.admin) });
    expect(state.status).toBe(200);
    expect(await state.json()).toHaveProperty('backends');
  });
});

describe('rate limits', () => {
  it('sets x-ratelimit-* headers, then refuses with 429 rate_limit_exceeded, retry-after and retry-after-ms', async () => {
    const { url } = await start({ keys: [{ id: 'alice', sha256: hashKey(KEYS.alice), tenant: 'acme', limits: { requestsPerMinute: 2 } }] });
    const first = await chat(url, bearer(KEYS.alice));
    const second = await chat(url, bearer(KEYS.alice));
    expect([first.status, second.status]).toEqual([200, 200]);
    expect(first.headers.get('x-ratelimit-limit-requests')).toBe('2');
    expect(first.headers.get('x-ratelimit-remaining-requests')).toBe('1');
    expect(second.headers.get('x-ratelimit-remaining-requests')).toBe('0');
    // Two requests at 2 a minute: about a minute to a full bucket.
    expect(second.headers.get('x-ratelimit-reset-requests')).toMatch(/^(59|60)(\.\d+)?s$/);
    expect(first.headers.get('x-ratelimit-limit-tokens')).toBeNull();

    const refused = await chat(url, bearer(KEYS.alice));
    expect(refused.status).toBe(429);
    expect(refused.json()).toEqual({ error: { message: expect.stringContaining('key `alice` on requests per minute'), type: 'rate_limit_error', param: null, code: 'rate_limit_exceeded' } });
    // One request at 2 a minute comes back in 30 s.
    const retryMs = Number(refused.headers.get('retry-after-ms'));
    expect(retryMs).toBeGreaterThan(29_000);
    expect(retryMs).toBeLessThanOrEqual(30_000);
    expect(refused.headers.get('retry-after')).toBe(String(Math.ceil(retryMs / 1000)));
    expect(refused.headers.get('x-ratelimit-remaining-requests')).toBe('0');

    const err = await client(url, KEYS.alice).chat.completions.create({ model: 'm', messages: [{ role: 'user', content: 'hi' }] }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(OpenAI.RateLimitError);
    expect((err as InstanceType<typeof OpenAI.RateLimitError>).code).toBe('rate_limit_exceeded');
  });

  it('takes prompt plus max_tokens from the token bucket at admission and gives back what was not produced', async () => {
    const { url } = await start({ keys: [{ id: 'alice', sha256: hashKey(KEYS.alice), tenant: 'acme', limits: { tokensPerMinute: 1_000 } }] });
    // "Hello there": 3 prompt tokens by the router's estimate; 900 reserved for the output, 5 produced.
    const first = await chat(url, bearer(KEYS.alice), { max_tokens: 900 });
    expect(first.status).toBe(200);
    expect(first.headers.get('x-ratelimit-limit-tokens')).toBe('1000');
    expect(Number(first.headers.get('x-ratelimit-remaining-tokens'))).toBe(97);
    // Without the settlement 97 tokens would be left; with it, 900 − 5 came back.
    const second = await chat(url, bearer(KEYS.alice), { max_tokens: 900 });
    expect(second.status).toBe(200);
    expect(Number(second.headers.get('x-ratelimit-remaining-tokens'))).toBeGreaterThanOrEqual(89);
    // A request that produced more than it reserved pays the difference.
    await chat(url, bearer(KEYS.alice), { max_tokens: 10, report: 400 });
    const refused = await chat(url, bearer(KEYS.alice), { max_tokens: 900 });
    expect(refused.status).toBe(429);
    expect(refused.json().error.message).toContain('on tokens per minute');
  });

  it('applies a tenant limit across its keys', async () => {
    const { url } = await start({
      keys: [
        { id: 'a1', sha256: hashKey(KEYS.alice), tenant: 'acme' },
        { id: 'a2', sha256: hashKey(KEYS.bob), tenant: 'acme' },
      ],
      tenants: { acme: { requestsPerMinute: 3 } },
    });
    const statuses = [];
    for (const key of [KEYS.alice, KEYS.bob, KEYS.alice, KEYS.bob]) statuses.push((await chat(url, bearer(key))).status);
    expect(statuses).toEqual([200, 200, 200, 429]);
  });

  it('caps concurrent requests: headers go out before the stream, a slot frees when a stream ends or its client leaves', async () => {
    const { url, backend: be } = await start({
      keys: [{ id: 'alice', sha256: hashKey(KEYS.alice), tenant: 'acme', limits: { maxConcurrent: 1, requestsPerMinute: 100 } }],
    });
    const open = await streamPost(`${url}/v1/chat/completions`, chatBody({ stream: true, hold: true }), bearer(KEYS.alice));
    expect(open.status).toBe(200);
    // Sent with the headers, while the stream is still open.
    expect(open.headers['x-ratelimit-limit-requests']).toBe('100');
    expect(open.headers['x-ratelimit-remaining-requests']).toBe('99');
    expect(await nextChunk(open.response)).toContain('"hi"');

    const refused = await chat(url, bearer(KEYS.alice));
    expect(refused.status).toBe(429);
    expect(refused.json().error).toMatchObject({ code: 'rate_limit_exceeded', message: expect.stringContaining('concurrent') });
    expect(refused.headers.get('retry-after')).toBe('1');
    expect(refused.headers.get('retry-after-ms')).toBe('1000');

    // The stream ends: the slot is free.
    be.held.shift()!.end('data: [DONE]\n\n');
    await new Promise((resolve) => open.response.on('end', resolve).resume());
    expect((await chat(url, bearer(KEYS.alice))).status).toBe(200);

    // The client leaves mid-stream: the slot is free too.
    const left = await streamPost(`${url}/v1/chat/completions`, chatBody({ stream: true, hold: true }), bearer(KEYS.alice));
    await nextChunk(left.response);
    expect((await chat(url, bearer(KEYS.alice))).status).toBe(429);
    left.abort();
    await until(async () => (await chat(url, bearer(KEYS.alice))).status === 200);
  });

  it('frees the slot and the output tokens of a request the backend fails, and never shows the backend key, even when the backend echoes it', async () => {
    const { url } = await start({ keys: [{ id: 'alice', sha256: hashKey(KEYS.alice), tenant: 'acme', models: ['m', 'fail'], limits: { maxConcurrent: 1, tokensPerMinute: 1_000 } }] });
    const failed = await chat(url, bearer(KEYS.alice), { model: 'fail', max_tokens: 900 });
    expect(failed.status).toBe(502);
    // Never served: its 900 reserved output tokens came back, and its slot is free.
    const next = await chat(url, bearer(KEYS.alice), { max_tokens: 900 });
    expect(next.status).toBe(200);
    expect(failed.text).toContain('[redacted]');
    expect(failed.text + allHeaders(failed.headers)).not.toContain(BACKEND_KEY);
    const streamed = await post(`${url}/v1/chat/completions`, chatBody({ stream: true, max_tokens: 10 }), bearer(KEYS.alice));
    expect(streamed.status).toBe(200);
    expect(streamed.text + allHeaders(streamed.headers)).not.toContain(BACKEND_KEY);
  });
});
