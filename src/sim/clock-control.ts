/**
 * The MIAD clock controller against fixed clocks, on the savings matrix's simulated fleet: the GPU
 * agent itself runs in the simulator (RunSpec.miad), reading the real router's SLO signal and plans
 * from their shared store and setting the simulated instances' clocks.
 *
 * Rows: least-loaded routing at a fixed maximum clock, at the lowest planned level (0.7), and under
 * MIAD (floor: half the maximum, the frequency model's lowest); freesh with its plan's clocks fixed
 * (the matrix's freesh row) and freesh with MIAD above the plan's clocks as floors.
 */
import { DEFAULT_PREDICTION_SIGMA } from './harness.js';
import { matrixRun } from './matrix.js';
import type { RunSpec } from './simulator.js';

export const CLOCK_RUNS = ['fixed-max', 'fixed-0.7', 'miad', 'freesh', 'freesh+miad'] as const;

export function clockRun(name: string, timeScale = 1, sigma = DEFAULT_PREDICTION_SIGMA, plan: Parameters<typeof matrixRun>[3] = {}): RunSpec {
  switch (name) {
    case 'fixed-max':
      return { name, policy: 'least-loaded', prediction: sigma, clockFraction: 1 };
    case 'fixed-0.7':
      return { name, policy: 'least-loaded', prediction: sigma, clockFraction: 0.7 };
    case 'miad':
      return { name, policy: 'least-loaded', prediction: sigma, miad: {} };
    case 'freesh':
      return matrixRun('freesh', timeScale, sigma, plan);
    case 'freesh+miad':
      return { ...matrixRun('freesh', timeScale, sigma, plan), name, miad: {} };
    default:
      throw new RangeError(`unknown clock-control run \`${name}\` (${CLOCK_RUNS.join(', ')})`);
  }
}
