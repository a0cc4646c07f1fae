"""Text for the report: HTML escaping, script-safe JSON, and human-readable numbers.

Every string that comes from a catalog (simulation names, finding items, analysis names) reaches
the page through :func:`esc` (HTML text and attributes) or :func:`script_json` (the embedded data),
never verbatim.
"""

from __future__ import annotations

import html
import json
from typing import Any

#: Characters that must not appear literally inside a <script> element's JSON.
_SCRIPT_UNSAFE = str.maketrans({"<": "\\u003c", ">": "\\u003e", "&": "\\u0026", "\u2028": "\\u2028", "\u2029": "\\u2029"})


def esc(value: object) -> str:
    """`value` as HTML text safe in element content and in quoted attributes."""
    return html.escape("" if value is None else str(value), quote=True)


def script_json(payload: Any) -> str:
    """`payload` as compact JSON that cannot end or confuse the <script> element holding it."""
    text = json.dumps(payload, ensure_ascii=False, separators=(",", ":"), allow_nan=False, default=str)
    return text.translate(_SCRIPT_UNSAFE)


def human_bytes(n: float | None) -> str:
    """1536 -> '1.5 KiB'; binary units, one decimal."""
    if n is None:
        return "–"
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if abs(size) < 1024 or unit == "PiB":
            return f"{int(size)} B" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{n} B"  # pragma: no cover - the loop always returns


def human_count(n: float | None) -> str:
    """12345 -> '12,345'."""
    return "–" if n is None else f"{int(n):,}"


def human_duration(seconds: float | None) -> str:
    """2.41 -> '2.4 s', 192 -> '3 min 12 s', 3900 -> '1 h 5 min'."""
    if seconds is None:
        return "–"
    s = float(seconds)
    if s < 60:
        return f"{s:.1f} s"
    if s < 3600:
        return f"{int(s // 60)} min {int(s % 60)} s"
    return f"{int(s // 3600)} h {int(s % 3600 // 60)} min"


def shorten(text: str, limit: int) -> str:
    """`text` cut to `limit` characters with an ellipsis in the middle (keeps both ends of paths)."""
    if len(text) <= limit:
        return text
    head = (limit - 1) // 2
    return text[:head] + "…" + text[len(text) - (limit - 1 - head) :]
