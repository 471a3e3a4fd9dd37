import { describe, expect, it } from 'vitest';
import { LatencyCalibration } from '../../src/cost/latency-calibration.js';
import { FairShareAccounting, LatencyCalibrator, PlannerFeed, PredictorFeedback, PrefillTracker, PREFILL_LOAD_TAU_MS } from '../../src/pipeline/bookkeepers.js';
import type { CompletionEvent, Placement } from '../../src/pipeline/lifecycle.js';
import type { PoolPlanner } from '../../src/plan/pool-planner.js';
import type { Predictor } from '../../src/predict/predictor.js';
import { FairShare } from '../../src/queue/fair-share.js';
import type { RequestType } from '../../src/request/request-type.js';
import type { CostEstimate, RoutingRequest } from '../../src/types.js';

const request = (tenant: string, promptTokens: number): RoutingRequest => ({ tenant, promptTokens, arrivalMs: 5_000 }) as RoutingRequest;

function placement(backendId: string, o: { p50?: number; cost?: Partial<CostEstimate>; requestType?: RequestType } = {}): Placement {
  return {
    backend: { id: backendId },
    prediction: { outputTokensP50: o.p50 ?? 100, outputTokensP90: 2 * (o.p50 ?? 100), source: 'test' },
    cost: { waitMs: 0, ttftMs: 50, tbtMs: 10, e2eMs: 0, e2eP90Ms: 0, energyJ: 0, carbonG: 0, ...o.cost },
    requestType: o.requestType ?? 'chat-short',
  } as Placement;
}

function completion(p: Placement, outputTokens: number | undefined, serviceMs: number, outcome: CompletionEvent['outcome'] = 'completed'): CompletionEvent {
  return { request: request('t', 10), placement: p, nowMs: 0, outcome, outputTokens, serviceMs };
}

describe('the router’s bookkeepers', () => {
  it('each has its own name, which labels its errors in the metrics', () => {
    const planner = {} as PoolPlanner;
    const names = [new PrefillTracker([]), new LatencyCalibrator(), new FairShareAccounting(), new PlannerFeed(planner), new PredictorFeedback({} as Predictor)].map((p) => p.name);
    expect(names.every((name) => /^[a-z-]+$/.test(name))).toBe(true);
    expect(new Set(names).size).toBe(names.length);
  });
});

describe('PrefillTracker', () => {
  it('counts the prompt tokens sent to each backend as its load and backlog, and no other backend’s', () => {
    const tracker = new PrefillTracker(['a', 'b']);
    tracker.send({ request: request('t', 3_000), placement: placement('a'), nowMs: 1_000, priority: 0 });
    // Just sent: the whole prompt is ahead of the next one, and the rate is tokens over τ.
    expect(tracker.backlogTokens('a', 1_000, 1, 0)).toBe(3_000);
    expect(tracker.promptTokensPerS('a', 1_000)).toBeCloseTo((3_000 * 1_000) / PREFILL_LOAD_TAU_MS);
    // Draining at one token a ms: a third left after 2 s; the rate decays with τ.
    expect(tracker.backlogTokens('a', 3_000, 1, 0)).toBe(1_000);
    expect(tracker.promptTokensPerS('a', 1_000 + PREFILL_LOAD_TAU_MS)).toBeCloseTo(((3_000 * 1_000) / PREFILL_LOAD_TAU_MS) * Math.exp(-1));
    expect(tracker.backlogTokens('b', 1_000, 1, 0)).toBe(0);
    expect(tracker.promptTokensPerS('b', 1_000)).toBe(0);
  });

  it('a prompt sent with a priority is ahead only of prompts of that priority or after', () => {
    const tracker = new PrefillTracker(['a']);
    tracker.send({ request: request('t', 800), placement: placement('a'), nowMs: 0, priority: 5 });
    expect(tracker.backlogTokens('a', 0, 1, 1)).toBe(0);
    expect(tracker.backlogTokens('a', 0, 1, 5)).toBe(800);
  });

  it('a backend’s live reader sees what is sent after it was taken', () => {
    const tracker = new PrefillTracker(['a']);
    const a = tracker.of('a')!;
    tracker.send({ request: request('t', 500), placement: placement('a'), nowMs: 0, priority: 0 });
    expect(a.backlogTokens(0, 1, 0)).toBe(500);
    expect(a.promptTokensPerS(0)).toBe(tracker.promptTokensPerS('a', 0));
  });

  it('a backend it does not track reads empty, and sends to it are ignored', () => {
    const tracker = new PrefillTracker(['a']);
    expect(() => tracker.send({ request: request('t', 500), placement: placement('zzz'), nowMs: 0, priority: 0 })).not.toThrow();
    expect(tracker.of('zzz')).toBeUndefined();
    expect(tracker.promptTokensPerS('zzz', 0)).toBe(0);
    expect(tracker.backlogTokens('zzz', 0, 1, 0)).toBe(0);
  });
});

describe('LatencyCalibrator', () => {
  it('observes each completion’s modelled service for its true length (ttft − wait + (n − 1) × tbt) against the time it took', () => {
    const calibrator = new LatencyCalibrator();
    const expected = new LatencyCalibration();
    const p = placement('a', { cost: { waitMs: 200, ttftMs: 260, tbtMs: 12 } });
    for (const [tokens, serviceMs] of [
      [300, 9_000],
      [1, 400],
      [0, 500],
      [40, 300],
    ] as const) {
      calibrator.complete(completion(p, tokens, serviceMs));
      expected.observe('a', 260 - 200 + Math.max(0, tokens - 1) * 12, serviceMs);
      expect(calibrator.factor('a')).toBe(expected.factor('a'));
    }
    expect(calibrator.factor('a')).not.toBe(1);
    expect(calibrator.factor('b')).toBe(1);
  });

  it('a backend that took exactly the modelled time keeps its factor', () => {
    const calibrator = new LatencyCalibrator();
    const p = placement('a', { cost: { waitMs: 100, ttftMs: 150, tbtMs: 10 } });
    calibrator.complete(completion(p, 201, 50 + 200 * 10));
    expect(calibrator.factor('a')).toBe(1);
  });

  it('learns only from completed requests whose length is known', () => {
    const calibrator = new LatencyCalibrator();
    const p = placement('a');
    for (const outcome of ['upstream-status', 'upstream-dropped', 'client-abort'] as const) calibrator.complete(completion(p, 300, 60_000, outcome));
    calibrator.complete(completion(p, undefined, 60_000));
    expect(calibrator.factor('a')).toBe(1);
    calibrator.complete(completion(p, 300, 60_000));
    expect(calibrator.factor('a')).toBeGreaterThan(1);
  });

  it('a live reader taken before or after completions reads the current factor', () => {
    const calibrator = new LatencyCalibrator();
    const early = calibrator.of('a');
    expect(early.factor).toBe(1);
    expect(calibrator.of('a')).toBe(early);
    calibrator.complete(completion(placement('a'), 300, 60_000));
    expect(early.factor).toBe(calibrator.factor('a'));
    expect(early.factor).toBeGreaterThan(1);
    calibrator.complete(completion(placement('b'), 300, 60_000));
    const late = calibrator.of('b');
    expect(late.factor).toBe(calibrator.factor('b'));
    expect(late.factor).toBeGreaterThan(1);
  });
});

describe('FairShareAccounting', () => {
  it('charges a tenant its prompt and predicted output at admission, then corrects by the true length', () => {
    const fair = new FairShareAccounting();
    const p = placement('a', { p50: 100 });
    fair.admit({ request: request('t', 50), placement: p, nowMs: 0 });
    expect(fair.counters.counter('t')).toBe(50 + FairShare.OUTPUT_WEIGHT * 100);
    fair.complete({ request: request('t', 50), placement: p, nowMs: 0, outcome: 'completed', outputTokens: 130, serviceMs: 1 });
    expect(fair.counters.counter('t')).toBe(50 + FairShare.OUTPUT_WEIGHT * 130);
    expect(fair.counters.counter('other')).toBe(0);
  });

  it('a completion of unknown length keeps the predicted charge; an abandoned request is refunded', () => {
    const fair = new FairShareAccounting();
    const p = placement('a', { p50: 100 });
    fair.admit({ request: request('t', 50), placement: p, nowMs: 0 });
    fair.complete({ request: request('t', 50), placement: p, nowMs: 0, outcome: 'upstream-dropped', outputTokens: undefined, serviceMs: 1 });
    expect(fair.counters.counter('t')).toBe(250);
    fair.admit({ request: request('t', 20), placement: p, nowMs: 0 });
    expect(fair.counters.counter('t')).toBe(250 + 220);
    fair.abort({ request: request('t', 20), placement: p, nowMs: 0, outcome: 'upstream-status' });
    expect(fair.counters.counter('t')).toBe(250);
  });
});

describe('PlannerFeed', () => {
  it('feeds the planner every arrival (type, prompt, predicted output, time) and every placement', () => {
    const observed: unknown[][] = [];
    const assigned: unknown[][] = [];
    const planner = { observe: (...args: unknown[]) => observed.push(args), assign: (...args: unknown[]) => assigned.push(args) } as unknown as PoolPlanner;
    const feed = new PlannerFeed(planner);
    const p = placement('a', { p50: 70, requestType: 'chat-long' as RequestType });
    feed.arrive(request('t', 900), p.prediction, 'chat-long' as RequestType);
    feed.place({ request: request('t', 900), placement: p, nowMs: 0 });
    expect(observed).toEqual([['chat-long', 900, 70, 5_000]]);
    expect(assigned).toEqual([['chat-long', 'a']]);
  });
});

describe('PredictorFeedback', () => {
  it('tells the predictor the true length of completed requests only', () => {
    const seen: [RoutingRequest, number][] = [];
    const predictor = { observe: (r: RoutingRequest, n: number) => seen.push([r, n]) } as unknown as Predictor;
    const feedback = new PredictorFeedback(predictor);
    const p = placement('a');
    const done = completion(p, 42, 1);
    const aborted = completion(p, 43, 1, 'client-abort');
    const unknown = completion(p, undefined, 1);
    for (const event of [done, aborted, unknown]) feedback.complete(event);
    expect(seen).toHaveLength(1);
    expect(seen[0]![0]).toBe(done.request);
    expect(seen[0]![1]).toBe(42);
  });

  it('a predictor that does not learn is left alone', () => {
    const feedback = new PredictorFeedback({} as Predictor);
    expect(() => feedback.complete(completion(placement('a'), 42, 1))).not.toThrow();
  });
});
