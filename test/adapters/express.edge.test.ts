import { createServer } from 'node:http';
import express from 'express';
import { freesh } from '../../adapters/express/index.js';
import { describeEdge } from '../http/edge.case.js';
import { appNotFound, serverEdge } from './harness.js';

// The proxy's whole HTTP conformance suite, against an Express app with the middleware inside.
describeEdge('Express middleware', async (router, options) => {
  const app = express();
  app.get('/app', (_req, res) => void res.send('app'));
  app.use(freesh(router, { ...options, healthz: true, metrics: true }));
  app.use((req, res) => {
    const answer = appNotFound(req.method, req.originalUrl);
    res.writeHead(answer.status, answer.headers).end(answer.body);
  });
  return serverEdge(createServer(app));
});
