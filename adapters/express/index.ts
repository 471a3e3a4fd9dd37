/**
 * freesh for Express: `app.use(freesh(router))` serves the OpenAI routes with the router, exactly as
 * the proxy does, and hands every other request to the app. A thin translator over the root API
 * (`createNodeHandler`, and `parse` / `decide` / `admit` for the decide-only mode): no routing here.
 */
import type { ErrorRequestHandler, NextFunction, Request, RequestHandler, Response } from 'express';
import { readBody } from '../../src/http/node-handler.js';
import { errorHeaders } from '../../src/http/routes.js';
import { type Admission, createNodeHandler, type Endpoint, FreeshError, type Router } from '../../src/index.js';

export interface FreeshExpressOptions {
  /**
   * Path the routes are served under: `/llm` serves `/llm/v1/chat/completions`. Default `''`.
   * Mounting the middleware (`app.use('/llm', freesh(router))`) does the same.
   */
  readonly basePath?: string;
  /**
   * Decide only: for a completion, take the decision and a slot on the chosen backend, attach them to
   * `req.freesh` and call `next()`; the app forwards the request itself. The slot is given back when
   * the response ends or the client leaves, unless the app reports the end first
   * (`req.freesh.complete(...)` / `req.freesh.abort(...)`). Default false: the router forwards.
   */
  readonly decideOnly?: boolean;
  /** Also serve `/healthz` (fleet health) under `basePath`, as the proxy does. Default false: the app's. */
  readonly healthz?: boolean;
  /** Also serve `/metrics` (Prometheus) under `basePath`, as the proxy does. Default false: the app's. */
  readonly metrics?: boolean;
}

/** What the decide-only mode attaches to `req.freesh`: the admission, and a signal for the upstream call. */
export interface FreeshDecision extends Admission {
  /** Aborted when the client goes away before the response ends: pass it to the upstream request. */
  readonly signal: AbortSignal;
}

declare global {
  // biome-ignore lint: Express's documented way to type what middleware adds to the request.
  namespace Express {
    interface Request {
      /** Set by freesh's decide-only middleware on a completion request. */
      freesh?: FreeshDecision;
    }
  }
}

const COMPLETIONS: Readonly<Record<string, Endpoint>> = { '/v1/chat/completions': 'chat.completions', '/v1/completions': 'completions' };

/**
 * Express middleware over the router. Serves `POST /v1/chat/completions`, `POST /v1/completions` and
 * `GET /v1/models` under `basePath` (a wrong method on them is answered 405), streams server-sent
 * events as they arrive, and calls `next()` for everything else. Works with or without a body parser
 * before it: a body `express.json()`, `express.text()` or `express.raw()` already read is used, and a
 * body such a parser refused is answered as the proxy answers it (an OpenAI-shaped error).
 *
 * Returns the middleware and its error handler as one array, which `app.use` and route methods take.
 */
export function freesh(router: Router, options: FreeshExpressOptions = {}): [RequestHandler, ErrorRequestHandler] {
  const base = (options.basePath ?? '').replace(/\/+$/, '');
  const serve = createNodeHandler(router, { basePath: base });
  const passed = new Set<string>();
  if (!options.healthz) passed.add(`${base}/healthz`);
  if (!options.metrics) passed.add(`${base}/metrics`);
  const decide = options.decideOnly ? decider(router) : undefined;

  const handler: RequestHandler = function freeshExpress(req, res, next) {
    const path = pathOf(req.url);
    if (passed.has(path)) return next();
    if (decide && req.method === 'POST' && path.startsWith(base)) {
      const endpoint = COMPLETIONS[path.slice(base.length)];
      if (endpoint) return void decide(endpoint, req, res, next);
    }
    serve(req, res, next);
  };

  // A body parser before the middleware that refused the body calls error middleware only.
  const onParserError: ErrorRequestHandler = function freeshExpressBodyError(err: unknown, req, res, next) {
    const path = pathOf(req.url);
    const failure = err as { type?: unknown; status?: unknown; body?: unknown; message?: unknown };
    if (typeof failure.type !== 'string' || !path.startsWith(base) || !(path.slice(base.length) in COMPLETIONS) || res.headersSent) return next(err);
    if (failure.type === 'entity.parse.failed' && typeof failure.body === 'string') {
      // The bytes the parser could not read: the router parses them and answers as the proxy would.
      (req as { body?: unknown }).body = failure.body;
      return handler(req, res, next);
    }
    const status = failure.status === 413 ? 413 : 400;
    sendError(res, new FreeshError(`Could not read the request body: ${String(failure.message)}`, { code: status === 413 ? 'body_too_large' : 'body_read_failed', status, type: 'invalid_request_error' }));
  };

  return [handler, onParserError];
}

type Decide = (endpoint: Endpoint, req: Request, res: Response, next: NextFunction) => Promise<void>;

function decider(router: Router): Decide {
  const limit = router.config.limits.bodyLimitBytes;
  return async function freeshDecide(endpoint, req, res, next) {
    const client = new AbortController();
    let admission: Admission | undefined;
    res.on('close', () => {
      if (res.writableFinished) return void admission?.complete('completed');
      client.abort();
      // Later calls are ignored: what the app reported first stands.
      if (res.headersSent) admission?.complete('client-abort');
      else admission?.abort('client-abort');
    });
    try {
      const body = await readBody(req, limit);
      const header = (name: string): string | undefined => {
        const value = req.headers[name];
        return Array.isArray(value) ? value[0] : value;
      };
      const request = router.parse({ endpoint, body, header });
      const placement = await router.decide(request);
      admission = await router.admit(request, placement, { signal: client.signal });
    } catch (err) {
      if (err instanceof FreeshError) return sendError(res, err, err.code === 'body_too_large');
      return next(err);
    }
    if (client.signal.aborted) return; // the client left while it waited: the close handler gave the slot back
    const { request, placement } = admission;
    res.setHeader('x-freesh-backend', placement.backend.id);
    res.setHeader('x-freesh-site', placement.backend.site.id);
    res.setHeader('x-freesh-predicted-tokens', String(placement.prediction.outputTokensP50));
    res.setHeader('x-freesh-energy-j', placement.cost.energyJ.toFixed(1));
    res.setHeader('x-freesh-carbon-g', placement.cost.carbonG.toFixed(4));
    res.setHeader('x-request-id', request.id);
    req.freesh = {
      request,
      placement,
      upstream: admission.upstream,
      complete: admission.complete,
      abort: admission.abort,
      signal: client.signal,
    };
    next();
  };
}

function pathOf(url: string): string {
  const q = url.indexOf('?');
  return q === -1 ? url : url.slice(0, q);
}

/** An OpenAI-shaped error answer with the proxy's headers. */
function sendError(res: Response, error: FreeshError, closeConnection = false): void {
  if (res.headersSent || res.destroyed) return;
  const text = error.toBody();
  const headers = errorHeaders(error, text);
  if (closeConnection) headers.connection = 'close';
  res.writeHead(error.status, headers).end(text);
}
