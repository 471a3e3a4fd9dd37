import TinyQueue from 'tinyqueue';
import type { CancelSignal } from '../cancel.js';
import type { Clock, Timer } from '../clock.js';
import { clientAborted, queueFull, queueTimeout } from '../errors.js';
import type { FairShare } from './fair-share.js';

export interface AdmissionQueueOptions {
  readonly backendId: string;
  /** Requests admitted at once. */
  readonly concurrency: number;
  /** Requests allowed to wait; one more is refused with 429. */
  readonly maxLength: number;
  /** Longest wait before a request is refused with 504. */
  readonly maxWaitMs: number;
  readonly clock: Clock;
  /**
   * Tenant counters shared by every queue of the router. With them, a waiter whose latest start is
   * within `urgentWithinMs` goes first; otherwise the tenant with the least service does.
   */
  readonly fairShare?: FairShare | undefined;
  readonly urgentWithinMs?: number;
}

export interface Ticket {
  /**
   * Lower runs first. The router passes the arrival time (first come first served) or the latest
   * start time (deadline minus predicted service), which orders least-laxity-first; equal priorities
   * keep arrival order.
   */
  readonly priority: number;
  readonly tenant?: string;
  /** Aborting removes the request from the queue and rejects its wait with 499. */
  readonly signal?: CancelSignal | undefined;
}

interface Waiter {
  readonly priority: number;
  readonly seq: number;
  readonly tenant: string;
  readonly enqueuedMs: number;
  readonly resolve: () => void;
  readonly reject: (err: Error) => void;
  timer: Timer | undefined;
  signal: CancelSignal | undefined;
  onAbort: (() => void) | undefined;
  settled: boolean;
}

const byPriority = (a: Waiter, b: Waiter): number => a.priority - b.priority || a.seq - b.seq;
const NO_TENANT = '';

/**
 * A per-backend admission gate: at most `concurrency` requests run, the rest wait in priority order,
 * one binary heap per tenant (p-queue orders by a static integer and cannot withdraw a waiting task
 * on timeout, both of which this needs, nor choose between tenants by their service). Withdrawn
 * waiters are dropped lazily when they reach the top of their heap.
 */
export class AdmissionQueue {
  readonly #options: AdmissionQueueOptions;
  readonly #heaps = new Map<string, TinyQueue<Waiter>>();
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
    const { clock, maxWaitMs, fairShare } = this.#options;
    const tenant = fairShare ? (ticket.tenant ?? NO_TENANT) : NO_TENANT;
    return new Promise<void>((resolve, reject) => {
      const waiter: Waiter = {
        priority: ticket.priority,
        seq: this.#seq++,
        tenant,
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
      let heap = this.#heaps.get(tenant);
      if (!heap) this.#heaps.set(tenant, (heap = new TinyQueue<Waiter>([], byPriority)));
      heap.push(waiter);
      this.#waiting++;
      fairShare?.startWaiting(tenant);
    });
  }

  /** Frees a slot and hands it to the next waiter. */
  release(): void {
    this.#active--;
    const next = this.#next();
    if (!next) return;
    this.#heaps.get(next.tenant)!.pop();
    this.#settle(next);
    this.#active++;
    next.resolve();
  }

  /** Refuses every waiter with `err` (used on shutdown). */
  rejectAll(err: Error): void {
    for (const heap of this.#heaps.values()) for (const waiter of heap.data) if (!waiter.settled) this.#withdraw(waiter, err);
    this.#heaps.clear();
  }

  /**
   * The waiter to admit: the most urgent one if its latest start is near (or fairness is off),
   * otherwise the head of the tenant with the least service.
   */
  #next(): Waiter | undefined {
    const fairShare = this.#options.fairShare;
    let urgent: Waiter | undefined;
    let fairest: Waiter | undefined;
    let fairestCounter = Number.POSITIVE_INFINITY;
    for (const [tenant, heap] of this.#heaps) {
      while (heap.length > 0 && heap.peek()!.settled) heap.pop();
      const head = heap.peek();
      if (!head) {
        this.#heaps.delete(tenant);
        continue;
      }
      if (!urgent || byPriority(head, urgent) < 0) urgent = head;
      if (fairShare) {
        const counter = fairShare.counter(tenant);
        if (counter < fairestCounter || (counter === fairestCounter && byPriority(head, fairest!) < 0)) {
          fairest = head;
          fairestCounter = counter;
        }
      }
    }
    if (!fairShare || !urgent || !fairest) return urgent;
    return urgent.priority <= this.#options.clock.now() + (this.#options.urgentWithinMs ?? 0) ? urgent : fairest;
  }

  #withdraw(waiter: Waiter, err: Error): void {
    if (waiter.settled) return;
    this.#settle(waiter);
    waiter.reject(err);
    // Withdrawn waiters stay in their heap until popped; rebuild one when they dominate it.
    const heap = this.#heaps.get(waiter.tenant);
    if (heap && heap.length > 64 && heap.length > 2 * this.#waiting) {
      this.#heaps.set(waiter.tenant, new TinyQueue(heap.data.filter((w) => !w.settled), byPriority));
    }
  }

  #settle(waiter: Waiter): void {
    waiter.settled = true;
    this.#waiting--;
    waiter.timer?.cancel();
    if (waiter.onAbort) waiter.signal?.removeEventListener('abort', waiter.onAbort);
    this.#options.fairShare?.stopWaiting(waiter.tenant);
  }
}
