import TinyQueue from 'tinyqueue';
import type { CancelSignal } from '../cancel.js';
import type { Clock, Timer } from '../clock.js';
import { clientAborted, queueFull, queueTimeout } from '../errors.js';

export interface AdmissionQueueOptions {
  readonly backendId: string;
  /** Requests admitted at once. */
  readonly concurrency: number;
  /** Requests allowed to wait; one more is refused with 429. */
  readonly maxLength: number;
  /** Longest wait before a request is refused with 504. */
  readonly maxWaitMs: number;
  readonly clock: Clock;
}

export interface Ticket {
  /**
   * Lower runs first. The router passes the request's latest start time (deadline minus predicted
   * service), which orders the queue least-laxity-first; equal priorities keep arrival order.
   */
  readonly priority: number;
  /** Aborting removes the request from the queue and rejects its wait with 499. */
  readonly signal?: CancelSignal | undefined;
}

interface Waiter {
  readonly priority: number;
  readonly seq: number;
  readonly enqueuedMs: number;
  readonly resolve: () => void;
  readonly reject: (err: Error) => void;
  timer: Timer | undefined;
  signal: CancelSignal | undefined;
  onAbort: (() => void) | undefined;
  settled: boolean;
}

const byPriority = (a: Waiter, b: Waiter): number => a.priority - b.priority || a.seq - b.seq;

/**
 * A per-backend admission gate: at most `concurrency` requests run, the rest wait in priority order
 * (a binary heap; p-queue orders by a static integer and cannot withdraw a waiting task on timeout,
 * both of which this needs). Withdrawn waiters are dropped lazily when they reach the top.
 */
export class AdmissionQueue {
  readonly #options: AdmissionQueueOptions;
  #heap = new TinyQueue<Waiter>([], byPriority);
  #active = 0;
  #waiting = 0;
  #seq = 0;

  constructor(options: AdmissionQueueOptions) {
    this.#options = options;
  }

  get active(): number {
    return this.#active;
  }

  get waiting(): number {
    return this.#waiting;
  }

  /** Takes a slot at once if one is free and nobody is waiting for it. */
  tryAcquire(): boolean {
    if (this.#active < this.#options.concurrency && this.#waiting === 0) {
      this.#active++;
      return true;
    }
    return false;
  }

  /** Waits for a slot. Resolves once admitted (the caller then owes one `release()`); rejects with 429, 504 or 499. */
  wait(ticket: Ticket): Promise<void> {
    if (this.tryAcquire()) return Promise.resolve();
    if (this.#waiting >= this.#options.maxLength) return Promise.reject(queueFull(this.#options.backendId, this.#options.maxLength));
    if (ticket.signal?.aborted) return Promise.reject(clientAborted());
    const { clock, maxWaitMs } = this.#options;
    return new Promise<void>((resolve, reject) => {
      const waiter: Waiter = {
        priority: ticket.priority,
        seq: this.#seq++,
        enqueuedMs: clock.now(),
        resolve,
        reject,
        timer: undefined,
        signal: ticket.signal,
        onAbort: undefined,
        settled: false,
      };
      waiter.timer = clock.setTimer(() => this.#withdraw(waiter, queueTimeout(clock.now() - waiter.enqueuedMs)), maxWaitMs);
      if (waiter.signal) {
        waiter.onAbort = () => this.#withdraw(waiter, clientAborted());
        waiter.signal.addEventListener('abort', waiter.onAbort, { once: true });
      }
      this.#heap.push(waiter);
      this.#waiting++;
    });
  }

  /** Frees a slot and hands it to the most urgent waiter. */
  release(): void {
    this.#active--;
    while (this.#heap.length > 0) {
      const next = this.#heap.pop()!;
      if (next.settled) continue;
      this.#settle(next);
      this.#active++;
      next.resolve();
      return;
    }
  }

  /** Refuses every waiter with `err` (used on shutdown). */
  rejectAll(err: Error): void {
    for (const waiter of this.#heap.data) if (!waiter.settled) this.#withdraw(waiter, err);
    this.#heap = new TinyQueue<Waiter>([], byPriority);
  }

  #withdraw(waiter: Waiter, err: Error): void {
    if (waiter.settled) return;
    this.#settle(waiter);
    waiter.reject(err);
    // Withdrawn waiters stay in the heap until popped; rebuild when they dominate it.
    if (this.#heap.length > 64 && this.#heap.length > 2 * this.#waiting) {
      this.#heap = new TinyQueue(this.#heap.data.filter((w) => !w.settled), byPriority);
    }
  }

  #settle(waiter: Waiter): void {
    waiter.settled = true;
    this.#waiting--;
    waiter.timer?.cancel();
    if (waiter.onAbort) waiter.signal?.removeEventListener('abort', waiter.onAbort);
  }
}
