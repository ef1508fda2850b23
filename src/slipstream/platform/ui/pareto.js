// A search's candidates as an inline SVG: the gate metric's drop across, the objective against the original
// up; passed candidates and the rest in two colours, the frontier joined by a line, the best ringed.

import { enc, html, megabytes, number } from "./util.js";

const W = 640, H = 360, LEFT = 64, RIGHT = 20, TOP = 16, BOTTOM = 48;

// About n round tick values covering [lo, hi].
function ticks(lo, hi, n = 5) {
  const span = hi - lo || Math.abs(hi) || 1;
  const raw10 = 10 ** Math.floor(Math.log10(span / n));
  const step = [1, 2, 5, 10].map((m) => m * raw10).find((s) => span / s <= n) || 10 * raw10;
  const out = [];
  for (let v = Math.ceil(lo / step) * step; v <= hi + step * 1e-9; v += step) out.push(Number(v.toPrecision(12)));
  return out;
}

function extent(values, include) {
  let lo = Math.min(...values, include), hi = Math.max(...values, include);
  if (lo === hi) { lo -= 0.5 * (Math.abs(lo) || 1); hi += 0.5 * (Math.abs(hi) || 1); }
  const pad = 0.08 * (hi - lo);
  return [lo - pad, hi + pad];
}

// The gate's drops as it states them: a fraction shown as a percentage, or the metric's own units.
function dropFormat(result) {
  return result.settings?.gate?.relative === false ? (v) => number(v) : (v) => `${Number((100 * v).toPrecision(4))}%`;
}

const plotted = (r) => typeof r.drop === "number" && typeof r.objective_ratio === "number";

export function paretoPlot(result) {
  const points = (result.records || []).filter(plotted);
  if (!points.length) return html`<p class="muted" id="pareto-empty">No candidate was measured far enough to plot.</p>`;
  const gate = result.settings?.gate || {};
  const fmtX = dropFormat(result);
  const maxDrop = typeof gate.max_drop === "number" ? gate.max_drop : points.find((p) => typeof p.max_drop === "number")?.max_drop;
  const [x0, x1] = extent([...points.map((p) => p.drop), ...(maxDrop === undefined ? [] : [maxDrop])], 0);
  const [y0, y1] = extent(points.map((p) => p.objective_ratio), 1);
  const x = (v) => LEFT + ((v - x0) / (x1 - x0)) * (W - LEFT - RIGHT);
  const y = (v) => H - BOTTOM - ((v - y0) / (y1 - y0)) * (H - TOP - BOTTOM);
  const f = (v) => v.toFixed(1);

  const xTicks = ticks(x0, x1).map((v) => html`<g class="tick"><line x1="${f(x(v))}" x2="${f(x(v))}" y1="${TOP}" y2="${H - BOTTOM}"/>
    <text x="${f(x(v))}" y="${H - BOTTOM + 16}" text-anchor="middle">${fmtX(v)}</text></g>`);
  const yTicks = ticks(y0, y1).map((v) => html`<g class="tick"><line x1="${LEFT}" x2="${W - RIGHT}" y1="${f(y(v))}" y2="${f(y(v))}"/>
    <text x="${LEFT - 6}" y="${f(y(v) + 4)}" text-anchor="end">${number(v, 3)}×</text></g>`);
  const frontier = (result.frontier || []).filter(plotted).sort((a, b) => a.drop - b.drop);
  const line = frontier.length > 1
    ? html`<polyline class="frontier" points="${frontier.map((p) => `${f(x(p.drop))},${f(y(p.objective_ratio))}`).join(" ")}"/>` : "";
  const best = result.best && plotted(result.best) ? result.best : null;
  const dots = points.map((p) => html`<circle class="point ${p.status === "passed" ? "passed" : "other"}"
    data-status="${p.status}" cx="${f(x(p.drop))}" cy="${f(y(p.objective_ratio))}" r="5">
    <title>${p.name || p.label}: ${fmtX(p.drop)} drop, ${number(p.objective_ratio, 3)}× (${p.status})</title></circle>`);
  const gateLine = maxDrop === undefined ? "" : html`<line class="gate" x1="${f(x(maxDrop))}" x2="${f(x(maxDrop))}"
    y1="${TOP}" y2="${H - BOTTOM}"/><text class="gate" x="${f(x(maxDrop) + 4)}" y="${TOP + 12}">gate</text>`;
  const bestMark = best ? html`<circle class="best" cx="${f(x(best.drop))}" cy="${f(y(best.objective_ratio))}" r="10"/>
    <text class="best" x="${f(x(best.drop) + 13)}" y="${f(y(best.objective_ratio) - 8)}">best</text>` : "";
  const objective = result.settings?.objective || "objective";

  return html`<figure class="pareto">
  <svg id="pareto" viewBox="0 0 ${W} ${H}" role="img" aria-label="Candidates: gate metric drop against ${objective}">
    ${xTicks}${yTicks}
    <line class="axis" x1="${LEFT}" x2="${W - RIGHT}" y1="${H - BOTTOM}" y2="${H - BOTTOM}"/>
    <line class="axis" x1="${LEFT}" x2="${LEFT}" y1="${TOP}" y2="${H - BOTTOM}"/>
    ${gateLine}
    <circle class="original" cx="${f(x(0))}" cy="${f(y(1))}" r="4"><title>the original</title></circle>
    ${line}${dots}${bestMark}
    <text class="label" x="${(LEFT + W - RIGHT) / 2}" y="${H - 8}" text-anchor="middle">${gate.metric || "gate metric"} drop against the original</text>
    <text class="label" transform="translate(16 ${(TOP + H - BOTTOM) / 2}) rotate(-90)" text-anchor="middle">${objective} against the original (×)</text>
  </svg>
  <figcaption class="legend"><span class="key passed"></span> passed the gate <span class="key other"></span> did not
    <span class="key frontier"></span> frontier <span class="key best"></span> best <span class="key original"></span> original</figcaption>
  </figure>`;
}

export function recordsTable(result) {
  const best = result.best?.id;
  const fmt = dropFormat(result);
  const rows = (result.records || []).map((r) => html`<tr data-status="${r.status}" class="${r.id === best ? "best" : ""}">
    <td>${r.label}</td><td>${r.name ? html`<a href="#/models/${enc(r.name)}">${r.name}</a>` : ""}</td><td>${r.status}</td>
    <td class="num">${typeof r.drop === "number" ? fmt(r.drop) : ""}</td>
    <td class="num">${typeof r.objective_ratio === "number" ? `${number(r.objective_ratio, 3)}×` : ""}</td>
    <td class="num">${megabytes(r.size_bytes)}</td><td>${r.reason || ""}</td></tr>`);
  return html`<table id="search-records" class="grid"><thead><tr><th>Recipe</th><th>Variant</th><th>Status</th>
    <th class="num">Drop</th><th class="num">Against original</th><th class="num">Size (MB)</th><th>Why</th></tr></thead>
    <tbody>${rows}</tbody></table>`;
}
