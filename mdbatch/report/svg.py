"""Inline SVG charts, drawn on the server from aggregated numbers (no plotting library, no JS).

Each chart is a self-contained <svg> with a viewBox (it scales to its container), a <title> on
every mark for the exact value, and every label escaped.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime

from .fmt import esc, shorten

WIDTH = 600
ROW = 24
LABEL_W = 190
VALUE_W = 86
#: Status colours follow the life cycle: pale (build) to dark (completed); unknown statuses grey.
STATUS_COLORS = {"build": "#c6dbef", "equilibrated": "#6baed6", "production": "#2171b5", "completed": "#08306b"}
PALETTE = ("#3b7dd8", "#e8743b", "#19a979", "#ed4a7b", "#945ecf", "#13a4b4", "#525df4", "#bf399e", "#6c8893", "#ee6868")
OTHER_COLOR = "#9aa5b1"
#: Width of a label character (12 px DejaVu Sans), for cutting labels to the room they have.
CHAR_W = 6.5
Format = Callable[[float], str]


def bar_chart(
    items: Sequence[tuple[str, float]],
    fmt: Format,
    *,
    label: str,
    color: str = PALETTE[0],
    tooltip: Sequence[str] | None = None,
    label_w: int = LABEL_W,
) -> str:
    """Horizontal bars, one per (name, value), in the given order; `label` names the chart for screen
    readers; names are cut to what `label_w` pixels hold (LABEL_CHARS at the default)."""
    if not items:
        return _empty(label)
    top = max((v for _, v in items), default=0) or 1
    bar_w = WIDTH - label_w - VALUE_W
    chars = label_chars(label_w)
    height = ROW * len(items) + 8
    parts = [_open(height, label)]
    for i, (name, value) in enumerate(items):
        y = 4 + i * ROW
        w = max(0.0, bar_w * value / top)
        tip = tooltip[i] if tooltip else f"{name}: {fmt(value)}"
        parts.append(
            f"<g><title>{esc(tip)}</title>"
            f'<text x="{label_w - 8}" y="{y + 16}" text-anchor="end" class="lbl">{esc(shorten(name, chars))}</text>'
            f'<rect x="{label_w}" y="{y + 3}" width="{w:.1f}" height="{ROW - 7}" rx="2" fill="{color}"/>'
            f'<text x="{label_w + w + 6:.1f}" y="{y + 16}" class="val">{esc(fmt(value))}</text></g>'
        )
    parts.append("</svg>")
    return "".join(parts)


def stacked_bar_chart(rows: dict[str, dict[str, int]], *, label: str, colors: dict[str, str] | None = None) -> str:
    """Horizontal stacked bars: one bar per row key, one segment per series key, with a legend."""
    series = list(next(iter(rows.values())).keys()) if rows else []
    if not rows or not any(sum(r.values()) for r in rows.values()):
        return _empty(label)
    colors = {**{s: PALETTE[i % len(PALETTE)] for i, s in enumerate(series)}, **(colors or {})}
    top = max(sum(r.values()) for r in rows.values()) or 1
    bar_w = WIDTH - LABEL_W - VALUE_W
    legend, legend_h = _legend(series, colors, LABEL_W)
    height = legend_h + ROW * len(rows) + 8
    parts = [_open(height, label), *legend]
    for i, (name, counts) in enumerate(rows.items()):
        y = legend_h + 4 + i * ROW
        total = sum(counts.values())
        parts.append(
            f'<text x="{LABEL_W - 8}" y="{y + 16}" text-anchor="end" class="lbl"><title>{esc(name)}</title>'
            f"{esc(shorten(name, label_chars(LABEL_W)))}</text>"
        )
        offset = float(LABEL_W)
        for s, n in counts.items():
            if not n:
                continue
            w = bar_w * n / top
            parts.append(
                f'<rect x="{offset:.1f}" y="{y + 3}" width="{w:.1f}" height="{ROW - 7}" fill="{colors.get(s, OTHER_COLOR)}">'
                f"<title>{esc(name)} · {esc(s)}: {n:,}</title></rect>"
            )
            offset += w
        parts.append(f'<text x="{offset + 6:.1f}" y="{y + 16}" class="val">{total:,}</text>')
    parts.append("</svg>")
    return "".join(parts)


def line_chart(
    points: Sequence[tuple[str, float | None]], fmt: Format, *, label: str, color: str = PALETTE[0], tips: Sequence[str] | None = None
) -> str:
    """A line over evenly spaced runs (x labels are the runs' dates); None values leave a gap."""
    values = [v for _, v in points if v is not None]
    if not values:
        return _empty(label)
    height, left, right, top_pad, bottom = 190, 70, 16, 14, 34
    lo, hi = 0.0, _nice(max(values))
    plot_w, plot_h = WIDTH - left - right, height - top_pad - bottom
    n = len(points)

    def px(i: int) -> float:
        return left + (plot_w * i / (n - 1) if n > 1 else plot_w / 2)

    def py(v: float) -> float:
        return top_pad + plot_h * (1 - (v - lo) / ((hi - lo) or 1))

    parts = [_open(height, label)]
    for frac in (0.0, 0.5, 1.0):
        tick = lo + (hi - lo) * frac
        y = py(tick)
        parts.append(
            f'<line x1="{left}" x2="{WIDTH - right}" y1="{y:.1f}" y2="{y:.1f}" class="grid"/>'
            f'<text x="{left - 6}" y="{y + 4:.1f}" text-anchor="end" class="val">{esc(fmt(tick))}</text>'
        )
    for i in sorted({0, n - 1, *range(0, n, max(1, math.ceil(n / 5)))}):
        anchor = "start" if i == 0 and n > 1 else "end" if i == n - 1 and n > 1 else "middle"
        parts.append(f'<text x="{px(i):.1f}" y="{height - 12}" text-anchor="{anchor}" class="lbl">{esc(points[i][0][:10])}</text>')
    segments: list[list[tuple[float, float]]] = [[]]
    for i, (_, v) in enumerate(points):
        if v is None:
            segments.append([])
        else:
            segments[-1].append((px(i), py(v)))
    for seg in segments:
        if len(seg) > 1:
            parts.append(
                f'<polyline fill="none" stroke="{color}" stroke-width="2" points="{" ".join(f"{x:.1f},{y:.1f}" for x, y in seg)}"/>'
            )
    for i, (name, v) in enumerate(points):
        if v is not None:
            tip = tips[i] if tips else f"{name}: {fmt(v)}"
            parts.append(
                f'<circle cx="{px(i):.1f}" cy="{py(v):.1f}" r="{4 if n < 60 else 2}" fill="{color}"><title>{esc(tip)}</title></circle>'
            )
    parts.append("</svg>")
    return "".join(parts)


def label_chars(width: float) -> int:
    """How many label characters fit in `width` pixels (less the gap to the bar)."""
    return max(8, int((width - 10) // CHAR_W))


def _legend(names: Sequence[str], colors: Mapping[str, str], left: float) -> tuple[list[str], int]:
    """Legend entries (a swatch and a name each) from `left`, wrapping at the chart's width; (parts, height)."""
    parts, x, y = [], left, 6
    for name in names:
        width = 26 + 7 * min(len(name), 16)
        if x + width > WIDTH and x > left:
            x, y = left, y + 18
        parts.append(
            f'<rect x="{x:.0f}" y="{y}" width="12" height="12" rx="2" fill="{colors.get(name, OTHER_COLOR)}"/>'
            f'<text x="{x + 16:.0f}" y="{y + 10}" class="lbl">{esc(shorten(name, 16))}</text>'
        )
        x += width
    return parts, y + 18


def _nice(value: float) -> float:
    """The smallest 1, 2 or 5 × 10^k at least `value` (a round top for an axis)."""
    if value <= 0:
        return 1.0
    exp = 10 ** math.floor(math.log10(value))
    for step in (1, 2, 5, 10):
        if step * exp >= value:
            return float(step * exp)
    return float(10 * exp)  # pragma: no cover


def _open(height: int, label: str) -> str:
    return f'<svg viewBox="0 0 {WIDTH} {height}" width="100%" role="img" aria-label="{esc(label)}" class="chart">'


def _empty(label: str) -> str:
    return f'<p class="empty">{esc(label)}: nothing to show.</p>'


#: Candidate spacings of time ticks (seconds), the smallest giving at most MAX_TICKS ticks is used.
TIME_STEPS = (60, 300, 900, 1800, 3600, 3 * 3600, 6 * 3600, 12 * 3600, 86400, 2 * 86400, 7 * 86400, 14 * 86400, 28 * 86400)
MAX_TICKS = 6
DAY = 86400


def time_ticks(lo: float, hi: float) -> tuple[list[tuple[float, str]], str]:
    """Ticks ((epoch seconds, label)) between `lo` and `hi` (UTC) and the x-axis title that goes with them."""
    span = max(hi - lo, 1.0)
    step = next((s for s in TIME_STEPS if span / s <= MAX_TICKS - 1), None)
    if step is None:  # months or years: about five ticks on whole days
        step = math.ceil(span / (MAX_TICKS - 1) / DAY) * DAY
    first = math.ceil(lo / step) * step
    ticks = [first + i * step for i in range(int((hi - first) // step) + 1)]
    days = {datetime.fromtimestamp(t, UTC).date() for t in (lo, hi)}
    if step >= DAY:
        form, title = "%Y-%m-%d", "Audit start (UTC date)"
    elif len(days) == 1:
        form, title = "%H:%M", f"Audit start on {next(iter(days)).isoformat()} (UTC)"
    else:
        form, title = "%m-%d %H:%M", "Audit start (UTC)"
    return [(t, datetime.fromtimestamp(t, UTC).strftime(form)) for t in ticks], title


def time_chart(
    times: Sequence[datetime],
    series: Mapping[str, Sequence[float | None]],
    fmt: Format,
    *,
    label: str,
    y_title: str,
    colors: Mapping[str, str] | None = None,
    tips: Sequence[str] | None = None,
) -> str:
    """Lines over a dated time axis (x at each audit's start), one per series, with axis titles and a
    legend; None values leave a gap. `tips` prefixes each point's tooltip (one per time)."""
    stamps = [t.timestamp() for t in times]
    values = [v for vs in series.values() for v in vs if v is not None]
    if not stamps or not values:
        return _empty(label)
    pad = max((max(stamps) - min(stamps)) * 0.04, 1800.0)
    lo, hi = min(stamps) - pad, max(stamps) + pad
    ticks, x_title = time_ticks(lo, hi)
    palette = {name: PALETTE[i % len(PALETTE)] for i, name in enumerate(series)} | dict(colors or {})
    left = 78
    entries, legend = _legend(list(series), palette, left) if len(series) > 1 else ([], 0)
    height, right, top_pad, bottom = 220 + legend, 20, 14 + legend, 52
    plot_w, plot_h = WIDTH - left - right, height - top_pad - bottom
    y_hi = _nice(max(values))

    def px(t: float) -> float:
        return left + plot_w * (t - lo) / (hi - lo)

    def py(v: float) -> float:
        return top_pad + plot_h * (1 - v / y_hi)

    parts = [_open(height, label)]
    shown: set[str] = set()
    for frac in (0.0, 0.5, 1.0):
        y, text = py(y_hi * frac), fmt(y_hi * frac)
        if text in shown:  # 0.5 of a count axis up to 1 would read "0" twice
            continue
        shown.add(text)
        parts.append(
            f'<line x1="{left}" x2="{WIDTH - right}" y1="{y:.1f}" y2="{y:.1f}" class="grid"/>'
            f'<text x="{left - 6}" y="{y + 4:.1f}" text-anchor="end" class="val">{esc(text)}</text>'
        )
    base = top_pad + plot_h
    for t, text in ticks:
        parts.append(
            f'<line x1="{px(t):.1f}" x2="{px(t):.1f}" y1="{base}" y2="{base + 4}" class="grid"/>'
            f'<text x="{px(t):.1f}" y="{base + 17}" text-anchor="middle" class="lbl tick">{esc(text)}</text>'
        )
    parts.append(f'<text x="{left + plot_w / 2:.1f}" y="{height - 8}" text-anchor="middle" class="axis">{esc(x_title)}</text>')
    parts.append(
        f'<text transform="translate(14 {top_pad + plot_h / 2:.1f}) rotate(-90)" text-anchor="middle" class="axis">{esc(y_title)}</text>'
    )
    parts += entries
    radius = 4 if len(stamps) < 60 else 2
    for name, vs in series.items():
        points = [(px(t), py(v), v, i) for i, (t, v) in enumerate(zip(stamps, vs, strict=True)) if v is not None]
        runs: list[list[tuple[float, float]]] = [[]]
        for i, v in enumerate(vs):
            if v is None:
                runs.append([])
            else:
                runs[-1].append((px(stamps[i]), py(v)))
        for seg in runs:
            if len(seg) > 1:
                xy = " ".join(f"{a:.1f},{b:.1f}" for a, b in seg)
                parts.append(f'<polyline fill="none" stroke="{palette[name]}" stroke-width="2" points="{xy}"/>')
        for cx, cy, v, i in points:
            tip = (tips[i] if tips else "") + (f"{name}: " if legend else "") + fmt(v)
            parts.append(f'<circle cx="{cx:.1f}" cy="{cy:.1f}" r="{radius}" fill="{palette[name]}"><title>{esc(tip)}</title></circle>')
    parts.append("</svg>")
    return "".join(parts)


def byte_unit(top: float) -> tuple[float, str]:
    """(divisor, unit) to show byte counts up to `top` in: the largest binary unit `top` reaches."""
    divisor, unit = 1.0, "B"
    for name in ("KiB", "MiB", "GiB", "TiB", "PiB"):
        if top < divisor * 1024:
            break
        divisor, unit = divisor * 1024, name
    return divisor, unit
