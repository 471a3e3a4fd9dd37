import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { countTokens } from 'gpt-tokenizer';
import { seededRng } from '../clock.js';

/** One answer: a question, the model that answered it, and how long the answer was. */
export interface LengthExample {
  readonly questionId: string;
  readonly prompt: string;
  readonly model: string;
  /** Answer length in tokens (one BPE tokenizer for every model: their own tokenizers differ). */
  readonly outputTokens: number;
}

/**
 * Reads the arena prompt sets under `promptsDir` (../shared/data/prompts): arena-bench-v1 (questions
 * with `turns[0]`, answers with `choices[0].turns[0]`, joined on `question_id`) and arena-hard-v0.1
 * (questions with `prompt`, answers whose assistant message holds `content.answer`, joined on `uid`).
 */
export async function loadLengthExamples(promptsDir: string): Promise<LengthExample[]> {
  const examples: LengthExample[] = [];
  const { readdir } = await import('node:fs/promises');

  const bench = join(promptsDir, 'arena-bench-v1');
  const questions = new Map<string, string>();
  for (const q of await jsonl(join(bench, 'question.jsonl'))) {
    const turn = (q.turns as unknown[] | undefined)?.[0];
    const text = typeof turn === 'string' ? turn : (turn as { content?: string } | undefined)?.content;
    if (typeof q.question_id === 'string' && typeof text === 'string') questions.set(q.question_id, text);
  }
  for (const file of (await readdir(join(bench, 'model_answer'))).filter((f) => f.endsWith('.jsonl')).sort()) {
    for (const a of await jsonl(join(bench, 'model_answer', file))) {
      const prompt = questions.get(String(a.question_id));
      const answer = (a.choices as { turns?: unknown[] }[] | undefined)?.[0]?.turns?.[0];
      const text = typeof answer === 'string' ? answer : (answer as { content?: string } | undefined)?.content;
      if (prompt === undefined || typeof text !== 'string') continue;
      examples.push({ questionId: String(a.question_id), prompt, model: normalise(String(a.model_id ?? file.replace(/\.jsonl$/, ''))), outputTokens: countTokens(text) });
    }
  }

  const hard = join(promptsDir, 'arena-hard-v0.1');
  const prompts = new Map<string, string>();
  for (const q of await jsonl(join(hard, 'question.jsonl'))) if (typeof q.uid === 'string' && typeof q.prompt === 'string') prompts.set(q.uid, q.prompt);
  for (const file of (await readdir(join(hard, 'model_answer'))).filter((f) => f.endsWith('.jsonl')).sort()) {
    for (const a of await jsonl(join(hard, 'model_answer', file))) {
      const prompt = prompts.get(String(a.uid));
      const messages = a.messages as { role?: string; content?: unknown }[] | undefined;
      const content = messages?.find((m) => m.role === 'assistant')?.content;
      const text = typeof content === 'string' ? content : (content as { answer?: unknown } | undefined)?.answer;
      if (prompt === undefined || typeof text !== 'string') continue;
      examples.push({ questionId: String(a.uid), prompt, model: normalise(String(a.model ?? file.replace(/\.jsonl$/, ''))), outputTokens: countTokens(text) });
    }
  }
  return examples;
}

/** Splits by question, never by row: a prompt is either trained on or tested on. Seeded. */
export function splitByQuestion(examples: readonly LengthExample[], testShare: number, seed: number): { train: LengthExample[]; test: LengthExample[] } {
  const ids = [...new Set(examples.map((e) => e.questionId))].sort();
  const rng = seededRng(seed);
  for (let i = ids.length - 1; i > 0; i--) {
    const j = Math.floor(rng() * (i + 1));
    [ids[i], ids[j]] = [ids[j]!, ids[i]!];
  }
  const test = new Set(ids.slice(0, Math.round(ids.length * testShare)));
  return { train: examples.filter((e) => !test.has(e.questionId)), test: examples.filter((e) => test.has(e.questionId)) };
}

function normalise(model: string): string {
  // Organisation prefixes (`mistralai/...`) are not part of how servers name their models.
  return model.trim().toLowerCase().replace(/^[^/]*\//, '');
}

async function jsonl(path: string): Promise<Record<string, unknown>[]> {
  const text = await readFile(path, 'utf8');
  return text
    .split('\n')
    .filter((line) => line.trim() !== '')
    .map((line) => JSON.parse(line) as Record<string, unknown>);
}
