import type { Placement } from '../pipeline/lifecycle.js';
import type { RoutingRequest } from '../types.js';

/**
 * How a backend's admission queue is ordered. Contract: `priority` is pure and cheap; lower is
 * admitted first; equal priorities keep arrival order.
 */
export interface QueueOrder {
  readonly name: string;
  priority(request: RoutingRequest, placement: Placement): number;
  /**
   * Among waiters that are not yet urgent, the tenant with the least service goes first (virtual
   * token counters), so a flooding tenant cannot starve the others. The router keeps the counters
   * when this is set and `fairness.enabled` is on.
   */
  readonly tenantFair: boolean;
  /**
   * `priority` is the latest time the request can start and still meet its deadline: once it has
   * passed, the request waits behind every waiter that can still make it (least-laxity orders).
   */
  readonly latestStart: boolean;
}

/** First come, first served. */
export const fifoOrder: QueueOrder = Object.freeze<QueueOrder>({
  name: 'fifo',
  priority: (request) => request.arrivalMs,
  tenantFair: false,
  latestStart: false,
});

/**
 * Least laxity first: by latest start time, deadline − predicted service. It orders as laxity
 * (deadline − now − service) does at every instant, without re-sorting as time passes.
 */
export const leastLaxityOrder: QueueOrder = Object.freeze<QueueOrder>({
  name: 'least-laxity',
  priority: latestStartMs,
  tenantFair: false,
  latestStart: true,
});

/** Least laxity first among urgent waiters; otherwise the tenant with the least service. */
export const leastLaxityFairOrder: QueueOrder = Object.freeze<QueueOrder>({
  name: 'least-laxity-fair',
  priority: latestStartMs,
  tenantFair: true,
  latestStart: true,
});

function latestStartMs(_request: RoutingRequest, placement: Placement): number {
  return placement.deadlineMs - (placement.cost.e2eMs - placement.cost.waitMs);
}
