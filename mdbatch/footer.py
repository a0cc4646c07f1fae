"""A parquet file's row count and data columns, from its footer alone.

The scan parses footers from the bytes it already read (small files) or from the file (large ones);
repair reads them the same way to write what a registry should say. Columns that pandas stored as
the index are not data columns.
"""

from __future__ import annotations

import json

import pyarrow as pa
import pyarrow.parquet as pq


def read_footer(data: bytes | None, path: str) -> tuple[int, tuple[str, ...]]:
    """(rows, columns) of the parquet file at `path`, parsed from `data` when its bytes are in memory.

    Raises OSError, ValueError or pyarrow.ArrowException when the footer cannot be read.
    """
    meta = _footer_metadata(data) if data is not None else pq.read_metadata(path)
    index_cols = _pandas_index_columns(meta.metadata)
    columns = tuple(n for n in meta.schema.names if n not in index_cols and not n.startswith("__index_level_"))
    return meta.num_rows, columns


def _footer_metadata(data: bytes) -> pq.FileMetaData:
    """A parquet file's footer from its bytes already in memory (the reader alone: no ParquetFile)."""
    from pyarrow._parquet import ParquetReader

    reader = ParquetReader()
    reader.open(pa.BufferReader(data))
    return reader.metadata


def _pandas_index_columns(meta: dict[bytes, bytes] | None) -> frozenset[str]:
    if not meta or b"pandas" not in meta:
        return frozenset()
    try:
        cols = json.loads(meta[b"pandas"]).get("index_columns", [])
    except (ValueError, AttributeError):
        return frozenset()
    return frozenset(c for c in cols if isinstance(c, str))
