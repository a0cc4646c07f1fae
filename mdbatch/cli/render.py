"""The one way the CLI prints rows: an aligned text table, CSV or JSON lines, to a file or to stdout.

Every command that lists rows (runs, findings, pull previews, status) goes through `Table` (the
terminal view) or `emit` (a whole DataFrame, to the terminal or a file), so tables look alike
everywhere: a header, a rule, one line per row, and a count. `-` as an output path means stdout.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import sys
from collections.abc import Iterable, Mapping, Sequence
from datetime import date, datetime
from typing import IO, TYPE_CHECKING, Any

from ..errors import UsageError

if TYPE_CHECKING:
    import pandas as pd

#: Widest cell of a terminal table; longer text is cut with an ellipsis.
CELL = 60
#: Rows of a streamed table whose cells set the column widths.
WIDTH_SAMPLE = 500
#: File formats by extension (`pull` also writes .parquet, on its own).
EXTENSIONS = {".csv": "csv", ".json": "jsonl", ".jsonl": "jsonl", ".ndjson": "jsonl"}
FORMATS = ("table", "jsonl", "csv")


def text(value: Any) -> str:
    """A cell as one line of text: '' for missing values, ISO times without microseconds."""
    if value is None or _is_na(value) or (isinstance(value, float) and math.isnan(value)):
        return ""
    if isinstance(value, datetime):
        return value.isoformat(sep=" ", timespec="seconds")
    if isinstance(value, float):
        return str(int(value)) if value.is_integer() else f"{value:.3f}".rstrip("0").rstrip(".")
    if isinstance(value, bytes):
        return value.hex()
    if isinstance(value, (dict, list, tuple)):
        return json.dumps(value, ensure_ascii=False, default=str)
    return str(value).replace("\r", " ").replace("\n", " ").replace("\t", " ")


def _is_na(value: Any) -> bool:
    try:
        import pandas as pd

        return value is pd.NA or value is pd.NaT
    except ImportError:  # pragma: no cover - pandas is a dependency
        return False


def _numeric(values: Iterable[Any]) -> bool:
    seen = False
    for v in values:
        if v is None or _is_na(v) or (isinstance(v, str) and v == ""):
            continue
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            return False
        seen = True
    return seen


class Table:
    """An aligned text table written as rows come (widths from the first `WIDTH_SAMPLE` rows).

    `write` takes rows as sequences in column order; `close` writes the count line
    (`(3 rows)`, or `(50 of 312 rows shown)` when `limit` cut it short) and returns the rows shown.
    """

    def __init__(self, columns: Sequence[str], stream: IO[str] | None = None, *, limit: int | None = None, cell: int = CELL) -> None:
        self.columns = list(columns)
        self.stream = stream or sys.stdout
        self.limit, self.cell = limit, cell
        self.widths: list[int] | None = None
        self.right: list[bool] = []
        self.shown = 0
        self.total = 0
        self._pending: list[Sequence[Any]] = []

    def write(self, rows: Iterable[Sequence[Any]]) -> None:
        for row in rows:
            self.total += 1
            if self.limit is not None and self.shown + len(self._pending) >= self.limit:
                continue
            self._pending.append(row)
            if self.widths is not None or len(self._pending) >= WIDTH_SAMPLE:
                self._flush()

    def _flush(self) -> None:
        if self.widths is None:
            sample = self._pending
            self.right = [_numeric(r[i] for r in sample) for i in range(len(self.columns))]
            self.widths = [max([len(c)] + [len(self._cut(text(r[i]))) for r in sample]) for i, c in enumerate(self.columns)]
            head = [c.rjust(w) if right else c.ljust(w) for c, w, right in zip(self.columns, self.widths, self.right, strict=True)]
            self.stream.write("  ".join(head).rstrip() + "\n")
            self.stream.write("  ".join("-" * w for w in self.widths) + "\n")
        for row in self._pending:
            cells = [self._cut(text(v)) for v in row]
            line = [v.rjust(w) if right else v.ljust(w) for v, w, right in zip(cells, self.widths, self.right, strict=True)]
            self.stream.write("  ".join(line).rstrip() + "\n")
        self.shown += len(self._pending)
        self._pending = []

    def _cut(self, value: str) -> str:
        """`value` within the cell width: a path loses its middle (its end tells paths apart), other text its end."""
        if len(value) <= self.cell:
            return value
        if "/" in value and " " not in value:
            head = self.cell // 3
            return value[:head] + "…" + value[len(value) - (self.cell - head - 1) :]
        return value[: self.cell - 1] + "…"

    def close(self, empty: str = "(no rows)", *, footer: bool = True) -> int:
        """Write what is left and the count line (unless not `footer`); `empty` instead when there was no row."""
        if self._pending or (self.widths is None and self.total):
            self._flush()
        if not self.total:
            self.stream.write(empty + "\n")
        elif not footer:
            pass
        elif self.shown < self.total:
            self.stream.write(f"({self.shown} of {self.total} rows shown)\n")
        else:
            self.stream.write(f"({self.total} row{'' if self.total == 1 else 's'})\n")
        return self.shown


def table(
    rows: Iterable[Sequence[Any]],
    columns: Sequence[str],
    stream: IO[str] | None = None,
    *,
    empty: str = "(no rows)",
    footer: bool = True,
    **kw: Any,
) -> int:
    """Print `rows` as one `Table` (`empty` instead when there are none); rows shown."""
    out = Table(columns, stream, **kw)
    out.write(rows)
    return out.close(empty, footer=footer)


def jsonable(value: Any) -> Any:
    """A cell as JSON: missing values null, times ISO, numpy scalars plain."""
    if value is None or _is_na(value) or (isinstance(value, float) and math.isnan(value)):
        return None
    if isinstance(value, (datetime, date)):
        return value.isoformat()
    if isinstance(value, bytes):
        return value.hex()
    if hasattr(value, "item") and not isinstance(value, (list, dict, str)):
        return value.item()
    return value


def csv_cell(value: Any) -> str:
    """A cell for CSV: nested values as JSON (never a Python repr), missing values empty."""
    value = jsonable(value)
    if value is None:
        return ""
    if isinstance(value, (dict, list, tuple)):
        return json.dumps(value, ensure_ascii=False, default=str)
    return str(value)


def target_format(output: str | None, fmt: str | None, *, default: str) -> str:
    """The format to write: `fmt` when given; JSON lines for `-` (data asked for on stdout); from
    the extension of an output file; else (no --output) `default`."""
    if fmt:
        return fmt
    if output == "-":
        return "jsonl"
    if output:
        ext = os.path.splitext(output)[1].lower()
        if ext not in EXTENSIONS:
            raise UsageError(f"--output {output!r}: use a .csv or .json/.jsonl file name, '-' for stdout, or --format")
        return EXTENSIONS[ext]
    return default


def stdout_default() -> str:
    """What a listing prints to stdout when no format is asked for: a table on a terminal, JSON lines otherwise."""
    return "table" if sys.stdout.isatty() else "jsonl"


def emit(
    frame: pd.DataFrame,
    output: str | None = None,
    fmt: str | None = None,
    *,
    default: str = "table",
    table_columns: Sequence[str] | None = None,
    **kw: Any,
) -> str | None:
    """Write a DataFrame as `fmt` (see `target_format`) to `output` (a file, written atomically; '-'
    or None: stdout); a table shows `table_columns` (default all). Returns a line saying what was
    written to a file (None for stdout)."""
    chosen = target_format(output, fmt, default=default)
    to_file = bool(output) and output != "-"
    if chosen == "table":
        if to_file:
            raise UsageError("--format table is for the terminal; write a file as csv or jsonl")
        shown = frame[list(table_columns)] if table_columns is not None else frame
        table(shown.itertuples(index=False, name=None), list(shown.columns), **kw)
        return None
    body = dumps(frame.to_dict(orient="records"), list(frame.columns), chosen)
    if not to_file:
        sys.stdout.write(body)
        return None
    from ..atomic import atomic_write_text

    assert output is not None
    atomic_write_text(output, body)
    return f"wrote {len(frame)} rows to {output}"


def dumps(records: Iterable[Mapping[str, Any]], columns: Sequence[str], fmt: str) -> str:
    """Records as CSV (with a header) or JSON lines."""
    buffer = io.StringIO()
    if fmt == "csv":
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow(columns)
        for r in records:
            writer.writerow([csv_cell(r.get(c)) for c in columns])
    elif fmt == "jsonl":
        for r in records:
            buffer.write(json.dumps({c: jsonable(r.get(c)) for c in columns}, ensure_ascii=False, default=str) + "\n")
    else:
        raise UsageError(f"unknown format {fmt!r}: use one of {', '.join(FORMATS)}")
    return buffer.getvalue()
