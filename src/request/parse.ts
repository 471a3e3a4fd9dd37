import { invalidRequest } from '../errors.js';
import type { Endpoint, RoutingRequest } from '../types.js';
import { checkDepth, checkStrict, DEFAULT_MAX_JSON_DEPTH } from './validate.js';

/** Headers the router reads from a client request (lower-case names). */
export const TENANT_HEADER = 'x-freesh-tenant';
export const SLO_HEADER = 'x-freesh-slo';

export interface ParseContext {
  readonly id: string;
  readonly arrivalMs: number;
  readonly defaultTenant: string;
  readonly defaultSloClass: string;
  readonly header: (name: string) => string | undefined;
  /** Deepest nesting of arrays and objects accepted; deeper is a 400 before parsing. Default 128. */
  readonly maxJsonDepth?: number;
  /** Validate the OpenAI schema's common fields (see `limits.strictRequests`), with this `max_tokens` cap. Default off. */
  readonly strict?: { readonly maxOutputTokens: number };
}

const LABEL = /^[A-Za-z0-9._:-]{1,64}$/;

/**
 * Turns a raw OpenAI request body into a RoutingRequest, or throws a 400 that names the field.
 * Validates what routing depends on and what would make a backend fail obscurely; anything else is
 * forwarded untouched for the backend to judge.
 */
export function parseRequest(endpoint: Endpoint, rawBody: Uint8Array, ctx: ParseContext): RoutingRequest {
  // Before parsing: a body nested 100,000 levels deep parses in V8 but breaks Python backends.
  checkDepth(rawBody, ctx.maxJsonDepth ?? DEFAULT_MAX_JSON_DEPTH);
  let body: unknown;
  try {
    // Invalid UTF-8 becomes U+FFFD here; the backend sees the original bytes and judges them.
    body = JSON.parse(Buffer.from(rawBody.buffer, rawBody.byteOffset, rawBody.byteLength).toString('utf8'));
  } catch (err) {
    throw invalidRequest(`Request body is not valid JSON: ${(err as Error).message}`, undefined, 'invalid_json');
  }
  if (body === null || typeof body !== 'object' || Array.isArray(body)) {
    throw invalidRequest(`Request body must be a JSON object, got ${kindOf(body)}`, undefined, 'invalid_body');
  }
  const fields = body as Record<string, unknown>;
  if (ctx.strict) checkStrict(endpoint, fields, ctx.strict.maxOutputTokens);

  const model = fields.model;
  if (typeof model !== 'string' || model.length === 0) {
    throw invalidRequest(`\`model\` must be a non-empty string, got ${kindOf(model)}`, 'model', 'invalid_model');
  }
  const stream = optionalBoolean(fields, 'stream') ?? false;
  const maxTokens = optionalPositiveInt(fields, 'max_completion_tokens') ?? optionalPositiveInt(fields, 'max_tokens');

  const { promptText, messageCount } =
    endpoint === 'chat.completions' ? chatPrompt(fields.messages) : completionPrompt(fields.prompt);

  return {
    id: ctx.id,
    endpoint,
    model,
    promptText,
    promptTokens: estimateTokens(promptText),
    messageCount,
    maxTokens,
    stream,
    tenant: label(ctx.header(TENANT_HEADER), TENANT_HEADER) ?? ctx.defaultTenant,
    sloClass: label(ctx.header(SLO_HEADER), SLO_HEADER) ?? ctx.defaultSloClass,
    arrivalMs: ctx.arrivalMs,
    body: fields,
    rawBody,
  };
}

/**
 * About four characters per token for English BPE vocabularies; good enough to rank prompt lengths
 * before the backend tokenizes them. Never zero, so per-token maths stays finite.
 */
export function estimateTokens(text: string): number {
  return Math.max(1, Math.ceil(text.length / 4));
}

function chatPrompt(messages: unknown): { promptText: string; messageCount: number } {
  if (!Array.isArray(messages)) {
    throw invalidRequest(`\`messages\` must be an array, got ${kindOf(messages)}`, 'messages', 'invalid_messages');
  }
  if (messages.length === 0) throw invalidRequest('`messages` must not be empty', 'messages', 'invalid_messages');
  const parts: string[] = [];
  for (let i = 0; i < messages.length; i++) {
    const message: unknown = messages[i];
    const at = `messages[${i}]`;
    if (message === null || typeof message !== 'object' || Array.isArray(message)) {
      throw invalidRequest(`\`${at}\` must be an object, got ${kindOf(message)}`, at, 'invalid_messages');
    }
    const { role, content } = message as Record<string, unknown>;
    if (typeof role !== 'string' || role.length === 0) {
      throw invalidRequest(`\`${at}.role\` must be a non-empty string, got ${kindOf(role)}`, `${at}.role`, 'invalid_messages');
    }
    if (typeof content === 'string') parts.push(content);
    else if (Array.isArray(content)) {
      for (let j = 0; j < content.length; j++) {
        const part: unknown = content[j];
        if (part === null || typeof part !== 'object') {
          throw invalidRequest(`\`${at}.content[${j}]\` must be an object, got ${kindOf(part)}`, `${at}.content[${j}]`, 'invalid_messages');
        }
        // Only text parts count towards the prompt's length; images and audio are forwarded as is.
        const text = (part as Record<string, unknown>).text;
        if (typeof text === 'string') parts.push(text);
      }
    } else if (content !== null && content !== undefined) {
      throw invalidRequest(
        `\`${at}.content\` must be a string, an array of parts or null, got ${kindOf(content)}`,
        `${at}.content`,
        'invalid_messages',
      );
    }
  }
  return { promptText: parts.join('\n'), messageCount: messages.length };
}

function completionPrompt(prompt: unknown): { promptText: string; messageCount: number } {
  if (typeof prompt === 'string') return { promptText: prompt, messageCount: 1 };
  if (Array.isArray(prompt) && prompt.length > 0) {
    if (prompt.every((p) => typeof p === 'string')) return { promptText: prompt.join('\n'), messageCount: prompt.length };
    // Token-id prompts: one id is one token; stand in a 4-character word per token for predictors.
    if (prompt.every((p) => Number.isInteger(p))) return { promptText: 'tok '.repeat(prompt.length), messageCount: 1 };
    if (prompt.every((p) => Array.isArray(p) && p.every((q) => Number.isInteger(q)))) {
      const tokens = (prompt as number[][]).reduce((n, p) => n + p.length, 0);
      return { promptText: 'tok '.repeat(tokens), messageCount: prompt.length };
    }
  }
  throw invalidRequest(
    `\`prompt\` must be a string, an array of strings or an array of token ids, got ${kindOf(prompt)}`,
    'prompt',
    'invalid_prompt',
  );
}

function optionalBoolean(fields: Record<string, unknown>, name: string): boolean | undefined {
  const value = fields[name];
  if (value === undefined || value === null) return undefined;
  if (typeof value !== 'boolean') throw invalidRequest(`\`${name}\` must be a boolean, got ${kindOf(value)}`, name, 'invalid_type');
  return value;
}

function optionalPositiveInt(fields: Record<string, unknown>, name: string): number | undefined {
  const value = fields[name];
  if (value === undefined || value === null) return undefined;
  if (!Number.isSafeInteger(value) || (value as number) < 1) {
    throw invalidRequest(`\`${name}\` must be a positive integer, got ${JSON.stringify(value)}`, name, 'invalid_type');
  }
  return value as number;
}

function label(value: string | undefined, header: string): string | undefined {
  if (value === undefined || value === '') return undefined;
  if (!LABEL.test(value)) {
    throw invalidRequest(`Header \`${header}\` must be 1-64 characters of [A-Za-z0-9._:-], got ${JSON.stringify(value.slice(0, 80))}`, header, 'invalid_header');
  }
  return value;
}

function kindOf(value: unknown): string {
  if (value === null) return 'null';
  if (Array.isArray(value)) return 'an array';
  if (typeof value === 'string') return `the string ${JSON.stringify(value.length > 40 ? `${value.slice(0, 40)}…` : value)}`;
  if (typeof value === 'object') return 'an object';
  if (value === undefined) return 'nothing';
  return `${typeof value} ${String(value)}`;
}
