/**
 * Trace-driven evaluation: replays one hour of Azure production traffic through the router on the
 * FREESH fleet, for every policy, with carbon series from the shared data folder.
 *
 *   npm run bench:trace [-- --utilisation 0.6 --trace code --carbon freesh --parked idle --policies baseline,freesh]
 *
 * Parked instances are powered off by default here (`--parked idle` keeps them at idle power).
 */
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { runSimulateCommand } from '../src/sim/command.js';

const root = resolve(dirname(fileURLToPath(import.meta.url)), '../..');
const { values } = parseArgs({
  options: {
    utilisation: { type: 'string', default: '0.6' },
    trace: { type: 'string', default: 'conv' },
    carbon: { type: 'string', default: 'electricitymaps' },
    policies: { type: 'string' },
    seed: { type: 'string', default: '1' },
    parked: { type: 'string', default: 'off' },
    data: { type: 'string', default: resolve(root, '../shared/data') },
  },
});
const utilisation = Number(values.utilisation);
if (!(utilisation > 0 && utilisation < 2)) throw new Error(`--utilisation must be in (0, 2), got ${values.utilisation}`);
if (values.parked !== 'idle' && values.parked !== 'off') throw new Error(`--parked must be idle or off, got ${values.parked}`);
if (values.carbon !== 'electricitymaps' && values.carbon !== 'freesh') throw new Error(`--carbon must be electricitymaps or freesh, got ${values.carbon}`);

await runSimulateCommand({
  tracePath: join(values.data, 'traces', `azure-llm-2023-${values.trace}.csv`),
  dataDir: values.data,
  utilisation,
  carbon: values.carbon,
  policies: values.policies?.split(',').map((p) => p.trim()).filter(Boolean),
  seed: Number(values.seed),
  parkedPower: values.parked,
  outDir: join(root, 'bench', 'out'),
});
