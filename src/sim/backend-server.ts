import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { type Rng, scaledClock, seededRng } from '../clock.js';
import { BUILTIN_PROFILES, type InstanceProfile } from '../cost/profiles.js';
import { estimateTokens } from '../request/parse.js';
import { SimInstance } from './instance.js';

export interface SimBackendOptions {
  /** Instance profile, or the name of a built-in one (`4xA100`...). Default `2xA100`. */
  readonly profile?: InstanceProfile | string;
  /** Models it claims to serve. Default `['llama-3-70b']`. */
  readonly models?: readonly string[];
  readonly host?: string;
  /** Default 0: a free port. */
  readonly port?: number;
  /** Real seconds per simulated second: 0.01 runs 100× faster than the profile. Default 1. */
  readonly timeScale?: number;
  /**
   * `drawn` (default): a log-normal length per request (median `medianTokens`, spread `sigma`),
   * capped by max_tokens. `max-tokens`: exactly max_tokens (16 when absent).
   */
  readonly outputLength?: 'drawn' | 'max-tokens';
  /** Default 129 tokens (Azure conversation trace 2023, p50). */
  readonly medianTokens?: number;
  /** Log-space standard deviation. Default 1.0 (puts p90 near 3.6× the median, as in that trace). */
  readonly sigma?: number;
  readonly seed?: number;
}

export interface SimBackend {
  /** Base URL including `/v1`. */
  readonly baseURL: string;
  readonly instance: SimInstance;
  readonly server: Server;
  close(): Promise<void>;
}

const WORDS = ['the', 'a', 'little', 'fox', 'ran', 'over', 'green', 'hill', 'and', 'saw', 'bright', 'sun', 'while', 'birds', 'sang', 'softly'];

/**
 * An OpenAI-compatible server that behaves like one inference instance of a GPU profile: batch-
 * dependent TTFT and time between tokens, real SSE streaming, usage figures, and an energy meter at
 * `GET /sim/energy`. For tests, the demo fleet and benchmarks.
 */
export async function startSimBackend(options: SimBackendOptions = {}): Promise<SimBackend> {
  const profile = typeof options.profile === 'object' ? options.profile : BUILTIN_PROFILES[options.profile ?? '2xA100'];
  if (!profile) throw new RangeError(`Unknown profile \`${String(options.profile)}\`; known: ${Object.keys(BUILTIN_PROFILES).join(', ')}`);
  const models = new Set(options.models ?? ['llama-3-70b']);
  const clock = scaledClock(options.timeScale ?? 1);
  const rng = seededRng(options.seed ?? 1);
  const instance = new SimInstance({ profile, clock });
  const lengthOf = outputLength(options, rng);
  let nextId = 0;

  const server = createServer(function simHandler(req, res) {
    const path = (req.url ?? '/').split('?')[0];
    if (req.method === 'GET' && path === '/v1/models') {
      return json(res, 200, { object: 'list', data: [...models].map((id) => ({ id, object: 'model', created: 0, owned_by: 'sim' })) });
    }
    if (req.method === 'GET' && path === '/sim/energy') {
      return json(res, 200, {
        profile: profile.id,
        energyJ: instance.energyJ,
        powerW: instance.powerW,
        batch: instance.batch,
        waiting: instance.waiting,
        completed: instance.completed,
        outputTokens: instance.outputTokens,
      });
    }
    if (req.method === 'POST' && (path === '/v1/chat/completions' || path === '/v1/completions')) {
      return void readJson(req).then(
        (body) => generate(path === '/v1/chat/completions', body, res),
        () => json(res, 400, error('Request body is not valid JSON', 'invalid_json')),
      );
    }
    json(res, 404, error(`Unknown route ${req.method} ${path}`, 'route_not_found'));
  });

  function generate(chat: boolean, body: Record<string, unknown>, res: ServerResponse): void {
    const model = String(body.model);
    if (!models.has(model)) return json(res, 404, error(`The model \`${model}\` does not exist`, 'model_not_found'));
    const prompt = chat ? JSON.stringify(body.messages ?? '') : String(body.prompt ?? '');
    const promptTokens = estimateTokens(prompt);
    const maxTokens = Number(body.max_completion_tokens ?? body.max_tokens) || undefined;
    const target = lengthOf(maxTokens);
    const finishReason = maxTokens !== undefined && target >= maxTokens ? 'length' : 'stop';
    const id = `${chat ? 'chatcmpl' : 'cmpl'}-sim${nextId++}`;
    const created = Math.floor(Date.now() / 1000);
    const usage = { prompt_tokens: promptTokens, completion_tokens: target, total_tokens: promptTokens + target };
    const stream = body.stream === true;
    const includeUsage = (body.stream_options as { include_usage?: boolean } | undefined)?.include_usage === true;
    const words: string[] = [];

    if (stream) res.writeHead(200, { 'content-type': 'text/event-stream', 'cache-control': 'no-cache' });
    const cancel = instance.submit({
      promptTokens,
      outputTokens: target,
      // Scheduled by priority when the body has one, as vLLM with `--scheduling-policy priority`.
      priority: typeof body.priority === 'number' ? body.priority : undefined,
      onToken(index) {
        const word = (index === 0 ? '' : ' ') + WORDS[(nextId * 7 + index) % WORDS.length];
        if (!stream) return void words.push(word);
        const choice = chat
          ? { index: 0, delta: index === 0 ? { role: 'assistant', content: word } : { content: word }, finish_reason: null }
          : { index: 0, text: word, finish_reason: null };
        res.write(`data: ${JSON.stringify({ id, object: chat ? 'chat.completion.chunk' : 'text_completion', created, model, choices: [choice] })}\n\n`);
      },
      onDone() {
        if (!stream) {
          const text = words.join('');
          const choice = chat
            ? { index: 0, message: { role: 'assistant', content: text }, finish_reason: finishReason }
            : { index: 0, text, finish_reason: finishReason };
          return json(res, 200, { id, object: chat ? 'chat.completion' : 'text_completion', created, model, choices: [choice], usage });
        }
        const last = chat ? { index: 0, delta: {}, finish_reason: finishReason } : { index: 0, text: '', finish_reason: finishReason };
        const object = chat ? 'chat.completion.chunk' : 'text_completion';
        res.write(`data: ${JSON.stringify({ id, object, created, model, choices: [last] })}\n\n`);
        if (includeUsage) res.write(`data: ${JSON.stringify({ id, object, created, model, choices: [], usage })}\n\n`);
        res.end('data: [DONE]\n\n');
      },
    });
    res.once('close', () => {
      if (!res.writableFinished) cancel();
    });
  }

  await new Promise<void>((resolve) => server.listen(options.port ?? 0, options.host ?? '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  return {
    baseURL: `http://${options.host ?? '127.0.0.1'}:${port}/v1`,
    instance,
    server,
    close: () => closeServer(server),
  };
}

function outputLength(options: SimBackendOptions, rng: Rng): (maxTokens: number | undefined) => number {
  if (options.outputLength === 'max-tokens') return (maxTokens) => maxTokens ?? 16;
  const median = options.medianTokens ?? 129;
  const sigma = options.sigma ?? 1.0;
  return (maxTokens) => {
    // Box-Muller: one standard normal from two uniforms.
    const z = Math.sqrt(-2 * Math.log(1 - rng())) * Math.cos(2 * Math.PI * rng());
    const drawn = Math.max(1, Math.round(median * Math.exp(sigma * z)));
    return maxTokens === undefined ? drawn : Math.min(drawn, maxTokens);
  };
}

function readJson(req: IncomingMessage): Promise<Record<string, unknown>> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.once('error', reject);
    req.once('end', () => {
      try {
        const value: unknown = JSON.parse(Buffer.concat(chunks).toString('utf8'));
        if (value && typeof value === 'object' && !Array.isArray(value)) resolve(value as Record<string, unknown>);
        else reject(new Error('not an object'));
      } catch (err) {
        reject(err as Error);
      }
    });
  });
}

function json(res: ServerResponse, status: number, value: unknown): void {
  const text = JSON.stringify(value);
  res.writeHead(status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(text) });
  res.end(text);
}

function error(message: string, code: string): unknown {
  return { error: { message, type: 'invalid_request_error', param: null, code } };
}

export function closeServer(server: Server): Promise<void> {
  return new Promise((resolve) => {
    server.close(() => resolve());
    server.closeAllConnections();
  });
}

