import { describe, expect, it } from 'vitest';
import { FreeshError } from '../../src/errors.js';
import { parseRequest } from '../../src/request/parse.js';

const ctx = (headers: Record<string, string> = {}) => ({
  id: 'r1',
  arrivalMs: 5,
  defaultTenant: 'default',
  defaultSloClass: 'standard',
  header: (name: string) => headers[name],
});
const bytes = (value: unknown) => new TextEncoder().encode(typeof value === 'string' ? value : JSON.stringify(value));

function rejection(endpoint: 'chat.completions' | 'completions', body: unknown, headers?: Record<string, string>): FreeshError {
  try {
    parseRequest(endpoint, bytes(body), ctx(headers));
  } catch (err) {
    expect(err).toBeInstanceOf(FreeshError);
    return err as FreeshError;
  }
  throw new Error('expected a rejection');
}

describe('parseRequest', () => {
  it('reads a chat request: model, prompt text from every text part, limits, tenant and SLO headers', () => {
    const body = {
      model: 'm',
      messages: [
        { role: 'system', content: 'Be brief.' },
        { role: 'user', content: [{ type: 'text', text: 'Describe' }, { type: 'image_url', image_url: { url: 'data:x' } }] },
        { role: 'assistant', content: null, tool_calls: [] },
      ],
      max_tokens: 50,
      stream: true,
    };
    const r = parseRequest('chat.completions', bytes(body), ctx({ 'x-freesh-tenant': 'acme', 'x-freesh-slo': 'interactive' }));
    expect(r).toMatchObject({ model: 'm', promptText: 'Be brief.\nDescribe', messageCount: 3, maxTokens: 50, stream: true, tenant: 'acme', sloClass: 'interactive', arrivalMs: 5 });
    expect(r.promptTokens).toBe(Math.ceil('Be brief.\nDescribe'.length / 4));
  });

  it('prefers max_completion_tokens and applies defaults', () => {
    const r = parseRequest('chat.completions', bytes({ model: 'm', messages: [{ role: 'user', content: 'hi' }], max_tokens: 9, max_completion_tokens: 3 }), ctx());
    expect(r).toMatchObject({ maxTokens: 3, stream: false, tenant: 'default', sloClass: 'standard' });
  });

  it('reads completions prompts as text, string arrays or token ids', () => {
    expect(parseRequest('completions', bytes({ model: 'm', prompt: 'abcdefgh' }), ctx()).promptTokens).toBe(2);
    expect(parseRequest('completions', bytes({ model: 'm', prompt: ['a', 'b'] }), ctx()).messageCount).toBe(2);
    expect(parseRequest('completions', bytes({ model: 'm', prompt: [1, 2, 3] }), ctx()).promptTokens).toBe(3);
    expect(parseRequest('completions', bytes({ model: 'm', prompt: [[1, 2], [3]] }), ctx()).promptTokens).toBe(3);
  });

  it.each([
    ['malformed JSON', '{"model":', 'invalid_json', undefined],
    ['a body that is not an object', [1, 2], 'invalid_body', undefined],
    ['null', 'null', 'invalid_body', undefined],
    ['a missing model', { messages: [{ role: 'user', content: 'x' }] }, 'invalid_model', 'model'],
    ['a numeric model', { model: 7, messages: [{ role: 'user', content: 'x' }] }, 'invalid_model', 'model'],
    ['missing messages', { model: 'm' }, 'invalid_messages', 'messages'],
    ['empty messages', { model: 'm', messages: [] }, 'invalid_messages', 'messages'],
    ['a message without role', { model: 'm', messages: [{ content: 'x' }] }, 'invalid_messages', 'messages[0].role'],
    ['a numeric content', { model: 'm', messages: [{ role: 'user', content: 5 }] }, 'invalid_messages', 'messages[0].content'],
    ['a string stream flag', { model: 'm', messages: [{ role: 'user', content: 'x' }], stream: 'yes' }, 'invalid_type', 'stream'],
    ['a zero max_tokens', { model: 'm', messages: [{ role: 'user', content: 'x' }], max_tokens: 0 }, 'invalid_type', 'max_tokens'],
    ['a fractional max_tokens', { model: 'm', messages: [{ role: 'user', content: 'x' }], max_tokens: 1.5 }, 'invalid_type', 'max_tokens'],
  ])('rejects %s with a 400 naming the field', (_name, body, code, param) => {
    const err = rejection('chat.completions', body);
    expect(err.status).toBe(400);
    expect(err.code).toBe(code);
    expect(err.toJSON().error.param).toBe(param ?? null);
    expect(err.toJSON().error.type).toBe('invalid_request_error');
  });

  it('rejects a completions request without a usable prompt', () => {
    expect(rejection('completions', { model: 'm', prompt: [{}] }).param).toBe('prompt');
    expect(rejection('completions', { model: 'm' }).param).toBe('prompt');
  });

  it('rejects binary garbage and malformed tenant headers', () => {
    expect(() => parseRequest('chat.completions', new Uint8Array([0xff, 0xfe]), ctx())).toThrow(/not valid JSON/);
    expect(rejection('chat.completions', { model: 'm', messages: [{ role: 'user', content: 'x' }] }, { 'x-freesh-tenant': 'a b' }).param).toBe('x-freesh-tenant');
  });
});
