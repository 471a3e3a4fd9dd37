/**
 * An exponentially decaying rate: add amounts as they happen, read amount per second. With time
 * constant τ, an amount added Δt ago weighs exp(−Δt/τ); a steady stream of r per second reads r.
 */
export class RateMeter {
  readonly #tauMs: number;
  #value = 0;
  #atMs = 0;

  constructor(tauMs = 30_000) {
    this.#tauMs = tauMs;
  }

  add(amount: number, nowMs: number): void {
    this.#value = this.#decayed(nowMs) + amount;
    this.#atMs = nowMs;
  }

  /** Amount per second. */
  perSecond(nowMs: number): number {
    return (this.#decayed(nowMs) * 1000) / this.#tauMs;
  }

  #decayed(nowMs: number): number {
    // Stryker disable next-line ConditionalExpression: the shortcut only skips Math.exp: 0 × exp(…) is 0
    return this.#value === 0 ? 0 : this.#value * Math.exp(-Math.max(0, nowMs - this.#atMs) / this.#tauMs);
  }
}
