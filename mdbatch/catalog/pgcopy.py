"""PostgreSQL's binary COPY format, built from Arrow columns without a Python loop over rows.

Each row is `int16 field count`, then per field `int32 length` (-1 for NULL) and the value in
PostgreSQL's binary representation: text as UTF-8, bigint/integer as big-endian 8/4 bytes,
timestamptz as big-endian microseconds since 2000-01-01 UTC, bytea as is. Every piece is an Arrow
array (numpy does the byte swapping), one `binary_join_element_wise` glues each row together, and
the result's data buffer *is* the COPY payload. The server parses this ~3x faster than CSV.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from sqlalchemy import BigInteger, DateTime, Integer, LargeBinary

HEADER = b"PGCOPY\n\xff\r\n\x00" + struct.pack(">ii", 0, 0)
TRAILER = struct.pack(">h", -1)
#: Microseconds from the Unix epoch to PostgreSQL's (2000-01-01 UTC).
PG_EPOCH_US = 946_684_800_000_000
_NULL = pa.scalar(b"\xff\xff\xff\xff", pa.large_binary())
_EMPTY = pa.scalar(b"", pa.large_binary())
#: Target size of one COPY chunk (its rows are encoded and sent together).
CHUNK_BYTES = 32 << 20


def pg_types(table: Any, columns: Sequence[str]) -> list[str]:
    """The binary COPY type of each of `columns` of a SQLAlchemy table."""
    out = []
    for name in columns:
        kind = table.c[name].type
        if isinstance(kind, BigInteger):
            out.append("int8")
        elif isinstance(kind, Integer):
            out.append("int4")
        elif isinstance(kind, DateTime):
            out.append("timestamptz")
        elif isinstance(kind, LargeBinary):
            out.append("bytea")
        else:
            out.append("text")
    return out


def copy_chunks(rows: pa.Table, types: Sequence[str]) -> Iterator[pa.Buffer | bytes]:
    """The whole binary COPY stream for `rows`: header, row data in chunks, trailer."""
    yield HEADER
    per_row = max(1, rows.nbytes // max(1, rows.num_rows))
    step = max(1, min(rows.num_rows, CHUNK_BYTES // per_row)) if rows.num_rows else 1
    for start in range(0, rows.num_rows, step):
        yield encode_rows(rows.slice(start, step), types)
    yield TRAILER


def encode_rows(rows: pa.Table, types: Sequence[str]) -> pa.Buffer:
    """The binary COPY tuples (no header or trailer) for `rows`."""
    n = rows.num_rows
    parts: list[pa.Array] = [_fixed(np.full(n, rows.num_columns, dtype=">i2"), 2)]
    for column, kind in zip(rows.columns, types, strict=True):
        parts.extend(_field(column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column, kind))
    joined = pc.binary_join_element_wise(*parts, _EMPTY)
    offsets = np.frombuffer(joined.buffers()[1], dtype=np.int64, count=n + 1, offset=joined.offset * 8)
    return joined.buffers()[2].slice(int(offsets[0]), int(offsets[-1] - offsets[0]))


def _field(column: pa.Array, kind: str) -> tuple[pa.Array, pa.Array]:
    """(length prefixes, values) for one column; NULL is length -1 and no value."""
    n = len(column)
    valid = pc.is_valid(column)
    if kind in ("text", "bytea"):
        if kind == "text":
            column = pc.replace_substring(column, "\x00", "\ufffd")  # text cannot hold NUL
        values = pc.fill_null(column.cast(pa.large_binary()), _EMPTY)
        lengths = pc.binary_length(values).to_numpy(zero_copy_only=False).astype(">i4")
    else:
        width = 4 if kind == "int4" else 8
        ints = pc.fill_null(column.cast(pa.int64()), 0).to_numpy(zero_copy_only=False)
        if width == 4 and len(ints) and (ints.min() < -(2**31) or ints.max() >= 2**31):
            raise ValueError(f"integer out of range for an INTEGER column: {int(ints.max() if ints.max() >= 2**31 else ints.min())}")
        if kind == "timestamptz":
            ints = ints - PG_EPOCH_US
        values = _fixed(ints.astype(">i4" if width == 4 else ">i8"), width)
        lengths = np.full(n, width, dtype=">i4")
    prefix = _fixed(lengths, 4)
    if column.null_count:
        prefix = pc.if_else(valid, prefix, _NULL)
        values = pc.if_else(valid, values, _EMPTY)
    return prefix, values


def _fixed(values: np.ndarray, width: int) -> pa.Array:  # type: ignore[type-arg]
    """Each element's raw bytes (already big-endian) as a large_binary array."""
    buffer = pa.py_buffer(np.ascontiguousarray(values).tobytes())
    return pa.FixedSizeBinaryArray.from_buffers(pa.binary(width), len(values), [None, buffer]).cast(pa.large_binary())
