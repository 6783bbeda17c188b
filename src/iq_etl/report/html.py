"""The coverage report as one self-contained HTML page: inline CSS and inline SVG, no script, no
font, no image or stylesheet fetched from anywhere (the page declares a Content-Security-Policy
that forbids it), so it opens on an offline machine and from a Prefect link artifact.

Four views, each a `<section>` with a stable id and `data-view` (tests and people find them):
`view-scan` (scanned slot runs vs gaps per epoch), `view-status` (uploads by status x generation,
and by verification when the marts have it), `view-chunks` (a chunk map per incomplete upload) and
`view-delivery` (delivery state per export target).

Everything read from the chain (upload keys, reasons, signatures) or typed by an operator (target
URLs) is hostile: every such string goes through `_e` (control characters escaped, HTML escape, quotes
included) and is shortened for display; numbers are formatted from ints.
"""
from __future__ import annotations

import html
import math
from typing import Any, Iterable

from iq_etl.output import visible
from iq_etl.report.data import BEYOND, CELL_STATES, CONFLICTING, FAILED_ONLY, MISSING, PRESENT
from iq_etl.warehouse.marts import STATUSES

DISPLAY_LIMIT = 300  # characters of one chain-derived string shown (the data attributes keep up to this too)

STATUS_COLOURS = {"complete": "#16a34a", "missing_chunks": "#dc2626", "awaiting_finalize": "#d97706",
                  "conflicting_chunks": "#7c3aed", "total_mismatch": "#be185d"}
CELL_COLOURS = {PRESENT: "#16a34a", MISSING: "#dc2626", FAILED_ONLY: "#f97316", CONFLICTING: "#7c3aed",
                BEYOND: "#0ea5e9"}
CELL_LABELS = {PRESENT: "present", MISSING: "missing", FAILED_ONLY: "missing (seen only in failed transactions)",
               CONFLICTING: "conflicting (copies with different bytes)", BEYOND: "at or beyond the declared total"}
VERIFICATION_COLOURS = {"verified": "#16a34a", "mismatch": "#dc2626", "unverifiable": "#9ca3af"}
DELIVERY_PARTS = (("delivered", "#16a34a", "delivered"), ("failed", "#dc2626", "last attempt failed"),
                  ("refused", "#d97706", "refused"), ("never_tried", "#9ca3af", "complete, never tried here"))

TIMELINE_WIDTH = 1100
GRID_COLUMNS = 64
CELL = 14
CELL_GAP = 2

CSS = """
*{box-sizing:border-box}
.bar{display:inline-block;height:10px;background:#2563eb;vertical-align:middle}
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:0;padding:24px 32px;color:#111827;
 background:#f9fafb}
h1{font-size:24px;margin:0 0 4px}h2{font-size:19px;margin:0 0 8px}h3{font-size:15px;margin:0 0 4px}
section{background:#fff;border:1px solid #e5e7eb;border-radius:8px;padding:16px 20px;margin:16px 0}
.meta,.note{color:#4b5563;font-size:13px}.note{margin:6px 0}
.cut{color:#92400e;background:#fffbeb;border:1px solid #fde68a;border-radius:4px;padding:4px 8px;font-size:13px;
 display:inline-block;margin:6px 0}
table{border-collapse:collapse;margin:6px 0}th,td{border-bottom:1px solid #e5e7eb;padding:4px 10px;text-align:right;
 vertical-align:middle}th{background:#f3f4f6;font-weight:600}td.l,th.l{text-align:left}
td.zero{color:#d1d5db}code{font:12px/1.3 ui-monospace,SFMono-Regular,Menlo,monospace;word-break:break-all}
.legend{display:flex;flex-wrap:wrap;gap:14px;margin:6px 0 10px;font-size:13px}
.legend span{display:inline-flex;align-items:center;gap:5px}
.sw{display:inline-block;width:12px;height:12px;border-radius:2px}
.epoch{margin:10px 0 14px}.chunk-map{border-top:1px solid #e5e7eb;padding:10px 0}
.chunk-map:first-of-type{border-top:none}.pill{display:inline-block;padding:1px 7px;border-radius:9px;color:#fff;
 font-size:12px}
.nowrap{white-space:nowrap}svg{display:block;margin:4px 0}svg text{font:11px system-ui,sans-serif;fill:#374151}
"""


def _e(value: Any, limit: int = DISPLAY_LIMIT) -> str:
    """Escape for HTML text and attribute values alike: control characters and bidi overrides shown as
    `\\x1b` / `\\u202e`, long strings cut with `…(N chars)` (iq_etl.output.visible: a hostile upload
    key or reason can neither blow up the page nor reorder what is around it), then HTML-escaped."""
    return html.escape(visible(value, limit), quote=True)


def _n(value: Any) -> str:
    return "" if value is None else f"{int(value):,}"


def _legend(items: Iterable[tuple[str, str]]) -> str:
    return '<div class="legend">' + "".join(
        f'<span><i class="sw" style="background:{colour}"></i>{_e(label)}</span>' for colour, label in items) + "</div>"


def _stacked_bar(parts: list[tuple[str, int, str, str]], width: int = 240, height: int = 14) -> str:
    """parts: (key, count, colour, label). An SVG bar whose segments are proportional to the counts."""
    total = sum(p[1] for p in parts)
    out = [f'<svg width="{width}" height="{height}" role="img" class="bar">']
    if total == 0:
        out.append(f'<rect x="0" y="0" width="{width}" height="{height}" fill="#f3f4f6"/>')
    x = 0.0
    for key, count, colour, label in parts:
        if count <= 0:
            continue
        w = width * count / total
        out.append(f'<rect x="{x:.2f}" y="0" width="{max(w, 1):.2f}" height="{height}" fill="{colour}" '
                   f'data-part="{_e(key)}"><title>{_e(label)}: {_n(count)}</title></rect>')
        x += w
    out.append("</svg>")
    return "".join(out)


# --- view 1: scan timeline ----------------------------------------------------------------------

def _timeline_bar(runs: list[dict[str, Any]], first: int, last: int, height: int, name: str) -> str:
    span = max(1, last - first + 1)
    scale = TIMELINE_WIDTH / span
    out = [f'<svg width="{TIMELINE_WIDTH}" height="{height}" class="timeline {name}" role="img">',
           f'<rect x="0" y="0" width="{TIMELINE_WIDTH}" height="{height}" fill="#e5e7eb"><title>not scanned</title></rect>']
    for run in runs:
        a, b = max(run["first_slot"], first), min(run["last_slot"], last)
        if a > b:
            continue
        x = (a - first) * scale
        w = max((b - a + 1) * scale, 1.5)   # a one-slot gap in a whole epoch still shows
        colour = "#16a34a" if run["kind"] == "scanned" else "#dc2626"
        out.append(f'<rect class="run" data-kind="{_e(run["kind"])}" data-first="{int(a)}" data-last="{int(b)}" '
                   f'x="{x:.2f}" y="0" width="{w:.2f}" height="{height}" fill="{colour}">'
                   f'<title>{_e(run["kind"])} {int(a)}:{int(b)} ({_n(b - a + 1)} slots)</title></rect>')
    out.append("</svg>")
    return "".join(out)


def _axis(first: int, last: int) -> str:
    return (f'<svg width="{TIMELINE_WIDTH}" height="14" class="axis"><text x="0" y="11">{int(first)}</text>'
            f'<text x="{TIMELINE_WIDTH}" y="11" text-anchor="end">{int(last)}</text></svg>')


def scan_section(scan: dict[str, Any]) -> str:
    out = ['<section id="view-scan" data-view="scan-timeline"><h2>Scan coverage per epoch</h2>',
           '<p class="note">Scanned slot runs (<code>iq.scan_ranges</code> sub-ranges done, any source, merged; only '
           'scans that kept every configured program over every account count: a run narrowed to some session '
           'PDAs or fewer programs is not coverage) and '
           'the gaps between them. The thin bar is the whole epoch; the thick bar zooms on the part that has '
           'been scanned. Hover a segment for its slots (<code>S:E</code>, paste into <code>iq-etl ingest</code>).</p>',
           _legend([("#16a34a", "scanned"), ("#dc2626", "gap between scanned runs"), ("#e5e7eb", "not scanned")])]
    if not scan.get("built"):
        out.append('<p class="note">No scan coverage yet: run <code>iq-etl transform</code> after an ingest.</p>')
    elif not scan["epochs"]:
        out.append('<p class="note">Nothing scanned yet.</p>')
    for ep in scan.get("epochs", []):
        epoch_slots = ep["last_slot"] - ep["first_slot"] + 1
        share = 100.0 * ep["scanned_slots"] / epoch_slots
        out.append(f'<div class="epoch" data-epoch="{int(ep["epoch"])}" data-scanned-slots="{int(ep["scanned_slots"])}" '
                   f'data-gap-slots="{int(ep["gap_slots"])}"><h3>Epoch {int(ep["epoch"])} '
                   f'<span class="meta">slots {int(ep["first_slot"])}:{int(ep["last_slot"])} · '
                   f'{_n(ep["scanned_slots"])} scanned ({share:.2f}% of the epoch) · {_n(ep["gaps"])} gap(s), '
                   f'{_n(ep["gap_slots"])} slots</span></h3>')
        out.append(_timeline_bar(ep["runs"], ep["first_slot"], ep["last_slot"], 10, "epoch-bar"))
        out.append(_timeline_bar(ep["runs"], ep["extent_first"], ep["extent_last"], 28, "extent-bar"))
        out.append(_axis(ep["extent_first"], ep["extent_last"]))
        out.append("</div>")
    if scan.get("cut_from") is not None:
        out.append(f'<p class="cut" data-cut="scan">Runs from slot {int(scan["cut_from"])} on are not drawn '
                   f'({_n(scan["runs_read"])} of {_n(scan["runs_total"])} runs and gaps read, at most '
                   f'{_n(len(scan["epochs"]))} epochs drawn); <code>iq-etl sql "SELECT * FROM iq.scan_coverage"</code> '
                   'lists them all.</p>')
    out.append("</section>")
    return "".join(out)


# --- view 2: uploads by status x generation ----------------------------------------------------

def _matrix(rows: list[dict[str, Any]], kinds: list[str], kind_key: str, colours: dict[str, str],
            generations: list[str], caption: str, css_id: str) -> str:
    counts = {(r["generation"], r[kind_key]): int(r["uploads"]) for r in rows}
    out = [f'<table id="{css_id}"><caption class="meta" style="text-align:left">{_e(caption)}</caption><tr>'
           '<th class="l">generation</th>']
    out += [f'<th><span class="pill" style="background:{colours.get(k, "#6b7280")}">{_e(k)}</span></th>' for k in kinds]
    out.append('<th>uploads</th><th class="l">mix</th></tr>')
    for gen in generations:
        total = sum(counts.get((gen, k), 0) for k in kinds)
        out.append(f'<tr data-generation="{_e(gen)}"><td class="l"><b>{_e(gen)}</b></td>')
        for k in kinds:
            n = counts.get((gen, k), 0)
            out.append(f'<td class="{"zero" if n == 0 else ""}" data-{kind_key}="{_e(k)}" data-generation="{_e(gen)}" '
                       f'data-uploads="{n}">{_n(n)}</td>')
        bar = _stacked_bar([(k, counts.get((gen, k), 0), colours.get(k, "#6b7280"), k) for k in kinds])
        out.append(f"<td>{_n(total)}</td><td class=\"l\">{bar}</td></tr>")
    grand = [sum(counts.get((g, k), 0) for g in generations) for k in kinds]
    out.append('<tr><td class="l"><b>all</b></td>' + "".join(f"<td><b>{_n(n)}</b></td>" for n in grand)
               + f"<td><b>{_n(sum(grand))}</b></td><td></td></tr></table>")
    return "".join(out)


def status_section(view: dict[str, Any], models_built: bool) -> str:
    out = ['<section id="view-status" data-view="status-generation"><h2>Uploads by status and generation</h2>']
    if not models_built:
        out.append('<p class="note">The models are not built yet: run <code>iq-etl transform</code>.</p></section>')
        return "".join(out)
    rows = view["rows"]
    statuses = list(STATUSES) + sorted({r["status"] for r in rows} - set(STATUSES))
    out.append(_matrix(rows, statuses, "status", STATUS_COLOURS, view["generations"],
                       "iq.session_completeness: one row per upload", "status-matrix"))
    ver = view.get("verification")
    if ver:
        kinds = [v for v in ("verified", "mismatch", "unverifiable")]
        kinds += sorted({r["verification"] for r in ver["rows"]} - set(kinds))
        gens = sorted({r["generation"] for r in ver["rows"]})
        out.append('<div id="verification" data-source="' + _e(ver["source"]) + '">')
        out.append(_matrix(ver["rows"], kinds, "verification", VERIFICATION_COLOURS, gens,
                           f"verification of the recovered bytes (iq.{ver['source']})", "verification-matrix"))
        refused = ver.get("mismatches") or []
        if refused:
            out.append('<table id="verification-refused"><caption class="meta" style="text-align:left">'
                       'Refused for a verification mismatch (never exported)</caption>'
                       '<tr><th class="l">upload</th><th class="l">why</th></tr>')
            out += [f'<tr data-upload="{_e(r["upload_key"])}"><td class="l">{_e(r["upload_key"])}</td>'
                    f'<td class="l">{_e(r["reason"])}</td></tr>' for r in refused]
            out.append("</table>")
            if ver.get("mismatches_total", 0) > len(refused):
                out.append(f'<p class="cut" data-cut="verification">{_n(len(refused))} of '
                           f'{_n(ver["mismatches_total"])} shown.</p>')
        out.append("</div>")
    else:
        out.append('<p class="note" id="verification-absent">No verification column in the upload marts yet.</p>')
    out.append("</section>")
    return "".join(out)


# --- view 3: chunk maps ------------------------------------------------------------------------

def _grid(cells: list[str]) -> str:
    rows = max(1, math.ceil(len(cells) / GRID_COLUMNS))
    width = min(len(cells), GRID_COLUMNS) * (CELL + CELL_GAP)
    out = [f'<svg class="grid" width="{max(width, CELL)}" height="{rows * (CELL + CELL_GAP)}" role="img">']
    for i, state in enumerate(cells):
        x, y = (i % GRID_COLUMNS) * (CELL + CELL_GAP), (i // GRID_COLUMNS) * (CELL + CELL_GAP)
        out.append(f'<rect class="cell" data-index="{i}" data-state="{state}" x="{x}" y="{y}" width="{CELL}" '
                   f'height="{CELL}" rx="2" fill="{CELL_COLOURS[state]}"><title>chunk {i}: {CELL_LABELS[state]}'
                   '</title></rect>')
    out.append("</svg>")
    return "".join(out)


def chunks_section(view: dict[str, Any], models_built: bool, cells_limit: int) -> str:
    out = ['<section id="view-chunks" data-view="chunk-maps"><h2>Chunk maps of incomplete uploads</h2>',
           '<p class="note">One cell per chunk index, worst uploads first (finished uploads with missing or '
           'conflicting chunks before uploads still awaiting their finalize).</p>',
           _legend([(CELL_COLOURS[s], CELL_LABELS[s]) for s in CELL_STATES])]
    if not models_built:
        out.append('<p class="note">The models are not built yet: run <code>iq-etl transform</code>.</p></section>')
        return "".join(out)
    if not view["maps"]:
        out.append('<p class="note">Every upload is complete.</p>')
    for m in view["maps"]:
        counts = m["counts"]
        expected = "?" if m["expected"] is None else _n(m["expected"])
        out.append(f'<article class="chunk-map" data-upload="{_e(m["upload_key"])}" data-status="{_e(m["status"])}" '
                   f'data-generation="{_e(m["generation"])}" data-cells="{len(m["cells"])}">'
                   f'<h3><code>{_e(m["upload_key"])}</code></h3><p class="meta">'
                   f'<span class="pill" style="background:{STATUS_COLOURS.get(m["status"], "#6b7280")}">'
                   f'{_e(m["status"])}</span> {_e(m["generation"])} · {_e(m["upload_shape"])} · '
                   f'{_n(m["present"])}/{expected} present · {_e(m["reason"])}</p>')
        if m["cells"]:
            out.append(_grid(m["cells"]))
        else:
            out.append('<p class="note">No chunk seen yet.</p>')
        summary = ", ".join(f"{_n(counts[s])} {CELL_LABELS[s]}" for s in CELL_STATES if counts.get(s))
        out.append(f'<p class="note">{summary}</p>')
        if m["upload_shape"] == "linked_list" and m["missing_piece_signature"]:
            out.append(f'<p class="note">Linked list: the walk stopped at piece <code>{_e(m["missing_piece_signature"])}'
                       '</code> (not found), so earlier pieces are not indexed.</p>')
        if m["cells_cut"]:
            out.append(f'<p class="cut" data-cut="cells">Indexes {cells_limit:,}–{_n(m["indexes"] - 1)} not drawn '
                       f'({_n(m["cells_cut"])} cells; at most {cells_limit:,} per map).</p>')
        out.append("</article>")
    if view["cut_uploads"]:
        out.append(f'<p class="cut" data-cut="uploads">{_n(view["cut_uploads"])} more incomplete upload(s) without a '
                   f'map (the {_n(len(view["maps"]))} worst of {_n(view["incomplete_total"])} are drawn); '
                   '<code>iq-etl status</code> and <code>iq.chunk_coverage</code> list them.</p>')
    out.append("</section>")
    return "".join(out)


# --- view 4: delivery per target ---------------------------------------------------------------

def history_section(view: dict[str, Any]) -> str:
    """The time axis: one row per run (iq.runs), oldest first, with bars for slots covered, complete
    uploads and deliveries, and the lag each follow run saw."""
    runs = view.get("runs") or []
    out = ['<section id="view-history" data-view="history"><h2>Runs over time</h2>']
    lag = view.get("lag")
    if lag and lag.get("lag_slots") is not None:
        hours = "" if lag.get("lag_seconds") is None else f" (~{lag['lag_seconds'] / 3600:.1f} h)"
        out.append(f'<p class="meta" id="lag" data-lag-slots="{int(lag["lag_slots"])}">Lag: {_n(lag["lag_slots"])} '
                   f'slots{_e(hours)} behind tip {int(lag["tip_slot"])}, as seen by {_e(lag["command"])} at '
                   f'{_e(lag["seen_at"])}</p>')
    if not runs:
        out.append('<p class="note">No runs recorded yet (iq.runs: pipeline and follow runs write one row each).</p>'
                   '</section>')
        return "".join(out)
    top_slots = max(int(r["slots_covered"]) for r in runs) or 1
    top_complete = max(int(r["uploads_complete"]) for r in runs) or 1
    out.append('<table id="runs"><tr><th class="l">finished</th><th class="l">command</th><th class="l">status</th>'
               '<th>slots covered</th><th>rows</th><th>complete uploads</th><th>delivered</th><th>lag (slots)</th></tr>')
    for r in runs:
        lag_slots = "" if r.get("tip_slot") is None or r.get("frontier_slot") is None else \
            _n(int(r["tip_slot"]) - int(r["frontier_slot"]))
        bar_slots = 100.0 * int(r["slots_covered"]) / top_slots
        bar_complete = 100.0 * int(r["uploads_complete"]) / top_complete
        out.append(f'<tr data-run="{_e(r["run_id"])}"><td class="l">{_e(r["finished_at"])}</td>'
                   f'<td class="l">{_e(r["command"])}</td><td class="l">{_e(r["status"])}</td>'
                   f'<td><span class="bar" style="width:{bar_slots:.0f}px"></span> {_n(int(r["slots_covered"]))}</td>'
                   f'<td>{_n(int(r["rows_written"]))}</td>'
                   f'<td><span class="bar" style="width:{bar_complete:.0f}px"></span> {_n(int(r["uploads_complete"]))}</td>'
                   f'<td>{_n(int(r["uploads_delivered"]))}</td><td>{lag_slots}</td></tr>')
    out.append("</table></section>")
    return "".join(out)


def delivery_section(view: dict[str, Any]) -> str:
    out = ['<section id="view-delivery" data-view="delivery"><h2>Delivery per target</h2>',
           '<p class="note">From the export ledger <code>iq.exports</code> (dry runs left out): per upload, '
           'delivered once it has a delivered row, else the state of its last attempt; and the complete uploads '
           'never tried at that target.</p>', _legend([(c, label) for _, c, label in DELIVERY_PARTS])]
    if not view["targets"]:
        ready = view.get("ready")
        out.append('<p class="note">Nothing exported yet' + (f" ({_n(ready)} complete upload(s) ready)" if ready else "")
                   + ".</p>")
    else:
        out.append('<table id="delivery-table"><tr><th class="l">target</th><th>delivered</th><th>last attempt failed'
                   '</th><th>refused</th><th>never tried</th><th class="l">state</th><th class="l">last attempt (UTC)'
                   '</th></tr>')
        for t in view["targets"]:
            parts = [(key, int(t.get(key) or 0), colour, label) for key, colour, label in DELIVERY_PARTS]
            out.append(f'<tr class="target" data-target="{_e(t["target"])}" data-delivered="{int(t["delivered"])}" '
                       f'data-failed="{int(t["failed"])}" data-refused="{int(t["refused"])}">'
                       f'<td class="l"><code>{_e(t["target"])}</code></td><td>{_n(t["delivered"])}</td>'
                       f'<td>{_n(t["failed"])}</td><td>{_n(t["refused"])}</td>'
                       f'<td>{"" if t["never_tried"] is None else _n(t["never_tried"])}</td>'
                       f'<td class="l">{_stacked_bar(parts)}</td>'
                       f'<td class="l nowrap">{_e(str(t["last_attempt_at"]).replace("T", " ").removesuffix("+00:00"))}'
                       '</td></tr>')
        out.append("</table>")
        if view["targets_total"] > len(view["targets"]):
            out.append(f'<p class="cut" data-cut="targets">{_n(view["targets_total"] - len(view["targets"]))} more '
                       'target(s) not shown.</p>')
    out.append("</section>")
    return "".join(out)


def render_html(data: dict[str, Any]) -> str:
    """The whole page from `report_data(...)`'s dict."""
    totals = {r["status"]: 0 for r in data["by_status_generation"]["rows"]}
    for r in data["by_status_generation"]["rows"]:
        totals[r["status"]] += int(r["uploads"])
    summary = (f"{_n(sum(totals.values()))} uploads, {_n(totals.get('complete', 0))} complete, "
               f"{_n(data['incomplete']['total'])} incomplete" if data["models_built"]
               else "models not built yet")
    return "".join([
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">',
        # no script, no remote anything: a hostile string that escaped escaping still could not run or call out
        '<meta http-equiv="Content-Security-Policy" content="default-src \'none\'; style-src \'unsafe-inline\'; '
        'img-src data:">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        '<title>iq-etl coverage report</title>', f"<style>{CSS}</style></head><body>",
        f'<header><h1>iq-etl coverage report</h1><p class="meta" id="summary">Generated {_e(data["generated_at"])} · '
        f'{summary} · {_n(data["raw_instructions"])} raw instructions · '
        f'<span id="warehouse">{_e(data.get("warehouse", "(not named)"))}</span></p></header>',
        scan_section(data["scan"]),
        status_section(data["by_status_generation"], data["models_built"]),
        chunks_section(data["chunk_maps"], data["models_built"], int(data["limits"]["cells"])),
        delivery_section(data["deliveries"]),
        history_section(data.get("history") or {}),
        "</body></html>\n",
    ])
