import { Readable } from 'node:stream';
import { describe, expect, it } from 'vitest';
import { CancelToken } from '../../src/cancel.js';
import { failover, healthMarking } from '../../src/transport/layers.js';
import { compose, isConnectError, type Transport, type UpstreamRequest, type UpstreamResponse } from '../../src/transport/transport.js';
import type { Backend } from '../../src/types.js';
import { backend } from '../helpers/fixtures.js';

const refused = (): Error => Object.assign(new Error('connect ECONNREFUSED 127.0.0.1:1'), { code: 'ECONNREFUSED' });
const answer = (status: number): UpstreamResponse => ({ status, headers: {}, body: Readable.from([Buffer.from(`{"status":${status}}`)]) });

/**
 * A base transport whose backends answer as `behaviour` says (a status, or an error thrown before
 * any byte): it records where each request went and whether it was closed.
 */
function base(behaviour: Record<string, number | Error>) {
  const sent: string[] = [];
  let closed = 0;
  const transport: Transport = {
    send(to) {
      sent.push(to.id);
      const outcome = behaviour[to.id]!;
      return outcome instanceof Error ? Promise.reject(outcome) : Promise.resolve(answer(outcome));
    },
    close: async () => void closed++,
  };
  return { transport, sent, closed: () => closed };
}

/** A request whose `reroute` hands out `targets` in turn, recording the causes it was given. */
function request(targets: readonly Backend[], extra: Partial<UpstreamRequest> = {}) {
  const causes: unknown[] = [];
  let next = 0;
  const upstream: UpstreamRequest = {
    method: 'POST',
    path: '/chat/completions',
    headers: {},
    ...extra,
    reroute: async (_failed, cause) => {
      causes.push(cause);
      return { backend: targets[next++]!, request: upstream };
    },
  };
  return { upstream, causes };
}

describe('failover', () => {
  it('sends elsewhere a request a backend refused or answered 503 to, telling reroute why', async () => {
    const b = base({ a: refused(), b: 503, c: 200 });
    const { upstream, causes } = request([backend('b'), backend('c')]);
    const response = await compose(b.transport, failover({ retries: 2 })).send(backend('a'), upstream);
    expect(response.status).toBe(200);
    expect(b.sent).toEqual(['a', 'b', 'c']);
    expect(isConnectError(causes[0])).toBe(true);
    expect(isConnectError(causes[1])).toBe(false);
    expect((causes[1] as Error).message).toBe('b answered 503');
  });

  it('tries at most `retries` more backends; then the client gets the last 503 as the backend gave it', async () => {
    const b = base({ a: 503, b: 503, c: 503, d: 200 });
    const { upstream } = request([backend('b'), backend('c'), backend('d')]);
    const response = await compose(b.transport, failover({ retries: 2 })).send(backend('a'), upstream);
    expect(b.sent).toEqual(['a', 'b', 'c']);
    expect(response.status).toBe(503);
    expect(Buffer.concat(await response.body.toArray()).toString()).toBe('{"status":503}');
  });

  it('with retries spent on refused connections, the last refusal is thrown', async () => {
    const last = refused();
    const b = base({ a: refused(), b: last });
    const { upstream } = request([backend('b')]);
    await expect(compose(b.transport, failover({ retries: 1 })).send(backend('a'), upstream)).rejects.toBe(last);
    expect(b.sent).toEqual(['a', 'b']);
  });

  it('does not send elsewhere once the client has gone, nor without reroute, nor after other errors', async () => {
    const gone = new CancelToken();
    gone.abort();
    const left = base({ a: 503, b: 200 });
    const { upstream } = request([backend('b')], { signal: gone });
    expect((await compose(left.transport, failover({ retries: 1 })).send(backend('a'), upstream)).status).toBe(503);
    expect(left.sent).toEqual(['a']);

    const alone = base({ a: 503 });
    const { reroute: _, ...noReroute } = request([]).upstream;
    expect((await compose(alone.transport, failover({ retries: 1 })).send(backend('a'), noReroute)).status).toBe(503);

    const dropped = new Error('other side closed');
    const other = base({ a: dropped, b: 200 });
    await expect(compose(other.transport, failover({ retries: 1 })).send(backend('a'), request([backend('b')]).upstream)).rejects.toBe(dropped);
    expect(other.sent).toEqual(['a']);
  });
});

describe('health marking', () => {
  it('marks a backend that refused the connection, and only then; the error goes on to the caller', async () => {
    const marked: string[] = [];
    const notReached = refused();
    const dropped = new Error('other side closed');
    const b = base({ a: notReached, b: dropped, c: 500 });
    const t = compose(
      b.transport,
      healthMarking((to) => marked.push(to.id)),
    );
    const { upstream } = request([]);
    await expect(t.send(backend('a'), upstream)).rejects.toBe(notReached);
    await expect(t.send(backend('b'), upstream)).rejects.toBe(dropped);
    expect((await t.send(backend('c'), upstream)).status).toBe(500);
    expect(marked).toEqual(['a']);
  });
});

describe('compose', () => {
  it('closing the composed transport closes the one beneath, through every layer', async () => {
    const b = base({});
    await compose(
      b.transport,
      healthMarking(() => undefined),
      failover({ retries: 1 }),
    ).close();
    expect(b.closed()).toBe(1);
  });
});

describe('isConnectError', () => {
  it('finds a refused connection in the error or the causes undici wraps it in', () => {
    expect(isConnectError(refused())).toBe(true);
    expect(isConnectError(new TypeError('fetch failed', { cause: refused() }))).toBe(true);
    const timeout = Object.assign(new Error('Connect Timeout Error'), { code: 'UND_ERR_CONNECT_TIMEOUT' });
    expect(isConnectError(new Error('a', { cause: new Error('b', { cause: new Error('c', { cause: timeout }) }) }))).toBe(true);
    expect(isConnectError(Object.assign(new Error('socket hang up'), { code: 'ECONNRESET' }))).toBe(false);
    expect(isConnectError({ code: 'ECONNREFUSED' })).toBe(false);
    expect(isConnectError(undefined)).toBe(false);
  });

  it('looks no deeper than three causes, so a cyclic chain ends', () => {
    const deep = new Error('a', { cause: new Error('b', { cause: new Error('c', { cause: new Error('d', { cause: refused() }) }) }) });
    expect(isConnectError(deep)).toBe(false);
    const cyclic = new Error('loop');
    cyclic.cause = cyclic;
    expect(isConnectError(cyclic)).toBe(false);
  });
});
