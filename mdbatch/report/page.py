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
from .svg import PALETTE, STATUS_COLORS, bar_chart, line_chart, stacked_bar_chart

#: File types drawn individually; the rest are summed into "other".
TOP_EXTENSIONS = 12
#: Runs listed in the history table (the plots show every run).
HISTORY_ROWS = 30


def render_html(data: ReportData) -> str:
    """The report of `data` as one HTML document (str; encode as UTF-8)."""
    script_hash = base64.b64encode(hashlib.sha256(JS.encode("utf-8")).digest()).decode("ascii")
    csp = (
        f"default-src 'none'; style-src 'unsafe-inline'; script-src 'sha256-{script_hash}'; "
        "img-src data:; base-uri 'none'; form-action 'none'"
    )
    s = data.summary
    run_id = str(data.run.get("run_id", ""))
    payload = {
        "tables": {
            "simulations": data.simulations.to_payload(),
            "findings": data.findings.to_payload(),
            "changes": data.change_records.to_payload(),
        }
    }
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
            '<nav><a href="#headline">Headline</a><a href="#plots">Plots</a><a href="#changes">Changes</a>'
            '<a href="#simulations">Simulations</a><a href="#findings">Findings</a><a href="#duplicates">Duplicates</a>'
            '<a href="#history">Run history</a></nav><main>'
        ),
    ]
    if data.notes:
        parts.append('<div class="notes">' + "".join(f"<p>{esc(n)}</p>" for n in data.notes) + "</div>")
    parts += [_headline(data), _plots(data), _changes(data), _tables(), _duplicates(data), _history(data, run_id)]
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
                [(_dup_label(d), float(d["reclaimable_bytes"])) for d in dups],
                human_bytes,
                label="Duplicate groups by reclaimable bytes",
                color=PALETTE[4],
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
    points = data.history
    tips = [f"{p['run_id']} ({p['started']}): " for p in points]
    same_day = len({p["started"][:10] for p in points}) == 1
    when = [p["started"][11:] if same_day else p["started"][:10] for p in points]
    findings = line_chart(
        [(w, p["findings_total"]) for w, p in zip(when, points, strict=True)],
        _int,
        label="Findings over time",
        color=PALETTE[1],
        tips=[t + f"{human_count(p['findings_total'])} findings" for t, p in zip(tips, points, strict=True)],
    )
    volume = line_chart(
        [(w, p["bytes"]) for w, p in zip(when, points, strict=True)],
        human_bytes,
        label="Bytes over time",
        color=PALETTE[0],
        tips=[t + human_bytes(p["bytes"]) for t, p in zip(tips, points, strict=True)],
    )
    panels.append(
        _panel(
            f"This root's audits over time ({len(points)}{', ' + points[0]['started'][:10] if same_day and points else ''})",
            f"<h3>Findings</h3>{findings}<h3>Bytes</h3>{volume}",
            "One audit so far." if len(points) == 1 else "",
        )
    )
    return '<section id="plots"><h2>Plots</h2><div class="grid">' + "".join(panels) + "</div></section>"


def _dup_label(group: dict[str, Any]) -> str:
    name = group["paths"][0].rsplit("/", 1)[-1] if group["paths"] else group["xxh3_128"][:12]
    return f"{name} ×{group['files']:,}"


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
        blocks.append(f'<div class="panel"><h3>{title}</h3><table class="changes"><tbody>{rows}</tbody></table></div>')
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
    head = (
        f'<section id="duplicates"><h2>Duplicates</h2><p>{human_count(t.get("groups", 0))} groups of identical files '
        f"({human_count(t.get('files', 0))} files); {esc(human_bytes(t.get('reclaimable_bytes', 0)))} reclaimable by linking "
        '(files already sharing an inode count once). <span class="mono">mdbatch dedupe</span> plans and applies it.</p>'
    )
    if not data.duplicates:
        return head + "</section>"
    rows = []
    for d in data.duplicates:
        shown = "".join(f"<div>{esc(p)}</div>" for p in d["paths"][:3])
        more = f"<div>… and {len(d['paths']) - 3:,} more</div>" if len(d["paths"]) > 3 else ""
        rows.append(
            f'<tr><td class="n">{esc(human_bytes(d["reclaimable_bytes"]))}</td><td class="n">{esc(human_bytes(d["size"]))}</td>'
            f'<td class="n">{d["files"]:,}</td><td class="n">{d["inodes"]:,}</td><td class="mono">{esc(d["xxh3_128"])}</td>'
            f'<td class="mono" style="white-space:normal">{shown}{more}</td></tr>'
        )
    return (
        head + '<div class="scroll"><table><thead><tr><th class="n">Reclaimable</th><th class="n">Size</th><th class="n">Copies</th>'
        '<th class="n">Inodes</th><th>xxh3-128</th><th>Paths (relative to the root)</th></tr></thead><tbody>'
        + "".join(rows)
        + "</tbody></table></div></section>"
    )


def _history(data: ReportData, run_id: str) -> str:
    runs = data.history[-HISTORY_ROWS:]
    bold = ' style="font-weight:600"'
    rows = "".join(
        f'<tr{bold if r["run_id"] == run_id else ""}><td class="mono">{esc(r["run_id"])}</td><td>{esc(r["started"])}</td>'
        f'<td>{esc(r["status"])}</td><td class="n">{esc(human_count(r["simulations"]))}</td>'
        f'<td class="n">{esc(human_count(r["files"]))}</td>'
        f'<td class="n">{esc(human_bytes(r["bytes"]))}</td><td class="n">{esc(human_count(r["findings_total"]))}</td>'
        f'<td class="n">{esc(human_duration(r["elapsed_s"]))}</td></tr>'
        for r in reversed(runs)
    )
    more = f'<p class="note">The last {HISTORY_ROWS} of {len(data.history):,} audits.</p>' if len(data.history) > HISTORY_ROWS else ""
    return (
        '<section id="history"><h2>Run history of this root</h2><div class="scroll"><table><thead><tr><th>Run</th><th>Started</th>'
        '<th>Status</th><th class="n">Simulations</th><th class="n">Files</th><th class="n">Bytes</th><th class="n">Findings</th>'
        f'<th class="n">Elapsed</th></tr></thead><tbody>{rows}</tbody></table></div>{more}</section>'
    )
