import { CHART_JS_MISSING, chartJsBundle } from '../chart-js.js';
import type { RunMetrics } from './evaluate.js';
import type { Evaluation } from './harness.js';

/** The figures of one run that the benchmark's last JSON line carries. */
export type HeadlineFigures = Pick<RunMetrics, 'energyKWh' | 'carbonKg' | 'sloAttainment' | 'jain' | 'vtcGap' | 'ttftP99Ms' | 'completed' | 'rejected'>;

/** The headline figures per run, as the benchmark's last JSON line carries them. */
export function headline(evaluation: Evaluation): { trace: string; utilisation: number; policies: Record<string, HeadlineFigures> } {
  const policies: Record<string, HeadlineFigures> = {};
  for (const { spec, metrics: m } of evaluation.runs) {
    policies[spec.name] = {
      energyKWh: round(m.energyKWh, 3),
      carbonKg: round(m.carbonKg, 3),
      sloAttainment: round(m.sloAttainment, 4),
      jain: round(m.jain, 4),
      vtcGap: round(m.vtcGap, 4),
      ttftP99Ms: round(m.ttftP99Ms, 0),
      completed: m.completed,
      rejected: m.rejected,
    };
  }
  return { trace: evaluation.trace, utilisation: evaluation.utilisation, policies };
}

/** A markdown table of every run, with each figure's change against the first run (the baseline). */
export function markdownTable(evaluation: Evaluation): string {
  const base = evaluation.runs[0]?.metrics;
  const pct = (v: number, b: number | undefined) => (b === undefined || b === 0 || v === b ? '' : ` (${v > b ? '+' : ''}${(((v - b) / b) * 100).toFixed(1)}%)`);
  const pts = (v: number, b: number | undefined) => (b === undefined || v === b ? '' : ` (${v > b ? '+' : ''}${((v - b) * 100).toFixed(1)} pt)`);
  const rows = [
    '| policy | energy kWh | carbon kg | SLO attained | interactive | FREESH rule | Jain | VTC gap | TTFT p50/p99 ms | e2e p50/p99 s | done / refused | GPU-h active |',
    '|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|',
  ];
  for (const { spec, metrics: m } of evaluation.runs) {
    rows.push(
      `| ${spec.name} | ${m.energyKWh.toFixed(2)}${pct(m.energyKWh, base?.energyKWh)} | ${m.carbonKg.toFixed(2)}${pct(m.carbonKg, base?.carbonKg)} | ` +
        `${(m.sloAttainment * 100).toFixed(1)}%${pts(m.sloAttainment, base?.sloAttainment)} | ${((m.sloAttainmentByClass.interactive ?? Number.NaN) * 100).toFixed(1)}% | ` +
        `${(m.freeshSloAttainment * 100).toFixed(1)}% | ${m.jain.toFixed(3)} | ${m.vtcGap.toFixed(3)} | ${m.ttftP50Ms.toFixed(0)} / ${m.ttftP99Ms.toFixed(0)} | ` +
        `${(m.e2eP50Ms / 1000).toFixed(1)} / ${(m.e2eP99Ms / 1000).toFixed(1)} | ${m.completed} / ${m.rejected} | ${m.gpuHoursActive.toFixed(1)} |`,
    );
  }
  return rows.join('\n');
}

/** Everything but the per-request records, for the JSON file. */
export function evaluationJson(evaluation: Evaluation): unknown {
  return {
    trace: evaluation.trace,
    utilisation: evaluation.utilisation,
    rateMultiplier: evaluation.rateMultiplier,
    offeredRps: evaluation.offeredRps,
    capacityRps: evaluation.capacityRps,
    requests: evaluation.requests,
    runs: evaluation.runs.map(({ spec, metrics, result }) => ({
      name: spec.name,
      policy: typeof spec.policy === 'string' ? spec.policy : spec.policy.name,
      prediction: spec.prediction,
      metrics,
      samples: result.samples,
    })),
  };
}

/**
 * A self-contained HTML report: Chart.js is inlined, so the file opens anywhere without a network.
 * Without chart.js installed, the report has the table and notes and says why the charts are missing.
 */
export async function htmlReport(evaluation: Evaluation, notes: readonly string[] = []): Promise<string> {
  const bundle = await chartJsBundle('HTML report');
  const table = markdownTable(evaluation)
    .split('\n')
    .filter((line, i) => i !== 1)
    .map((line, i) => `<tr>${line.split('|').slice(1, -1).map((cell) => (i === 0 ? `<th>${escape(cell.trim())}</th>` : `<td>${escape(cell.trim())}</td>`)).join('')}</tr>`)
    .join('\n');
  return `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>freesh trace evaluation — ${escape(evaluation.trace)}</title>
<style>
body{font:14px/1.45 system-ui,sans-serif;margin:2rem auto;max-width:1200px;color:#111;padding:0 1rem}
table{border-collapse:collapse;font-size:12px;margin:1rem 0}td,th{border:1px solid #ddd;padding:4px 6px;text-align:right}td:first-child,th:first-child{text-align:left}
.missing{border:1px solid #f59e0b;background:#fffbeb;border-radius:8px;padding:.5rem .75rem}
.grid{display:grid;grid-template-columns:1fr 1fr;gap:1.5rem}.card{border:1px solid #e5e7eb;border-radius:8px;padding:.75rem}h2{font-size:16px;margin:.2rem 0 .5rem}
</style></head><body>
<h1>freesh trace evaluation</h1>
<p>Trace <b>${escape(evaluation.trace)}</b>: ${evaluation.requests} requests at ${evaluation.offeredRps.toFixed(2)} req/s
(×${evaluation.rateMultiplier.toFixed(2)} the recorded rate) against a fleet capacity of ${evaluation.capacityRps.toFixed(2)} req/s —
utilisation ${(evaluation.utilisation * 100).toFixed(0)}%.</p>
${notes.map((n) => `<p>${escape(n)}</p>`).join('\n')}
<table>${table}</table>
${bundle === undefined ? `<p class="missing">No charts: ${escape(CHART_JS_MISSING)}.</p>\n` : chartsHtml(evaluation, bundle)}</body></html>
`;
}

/** The chart cards and the scripts that draw them, Chart.js's bundle inlined. */
function chartsHtml(evaluation: Evaluation, bundle: string): string {
  const colours = ['#6b7280', '#2563eb', '#16a34a', '#dc2626', '#9333ea', '#ea580c', '#0891b2'];
  const runs = evaluation.runs.map(({ spec, result }, i) => {
    const done = result.records.filter((r) => r.doneMs !== undefined && r.firstTokenMs !== undefined && !r.rejected);
    const cdf = (values: number[]) => {
      values.sort((a, b) => a - b);
      const points = [];
      for (let q = 1; q <= 100; q++) points.push({ x: values[Math.min(values.length - 1, Math.ceil((q / 100) * values.length) - 1)] ?? 0, y: q / 100 });
      return points;
    };
    return {
      name: spec.name,
      colour: colours[i % colours.length],
      energy: result.samples.map((s) => ({ x: s.timeMs / 60_000, y: s.energyJ / 3.6e6 })),
      carbon: result.samples.map((s) => ({ x: s.timeMs / 60_000, y: s.carbonG / 1000 })),
      ttft: cdf(done.map((r) => r.firstTokenMs! - r.request.arrivalMs)),
      e2e: cdf(done.map((r) => (r.doneMs! - r.request.arrivalMs) / 1000)),
      sites: result.samples.map((s) => ({ t: s.timeMs / 60_000, sites: s.sites })),
    };
  });
  const siteIds = [...new Set(evaluation.runs[0]?.result.samples.flatMap((s) => s.sites.map((x) => x.id)) ?? [])];
  const data = JSON.stringify({ runs, siteIds }).replace(/</g, '\\u003c');
  return `<div class="grid">
<div class="card"><h2>Energy, cumulative (kWh)</h2><canvas id="energy"></canvas></div>
<div class="card"><h2>Carbon, cumulative (kg CO2e)</h2><canvas id="carbon"></canvas></div>
<div class="card"><h2>TTFT distribution (ms, log scale)</h2><canvas id="ttft"></canvas></div>
<div class="card"><h2>End-to-end latency distribution (s, log scale)</h2><canvas id="e2e"></canvas></div>
</div>
<h2 style="margin-top:1.5rem">Per-site power against carbon intensity</h2>
<div class="grid" id="sites"></div>
<script>${bundle}</script>
<script>
const DATA = ${data};
const line = (id, key, xTitle, yTitle, logX) => new Chart(document.getElementById(id), {
  type: 'line',
  data: { datasets: DATA.runs.map((r) => ({ label: r.name, data: r[key], borderColor: r.colour, pointRadius: 0, borderWidth: 1.5 })) },
  options: { animation: false, parsing: true, scales: { x: { type: logX ? 'logarithmic' : 'linear', title: { display: true, text: xTitle } }, y: { title: { display: true, text: yTitle } } } },
});
line('energy', 'energy', 'minutes', 'kWh');
line('carbon', 'carbon', 'minutes', 'kg CO2e');
line('ttft', 'ttft', 'TTFT (ms)', 'fraction of requests', true);
line('e2e', 'e2e', 'e2e (s)', 'fraction of requests', true);
for (const site of DATA.siteIds) {
  const card = document.createElement('div');
  card.className = 'card';
  card.innerHTML = '<h2>' + site + '</h2><canvas></canvas>';
  document.getElementById('sites').appendChild(card);
  const first = DATA.runs[0];
  const datasets = DATA.runs.map((r) => ({ label: r.name + ' kW', yAxisID: 'y', borderColor: r.colour, pointRadius: 0, borderWidth: 1.5,
    data: r.sites.map((s) => ({ x: s.t, y: (s.sites.find((x) => x.id === site)?.powerW ?? 0) / 1000 })) }));
  datasets.push({ label: 'gCO2e/kWh', yAxisID: 'y1', borderColor: '#111', borderDash: [4, 4], pointRadius: 0, borderWidth: 1,
    data: first.sites.map((s) => ({ x: s.t, y: s.sites.find((x) => x.id === site)?.gramsPerKWh ?? 0 })) });
  new Chart(card.querySelector('canvas'), { type: 'line', data: { datasets }, options: { animation: false, scales: {
    x: { type: 'linear', title: { display: true, text: 'minutes' } }, y: { title: { display: true, text: 'kW (facility)' } },
    y1: { position: 'right', grid: { drawOnChartArea: false }, title: { display: true, text: 'gCO2e/kWh' } } } } });
}
document.body.dataset.ready = 'true';
</script>
`;
}

function escape(text: string): string {
  return text.replace(/[&<>"]/g, (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;' })[c]!);
}

function round(value: number, digits: number): number {
  return Number.isFinite(value) ? Number(value.toFixed(digits)) : value;
}
