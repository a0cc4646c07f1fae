"""The report page: one self-contained HTML document from a `ReportData`.

Everything is inline: the stylesheet, the SVG plots (drawn here), the table data (compact JSON in
a non-executed <script type="application/json">) and the script that renders the tables. A
Content-Security-Policy forbids every network load and lets only the report's own script run
(by its hash), so even a string that escaped escaping could not execute.
"""

from __future__ import annotations

import base64
import hashlib
from datetime import datetime
from typing import Any

from .assets import CSS, JS
from .fmt import esc, human_bytes, human_count, human_duration, script_json, shorten
from .gather import ReportData
from .svg import PALETTE, STATUS_COLORS, bar_chart, byte_unit, label_chars, stacked_bar_chart, time_chart

#: File types drawn individually; the rest are summed into "other".
TOP_EXTENSIONS = 12
#: Label width of the duplicate groups' chart: room for a size and an example path.
DUP_LABEL_W = 300


def render_html(data: ReportData) -> str:
    """The report of `data` as one HTML document (str; encode as UTF-8)."""
    script_hash = base64.b64encode(hashlib.sha256(JS.encode("utf-8")).digest()).decode("ascii")
    csp = (
        f"default-src 'none'; style-src 'unsafe-inline'; script-src 'sha256-{script_hash}'; "
        "img-src data:; base-uri 'none'; form-action 'none'"
    )
    s = data.summary
    run_id = str(data.run.get("run_id", ""))
    payload = {"run": run_id, "tables": {name: table.to_payload() for name, table in data.tables.items()}}
    kind, text = verdict(s)
    started = data.run.get("started_at")
    started_text = started.strftime("%Y-%m-%d %H:%M:%S UTC") if isinstance(started, datetime) else str(started or "?")
    parts = [
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">',
        f'<meta http-equiv="Content-Security-Policy" content="{csp}">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>mdbatch report · {esc(shorten(data.root, 60))} · {esc(run_id)}</title>",
        f"<style>{CSS}</style></head><body>",
        "<header>",
        f"<h1>Campaign audit report: {esc(data.root)}</h1>",
        (
            f'<div class="meta">run <span class="mono">{esc(run_id)}</span> · started {esc(started_text)} · '
            f"host {esc(data.run.get('host') or '?')} · outcome {esc(s.get('outcome', data.run.get('status')))} · "
            f"catalog {esc(data.catalog_url)}</div>"
        ),
        f'<div class="verdict {kind}">{esc(text)}</div>',
        "</header>",
        (
            '<nav><a href="#headline">Headline</a><a href="#completeness">Completeness</a><a href="#changes">Changes</a>'
            '<a href="#plots">Plots</a><a href="#simulations">Simulations</a><a href="#findings">Findings</a>'
            '<a href="#duplicates">Duplicates</a><a href="#history">Run history</a></nav><main>'
        ),
    ]
    if data.notes:
        parts.append('<div class="notes">' + "".join(f"<p>{esc(n)}</p>" for n in data.notes) + "</div>")
    parts += [
        _headline(data),
        completeness_section(data),
        _changes(data),
        _plots(data),
        _tables(),
        _duplicates(data),
        history_section(data),
    ]
    parts += [
        "</main>",
        (
            f"<footer>Generated {esc(data.generated_at)} by mdbatch {esc(data.version)}. Self-contained: no network access is needed "
            "to open this file. Simulations, storage and duplicates show the catalog's current inventory of this root; "
            "the headline, findings and changes are those of the run above.</footer>"
        ),
        f'<script type="application/json" id="report-data">{script_json(payload)}</script>',
        f"<script>{JS}</script></body></html>\n",
    ]
    return "".join(parts)


def verdict(summary: dict[str, Any]) -> tuple[str, str]:
    """(css class, sentence): clean, findings, or incomplete (refused, interrupted, failed, abandoned or still running)."""
    outcome = str(summary.get("outcome") or "unknown")
    total = int(summary.get("findings_total") or 0)
    if outcome == "refused":
        reason = str((summary.get("refused") or {}).get("reason") or "it would have recorded what it could not vouch for")
        return "incomplete", f"Refused: {reason}. Nothing of this run was recorded besides the refusal."
    if outcome == "abandoned":
        reason = str((summary.get("abandoned") or {}).get("reason") or "its process is gone")
        return "incomplete", (
            f"Abandoned: the run died without recording its end ({reason}); the numbers cover the batches it "
            f"committed ({total:,} findings so far). Resume it with mdbatch audit ROOT --resume RUN_ID."
        )
    if outcome != "completed":
        return "incomplete", f"Incomplete: the run is {outcome}; the numbers cover the batches it finished ({total:,} findings so far)."
    if total == 0:
        return "clean", "Clean: no findings. Every registry matches its files."
    kinds = {k: int(v) for k, v in (summary.get("findings") or {}).items() if v}
    most = max(kinds.items(), key=lambda kv: (kv[1], kv[0])) if kinds else None
    sims = int(summary.get("simulations_with_findings") or 0)
    tail = f"; most often {most[0]} ({most[1]:,})" if most else ""
    return "findings", f"{total:,} findings in {sims:,} simulations{tail}."


def _card(key: str, value: str, sub: str = "", title: str = "") -> str:
    return (
        f'<div class="card"{f" title={_attr(title)}" if title else ""}><div class="k">{esc(key)}</div>'
        f'<div class="v">{esc(value)}</div><div class="s">{esc(sub)}</div></div>'
    )


def _attr(text: str) -> str:
    return f'"{esc(text)}"'


def _headline(data: ReportData) -> str:
    s = data.summary
    dup = s.get("duplicates") or data.duplicate_totals  # the run's own numbers when it recorded them
    kinds = sum(1 for v in (s.get("findings") or {}).values() if v)
    cards = [
        _card("Simulations", human_count(s.get("simulations")), f"{human_count(s.get('simulations_with_findings') or 0)} with findings"),
        _card("Files", human_count(s.get("files"))),
        _card("Bytes", human_bytes(s.get("bytes")), "", f"{human_count(s.get('bytes'))} bytes"),
        _card("Findings", human_count(s.get("findings_total")), f"{kinds} kind{'s' if kinds != 1 else ''}"),
        _card(
            "Reclaimable",
            human_bytes(dup.get("reclaimable_bytes", 0)),
            f"{human_count(dup.get('groups', 0))} duplicate groups",
            f"{human_count(dup.get('reclaimable_bytes', 0))} bytes in {human_count(dup.get('files', 0))} files",
        ),
        _card(
            "Elapsed",
            human_duration(s.get("elapsed_s")),
            f"on {s['workers']} worker{'s' if s['workers'] != 1 else ''}" if s.get("workers") else "",
        ),
    ]
    return '<section id="headline"><h2>Headline</h2><div class="cards">' + "".join(cards) + "</div></section>"


def _panel(title: str, body: str, note: str = "") -> str:
    return f'<div class="panel"><h3>{esc(title)}</h3>{body}' + (f'<p class="note">{esc(note)}</p>' if note else "") + "</div>"


def _plots(data: ReportData) -> str:
    kinds = sorted(((k, float(v)) for k, v in data.findings_by_kind.items() if v), key=lambda kv: (-kv[1], kv[0]))
    zero = sum(1 for v in data.findings_by_kind.values() if not v)
    exts = data.storage_by_extension[:TOP_EXTENSIONS]
    rest = data.storage_by_extension[TOP_EXTENSIONS:]
    if rest:
        exts = [*exts, (f"other ({len(rest)} types)", sum(r[1] for r in rest), sum(r[2] for r in rest))]
    dups = data.duplicates
    panels = [
        _panel(
            "Simulations by status and simulation type",
            stacked_bar_chart(data.status_by_type, label="Simulations by status and simulation type", colors=STATUS_COLORS),
        ),
        _panel(
            "Findings by kind",
            bar_chart(kinds, _int, label="Findings by kind", color=PALETTE[1]) if kinds else '<p class="empty">No findings.</p>',
            f"{zero} other kinds: none." if kinds and zero else "",
        ),
        _panel(
            "Findings by simulation type and parametrization",
            stacked_bar_chart(data.findings_by_group, label="Findings by simulation type and parametrization")
            if data.findings_by_group
            else '<p class="empty">No findings.</p>',
        ),
        _panel(
            "Storage by file type",
            bar_chart(
                [(e, float(b)) for e, _, b in exts],
                human_bytes,
                label="Storage by file type",
                tooltip=[f"{e}: {human_bytes(b)} in {f:,} files" for e, f, b in exts],
            ),
        ),
        _panel(
            "Storage by simulation type",
            bar_chart(
                [(t, float(b)) for t, _, b in data.storage_by_type],
                human_bytes,
                label="Storage by simulation type",
                color=PALETTE[2],
                tooltip=[f"{t}: {human_bytes(b)} in {f:,} files" for t, f, b in data.storage_by_type],
            ),
        ),
        _panel(
            f"Duplicate groups by reclaimable bytes (top {len(dups)})" if dups else "Duplicate groups",
            bar_chart(
                list(zip(duplicate_labels(dups, label_chars(DUP_LABEL_W) - 4), (float(d["reclaimable_bytes"]) for d in dups), strict=True)),
                human_bytes,
                label="Duplicate groups by reclaimable bytes",
                color=PALETTE[4],
                label_w=DUP_LABEL_W,
                tooltip=[
                    f"{d['paths'][0] if d['paths'] else d['xxh3_128']}: {d['files']:,} copies of "
                    f"{human_bytes(d['size'])}, {human_bytes(d['reclaimable_bytes'])} reclaimable"
                    for d in dups
                ],
            )
            if dups
            else '<p class="empty">No duplicate files.</p>',
        ),
    ]
    return '<section id="plots"><h2>Plots</h2><div class="grid">' + "".join(panels) + "</div></section>"


def duplicate_labels(groups: list[dict[str, Any]], limit: int) -> list[str]:
    """One label per duplicate group: its size and an example path (cut in the middle to `limit`),
    numbered where two would still read the same, so groups of one file name can be told apart."""
    labels: list[str] = []
    for d in groups:
        text = shorten(f"{human_bytes(d['size'])} · {d['paths'][0] if d['paths'] else d['xxh3_128']}", limit)
        n, label = 1, text
        while label in labels:
            n += 1
            label = f"{shorten(text, limit - len(str(n)) - 2)} #{n}"
        labels.append(label)
    return labels


def _int(value: float) -> str:
    return f"{round(value):,}"


def _changes(data: ReportData) -> str:
    c = data.changes
    head = '<section id="changes"><h2>Changes since the previous run</h2>'
    if not c.get("previous_run"):
        return (
            head + '<p class="empty">First audit of this root: nothing to compare with.</p><div id="table-changes" hidden></div></section>'
        )
    blocks = []
    for scope, title in (("files", "Files"), ("simulations", "Simulations"), ("findings", "Findings")):
        rows = "".join(f'<tr><td>{esc(k.replace("_", " "))}</td><td class="n">{esc(human_count(v))}</td></tr>' for k, v in c[scope].items())
        blocks.append(
            f'<div class="panel"><h3>{title}</h3><table class="changes" data-csv="changes-{scope}">'
            f"<thead><tr><th>change</th><th>{scope}</th></tr></thead><tbody>{rows}</tbody></table></div>"
        )
    return (
        head + f'<p>Compared with run <span class="mono">{esc(c["previous_run"])}</span>.</p>'
        f'<div class="cards wide">{"".join(blocks)}</div><h3 class="gap">Change records</h3>'
        '<div id="table-changes"></div></section>'
    )


def _tables() -> str:
    noscript = '<noscript><p class="empty">The tables need JavaScript; the plots above do not.</p></noscript>'
    return (
        '<section id="simulations"><h2>Simulations</h2><p class="note">Click a header to sort, a findings count to see that '
        f'simulation\'s findings.</p>{noscript}<div id="table-simulations"></div></section>'
        f'<section id="findings"><h2>Findings</h2>{noscript}<div id="table-findings"></div></section>'
    )


def _duplicates(data: ReportData) -> str:
    t = data.duplicate_totals or {}
    shown = f" The {len(data.duplicates):,} with most reclaimable bytes:" if data.duplicates else ""
    return (
        f'<section id="duplicates"><h2>Duplicates</h2><p>{human_count(t.get("groups", 0))} groups of identical files '
        f"({human_count(t.get('files', 0))} files); {esc(human_bytes(t.get('reclaimable_bytes', 0)))} reclaimable by linking "
        '(files already sharing an inode count once). <span class="mono">mdbatch dedupe</span> plans and applies it.'
        f'{shown}</p><div id="table-duplicates"></div></section>'
    )


def completeness_section(data: ReportData) -> str:
    """Which simulations have, lack, or have faulty each registered analysis and artifact."""
    t = data.completeness_totals
    head = '<section id="completeness"><h2>Analysis completeness</h2>'
    if not t.get("items"):
        return head + '<p class="empty">No simulation of this root registers an analysis or artifact.</p></section>'
    return (
        head + f"<p>{human_count(t['lacking_simulations'])} of {human_count(t['simulations'])} simulations lack an analysis or "
        f"artifact that others of their type, parametrization and status have; {human_count(t['faulty_simulations'])} "
        f"have one registered but faulty (missing, mismatched, unreadable or unsafe); {human_count(t.get('stale_simulations', 0))} "
        f"have one whose dependency was updated after it was made. {human_count(t['items'])} items "
        'are registered in all.</p><p class="note">Have: registered and intact. Faulty: registered, but not intact. '
        "Lacking: not registered. Stale: registered, with an upstream (extras.depends_on) updated after it was made. "
        "Click a Lacking count to list those simulations.</p>"
        '<div id="table-completeness"></div><h3 class="gap" id="lacking">Simulations lacking an item</h3>'
        '<div id="table-lacking"></div></section>'
    )


def history_section(data: ReportData) -> str:
    """The root's audits over time (findings, new and resolved, simulations per status, bytes) and their table."""
    points = data.history
    times = [p["started"] for p in points]
    tips = [f"{p['run_id']} ({p['started']:%Y-%m-%d %H:%M} UTC) · " for p in points]
    top = max((p["bytes"] or 0 for p in points), default=0)
    divisor, unit = byte_unit(top)
    charts = [
        (
            "Findings",
            time_chart(
                times,
                {"findings": [p["findings_total"] for p in points]},
                _int,
                label="Findings per audit",
                y_title="Findings (count)",
                colors={"findings": PALETTE[1]},
                tips=tips,
            ),
        ),
        (
            "New and resolved findings",
            time_chart(
                times,
                {"new": [p["findings_new"] for p in points], "resolved": [p["findings_resolved"] for p in points]},
                _int,
                label="New and resolved findings per audit",
                y_title="Findings (count)",
                colors={"new": PALETTE[3], "resolved": PALETTE[2]},
                tips=tips,
            ),
        ),
        (
            "Simulations per status",
            time_chart(
                times,
                {s: [p["by_status"].get(s) for p in points] for s in data.history_statuses},
                _int,
                label="Simulations per status per audit",
                y_title="Simulations (count)",
                colors=STATUS_COLORS,
                tips=tips,
            ),
        ),
        (
            "Bytes",
            time_chart(
                times,
                {"bytes": [p["bytes"] for p in points]},
                lambda v: f"{v / divisor:,.1f}" if divisor > 1 else _int(v),
                label="Bytes per audit",
                y_title=f"Stored ({unit})",
                tips=tips,
            ),
        ),
    ]
    note = "One audit so far: the lines start with the next one." if len(points) == 1 else ""
    panels = "".join(_panel(title, chart, note if i == 1 else "") for i, (title, chart) in enumerate(charts))
    return (
        f'<section id="history"><h2>Run history of this root</h2><p>{len(points):,} audit{"s" if len(points) != 1 else ""}; '
        "new and resolved findings compare each audit with the one before it.</p>"
        f'<div class="grid">{panels}</div><h3 class="gap">Audits</h3><div id="table-history"></div></section>'
    )
