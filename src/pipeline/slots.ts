import type { CancelSignal } from '../cancel.js';
import type { Clock, Timer } from '../clock.js';
import { AdmissionQueue, type Waiter } from '../queue/admission-queue.js';
import type { FairShare } from '../queue/fair-share.js';
import type { ClusterView } from '../state/cluster-view.js';
import type { Lease, StateStore } from '../state/store.js';
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
  readonly fairShare: FairShare | undefined;
  readonly urgentWithinMs: number;
  /** Queue priorities are latest start times: waiters past theirs go behind the others. */
  readonly demoteLate: boolean;
  /** Told of a store failure: a refused acquisition is retried, a lost renewal only counted. */
  readonly onStoreError: (err: unknown) => void;
  /** Told when a held lease could not be renewed (it had expired in the store: its slot may be reused). */
  readonly onLeaseLost: (lease: Lease) => void;
}

export interface SlotRequest {
  readonly backend: Backend;
  /** Queue order (lower first). */
  readonly priority: number;
  readonly tenant: string;
  /** The lease's tag (the request's SLO class). */
  readonly tag: string;
  readonly signal?: CancelSignal | undefined;
}

/**
 * How long a waiter with nothing freed locally waits before the store is asked again: slots freed by
 * other replicas, and leases that expired, are noticed this late at most.
 */
const RETRY_MS = 250;

const NO_QUEUE = Object.freeze({ waiting: 0 });

/**
 * Slots on backends: the store grants them (atomically, at most `maxConcurrency` per backend across
 * every replica); a request refused waits in the backend's admission queue, and each slot this
 * router frees — or, every RETRY_MS, the store — admits the queue's next waiter. Held leases are
 * renewed while their requests run, so a long stream keeps counting as in flight, and a router that
 * dies frees its slots when its leases expire.
 */
export class Slots {
  readonly #o: SlotsOptions;
  readonly #queues = new Map<string, AdmissionQueue>();
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

  constructor(options: SlotsOptions) {
    this.#o = options;
    for (const backend of options.backends) {
      this.#backends.set(backend.id, backend);
      this.#queues.set(
        backend.id,
        new AdmissionQueue({
          backendId: backend.id,
          maxLength: options.maxQueueLength,
          maxWaitMs: options.maxQueueMs,
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
    return this.#queues.get(backendId)?.waiting ?? 0;
  }

  /** A backend's queue length as a live field, for a reader that looks it up once. */
  queue(backendId: string): { readonly waiting: number } {
    return this.#queues.get(backendId) ?? NO_QUEUE;
  }

  /** Leases this router holds on a backend. */
  held(backendId: string): number {
    return this.#heldBy.get(backendId) ?? 0;
  }

  /** Per backend: leases held and requests waiting here. */
  *samples(): Iterable<readonly [string, { active: number; waiting: number }]> {
    for (const [id, queue] of this.#queues) yield [id, { active: this.held(id), waiting: queue.waiting }];
  }

  /**
   * A slot on the backend: at once when the store grants one and nobody here waits for it, else
   * after waiting in its queue. Rejects with 429 (queue full), 504 (waited too long) or 499 (signal),
   * or, once closed, with the error it was closed with.
   */
  async acquire(request: SlotRequest): Promise<Lease> {
    if (this.#closedWith) throw this.#closedWith;
    const { backend } = request;
    const queue = this.#queues.get(backend.id)!;
    if (queue.waiting === 0) {
      const lease = await this.#try(backend, request.tag);
      if (this.#closedWith) {
        // Closed while the store answered: nobody waits for the slot any more.
        if (lease) await this.#o.store.release(lease).catch(this.#o.onStoreError);
        throw this.#closedWith;
      }
      if (lease) return this.#hold(lease);
    }
    const waiting = queue.wait({ priority: request.priority, tenant: request.tenant, tag: request.tag, signal: request.signal });
    // A slot may have freed while this request asked; and with nothing freed here, ask again later.
    this.#pump(backend.id);
    return waiting;
  }

  /** Gives a slot back and admits the next waiter. */
  release(lease: Lease): void {
    if (!this.#held.delete(lease)) return;
    this.#lost.delete(lease);
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
    for (const timer of this.#retry.values()) timer.cancel();
    this.#retry.clear();
    this.#renewal?.cancel();
    this.#renewal = undefined;
  }

  async #try(backend: Backend, tag: string | undefined): Promise<Lease | undefined> {
    try {
      return await this.#o.store.tryAcquire(backend.id, backend.maxConcurrency, this.#o.leaseTtlMs, tag);
    } catch (err) {
      this.#o.onStoreError(err);
      return undefined;
    }
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
        const lease = await this.#try(backend, waiter.tag);
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
