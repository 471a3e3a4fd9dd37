/**
 * One error base for everything the router answers with. Each error carries a stable `code`, the
 * HTTP `status` it maps to and an OpenAI-shaped `type`, and renders itself as the body OpenAI
 * clients already know how to read: `{"error":{"message","type","param","code"}}`.
 */
export type ErrorType =
  | 'invalid_request_error'
  | 'not_found_error'
  | 'rate_limit_error'
  | 'server_error'
  | 'upstream_error'
  | 'timeout_error';

/** Every code the router answers with: stable, for clients and metrics to match on. */
export const ERROR_CODES = [
  'invalid_request',
  'invalid_json',
  'invalid_body',
  'invalid_model',
  'invalid_messages',
  'invalid_prompt',
  'invalid_type',
  'invalid_value',
  'invalid_header',
  'json_too_deep',
  'malformed_http',
  'headers_too_large',
  'request_timeout',
  'expectation_failed',
  'unknown_slo_class',
  'body_read_failed',
  'body_too_large',
  'model_not_found',
  'route_not_found',
  'method_not_allowed',
  'queue_full',
  'queue_timeout',
  'class_shed',
  'draining',
  'no_backend_available',
  'deadline_unmeetable',
  'upstream_unreachable',
  'upstream_error',
  'upstream_dropped',
  'client_closed',
  'internal_error',
  'invalid_api_key',
  'model_not_allowed',
  'slo_class_not_allowed',
  'admin_key_required',
  'rate_limit_exceeded',
] as const;
export type ErrorCode = (typeof ERROR_CODES)[number];

export interface FreeshErrorOptions {
  readonly code: ErrorCode;
  readonly status: number;
  readonly type: ErrorType;
  readonly param?: string | undefined;
  readonly cause?: unknown;
  /** Headers the answer carries besides the usual ones (a rate limit's `retry-after-ms` and `x-ratelimit-*`). */
  readonly headers?: Readonly<Record<string, string>> | undefined;
  /** When a retry may succeed (ms from now): sent as `retry-after` and `retry-after-ms`, and the client is let retry. */
  readonly retryAfterMs?: number | undefined;
}

export class FreeshError extends Error {
  readonly code: ErrorCode;
  readonly status: number;
  readonly type: ErrorType;
  readonly param: string | undefined;
  readonly headers: Readonly<Record<string, string>> | undefined;
  readonly retryAfterMs: number | undefined;
  /** The request's id (`x-request-id`), once the router knows which request failed: returned with the answer. */
  requestId: string | undefined;

  constructor(message: string, options: FreeshErrorOptions) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.name = 'FreeshError';
    this.code = options.code;
    this.status = options.status;
    this.type = options.type;
    this.param = options.param;
    this.headers = options.headers;
    this.retryAfterMs = options.retryAfterMs;
  }

  toJSON(): { error: { message: string; type: ErrorType; param: string | null; code: ErrorCode } } {
    return { error: { message: this.message, type: this.type, param: this.param ?? null, code: this.code } };
  }

  toBody(): string {
    return JSON.stringify(this.toJSON());
  }
}

export const invalidRequest = (message: string, param?: string, code: ErrorCode = 'invalid_request'): FreeshError =>
  new FreeshError(message, { code, status: 400, type: 'invalid_request_error', param });

export const bodyTooLarge = (limitBytes: number): FreeshError =>
  new FreeshError(`Request body exceeds the limit of ${limitBytes} bytes`, {
    code: 'body_too_large',
    status: 413,
    type: 'invalid_request_error',
  });

export const jsonTooDeep = (limit: number): FreeshError =>
  new FreeshError(`Request body nests arrays and objects deeper than ${limit} levels`, {
    code: 'json_too_deep',
    status: 400,
    type: 'invalid_request_error',
  });

/** What the HTTP parser refused before any route saw the request (bad framing, headers too large, too slow). */
export const malformedHttp = (detail: string): FreeshError =>
  new FreeshError(`Malformed HTTP request: ${detail}`, { code: 'malformed_http', status: 400, type: 'invalid_request_error' });

export const headersTooLarge = (limitBytes: number): FreeshError =>
  new FreeshError(`Request headers exceed the limit of ${limitBytes} bytes`, {
    code: 'headers_too_large',
    status: 431,
    type: 'invalid_request_error',
  });

export const requestTimeout = (headersMs: number, requestMs: number): FreeshError =>
  new FreeshError(`The client did not send its request in time (headers within ${headersMs} ms, headers and body within ${requestMs} ms)`, {
    code: 'request_timeout',
    status: 408,
    type: 'timeout_error',
  });

export const expectationFailed = (expect: string): FreeshError =>
  new FreeshError(`Unsupported Expect header ${JSON.stringify(expect.slice(0, 80))}; only 100-continue is supported`, {
    code: 'expectation_failed',
    status: 417,
    type: 'invalid_request_error',
    param: 'expect',
  });

export const modelNotFound = (model: string): FreeshError =>
  new FreeshError(`The model \`${model}\` is not served by any backend`, {
    code: 'model_not_found',
    status: 404,
    type: 'not_found_error',
    param: 'model',
  });

export const routeNotFound = (method: string, path: string): FreeshError =>
  new FreeshError(`Unknown route: ${method} ${path}`, { code: 'route_not_found', status: 404, type: 'not_found_error' });

/** A dashboard path while `dashboard.enabled` is off: answered as an unknown route, saying how to turn it on. */
export const dashboardDisabled = (path: string): FreeshError =>
  new FreeshError(`Unknown route: ${path} (the dashboard is off; set \`dashboard.enabled\` to serve it)`, { code: 'route_not_found', status: 404, type: 'not_found_error' });

export const methodNotAllowed = (method: string, path: string, allowed: string): FreeshError =>
  new FreeshError(`Method ${method} is not allowed on ${path}; use ${allowed}`, {
    code: 'method_not_allowed',
    status: 405,
    type: 'invalid_request_error',
  });

/** The backend's whole queue is taken (every class is refused): the fleet is full, 503. */
export const queueFull = (backendId: string, limit: number, retryAfterMs?: number): FreeshError =>
  new FreeshError(`Admission queue of backend ${backendId} is full (${limit} waiting): the fleet is at capacity; retry later`, {
    code: 'queue_full',
    status: 503,
    type: 'server_error',
    retryAfterMs,
  });

/** The request's SLO class has used its share of the backend's queue (higher-priority classes still queue): 429. */
export const classShed = (sloClass: string, backendId: string, waiting: number, share: number, retryAfterMs: number): FreeshError =>
  new FreeshError(
    `Overloaded: SLO class \`${sloClass}\` is shed while ${waiting} requests wait for backend ${backendId} (its share of the queue is ${share}); retry later`,
    { code: 'class_shed', status: 429, type: 'rate_limit_error', retryAfterMs },
  );

/** The server is draining before it stops (SIGTERM): a new request should go to another replica. */
export const draining = (retryAfterMs: number): FreeshError =>
  new FreeshError('The server is shutting down and takes no new requests; retry on another replica', {
    code: 'draining',
    status: 503,
    type: 'server_error',
    retryAfterMs,
  });

export const queueTimeout = (waitedMs: number): FreeshError =>
  new FreeshError(`Request waited ${Math.round(waitedMs)} ms in the admission queue without being admitted`, {
    code: 'queue_timeout',
    status: 504,
    type: 'timeout_error',
  });

export const noBackend = (model: string, reason: string): FreeshError =>
  new FreeshError(`No backend can serve model \`${model}\` now: ${reason}`, {
    code: 'no_backend_available',
    status: 503,
    type: 'server_error',
  });

export const deadlineUnmeetable = (sloClass: string): FreeshError =>
  new FreeshError(`No backend can meet the deadline of SLO class \`${sloClass}\` now, and the class rejects late requests`, {
    code: 'deadline_unmeetable',
    status: 503,
    type: 'server_error',
  });

export const upstreamFailed = (backendId: string, cause: unknown): FreeshError =>
  new FreeshError(`Backend ${backendId} failed: ${describeCause(cause)}`, {
    code: 'upstream_unreachable',
    status: 502,
    type: 'upstream_error',
    cause,
  });

export const upstreamStatus = (backendId: string, status: number, detail: string): FreeshError =>
  new FreeshError(`Backend ${backendId} answered ${status}${detail ? `: ${detail}` : ''}`, {
    code: 'upstream_error',
    status: 502,
    type: 'upstream_error',
  });

export const upstreamDropped = (backendId: string, cause: unknown): FreeshError =>
  new FreeshError(`Backend ${backendId} dropped the response mid-stream: ${describeCause(cause)}`, {
    code: 'upstream_dropped',
    status: 502,
    type: 'upstream_error',
    cause,
  });

export const clientAborted = (): FreeshError =>
  new FreeshError('The client closed the request', { code: 'client_closed', status: 499, type: 'invalid_request_error' });

export const internalError = (cause: unknown): FreeshError =>
  new FreeshError(`Internal router error: ${describeCause(cause)}`, { code: 'internal_error', status: 500, type: 'server_error', cause });

/** No valid gateway API key (OpenAI's answer to a bad key: 401 `invalid_api_key`). The key is never quoted. */
export const invalidApiKey = (detail: string): FreeshError =>
  new FreeshError(`${detail}. Send a gateway API key as \`Authorization: Bearer <key>\` or \`api-key: <key>\``, {
    code: 'invalid_api_key',
    status: 401,
    type: 'invalid_request_error',
  });

/** A valid key asking for what it may not use: a model, an SLO class, an admin route. */
export const notAllowed = (message: string, code: 'model_not_allowed' | 'slo_class_not_allowed' | 'admin_key_required', param?: string): FreeshError =>
  new FreeshError(message, { code, status: 403, type: 'invalid_request_error', param });

/** A key or tenant over its limits: 429 with when to come back (`retry-after`, `retry-after-ms`) and the limits' state. */
export const rateLimited = (message: string, retryAfterMs: number, headers: Readonly<Record<string, string>>): FreeshError =>
  new FreeshError(message, {
    code: 'rate_limit_exceeded',
    status: 429,
    type: 'rate_limit_error',
    retryAfterMs,
    headers,
  });

export function toFreeshError(err: unknown): FreeshError {
  return err instanceof FreeshError ? err : internalError(err);
}

/** An error's code and message (`ECONNRESET socket hang up`), for messages and events. */
export function describeCause(cause: unknown): string {
  if (cause instanceof Error) {
    const code = (cause as { code?: unknown }).code;
    return typeof code === 'string' ? `${code} ${cause.message}` : cause.message;
  }
  return String(cause);
}
