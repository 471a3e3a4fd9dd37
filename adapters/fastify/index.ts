/**
 * freesh for Fastify: `app.register(freesh, { router })` serves the OpenAI routes with the router,
 * exactly as the proxy does. A plugin made with fastify-plugin, so its decorations are visible
 * app-wide; the routes themselves live in a context of their own, where the request body is taken as
 * bytes whatever its content type (the app's own parsers are left alone). A thin translator over the
 * root API (`router.dispatch`, and `createNodeHandler` for the GET routes): no routing here.
 */
import { PassThrough, type Readable } from 'node:stream';
import type { FastifyError, FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import fp from 'fastify-plugin';
import { CancelToken } from '../../src/cancel.js';
import { errorHeaders } from '../../src/http/routes.js';
import { createNodeHandler, type Endpoint, FreeshError, type Placement, type RoutedResponse, type Router } from '../../src/index.js';

export interface FreeshFastifyOptions {
  /** The router that places and forwards the requests. The app owns it: the plugin does not close it. */
  readonly router: Router;
  /**
   * Path the routes are served under: `/llm` serves `/llm/v1/chat/completions`. Default `''`.
   * (Fastify's own `prefix` does not apply to a plugin made with fastify-plugin.)
   */
  readonly basePath?: string;
  /** Also serve `/healthz` (fleet health) under `basePath`, as the proxy does. Default false. */
  readonly healthz?: boolean;
  /** Also serve `/metrics` (Prometheus) under `basePath`, as the proxy does. Default false. */
  readonly metrics?: boolean;
}

declare module 'fastify' {
  interface FastifyInstance {
    /** The router behind freesh's routes. */
    freesh: Router;
  }
  interface FastifyRequest {
    /** Where freesh placed this request and what it was expected to cost; null until it is placed, and on other routes. */
    freesh: Placement | null;
  }
}

const COMPLETIONS: readonly (readonly [string, Endpoint])[] = [
  ['/v1/chat/completions', 'chat.completions'],
  ['/v1/completions', 'completions'],
];
const EMPTY = new Uint8Array(0);
/** The operator dashboard's routes, served when the router has it on (`dashboard.enabled`). */
const DASHBOARD_PATHS = ['/dashboard', '/dashboard/api/state', '/dashboard/chart.js'];

async function freeshPlugin(fastify: FastifyInstance, options: FreeshFastifyOptions): Promise<void> {
  const { router } = options;
  if (!router) throw new Error('freesh: the `router` option is required (createRouter from freesh)');
  const base = (options.basePath ?? '').replace(/\/+$/, '');
  const limit = router.config.limits.bodyLimitBytes;
  const node = createNodeHandler(router, { basePath: base });

  fastify.decorate('freesh', router);
  fastify.decorateRequest('freesh', null);

  /** Answered by the node listener as the proxy answers it: the GET routes, and a wrong method on any route (405). */
  const byNode = (request: FastifyRequest, reply: FastifyReply): void => {
    reply.hijack();
    node(request.raw, reply.raw);
  };

  const complete = (endpoint: Endpoint) =>
    async function freeshCompletion(request: FastifyRequest, reply: FastifyReply): Promise<FastifyReply> {
      // The router's own cheap signal: an AbortController and the listeners hung on it cost ~20 µs a request.
      const client = new CancelToken();
      reply.raw.on('close', () => {
        if (!reply.raw.writableFinished) client.abort();
      });
      const body = request.body instanceof Uint8Array ? request.body : EMPTY;
      const header = (name: string): string | undefined => {
        const value = request.headers[name];
        return Array.isArray(value) ? value[0] : value;
      };
      const routed = await router.dispatch({ endpoint, body, header, signal: client });
      request.freesh = routed.placement;
      const { backend, cost, prediction } = routed.placement;
      request.log.info(
        { freesh: { backend: backend.id, site: backend.site.id, predictedTokens: prediction.outputTokensP50, energyJ: cost.energyJ, carbonG: cost.carbonG } },
        'freesh placed the request',
      );
      reply.code(routed.status).headers(routed.headers);
      // Fastify destroys a stream payload when the client goes away, which aborts the upstream and frees the slot.
      return reply.send(routed.eventStream ? endingWithErrorEvent(routed) : routed.body);
    };

  await fastify.register(
    async function freeshRoutes(routes) {
      routes.removeAllContentTypeParsers();
      routes.addContentTypeParser('*', { parseAs: 'buffer', bodyLimit: limit }, (_request, body, done) => done(null, body));
      routes.setErrorHandler((error: FastifyError, request, reply) => {
        const answer = asFreeshError(error, limit);
        if (answer.status >= 500) request.log.error({ err: error }, 'freesh could not serve the request');
        else request.log.info({ freesh: { code: answer.code, status: answer.status } }, answer.message);
        // Bytes, not a string: Fastify would add a charset to the content type of a string.
        const text = answer.toBody();
        reply.code(answer.status).headers(errorHeaders(answer, text));
        // The rest of an oversized body is not read: close the connection after the answer.
        if (answer.code === 'body_too_large') reply.header('connection', 'close');
        return reply.send(Buffer.from(text));
      });
      for (const [path, endpoint] of COMPLETIONS) {
        routes.post(path, complete(endpoint));
        routes.route({ method: ['GET', 'PUT', 'PATCH', 'DELETE'], url: path, handler: byNode });
      }
      const info = ['/v1/models', ...(options.healthz ? ['/healthz'] : []), ...(options.metrics ? ['/metrics'] : []), ...(router.dashboard ? DASHBOARD_PATHS : [])];
      for (const path of info) routes.route({ method: ['GET', 'POST', 'PUT', 'PATCH', 'DELETE'], url: path, handler: byNode });
    },
    { prefix: base },
  );
}

/** An error as the proxy answers it: the router's own as they are, Fastify's body errors in the same shape. */
function asFreeshError(error: FastifyError, limit: number): FreeshError {
  if (error instanceof FreeshError) return error;
  if (error.code === 'FST_ERR_CTP_BODY_TOO_LARGE') {
    return new FreeshError(`Request body exceeds the limit of ${limit} bytes`, { code: 'body_too_large', status: 413, type: 'invalid_request_error' });
  }
  const status = error.statusCode ?? 500;
  if (status < 500) return new FreeshError(`Could not read the request body: ${error.message}`, { code: 'body_read_failed', status, type: 'invalid_request_error' });
  return new FreeshError(`Internal router error: ${error.message}`, { code: 'internal_error', status: 500, type: 'server_error' });
}

/**
 * The event stream as it arrives; if the backend drops mid-way, one more event with the error, in the
 * shape OpenAI SDKs surface, and a clean end (as the proxy does). Destroying it aborts the upstream.
 */
function endingWithErrorEvent(routed: RoutedResponse): Readable {
  const upstream = routed.body;
  const out = new PassThrough();
  upstream.on('data', (chunk: Buffer) => {
    if (!out.write(chunk)) upstream.pause();
  });
  out.on('drain', () => upstream.resume());
  upstream.on('end', () => out.end());
  upstream.on('error', (err) => {
    if (out.destroyed) return;
    const cause = err as Error & { code?: unknown };
    const detail = typeof cause.code === 'string' ? `${cause.code} ${cause.message}` : String(cause.message ?? err);
    const error = new FreeshError(`Backend ${routed.placement.backend.id} dropped the response mid-stream: ${detail}`, {
      code: 'upstream_dropped',
      status: 502,
      type: 'upstream_error',
    });
    out.end(`data: ${error.toBody()}\n\n`);
  });
  out.on('close', () => {
    if (!upstream.readableEnded) upstream.destroy();
  });
  return out;
}

/**
 * The plugin. `app.register(freesh, { router })`: serves `POST /v1/chat/completions`,
 * `POST /v1/completions` and `GET /v1/models` under `basePath`, decorates `app.freesh` (the router)
 * and `request.freesh` (the placement), and logs each placement with the request's logger.
 */
const freesh = fp(freeshPlugin, { fastify: '5.x', name: 'freesh' });
export default freesh;
export { freesh };
