/**
 * The body sent upstream with a `priority` field set (vLLM's, for `--scheduling-policy priority`:
 * lower is served first). The client's bytes are kept and the field is appended after them, so no
 * re-serialising; JSON readers that keep the last of duplicate keys (Python's, vLLM's) see the
 * router's value even if the client sent its own. `raw` must be a JSON object, as parsing ensured.
 */
export function withPriority(raw: Uint8Array, priority: number): Uint8Array {
  let end = raw.length - 1;
  while (end >= 0 && isSpace(raw[end]!)) end--;
  if (end < 0 || raw[end] !== CLOSE) throw new TypeError('withPriority: the body is not a JSON object');
  let before = end - 1;
  while (before >= 0 && isSpace(raw[before]!)) before--;
  const field = Buffer.from(`${raw[before] === OPEN ? '' : ','}"priority":${Math.trunc(priority)}}`);
  const out = new Uint8Array(end + field.length);
  out.set(raw.subarray(0, end), 0);
  out.set(field, end);
  return out;
}

const OPEN = 0x7b;
const CLOSE = 0x7d;

function isSpace(byte: number): boolean {
  return byte === 0x20 || byte === 0x0a || byte === 0x0d || byte === 0x09;
}
