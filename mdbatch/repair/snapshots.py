"""Registry snapshots in the catalog (MDBATCH_REGISTRY_SNAPSHOTS): the operations that write them, the reads.

A snapshot is one registry replaced by one run: its exact bytes before and after with their sha256.
`repair --undo RUN` puts back the `before` bytes of RUN's snapshots; `registry history` lists a
registry's snapshots and `registry restore --to RUN:SEQ` puts back one snapshot's `before` bytes.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import pyarrow as pa

from ..catalog import schema
from ..catalog.base import CatalogBackend
from ..catalog.ops import Delete, Op, Upsert, parse_ts, rows_table
from ..errors import UsageError

TABLE = schema.REGISTRY_SNAPSHOTS
#: Columns without the bytes: what listings read.
LISTING = ["run_id", "seq", "root", "simulation", "hash", "directory", "action", "sha256_before", "sha256_after", "taken_at", "detail"]


@dataclass(frozen=True, slots=True)
class Snapshot:
    """One row of MDBATCH_REGISTRY_SNAPSHOTS (bytes None: no registry file at that moment)."""

    run_id: str
    seq: int
    root: str | None
    simulation: str | None
    hash: str | None
    directory: str
    action: str
    sha256_before: str | None
    bytes_before: bytes | None
    sha256_after: str | None
    bytes_after: bytes | None
    taken_at: datetime
    detail: str | None = None

    @property
    def id(self) -> str:
        """How `registry restore --to` names it."""
        return f"{self.run_id}:{self.seq}"

    def row(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in (c.name for c in TABLE.columns)}

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> Snapshot:
        values: dict[str, Any] = {c.name: row.get(c.name) for c in TABLE.columns}
        return cls(**values)

    @classmethod
    def from_intent(cls, run_id: str, root: str | None, rec: Mapping[str, Any], before: bytes | None, after: bytes | None) -> Snapshot:
        """The snapshot a journal intent stands for (recovery writes it when the replace happened)."""
        return cls(
            run_id,
            int(rec["seq"]),
            root,
            rec.get("simulation"),
            rec.get("hash"),
            rec["directory"],
            rec.get("action", "repair"),
            rec.get("sha_before"),
            before,
            rec.get("sha_after"),
            after,
            parse_ts(rec.get("taken_at")) or datetime.now(UTC),
            json.dumps(rec.get("detail")) if rec.get("detail") is not None else None,
        )


def insert_ops(snapshots: Sequence[Snapshot], *, skip_present: bool = False) -> list[Op]:
    """The operation writing `snapshots` (present keys skipped with `skip_present`, as recovery does)."""
    if not snapshots:
        return []
    rows = rows_table(TABLE, [s.row() for s in snapshots])
    return [Upsert(TABLE.name, rows, on_conflict="skip" if skip_present else "error")]


def delete_ops(run_id: str, seqs: Sequence[int]) -> list[Op]:
    """The operation removing the snapshots `seqs` of `run_id` (replaces that never happened)."""
    if not seqs:
        return []
    return [Delete(TABLE.name, pa.table({"run_id": pa.array([run_id] * len(seqs), pa.string()), "seq": pa.array(list(seqs), pa.int64())}))]


def _rows(catalog: CatalogBackend, where: Mapping[str, Any], columns: Sequence[str] | None = None) -> list[dict[str, Any]]:
    if TABLE.name not in catalog.tables():
        return []
    names = list(columns) if columns is not None else [c.name for c in TABLE.columns]
    return [row for chunk in catalog.iter_rows(TABLE.name, where, names) for row in chunk.to_pylist()]


def of_run(catalog: CatalogBackend, run_id: str) -> list[Snapshot]:
    """Every snapshot run `run_id` took, in order."""
    return sorted((Snapshot.from_row(r) for r in _rows(catalog, {"run_id": run_id})), key=lambda s: s.seq)


def of_directory(catalog: CatalogBackend, directory: str, *, with_bytes: bool = False) -> list[dict[str, Any]]:
    """The snapshots of the registry of simulation `directory` (absolute), oldest first."""
    rows = _rows(catalog, {"directory": os.path.abspath(directory)}, None if with_bytes else LISTING)
    return sorted(rows, key=lambda r: (r["taken_at"], r["run_id"], r["seq"]))


def one(catalog: CatalogBackend, snapshot_id: str) -> Snapshot:
    """The snapshot named `RUN:SEQ` (as `registry history` lists it); UsageError when there is none."""
    run_id, _, seq = snapshot_id.rpartition(":")
    if not run_id or not seq.isdigit():
        raise UsageError(f"a snapshot is named RUN:SEQ as `mdbatch registry history` lists it, got {snapshot_id!r}")
    rows = _rows(catalog, {"run_id": run_id, "seq": int(seq)})
    if not rows:
        raise UsageError(f"no registry snapshot {snapshot_id!r} in this catalog")
    return Snapshot.from_row(rows[0])
