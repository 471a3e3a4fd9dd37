import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { expect, it } from 'vitest';

const FRAMEWORKS = /from\s+['"](express|fastify|fastify-plugin|hono|openai)(\/[^'"]*)?['"]|import\(\s*['"](express|fastify|fastify-plugin|hono|openai)['"]/;

function files(dir: string): string[] {
  return readdirSync(dir, { withFileTypes: true }).flatMap((e) => (e.isDirectory() ? files(join(dir, e.name)) : e.name.endsWith('.ts') ? [join(dir, e.name)] : []));
}

it('the core (src/, what `freesh` loads) imports no web framework: only the adapters\' subpaths do', () => {
  const offenders = files(new URL('../../src', import.meta.url).pathname).filter((file) => FRAMEWORKS.test(readFileSync(file, 'utf8')));
  expect(offenders).toEqual([]);
});
