import type { Prediction, RoutingRequest } from '../types.js';

/**
 * FREESH's four request types: prompt short/long × response short/long. A response is long at
 * ≥ 444 predicted tokens (FREESH's threshold). The prompt threshold is not published; we use 1,024
 * tokens, near the median of the Azure conversation trace (1,020), so both prompt classes are populous.
 */
export type RequestType = 'SS' | 'SL' | 'LS' | 'LL';
export const REQUEST_TYPES: readonly RequestType[] = ['SS', 'SL', 'LS', 'LL'];
export const LONG_PROMPT_TOKENS = 1024;
export const LONG_RESPONSE_TOKENS = 444;

export function requestType(promptTokens: number, predictedOutputTokens: number): RequestType {
  const prompt = promptTokens >= LONG_PROMPT_TOKENS ? 'L' : 'S';
  const response = predictedOutputTokens >= LONG_RESPONSE_TOKENS ? 'L' : 'S';
  return `${prompt}${response}` as RequestType;
}

export function typeOf(request: RoutingRequest, prediction: Prediction): RequestType {
  return requestType(request.promptTokens, prediction.outputTokensP50);
}
