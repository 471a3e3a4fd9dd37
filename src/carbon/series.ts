/**
 * Grid carbon intensity as a step function of time, parsed from the two CSV shapes we read:
 * Electricity Maps hourly exports and the FREESH authors' 5-minute multi-site series.
 */
export interface CarbonSeries {
  /** Intensity (gCO2e/kWh) in force at `timeMs` after the series' start; the series repeats past its end. */
  at(timeMs: number): number;
  /** Length of one step (ms). */
  readonly stepMs: number;
  readonly values: readonly number[];
}

export function stepSeries(values: readonly number[], stepMs: number): CarbonSeries {
  if (values.length === 0) throw new RangeError('a carbon series needs at least one value');
  const frozen = Object.freeze([...values]);
  return Object.freeze({
    stepMs,
    values: frozen,
    at(timeMs: number): number {
      const i = Math.floor(timeMs / stepMs) % frozen.length;
      return frozen[i < 0 ? i + frozen.length : i]!;
    },
  });
}

export function constantSeries(gramsPerKWh: number): CarbonSeries {
  return stepSeries([gramsPerKWh], 3_600_000);
}

export interface ElectricityMapsOptions {
  /** `lca` (life-cycle, default) or `direct` emissions. */
  readonly basis?: 'lca' | 'direct';
  /** First hour to use, as an ISO time matching the export's `Datetime (UTC)` column (e.g. `2023-11-16T18:00Z`). Default: the first row. */
  readonly start?: string;
}

/** An Electricity Maps hourly export (`Datetime (UTC),...,Carbon Intensity gCO₂eq/kWh (direct),... (LCA),...`). */
export function parseElectricityMapsCsv(text: string, options: ElectricityMapsOptions = {}): CarbonSeries {
  const lines = text.split(/\r?\n/).filter((l) => l.trim() !== '');
  const header = splitCsv(lines[0] ?? '');
  const wanted = options.basis === 'direct' ? '(direct)' : '(LCA)';
  const column = header.findIndex((h) => h.startsWith('Carbon Intensity') && h.endsWith(wanted));
  const timeColumn = header.findIndex((h) => h.startsWith('Datetime'));
  if (column === -1 || timeColumn === -1) throw new Error(`not an Electricity Maps export: no \`Datetime\` or \`Carbon Intensity ... ${wanted}\` column`);
  const rows = lines.slice(1).map((line, i) => {
    const cells = splitCsv(line);
    const value = Number(cells[column]);
    if (!Number.isFinite(value)) throw new Error(`row ${i + 2}: carbon intensity is not a number: ${JSON.stringify(cells[column])}`);
    return { time: Date.parse(`${cells[timeColumn]!.replace(' ', 'T')}Z`), value };
  });
  let first = 0;
  if (options.start !== undefined) {
    const start = Date.parse(options.start);
    first = rows.findIndex((r) => r.time >= start);
    if (first === -1) throw new Error(`start ${options.start} is after the series ends`);
  }
  return stepSeries([...rows.slice(first), ...rows.slice(0, first)].map((r) => Math.max(0, r.value)), 3_600_000);
}

export interface FreeshSeriesOptions {
  /** First 5-minute step to use (0-287). Default 0. */
  readonly startStep?: number;
}

/**
 * The FREESH authors' 3-site series: one column per site, one row per 5 minutes. Its units are not
 * stated and some values are negative (they look like marginal emission rates): negatives are
 * clamped to 0, and the values are best read as relative weights between sites.
 */
export function parseFreeshCarbonCsv(text: string, options: FreeshSeriesOptions = {}): CarbonSeries[] {
  const lines = text.split(/\r?\n/).filter((l) => l.trim() !== '');
  const width = splitCsv(lines[0] ?? '').length;
  const columns: number[][] = Array.from({ length: width }, () => []);
  lines.slice(1).forEach((line, i) => {
    const cells = splitCsv(line);
    for (let c = 0; c < width; c++) {
      const value = Number(cells[c]);
      if (!Number.isFinite(value)) throw new Error(`row ${i + 2}, column ${c + 1}: not a number: ${JSON.stringify(cells[c])}`);
      columns[c]!.push(Math.max(0, value));
    }
  });
  const start = options.startStep ?? 0;
  return columns.map((values) => stepSeries([...values.slice(start), ...values.slice(0, start)], 300_000));
}

/** Splits one CSV line (no quoted commas in the files we read; quotes are stripped). */
function splitCsv(line: string): string[] {
  return line.split(',').map((cell) => cell.trim().replace(/^"|"$/g, ''));
}
