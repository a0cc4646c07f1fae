"""Write operations on catalog tables (Arrow in; a list of them is one transaction) and the Arrow
helpers every backend shares (typing rows for a table, one row per key, anti-joins).

`Upsert`, `Delete` and `Update` are what every backend's `apply` executes. What an audit or a push
writes is built from them in `writes`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from . import schema

#: How a write treats a key that is already present (see `Upsert`).
ON_CONFLICT = ("error", "skip", "replace", "new")


@dataclass(frozen=True, slots=True)
class Upsert:
    """Rows for one table, written by key.

    `rows` holds the key columns and any subset of the others (Arrow types of `schema.arrow_schema`);
    columns left out are NULL in new rows and untouched in existing ones. `on_conflict`:
    ``replace`` overwrites; ``skip`` leaves present keys alone; ``error`` makes the whole
    transaction fail with DuplicateKeysError if any key is present. A key is *present* when its row
    exists and, for tables with a `schema.present_column`, that column is not NULL (rows an audit
    recorded without data are filled in, not skipped). With ``replace``, the `keep` columns keep
    their stored value as long as the `keep_if_same` columns do not change. ``new`` declares the
    keys absent (the caller deleted them earlier in the same transaction) and unique within `rows`:
    a plain bulk insert, the cheapest write (a present key then fails the transaction). Tables
    without keys (findings) are appended to.
    """

    table: str
    rows: pa.Table
    on_conflict: str = "replace"
    keep: tuple[str, ...] = ()
    keep_if_same: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.on_conflict not in ON_CONFLICT:
            raise ValueError(f"on_conflict must be one of {ON_CONFLICT}, got {self.on_conflict!r}")


@dataclass(frozen=True, slots=True)
class Delete:
    """Delete the rows of `table` that equal one of the rows of `rows` on all of its columns."""

    table: str
    rows: pa.Table


@dataclass(frozen=True, slots=True)
class Update:
    """Set the other columns of `rows` on the existing rows equal to a row of `rows` on `match`
    (default: the table's key columns); rows of `rows` that match nothing are ignored.

    With `match` a part of the key (e.g. root and simulation of MDBATCH_FILES), one row of `rows`
    updates every stored row that shares it; `match` values must then be unique within `rows`.
    """

    table: str
    rows: pa.Table
    match: tuple[str, ...] = ()

    def match_columns(self) -> tuple[str, ...]:
        """The columns rows are matched on."""
        return self.match or schema.key_columns(schema.table_for(self.table))


Op = Upsert | Delete | Update


def parse_ts(value: str | datetime | None) -> datetime | None:
    """An ISO 8601 timestamp as an aware UTC datetime (None stays None; junk becomes None)."""
    if value is None or value == "":
        return None
    if isinstance(value, datetime):
        parsed = value
    else:
        try:
            parsed = datetime.fromisoformat(value)
        except (TypeError, ValueError):
            return None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.astimezone(UTC)


def rows_table(table: Any, rows: Sequence[Mapping[str, Any]]) -> pa.Table:
    """Python dicts (same keys in each) as an Arrow table typed for `table`'s columns."""
    names = list(rows[0]) if rows else []
    arrow = schema.arrow_schema(table, names)
    return pa.Table.from_arrays([pa.array([r[n] for r in rows], type=f.type) for n, f in zip(names, arrow, strict=True)], schema=arrow)


def typed(table: Any, rows: pa.Table) -> pa.Table:
    """`rows` cast to the Arrow types of `table`'s columns (unknown columns are an error)."""
    unknown = [n for n in rows.column_names if n not in table.c]
    if unknown:
        raise ValueError(f"{table.name} has no column(s) {unknown}")
    target = schema.arrow_schema(table, rows.column_names)
    return rows if rows.schema.equals(target) else rows.cast(target)


def timestamp_text(column: pa.Array | pa.ChunkedArray, suffix: str = "") -> pa.Array | pa.ChunkedArray:
    """UTC timestamps as 'YYYY-MM-DD HH:MM:SS.ffffff' + `suffix` (NULL stays NULL).

    Formatting the zone-less value is ~30x faster in Arrow than formatting a zoned one.
    """
    text = pc.cast(column.cast(pa.timestamp("us")), pa.string())
    return pc.binary_join_element_wise(text, suffix, "") if suffix else text


def key_strings(rows: pa.Table, keys: Sequence[str]) -> pa.Array:
    """One string per row identifying its key (columns joined by NUL, which no key can contain)."""
    cols = [pc.cast(rows[k], pa.string()) for k in keys]
    if len(cols) == 1:
        return pc.fill_null(cols[0], "\x01")
    return pc.binary_join_element_wise(*[pc.fill_null(c, "\x01") for c in cols], "\x00")


def unique_keys(rows: pa.Table, keys: Sequence[str], keep: str = "last") -> pa.Table:
    """`rows` with one row per key: the first or the last occurrence, in the original order."""
    if not keys or rows.num_rows < 2:
        return rows
    ids = key_strings(rows, keys)
    if pc.count_distinct(ids).as_py() == rows.num_rows:
        return rows
    index = pa.table({"k": ids, "i": pa.array(range(rows.num_rows), pa.int64())})
    chosen = index.group_by("k", use_threads=False).aggregate([("i", "max" if keep == "last" else "min")])
    picked = chosen.column(1)
    return rows.take(pc.take(picked, pc.sort_indices(picked)))


def without_keys(rows: pa.Table, keys: Sequence[str], present: pa.Table) -> pa.Table:
    """The rows of `rows` whose key is not among the rows of `present` (an anti-join)."""
    if present.num_rows == 0 or rows.num_rows == 0:
        return rows
    return rows.filter(pc.invert(pc.is_in(key_strings(rows, keys), value_set=key_strings(present, keys))))
