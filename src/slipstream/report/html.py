"""Assemble the self-contained HTML report: summary, comparison table, and the plots."""

from __future__ import annotations

import html
import json
from datetime import datetime, timezone
from typing import Any

from slipstream.report import plots
from slipstream.report.search_table import SearchTable

CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:2rem auto;max-width:1200px;color:#222;
padding:0 1rem}
h1{font-size:1.6rem;margin-bottom:.2rem}h2{font-size:1.2rem;margin-top:2rem;border-bottom:1px solid #ddd;padding-bottom:.3rem}
.meta{color:#666;font-size:.9rem}.cards{display:flex;gap:1rem;flex-wrap:wrap;margin:1rem 0}
.card{background:#f6f8fa;border-radius:8px;padding:.8rem 1rem;min-width:180px}
.card .v{font-size:1.4rem;font-weight:600}.card .l{color:#666;font-size:.8rem}
.scroll{overflow-x:auto}table{border-collapse:collapse;font-size:.8rem;width:100%}th,td{padding:.35rem .5rem;border-bottom:1px solid #eee;
text-align:right;white-space:nowrap}th:first-child,td:first-child{text-align:left}th{background:#f6f8fa}
tr.front td:first-child{font-weight:600}tr.front td:first-child::before{content:"★ ";color:#c90}
.plots{display:grid;grid-template-columns:repeat(auto-fit,minmax(520px,1fr));gap:1.5rem}
figure{margin:0}figure svg{width:100%;height:auto}figcaption{color:#666;font-size:.85rem}
.note{color:#555;font-size:.85rem}
"""


def _cell(value: Any, fmt: str = "{:.2f}") -> str:
    if value is None or (isinstance(value, float) and value != value):
        return "—"
    return fmt.format(value) if isinstance(value, (int, float)) else html.escape(str(value))


def render(data: dict[str, Any]) -> str:
    """``data``: title, machine, settings, rows (the comparison rows enriched with cost and roofline),
    front (names on the Pareto frontier), samples ({name: {"tpot": [...], "ttft": [...]}}), price, and
    for an automatic search its :class:`~slipstream.report.search_table.SearchTable`."""
    rows, front, base = data["rows"], set(data["front"]), data["rows"][0]
    names = [r["name"] for r in rows]
    figures = {
        "pareto": plots.pareto(names, [r["speedup"] for r in rows], [100 * r["perplexity_change"] for r in rows],
                               [n for n in names if n in front], "decode speed-up at batch 1 (× original)",
                               "perplexity change (%)"),
        "size": plots.bars(names, [r["size_bytes"] / 1e6 for r in rows], "MB on disk", "Size on disk"),
        "latency": plots.distributions(names, [[1e3 * x for x in data["samples"].get(n, {}).get("tpot", [])]
                                               for n in names], "ms", "Time per output token (batch 1)"),
        "cost": plots.bars(names, [r["cost"]["dollars_per_million_tokens"] for r in rows], "US$ per million output tokens",
                           f"$ per million output tokens ({data['price']['name']}, ${data['price']['price_per_hour']}/h)",
                           "${:.2f}"),
    }
    best = max(rows, key=lambda r: r["speedup"])
    cheapest = min(rows, key=lambda r: r["cost"]["dollars_per_million_tokens"])
    head = ["variant", "engine / compute", "thr.", "MB", "ppl", "ppl Δ", "KL", "top-1", "tok/s b1", "speed ×",
            f"tok/s b{base['batch_size']}", "TTFT p50", "TPOT p50", "TPOT p95", "RSS MB",
            "roofline", "$ / M tok"]
    body = []
    for r in rows:
        cells = [html.escape(r["name"]), html.escape(f"{r['engine']} / {r['compute_type']}"), _cell(r["threads"], "{}"),
                 _cell(r["size_bytes"] / 1e6, "{:.0f}"), _cell(r["perplexity"], "{:.3f}"),
                 _cell(100 * r["perplexity_change"], "{:+.2f}%"), _cell(r["kl_mean"], "{:.4f}"),
                 _cell(r["top1_agreement"], "{:.1%}"), _cell(r["decode_tokens_per_s"], "{:.1f}"),
                 _cell(r["speedup"], "{:.2f}"), _cell(r["batch_tokens_per_s"], "{:.1f}"),
                 _cell(r["ttft_p50_s"] * 1e3, "{:.0f}"), _cell(r["tpot_p50_s"] * 1e3, "{:.1f}"),
                 _cell(r["tpot_p95_s"] * 1e3, "{:.1f}"), _cell(r["peak_rss_bytes"] / 1e6, "{:.0f}"),
                 _cell((r.get("roofline") or {}).get("share_of_limit"), "{:.0%}"),
                 _cell(r["cost"]["dollars_per_million_tokens"], "${:.3f}")]
        cls = ' class="front"' if r["name"] in front else ""
        body.append(f"<tr{cls}>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>")
    price = data["price"]
    cards = [
        ("fastest at batch 1", f"{html.escape(best['name'])}", f"{best['speedup']:.2f}× the original"),
        ("cheapest per million tokens", html.escape(cheapest["name"]),
         f"${cheapest['cost']['dollars_per_million_tokens']:.3f} vs ${base['cost']['dollars_per_million_tokens']:.3f}"),
        ("variants on the frontier", str(len(front)), "of " + str(len(rows))),
    ]
    card_html = "".join(f'<div class="card"><div class="l">{l}</div><div class="v">{v}</div><div class="l">{s}</div></div>'
                        for l, v, s in cards)
    fig_html = "".join(f'<figure data-plot="{k}">{svg}<figcaption>{cap}</figcaption></figure>' for k, svg, cap in (
        ("pareto", figures["pareto"], "★ marks the Pareto frontier: no other variant is both faster and more accurate."),
        ("size", figures["size"], "Bytes of every file in the variant directory."),
        ("latency", figures["latency"], "Boxes: quartiles; whiskers: 5th to 95th percentile of every token interval."),
        ("cost", figures["cost"], f"From output tokens/s at the largest batch benchmarked; price from "
                                  f"{html.escape(price.get('source') or 'the command line')} {html.escape(price.get('date') or '')}."),
    ))
    machine = data["machine"]
    search_html = _search_section(data["search"]) if data.get("search") else ""
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{html.escape(data['title'])}</title><style>{CSS}</style></head>
<body>
<h1>{html.escape(data['title'])}</h1>
<div class="meta">{html.escape(machine.get('cpu', ''))}, {machine.get('logical_cpus')} CPUs ·
generated {datetime.now(timezone.utc).strftime('%Y-%m-%d %H:%M UTC')} by slipstream</div>
<div class="cards">{card_html}</div>
<h2>Comparison with {html.escape(base['name'])}</h2>
<div class="scroll"><table><thead><tr>{''.join(f'<th>{h}</th>' for h in head)}</tr></thead><tbody>{''.join(body)}</tbody></table></div>
<p class="note">Speed ratios are medians of per-round ratios over {data['settings'].get('rounds', 1)} interleaved round(s).
Perplexity on {html.escape(str(data['settings'].get('eval', {}).get('task', '')))},
{data['settings'].get('eval', {}).get('max_tokens') or 'all'} tokens. Roofline share: batch-1 decode speed as a share of
the lower of the memory-bandwidth and matrix-multiply limits measured on this machine.</p>
{search_html}<h2>Plots</h2>
<div class="plots">{fig_html}</div>
<script type="application/json" id="slipstream-data">{html.escape(json.dumps({"rows": rows, "front": sorted(front)}, default=str))}</script>
</body></html>
"""


def _search_section(search: SearchTable) -> str:
    """Every candidate the search measured, passing or not, with its reason."""
    front, best, rel = set(search.frontier), search.best, search.relative
    body = []
    for r in sorted(search.rows, key=lambda r: (r.status != "passed", -(r.objective or -1e30))):
        drop_s = "" if r.drop is None else (f"{100 * r.drop:+.2f}%" if rel else f"{r.drop:+.4g}")
        cls = ' class="front"' if r.name in front else ""
        mark = " (best)" if r.name == best else ""
        body.append(f"<tr{cls}>" + "".join(f"<td>{c}</td>" for c in (
            html.escape(r.name) + mark, html.escape(r.label), html.escape(r.status), drop_s,
            *(_cell(v, "{:.4g}") for v in (r.guards or (None,) * len(search.guards))),
            _cell(r.ratio, "{:.2f}×"), _cell((r.size_bytes or 0) / 1e6 or None, "{:.0f}"),
            _cell(r.seconds, "{:.0f}"), html.escape(r.reason or ""))) + "</tr>")
    blank = "<td></td>" * (4 + len(search.guards))
    for n in search.not_run:
        body.append(f"<tr><td></td><td>{html.escape(n.label)}</td><td>not run</td>{blank}"
                    f"<td>{html.escape(n.reason)}</td></tr>")
    head = ["variant", "recipe", "status", "gate metric Δ", *map(html.escape, search.guards), "objective ×", "MB",
            "seconds", "reason"]
    return (f"<h2>Search</h2><p>{html.escape(search.summary)}</p>"
            f"<div class=\"scroll\"><table><thead><tr>{''.join(f'<th>{h}</th>' for h in head)}</tr></thead>"
            f"<tbody>{''.join(body)}</tbody></table></div>"
            "<p class=\"note\">★: on the search's Pareto frontier (gate metric against the objective). "
            "Objective ratios are against the original; 'confirmed' leaders were re-measured side by side.</p>")
