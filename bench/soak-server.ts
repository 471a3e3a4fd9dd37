/**
 * The proxy `bench:soak` loads, alone in its process so its memory is its own: `node --expose-gc
 * soak-server.js CONFIG_JSON`. Prints `ready URL` on stdout (then its logs, one line per request);
 * on SIGUSR2 collects garbage and prints `mem {rss, heapUsed, heapTotal, external}` (bytes) on stderr.
 */
import { readFileSync } from 'node:fs';
import { parseConfig, fileConfigSchema } from '../src/config/schema.js';
import { createLogger, logRouterEvents } from '../src/log/logger.js';
import { startProxy } from '../src/proxy/standalone.js';

const gc = (globalThis as { gc?: () => void }).gc;

async function main(): Promise<void> {
  const config = parseConfig(fileConfigSchema, JSON.parse(readFileSync(process.argv[2]!, 'utf8')));
  // As `freesh serve` logs: one line per request.
  const logger = createLogger(config.log);
  logRouterEvents(logger);
  const proxy = await startProxy(config, {}, { logger });
  await proxy.router.ready();
  process.on('SIGUSR2', () => {
    gc?.();
    const { rss, heapUsed, heapTotal, external } = process.memoryUsage();
    process.stderr.write(`mem ${JSON.stringify({ rss, heapUsed, heapTotal, external })}\n`);
  });
  process.on('SIGTERM', () => void proxy.shutdown(0).then(() => process.exit(0)));
  process.stdout.write(`ready ${proxy.url}\n`);
}

main().catch((err: unknown) => {
  console.error(err);
  process.exit(1);
});
