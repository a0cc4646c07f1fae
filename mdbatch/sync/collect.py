"""The per-simulation work of a push, as pure functions the Dask workers run (no Dask, no database).

A push makes two passes over a batch of simulations. `collect` scans them (identity, status,
registry checked against parquet footers; no file hashing) and returns the rows of MDFactory's
logical tables, without the analysis data. After the client has dropped what the catalog already
holds (`--diff`), `serialize` fills in `data_csv`: each analysis frame read from its parquet one
record batch at a time and written as CSV, kept only up to the size cap (beyond it only its size
is counted), so no frame ever sits in memory whole.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from ..batch import scan_batch
from ..catalog import schema
from ..catalog.writes import PARQUET_BYTES, logical_rows
from ..naming import is_valid_name
from ..scan import ScanOptions

KINDS = ("systems", "analysis", "artifacts")
#: A push reads what the registry checks need and nothing else: no file is hashed.
PUSH_SCAN = ScanOptions(hash_files=False)
_FRAME_BATCH_ROWS = 65_536
_STRUCTURAL = re.compile(r'[",\r\n]')


@dataclass(frozen=True, slots=True)
class PushUnit:
    """Rows for some catalog tables, written together in one transaction: every row of whole simulations
    (a batch, several merged, or a part of one cut on simulation boundaries)."""

    index: int
    simulations: int
    tables: dict[str, pa.Table]
    findings: int = 0
    invalid_names: int = 0
    elapsed_s: float = 0.0
    #: Frames not stored in data_csv: over the cap, or unreadable when serialized.
    over_cap: int = 0
    unreadable: int = 0
    notes: tuple[str, ...] = field(default_factory=tuple)

    @property
    def rows(self) -> int:
        return sum(t.num_rows for t in self.tables.values())

    @property
    def nbytes(self) -> int:
        """Bytes of Arrow buffers held (an upper bound for sliced tables; cheap to compute)."""
        return sum(t.get_total_buffer_size() for t in self.tables.values())


def wanted_tables(kind: str, tables: dict[str, pa.Table], name: str | None) -> dict[str, pa.Table]:
    """The tables a push of `kind` writes (one item's when `name` is given); overview rows filtered to match."""
    if kind == "systems":
        return {k: v for k, v in tables.items() if k == schema.RUN_TABLE}
    item = "analysis" if kind == "analysis" else "artifact"
    out = {k: v for k, v in tables.items() if schema.item_kind(k) == item and (name is None or k == schema.item_table_name(item, name))}
    overview = tables.get(schema.OVERVIEW_TABLE)
    if overview is not None:
        mask = pc.equal(overview["item_type"], item)
        if name is not None:
            mask = pc.and_(mask, pc.equal(overview["item_name"], name))
        overview = overview.filter(mask)
        if overview.num_rows:
            out[schema.OVERVIEW_TABLE] = overview
    return out


def collect(paths: Sequence[str], root: str | None, kind: str, name: str | None = None, index: int = 0) -> PushUnit:
    """Pass one (a Dask task): scan `paths` and return the rows a push of `kind` writes."""
    started = time.perf_counter()
    batch = scan_batch(list(paths), root, PUSH_SCAN, index)
    tables = wanted_tables(kind, logical_rows(batch, with_sizes=True), name)
    invalid = 0
    if kind != "systems":
        item = batch.analyses if kind == "analysis" else batch.artifacts
        invalid = sum(1 for n in item["name"].to_pylist() if not is_valid_name(n) and (name is None or n == name))
    return PushUnit(
        index=index,
        simulations=batch.simulations,
        tables=tables,
        findings=batch.findings.num_rows,
        invalid_names=invalid,
        elapsed_s=time.perf_counter() - started,
    )


def split_for_serialization(unit: PushUnit, cap: int, budget: int = 64 << 20, max_frames: int = 256) -> list[PushUnit]:
    """`unit` cut on simulation boundaries into `serialize` tasks of at most ~`budget` bytes of CSV
    (estimated from parquet sizes) and `max_frames` frames each, unless one simulation alone holds more.

    Each part holds every row (overview, RUN_DATABASE, items) of its simulations and no other's, so
    whatever transaction writes it never leaves half a simulation. Rows of simulations without
    frames travel with the first part.
    """
    frames = [t for t in unit.tables.values() if PARQUET_BYTES in t.column_names]
    if not frames:
        return [unit]
    cost: dict[str, list[int]] = {}  # simulation hash -> [estimated CSV bytes, frames], in first-seen order
    for table in frames:
        for sim, size in zip(table["hash"].to_pylist(), table[PARQUET_BYTES].to_pylist(), strict=True):
            entry = cost.setdefault(sim, [0, 0])
            entry[0] += min(cap, max(4096, 4 * (size or 0)))
            entry[1] += 1
    part_of: dict[str, int] = {}
    part = used = count = 0
    for sim, (estimate, n) in cost.items():
        if count and (used + estimate > budget or count + n > max_frames):
            part, used, count = part + 1, 0, 0
        part_of[sim] = part
        used += estimate
        count += n
    if part == 0:
        return [unit]
    sims = pa.array(list(part_of), pa.string())
    numbers = pa.array(list(part_of.values()), pa.int64())
    placed = {name: pc.fill_null(pc.take(numbers, pc.index_in(t["hash"], value_set=sims)), 0) for name, t in unit.tables.items()}
    units = []
    for n in range(part + 1):
        tables = {name: t.filter(pc.equal(placed[name], n)) for name, t in unit.tables.items()}
        first = n == 0
        units.append(
            replace(
                unit,
                tables={k: v for k, v in tables.items() if v.num_rows},
                simulations=unit.simulations if first else 0,
                findings=unit.findings if first else 0,
                invalid_names=unit.invalid_names if first else 0,
            )
        )
    return units


def serialize(units: Sequence[PushUnit], cap: int, index: int = 0) -> PushUnit:
    """Pass two (a Dask task): fill `data_csv`/`data_csv_bytes` of the analysis rows of `units` (one unit)."""
    unit = units[0]
    tables = dict(unit.tables)
    over = bad = 0
    for name, table in unit.tables.items():
        if PARQUET_BYTES not in table.column_names:
            continue
        texts: list[str | None] = []
        sizes: list[int | None] = []
        for path in table["data_path"].to_pylist():
            text, size = frame_csv(path, cap)
            texts.append(text)
            sizes.append(size)
            over += size is not None and text is None
            bad += size is None
        table = table.drop_columns([PARQUET_BYTES])
        table = table.append_column("data_csv", pa.array(texts, pa.string())).append_column("data_csv_bytes", pa.array(sizes, pa.int64()))
        tables[name] = table
    return replace(unit, tables=tables, over_cap=unit.over_cap + over, unreadable=unit.unreadable + bad)


def frame_csv(path: str, cap: int) -> tuple[str | None, int | None]:
    """An analysis parquet as CSV text (header, then rows; pandas index columns left out) and its size.

    Streams record batches; the text is returned only when it is at most `cap` bytes, else
    (None, size). (None, None) when the parquet cannot be read.
    """
    try:
        with pq.ParquetFile(path) as pf:
            return _stream_csv(pf, cap)
    except (OSError, ValueError, pa.ArrowException):
        return None, None


def _stream_csv(pf: pq.ParquetFile, cap: int) -> tuple[str | None, int]:
    index_cols = _pandas_index(pf.schema_arrow.metadata or {})
    columns = [n for n in pf.schema_arrow.names if n not in index_cols and not n.startswith("__index_level_")]
    size = 0
    parts: list[bytes] | None = []
    header = True
    for batch in pf.iter_batches(batch_size=_FRAME_BATCH_ROWS, columns=columns):
        chunk = _csv_bytes(pa.Table.from_batches([batch]), header)
        header = False
        size += len(chunk)
        parts = parts if parts is not None and size <= cap else None  # over the cap: keep counting only
        if parts is not None:
            parts.append(chunk)
    if header:  # no rows at all: the header alone
        chunk = _csv_bytes(pf.schema_arrow.empty_table().select(columns), True)
        size = len(chunk)
        parts = [chunk] if size <= cap else None
    return (b"".join(parts).decode("utf-8") if parts is not None else None), size


def _csv_bytes(table: pa.Table, header: bool) -> bytes:
    """CSV like pandas writes it: floats keep a decimal point (100.0, so they read back as floats),
    and nothing is quoted unless a value needs it."""
    cols = []
    for column in table.columns:
        if pa.types.is_floating(column.type):
            text = pc.cast(column, pa.string())
            column = pc.if_else(pc.match_substring_regex(text, r"[.eEnN]"), text, pc.binary_join_element_wise(text, ".0", ""))
        cols.append(column)
    table = pa.table(cols, names=table.column_names)
    plain = not any(_STRUCTURAL.search(n) for n in table.column_names) and not any(
        pc.any(pc.match_substring_regex(c, _STRUCTURAL.pattern)).as_py()
        for c in table.columns
        if pa.types.is_string(c.type) or pa.types.is_large_string(c.type)
    )
    style = "none" if plain else "needed"
    sink = pa.BufferOutputStream()
    pacsv.write_csv(table, sink, pacsv.WriteOptions(include_header=header, quoting_style=style, quoting_header=style))
    return bytes(sink.getvalue())


def _pandas_index(meta: dict[bytes, bytes]) -> frozenset[str]:
    try:
        cols = json.loads(meta[b"pandas"]).get("index_columns", []) if b"pandas" in meta else []
    except (ValueError, AttributeError):
        return frozenset()
    return frozenset(c for c in cols if isinstance(c, str))
