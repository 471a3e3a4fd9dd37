import { z } from 'zod';
import { type FreeshError, invalidRequest, jsonTooDeep } from '../errors.js';
import type { Endpoint } from '../types.js';

/** Nesting accepted when no limit is configured (`limits.maxJsonDepth`'s default). */
export const DEFAULT_MAX_JSON_DEPTH = 128;

/**
 * True when the JSON text nests arrays and objects deeper than `limit`. A scan of the bytes, before
 * any parse, in one pass and constant memory: brackets inside strings (escapes included) do not
 * count. Malformed text is not judged here; the parser reports it.
 */
export function jsonDeeperThan(bytes: Uint8Array, limit: number): boolean {
  let depth = 0;
  let inString = false;
  for (let i = 0; i < bytes.length; i++) {
    const b = bytes[i]!;
    if (inString) {
      if (b === BACKSLASH) i++;
      else if (b === QUOTE) inString = false;
    } else if (b === QUOTE) inString = true;
    else if (b === OPEN_BRACE || b === OPEN_BRACKET) {
      if (++depth > limit) return true;
    } else if (b === CLOSE_BRACE || b === CLOSE_BRACKET) depth--;
  }
  return false;
}

const QUOTE = 0x22;
const BACKSLASH = 0x5c;
const OPEN_BRACE = 0x7b;
const CLOSE_BRACE = 0x7d;
const OPEN_BRACKET = 0x5b;
const CLOSE_BRACKET = 0x5d;

/** Throws 400 `json_too_deep` for a body nested deeper than `limit`. */
export function checkDepth(bytes: Uint8Array, limit: number): void {
  if (jsonDeeperThan(bytes, limit)) throw jsonTooDeep(limit);
}

// The strict schema: OpenAI's types and ranges for the common fields. Objects are loose, so fields
// it does not know (vLLM's `top_k`, `guided_json`…) pass through; `null` is accepted wherever OpenAI
// accepts it (an SDK sends explicit nulls for unset options).
const nullable = <T extends z.ZodType>(t: T) => t.nullable().optional();
const stringArray = z.array(z.string());
const tokenIds = z.array(z.int().nonnegative());

const common = (maxOutputTokens: number) => ({
  model: z.string().min(1),
  stream: nullable(z.boolean()),
  stream_options: nullable(z.looseObject({ include_usage: z.boolean().optional() })),
  max_tokens: nullable(z.int().min(1).max(maxOutputTokens)),
  temperature: nullable(z.number().min(0).max(2)),
  top_p: nullable(z.number().min(0).max(1)),
  n: nullable(z.int().min(1).max(128)),
  stop: nullable(z.union([z.string(), stringArray.max(4)])),
  presence_penalty: nullable(z.number().min(-2).max(2)),
  frequency_penalty: nullable(z.number().min(-2).max(2)),
  logit_bias: nullable(z.record(z.string(), z.number().min(-100).max(100))),
  seed: nullable(z.int()),
  user: nullable(z.string()),
});

const ROLES = ['system', 'developer', 'user', 'assistant', 'tool', 'function'] as const;

const contentPart = z.looseObject({ type: z.string().min(1) });
const message = z.looseObject({
  role: z.enum(ROLES),
  content: nullable(z.union([z.string(), z.array(contentPart)])),
  name: nullable(z.string()),
  tool_call_id: nullable(z.string()),
  tool_calls: nullable(z.array(z.looseObject({ id: z.string().optional(), type: z.string().optional(), function: z.looseObject({ name: z.string() }).optional() }))),
});

function chatSchema(maxOutputTokens: number) {
  return z.looseObject({
    ...common(maxOutputTokens),
    messages: z.array(message).min(1),
    max_completion_tokens: nullable(z.int().min(1).max(maxOutputTokens)),
    logprobs: nullable(z.boolean()),
    top_logprobs: nullable(z.int().min(0).max(20)),
    tools: nullable(z.array(z.looseObject({ type: z.string().min(1), function: z.looseObject({ name: z.string().min(1) }).optional() }))),
    tool_choice: nullable(z.union([z.enum(['none', 'auto', 'required']), z.looseObject({ type: z.string().min(1) })])),
    parallel_tool_calls: nullable(z.boolean()),
    response_format: nullable(z.looseObject({ type: z.string().min(1) })),
  });
}

function completionSchema(maxOutputTokens: number) {
  return z.looseObject({
    ...common(maxOutputTokens),
    prompt: z.union([z.string(), stringArray.min(1), tokenIds.min(1), z.array(tokenIds).min(1)]),
    suffix: nullable(z.string()),
    echo: nullable(z.boolean()),
    best_of: nullable(z.int().min(1).max(128)),
    logprobs: nullable(z.int().min(0).max(5)),
  });
}

const schemas = new Map<string, z.ZodType>();

function schemaFor(endpoint: Endpoint, maxOutputTokens: number): z.ZodType {
  const key = `${endpoint}:${maxOutputTokens}`;
  let schema = schemas.get(key);
  if (!schema) {
    schema = endpoint === 'chat.completions' ? chatSchema(maxOutputTokens) : completionSchema(maxOutputTokens);
    schemas.set(key, schema);
  }
  return schema;
}

/**
 * Validates a parsed body against the strict schema; throws a 400 naming the first bad field in
 * `param`, with code `invalid_type` (wrong type, missing) or `invalid_value` (out of range, unknown role).
 */
export function checkStrict(endpoint: Endpoint, body: unknown, maxOutputTokens: number): void {
  const result = schemaFor(endpoint, maxOutputTokens).safeParse(body);
  if (result.success) return;
  throw strictError(result.error.issues[0]!);
}

function strictError(issue: z.core.$ZodIssue, prefix: readonly PropertyKey[] = []): FreeshError {
  // A union (`stop`: a string or up to four) whose value has a matching type but a bad value: report that value.
  if (issue.code === 'invalid_union') {
    const near = issue.errors.find((branch) => branch.length > 0 && branch[0]!.code !== 'invalid_type');
    if (near) return strictError(near[0]!, [...prefix, ...issue.path]);
  }
  const param = [...prefix, ...issue.path].reduce<string>((out, key) => (typeof key === 'number' ? `${out}[${key}]` : out ? `${out}.${String(key)}` : String(key)), '');
  const where = param ? `\`${param}\`` : 'the body';
  const typeError = issue.code === 'invalid_type' || issue.code === 'invalid_union';
  return invalidRequest(`Invalid ${where}: ${issue.message}`, param || undefined, typeError ? 'invalid_type' : 'invalid_value');
}
