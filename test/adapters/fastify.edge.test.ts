import Fastify from 'fastify';
import freesh from '../../adapters/fastify/index.js';
import { describeEdge } from '../http/edge.case.js';
import { appNotFound, serverEdge } from './harness.js';

// The proxy's whole HTTP conformance suite, against a Fastify app with the plugin registered.
describeEdge('Fastify plugin', async (router, options) => {
  const app = Fastify({ logger: false });
  app.get('/app', async () => 'app');
  await app.register(freesh, { router, ...options, healthz: true, metrics: true });
  app.setNotFoundHandler((request, reply) => {
    const answer = appNotFound(request.method, request.url);
    return reply.code(answer.status).headers(answer.headers).send(Buffer.from(answer.body));
  });
  await app.listen({ port: 0, host: '127.0.0.1' });
  return serverEdge(app.server, () => app.close());
});
