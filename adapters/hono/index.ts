/**
 * freesh for Hono (`freesh/hono`): the router as a Hono middleware, over the fetch edge
 * (`createFetchHandler`), so an app answers the proxy's routes exactly as the proxy does and keeps
 * its own. On Node it runs through `@hono/node-server`, whose client-gone signal and stream
 * cancellation abort the upstream request and free its slot.
 *
 *   const app = new Hono<FreeshEnv>();
 *   app.use('/llm/*', freesh(router, { basePath: '/llm' }));
 *
 * A served request leaves its routing decision on the context (`c.var.freesh`, typed by `FreeshEnv`)
 * for middleware that runs around it. An error the router answers itself is thrown as Hono's
 * `HTTPException` (status, the OpenAI-shaped JSON response with its `retry-after`, and the
 * `FreeshError` as `cause`), so `app.onError` renders it; Hono's default handler sends it as is.
 */
import type { MiddlewareHandler } from 'hono';
import { HTTPException } from 'hono/http-exception';
import { serves } from '../../src/http/routes.js';
import { createFetchHandler, type Router } from '../../src/index.js';
import { decisionOf, type FreeshDecision, isRouterError, parseRouterError } from '../common/answer.js';

export type { FreeshDecision } from '../common/answer.js';
export { decisionOf } from '../common/answer.js';

export interface FreeshHonoOptions {
  /** The path the routes are mounted under, as the app sees it: `/llm` serves `/llm/v1/chat/completions`. Default ''. */
  readonly basePath?: string;
}

/** The context variables the middleware sets. */
export interface FreeshVariables {
  /** The routing decision of a request the router forwarded (unset when it answered the request itself). */
  freesh?: FreeshDecision;
}

/** The Hono environment of an app using the middleware: `new Hono<FreeshEnv>()` types `c.var.freesh`. */
export interface FreeshEnv {
  Variables: FreeshVariables;
}

type ErrorStatus = ConstructorParameters<typeof HTTPException>[0];

/**
 * The router as Hono middleware: it answers the proxy's routes (`/v1/chat/completions`,
 * `/v1/completions`, `/v1/models`, `/healthz`, `/metrics`) under `basePath`, and passes every other
 * path to the app (`next()`). A body an earlier middleware already read (`c.req.json()` and the like)
 * is used as read.
 */
export function freesh(router: Router, options: FreeshHonoOptions = {}): MiddlewareHandler<FreeshEnv> {
  const base = (options.basePath ?? '').replace(/\/+$/, '');
  const handle = createFetchHandler(router, { basePath: base });

  return async function freeshMiddleware(c, next) {
    const path = c.req.path;
    const below = !base ? path : path === base || path.startsWith(`${base}/`) ? path.slice(base.length) || '/' : undefined;
    if (below === undefined || !serves(below)) return next();

    const raw = c.req.raw;
    const request = raw.bodyUsed
      ? new Request(raw.url, { method: raw.method, headers: raw.headers, body: await c.req.arrayBuffer(), signal: raw.signal })
      : raw;
    const response = await handle(request);
    const decision = decisionOf(response.headers);
    if (decision) c.set('freesh', decision);
    else if (isRouterError(response)) {
      const text = await response.text();
      const error = parseRouterError(response.status, text);
      const res = new Response(text, { status: response.status, headers: response.headers });
      if (error) throw new HTTPException(response.status as ErrorStatus, { res, message: error.message, cause: error });
      return res;
    }
    return response;
  };
}
