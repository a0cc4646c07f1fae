"""Reading a catalog: runs, findings, simulations, history, prune; filtered in the database.

Every query here is built on the storage primitives of `base.CatalogBackend` (`iter_rows` with
equality filters, `rows_matching`, `count_rows`), so the filtering happens in the database on
every backend, and returns pandas DataFrames (`mdbatch.Catalog` and the CLI's reading commands
are thin layers over these functions). Storage and duplicates over the file inventory are in
`filestats`.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import pyarrow as pa
import pyarrow.compute as pc

from ..changes import CHANGE_COLUMNS, net_finding_changes
from ..errors import UsageError
from . import schema
from .base import CatalogBackend
from .ops import Delete

if TYPE_CHECKING:
    import pandas as pd

RUN_COLUMNS = ["run_id", "command", "root", "status", "started_at", "ended_at", "host", "job", "version"]
FINDING_COLUMNS = ["run_id", "simulation", "kind", "item", "detail"]
#: Headline numbers of a run's summary that `runs` shows beside its record.
HEADLINE = ("simulations", "files", "bytes", "findings_total", "elapsed_s")


def table(catalog: CatalogBackend, name: str, where: Mapping[str, Any] | None = None, columns: Sequence[str] | None = None) -> pa.Table:
    """Rows of one catalog table equal to `where` ({column: value}; None matches NULL), as Arrow.

    An absent table gives no rows with the table's columns; a name that is not a catalog table is a UsageError.
    """
    definition = schema.table_for(name)
    names = list(columns) if columns is not None else [c.name for c in definition.columns]
    empty = schema.arrow_schema(definition, names).empty_table()
    if name not in catalog.tables():
        return empty
    chunks = list(catalog.iter_rows(name, where or None, names))
    return pa.concat_tables(chunks) if chunks else empty


def frame(catalog: CatalogBackend, name: str, where: Mapping[str, Any] | None = None, columns: Sequence[str] | None = None) -> pd.DataFrame:
    """`table` as a pandas DataFrame."""
    return table(catalog, name, where, columns).to_pandas()


# -- runs -----------------------------------------------------------------------------------------


def _runs(catalog: CatalogBackend, root: str | None = None, command: str | None = None) -> list[dict[str, Any]]:
    """Run records (oldest first) of `root` and `command` when given; summaries and arguments as dicts."""
    where = {k: v for k, v in (("root", root), ("command", command)) if v is not None}
    rows = table(catalog, schema.RUNS.name, where).to_pylist()
    for row in rows:
        for key in ("summary", "arguments"):
            text = row.get(key)
            row[key] = json.loads(text) if isinstance(text, str) and text else ({} if key == "summary" else None)
    return sorted(rows, key=lambda r: (r["started_at"], r["run_id"]))


def list_runs(catalog: CatalogBackend, root: str | None = None) -> pd.DataFrame:
    """Every recorded run (oldest first, optionally of one root) with the headline numbers of its summary."""
    import pandas as pd

    rows = _runs(catalog, root)
    out = pd.DataFrame([{c: r.get(c) for c in RUN_COLUMNS} for r in rows], columns=RUN_COLUMNS)
    for key in HEADLINE:
        out[key] = pd.array([r["summary"].get(key) for r in rows], dtype="Float64" if key == "elapsed_s" else "Int64")
    return out


def resolve_run(catalog: CatalogBackend, run: str, root: str | None = None, command: str | None = None) -> dict[str, Any]:
    """The run record for an id, or for 'last' (the newest, optionally of `root`/`command`)."""
    rows = _runs(catalog, root, command)
    if not rows:
        raise UsageError("no runs recorded in this catalog" + (f" for {root}" if root else ""))
    if run == "last":
        return rows[-1]
    found = [r for r in rows if r["run_id"] == run]
    if not found:
        raise UsageError(f"no run {run!r} in this catalog")
    return found[0]


def audits_of(catalog: CatalogBackend, root: str, *, status: str | None = "completed") -> list[dict[str, Any]]:
    """The audit runs of `root` (oldest first), of one status (None: any)."""
    return [r for r in _runs(catalog, root, "audit") if status is None or r["status"] == status]


def audits_of_any_root(catalog: CatalogBackend, *, status: str = "completed") -> list[dict[str, Any]]:
    """Every audit run of one status, whatever its root (oldest first)."""
    rows = table(catalog, schema.RUNS.name, {"command": "audit", "status": status}, ["run_id", "root", "started_at"]).to_pylist()
    return sorted(rows, key=lambda r: (r["started_at"], r["run_id"]))


def scanned_simulations(catalog: CatalogBackend, run_id: str) -> set[str]:
    """Simulations (relative to the root) that run `run_id` has written so far (for --resume)."""
    if schema.SCANNED.name not in catalog.tables():
        return set()
    return {s for t in catalog.iter_rows(schema.SCANNED.name, {"run_id": run_id}, ["simulation"]) for s in t["simulation"].to_pylist()}


# -- findings and history -------------------------------------------------------------------------


def findings(catalog: CatalogBackend, run: str | None = "last", *, kind: str | None = None, simulation: str | None = None) -> pd.DataFrame:
    """Findings of audit run `run` ('last' = the newest audit; None = every run), sorted."""
    where: dict[str, Any] = {k: v for k, v in (("kind", kind), ("simulation", simulation)) if v is not None}
    if run is not None:
        where["run_id"] = resolve_run(catalog, run, command="audit")["run_id"]
    out = frame(catalog, schema.FINDINGS.name, where, FINDING_COLUMNS)
    return out.sort_values(["run_id", "simulation", "kind", "item"], ignore_index=True)


def diff_runs(catalog: CatalogBackend, a: str | None = None, b: str | None = None, root: str | None = None) -> pd.DataFrame:
    """What changed between audits `a` and `b` of one root (default: its last two audits).

    File and simulation records are the change log of every audit after `a` up to `b`; finding
    records are netted over them (a finding new in one run and resolved in a later one is no change).
    """
    import pandas as pd

    last = resolve_run(catalog, b or "last", root, command="audit")
    root = last["root"]
    audits = [r for r in _runs(catalog, root, "audit")]
    ids = [r["run_id"] for r in audits]
    if a is None:
        pos = ids.index(last["run_id"])
        if pos == 0:
            raise UsageError(f"run {last['run_id']} is the first audit of {root}: nothing to compare with")
        a = ids[pos - 1]
    if a not in ids:
        raise UsageError(f"no audit run {a!r} of {root} in this catalog")
    lo, hi = ids.index(a), ids.index(last["run_id"])
    if lo >= hi:
        raise UsageError(f"run {a} is not older than run {last['run_id']}")
    between = [r["run_id"] for r in audits[lo + 1 : hi + 1] if r["status"] != "refused"]
    records: list[dict[str, Any]] = []
    if schema.CHANGES.name in catalog.tables():
        for run_id in between:  # in run order
            for chunk in catalog.iter_rows(schema.CHANGES.name, {"run_id": run_id}, CHANGE_COLUMNS):
                records += chunk.to_pylist()
    rows = [r for r in records if r["scope"] != "finding"] + net_finding_changes(r for r in records if r["scope"] == "finding")
    out = pd.DataFrame(rows, columns=CHANGE_COLUMNS)
    out["size"] = out["size"].astype("Int64")
    return out.sort_values(["scope", "change", "simulation", "item"]).reset_index(drop=True)


# -- simulations ----------------------------------------------------------------------------------


def systems(
    catalog: CatalogBackend,
    status: str | None = None,
    simulation_type: str | None = None,
    *,
    root: str | None = None,
    columns: Sequence[str] | None = None,
) -> pd.DataFrame:
    """Simulations (RUN_DATABASE rows), optionally of one status, one simulation type, under one root."""
    where = {k: v for k, v in (("status", status), ("simulation_type", simulation_type)) if v is not None}
    wanted = list(columns) if columns is not None else None
    read = wanted if wanted is None or root is None or "directory" in wanted else [*wanted, "directory"]
    out = table(catalog, schema.RUN_TABLE, where, read)
    if root is not None:
        base = os.path.abspath(root).rstrip("/") or "/"
        prefix = base if base == "/" else base + "/"
        paths = out["directory"]
        inside = pc.or_(pc.equal(paths, base), pc.starts_with(paths, prefix))
        out = out.filter(pc.fill_null(inside, False))
        out = out.select(wanted) if wanted is not None else out
    result = out.to_pandas()
    return result.sort_values("directory" if "directory" in result.columns else result.columns[0], ignore_index=True)


def artifacts(catalog: CatalogBackend, name: str, hash: str | None = None) -> pd.DataFrame:
    """ARTIFACT_<name> rows (one per simulation); `files` and `checksums` parsed from JSON."""
    out = frame(catalog, schema.item_table_name("artifact", name), {"hash": hash} if hash else None)
    for column in ("files", "checksums"):
        out[column] = [json.loads(v) if isinstance(v, str) and v else None for v in out[column]]
    return out


def file_inventory(catalog: CatalogBackend, root: str, columns: Sequence[str], chunk_rows: int = 100_000) -> Iterator[pa.Table]:
    """The inventory of the present simulations of `root` (MDBATCH_FILES rows), in chunks."""
    if schema.FILES.name in catalog.tables():
        yield from catalog.iter_rows(schema.FILES.name, {"root": root, "removed_run": None}, columns, chunk_rows)


def prune_removed(catalog: CatalogBackend, root: str | None = None, older_than_days: float = 30.0) -> tuple[int, int]:
    """Delete the rows kept for simulations removed at least `older_than_days` ago (their hash cache);
    (simulations, inventory rows) deleted."""
    if schema.SIMULATIONS.name not in catalog.tables():
        return 0, 0
    cutoff = pa.scalar(datetime.now(UTC) - timedelta(days=older_than_days), pa.timestamp("us", tz="UTC"))
    where = {"root": root} if root is not None else {}
    gone: list[pa.Table] = []
    for chunk in catalog.iter_rows(schema.SIMULATIONS.name, where, ["root", "simulation", "removed_run", "removed_at"]):
        old = pc.or_kleene(pc.is_null(chunk["removed_at"]), pc.less_equal(chunk["removed_at"], cutoff))
        gone.append(chunk.filter(pc.and_(pc.is_valid(chunk["removed_run"]), old)).select(["root", "simulation"]))
    keys = pa.concat_tables(gone) if gone else schema.arrow_schema(schema.SIMULATIONS, ["root", "simulation"]).empty_table()
    if keys.num_rows == 0:
        return 0, 0
    counts = catalog.apply([Delete(schema.SIMULATIONS.name, keys), Delete(schema.FILES.name, keys)])
    return keys.num_rows, counts[1]
