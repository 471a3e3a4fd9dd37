import { Readable } from 'node:stream';
import type { Transport, UpstreamRequest, UpstreamResponse } from '../transport/transport.js';
import type { Backend } from '../types.js';
import type { SimInstance } from './instance.js';

export interface SimJobSpec {
  readonly promptTokens: number;
  readonly outputTokens: number;
}

export interface SimTransportHooks {
  /** The job behind a request id (the `x-request-id` the router forwards). */
  readonly job: (requestId: string) => SimJobSpec;
  readonly onFirstToken?: (requestId: string) => void;
  readonly onDone?: (requestId: string) => void;
}

/**
 * Carries the router's requests straight to simulated instances, in process: no HTTP, no sockets.
 * The instance schedules by the body's `priority` field when the router sends one. Headers
 * "arrive" at once; the body is one JSON chunk with the usage figures, pushed when the instance
 * produces the last token, so the router meters and releases exactly as in production.
 */
export class SimTransport implements Transport {
  readonly #instances: ReadonlyMap<string, SimInstance>;
  readonly #hooks: SimTransportHooks;

  constructor(instances: ReadonlyMap<string, SimInstance>, hooks: SimTransportHooks) {
    this.#instances = instances;
    this.#hooks = hooks;
  }

  send(backend: Backend, request: UpstreamRequest): Promise<UpstreamResponse> {
    const instance = this.#instances.get(backend.id);
    if (!instance) return Promise.reject(Object.assign(new Error(`no simulated instance for ${backend.id}`), { code: 'ECONNREFUSED' }));
    if (request.method === 'GET') {
      // A health probe: a simulated instance is always up.
      return Promise.resolve({ status: 200, headers: { 'content-type': 'application/json' }, body: Readable.from([Buffer.from('{"object":"list","data":[]}')]) });
    }
    const id = request.headers['x-request-id'] ?? '';
    const job = this.#hooks.job(id);
    const priority = priorityOf(request.body);
    const hooks = this.#hooks;
    const body = new Readable({ read() {} });
    const cancel = instance.submit({
      promptTokens: job.promptTokens,
      outputTokens: job.outputTokens,
      priority,
      onToken(index) {
        if (index === 0) hooks.onFirstToken?.(id);
      },
      onDone() {
        const chunk = Buffer.from(`{"object":"chat.completion","usage":{"prompt_tokens":${job.promptTokens},"completion_tokens":${job.outputTokens}}}`);
        request.onData?.(chunk);
        body.push(chunk);
        body.push(null);
        hooks.onDone?.(id);
      },
    });
    request.signal?.addEventListener('abort', () => {
      cancel();
      body.destroy();
    });
    return Promise.resolve({ status: 200, headers: { 'content-type': 'application/json' }, body });
  }

  close(): Promise<void> {
    return Promise.resolve();
  }
}

/** The `priority` field of a JSON body, if it has a number there. */
function priorityOf(body: Uint8Array | undefined): number | undefined {
  if (!body) return undefined;
  const bytes = Buffer.from(body.buffer, body.byteOffset, body.byteLength);
  // Cheap test first: bodies without the field are not parsed.
  if (bytes.lastIndexOf('"priority"') < 0) return undefined;
  const value: unknown = (JSON.parse(bytes.toString('utf8')) as Record<string, unknown>).priority;
  return typeof value === 'number' ? value : undefined;
}
