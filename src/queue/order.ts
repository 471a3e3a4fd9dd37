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
}

/** First come, first served. */
export const fifoOrder: QueueOrder = Object.freeze<QueueOrder>({
  name: 'fifo',
  priority: (request) => request.arrivalMs,
  tenantFair: false,
});

/**
 * Least laxity first: by latest start time, deadline − predicted service. It orders as laxity
 * (deadline − now − service) does at every instant, without re-sorting as time passes.
 */
export const leastLaxityOrder: QueueOrder = Object.freeze<QueueOrder>({
  name: 'least-laxity',
  priority: latestStartMs,
  tenantFair: false,
});

/** Least laxity first among urgent waiters; otherwise the tenant with the least service. */
export const leastLaxityFairOrder: QueueOrder = Object.freeze<QueueOrder>({
  name: 'least-laxity-fair',
  priority: latestStartMs,
  tenantFair: true,
});

function latestStartMs(_request: RoutingRequest, placement: Placement): number {
  return placement.deadlineMs - (placement.cost.e2eMs - placement.cost.waitMs);
}
