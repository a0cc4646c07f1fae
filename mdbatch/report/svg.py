"""Inline SVG charts, drawn on the server from aggregated numbers (no plotting library, no JS).

Each chart is a self-contained <svg> with a viewBox (it scales to its container), a <title> on
every mark for the exact value, and every label escaped.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

from .fmt import esc, shorten

WIDTH = 600
ROW = 24
LABEL_W = 190
VALUE_W = 86
#: Status colours follow the life cycle: pale (build) to dark (completed); unknown statuses grey.
STATUS_COLORS = {"build": "#c6dbef", "equilibrated": "#6baed6", "production": "#2171b5", "completed": "#08306b"}
PALETTE = ("#3b7dd8", "#e8743b", "#19a979", "#ed4a7b", "#945ecf", "#13a4b4", "#525df4", "#bf399e", "#6c8893", "#ee6868")
OTHER_COLOR = "#9aa5b1"
Format = Callable[[float], str]


def bar_chart(
    items: Sequence[tuple[str, float]], fmt: Format, *, label: str, color: str = PALETTE[0], tooltip: Sequence[str] | None = None
) -> str:
    """Horizontal bars, one per (name, value), in the given order; `label` names the chart for screen readers."""
    if not items:
        return _empty(label)
    top = max((v for _, v in items), default=0) or 1
    bar_w = WIDTH - LABEL_W - VALUE_W
    height = ROW * len(items) + 8
    parts = [_open(height, label)]
    for i, (name, value) in enumerate(items):
        y = 4 + i * ROW
        w = max(0.0, bar_w * value / top)
        tip = tooltip[i] if tooltip else f"{name}: {fmt(value)}"
        parts.append(
            f"<g><title>{esc(tip)}</title>"
            f'<text x="{LABEL_W - 8}" y="{y + 16}" text-anchor="end" class="lbl">{esc(shorten(name, 30))}</text>'
            f'<rect x="{LABEL_W}" y="{y + 3}" width="{w:.1f}" height="{ROW - 7}" rx="2" fill="{color}"/>'
            f'<text x="{LABEL_W + w + 6:.1f}" y="{y + 16}" class="val">{esc(fmt(value))}</text></g>'
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
    legend_h = 24
    height = legend_h + ROW * len(rows) + 8
    parts = [_open(height, label)]
    x = LABEL_W
    for s in series:
        parts.append(
            f'<rect x="{x}" y="6" width="12" height="12" rx="2" fill="{colors.get(s, OTHER_COLOR)}"/>'
            f'<text x="{x + 16}" y="16" class="lbl">{esc(shorten(s, 16))}</text>'
        )
        x += 26 + 7 * min(len(s), 16)
    for i, (name, counts) in enumerate(rows.items()):
        y = legend_h + 4 + i * ROW
        total = sum(counts.values())
        parts.append(
            f'<text x="{LABEL_W - 8}" y="{y + 16}" text-anchor="end" class="lbl"><title>{esc(name)}</title>{esc(shorten(name, 30))}</text>'
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
