import type { CancelSignal } from '../cancel.js';
import type { Clock, Timer } from '../clock.js';
import { clientAborted, queueTimeout } from '../errors.js';
import { AdmissionQueue, type Waiter } from '../queue/admission-queue.js';
import type { FairShare } from '../queue/fair-share.js';
import { DrainRate } from '../queue/shedding.js';
import type { ClusterView } from '../state/cluster-view.js';
import { isQueueingStore, type Lease, type QueueingStore, type StateStore } from '../state/store.js';
import type { Backend } from '../types.js';

export interface SlotsOptions {
  readonly backends: readonly Backend[];
  readonly store: StateStore;
  readonly view: ClusterView;
  readonly clock: Clock;
  /** Lease duration; leases are renewed every third of it while held (ms). */
  readonly leaseTtlMs: number;
  readonly maxQueueLength: number;
  readonly maxQueueMs: number;
  /** The share of `maxQueueLength` each SLO class (a lease tag) may fill before it is shed (see `classQueueShares`). Default: all of it. */
  readonly shareOf?: ((tag: string | undefined) => number) | undefined;
  readonly fairShare: FairShare | undefined;
  readonly urgentWithinMs: number;
  /** Queue priorities are latest start times: waiters past theirs go behind the others. */
  readonly demoteLate: boolean;
  /** Told of a store failure: a refused acquisition is retried, a lost renewal only counted. */
  readonly onStoreError: (err: unknown) => void;
  /** Told when a held lease could not be renewed (it had expired in the store: its slot may be reused). */
  readonly onLeaseLost: (lease: Lease) => void;
  /** This replica, as the owner of its tickets in a queueing store. */
  readonly owner?: string;
  /**
   * Requests a backend may run at once now, for a request of `tag` with `promptTokens` (capped at its `maxConcurrency`);
   * asked at every acquisition, so a limit that falls holds waiters back until slots free or it rises
   * again (retried every RETRY_MS). A queueing store grants freed slots under the last limit a
   * request brought it (`acquireOrQueue`). Default: `maxConcurrency`.
   */
  readonly limit?: (backend: Backend, tag: string | undefined, promptTokens: number) => number;
}

export interface SlotRequest {
  readonly backend: Backend;
  /** Queue order (lower first). */
  readonly priority: number;
  readonly tenant: string;
  /** The lease's tag (the request's SLO class). */
  readonly tag: string;
  /** Its prompt tokens (for `limit`). */
  readonly promptTokens?: number;
  readonly signal?: CancelSignal | undefined;
}

/**
 * How long a waiter with nothing freed locally waits before the store is asked again: slots freed by
 * other replicas, and leases that expired, are noticed this late at most.
 */
const RETRY_MS = 250;

const NO_QUEUE = Object.freeze({ waiting: 0 });

/** A request waiting in a queueing store's shared queue, until its ticket is granted. */
interface TicketWaiter {
  readonly id: string;
  readonly request: SlotRequest;
  readonly backendId: string;
  readonly resolve: (lease: Lease) => void;
  readonly reject: (err: Error) => void;
  readonly timer: Timer;
  readonly signal: CancelSignal | undefined;
  readonly onAbort: () => void;
}

/**
 * Slots on backends: the store grants them (atomically, at most `maxConcurrency` per backend across
 * every replica). With a store that queues (Redis), a request refused leaves a ticket in the
 * backend's queue shared by every replica, and is admitted when the store grants it (told by the
 * store, or found by polling every RETRY_MS). Otherwise — and while the shared queue is out of reach
 * — it waits in this router's admission queue for the backend, and each slot this router frees — or,
 * every RETRY_MS, the store — admits the queue's next waiter. Held leases are renewed while their
 * requests run, so a long stream keeps counting as in flight, and a router that dies frees its slots
 * when its leases expire.
 */
export class Slots {
  readonly #o: SlotsOptions;
  readonly #queues = new Map<string, AdmissionQueue>();
  /** Per backend, how fast slots free: the refused are told when to retry from it. */
  readonly #drain = new Map<string, DrainRate>();
  readonly #backends = new Map<string, Backend>();
  readonly #held = new Set<Lease>();
  /** Held leases the store no longer knows (a renewal found them expired): reported once, not renewed again. */
  readonly #lost = new Set<Lease>();
  readonly #heldBy = new Map<string, number>();
  readonly #pumping = new Set<string>();
  readonly #retry = new Map<string, Timer>();
  #renewal: Timer | undefined;
  /** Set by `close`: the error every later request is refused with. */
  #closedWith: Error | undefined;
  /** The store's shared queue, when it has one: then waiters wait there, not in `#queues`. */
  readonly #shared: QueueingStore | undefined;
  readonly #owner: string;
  /** Per backend, this replica's requests waiting in the shared queue, by ticket id. */
  readonly #tickets = new Map<string, Map<string, TicketWaiter>>();
  #nextTicket = 0;
  readonly #taking = new Set<string>();
  readonly #takeAgain = new Set<string>();
  readonly #polls = new Map<string, Timer>();
  readonly #unwatchGrants: (() => void) | undefined;
  /** Per backend, requests waiting in the shared queue across every replica, counted every RETRY_MS. */
  readonly #sharedQueued = new Map<string, number>();
  #counting: Timer | undefined;

  constructor(options: SlotsOptions) {
    this.#o = options;
    this.#shared = isQueueingStore(options.store) ? options.store : undefined;
    this.#owner = options.owner ?? `replica-${Math.random().toString(36).slice(2, 10)}`;
    this.#unwatchGrants = this.#shared?.watchGrants(this.#owner, (backendId) => void this.#take(backendId));
    if (this.#shared) this.#countLater();
    for (const backend of options.backends) {
      this.#tickets.set(backend.id, new Map());
      this.#backends.set(backend.id, backend);
      const drain = new DrainRate(options.clock);
      this.#drain.set(backend.id, drain);
      this.#queues.set(
        backend.id,
        new AdmissionQueue({
          backendId: backend.id,
          maxLength: options.maxQueueLength,
          maxWaitMs: options.maxQueueMs,
          shareOf: options.shareOf,
          drain,
          clock: options.clock,
          fairShare: options.fairShare,
          urgentWithinMs: options.urgentWithinMs,
          demoteLate: options.demoteLate,
        }),
      );
    }
  }

  /** Requests waiting for a slot on a backend, in this router. */
  waiting(backendId: string): number {
    return (this.#queues.get(backendId)?.waiting ?? 0) + (this.#tickets.get(backendId)?.size ?? 0);
  }

  /**
   * A backend's queue length as a live field, for a reader that looks it up once: with a shared
   * queue, the requests of every replica waiting there (as last counted) or this replica's, if more.
   */
  queue(backendId: string): { readonly waiting: number } {
    const local = this.#queues.get(backendId);
    if (!local) return NO_QUEUE;
    if (!this.#shared) return local;
    const tickets = this.#tickets.get(backendId)!;
    const shared = this.#sharedQueued;
    return {
      get waiting() {
        return local.waiting + Math.max(tickets.size, shared.get(backendId) ?? 0);
      },
    };
  }

  /** Leases this router holds on a backend. */
  held(backendId: string): number {
    return this.#heldBy.get(backendId) ?? 0;
  }

  /** Per backend: leases held and requests waiting here. */
  *samples(): Iterable<readonly [string, { active: number; waiting: number }]> {
    for (const id of this.#queues.keys()) yield [id, { active: this.held(id), waiting: this.waiting(id) }];
  }

  /**
   * A slot on the backend: at once when the store grants one and nobody here waits for it, else
   * after waiting in its queue. Rejects with 503 (queue full), 429 (its class shed), 504 (waited too long) or 499 (signal),
   * or, once closed, with the error it was closed with.
   */
  async acquire(request: SlotRequest): Promise<Lease> {
    if (this.#closedWith) throw this.#closedWith;
    if (this.#shared?.queueing) {
      const shared = await this.#acquireShared(this.#shared, request);
      if (shared) return shared;
    }
    return this.#acquireHere(request);
  }

  /** A slot from the store at once, or after waiting in this replica's queue for the backend. */
  async #acquireHere(request: SlotRequest): Promise<Lease> {
    const { backend } = request;
    const queue = this.#queues.get(backend.id)!;
    if (queue.waiting === 0) {
      const lease = await this.#try(backend, request.tag, request.promptTokens ?? 0);
      if (this.#closedWith) {
        // Closed while the store answered: nobody waits for the slot any more.
        if (lease) await this.#o.store.release(lease).catch(this.#o.onStoreError);
        throw this.#closedWith;
      }
      if (lease) return this.#hold(lease);
    }
    const waiting = queue.wait({ priority: request.priority, tenant: request.tenant, tag: request.tag, promptTokens: request.promptTokens, signal: request.signal });
    // A slot may have freed while this request asked; and with nothing freed here, ask again later.
    this.#pump(backend.id);
    return waiting;
  }

  /** Gives a slot back and admits the next waiter. */
  release(lease: Lease): void {
    if (!this.#held.delete(lease)) return;
    this.#lost.delete(lease);
    this.#drain.get(lease.backendId)?.record();
    // One entry per backend at most: a zero is kept rather than deleted.
    this.#heldBy.set(lease.backendId, this.held(lease.backendId) - 1);
    this.#o.view.released(lease);
    this.#o.store.release(lease).then(
      () => this.#pumpIfWaiting(lease.backendId),
      (err: unknown) => {
        // The lease expires by itself in the store.
        this.#o.onStoreError(err);
        this.#pumpIfWaiting(lease.backendId);
      },
    );
  }

  /** `#pump` when someone waits here: with nobody waiting it would find nobody, at an async call a release. */
  #pumpIfWaiting(backendId: string): void {
    if (this.#queues.get(backendId)!.waiting > 0) void this.#pump(backendId);
  }

  /** Refuses every waiter with `err` and stops renewing. Held leases are released by their requests. */
  close(err: Error): void {
    this.#closedWith = err;
    for (const queue of this.#queues.values()) queue.rejectAll(err);
    for (const tickets of this.#tickets.values()) for (const waiter of [...tickets.values()]) this.#leave(waiter, err);
    for (const timer of this.#polls.values()) timer.cancel();
    this.#polls.clear();
    this.#counting?.cancel();
    this.#unwatchGrants?.();
    for (const timer of this.#retry.values()) timer.cancel();
    this.#retry.clear();
    this.#renewal?.cancel();
    this.#renewal = undefined;
  }

  /**
   * A slot through the store's shared queue: at once when free, else after the ticket is granted.
   * Undefined when the store failed: the request then queues here, as with a store that does not
   * queue, and the store serves it from whatever state it has.
   */
  async #acquireShared(shared: QueueingStore, request: SlotRequest): Promise<Lease | undefined> {
    const { backend, signal } = request;
    const tickets = this.#tickets.get(backend.id)!;
    const refusal = this.#queues.get(backend.id)!.refusal(request.tag, tickets.size);
    if (refusal) throw refusal;
    if (signal?.aborted) throw clientAborted();
    const id = `${this.#owner}.${(this.#nextTicket++).toString(36)}`;
    let lease: Lease | undefined;
    try {
      lease = await this.#queueTicket(shared, id, request);
    } catch (err) {
      this.#o.onStoreError(err);
      return undefined;
    }
    if (this.#closedWith) {
      if (lease) await shared.release(lease).catch(this.#o.onStoreError);
      else void this.#withdraw(backend.id, id);
      throw this.#closedWith;
    }
    if (lease) return this.#hold(lease);
    return new Promise<Lease>((resolve, reject) => {
      const enqueuedMs = this.#o.clock.now();
      const waiter: TicketWaiter = {
        id,
        request,
        backendId: backend.id,
        resolve,
        reject,
        timer: this.#o.clock.setTimer(() => this.#leave(waiter, queueTimeout(this.#o.clock.now() - enqueuedMs)), this.#o.maxQueueMs),
        signal,
        onAbort: () => this.#leave(waiter, clientAborted()),
      };
      signal?.addEventListener('abort', waiter.onAbort);
      tickets.set(id, waiter);
      this.#pollLater(backend.id);
    });
  }

  #queueTicket(shared: QueueingStore, id: string, request: SlotRequest): Promise<Lease | undefined> {
    return shared.acquireOrQueue(request.backend.id, this.#limit(request.backend, request.tag, request.promptTokens ?? 0), this.#o.leaseTtlMs, {
      id,
      owner: this.#owner,
      ownerTtlMs: this.#ownerTtlMs(),
      latestStartInMs: request.priority - this.#o.clock.now(),
      tag: request.tag,
      // With tenant counters, the store orders as this replica's queues do: by tenant unless urgent.
      tenant: this.#o.fairShare ? request.tenant : undefined,
      urgentWithinMs: this.#o.fairShare ? this.#o.urgentWithinMs : undefined,
    });
  }

  /** A waiter leaves the shared queue (timed out, its client gone, or closing): its ticket is withdrawn. */
  #leave(waiter: TicketWaiter, err: Error): void {
    if (!this.#settle(waiter)) return;
    waiter.reject(err);
    void this.#withdraw(waiter.backendId, waiter.id);
  }

  /** Whether the waiter was still waiting; it is not any more. */
  #settle(waiter: TicketWaiter): boolean {
    if (!this.#tickets.get(waiter.backendId)!.delete(waiter.id)) return false;
    waiter.timer.cancel();
    waiter.signal?.removeEventListener('abort', waiter.onAbort);
    return true;
  }

  async #withdraw(backendId: string, ticketId: string): Promise<void> {
    try {
      // Granted meanwhile: the slot is this replica's, and goes back to the queue through release.
      const lease = await this.#shared!.withdraw(backendId, ticketId);
      if (lease) this.release(this.#hold(lease));
    } catch (err) {
      // A ticket left behind is dropped when this replica stops taking grants, or granted and never taken (its lease then expires).
      this.#o.onStoreError(err);
    }
  }

  /**
   * Takes the grants made to this replica's tickets on a backend (one call per backend at a time),
   * and queues again those the store no longer has (Redis restarted empty or failed over). While the
   * shared queue is out of reach, its waiters move to this replica's own queue.
   */
  async #take(backendId: string): Promise<void> {
    const tickets = this.#tickets.get(backendId);
    if (!tickets) return;
    // A grant heard while a take runs may postdate its script: take once more when it ends.
    if (this.#taking.has(backendId)) return void this.#takeAgain.add(backendId);
    const shared = this.#shared!;
    if (!shared.queueing) {
      for (const waiter of [...tickets.values()]) this.#waitHere(waiter);
      return;
    }
    this.#taking.add(backendId);
    try {
      const { grants, missing } = await shared.takeGrants(this.#owner, this.#ownerTtlMs(), backendId, [...tickets.keys()]);
      for (const { ticketId, lease } of grants) {
        const waiter = tickets.get(ticketId);
        this.#hold(lease);
        if (waiter && this.#settle(waiter)) waiter.resolve(lease);
        else this.release(lease);
      }
      for (const id of missing) {
        const waiter = tickets.get(id);
        if (!waiter) continue;
        const lease = await this.#queueTicket(shared, id, waiter.request);
        if (!lease) continue;
        this.#hold(lease);
        if (this.#settle(waiter)) waiter.resolve(lease);
        else this.release(lease);
      }
    } catch (err) {
      this.#o.onStoreError(err);
    } finally {
      this.#taking.delete(backendId);
      if (this.#takeAgain.delete(backendId)) void this.#take(backendId);
    }
  }

  /** Moves a waiter from the shared queue to this replica's: it keeps its promise, and starts its wait again. */
  #waitHere(waiter: TicketWaiter): void {
    if (!this.#settle(waiter)) return;
    this.#acquireHere(waiter.request).then(waiter.resolve, waiter.reject);
  }

  /** While requests of this replica wait in the shared queue, takes grants every RETRY_MS: a missed grant message costs that much at most. */
  #pollLater(backendId: string): void {
    if (this.#polls.has(backendId) || this.#closedWith) return;
    this.#polls.set(
      backendId,
      this.#o.clock.setTimer(async () => {
        await this.#take(backendId);
        this.#polls.delete(backendId);
        if (this.#tickets.get(backendId)!.size > 0) this.#pollLater(backendId);
      }, RETRY_MS),
    );
  }

  /** Counts the shared queues every RETRY_MS, for placement's view of how many wait where. */
  #countLater(): void {
    this.#counting = this.#o.clock.setTimer(() => {
      const shared = this.#shared!;
      (shared.queueing ? shared.queued([...this.#queues.keys()]) : Promise.resolve(new Map<string, number>())).then(
        (counts) => {
          this.#sharedQueued.clear();
          for (const [id, n] of counts) this.#sharedQueued.set(id, n);
        },
        this.#o.onStoreError,
      ).finally(() => {
        if (!this.#closedWith) this.#countLater();
      });
    }, RETRY_MS);
  }

  /** How long this replica's tickets outlive its last call: long enough for a few missed polls. */
  #ownerTtlMs(): number {
    return Math.max(4 * RETRY_MS, Math.min(this.#o.leaseTtlMs, 10_000));
  }

  async #try(backend: Backend, tag: string | undefined, promptTokens: number): Promise<Lease | undefined> {
    try {
      return await this.#o.store.tryAcquire(backend.id, this.#limit(backend, tag, promptTokens), this.#o.leaseTtlMs, tag);
    } catch (err) {
      this.#o.onStoreError(err);
      return undefined;
    }
  }

  #limit(backend: Backend, tag: string | undefined, promptTokens: number): number {
    const limit = this.#o.limit;
    return limit ? Math.max(1, Math.min(backend.maxConcurrency, Math.floor(limit(backend, tag, promptTokens)))) : backend.maxConcurrency;
  }

  #hold(lease: Lease): Lease {
    this.#held.add(lease);
    this.#heldBy.set(lease.backendId, this.held(lease.backendId) + 1);
    this.#o.view.acquired(lease);
    this.#renewal ??= this.#o.clock.setTimer(() => void this.#renew(), this.#o.leaseTtlMs / 3);
    return lease;
  }

  /** Admits waiters while the store grants slots; one pump per backend at a time. */
  async #pump(backendId: string): Promise<void> {
    // After close nobody waits (close refuses the waiters, acquire refuses newcomers): a pump then finds nobody.
    if (this.#pumping.has(backendId)) return;
    const queue = this.#queues.get(backendId)!;
    const backend = this.#backends.get(backendId)!;
    this.#pumping.add(backendId);
    try {
      let waiter: Waiter | undefined;
      while ((waiter = queue.next())) {
        const lease = await this.#try(backend, waiter.tag, waiter.promptTokens);
        if (!lease) {
          this.#retryLater(backendId);
          return;
        }
        if (this.#closedWith) {
          await this.#o.store.release(lease).catch(this.#o.onStoreError);
          return;
        }
        // The waiter may have left while the store answered: then the slot goes to the next one.
        if (queue.admit(waiter, this.#hold(lease))) continue;
        this.release(lease);
        return;
      }
    } finally {
      this.#pumping.delete(backendId);
    }
  }

  #retryLater(backendId: string): void {
    if (this.#retry.has(backendId)) return;
    this.#retry.set(
      backendId,
      this.#o.clock.setTimer(() => {
        this.#retry.delete(backendId);
        void this.#pump(backendId);
      }, RETRY_MS),
    );
  }

  async #renew(): Promise<void> {
    this.#renewal = undefined;
    const leases: Lease[] = [];
    for (const lease of this.#held) if (!this.#lost.has(lease)) leases.push(lease);
    const kept = await Promise.all(leases.map((lease) => this.#o.store.renew(lease, this.#o.leaseTtlMs).catch((err: unknown) => (this.#o.onStoreError(err), true))));
    kept.forEach((ok, i) => {
      const lease = leases[i]!;
      if (ok || !this.#held.has(lease)) return;
      this.#lost.add(lease);
      this.#o.onLeaseLost(lease);
    });
    if (this.#held.size > this.#lost.size && !this.#closedWith) this.#renewal ??= this.#o.clock.setTimer(() => void this.#renew(), this.#o.leaseTtlMs / 3);
  }
}
