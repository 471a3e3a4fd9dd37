/** Argument checks and plan-delivery helpers shared by the state stores, so every store answers alike. */

export function isDurationMs(value: number): boolean {
  return value > 0 && value < Number.POSITIVE_INFINITY;
}

/** The RangeError every store rejects a bad argument with, naming it. */
export function rejectArgument(name: string, expected: string, value: number): Promise<never> {
  return Promise.reject(new RangeError(`Expected \`${name}\` to be ${expected}, got \`${value}\``));
}

/** The RangeError for the first take whose capacity, rate or amount is not a number the buckets can hold. */
export function checkTakes(takes: readonly { readonly capacity: number; readonly perSecond: number; readonly amount: number }[]): Promise<never> | undefined {
  for (const [i, take] of takes.entries()) {
    if (!(take.capacity > 0 && take.capacity < Number.POSITIVE_INFINITY)) return rejectArgument(`takes[${i}].capacity`, 'a positive finite number', take.capacity);
    if (!(take.perSecond > 0 && take.perSecond < Number.POSITIVE_INFINITY)) return rejectArgument(`takes[${i}].perSecond`, 'a positive finite number', take.perSecond);
    if (!Number.isFinite(take.amount)) return rejectArgument(`takes[${i}].amount`, 'a finite number', take.amount);
  }
  return undefined;
}

/** The default for a `watchPlans` listener that throws: a process warning, so it is seen without taking the process down. */
export function warnListenerError(error: unknown): void {
  process.emitWarning(error instanceof Error ? error : new Error(String(error)), { code: 'FREESH_PLAN_LISTENER' });
}

/** Freezes a plan every reader shares. */
export function deepFreeze<T>(value: T): T {
  if (typeof value === 'object' && value !== null && !Object.isFrozen(value)) {
    for (const inner of Object.values(value)) deepFreeze(inner);
    Object.freeze(value);
  }
  return value;
}
