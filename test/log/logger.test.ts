import { afterEach, describe, expect, it } from 'vitest';
import { createLogger, type Logger, logRouterEvents } from '../../src/log/logger.js';
import { publishBackendEvent } from '../../src/pipeline/backend-events.js';
import { startProxy } from '../../src/proxy/standalone.js';
import { chatBody, fleetConfig, post, upstream } from '../helpers/servers.js';

const cleanups: (() => unknown)[] = [];
afterEach(async () => {
  for (const fn of cleanups.splice(0).reverse()) await fn();
});

/** A logger writing into an array, as the process would write to stdout. */
function captured(format: 'json' | 'text' = 'json', level: 'info' | 'warn' = 'info'): { logger: Logger; lines: string[] } {
  const lines: string[] = [];
  const logger = createLogger({ level, format }, { write: (line: string) => void lines.push(line) });
  return { logger, lines };
}

const PROMPT = 'PURPLE-ELEPHANT-PROMPT tell me a secret';
const CLIENT_KEY = 'sk-client-SECRET-123';
const BACKEND_KEY = 'sk-backend-SECRET-456';

describe('structured logs', () => {
  it('one JSON line per request with its id, tenant, class, model, backend, outcome, status, duration, tokens, energy and carbon; never the prompt or a key', async () => {
    const seen: { id?: string; auth?: string }[] = [];
    const up = await upstream((req, res) => {
      seen.push({ id: req.headers['x-request-id'] as string, auth: req.headers.authorization });
      res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify({ object: 'chat.completion', choices: [], usage: { prompt_tokens: 5, completion_tokens: 7 } }));
    });
    cleanups.push(() => up.close());
    const { logger, lines } = captured();
    cleanups.push(logRouterEvents(logger));
    const config = fleetConfig([{ id: 'b1', baseURL: up.baseURL }], { plan: { enabled: false } });
    (config.backends[0] as { apiKey?: string }).apiKey = BACKEND_KEY;
    const p = await startProxy(config, {}, { logger });
    cleanups.push(() => p.shutdown(0));

    const body = JSON.stringify({ model: 'm', messages: [{ role: 'user', content: PROMPT }] });
    const given = await post(`${p.url}/v1/chat/completions`, body, { authorization: `Bearer ${CLIENT_KEY}`, 'x-request-id': 'req-from-client', 'x-freesh-tenant': 'acme', 'x-freesh-slo': 'interactive' });
    expect(given.status).toBe(200);
    expect(given.headers.get('x-request-id')).toBe('req-from-client');
    // Generated when the client sends none; the same id upstream, in the answer and in the log.
    const generated = await post(`${p.url}/v1/chat/completions`, chatBody());
    const id = generated.headers.get('x-request-id');
    expect(id).toMatch(/^req-/);
    expect(seen.map((s) => s.id)).toEqual(['req-from-client', id]);
    expect(seen[0]!.auth).toBe(`Bearer ${BACKEND_KEY}`);
    // A refusal is logged with its status and code.
    const refused = await post(`${p.url}/v1/chat/completions`, chatBody({ model: 'nope' }), { 'x-request-id': 'req-refused' });
    expect(refused.status).toBe(404);
    expect(refused.headers.get('x-request-id')).toBe('req-refused');

    const requests = lines.map((l) => JSON.parse(l) as Record<string, unknown>).filter((l) => l.event === 'request');
    expect(requests).toHaveLength(3);
    expect(requests[0]).toMatchObject({
      level: 30,
      msg: 'request',
      requestId: 'req-from-client',
      tenant: 'acme',
      sloClass: 'interactive',
      model: 'm',
      backend: 'b1',
      site: 'loc1',
      outcome: 'completed',
      status: 200,
      durationMs: expect.any(Number),
      outputTokens: 7,
      energyJ: expect.any(Number),
      carbonG: expect.any(Number),
    });
    expect(requests[0]!.energyJ).toBeGreaterThan(0);
    expect(requests[1]).toMatchObject({ requestId: id, tenant: 'default', sloClass: 'standard', status: 200 });
    expect(requests[2]).toMatchObject({ requestId: 'req-refused', outcome: 'rejected-invalid', status: 404, code: 'model_not_found' });
    const all = lines.join('');
    expect(all).not.toContain('PURPLE-ELEPHANT');
    expect(all).not.toContain('SECRET');
  });

  it('redacts credentials in anything logged, and writes backend events and plans as lines of their own', () => {
    const { logger, lines } = captured();
    cleanups.push(logRouterEvents(logger));
    logger.info(
      {
        headers: { authorization: `Bearer ${CLIENT_KEY}`, 'x-api-key': CLIENT_KEY, 'api-key': CLIENT_KEY, accept: 'json' },
        backends: [{ id: 'b1', apiKey: BACKEND_KEY }],
        sites: [{ id: 's', carbon: { provider: 'watttime', username: 'u', password: 'SECRET-pw' } }],
        apiKey: BACKEND_KEY,
      },
      'config',
    );
    publishBackendEvent({ kind: 'failover', backendId: 'b1', requestId: 'req-9', reason: 'ECONNREFUSED' });
    publishBackendEvent({ kind: 'restored', backendId: 'b1', reason: 'probe passed' });
    const [config, failover, restored] = lines.map((l) => JSON.parse(l) as Record<string, any>);
    expect(lines.join('')).not.toContain('SECRET');
    expect(config).toMatchObject({ headers: { authorization: '[redacted]', 'x-api-key': '[redacted]', 'api-key': '[redacted]', accept: 'json' }, backends: [{ id: 'b1', apiKey: '[redacted]' }], apiKey: '[redacted]' });
    expect(config!.sites[0].carbon.password).toBe('[redacted]');
    expect(failover).toMatchObject({ level: 40, event: 'backend-failover', backendId: 'b1', requestId: 'req-9', msg: 'backend b1 failover: ECONNREFUSED' });
    expect(restored).toMatchObject({ level: 30, event: 'backend-restored', backendId: 'b1' });
  });

  it('the text format writes `time LEVEL message key=value` lines, and the level filters', () => {
    const { logger, lines } = captured('text', 'warn');
    logger.info({ event: 'x' }, 'not written');
    logger.warn({ backend: 'b1', reason: 'two words' }, 'backend ejected');
    expect(lines).toHaveLength(1);
    expect(lines[0]).toMatch(/^\d{4}-\d\d-\d\dT[\d:.]+Z WARN backend ejected backend=b1 reason="two words"\n$/);
  });
});
