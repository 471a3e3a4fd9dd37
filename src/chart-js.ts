import { readFile } from 'node:fs/promises';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';

/** Why a page has no charts where chart.js is not installed. */
export const CHART_JS_MISSING = 'chart.js is not installed (an optional peer dependency of freesh: npm install chart.js)';

let bundle: Promise<string | undefined> | undefined;
const told = new Set<string>();

/**
 * Chart.js's browser bundle from node_modules, read once per process, or undefined where it is not
 * installed: it is an optional peer dependency, kept off the router's install, for the pages that
 * draw charts (the simulator's HTML report, the dashboard). `page` names the page in the one warning
 * each page gets on stderr when it is missing.
 */
export async function chartJsBundle(page: string): Promise<string | undefined> {
  bundle ??= (async () => {
    let entry: string;
    try {
      entry = createRequire(import.meta.url).resolve('chart.js');
    } catch (err) {
      if ((err as { code?: string }).code !== 'MODULE_NOT_FOUND') throw err;
      return undefined;
    }
    // The package exports no path to its browser bundle; it sits beside the CommonJS entry.
    return readFile(join(dirname(entry), 'chart.umd.min.js'), 'utf8');
  })();
  const found = await bundle;
  if (found === undefined && !told.has(page)) {
    told.add(page);
    console.warn(`freesh: the ${page} has no charts: ${CHART_JS_MISSING}`);
  }
  return found;
}
