"""`pull`: read the catalog back as a terminal table, CSV, JSON lines or parquet.

Rows stream from the backend in chunks and are written as they come (files atomically: temp file,
then rename), so a pull of a large table never holds it whole. `pull analysis --analysis-name N
--output f.parquet` rebuilds the combined analysis frame from `data_csv` (falling back to the
parquet at `data_path` when the frame was over the size cap and that file is readable), with a
`hash` column first.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import os
import sys
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import IO, Any, cast

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from ..catalog import CatalogBackend, open_catalog, schema
from ..errors import CatalogError, UsageError
from .collect import _pandas_index

#: Columns of the terminal view (without --full); files get every column.
SUMMARY_COLUMNS = {
    "systems": ["hash", "simulation_type", "parametrization", "status", "directory"],
    "overview": ["hash", "item_name", "status", "row_count", "file_count", "updated_at", "directory"],
    "analysis": ["hash", "row_count", "columns", "data_csv_bytes", "timestamp_utc", "directory"],
    "artifact": ["hash", "file_count", "files", "timestamp_utc", "directory"],
}
OUTPUT_FORMATS = {".csv": "csv", ".json": "jsonl", ".jsonl": "jsonl", ".ndjson": "jsonl", ".parquet": "parquet"}
_CELL = 48
_PARSE = pacsv.ParseOptions(newlines_in_values=True)


@dataclass(frozen=True, slots=True)
class Query:
    """One table, equality filters on it, and the columns of its terminal view."""

    table: str
    where: dict[str, Any] = field(default_factory=dict)
    view: str = "systems"


def systems_query(status: str | None = None, simulation_type: str | None = None, hash: str | None = None) -> Query:  # noqa: A002
    """RUN_DATABASE rows, optionally filtered."""
    where = {k: v for k, v in (("status", status), ("simulation_type", simulation_type), ("hash", hash)) if v is not None}
    return Query(schema.RUN_TABLE, where, "systems")


def overview_query(item_type: str, hash: str | None = None) -> Query:  # noqa: A002
    """ANALYSIS_OVERVIEW rows of one item type ('analysis' or 'artifact')."""
    return Query(schema.OVERVIEW_TABLE, {"item_type": item_type, **({"hash": hash} if hash else {})}, "overview")


def item_query(kind: str, name: str, hash: str | None = None) -> Query:  # noqa: A002
    """`ANALYSIS_<name>` or `ARTIFACT_<name>` rows (the name is validated first)."""
    return Query(schema.item_table_name(kind, name), {"hash": hash} if hash else {}, kind)


def open_for_read(db: str | None) -> CatalogBackend:
    """Open an existing catalog for reading; one clear error when it is missing or has no mdbatch schema."""
    catalog = open_catalog(db, must_exist=True)
    try:
        version = catalog.schema_version()
        if version is None:
            raise CatalogError(f"catalog {catalog.display_url} has no mdbatch schema (run `mdbatch init-db` or push first)")
        if version < schema.SCHEMA_VERSION:
            catalog.init_schema()  # migrate before reading new columns
    except BaseException:
        catalog.close()
        raise
    return catalog


def output_format(path: str, fmt: str | None = None) -> str:
    """'csv', 'jsonl' or 'parquet': `fmt` when given, JSON lines for '-' (stdout), else from an output
    file's extension; UsageError otherwise."""
    if fmt is not None:
        if fmt not in set(OUTPUT_FORMATS.values()):
            raise UsageError(f"unknown output format {fmt!r}: use csv, jsonl or parquet")
        return fmt
    if path == "-":
        return "jsonl"
    ext = os.path.splitext(path)[1].lower()
    if ext not in OUTPUT_FORMATS:
        raise UsageError(f"--output {path!r}: use a .csv, .json (JSON lines) or .parquet file name")
    return OUTPUT_FORMATS[ext]


def rows(catalog: CatalogBackend, query: Query, columns: Sequence[str] | None = None, chunk_rows: int = 10_000) -> Iterator[pa.Table]:
    """The query's rows in chunks (every column unless `columns`)."""
    return catalog.iter_rows(query.table, query.where, columns, chunk_rows)


def write_output(catalog: CatalogBackend, query: Query, path: str, fmt: str | None = None) -> int:
    """Write every column of the query's rows to `path` ('-': stdout) as `fmt` (default from the
    name, see `output_format`), a file atomically; rows written."""
    fmt = output_format(path, fmt)
    count = 0
    with _target(path) as handle:
        if fmt == "parquet":
            writer: pq.ParquetWriter | None = None
            for chunk in rows(catalog, query):
                writer = writer or pq.ParquetWriter(handle, chunk.schema)
                writer.write_table(chunk)
                count += chunk.num_rows
            if writer is None:
                pq.write_table(schema.arrow_schema(schema.table_for(query.table)).empty_table(), handle)
            else:
                writer.close()
            return count
        text = io.TextIOWrapper(handle, encoding="utf-8", newline="")
        out = csv.writer(text) if fmt == "csv" else None
        header = [c.name for c in schema.table_for(query.table).columns]
        if out is not None:
            out.writerow(header)
        for chunk in rows(catalog, query):
            for row in chunk.to_pylist():
                if out is not None:
                    out.writerow(["" if v is None else _text(v) for v in row.values()])
                else:
                    text.write(json.dumps(row, default=_json_value, ensure_ascii=False) + "\n")
            count += chunk.num_rows
        text.flush()
        text.detach()
    return count


def render(catalog: CatalogBackend, query: Query, stream: IO[str], *, full: bool = False, limit: int | None = None) -> int:
    """Print the query's rows as an aligned table (summary columns unless `full`); rows printed."""
    definition = schema.table_for(query.table)
    columns = [c.name for c in definition.columns if c.name != "data_csv"] if full else SUMMARY_COLUMNS[query.view]
    widths: list[int] | None = None
    count = 0
    for chunk in rows(catalog, query, columns):
        cells = [[_cell(v) for v in row.values()] for row in chunk.to_pylist()]
        if limit is not None:
            cells = cells[: max(0, limit - count)]
        if widths is None:
            widths = [max([len(c)] + [len(r[i]) for r in cells[:500]]) for i, c in enumerate(columns)]
            stream.write("  ".join(c.ljust(w) for c, w in zip(columns, widths, strict=True)).rstrip() + "\n")
            stream.write("  ".join("-" * w for w in widths) + "\n")
        for row_cells in cells:
            stream.write("  ".join(v.ljust(w) for v, w in zip(row_cells, widths, strict=True)).rstrip() + "\n")
        count += len(cells)
        if limit is not None and count >= limit:
            break
    if widths is None:
        stream.write(f"no rows in {query.table}" + (f" matching {query.where}" if query.where else "") + "\n")
    else:
        stream.write(f"({count} row{'s' if count != 1 else ''}{' shown' if limit is not None and count >= limit else ''})\n")
    return count


@dataclass(slots=True)
class Rebuilt:
    """What `rebuild_frames` wrote: frames, rows, and simulations it had no data for."""

    frames: int = 0
    rows: int = 0
    from_parquet: int = 0
    missing: list[str] = field(default_factory=list)


def rebuild_frames(catalog: CatalogBackend, name: str, path: str, hash: str | None = None) -> Rebuilt:  # noqa: A002
    """The combined frame of analysis `name` (a `hash` column first) as parquet at `path`.

    Two streaming passes: the first settles one schema for all frames (types that differ between
    simulations are widened, e.g. int and float to float, anything else to string), the second
    writes frame by frame.
    """
    query = item_query("analysis", name, hash)
    schemas: list[pa.Schema] = []
    result = Rebuilt()
    for _hash, frame in _frames(catalog, query, result):
        schemas.append(frame.schema)
    target = pa.schema([pa.field("hash", pa.string()), *_unify(schemas)])
    done = Rebuilt()
    with _target(path) as handle, pq.ParquetWriter(handle, target) as writer:
        for h, frame in _frames(catalog, query, done):
            cols = [pa.array([h] * frame.num_rows, pa.string())] + [
                frame[f.name].cast(f.type) if f.name in frame.column_names else pa.nulls(frame.num_rows, f.type)
                for f in target
                if f.name != "hash"
            ]
            writer.write_table(pa.Table.from_arrays(cols, schema=target))
            done.frames += 1
            done.rows += frame.num_rows
    done.missing = result.missing
    return done


def _frames(catalog: CatalogBackend, query: Query, result: Rebuilt) -> Iterator[tuple[str, pa.Table]]:
    for chunk in rows(catalog, query, ["hash", "data_csv", "data_path"], chunk_rows=500):
        for h, text, data_path in zip(
            chunk["hash"].to_pylist(), chunk["data_csv"].to_pylist(), chunk["data_path"].to_pylist(), strict=True
        ):
            if text is not None:
                yield h, pacsv.read_csv(io.BytesIO(text.encode("utf-8")), parse_options=_PARSE)
            elif data_path and os.path.isfile(data_path):
                try:
                    table = pq.read_table(data_path)
                except (pa.ArrowException, OSError):  # truncated, corrupt or unreadable since the push
                    result.missing.append(h)
                    continue
                index = _pandas_index(table.schema.metadata or {})
                keep = [n for n in table.column_names if n not in index and not n.startswith("__index_level_")]
                result.from_parquet += 1
                yield h, table.select(keep).replace_schema_metadata(None)
            else:
                result.missing.append(h)


def _unify(schemas: list[pa.Schema]) -> list[pa.Field]:
    """One field per column name across frames; a column whose types cannot be promoted becomes string."""
    order: dict[str, list[pa.DataType]] = {}
    for s in schemas:
        for f in s:
            if f.name != "hash":
                order.setdefault(f.name, []).append(f.type)
    fields = []
    for column, types in order.items():
        try:
            kind = pa.unify_schemas([pa.schema([(column, t)]) for t in types], promote_options="permissive").field(column).type
        except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError):
            kind = pa.string()
        fields.append(pa.field(column, pa.string() if pa.types.is_null(kind) else kind))
    return fields


@contextlib.contextmanager
def _target(path: str) -> Iterator[IO[bytes]]:
    """Where an output goes: stdout's bytes for '-' (never closed here), else `_atomic(path)`."""
    if path != "-":
        with _atomic(path) as handle:
            yield handle
        return
    sys.stdout.flush()
    yield cast(IO[bytes], _Unclosed(sys.stdout.buffer))
    sys.stdout.buffer.flush()


class _Unclosed(io.RawIOBase):
    """stdout's buffer as a stream whose `close` (by a wrapper or a ParquetWriter) only flushes."""

    def __init__(self, raw: IO[bytes]) -> None:
        super().__init__()
        self._raw = raw
        self._pos = 0

    def writable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def write(self, data: Any) -> int:
        written = self._raw.write(bytes(data))
        self._pos += written
        return written

    def close(self) -> None:
        self._raw.flush()
        super().close()


@contextlib.contextmanager
def _atomic(path: str) -> Iterator[IO[bytes]]:
    """A binary handle on a temp file next to `path` that replaces `path` only if the block succeeds."""
    target = Path(path)
    if target.parent and not target.parent.is_dir():
        raise UsageError(f"--output {path!r}: directory {target.parent} does not exist")
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # an ordinary new file, not mkstemp's 0600
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def _text(value: Any) -> str:
    return value.isoformat() if isinstance(value, datetime) else value.hex() if isinstance(value, bytes) else str(value)


def _json_value(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, bytes):
        return value.hex()
    raise TypeError(f"not JSON serializable: {type(value).__name__}")


def _cell(value: Any) -> str:
    text = "" if value is None else _text(value).replace("\r", " ").replace("\n", " ").replace("\t", " ")
    return text if len(text) <= _CELL else text[: _CELL - 1] + "…"
