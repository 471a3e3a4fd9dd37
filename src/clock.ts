/**
 * Time and randomness are injected everywhere in scheduling code, so the simulator can drive the
 * very same router on a virtual clock with a seeded generator.
 */
export interface Timer {
  cancel(): void;
}

export interface Clock {
  /** Monotonic time in milliseconds; only differences are meaningful. */
  now(): number;
  /** Calls `fn` once after `delayMs` of this clock's time. */
  setTimer(fn: () => void, delayMs: number): Timer;
}

/** A generator of uniform numbers in [0, 1). */
export type Rng = () => number;

export const systemClock: Clock = Object.freeze({
  now: () => performance.now(),
  setTimer(fn: () => void, delayMs: number): Timer {
    const handle = setTimeout(fn, Math.max(0, delayMs));
    handle.unref?.();
    return { cancel: () => clearTimeout(handle) };
  },
});

/**
 * A clock whose milliseconds run `1 / timeScale` times faster than wall time (timeScale 0.01: one
 * simulated second passes in 10 real ms). Used by simulated backends so tests run fast.
 */
export function scaledClock(timeScale: number): Clock {
  if (!(timeScale > 0)) throw new RangeError(`Expected \`timeScale\` to be a positive number, got \`${timeScale}\``);
  const origin = performance.now();
  return Object.freeze({
    now: () => (performance.now() - origin) / timeScale,
    setTimer(fn: () => void, delayMs: number): Timer {
      const handle = setTimeout(fn, Math.max(0, delayMs * timeScale));
      return { cancel: () => clearTimeout(handle) };
    },
  });
}

/**
 * Seeded generator (mulberry32, a public-domain 32-bit generator): fast, and good enough to draw
 * workloads and break ties; not for anything cryptographic.
 */
export function seededRng(seed: number): Rng {
  let state = seed >>> 0;
  return function mulberry32(): number {
    state = (state + 0x6d2b79f5) >>> 0;
    let t = state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}
