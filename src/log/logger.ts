import { subscribe, unsubscribe } from 'node:diagnostics_channel';
import { type DestinationStream, type Logger, pino } from 'pino';
import type { z } from 'zod';
import type { logSchema } from '../config/schema.js';
import { type BackendEvent, backendChannel } from '../pipeline/backend-events.js';
import type { Plan } from '../plan/plan.js';
import { planChannel } from '../plan/pool-planner.js';
import type { RequestEnd } from '../router.js';

export type { Logger } from 'pino';
export type LogConfig = z.output<typeof logSchema>;

/**
 * Where credentials could appear in anything logged: never written, whatever a caller passes. The
 * request lines below carry no headers and no body (never the prompt) in the first place.
 */
export const REDACTED_PATHS = [
  'authorization',
  'apiKey',
  'api_key',
  'password',
  'headers.authorization',
  'headers["x-api-key"]',
  'headers["api-key"]',
  '*.authorization',
  '*.apiKey',
  '*.api_key',
  '*.password',
  '*.headers.authorization',
  '*.headers["x-api-key"]',
  '*.headers["api-key"]',
  'backends[*].apiKey',
  'sites[*].carbon.apiKey',
  'sites[*].carbon.password',
];

/**
 * The proxy's logger: pino, at `config.level`, as JSON lines or (`text`) as `time LEVEL message
 * key=value…` lines. Written synchronously: the process may exit right after its last line (a
 * refused config, the end of a drain) and an asynchronous stream would lose it.
 */
export function createLogger(config: LogConfig, destination?: DestinationStream): Logger {
  const out = destination ?? pino.destination({ dest: 1, sync: true });
  return pino(
    { level: config.level, base: { name: 'freesh' }, redact: { paths: REDACTED_PATHS, censor: '[redacted]' } },
    config.format === 'text' ? textLines(out) : out,
  );
}

const LEVEL_NAMES: Readonly<Record<number, string>> = { 10: 'TRACE', 20: 'DEBUG', 30: 'INFO', 40: 'WARN', 50: 'ERROR', 60: 'FATAL' };
const OMITTED = new Set(['level', 'time', 'msg', 'pid', 'hostname', 'name']);

/** pino's JSON lines rewritten for people (pino-pretty's job, without its weight). */
function textLines(out: DestinationStream): DestinationStream {
  return {
    write(line: string) {
      const entry = JSON.parse(line) as Record<string, unknown>;
      const fields = Object.entries(entry)
        .filter(([key]) => !OMITTED.has(key))
        .map(([key, value]) => `${key}=${typeof value === 'string' && !/\s/.test(value) ? value : JSON.stringify(value)}`);
      const time = new Date(entry.time as number).toISOString();
      out.write(`${time} ${LEVEL_NAMES[entry.level as number] ?? entry.level} ${String(entry.msg ?? '')}${fields.length ? ` ${fields.join(' ')}` : ''}\n`);
    },
  };
}

/**
 * Logs what the router publishes: one line per request (`freesh:complete`), backend health and
 * failover events (`freesh:backend`) and pool plan changes (`freesh:plan`). Channels are per process,
 * so one subscription serves every router in it (replicas, a router replaced on reload). Returns the
 * function that stops it.
 */
export function logRouterEvents(logger: Logger): () => void {
  const onRequest = (message: unknown): void => logRequest(logger, message as RequestEnd);
  const onBackend = (message: unknown): void => logBackendEvent(logger, message as BackendEvent);
  let lastStatus: string | undefined;
  const onPlan = (message: unknown): void => {
    const event = message as Plan | { readonly error: string };
    if ('error' in event) return void logger.warn({ event: 'plan-failed', error: event.error }, `planning failed, the plan in force stays: ${event.error}`);
    if (event.status === 'degraded') logger.warn({ event: 'plan', status: event.status }, `plan degraded: ${event.note}`);
    else if (event.status !== lastStatus) logger.info({ event: 'plan', status: event.status }, `plan ${event.status}: ${event.note}`);
    lastStatus = event.status;
  };
  subscribe('freesh:complete', onRequest);
  backendChannel.subscribe(onBackend);
  planChannel.subscribe(onPlan);
  return () => {
    unsubscribe('freesh:complete', onRequest);
    backendChannel.unsubscribe(onBackend);
    planChannel.unsubscribe(onPlan);
  };
}

/** One line per request: who, what, where, how it ended, how long, tokens, energy and carbon. Never the prompt nor a header. */
function logRequest(logger: Logger, end: RequestEnd): void {
  const { request, placement, error } = end;
  const served = end.outcome === 'completed';
  const level = end.outcome === 'internal-error' ? 'error' : 'info';
  logger[level](
    {
      event: 'request',
      requestId: request.id,
      tenant: request.tenant,
      sloClass: request.sloClass,
      model: request.model,
      stream: request.stream,
      backend: placement?.backend.id,
      site: placement?.backend.site.id,
      outcome: end.outcome,
      // A relayed backend answer keeps its own status; the router's refusals and failures carry theirs.
      status: error?.status ?? (served ? 200 : undefined),
      code: error?.code,
      durationMs: Math.round(end.durationMs),
      promptTokens: request.promptTokens,
      outputTokens: end.outputTokens,
      energyJ: served && placement ? round(placement.cost.energyJ, 1) : undefined,
      carbonG: served && placement ? round(placement.cost.carbonG, 4) : undefined,
    },
    'request',
  );
}

function logBackendEvent(logger: Logger, event: BackendEvent): void {
  const quiet = event.kind === 'restored' || (event.kind === 'circuit' && event.state === 'closed');
  const { kind, ...fields } = event;
  logger[quiet ? 'info' : 'warn']({ event: `backend-${kind}`, ...fields }, `backend ${event.backendId} ${kind}: ${event.reason}`);
}

function round(value: number, digits: number): number {
  const f = 10 ** digits;
  return Math.round(value * f) / f;
}
