"""The backend interface every catalog (SQLite, PostgreSQL, CSV) implements.

A backend stores the tables of `schema.py` and offers a handful of bulk operations on Arrow
tables: `apply` (upserts and deletes, all in one transaction), `existing_keys` (which keys are
already there, by index lookups), `iter_rows` (typed chunks), `clear` and a few counts. The audit's
writes (`write_batch`, runs, the inventory) are built on top of those here, so each backend only
has to get the primitives right; the shared contract suite in tests/catalog/ runs against all three.
"""

from __future__ import annotations

import abc
import json
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

import pyarrow as pa
import pyarrow.compute as pc

from ..records import FILES_SCHEMA, BatchResult
from . import schema
from .ops import Delete, Op, Update, Upsert, batch_ops, parse_ts, rows_table

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["CatalogBackend", "Delete", "Op", "RunInfo", "Update", "Upsert", "parse_ts", "rows_table"]


@dataclass(frozen=True, slots=True)
class RunInfo:
    """The identity of one mdbatch run, recorded when it starts."""

    run_id: str
    command: str
    root: str | None
    arguments: dict[str, Any] = field(default_factory=dict)
    host: str = ""
    version: str = ""
    started_at: str = ""


class CatalogBackend(abc.ABC):
    """Where audits and pushes land. Each `apply` (so each `write_batch`) is one transaction."""

    #: The URL with any password replaced by ***, safe to print and log.
    display_url: str

    # -- primitives every backend implements ----------------------------------------------------

    @abc.abstractmethod
    def init_schema(self, force: bool = False) -> None:
        """Create the fixed tables and record the schema version, migrating an older catalog.

        With `force`, drop every mdbatch table first (item tables included).
        """

    @abc.abstractmethod
    def schema_version(self) -> int | None:
        """The catalog's recorded schema version, None when it has no schema yet."""

    @abc.abstractmethod
    def tables(self) -> list[str]:
        """Names of the catalog tables that exist, sorted."""

    @abc.abstractmethod
    def apply(self, ops: Sequence[Op]) -> list[int]:
        """Run deletes and upserts in one transaction; rows written (or deleted) per op."""

    @abc.abstractmethod
    def existing_keys(self, table: str, keys: pa.Table) -> pa.Table:
        """The rows of `keys` (the table's key columns) that are present in `table` (see Upsert)."""

    @abc.abstractmethod
    def rows_matching(self, table: str, match: pa.Table, columns: Sequence[str] | None = None) -> pa.Table:
        """Rows of `table` equal to one of the rows of `match` on all of its columns (bulk lookups).

        For example one batch's simulations' inventory: `match` = {root, simulation}.
        """

    @abc.abstractmethod
    def iter_rows(
        self, table: str, where: Mapping[str, Any] | None = None, columns: Sequence[str] | None = None, chunk_rows: int = 50_000
    ) -> Iterator[pa.Table]:
        """Rows of `table` matching the equality filters in `where`, ordered by key, typed, in chunks.

        A missing table raises CatalogError naming it.
        """

    @abc.abstractmethod
    def count_rows(self, table: str, where: Mapping[str, Any] | None = None) -> int:
        """Rows of `table` matching `where` (0 when the table does not exist)."""

    @abc.abstractmethod
    def clear(self, targets: Sequence[tuple[str, Mapping[str, Any]]]) -> list[int]:
        """Delete the rows matching each (table, where) in one transaction; rows deleted per target."""

    @abc.abstractmethod
    def close(self) -> None:
        """Release connections."""

    # -- the audit's interface, built on the primitives -----------------------------------------

    def begin_run(self, run: RunInfo) -> None:
        """Record a run as started ("running")."""
        self.init_schema()
        from . import redact

        arguments = {k: redact(v) if isinstance(v, str) else v for k, v in run.arguments.items()}
        row = {
            "run_id": run.run_id, "command": run.command, "root": run.root, "arguments": json.dumps(arguments, default=str),
            "host": run.host, "version": run.version, "catalog": self.display_url,
            "started_at": parse_ts(run.started_at) or datetime.now(timezone.utc), "status": "running",
        }
        self.apply([Upsert(schema.RUNS.name, rows_table(schema.RUNS, [row]))])

    def finish_run(self, run_id: str, status: str, summary: dict[str, Any]) -> None:
        """Mark a run completed, failed or interrupted and store its summary."""
        ops: list[Op] = []
        if status == "completed":  # resume bookkeeping is only needed for unfinished runs
            ops.append(Delete(schema.SCANNED.name, pa.table({"run_id": [run_id]})))
        row = {"run_id": run_id, "status": status, "ended_at": datetime.now(timezone.utc), "summary": json.dumps(summary, default=str)}
        ops.append(Update(schema.RUNS.name, rows_table(schema.RUNS, [row])))
        self.apply(ops)

    def write_batch(self, run_id: str, root: str, batch: BatchResult) -> None:
        """Write one batch of scans in a single transaction (bulk, never row by row)."""
        self.init_schema()
        self.apply(batch_ops(run_id, root, batch))

    def duplicate_summary(self, root: str) -> dict[str, int]:
        """Identical non-empty files under `root` per the inventory: {groups, files, reclaimable_bytes}.

        Files are identical when size and xxh3-128 agree; paths already sharing an inode count once
        towards what can be reclaimed.
        """
        parts = [
            t.filter(pc.and_(pc.is_valid(t["xxh3_128"]), pc.greater(t["size"], 0)))
            for t in self.iter_rows(schema.FILES.name, {"root": root, "removed_run": None}, ["size", "xxh3_128", "inode", "device"])
        ]
        if not parts:
            return {"groups": 0, "files": 0, "reclaimable_bytes": 0}
        files = pa.concat_tables(parts)
        per_inode = files.group_by(["size", "xxh3_128", "device", "inode"]).aggregate([("size", "count")])
        groups = per_inode.group_by(["size", "xxh3_128"]).aggregate([("size_count", "sum"), ("inode", "count")])
        dup = groups.filter(pc.greater(groups["size_count_sum"], 1))
        reclaim = pc.sum(pc.multiply(pc.subtract(dup["inode_count"], 1), dup["size"])).as_py() or 0
        files_n = pc.sum(dup["size_count_sum"]).as_py() or 0
        return {"groups": dup.num_rows, "files": int(files_n), "reclaimable_bytes": int(reclaim)}

    def file_inventory(self, root: str, chunk_rows: int = 100_000) -> Iterator[pa.Table]:
        """The recorded inventory of `root` (MDBATCH_FILES rows of present simulations, FILES_SCHEMA columns) in chunks."""
        self.init_schema()
        stored = [f.name for f in FILES_SCHEMA if f.name in schema.FILES.c]
        for chunk in self.iter_rows(schema.FILES.name, {"root": root, "removed_run": None}, stored, chunk_rows):
            cols = [chunk[f.name] if f.name in stored else pa.nulls(chunk.num_rows, f.type) for f in FILES_SCHEMA]
            yield pa.Table.from_arrays(cols, schema=FILES_SCHEMA)

    def inventory_of(self, root: str, simulations: Sequence[str]) -> pa.Table:
        """The recorded inventory (FILES_SCHEMA columns) of some simulations of `root`, in one lookup."""
        self.init_schema()
        stored = [f.name for f in FILES_SCHEMA if f.name in schema.FILES.c]
        match = pa.table({"root": pa.array([root] * len(simulations), pa.string()), "simulation": pa.array(list(simulations), pa.string())})
        found = self.rows_matching(schema.FILES.name, match, stored)
        cols = [found[f.name] if f.name in stored else pa.nulls(found.num_rows, f.type) for f in FILES_SCHEMA]
        return pa.Table.from_arrays(cols, schema=FILES_SCHEMA)

    def scanned_simulations(self, run_id: str) -> set[str]:
        """Simulations (relative to the root) that run `run_id` has written so far."""
        self.init_schema()
        return {s for t in self.iter_rows(schema.SCANNED.name, {"run_id": run_id}, ["simulation"]) for s in t["simulation"].to_pylist()}

    def read_table(self, name: str) -> pd.DataFrame:
        """A whole catalog table as a DataFrame (empty frame when the table does not exist)."""
        import pandas as pd

        if name not in self.tables():
            return pd.DataFrame()
        chunks = list(self.iter_rows(name))
        table = pa.concat_tables(chunks) if chunks else schema.arrow_schema(schema.table_for(name)).empty_table()
        return table.to_pandas()

    def __enter__(self) -> CatalogBackend:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

