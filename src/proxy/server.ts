import { createServer, type Server } from 'node:http';
import { createNodeHandler } from '../http/node-handler.js';
import type { Router } from '../router.js';

/** The standalone OpenAI-compatible HTTP server over a router: the node listener on a server of its own. */
export function createProxyServer(router: Router): Server {
  return createServer({ keepAliveTimeout: 65_000 }, createNodeHandler(router));
}
