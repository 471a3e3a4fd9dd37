import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { Worker } from 'node:worker_threads';
import { type LpSolution, loadSolver, solveLp } from './planner.js';

/** Solves planning MILPs (CPLEX LP format). */
export interface Solver {
  /** Resolves once solves can start without further loading. */
  ready(): Promise<void>;
  solve(lp: string): Promise<LpSolution>;
  close(): Promise<void>;
}

/** Solves on the calling thread: deterministic in time, as the simulator needs; stalls the event loop while it runs. */
export function inThreadSolver(): Solver {
  return {
    ready: async () => void (await loadSolver()),
    solve: async (lp) => solveLp(await loadSolver(), lp),
    close: () => Promise.resolve(),
  };
}

const WORKER_FILE = fileURLToPath(new URL('./solver-worker.js', import.meta.url));

/**
 * Solves in a worker thread, started on first use and not keeping the process alive. Falls back
 * to the calling thread where the compiled worker file is absent (running from TypeScript sources).
 */
export function workerSolver(): Solver {
  if (!existsSync(WORKER_FILE)) return inThreadSolver();
  let worker: Worker | undefined;
  let nextId = 0;
  const waiting = new Map<number, { resolve: (s: LpSolution) => void; reject: (e: Error) => void }>();
  const start = (): Worker => {
    const w = new Worker(WORKER_FILE);
    w.unref();
    w.on('message', (message: { id: number; solution?: LpSolution; error?: string }) => {
      const entry = waiting.get(message.id);
      waiting.delete(message.id);
      if (message.solution) entry?.resolve(message.solution);
      else entry?.reject(new Error(message.error ?? 'solver failed'));
    });
    w.on('error', (err) => {
      for (const entry of waiting.values()) entry.reject(err);
      waiting.clear();
      worker = undefined;
    });
    return w;
  };
  return {
    ready: () => Promise.resolve(),
    solve(lp) {
      worker ??= start();
      const id = nextId++;
      return new Promise((resolve, reject) => {
        waiting.set(id, { resolve, reject });
        worker!.postMessage({ id, lp });
      });
    },
    async close() {
      const w = worker;
      worker = undefined;
      if (w) await w.terminate();
    },
  };
}
