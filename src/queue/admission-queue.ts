import TinyQueue from 'tinyqueue';
import type { CancelSignal } from '../cancel.js';
import type { Clock, Timer } from '../clock.js';
import { classShed, clientAborted, queueFull, queueTimeout } from '../errors.js';
import type { Lease } from '../state/store.js';
import type { FairShare } from './fair-share.js';
import { type DrainRate, retryAfterMs } from './shedding.js';

export interface AdmissionQueueOptions {
  readonly backendId: string;
  /** Requests allowed to wait; one more is refused with 503 (the fleet is full). */
  readonly maxLength: number;
  /**
   * The share of `maxLength` a ticket's tag (SLO class) may fill; a ticket arriving past it is shed
   * with 429 while higher shares still queue (see `classQueueShares`). Default: 1 for every tag.
   */
  readonly shareOf?: ((tag: string | undefined) => number) | undefined;
  /** How fast the backend frees slots, for the `retry-after-ms` a refused request is given. */
  readonly drain?: DrainRate | undefined;
  /** Longest wait before a request is refused with 504. */
  readonly maxWaitMs: number;
  readonly clock: Clock;
  /**
   * Tenant counters shared by every queue of the router. With them, a waiter whose latest start is
   * within `urgentWithinMs` goes first; otherwise the tenant with the least service does.
   */
  readonly fairShare?: FairShare | undefined;
  readonly urgentWithinMs?: number;
  /**
   * Priorities are latest start times on `clock` (least-laxity orders): a waiter whose latest start
   * has passed can no longer meet its deadline and waits behind every waiter that still can. Without
   * it, least laxity first spends an overload on requests already lost and makes the rest late too.
   */
  readonly demoteLate?: boolean;
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
  /** The request's prompt tokens, for whoever admits it (an admission limit that counts its prefill). */
  readonly promptTokens?: number | undefined;
  /** Aborting removes the request from the queue and rejects its wait with 499. */
  readonly signal?: CancelSignal | undefined;
}

/** A request waiting for a slot. */
export interface Waiter {
  readonly priority: number;
  readonly seq: number;
  readonly tenant: string;
  readonly tag: string | undefined;
  readonly promptTokens: number;
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

/** One tenant's waiters: those that can still start in time, and those that cannot (`demoteLate`). */
interface TenantWaiters {
  readonly onTime: TinyQueue<Waiter>;
  readonly late: TinyQueue<Waiter>;
}

/**
 * The requests waiting for a slot on one backend, in the order they should get one: binary heaps
 * per tenant (p-queue orders by a static integer and cannot withdraw a waiting task on timeout, both
 * of which this needs, nor choose between tenants by their service). The queue does not count slots:
 * the state store grants them (`tryAcquire`, shared by every replica), and whoever frees one asks
 * `next()` whom to admit. Settled waiters (admitted or withdrawn) are dropped lazily when they reach
 * the top of their heap.
 */
export class AdmissionQueue {
  readonly #options: AdmissionQueueOptions;
  readonly #tenants = new Map<string, TenantWaiters>();
  #waiting = 0;
  #seq = 0;

  constructor(options: AdmissionQueueOptions) {
    this.#options = options;
  }

  get waiting(): number {
    return this.#waiting;
  }

  /**
   * Why a request of `tag` would be refused now (503 queue full, 429 its class shed), with when to
   * retry; undefined when it may wait. Nothing is held for a refused request.
   */
  refusal(tag: string | undefined, waiting = this.#waiting): Error | undefined {
    const { backendId, maxLength, shareOf, drain } = this.#options;
    if (waiting >= maxLength) return queueFull(backendId, maxLength, retryAfterMs(waiting, drain));
    if (waiting >= this.#limitOf(tag)) return classShed(tag ?? 'default', backendId, waiting, shareOf?.(tag) ?? 1, retryAfterMs(waiting, drain));
    return undefined;
  }

  /** Waiters a request of `tag` may find and still queue behind: its share of `maxLength`, rounded up. */
  #limitOf(tag: string | undefined): number {
    const { maxLength, shareOf } = this.#options;
    return Math.min(maxLength, Math.ceil(maxLength * (shareOf?.(tag) ?? 1)));
  }

  /** Waits for a slot. Resolves with the lease it is admitted with; rejects with 503 or 429 (see `refusal`), 504 or 499. */
  wait(ticket: Ticket): Promise<Lease> {
    // A client already gone displaces nobody.
    if (ticket.signal?.aborted) return Promise.reject(clientAborted());
    // At its class's limit, an arrival takes the place of a waiter of a lower class, if any.
    if (this.#waiting === this.#limitOf(ticket.tag)) this.#displaceBelow(ticket.tag);
    const refusal = this.refusal(ticket.tag);
    if (refusal) return Promise.reject(refusal);
    const { clock, maxWaitMs, fairShare } = this.#options;
    const tenant = fairShare ? (ticket.tenant ?? NO_TENANT) : NO_TENANT;
    return new Promise<Lease>((resolve, reject) => {
      const waiter: Waiter = {
        priority: ticket.priority,
        seq: this.#seq++,
        tenant,
        tag: ticket.tag,
        promptTokens: ticket.promptTokens ?? 0,
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
      let waiters = this.#tenants.get(tenant);
      if (!waiters) this.#tenants.set(tenant, (waiters = { onTime: new TinyQueue<Waiter>([], byPriority), late: new TinyQueue<Waiter>([], byPriority) }));
      waiters.onTime.push(waiter);
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
    for (const { onTime, late } of [...this.#tenants.values()]) for (const waiter of [...onTime.data, ...late.data]) this.#withdraw(waiter, err);
    this.#tenants.clear();
  }

  /**
   * The waiter to admit: the most urgent one if its latest start is near (or fairness is off),
   * otherwise the head of the tenant with the least service; with `demoteLate`, chosen among the
   * waiters still on time, and among the late ones only when none is.
   */
  #next(): Waiter | undefined {
    const now = this.#options.clock.now();
    for (const [tenant, waiters] of this.#tenants) {
      const { onTime, late } = waiters;
      for (;;) {
        const head = onTime.peek();
        if (!head) break;
        if (head.settled) onTime.pop();
        else if (this.#options.demoteLate && head.priority < now) late.push(onTime.pop()!);
        else break;
      }
      while (late.length > 0 && late.peek()!.settled) late.pop();
      if (onTime.length === 0 && late.length === 0) this.#tenants.delete(tenant);
    }
    return this.#pick('onTime', now) ?? this.#pick('late', now);
  }

  #pick(kind: keyof TenantWaiters, now: number): Waiter | undefined {
    const fairShare = this.#options.fairShare;
    let urgent: Waiter | undefined;
    let fairest: Waiter | undefined;
    let fairestCounter = Number.POSITIVE_INFINITY;
    for (const [tenant, waiters] of this.#tenants) {
      const head = waiters[kind].peek();
      if (!head) continue;
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
    return urgent!.priority <= now + (this.#options.urgentWithinMs ?? 0) ? urgent : fairest;
  }

  /**
   * A request at its class's limit takes the place of the least urgent waiter of the class with the
   * smallest share below its own, which is shed (429) as it would have been had it arrived now: so a
   * waiter of a lower class never holds the place a higher class is refused for. A scan of the
   * waiters (at most `maxLength`), only when an arrival finds its class's limit reached.
   */
  #displaceBelow(tag: string | undefined): void {
    const shareOf = this.#options.shareOf;
    if (!shareOf) return;
    const share = shareOf(tag);
    let victim: Waiter | undefined;
    let victimShare = share;
    for (const { onTime, late } of this.#tenants.values()) {
      for (const waiter of [...onTime.data, ...late.data]) {
        if (waiter.settled) continue;
        const s = shareOf(waiter.tag);
        if (s < victimShare || (s === victimShare && victim && s < share && precedes(victim, waiter))) {
          victim = waiter;
          victimShare = s;
        }
      }
    }
    if (!victim) return;
    const { backendId, drain } = this.#options;
    this.#withdraw(victim, classShed(victim.tag ?? 'default', backendId, this.#waiting, victimShare, retryAfterMs(this.#waiting, drain)));
  }

  #withdraw(waiter: Waiter, err: Error): void {
    if (waiter.settled) return;
    this.#settle(waiter);
    waiter.reject(err);
    // Withdrawn waiters stay in their heap until popped; rebuild a tenant's when they dominate it.
    const waiters = this.#tenants.get(waiter.tenant);
    // Stryker disable next-line ConditionalExpression,LogicalOperator,EqualityOperator,ArithmeticOperator,BlockStatement: whether and when to rebuild bounds memory only: next() skips settled waiters either way
    if (waiters && waiters.onTime.length + waiters.late.length > 64 && waiters.onTime.length + waiters.late.length > 2 * this.#waiting) {
      // Stryker disable next-line MethodExpression: keeping the settled waiters only keeps memory; next() skips them
      const kept = (heap: TinyQueue<Waiter>) => new TinyQueue(heap.data.filter((w) => !w.settled), byPriority);
      this.#tenants.set(waiter.tenant, { onTime: kept(waiters.onTime), late: kept(waiters.late) });
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
