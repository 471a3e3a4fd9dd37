/**
 * The per-GPU clock controller: multiplicative increase, additive decrease (MIAD). Every period it
 * reads one number, the SLO headroom of the requests in flight on that GPU, and
 *   - raises the SM clock multiplicatively when the headroom is below `riskThreshold` (an SLO is at
 *     risk: get back fast),
 *   - lowers it additively when the headroom is above `roomThreshold` (probe down slowly: decode is
 *     memory-bound, so each step saves power and costs little time),
 *   - holds it in between (the hysteresis band) and for `holdAfterRaise` periods after a raise,
 * always between the plan's floor and the maximum, on a clock the GPU supports, and never moving more
 * than `maxChangePerPeriodMHz` in one period. Pure logic: the agent and the simulator run this code.
 *
 * Defaults. FREESH publishes no controller constants; these were chosen from the H200's clock table
 * (test/fixtures/nvidia-smi: 345–1980 MHz in 15 MHz steps) and the frequency model's range
 * (src/cost/frequency.ts: down to half the maximum clock), and are to be re-tuned on the simulator:
 *   - periodMs 1000: the period; nvidia-smi takes ~0.1–0.5 s per call, so much faster
 *     polling would be dominated by it, and TBT is judged over seconds of tokens anyway.
 *   - increaseFactor 1.3: from the model's floor (990 MHz on an H200) to the maximum in three
 *     periods (990 → 1275 → 1650 → 1980, each snapped down to a supported clock), so a risk is
 *     answered within ~3 s.
 *   - decreaseStepMHz 30 (two H200 steps): from the maximum to that floor in 33 periods (~half a
 *     minute), a small part of a planning interval (minutes), so most of a plan's time is spent low,
 *     while each step changes decode time by well under 1% (frequency model: 5% sensitivity).
 *   - riskThreshold 0.1 / roomThreshold 0.3: raise when the tightest request has less than 10% of
 *     its budget left, lower only above 30%. The band is wider than one decrease step's effect on
 *     TBT, so a lowering step cannot push the headroom from "room" straight to "risk".
 *   - holdAfterRaise 3 periods: after a raise, wait for the effect to show in measured TBT (a few
 *     tokens' worth plus the router's publishing delay) before probing down again.
 *   - maxChangePerPeriodMHz 600: bounds one step, so a single noisy reading cannot swing the clock
 *     across the whole range. With the defaults on an H200 it does not bind (a ×1.3 raise from
 *     1980 would be +594); it guards configurations with a larger increaseFactor. A new plan's
 *     higher floor is applied at once, not rate-limited: the floor is the plan's requirement.
 *   - staleAfterMs 3000: a signal older than three periods means the router stopped publishing; the
 *     controller treats it as a risk (the SLO side is the safe side without information).
 *   - idle 'lower': with nothing in flight there is nothing to protect, so the clock keeps probing down.
 */

export interface MiadConfig {
  readonly periodMs: number;
  readonly increaseFactor: number;
  readonly decreaseStepMHz: number;
  /** Headroom below this raises the clock. */
  readonly riskThreshold: number;
  /** Headroom above this lowers the clock; between the two the clock holds. */
  readonly roomThreshold: number;
  readonly maxChangePerPeriodMHz: number;
  /** Periods to hold after a raise before lowering again. */
  readonly holdAfterRaise: number;
  /** A signal older than this counts as a risk. */
  readonly staleAfterMs: number;
  /** What to do when no request is in flight. */
  readonly idle: 'lower' | 'hold';
  /** The planner's floor for this GPU (MHz); snapped up to a supported clock. */
  readonly floorMHz: number;
  /** Highest clock to use (MHz); snapped down to a supported clock. Default: the highest supported. */
  readonly maxMHz: number;
  /** The GPU's supported SM clocks, ascending (any order accepted). */
  readonly supportedMHz: readonly number[];
}

export const MIAD_DEFAULTS = Object.freeze({
  periodMs: 1000,
  increaseFactor: 1.3,
  decreaseStepMHz: 30,
  riskThreshold: 0.1,
  roomThreshold: 0.3,
  maxChangePerPeriodMHz: 600,
  holdAfterRaise: 3,
  staleAfterMs: 3000,
  idle: 'lower' as const,
});

export type MiadConfigInput = Partial<Omit<MiadConfig, 'supportedMHz' | 'floorMHz'>> & {
  readonly supportedMHz: readonly number[];
  readonly floorMHz: number;
};

/** Fills defaults, sorts the clock list and checks every constant; throws RangeError on a bad one. */
export function miadConfig(input: MiadConfigInput): MiadConfig {
  const supported = [...new Set(input.supportedMHz)].sort((a, b) => a - b);
  if (supported.length === 0 || supported.some((c) => !Number.isInteger(c) || c <= 0)) throw new RangeError('supportedMHz must be a non-empty list of positive integers');
  const config: MiadConfig = Object.freeze({ ...MIAD_DEFAULTS, maxMHz: supported.at(-1)!, ...input, supportedMHz: Object.freeze(supported) });
  const positive = (name: keyof MiadConfig, value: number) => {
    if (!(Number.isFinite(value) && value > 0)) throw new RangeError(`${name} must be a positive number, got ${value}`);
  };
  positive('periodMs', config.periodMs);
  positive('decreaseStepMHz', config.decreaseStepMHz);
  positive('maxChangePerPeriodMHz', config.maxChangePerPeriodMHz);
  positive('staleAfterMs', config.staleAfterMs);
  positive('floorMHz', config.floorMHz);
  positive('maxMHz', config.maxMHz);
  if (!(config.increaseFactor > 1 && Number.isFinite(config.increaseFactor))) throw new RangeError(`increaseFactor must be above 1, got ${config.increaseFactor}`);
  if (!(config.riskThreshold < config.roomThreshold)) throw new RangeError(`riskThreshold (${config.riskThreshold}) must be below roomThreshold (${config.roomThreshold})`);
  if (!(Number.isInteger(config.holdAfterRaise) && config.holdAfterRaise >= 0)) throw new RangeError(`holdAfterRaise must be a non-negative integer, got ${config.holdAfterRaise}`);
  if (config.idle !== 'lower' && config.idle !== 'hold') throw new RangeError(`idle must be 'lower' or 'hold', got ${String(config.idle)}`);
  return config;
}

/**
 * What the router published for the requests in flight on one GPU. `headroom` is the least, over
 * those requests, of the share of their latency budget still unused (see tbtHeadroom,
 * laxityHeadroom): 1 = nothing used, 0 = exactly on target, negative = late. null: nothing in flight.
 */
export interface SloSignal {
  readonly headroom: number | null;
  /** How old the published value is (ms). */
  readonly ageMs: number;
}

/** Share of the TBT target left: 1 − observed / target. */
export function tbtHeadroom(targetMs: number, observedMs: number): number {
  return 1 - observedMs / targetMs;
}

/** Share of a request's latency budget left: laxity (deadline − now − predicted service) / budget. */
export function laxityHeadroom(laxityMs: number, budgetMs: number): number {
  return laxityMs / budgetMs;
}

/** The tightest of several headrooms; null when there are none. */
export function leastHeadroom(values: Iterable<number>): number | null {
  let least: number | null = null;
  for (const value of values) if (least === null || value < least) least = value;
  return least;
}

export interface MiadState {
  readonly clockMHz: number;
  /** Periods still to hold after the last raise. */
  readonly holdPeriods: number;
}

export type MiadAction = 'raise' | 'lower' | 'hold';
export type MiadReason = 'risk' | 'stale' | 'room' | 'idle' | 'band' | 'cooldown' | 'at-bound';

export interface MiadStep {
  readonly state: MiadState;
  readonly clockMHz: number;
  readonly action: MiadAction;
  readonly reason: MiadReason;
}

/** The effective [floor, max] on supported clocks. A floor above the max yields the max (the SLO side). */
export function bounds(config: MiadConfig): { floorMHz: number; maxMHz: number } {
  const list = config.supportedMHz;
  const maxMHz = snapDown(list, config.maxMHz) ?? list[0]!;
  const floorMHz = Math.min(snapUp(list, config.floorMHz) ?? list.at(-1)!, maxMHz);
  return { floorMHz, maxMHz };
}

/** Lowest supported clock ≥ mhz, if any (list ascending). */
export function snapUp(list: readonly number[], mhz: number): number | undefined {
  return list.find((c) => c >= mhz);
}

/** Highest supported clock ≤ mhz, if any (list ascending). */
export function snapDown(list: readonly number[], mhz: number): number | undefined {
  for (let i = list.length - 1; i >= 0; i--) if (list[i]! <= mhz) return list[i];
  return undefined;
}

/** Where a controller starts: the maximum (no SLO is put at risk before the first signal). */
export function initialState(config: MiadConfig): MiadState {
  return { clockMHz: bounds(config).maxMHz, holdPeriods: 0 };
}

/** One control period. */
export function miadNext(config: MiadConfig, state: MiadState, signal: SloSignal): MiadStep {
  const { floorMHz, maxMHz } = bounds(config);
  const list = config.supportedMHz;
  // Bring the current clock onto the list and into bounds first (a new plan may have moved the floor).
  const current = Math.min(maxMHz, Math.max(floorMHz, snapDown(list, state.clockMHz) ?? floorMHz));
  const hold = Math.max(0, state.holdPeriods - 1);
  const step = (clockMHz: number, action: MiadAction, reason: MiadReason, holdPeriods: number): MiadStep => ({
    state: { clockMHz, holdPeriods }, clockMHz, action: clockMHz === current && action !== 'hold' ? 'hold' : action, reason,
  });

  const stale = signal.ageMs > config.staleAfterMs;
  const risk = stale || (signal.headroom !== null && signal.headroom < config.riskThreshold);
  if (risk) {
    const reason: MiadReason = stale ? 'stale' : 'risk';
    if (current >= maxMHz) return step(current, 'hold', 'at-bound', config.holdAfterRaise);
    const limit = current + config.maxChangePerPeriodMHz;
    // Multiplicative target, at least one supported step up, at most the rate limit and the max.
    const target = Math.min(current * config.increaseFactor, limit, maxMHz);
    const next = Math.max(snapDown(list, target) ?? current, snapUp(list, current + 1) ?? current);
    return step(Math.min(next, maxMHz, snapDown(list, limit) ?? maxMHz), 'raise', reason, config.holdAfterRaise);
  }

  const room = signal.headroom === null ? config.idle === 'lower' : signal.headroom > config.roomThreshold;
  if (!room) return step(current, 'hold', signal.headroom === null ? 'idle' : 'band', hold);
  if (state.holdPeriods > 0) return step(current, 'hold', 'cooldown', hold);
  if (current <= floorMHz) return step(current, 'hold', 'at-bound', 0);
  const target = Math.max(current - Math.min(config.decreaseStepMHz, config.maxChangePerPeriodMHz), floorMHz);
  // Additive target, snapped up so a decrease never undershoots it; at least one supported step down.
  const next = Math.min(snapUp(list, target) ?? current, snapDown(list, current - 1) ?? current);
  return step(Math.max(next, floorMHz), 'lower', signal.headroom === null ? 'idle' : 'room', 0);
}

/** The controller bound to one configuration: `next(state, signal)`. */
export function miadController(input: MiadConfigInput): { readonly config: MiadConfig; initial(): MiadState; next(state: MiadState, signal: SloSignal): MiadStep } {
  const config = miadConfig(input);
  return Object.freeze({ config, initial: () => initialState(config), next: (state: MiadState, signal: SloSignal) => miadNext(config, state, signal) });
}
