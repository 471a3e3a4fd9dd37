import { FreeshError } from '../../src/errors.js';
import type { Placement } from '../../src/pipeline/lifecycle.js';
import { heuristicPredictor } from '../../src/predict/predictor.js';
import { createRouter, type RouterCall, type RouterOptions } from '../../src/router.js';
import { VirtualClock } from '../../src/sim/virtual-clock.js';
import { type HeldTransport, heldTransport } from './held-transport.js';

export interface SendOptions {
  /** `x-freesh-tenant`. Default `default`. */
  readonly tenant?: string;
  /** `x-freesh-slo`. Default `batch`. */
  readonly slo?: string;
  /** Words of padding after the label: a longer prompt. Default 0. */
  readonly words?: number;
  readonly maxTokens?: number;
}

/**
 * A router over one backend with a single slot, on a virtual clock, whose upstream answers only when
 * the test says (see heldTransport). The heuristic predictor gives every request `p50Tokens`, capped
 * by its max_tokens. Nothing here depends on timing: the order in which the upstream receives
 * requests is the order the router admitted them.
 */
export function oneSlotRouter(options: Partial<RouterOptions> & { readonly p50Tokens?: number } = {}) {
  const { p50Tokens = 10, ...rest } = options;
  const clock = new VirtualClock();
  const upstream: HeldTransport = heldTransport();
  const router = createRouter({
    sites: [{ id: 's', carbon: { gramsPerKWh: 100 } }],
    backends: [{ id: 'b', site: 's', baseURL: 'http://127.0.0.1:9/v1', models: ['m'], maxConcurrency: 1 }],
    plan: { enabled: false },
    predictor: heuristicPredictor({ p50Tokens, p90Tokens: p50Tokens }),
    clock,
    transport: upstream.transport,
    ...rest,
  });

  const call = (label: string, o: SendOptions = {}): RouterCall => {
    const headers: Record<string, string> = { 'x-freesh-tenant': o.tenant ?? 'default', 'x-freesh-slo': o.slo ?? 'batch' };
    const content = [label, ...Array<string>(o.words ?? 0).fill('word')].join(' ');
    const body = { model: 'm', messages: [{ role: 'user', content }], ...(o.maxTokens ? { max_tokens: o.maxTokens } : {}) };
    return { endpoint: 'chat.completions', body: Buffer.from(JSON.stringify(body)), header: (name) => headers[name] };
  };

  /** Runs event-loop turns until `check` holds (the router's work here is all promise callbacks). */
  const turns = async (check: () => boolean | Promise<boolean>, what: string): Promise<void> => {
    for (let i = 0; i < 1_000; i++) {
      if (await check()) return;
      await new Promise((resolve) => setImmediate(resolve));
    }
    throw new Error(`never happened: ${what}`);
  };

  return {
    router,
    clock,
    upstream,
    call,
    /**
     * Sends a request as a client would and reads its whole response. Resolves with the status the
     * client got (the error's status when the router refused or failed it).
     */
    async send(label: string, o: SendOptions = {}): Promise<number> {
      try {
        const routed = await router.dispatch(call(label, o));
        await new Promise<void>((resolve, reject) => {
          routed.body.once('end', resolve);
          routed.body.once('error', reject);
          routed.body.resume();
        });
        return routed.status;
      } catch (err) {
        if (err instanceof FreeshError) return err.status;
        throw err;
      }
    },
    /** Where the router would place a request now, and its queue priority there: its latest start (deadline − predicted service). */
    async latestStartMs(label: string, o: SendOptions = {}): Promise<{ placement: Placement; latestStartMs: number }> {
      const placement = await router.decide(router.parse(call(label, o)));
      return { placement, latestStartMs: placement.deadlineMs - (placement.cost.e2eMs - placement.cost.waitMs) };
    },
    /** Resolves once the upstream has received `n` requests in all. */
    sent: (n: number) => turns(() => upstream.calls.length >= n, `${n} requests sent upstream`),
    /** Resolves once `n` requests wait in the backend's queue, as /metrics reports it. */
    queued: (n: number) =>
      turns(async () => (await router.metrics.registry.metrics()).includes(`freesh_queue_length{backend="b"} ${n}\n`), `${n} requests queued`),
    /**
     * Answers every request as it reaches the upstream, in the order the router sends them, each with
     * `outputTokens` — until `sends` have all settled.
     */
    async serveAll(sends: readonly Promise<number>[], outputTokens = 10): Promise<number[]> {
      let settled = false;
      const all = Promise.all(sends).finally(() => (settled = true));
      let answered = upstream.calls.filter((c) => c.answered).length;
      while (!settled) {
        await turns(() => settled || upstream.calls.length > answered, 'the next request sent upstream');
        if (upstream.calls.length > answered) upstream.calls[answered++]!.complete(outputTokens);
      }
      return all;
    },
  };
}
