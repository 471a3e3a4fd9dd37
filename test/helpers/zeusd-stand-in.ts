import { createServer, type Server } from 'node:http';

/**
 * A stand-in for zeusd speaking its HTTP API: parameters in the query string, `gpu_ids` a list,
 * write routes answering an empty 200, reads answering JSON keyed by GPU id, 400 with `{"error"}`
 * for an unknown GPU. It records every request and keeps per-GPU locks, power and energy.
 */
export interface StandIn {
  server: Server;
  readonly calls: string[];
  readonly locks: Map<number, [number, number]>;
  powerMw: Map<number, number>;
  energyMj: Map<number, number>;
  failWith: number | undefined;
}

export function zeusdStandIn(gpuCount: number): StandIn {
  const state: StandIn = { server: undefined as unknown as Server, calls: [], locks: new Map(), powerMw: new Map(), energyMj: new Map(), failWith: undefined };
  state.server = createServer((req, res) => {
    const url = new URL(req.url!, 'http://x');
    state.calls.push(`${req.method} ${url.pathname}${url.search}`);
    const json = (status: number, body: unknown) => {
      res.writeHead(status, { 'content-type': 'application/json' }).end(JSON.stringify(body));
    };
    if (state.failWith !== undefined) return json(state.failWith, { error: 'NVML error: Insufficient Permissions' });
    const ids = (url.searchParams.get('gpu_ids') ?? Array.from({ length: gpuCount }, (_, i) => i).join(',')).split(',').map(Number);
    if (ids.some((id) => !(id >= 0 && id < gpuCount))) return json(400, { error: `GPU ${ids.find((id) => !(id < gpuCount))} not found` });
    const path = url.pathname;
    if (req.method === 'POST' && path === '/gpu/set_gpu_locked_clocks') {
      const min = Number(url.searchParams.get('min_clock_mhz'));
      const max = Number(url.searchParams.get('max_clock_mhz'));
      if (url.searchParams.get('block') === null || !Number.isInteger(min) || !Number.isInteger(max)) return json(400, { error: 'bad query' });
      for (const id of ids) state.locks.set(id, [min, max]);
      return res.writeHead(200).end();
    }
    if (req.method === 'POST' && path === '/gpu/reset_gpu_locked_clocks') {
      for (const id of ids) state.locks.delete(id);
      return res.writeHead(200).end();
    }
    if (req.method === 'GET' && path === '/gpu/get_power') {
      return json(200, { timestamp_ms: Date.now(), power_mw: Object.fromEntries(ids.map((id) => [id, state.powerMw.get(id) ?? 0])) });
    }
    if (req.method === 'GET' && path === '/gpu/get_cumulative_energy') {
      return json(200, Object.fromEntries(ids.map((id) => [id, { energy_mj: state.energyMj.get(id) ?? 0 }])));
    }
    json(404, { error: 'not found' });
  });
  return state;
}

