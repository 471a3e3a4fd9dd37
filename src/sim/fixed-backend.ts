import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { closeServer } from './backend-server.js';

/** The same small chat completion for every POST: the upstream for overhead benchmarks and tests. */
export const FIXED_COMPLETION = JSON.stringify({
  id: 'chatcmpl-fixed',
  object: 'chat.completion',
  created: 0,
  model: 'fixed',
  choices: [{ index: 0, message: { role: 'assistant', content: 'Hello from a fixed backend.' }, finish_reason: 'stop' }],
  usage: { prompt_tokens: 9, completion_tokens: 7, total_tokens: 16 },
});

export async function startFixedBackend(port = 0, host = '127.0.0.1'): Promise<{ baseURL: string; server: Server; close(): Promise<void> }> {
  const server = createServer(function fixedHandler(req, res) {
    if (req.method === 'GET') {
      res.writeHead(200, { 'content-type': 'application/json' });
      return void res.end('{"object":"list","data":[{"id":"fixed","object":"model","created":0,"owned_by":"sim"}]}');
    }
    req.resume();
    req.once('end', () => {
      res.writeHead(200, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(FIXED_COMPLETION) });
      res.end(FIXED_COMPLETION);
    });
  });
  server.keepAliveTimeout = 65_000;
  await new Promise<void>((resolve) => server.listen(port, host, resolve));
  const address = server.address() as AddressInfo;
  return { baseURL: `http://${host}:${address.port}/v1`, server, close: () => closeServer(server) };
}
