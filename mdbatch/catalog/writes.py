"""What an audit writes, as operations: MDFactory's logical tables and mdbatch's inventory for one batch.

`logical_rows` turns a scan batch into the rows of RUN_DATABASE, ANALYSIS_OVERVIEW, ANALYSIS_<name>
and ARTIFACT_<name> (a push writes those too); `batch_ops` adds the inventory, the scanned list and
the findings, all one transaction. Storage itself (how the operations reach a database) is the
backends' business.
"""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime

import pyarrow as pa
import pyarrow.compute as pc

from ..batch import BatchResult
from ..hashcache import HASH_CACHE_VERSION
from ..naming import is_valid_name
from . import schema
from .ops import Delete, Op, Upsert, parse_ts, rows_table, typed

#: Transit column of analysis rows between a push's two passes: the parquet's size (never stored).
PARQUET_BYTES = "_parquet_bytes"


def logical_rows(batch: BatchResult, *, with_sizes: bool = False) -> dict[str, pa.Table]:
    """MDFactory's logical tables for one scan batch: RUN_DATABASE, ANALYSIS_OVERVIEW, ANALYSIS_<n>, ARTIFACT_<n>.

    `directory` is the simulation's absolute path in every table; `data_path` the parquet's. Items
    whose name cannot be a table name appear in the overview only (status ``invalid``). Analysis
    rows carry no `data_csv` (the push serializes it later); `with_sizes` adds the parquet's size.
    Built column by column in Arrow: no per-row Python objects.
    """
    out: dict[str, pa.Table] = {}
    systems, analyses, artifacts = batch.systems, batch.analyses, batch.artifacts
    if systems.num_rows:
        columns = ["hash", "engine", "parametrization", "simulation_type", "input_data", "input_data_type", "directory", "status"]
        run = systems.select(columns).append_column("timestamp_utc", pc.cast(systems["scanned_at"], _TIMESTAMP))
        out[schema.RUN_TABLE] = typed(schema.RUN_DATABASE, run)
    overview = _overview(systems, analyses, artifacts)
    if overview.num_rows:
        out[schema.OVERVIEW_TABLE] = overview
    now = pa.scalar(datetime.now(UTC), _TIMESTAMP)
    for name, rows in _per_item(analyses, with_sizes):
        directory = _directories(systems, rows["simulation"])
        data_path = pc.binary_join_element_wise(directory, "/.analysis/", rows["filename"], "")
        table = schema.analysis_table(name)
        items = pa.table(
            {
                "hash": rows["hash"],
                "directory": directory,
                "simulation_type": rows["simulation_type"],
                "row_count": rows["file_rows"],
                "columns": rows["columns"],
                "data_path": data_path,
                "timestamp_utc": pa.repeat(now, rows.num_rows),
            }
        )
        items = typed(table, items)
        out[table.name] = items.append_column(PARQUET_BYTES, rows["file_size"]) if with_sizes else items
    for name, rows in _per_item(artifacts, False):
        table = schema.artifact_table(name)
        items = pa.table(
            {
                "hash": rows["hash"],
                "directory": _directories(systems, rows["simulation"]),
                "simulation_type": rows["simulation_type"],
                "file_count": rows["file_count"],
                "files": rows["files"],
                "checksums": rows["checksums"],
                "timestamp_utc": pa.repeat(now, rows.num_rows),
            }
        )
        out[table.name] = typed(table, items)
    return out


_TIMESTAMP = pa.timestamp("us", tz="UTC")


def _directories(systems: pa.Table, simulations: pa.ChunkedArray | pa.Array) -> pa.Array:
    """The absolute directory of each of `simulations` (relative paths), from the batch's systems
    (a simulation the batch does not hold keeps its relative path)."""
    where = pc.index_in(simulations, value_set=systems["simulation"].combine_chunks())
    found = pc.take(systems["directory"].combine_chunks(), pc.fill_null(where, 0)) if systems.num_rows else simulations
    return pc.if_else(pc.is_valid(where), found, simulations)


def _overview(systems: pa.Table, analyses: pa.Table, artifacts: pa.Table) -> pa.Table:
    """ANALYSIS_OVERVIEW rows: one per registered analysis and artifact, with its status."""
    parts = []
    for kind, items in (("analysis", analyses), ("artifact", artifacts)):
        if not items.num_rows:
            continue
        n = items.num_rows
        counts = items["file_count"] if kind == "artifact" else pa.repeat(pa.scalar(1, pa.int64()), n)
        rows = items["file_rows"] if kind == "analysis" else pa.nulls(n, pa.int64())
        updated = pa.array([parse_ts(u) for u in items["updated_at"].to_pylist()], _TIMESTAMP)
        parts.append(
            pa.table(
                {
                    "hash": items["hash"],
                    "item_type": pa.repeat(pa.scalar(kind), n),
                    "item_name": items["name"],
                    "simulation_type": items["simulation_type"],
                    "directory": _directories(systems, items["simulation"]),
                    "status": items["status"],
                    "row_count": rows,
                    "file_count": counts,
                    "updated_at": updated,
                }
            )
        )
    if not parts:
        return schema.arrow_schema(schema.ANALYSIS_OVERVIEW).empty_table()
    return typed(schema.ANALYSIS_OVERVIEW, pa.concat_tables([typed(schema.ANALYSIS_OVERVIEW, p) for p in parts]))


def _per_item(items: pa.Table, with_sizes: bool) -> list[tuple[str, pa.Table]]:
    """The rows of each item name that can be a table name, sorted by name (with sizes: only analyses
    whose parquet could be read, the ones a push serializes)."""
    if not items.num_rows:
        return []
    if with_sizes:
        items = items.filter(pc.is_in(items["status"], value_set=pa.array(["ok", "mismatch"])))
    names = sorted(n for n in set(items["name"].to_pylist()) if is_valid_name(n))
    return [(name, items.filter(pc.equal(items["name"], name))) for name in names]


def batch_ops(run_id: str, root: str, batch: BatchResult, keep_inventory: frozenset[str] | set[str] = frozenset()) -> list[Op]:
    """The operations that write one audit batch: everything it scanned, in one transaction.

    Each scanned simulation's overview rows and file inventory are replaced (what vanished from disk
    disappears); analysis rows keep a pushed `data_csv` while the analysis's rows and columns are
    unchanged. Simulations in `keep_inventory` have exactly the inventory (paths, stats, digests)
    the catalog holds, so their scan is what was recorded: none of their rows is rewritten (their
    findings are, per run).
    """
    tables = logical_rows(_without_simulations(batch, keep_inventory) if keep_inventory else batch)
    ops: list[Op] = []
    if schema.RUN_TABLE in tables:
        ops.append(Upsert(schema.RUN_TABLE, tables[schema.RUN_TABLE]))
        # The overview mirrors each scanned simulation's registry exactly: replace its rows.
        ops.append(Delete(schema.OVERVIEW_TABLE, tables[schema.RUN_TABLE].select(["hash"])))
    if schema.OVERVIEW_TABLE in tables:
        ops.append(Upsert(schema.OVERVIEW_TABLE, tables[schema.OVERVIEW_TABLE]))
    for name, rows in tables.items():
        kind = schema.item_kind(name)
        if kind == "analysis":
            ops.append(Upsert(name, rows, keep=("data_csv", "data_csv_bytes"), keep_if_same=("row_count", "columns")))
        elif kind == "artifact":
            ops.append(Upsert(name, rows))
    ops.extend(_inventory_ops(run_id, root, batch, batch.systems.column("simulation").to_pylist(), keep_inventory))
    ops.extend(lineage_ops(root, batch))
    return ops


def lineage_ops(root: str, batch: BatchResult) -> list[Op]:
    """Replace the lineage edges of every simulation the batch scanned (kept ones keep theirs: their
    registry and file mtimes are what the recorded fingerprint vouches for)."""
    sims = [s for s in batch.systems.column("simulation").to_pylist() if s not in batch.kept]
    if not sims:
        return []
    roots = pa.repeat(pa.scalar(root), len(sims))
    ops: list[Op] = [Delete(schema.LINEAGE.name, pa.table({"root": roots, "simulation": pa.array(sims, pa.string())}))]
    edges = batch.lineage
    if edges.num_rows:
        rows = edges.add_column(0, "root", pa.repeat(pa.scalar(root), edges.num_rows))
        ops.append(Upsert(schema.LINEAGE.name, typed(schema.LINEAGE, rows)))
    return ops


def _without_simulations(batch: BatchResult, simulations: frozenset[str] | set[str]) -> BatchResult:
    """The batch without the systems, analyses and artifacts of `simulations`."""
    value_set = pa.array(sorted(simulations), pa.string())

    def drop(table: pa.Table) -> pa.Table:
        return table.filter(pc.invert(pc.is_in(table.column("simulation"), value_set=value_set))) if table.num_rows else table

    return dataclasses.replace(batch, systems=drop(batch.systems), analyses=drop(batch.analyses), artifacts=drop(batch.artifacts))


def _inventory_ops(
    run_id: str, root: str, batch: BatchResult, simulations: list[str], keep: frozenset[str] | set[str] = frozenset()
) -> list[Op]:
    """Replace the inventory of every simulation in the batch (except those in `keep`, whose
    recorded inventory is already identical); record the scan and its findings."""
    ops: list[Op] = []
    rewrite = [s for s in simulations if s not in keep]
    if rewrite:
        sims = pa.array(rewrite, pa.string())
        ops.append(Delete(schema.FILES.name, pa.table({"root": pa.repeat(pa.scalar(root), len(sims)), "simulation": sims})))
    files = batch.files
    if keep and files.num_rows:
        files = files.filter(pc.invert(pc.is_in(files.column("simulation"), value_set=pa.array(sorted(keep), pa.string()))))
    if files.num_rows:
        n = files.num_rows
        rows = files.add_column(0, "root", pa.repeat(pa.scalar(root), n)).append_column("run_id", pa.repeat(pa.scalar(run_id), n))
        rows = rows.append_column("cache_version", pa.repeat(pa.scalar(HASH_CACHE_VERSION, pa.int64()), n))
        stored = [c for c in rows.column_names if c in schema.FILES.c]  # per-run flags (e.g. `cached`) are not stored
        # Every simulation written here had its rows deleted above: the rows are new, a plain bulk insert.
        ops.append(Upsert(schema.FILES.name, typed(schema.FILES, rows.select(stored)), on_conflict="new"))
    if simulations:
        scanned = pa.table({"run_id": pa.repeat(pa.scalar(run_id), len(simulations)), "simulation": pa.array(simulations, pa.string())})
        ops.append(Upsert(schema.SCANNED.name, scanned, on_conflict="skip"))
    found = batch.findings
    if found.num_rows:
        rows = found.add_column(0, "run_id", pa.repeat(pa.scalar(run_id), found.num_rows))
        ops.append(Upsert(schema.FINDINGS.name, typed(schema.FINDINGS, rows)))
    return ops


def run_row(
    run_id: str,
    command: str,
    root: str | None,
    *,
    status: str = "running",
    started_at: datetime | None = None,
    arguments: str = "{}",
    host: str = "",
    pid: int | None = None,
    job: str | None = None,
    version: str = "",
    catalog: str = "",
    heartbeat_at: datetime | None = None,
    ended_at: datetime | None = None,
    summary: str | None = None,
) -> Upsert:
    """The operation recording one run's row in MDBATCH_RUNS (`arguments` and `summary` as JSON text)."""
    row = {
        "run_id": run_id,
        "command": command,
        "root": root,
        "arguments": arguments,
        "host": host,
        "version": version,
        "catalog": catalog,
        "started_at": started_at or datetime.now(UTC),
        "ended_at": ended_at,
        "status": status,
        "summary": summary,
        "pid": pid,
        "heartbeat_at": heartbeat_at,
        "job": job,
    }
    return Upsert(schema.RUNS.name, rows_table(schema.RUNS, [row]))
