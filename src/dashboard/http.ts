import { CHART_JS_MISSING, chartJsBundle } from '../chart-js.js';
import { dashboardDisabled } from '../errors.js';
import type { InfoResponse } from '../http/routes.js';
import type { Router } from '../router.js';
import { CLIENT_SCRIPT_HASH, dashboardPage } from './page.js';

/** The dashboard's routes in the shared route table (see http/routes.ts). */
export type DashboardRouteKind = 'dashboard' | 'dashboard-state' | 'dashboard-chart';

const NO_CHARTS = `Charts are off: ${CHART_JS_MISSING}. The tables below still update live.`;

/**
 * The page's security policy: scripts only from the proxy and the page's own (by its hash), data
 * only from the proxy — no request leaves it, and nothing injected into the page would run.
 */
const CSP = `default-src 'none'; script-src 'self' '${CLIENT_SCRIPT_HASH}'; style-src 'unsafe-inline'; connect-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'`;

/** Answers the dashboard's routes: 404 (as for any unknown path) while `dashboard.enabled` is off. */
export async function dashboardInfo(router: Router, kind: DashboardRouteKind, path: string): Promise<InfoResponse> {
  const dashboard = router.dashboard;
  if (!dashboard) {
    const body = dashboardDisabled(path).toBody();
    return { status: 404, headers: { 'content-type': 'application/json', 'content-length': String(Buffer.byteLength(body)) }, body };
  }
  if (kind === 'dashboard-state') return answer(200, 'application/json', JSON.stringify(dashboard.state()), { 'cache-control': 'no-store' });
  const bundle = await chartJsBundle('dashboard');
  if (kind === 'dashboard-chart') {
    if (bundle === undefined) return answer(404, 'text/javascript; charset=utf-8', `/* ${NO_CHARTS} */\n`, {});
    return answer(200, 'text/javascript; charset=utf-8', bundle, { 'cache-control': 'public, max-age=3600' });
  }
  return answer(200, 'text/html; charset=utf-8', dashboardPage({ chartJs: bundle !== undefined, missingNote: NO_CHARTS }), {
    'cache-control': 'no-store',
    'content-security-policy': CSP,
    'x-content-type-options': 'nosniff',
  });
}

function answer(status: number, contentType: string, body: string, extra: Record<string, string>): InfoResponse {
  return { status, headers: { 'content-type': contentType, 'content-length': String(Buffer.byteLength(body)), ...extra }, body };
}
