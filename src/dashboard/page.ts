import { createHash } from 'node:crypto';

/**
 * The dashboard page: one HTML document with its script and styles inline, Chart.js loaded from the
 * proxy itself (`dashboard/chart.js`), and its data polled from `dashboard/api/state`. Paths are
 * relative, so it works under any mount path. Every value from the state is written with
 * `textContent` (tenant names and request ids come from request headers).
 */
export function dashboardPage(options: { readonly chartJs: boolean; readonly missingNote: string }): string {
  const chartScript = options.chartJs ? '<script src="dashboard/chart.js"></script>' : '';
  const missing = options.chartJs ? '' : `<p class="missing" id="no-charts">${escapeHtml(options.missingNote)}</p>`;
  return `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>freesh dashboard</title>
<style>${STYLE}</style>
${chartScript}
</head>
<body data-ready="false">
<header><h1>freesh</h1><span id="summary">loading…</span><span id="status" class="status"></span></header>
${missing}
<section class="cards" id="fleet">
  <div class="card"><b id="fleet-energy">–</b><span>energy (kJ, estimated)</span></div>
  <div class="card"><b id="fleet-carbon">–</b><span>carbon (g CO₂e)</span></div>
  <div class="card"><b id="fleet-jpt">–</b><span>J per output token</span></div>
  <div class="card"><b id="fleet-gpr">–</b><span>g CO₂e per request</span></div>
  <div class="card"><b id="fleet-saving">–</b><span id="fleet-saving-label">carbon saved vs least-loaded</span></div>
  <div class="card"><b id="fleet-served">–</b><span>requests served</span></div>
</section>
<section class="grid">
  <figure><figcaption>Carbon intensity by site (g CO₂e/kWh)</figcaption><div class="chart"><canvas id="chart-carbon"></canvas></div></figure>
  <figure><figcaption>Traffic share by site (recent placements)</figcaption><div class="chart"><canvas id="chart-share"></canvas></div></figure>
  <figure><figcaption>In flight and queued by backend</figcaption><div class="chart"><canvas id="chart-load"></canvas></div></figure>
  <figure><figcaption>TTFT and TBT p50 by backend (ms)</figcaption><div class="chart"><canvas id="chart-latency"></canvas></div></figure>
  <figure><figcaption>SLO attainment by class (%)</figcaption><div class="chart"><canvas id="chart-slo"></canvas></div></figure>
  <figure><figcaption>Output tokens by tenant <span id="jain"></span></figcaption><div class="chart"><canvas id="chart-tenants"></canvas></div></figure>
</section>
<section>
  <h2>Sites</h2>
  <table id="sites"><thead><tr><th>site</th><th>region</th><th>g/kWh now</th><th>share</th><th>placed</th><th>active / instances</th><th>clocks</th></tr></thead><tbody></tbody></table>
  <h2>Backends</h2>
  <table id="backends"><thead><tr><th>backend</th><th>health</th><th>plan</th><th>in flight</th><th>queued</th><th>least laxity (ms)</th><th>TTFT p50/p90 (ms)</th><th>TBT p50/p90 (ms)</th><th>served</th><th>energy (J)</th></tr></thead><tbody></tbody></table>
  <h2>Plan</h2>
  <p id="plan">–</p>
  <h2>Decision inspector</h2>
  <p class="hint">The latest routing decisions, newest first. Select one to see which filter dropped each backend and every scorer's score.</p>
  <div class="inspector"><ol id="decisions"></ol><div id="decision"></div></div>
  <p class="hint" id="method"></p>
</section>
<script>${CLIENT}</script>
</body>
</html>
`;
}

function escapeHtml(text: string): string {
  return text.replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
}

const STYLE = `
:root { color-scheme: light; font: 14px/1.4 system-ui, sans-serif; color: #1d2430; background: #f5f6f8; }
body { margin: 0 auto; padding: 0 16px 32px; max-width: 1400px; }
header { display: flex; align-items: baseline; gap: 16px; padding: 12px 0; }
h1 { font-size: 20px; margin: 0; } h2 { font-size: 16px; margin: 20px 0 6px; }
.status { margin-left: auto; color: #667; }
.status.error { color: #b00020; }
.missing { background: #fff4d6; border: 1px solid #e5c76b; padding: 8px 12px; border-radius: 6px; }
.cards { display: grid; grid-template-columns: repeat(auto-fit, minmax(160px, 1fr)); gap: 10px; }
.card { background: #fff; border-radius: 8px; padding: 10px 12px; box-shadow: 0 1px 2px #0001; }
.card b { display: block; font-size: 22px; } .card span { color: #667; font-size: 12px; }
.grid { display: grid; grid-template-columns: repeat(auto-fit, minmax(380px, 1fr)); gap: 10px; margin-top: 10px; }
figure { margin: 0; background: #fff; border-radius: 8px; padding: 8px 10px; box-shadow: 0 1px 2px #0001; }
figcaption { font-weight: 600; font-size: 13px; margin-bottom: 4px; }
.chart { position: relative; height: 220px; }
table { border-collapse: collapse; width: 100%; background: #fff; font-variant-numeric: tabular-nums; }
th, td { text-align: left; padding: 4px 8px; border-bottom: 1px solid #e3e6ea; font-size: 13px; }
th { background: #eef0f3; font-weight: 600; }
.bad { color: #b00020; font-weight: 600; } .good { color: #1b7f3b; }
.hint { color: #667; font-size: 12px; }
.inspector { display: grid; grid-template-columns: minmax(260px, 1fr) 2fr; gap: 10px; }
#decisions { list-style: none; margin: 0; padding: 0; max-height: 420px; overflow: auto; background: #fff; border-radius: 8px; }
#decisions li { padding: 4px 8px; border-bottom: 1px solid #eef0f3; cursor: pointer; font-size: 12px; }
#decisions li.selected { background: #dde8ff; }
#decision { background: #fff; border-radius: 8px; padding: 8px 10px; font-size: 13px; }
`;

/** The page's script: plain browser JavaScript, no build step. */
const CLIENT = `
(function () {
  'use strict';
  var COLORS = ['#2f6fdb', '#e0823d', '#2e9e5b', '#b04fc4', '#c9463d', '#6b7a8f', '#c4a21b', '#1a9aa8'];
  var charts = {};
  var selected = null;
  var api = { state: null, charts: charts, updates: 0 };
  window.freeshDashboard = api;

  function el(tag, text, cls) { var e = document.createElement(tag); if (text !== undefined && text !== null) e.textContent = String(text); if (cls) e.className = cls; return e; }
  function fmt(v, digits) { return v === null || v === undefined ? '–' : Number(v).toFixed(digits === undefined ? 1 : digits); }
  function pct(v) { return v === null || v === undefined ? '–' : (v * 100).toFixed(1) + '%'; }
  function ago(s) { return s < 120 ? '-' + Math.round(s) + ' s' : s < 7200 ? '-' + Math.round(s / 60) + ' min' : '-' + (s / 3600).toFixed(1) + ' h'; }
  function setText(id, text) { document.getElementById(id).textContent = text; }
  function row(tbody, cells) { var tr = el('tr'); cells.forEach(function (c) { var td = el('td'); if (c instanceof Node) td.appendChild(c); else td.textContent = c; tr.appendChild(td); }); tbody.appendChild(tr); }

  function chart(id, config) {
    if (typeof Chart === 'undefined') return null;
    if (!charts[id]) {
      config.options = Object.assign({ responsive: true, maintainAspectRatio: false, animation: false }, config.options || {});
      charts[id] = new Chart(document.getElementById(id), config);
    }
    return charts[id];
  }
  function update(id, type, labels, datasets, options) {
    var c = chart(id, { type: type, data: { labels: [], datasets: [] }, options: options });
    if (!c) return;
    c.data.labels = labels;
    c.data.datasets = datasets;
    c.update();
  }

  function render(s) {
    api.state = s;
    if (typeof Chart === 'undefined' && !document.getElementById('no-charts')) {
      // The bundle was announced but did not load: say so once, the tables still work.
      var note = el('p', 'Charts are off: chart.js could not be loaded from the proxy. The tables below still update live.', 'missing');
      note.id = 'no-charts';
      document.getElementById('fleet').before(note);
    }
    setText('summary', 'policy ' + s.policy + ' · objective ' + s.objective + ' · up ' + fmt(s.uptimeS / 60, 1) + ' min');
    var f = s.fleet;
    setText('fleet-energy', fmt(f.energyJ / 1000, 2));
    setText('fleet-carbon', fmt(f.carbonG, 3));
    setText('fleet-jpt', fmt(f.joulesPerOutputToken, 2));
    setText('fleet-gpr', fmt(f.gramsPerRequest, 4));
    setText('fleet-saving', pct(f.baseline.savedCarbonFraction));
    setText('fleet-saving-label', 'carbon saved vs ' + f.baseline.policy + ' (' + fmt(f.baseline.savedCarbonG, 3) + ' g; energy ' + pct(f.baseline.savedEnergyFraction) + ')');
    setText('fleet-served', f.served);
    setText('method', 'Saving: ' + f.baseline.method);

    var sites = s.sites.map(function (x) { return x.id; });
    var longest = s.sites.reduce(function (a, x) { return x.carbonHistory.length > a.carbonHistory.length ? x : a; }, s.sites[0]);
    update('chart-carbon', 'line', longest ? longest.carbonHistory.map(function (p) { return ago(p.ageS); }) : [],
      s.sites.map(function (x, i) { return { label: x.id + ' (' + x.region + ')', data: x.carbonHistory.map(function (p) { return p.gramsPerKWh; }), borderColor: COLORS[i % COLORS.length], backgroundColor: COLORS[i % COLORS.length], pointRadius: 2 }; }),
      { scales: { y: { beginAtZero: true } } });
    update('chart-share', 'doughnut', sites, [{ data: s.sites.map(function (x) { return x.recentShare === null ? 0 : x.recentShare * 100; }), backgroundColor: sites.map(function (_, i) { return COLORS[i % COLORS.length]; }) }]);
    var ids = s.backends.map(function (b) { return b.id; });
    update('chart-load', 'bar', ids, [
      { label: 'in flight', data: s.backends.map(function (b) { return b.inFlight; }), backgroundColor: COLORS[0] },
      { label: 'queued', data: s.backends.map(function (b) { return b.queued; }), backgroundColor: COLORS[1] }
    ], { scales: { x: { stacked: true }, y: { stacked: true, beginAtZero: true } } });
    update('chart-latency', 'bar', ids, [
      { label: 'TTFT p50', data: s.backends.map(function (b) { return b.ttftMs ? b.ttftMs.p50 : null; }), backgroundColor: COLORS[2] },
      { label: 'TBT p50', data: s.backends.map(function (b) { return b.tbtMs ? b.tbtMs.p50 : null; }), backgroundColor: COLORS[3] }
    ], { scales: { y: { beginAtZero: true } } });
    update('chart-slo', 'bar', s.slo.map(function (c) { return c.class; }), [
      { label: 'attained %', data: s.slo.map(function (c) { return c.attainment === null ? null : c.attainment * 100; }), backgroundColor: COLORS[2] }
    ], { scales: { y: { min: 0, max: 100 } } });
    update('chart-tenants', 'bar', s.tenants.tenants.map(function (t) { return t.tenant; }), [
      { label: 'output tokens', data: s.tenants.tenants.map(function (t) { return t.outputTokens; }), backgroundColor: COLORS[0] }
    ], { indexAxis: 'y' });
    setText('jain', s.tenants.jainIndex === null ? '' : '(Jain ' + fmt(s.tenants.jainIndex, 3) + ')');

    var tb = document.querySelector('#sites tbody');
    tb.replaceChildren();
    s.sites.forEach(function (x) {
      row(tb, [x.id, x.region, fmt(x.gramsPerKWh, 0), pct(x.recentShare), x.placed, x.activeInstances + ' / ' + x.instances,
        x.clocks.map(function (c) { return c.backend + ' ' + (c.clockFraction === null ? 'parked' : Math.round(c.clockFraction * 100) + '%'); }).join(', ')]);
    });
    tb = document.querySelector('#backends tbody');
    tb.replaceChildren();
    s.backends.forEach(function (b) {
      var tr = el('tr'); tr.dataset.backend = b.id; tb.appendChild(tr);
      [b.id, el('span', b.healthy ? 'healthy' : 'unhealthy', b.healthy ? 'good' : 'bad'),
        b.planned === null ? 'no planner' : b.planned ? 'active ' + Math.round((b.clockFraction || 1) * 100) + '%' : 'parked',
        b.inFlight, b.queued, fmt(b.leastLaxityMs, 0),
        b.ttftMs ? fmt(b.ttftMs.p50, 0) + ' / ' + fmt(b.ttftMs.p90, 0) : '–',
        b.tbtMs ? fmt(b.tbtMs.p50, 1) + ' / ' + fmt(b.tbtMs.p90, 1) : '–',
        b.served, fmt(b.energyJ, 0)].forEach(function (c) { var td = el('td'); if (c instanceof Node) td.appendChild(c); else td.textContent = c; tr.appendChild(td); });
    });
    setText('plan', s.plan ? s.plan.status + ', made ' + fmt(s.plan.ageS, 0) + ' s ago: ' + s.plan.active.length + ' active, parked: ' + (s.plan.parked.join(', ') || 'none') + ' — ' + s.plan.note : 'no pool planner runs with this policy');

    var list = document.getElementById('decisions');
    list.replaceChildren();
    if (s.decisions.length > 0 && (selected === null || !s.decisions.some(function (d) { return d.requestId === selected; }))) selected = s.decisions[0].requestId;
    s.decisions.forEach(function (d) {
      var li = el('li', fmt(d.ageS, 1) + ' s ago · ' + d.sloClass + ' · ' + d.tenant + ' → ' + d.picked + (d.outcome ? ' · ' + d.outcome : ''));
      li.dataset.request = d.requestId;
      if (d.requestId === selected) li.className = 'selected';
      li.addEventListener('click', function () { selected = d.requestId; render(api.state); });
      list.appendChild(li);
    });
    showDecision(s.decisions.filter(function (d) { return d.requestId === selected; })[0]);
  }

  function showDecision(d) {
    var box = document.getElementById('decision');
    box.replaceChildren();
    if (!d) { box.appendChild(el('p', 'No decision yet: send a request.', 'hint')); return; }
    box.appendChild(el('p', 'Request ' + d.requestId + ' (' + d.model + ', ' + d.promptTokens + ' prompt tokens, predicted ' + d.predictedOutputTokens.p50 + '/' + d.predictedOutputTokens.p90 + ' output tokens p50/p90, type ' + d.requestType + ', class ' + d.sloClass + ', tenant ' + d.tenant + ')'));
    var pick = el('p'); pick.id = 'decision-pick';
    pick.textContent = 'Picked ' + d.picked + ' at ' + d.site + ' by ' + (d.policy || '?') + ': estimated ' + fmt(d.estimate.energyJ, 1) + ' J, ' + fmt(d.estimate.carbonG, 4) + ' g, TTFT ' + fmt(d.estimate.ttftMs, 0) + ' ms' +
      (d.baseline ? '; ' + d.baseline.policy + ' would have picked ' + d.baseline.backend + ' (' + fmt(d.baseline.energyJ, 1) + ' J, ' + fmt(d.baseline.carbonG, 4) + ' g)' : '') +
      (d.relaxed.length ? '; relaxed: ' + d.relaxed.join(', ') : '') + (d.outcome ? '; ' + d.outcome + (d.outputTokens !== null ? ', ' + d.outputTokens + ' tokens' : '') : '; running');
    box.appendChild(pick);
    var scorers = [];
    d.candidates.forEach(function (c) { if (c.scores) Object.keys(c.scores).forEach(function (k) { if (scorers.indexOf(k) < 0) scorers.push(k); }); });
    var table = el('table'); table.id = 'decision-candidates';
    var head = el('tr'); ['backend', 'dropped by'].concat(scorers).concat(['score']).forEach(function (h) { head.appendChild(el('th', h)); });
    var thead = el('thead'); thead.appendChild(head); table.appendChild(thead);
    var body = el('tbody'); table.appendChild(body);
    d.candidates.forEach(function (c) {
      var tr = el('tr', undefined, c.backend === d.picked ? 'good' : c.droppedBy ? 'hint' : '');
      tr.dataset.backend = c.backend;
      tr.appendChild(el('td', c.backend + (c.backend === d.picked ? ' ✔' : '')));
      tr.appendChild(el('td', c.droppedBy || ''));
      scorers.forEach(function (k) { tr.appendChild(el('td', c.scores && c.scores[k] !== undefined ? fmt(c.scores[k], 3) : '')); });
      tr.appendChild(el('td', c.score === undefined ? '' : fmt(c.score, 3)));
      body.appendChild(tr);
    });
    box.appendChild(table);
  }

  function poll() {
    // With gateway admin keys, the key is given in the link's fragment (#key=…), which the browser
    // never sends in a request line: it goes only in this request's Authorization header.
    var key = /(?:^|[#&])key=([^&]+)/.exec(location.hash);
    var headers = key ? { authorization: 'Bearer ' + decodeURIComponent(key[1]) } : {};
    fetch('dashboard/api/state', { cache: 'no-store', headers: headers }).then(function (r) {
      if (r.status === 401 || r.status === 403) throw new Error('HTTP ' + r.status + ': open the dashboard as …/dashboard#key=<admin key>');
      if (!r.ok) throw new Error('HTTP ' + r.status);
      return r.json();
    }).then(function (s) {
      render(s);
      api.updates++;
      var status = document.getElementById('status');
      status.textContent = 'updated ' + new Date().toLocaleTimeString();
      status.className = 'status';
      document.body.dataset.ready = 'true';
      setTimeout(poll, s.refreshMs);
    }, function (err) {
      var status = document.getElementById('status');
      status.textContent = 'cannot reach the router (' + err.message + '); retrying';
      status.className = 'status error';
      setTimeout(poll, 5000);
    });
  }
  poll();
})();
`;

/** The page script's hash, for a security policy that runs that script and no other inline one. */
export const CLIENT_SCRIPT_HASH = `sha256-${createHash('sha256').update(CLIENT).digest('base64')}`;
