import { Readable } from 'node:stream';
import type { Transport } from '../../src/transport/transport.js';

/** A request the held transport received: it gets its answer when the test gives one. */
export interface HeldCall {
  readonly backendId: string;
  /** The first word of the request's first message: how the test names its requests. */
  readonly label: string;
  /** Whether the test has answered it. */
  readonly answered: boolean;
  /** Answers 200 with a whole JSON completion that reports `outputTokens`. */
  complete(outputTokens: number): void;
  /** Answers `status` with an error body, before any completion byte. */
  fail(status: number): void;
}

export interface HeldTransport {
  readonly transport: Transport;
  /** Every request sent so far, in the order the router sent them (the order it admitted them). */
  readonly calls: HeldCall[];
  /** The request named `label`; throws if the router has not sent it. */
  call(label: string): HeldCall;
  /** Labels of the requests sent so far, in order. */
  labels(): string[];
}

/**
 * A transport that answers nothing until the test says, so a test decides when each backend slot is
 * freed and reads the order in which queued requests were admitted — with no timing involved.
 */
export function heldTransport(): HeldTransport {
  const calls: HeldCall[] = [];
  const transport: Transport = {
    send(backend, request) {
      const body = JSON.parse(Buffer.from(request.body ?? new Uint8Array()).toString()) as { messages: { content: string }[] };
      const label = body.messages[0]!.content.split(' ')[0]!;
      return new Promise((resolve) => {
        let answered = false;
        const answer = (status: number, text: string): void => {
          if (answered) throw new Error(`${label} was answered twice`);
          answered = true;
          const chunk = Buffer.from(text);
          request.onData?.(chunk);
          resolve({ status, headers: { 'content-type': 'application/json' }, body: Readable.from([chunk], { objectMode: false }) });
        };
        calls.push({
          backendId: backend.id,
          label,
          get answered() {
            return answered;
          },
          complete: (outputTokens) => answer(200, JSON.stringify({ object: 'chat.completion', usage: { prompt_tokens: 1, completion_tokens: outputTokens } })),
          fail: (status) => answer(status, '{"error":"the backend failed"}'),
        });
      });
    },
    close: () => Promise.resolve(),
  };
  return {
    transport,
    calls,
    call(label) {
      const found = calls.find((c) => c.label === label);
      if (!found) throw new Error(`${label} was not sent; sent: ${calls.map((c) => c.label).join(', ')}`);
      return found;
    },
    labels: () => calls.map((c) => c.label),
  };
}
