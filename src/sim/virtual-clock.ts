import TinyQueue from 'tinyqueue';
import type { Clock, Timer } from '../clock.js';

interface Pending {
  readonly atMs: number;
  readonly seq: number;
  readonly fn: () => void;
  cancelled: boolean;
}

/**
 * A clock that moves only when told to: timers fire in time order (ties in the order they were
 * set) as `advanceTo` or `runNext` passes them. Drives the router and simulated instances on
 * simulated time, with no real sleeping.
 */
export class VirtualClock implements Clock {
  #nowMs: number;
  #seq = 0;
  readonly #timers = new TinyQueue<Pending>([], (a, b) => a.atMs - b.atMs || a.seq - b.seq);

  constructor(startMs = 0) {
    this.#nowMs = startMs;
  }

  now(): number {
    return this.#nowMs;
  }

  setTimer(fn: () => void, delayMs: number): Timer {
    const pending: Pending = { atMs: this.#nowMs + Math.max(0, delayMs), seq: this.#seq++, fn, cancelled: false };
    this.#timers.push(pending);
    return { cancel: () => void (pending.cancelled = true) };
  }

  /** Time of the next live timer, or undefined when none is set. */
  nextAtMs(): number | undefined {
    while (this.#timers.length > 0 && this.#timers.peek()!.cancelled) this.#timers.pop();
    return this.#timers.peek()?.atMs;
  }

  /** Moves to the next timer and fires it; false when no timer is left. */
  runNext(): boolean {
    const at = this.nextAtMs();
    if (at === undefined) return false;
    const pending = this.#timers.pop()!;
    this.#nowMs = Math.max(this.#nowMs, at);
    pending.fn();
    return true;
  }

  /** Fires every timer due up to `timeMs`, in order, then sets the time to `timeMs`. */
  advanceTo(timeMs: number): void {
    for (let at = this.nextAtMs(); at !== undefined && at <= timeMs; at = this.nextAtMs()) this.runNext();
    this.#nowMs = Math.max(this.#nowMs, timeMs);
  }

  advance(deltaMs: number): void {
    this.advanceTo(this.#nowMs + deltaMs);
  }
}
