import TinyQueue from 'tinyqueue';
import type { CancelSignal } from '../cancel.js';
import type { Clock, Timer } from '../clock.js';
import { clientAborted, queueFull, queueTimeout } from '../errors.js';
import type { Lease } from '../state/store.js';
import type { FairShare } from './fair-share.js';

export interface AdmissionQueueOptions {
  readonly backendId: string;
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
  /** Carried to the lease the waiter is admitted with (the router's SLO class). */
  readonly tag?: string | undefined;
  /** Aborting removes the request from the queue and rejects its wait with 499. */
  readonly signal?: CancelSignal | undefined;
}

/** A request waiting for a slot. */
export interface Waiter {
  readonly priority: number;
  readonly seq: number;
  readonly tenant: string;
  readonly tag: string | undefined;
  readonly enqueuedMs: number;
  readonly resolve: (lease: Lease) => void;
  readonly reject: (err: Error) => void;
  timer: Timer | undefined;
  signal: CancelSignal | undefined;
  onAbort: (() => void) | undefined;
  settled: boolean;
}

const byPriority = (a: Waiter, b: Waiter): number => a.priority - b.priority || a.seq - b.seq;
/** Whether `a` goes before `b`. */
// Stryker disable next-line EqualityOperator: two waiters never tie in byPriority (their seq differ), so < 0 and <= 0 agree
const precedes = (a: Waiter, b: Waiter): boolean => byPriority(a, b) < 0;
const NO_TENANT = '';

/**
 * The requests waiting for a slot on one backend, in the order they should get one: one binary heap
 * per tenant (p-queue orders by a static integer and cannot withdraw a waiting task on timeout, both
 * of which this needs, nor choose between tenants by their service). The queue does not count slots:
 * the state store grants them (`tryAcquire`, shared by every replica), and whoever frees one asks
 * `next()` whom to admit. Settled waiters (admitted or withdrawn) are dropped lazily when they reach
 * the top of their heap.
 */
export class AdmissionQueue {
  readonly #options: AdmissionQueueOptions;
  readonly #heaps = new Map<string, TinyQueue<Waiter>>();
  #waiting = 0;
  #seq = 0;

  constructor(options: AdmissionQueueOptions) {
    this.#options = options;
  }

  get waiting(): number {
    return this.#waiting;
  }

  /** Waits for a slot. Resolves with the lease it is admitted with; rejects with 429, 504 or 499. */
  wait(ticket: Ticket): Promise<Lease> {
    if (this.#waiting >= this.#options.maxLength) return Promise.reject(queueFull(this.#options.backendId, this.#options.maxLength));
    if (ticket.signal?.aborted) return Promise.reject(clientAborted());
    const { clock, maxWaitMs, fairShare } = this.#options;
    const tenant = fairShare ? (ticket.tenant ?? NO_TENANT) : NO_TENANT;
    return new Promise<Lease>((resolve, reject) => {
      const waiter: Waiter = {
        priority: ticket.priority,
        seq: this.#seq++,
        tenant,
        tag: ticket.tag,
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
        waiter.signal.addEventListener('abort', waiter.onAbort);
      }
      let heap = this.#heaps.get(tenant);
      if (!heap) this.#heaps.set(tenant, (heap = new TinyQueue<Waiter>([], byPriority)));
      heap.push(waiter);
      this.#waiting++;
      fairShare?.startWaiting(tenant);
    });
  }

  /** The waiter to admit next, still waiting; undefined when none is. */
  next(): Waiter | undefined {
    return this.#next();
  }

  /** Admits `waiter` with `lease`. False when it was withdrawn meanwhile (the lease is then the caller's to use or free). */
  admit(waiter: Waiter, lease: Lease): boolean {
    if (waiter.settled) return false;
    this.#settle(waiter);
    waiter.resolve(lease);
    return true;
  }

  /** Refuses every waiter with `err` (used on shutdown). */
  rejectAll(err: Error): void {
    for (const heap of [...this.#heaps.values()]) for (const waiter of [...heap.data]) this.#withdraw(waiter, err);
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
      if (!urgent || precedes(head, urgent)) urgent = head;
      if (fairShare) {
        const counter = fairShare.counter(tenant);
        if (counter < fairestCounter || (counter === fairestCounter && precedes(head, fairest!))) {
          fairest = head;
          fairestCounter = counter;
        }
      }
    }
    // With fairness on, the first head found sets both; without it, fairest stays unset.
    if (!fairest) return urgent;
    return urgent!.priority <= this.#options.clock.now() + (this.#options.urgentWithinMs ?? 0) ? urgent : fairest;
  }

  #withdraw(waiter: Waiter, err: Error): void {
    if (waiter.settled) return;
    this.#settle(waiter);
    waiter.reject(err);
    // Withdrawn waiters stay in their heap until popped; rebuild one when they dominate it.
    const heap = this.#heaps.get(waiter.tenant);
    // Stryker disable next-line ConditionalExpression,LogicalOperator,EqualityOperator,ArithmeticOperator,BlockStatement: whether and when to rebuild bounds memory only: next() skips settled waiters either way
    if (heap && heap.length > 64 && heap.length > 2 * this.#waiting) {
      // Stryker disable next-line MethodExpression: keeping the settled waiters only keeps memory; next() skips them
      this.#heaps.set(waiter.tenant, new TinyQueue(heap.data.filter((w) => !w.settled), byPriority));
    }
  }

  #settle(waiter: Waiter): void {
    waiter.settled = true;
    this.#waiting--;
    // Stryker disable next-line OptionalChaining: wait() sets the timer before the waiter can be settled
    waiter.timer?.cancel();
    // A signal outlives the wait (a client may share one across requests): it must not keep the waiter.
    // wait() sets onAbort whenever there is a signal.
    waiter.signal?.removeEventListener('abort', waiter.onAbort!);
    this.#options.fairShare?.stopWaiting(waiter.tenant);
  }
}
