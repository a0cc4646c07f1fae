"""What an audit writes, as operations: MDFactory's logical tables and mdbatch's inventory for one batch.

`logical_rows` turns a scan batch into the rows of RUN_DATABASE, ANALYSIS_OVERVIEW, ANALYSIS_<name>
and ARTIFACT_<name> (a push writes those too); `batch_ops` adds the inventory, the scanned list and
the findings, all one transaction. Storage itself (how the operations reach a database) is the
backends' business.
"""

from __future__ import annotations

import dataclasses
from datetime import datetime, timezone
from typing import Any

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
    """
    now = datetime.now(timezone.utc)
    systems = batch.systems.to_pydict()
    analyses = batch.analyses.to_pydict()
    artifacts = batch.artifacts.to_pydict()
    where = dict(zip(systems["simulation"], systems["directory"], strict=True))
    out: dict[str, pa.Table] = {}
    run_rows = [
        {"hash": h, "engine": e, "parametrization": p, "simulation_type": t, "input_data": i, "input_data_type": it,
         "directory": d, "status": s, "timestamp_utc": parse_ts(ts)}
        for h, e, p, t, i, it, d, s, ts in zip(
            systems["hash"], systems["engine"], systems["parametrization"], systems["simulation_type"], systems["input_data"],
            systems["input_data_type"], systems["directory"], systems["status"], systems["scanned_at"], strict=True,
        )
    ]
    if run_rows:
        out[schema.RUN_TABLE] = rows_table(schema.RUN_DATABASE, run_rows)
    overview = [
        {"hash": h, "item_type": "analysis", "item_name": n, "simulation_type": t, "directory": where.get(d, d), "status": s,
         "row_count": r, "file_count": 1, "updated_at": parse_ts(u)}
        for h, n, t, d, s, r, u in zip(
            analyses["hash"], analyses["name"], analyses["simulation_type"], analyses["simulation"], analyses["status"],
            analyses["file_rows"], analyses["updated_at"], strict=True,
        )
    ] + [
        {"hash": h, "item_type": "artifact", "item_name": n, "simulation_type": t, "directory": where.get(d, d), "status": s,
         "row_count": None, "file_count": c, "updated_at": parse_ts(u)}
        for h, n, t, d, s, c, u in zip(
            artifacts["hash"], artifacts["name"], artifacts["simulation_type"], artifacts["simulation"], artifacts["status"],
            artifacts["file_count"], artifacts["updated_at"], strict=True,
        )
    ]
    if overview:
        out[schema.OVERVIEW_TABLE] = rows_table(schema.ANALYSIS_OVERVIEW, overview)
    per_analysis: dict[str, list[dict[str, Any]]] = {}
    sizes: dict[str, list[int | None]] = {}
    for h, d, t, n, r, c, fn, st, size in zip(
        analyses["hash"], analyses["simulation"], analyses["simulation_type"], analyses["name"], analyses["file_rows"],
        analyses["columns"], analyses["filename"], analyses["status"], analyses["file_size"], strict=True,
    ):
        if is_valid_name(n) and (not with_sizes or st in ("ok", "mismatch")):
            path = where.get(d, d)
            per_analysis.setdefault(n, []).append(
                {"hash": h, "directory": path, "simulation_type": t, "row_count": r, "columns": c,
                 "data_path": f"{path}/.analysis/{fn}", "timestamp_utc": now}
            )
            sizes.setdefault(n, []).append(size)
    for name, rows in sorted(per_analysis.items()):
        table = schema.analysis_table(name)
        typed_rows = rows_table(table, rows)
        if with_sizes:
            typed_rows = typed_rows.append_column(PARQUET_BYTES, pa.array(sizes[name], pa.int64()))
        out[table.name] = typed_rows
    per_artifact: dict[str, list[dict[str, Any]]] = {}
    for h, d, t, n, c, f, sums in zip(
        artifacts["hash"], artifacts["simulation"], artifacts["simulation_type"], artifacts["name"], artifacts["file_count"],
        artifacts["files"], artifacts["checksums"], strict=True,
    ):
        if is_valid_name(n):
            per_artifact.setdefault(n, []).append(
                {"hash": h, "directory": where.get(d, d), "simulation_type": t, "file_count": c, "files": f, "checksums": sums, "timestamp_utc": now}
            )
    for name, rows in sorted(per_artifact.items()):
        table = schema.artifact_table(name)
        out[table.name] = rows_table(table, rows)
    return out


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
    return ops


def _without_simulations(batch: BatchResult, simulations: frozenset[str] | set[str]) -> BatchResult:
    """The batch without the systems, analyses and artifacts of `simulations`."""
    value_set = pa.array(sorted(simulations), pa.string())

    def drop(table: pa.Table) -> pa.Table:
        return table.filter(pc.invert(pc.is_in(table.column("simulation"), value_set=value_set))) if table.num_rows else table

    return dataclasses.replace(batch, systems=drop(batch.systems), analyses=drop(batch.analyses), artifacts=drop(batch.artifacts))


def _inventory_ops(run_id: str, root: str, batch: BatchResult, simulations: list[str], keep: frozenset[str] | set[str] = frozenset()) -> list[Op]:
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
        ops.append(Upsert(schema.FILES.name, typed(schema.FILES, rows.select(stored))))
    if simulations:
        scanned = pa.table({"run_id": pa.repeat(pa.scalar(run_id), len(simulations)), "simulation": pa.array(simulations, pa.string())})
        ops.append(Upsert(schema.SCANNED.name, scanned, on_conflict="skip"))
    found = batch.findings
    if found.num_rows:
        rows = found.add_column(0, "run_id", pa.repeat(pa.scalar(run_id), found.num_rows))
        ops.append(Upsert(schema.FINDINGS.name, typed(schema.FINDINGS, rows)))
    return ops


def run_row(
    run_id: str, command: str, root: str | None, *, status: str = "running", started_at: datetime | None = None,
    arguments: str = "{}", host: str = "", pid: int | None = None, job: str | None = None, version: str = "", catalog: str = "",
    heartbeat_at: datetime | None = None, ended_at: datetime | None = None, summary: str | None = None,
) -> Upsert:
    """The operation recording one run's row in MDBATCH_RUNS (`arguments` and `summary` as JSON text)."""
    row = {
        "run_id": run_id, "command": command, "root": root, "arguments": arguments, "host": host, "version": version,
        "catalog": catalog, "started_at": started_at or datetime.now(timezone.utc), "ended_at": ended_at, "status": status,
        "summary": summary, "pid": pid, "heartbeat_at": heartbeat_at, "job": job,
    }
    return Upsert(schema.RUNS.name, rows_table(schema.RUNS, [row]))
