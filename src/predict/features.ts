import { countTokens } from 'gpt-tokenizer';

/**
 * What the length model sees of a request: hashed words and word pairs of the prompt, a few cues
 * that words alone spread thin, the prompt's length, the number of messages, and max_tokens. Shared by training and serving,
 * so both compute exactly the same vector; bump FEATURE_VERSION whenever anything here changes.
 */
export const FEATURE_VERSION = 2;
export const HASH_BUCKETS = 1024;

/** Prompts are tokenized up to this many characters; the rest counts at 4 characters a token. */
const TOKENIZE_CHARS = 2_000;
/** Features look at this much of a prompt: the instruction is almost always near its start or end. */
const HEAD_CHARS = 6_000;
const TAIL_CHARS = 2_000;

const LONG_CUES = /\b(write|essay|story|article|explain|detailed|implement|code|script|program|steps?|list|generate|create|describe|plan|compare|design|outline|tutorial|guide|example)\b/g;
const SHORT_CUES = /\b(brief|briefly|short|one word|yes or no|single|only|concise|summari[sz]e|tl;?dr|just|answer with|in one sentence)\b/g;
const COUNT_REQUEST = /\b(\d{1,4})\s+(words|sentences|paragraphs|lines|items|examples|steps|points|questions|ideas)\b/;

export const HANDCRAFTED = [
  'log prompt tokens',
  'log lines',
  'code block',
  'log question marks',
  'long-output cues',
  'short-output cues',
  'log requested count',
  'log max_tokens',
  'has max_tokens',
  'log messages',
] as const;

export const FEATURE_LENGTH = HASH_BUCKETS + HANDCRAFTED.length;

/** Prompt length in tokens (a real BPE tokenizer over the first 2,000 characters, 4 characters a token after). */
export function promptTokenCount(text: string): number {
  if (text.length <= TOKENIZE_CHARS) return countTokens(text);
  return countTokens(text.slice(0, TOKENIZE_CHARS)) + Math.ceil((text.length - TOKENIZE_CHARS) / 4);
}

/** Writes the feature vector of a prompt into `out` (length FEATURE_LENGTH) at `offset`. */
export function promptFeatures(
  text: string,
  maxTokens: number | undefined,
  messageCount = 1,
  out: Float32Array = new Float32Array(FEATURE_LENGTH),
  offset = 0,
): Float32Array {
  const view = text.length > HEAD_CHARS + TAIL_CHARS ? `${text.slice(0, HEAD_CHARS)} ${text.slice(-TAIL_CHARS)}` : text;
  const lower = view.toLowerCase();
  // Words are runs of [a-z0-9']. A word hashes as FNV-1a of its characters; a word pair as FNV-1a of
  // "first second", computed by carrying on from the first word's hash — no substrings are built.
  let previous = -1; // FNV state after the previous word, -1 before the first
  let start = -1;
  for (let i = 0; i <= lower.length; i++) {
    const c = i < lower.length ? lower.charCodeAt(i) : 32;
    if ((c >= 97 && c <= 122) || (c >= 48 && c <= 57) || c === 39) {
      if (start === -1) start = i;
      continue;
    }
    if (start === -1) continue;
    let word = FNV_OFFSET;
    for (let j = start; j < i; j++) word = Math.imul(word ^ lower.charCodeAt(j), FNV_PRIME);
    out[offset + ((word >>> 0) % HASH_BUCKETS)] = 1;
    if (previous !== -1) {
      let pair = Math.imul(previous ^ 32, FNV_PRIME);
      for (let j = start; j < i; j++) pair = Math.imul(pair ^ lower.charCodeAt(j), FNV_PRIME);
      out[offset + ((pair >>> 0) % HASH_BUCKETS)] = 1;
    }
    previous = word;
    start = -1;
  }
  const h = offset + HASH_BUCKETS;
  out[h] = Math.log1p(promptTokenCount(text)) / 10;
  out[h + 1] = Math.log1p(count(view, '\n')) / 5;
  out[h + 2] = view.includes('```') ? 1 : 0;
  out[h + 3] = Math.log1p(count(view, '?')) / 3;
  out[h + 4] = Math.log1p(lower.match(LONG_CUES)?.length ?? 0) / 3;
  out[h + 5] = Math.log1p(lower.match(SHORT_CUES)?.length ?? 0) / 3;
  const requested = COUNT_REQUEST.exec(lower);
  out[h + 6] = requested ? Math.log1p(Number(requested[1])) / 8 : 0;
  out[h + 7] = maxTokens === undefined ? 0 : Math.log1p(maxTokens) / 10;
  out[h + 8] = maxTokens === undefined ? 0 : 1;
  out[h + 9] = Math.log1p(messageCount) / 3;
  return out;
}

/** A prompt's features in sparse form: the set hashed buckets, then the dense tail. */
export interface SparseFeatures {
  readonly hashed: Uint16Array;
  /** FEATURE_LENGTH − HASH_BUCKETS values. */
  readonly dense: Float32Array;
}

const scratch = new Uint16Array(HASH_BUCKETS);

/**
 * The row of a feature matrix that starts at `offset`, in sparse form. Hashed buckets are 0 or 1
 * (promptFeatures writes nothing else there), so their indices say all there is.
 */
export function sparseFeatures(features: Float32Array, offset = 0): SparseFeatures {
  let n = 0;
  for (let j = 0; j < HASH_BUCKETS; j++) if (features[offset + j] !== 0) scratch[n++] = j;
  return { hashed: scratch.slice(0, n), dense: features.slice(offset + HASH_BUCKETS, offset + FEATURE_LENGTH) };
}

/** FNV-1a, 32-bit: a fast, well-spread hash for feature hashing. */
const FNV_OFFSET = 0x811c9dc5;
const FNV_PRIME = 0x01000193;

function count(text: string, needle: string): number {
  let n = 0;
  for (let at = text.indexOf(needle); at !== -1; at = text.indexOf(needle, at + 1)) n++;
  return n;
}

/**
 * The answering model's slot in the model's one-hot input: its exact name if training saw it,
 * else the known name it contains or is contained in (`gpt-4-0314-preview` → `gpt-4-0314`), else
 * the last slot, "unknown".
 */
export function modelSlot(model: string, known: readonly string[]): number {
  const name = model.toLowerCase();
  if (name === '') return known.length;
  const exact = known.indexOf(name);
  if (exact !== -1) return exact;
  let best = -1;
  let bestLength = 0;
  known.forEach((k, i) => {
    if ((name.includes(k) || k.includes(name)) && k.length > bestLength) {
      best = i;
      bestLength = k.length;
    }
  });
  return best === -1 ? known.length : best;
}
