/**
 * A worker thread that solves planning MILPs, so a solve (a few hundred ms to a second) never
 * stalls the router's event loop. Receives `{ id, lp }`, answers `{ id, solution }` or `{ id, error }`.
 */
import { parentPort } from 'node:worker_threads';
import { loadSolver, solveLp } from './planner.js';

const port = parentPort;
if (port) {
  port.on('message', (message: { id: number; lp: string }) => {
    loadSolver().then(
      (highs) => {
        try {
          port.postMessage({ id: message.id, solution: solveLp(highs, message.lp) });
        } catch (err) {
          port.postMessage({ id: message.id, error: String(err) });
        }
      },
      (err: unknown) => port.postMessage({ id: message.id, error: String(err) }),
    );
  });
}
