/**
 * Reading the fetch edge's answers, for the adapters that translate them (`freesh/hono`,
 * `freesh/openai`): the routing decision the `x-freesh-*` headers report, and the router's own
 * error answers as opposed to a backend's answer relayed.
 */
import { ERROR_CODES, type ErrorCode, type ErrorType, FreeshError } from '../../src/index.js';

/** What the router decided for a request it forwarded, as its response headers report it. */
export interface FreeshDecision {
  /** The backend that served it (`x-freesh-backend`). */
  readonly backend: string;
  /** That backend's site (`x-freesh-site`). */
  readonly site: string;
  /** The predicted output length, median (`x-freesh-predicted-tokens`). */
  readonly predictedTokens: number;
  /** The estimated energy of serving it there, joules (`x-freesh-energy-j`). */
  readonly energyJ: number;
  /** The estimated emissions of serving it there, grams CO2e (`x-freesh-carbon-g`). */
  readonly carbonG: number;
  /** The request's id (`x-request-id`), as sent to the backend. */
  readonly requestId: string;
}

/** The decision a response reports, or undefined when the router answered it itself (no backend served it). */
export function decisionOf(headers: Headers): FreeshDecision | undefined {
  const backend = headers.get('x-freesh-backend');
  if (backend === null) return undefined;
  return {
    backend,
    site: headers.get('x-freesh-site') ?? '',
    predictedTokens: Number(headers.get('x-freesh-predicted-tokens')),
    energyJ: Number(headers.get('x-freesh-energy-j')),
    carbonG: Number(headers.get('x-freesh-carbon-g')),
    requestId: headers.get('x-request-id') ?? '',
  };
}

/**
 * True for an error the router answered itself (a refused body, a full queue, no backend, a backend
 * that failed after the router's own failover): a status of 400 or more on a response no backend
 * served. A backend's own 4xx, relayed, carries `x-freesh-backend` and is not one.
 */
export function isRouterError(response: Response): boolean {
  return response.status >= 400 && !response.headers.has('x-freesh-backend');
}

const CODES: ReadonlySet<string> = new Set(ERROR_CODES);

/** The router's error from the OpenAI-shaped body of one of its error answers, or undefined if the body is not one. */
export function parseRouterError(status: number, text: string): FreeshError | undefined {
  let body: unknown;
  try {
    body = JSON.parse(text);
  } catch {
    return undefined;
  }
  const error = (body as { error?: { message?: unknown; type?: unknown; param?: unknown; code?: unknown } } | null)?.error;
  if (!error || typeof error.message !== 'string' || typeof error.code !== 'string' || !CODES.has(error.code)) return undefined;
  return new FreeshError(error.message, {
    code: error.code as ErrorCode,
    status,
    type: error.type as ErrorType,
    param: typeof error.param === 'string' ? error.param : undefined,
  });
}
