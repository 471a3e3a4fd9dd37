import { channel } from 'node:diagnostics_channel';

/**
 * What happens to a backend's health and to requests on it, published on `freesh:backend`
 * (node:diagnostics_channel) so logs, metrics and the dashboard can follow it without the router
 * knowing who listens. Publishing costs nothing when nobody subscribes.
 */
export type BackendEvent =
  /** Taken out of rotation: by a failed probe, or by passive outlier detection. `untilMs` on the router's clock. */
  | { readonly kind: 'ejected'; readonly backendId: string; readonly reason: string; readonly untilMs?: number | undefined }
  /** Back in rotation (a probe passed or the ejection ended). */
  | { readonly kind: 'restored'; readonly backendId: string; readonly reason: string }
  /** A request's attempt failed before its first byte and is tried on another backend. */
  | { readonly kind: 'failover'; readonly backendId: string; readonly requestId: string; readonly reason: string }
  /** A response ended early: the backend dropped the stream after the client had its first byte. */
  | { readonly kind: 'stream-dropped'; readonly backendId: string; readonly requestId: string; readonly reason: string }
  /** The per-backend circuit breaker changed state. */
  | { readonly kind: 'circuit'; readonly backendId: string; readonly state: 'open' | 'half-open' | 'closed'; readonly reason: string };

export const backendChannel = channel('freesh:backend');

export function publishBackendEvent(event: BackendEvent): void {
  if (backendChannel.hasSubscribers) backendChannel.publish(event);
}
