/**
 * Virtual token counters per tenant (the VTC idea: service = input tokens + 2 × output tokens).
 * Among requests that are not urgent, the tenant that has received the least service goes next, so a
 * tenant flooding the gateway cannot starve the others. A tenant that starts waiting again is lifted
 * to the least counter among tenants already waiting, so idle time banks no credit.
 */
export class FairShare {
  readonly #counters = new Map<string, number>();
  readonly #waiting = new Map<string, number>();

  /** Service units per output token; input tokens count 1. */
  static readonly OUTPUT_WEIGHT = 2;

  /**
   * Counters kept at most; past this, tenants with nothing waiting are forgotten (tenant names come
   * from a request header, so their number is the client's to choose). Forgetting is harmless: a
   * returning tenant is lifted to the least waiting counter anyway.
   */
  static readonly MAX_TENANTS = 10_000;

  counter(tenant: string): number {
    return this.#counters.get(tenant) ?? 0;
  }

  /** Adds service (may be negative, to correct a prediction once the true length is known). */
  charge(tenant: string, units: number): void {
    this.#counters.set(tenant, Math.max(0, this.counter(tenant) + units));
    if (this.#counters.size > FairShare.MAX_TENANTS) {
      for (const name of this.#counters.keys()) if (!this.#waiting.has(name)) this.#counters.delete(name);
    }
  }

  /** Tenants with a counter. */
  get size(): number {
    return this.#counters.size;
  }

  /** A request of `tenant` starts waiting in some queue. */
  startWaiting(tenant: string): void {
    const n = this.#waiting.get(tenant) ?? 0;
    if (n === 0) {
      // Every tenant in #waiting has a request waiting, and `tenant` has none yet (stopWaiting deletes at zero).
      let least = Number.POSITIVE_INFINITY;
      for (const other of this.#waiting.keys()) least = Math.min(least, this.counter(other));
      if (least !== Number.POSITIVE_INFINITY) this.#counters.set(tenant, Math.max(this.counter(tenant), least));
    }
    this.#waiting.set(tenant, n + 1);
  }

  /** A waiting request of `tenant` was admitted or withdrawn. */
  stopWaiting(tenant: string): void {
    const n = (this.#waiting.get(tenant) ?? 1) - 1;
    if (n > 0) this.#waiting.set(tenant, n);
    else this.#waiting.delete(tenant);
  }
}
