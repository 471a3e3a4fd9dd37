import { connect } from 'node:net';

/** One step of what a raw client does on the socket: write bytes, wait, or half-close. */
export type RawStep = string | Buffer | { readonly waitMs: number } | { readonly end: true };

export interface RawAnswer {
  /** The status of the first response; undefined when the connection closed without one. */
  readonly status: number | undefined;
  readonly headers: Readonly<Record<string, string>>;
  readonly body: string;
  /** From the first byte written to the whole response (or the close). */
  readonly elapsedMs: number;
  /** The socket error the client saw, if any (ECONNRESET, EPIPE). */
  readonly error: string | undefined;
}

/**
 * Speaks HTTP/1.1 by hand on a TCP socket (to send what no HTTP client would: bad framing, huge
 * headers, bodies that never end) and reads back the first response, complete by its
 * content-length, or whatever arrived before the server closed the connection.
 */
export function rawExchange(port: number, steps: readonly RawStep[], timeoutMs = 10_000): Promise<RawAnswer> {
  return new Promise((resolve) => {
    const socket = connect(port, '127.0.0.1');
    const started = Date.now();
    let received = Buffer.alloc(0);
    let error: string | undefined;
    let done = false;
    const finish = (): void => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      socket.destroy();
      resolve({ ...parse(received), elapsedMs: Date.now() - started, error });
    };
    const timer = setTimeout(() => {
      error ??= 'client timeout';
      finish();
    }, timeoutMs);
    socket.on('data', (chunk: Buffer) => {
      received = Buffer.concat([received, chunk]);
      if (complete(received)) finish();
    });
    socket.on('error', (err: NodeJS.ErrnoException) => {
      error ??= err.code ?? err.message;
      finish();
    });
    socket.on('close', finish);
    socket.once('connect', async () => {
      for (const step of steps) {
        if (done) return;
        if (typeof step === 'string' || Buffer.isBuffer(step)) socket.write(step);
        else if ('waitMs' in step) await new Promise((r) => setTimeout(r, step.waitMs));
        else socket.end();
      }
    });
  });
}

function complete(bytes: Buffer): boolean {
  const end = bytes.indexOf('\r\n\r\n');
  if (end === -1) return false;
  const head = bytes.subarray(0, end).toString('latin1');
  if (/\r\ntransfer-encoding: *chunked/i.test(head)) return bytes.subarray(end + 4).includes('0\r\n\r\n');
  const length = /\r\ncontent-length: *(\d+)/i.exec(head);
  return length !== null && bytes.length >= end + 4 + Number(length[1]);
}

function parse(bytes: Buffer): Pick<RawAnswer, 'status' | 'headers' | 'body'> {
  const end = bytes.indexOf('\r\n\r\n');
  if (end === -1) return { status: undefined, headers: {}, body: bytes.toString() };
  const [statusLine = '', ...lines] = bytes.subarray(0, end).toString('latin1').split('\r\n');
  const headers: Record<string, string> = {};
  for (const line of lines) {
    const colon = line.indexOf(':');
    headers[line.slice(0, colon).trim().toLowerCase()] = line.slice(colon + 1).trim();
  }
  const status = Number(/^HTTP\/1\.[01] (\d{3})/.exec(statusLine)?.[1]);
  let body = bytes.subarray(end + 4).toString('latin1');
  if (headers['transfer-encoding'] === 'chunked') {
    let out = '';
    for (let at = 0; ; ) {
      const eol = body.indexOf('\r\n', at);
      const size = eol === -1 ? 0 : Number.parseInt(body.slice(at, eol), 16);
      if (!(size > 0)) break;
      out += body.slice(eol + 2, eol + 2 + size);
      at = eol + 2 + size + 2;
    }
    body = out;
  }
  else if (headers['content-length'] !== undefined) body = body.slice(0, Number(headers['content-length']));
  return { status: Number.isNaN(status) ? undefined : status, headers, body: Buffer.from(body, 'latin1').toString() };
}
