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
    from sqlalchemy import Table

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
    chunks = list(catalog.iter_rows(name, where or None, names)) if name in catalog.tables() else []
    # Only when needed: building an empty table imports pandas (pyarrow's shim), a quarter second.
    return pa.concat_tables(chunks) if chunks else schema.arrow_schema(definition, names).empty_table()


def frame(catalog: CatalogBackend, name: str, where: Mapping[str, Any] | None = None, columns: Sequence[str] | None = None) -> pd.DataFrame:
    """`table` as a pandas DataFrame; integer columns stay integers (see `to_frame`)."""
    return to_frame(table(catalog, name, where, columns), schema.table_for(name))


def to_frame(rows: pa.Table, definition: Table) -> pd.DataFrame:
    """Arrow rows of catalog table `definition` as a DataFrame whose dtypes follow the schema, not the
    data: an integer column is int64 when the schema forbids NULL and pandas' nullable Int64 when it
    allows it (pandas' default turns an integer column holding a NULL into float64, so the dtype of
    row_count would depend on which rows a query happened to return)."""
    import pandas as pd

    out = rows.to_pandas(types_mapper={pa.int64(): pd.Int64Dtype()}.get)
    strict = {
        c.name: "int64"
        for c in definition.columns
        if c.name in out.columns and not c.nullable and pa.types.is_integer(rows.schema.field(c.name).type)
    }
    return out.astype(strict) if strict else out


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
    by = f" by `mdbatch {command}`" if command else ""  # the catalog may well hold runs of other commands
    if not rows:
        raise UsageError("no runs recorded in this catalog" + by + (f" for {root}" if root else ""))
    if run == "last":
        return rows[-1]
    found = [r for r in rows if r["run_id"] == run]
    if not found:
        raise UsageError(f"no run {run!r}{by} in this catalog")
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


def findings(
    catalog: CatalogBackend,
    run: str | None = "last",
    *,
    kind: str | Sequence[str] | None = None,
    simulation: str | None = None,
    new: bool = False,
) -> pd.DataFrame:
    """Findings of audit run `run` ('last' = the newest audit; None = every run), sorted, with each
    simulation's `hash` and `directory` (as `systems()` has them, so the two join on either).

    `kind` is one kind or several. `new` keeps the findings that were not there in the simulation's
    previous scan (the run's MDBATCH_CHANGES records; every finding of a root's first audit).
    """
    kinds = [kind] if isinstance(kind, str) else list(kind) if kind is not None else None
    runs = {r["run_id"]: r for r in _runs(catalog, command="audit")}
    where: dict[str, Any] = {"simulation": simulation} if simulation is not None else {}
    if run is not None:
        where["run_id"] = resolve_run(catalog, run, command="audit")["run_id"]
    parts = [frame(catalog, schema.FINDINGS.name, {**where, "kind": k}, FINDING_COLUMNS) for k in kinds] if kinds else []
    out = _concat(parts, FINDING_COLUMNS) if kinds else frame(catalog, schema.FINDINGS.name, where, FINDING_COLUMNS)
    if new:
        out = out[_new_mask(catalog, out, runs)]
    out = out.sort_values(["run_id", "simulation", "kind", "item"], ignore_index=True)
    return _with_identity(catalog, out, runs)


def _concat(parts: list[pd.DataFrame], columns: list[str]) -> pd.DataFrame:
    import pandas as pd

    parts = [p for p in parts if len(p)]
    return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame({c: pd.Series(dtype=object) for c in columns})


def _new_mask(catalog: CatalogBackend, found: pd.DataFrame, runs: Mapping[str, Mapping[str, Any]]) -> Any:
    """Which findings are new in their run: all of a first audit's, else those its change records call new."""
    keys: set[tuple[str, str, str]] = set()
    for run_id in set(found["run_id"]):
        summary = runs.get(run_id, {}).get("summary") or {}
        if summary.get("first_audit"):
            keys |= {
                (run_id, s, f"{k}:{i}")
                for r, s, k, i in found[["run_id", "simulation", "kind", "item"]].itertuples(index=False)
                if r == run_id
            }
            continue
        if schema.CHANGES.name not in catalog.tables():
            continue
        for chunk in catalog.iter_rows(
            schema.CHANGES.name, {"run_id": run_id, "scope": "finding", "change": "new"}, ["simulation", "item"]
        ):
            keys |= {(run_id, s, item) for s, item in zip(chunk["simulation"].to_pylist(), chunk["item"].to_pylist(), strict=True)}
    rows = found[["run_id", "simulation", "kind", "item"]].itertuples(index=False)
    return [(r, s, f"{k}:{i}") in keys for r, s, k, i in rows]


def _with_identity(catalog: CatalogBackend, found: pd.DataFrame, runs: Mapping[str, Mapping[str, Any]]) -> pd.DataFrame:
    """`found` with the `hash` (MDBATCH_SIMULATIONS) and `directory` (RUN_DATABASE, else root/simulation)
    of each finding's simulation, looked up by key in the database."""
    pairs = sorted({(runs.get(r, {}).get("root") or "", s) for r, s in zip(found["run_id"], found["simulation"], strict=True)})
    hashes: dict[tuple[str, str], str | None] = {}
    if pairs and schema.SIMULATIONS.name in catalog.tables():
        keys = pa.table({"root": pa.array([p[0] for p in pairs], pa.string()), "simulation": pa.array([p[1] for p in pairs], pa.string())})
        got = catalog.rows_matching(schema.SIMULATIONS.name, keys, columns=["root", "simulation", "hash"]).to_pydict()
        hashes = {(r, s): h for r, s, h in zip(got["root"], got["simulation"], got["hash"], strict=True)}
    known = sorted({h for h in hashes.values() if h})
    directories: dict[str, str] = {}
    if known and schema.RUN_TABLE in catalog.tables():
        got = catalog.rows_matching(
            schema.RUN_TABLE, pa.table({"hash": pa.array(known, pa.string())}), columns=["hash", "directory"]
        ).to_pydict()
        directories = {h: d for h, d in zip(got["hash"], got["directory"], strict=True) if d}
    out = found.copy()
    roots = [runs.get(r, {}).get("root") or "" for r in found["run_id"]]
    out["hash"] = [hashes.get((root, s)) for root, s in zip(roots, found["simulation"], strict=True)]
    out["directory"] = [
        directories.get(h or "") or (os.path.join(root, s) if root else None)
        for h, root, s in zip(out["hash"], roots, found["simulation"], strict=True)
    ]
    return out


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


def audit_history(catalog: CatalogBackend, root: str) -> pd.DataFrame:
    """One row per audit of `root` (oldest first): run_id, started_at, status, the HEADLINE numbers of
    its summary, findings_new and findings_resolved, and `status_<name>`: its simulations per status.

    New and resolved findings are counted from the run's finding records in MDBATCH_CHANGES; every
    finding of a root's first audit is new (as `findings(new=True)` has it); NA for a run that
    recorded no comparison (refused, or older than change records). The simulations per status are
    the run's summary's (columns sorted by status name, NA where a run has no such count).
    """
    import pandas as pd

    runs = audits_of(catalog, root, status=None)
    ids = {r["run_id"] for r in runs}
    counted: dict[tuple[str, str], int] = {}
    if schema.CHANGES.name in catalog.tables():
        for chunk in catalog.iter_rows(schema.CHANGES.name, {"scope": "finding"}, ["run_id", "change"]):
            for (run_id, change), n in _pair_counts(chunk).items():
                if run_id in ids:
                    counted[run_id, change] = counted.get((run_id, change), 0) + n
    statuses = sorted({str(s) for r in runs for s in (r["summary"].get("status") or {})})
    rows = []
    for r in runs:
        summary = r["summary"]
        first = bool(summary.get("first_audit"))
        compared = r["status"] != "refused" and (first or summary.get("changes") is not None or any(k[0] == r["run_id"] for k in counted))
        new = summary.get("findings_total") if first else counted.get((r["run_id"], "new"), 0)
        by_status = summary.get("status") or {}
        rows.append(
            {"run_id": r["run_id"], "started_at": r["started_at"], "status": r["status"]}
            | {k: summary.get(k) for k in HEADLINE}
            | {
                "findings_new": new if compared else None,
                "findings_resolved": counted.get((r["run_id"], "resolved"), 0) if compared else None,
            }
            | {f"status_{s}": by_status.get(s) for s in statuses}
        )
    columns = ["run_id", "started_at", "status", *HEADLINE, "findings_new", "findings_resolved", *(f"status_{s}" for s in statuses)]
    out = pd.DataFrame(rows, columns=columns)
    for name in columns[3:]:
        out[name] = pd.array(list(out[name]), dtype="Float64" if name == "elapsed_s" else "Int64")
    return out


def _pair_counts(chunk: pa.Table) -> dict[tuple[str, str], int]:
    """{(run_id, change): rows} of one chunk."""
    grouped = chunk.group_by(["run_id", "change"]).aggregate([("run_id", "count")])
    return {(a, b): int(n) for a, b, n in zip(*(grouped[c].to_pylist() for c in ("run_id", "change", "run_id_count")), strict=True)}


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
    counts = catalog.apply([Delete(schema.SIMULATIONS.name, keys), Delete(schema.FILES.name, keys), Delete(schema.LINEAGE.name, keys)])
    return keys.num_rows, counts[1]


# -- lineage --------------------------------------------------------------------------------------

LINEAGE_COLUMNS = ["hash", "simulation", "item", "depends_on", "state", "detail", "root"]


def lineage(catalog: CatalogBackend, hash: str | None = None, *, state: str | None = None) -> pd.DataFrame:
    """The dependency edges the audits recorded (MDBATCH_LINEAGE): of the simulation `hash` (every
    simulation when None), of one `state` (ok, stale, missing, cycle) when given, sorted by
    simulation, item and depends_on."""
    where = {k: v for k, v in (("hash", hash), ("state", state)) if v is not None}
    out = frame(catalog, schema.LINEAGE.name, where, LINEAGE_COLUMNS)
    return out.sort_values(["root", "simulation", "item", "depends_on"], ignore_index=True)


# -- analysis completeness ----------------------------------------------------------------------

#: What a simulation can be grouped by in `completeness` (RUN_DATABASE columns).
COMPLETENESS_GROUPS = ("simulation_type", "parametrization", "status")
#: ANALYSIS_OVERVIEW statuses that count as faulty, each a column of `completeness`.
ITEM_FAULTS = ("missing", "mismatch", "unreadable", "unsafe")
#: An item a simulation has no ANALYSIS_OVERVIEW row for, while others of its group have one.
LACKING = "lacking"
#: A group value the catalog does not record (NULL).
UNKNOWN_GROUP = "(unknown)"
#: Simulations whose item has at least one stale dependency (MDBATCH_LINEAGE state `stale`), whatever its state.
STALE = "stale"
COMPLETENESS_COLUMNS = ["item_type", "item_name", "simulations", "have", "faulty", LACKING, STALE, *ITEM_FAULTS]
LACKING_COLUMNS = ["hash", "directory", *COMPLETENESS_GROUPS, "item_type", "item_name"]
CompletenessBy = str | Sequence[str]


def completeness_groups(by: CompletenessBy) -> list[str]:
    """`by` ('simulation_type', 'parametrization', 'status' or a sequence of them) as a list, else UsageError."""
    keys = [by] if isinstance(by, str) else list(by)
    bad = [k for k in keys if k not in COMPLETENESS_GROUPS]
    if not keys or bad or len(set(keys)) != len(keys):
        raise UsageError(f"by={by!r}: use one or more of {', '.join(COMPLETENESS_GROUPS)} (each once)")
    return keys


def item_states(
    catalog: CatalogBackend,
    root: str | None = None,
    by: CompletenessBy = "simulation_type",
    *,
    status: str | None = None,
    simulation_type: str | None = None,
) -> pa.Table:
    """One row per simulation and per analysis or artifact that some simulation of its group has
    registered: hash, directory, the COMPLETENESS_GROUPS, item_type, item_name, `state` (the
    ANALYSIS_OVERVIEW status: ok, missing, mismatch, unreadable, unsafe; or `lacking`) and `stale`
    (true when the item has a stale dependency in MDBATCH_LINEAGE).

    Simulations are RUN_DATABASE rows (of one status / simulation type when given, filtered in the
    database; under `root` when given); a NULL group value is UNKNOWN_GROUP. Entries with names that
    cannot be table names (status `invalid`) are `invalid_name` findings, not items, and are left out.
    """
    keys = completeness_groups(by)
    where = {k: v for k, v in (("status", status), ("simulation_type", simulation_type)) if v is not None}
    sims = _under_root(table(catalog, schema.RUN_TABLE, where, ["hash", "directory", *COMPLETENESS_GROUPS]), root)
    for name in COMPLETENESS_GROUPS:
        sims = sims.set_column(sims.schema.get_field_index(name), name, pc.fill_null(sims[name], UNKNOWN_GROUP))
    columns = ["hash", "item_type", "item_name", "status"]
    if schema.OVERVIEW_TABLE not in catalog.tables() or sims.num_rows == 0:
        rows = schema.arrow_schema(schema.ANALYSIS_OVERVIEW, columns).empty_table()
    elif root is None and not where:
        rows = table(catalog, schema.OVERVIEW_TABLE, None, columns)
    else:  # only the chosen simulations' rows: an index lookup by hash
        rows = catalog.rows_matching(schema.OVERVIEW_TABLE, sims.select(["hash"]), columns)
    rows = rows.filter(pc.not_equal(rows["status"], "invalid")).rename_columns(["hash", "item_type", "item_name", "state"])
    item = ["item_type", "item_name"]
    registered = rows.join(sims.select(["hash", *keys]), "hash", join_type="inner").select([*keys, *item])
    expected = registered.group_by([*keys, *item]).aggregate([])
    pairs = sims.join(expected, keys, join_type="inner")
    states = pairs.join(rows, ["hash", *item], join_type="left outer")
    states = states.set_column(states.schema.get_field_index("state"), "state", pc.fill_null(states["state"], LACKING))
    states = states.append_column(STALE, _stale_items(catalog, states))
    return states.select([*LACKING_COLUMNS, "state", STALE]).sort_by([(k, "ascending") for k in (*keys, *item, "directory")])


def _stale_items(catalog: CatalogBackend, states: pa.Table) -> pa.Array:
    """For each row of `states`, whether its item has a stale edge in MDBATCH_LINEAGE (looked up by state in the database)."""
    if states.num_rows == 0 or schema.LINEAGE.name not in catalog.tables():
        return pa.array([False] * states.num_rows, pa.bool_())
    stale = table(catalog, schema.LINEAGE.name, {"state": "stale"}, ["hash", "item"])
    keys = pc.binary_join_element_wise(stale["hash"], stale["item"], "\x00")
    wanted = pc.binary_join_element_wise(states["hash"], states["item_type"], "\x00")
    wanted = pc.binary_join_element_wise(wanted, states["item_name"], ":")
    return pc.fill_null(pc.is_in(wanted, value_set=keys.combine_chunks() if keys.num_chunks else pa.array([], pa.string())), False)


def completeness(
    catalog: CatalogBackend,
    root: str | None = None,
    by: CompletenessBy = "simulation_type",
    *,
    status: str | None = None,
    simulation_type: str | None = None,
) -> pd.DataFrame:
    """How complete each group's analyses and artifacts are: one row per group (`by`) and item.

    Columns: the `by` columns, item_type, item_name, simulations (in the group), have (status ok),
    faulty (registered but not ok), lacking (not registered, while others of the group have it),
    stale (registered with a stale dependency, whether ok or faulty: see `lineage`), then the faulty
    ones per status (missing, mismatch, unreadable, unsafe). have + faulty + lacking == simulations.
    See `item_states` for the arguments.
    """
    keys = completeness_groups(by)
    return completeness_of(item_states(catalog, root, keys, status=status, simulation_type=simulation_type), keys)


def completeness_of(states: pa.Table, by: Sequence[str]) -> pd.DataFrame:
    """`completeness` from `item_states` rows grouped by `by` (a subset of the states' grouping)."""
    import pandas as pd

    keys, item = list(by), ["item_type", "item_name"]
    counts = states.group_by([*keys, *item, "state"]).aggregate([("hash", "count")]).to_pandas()
    columns = [*keys, *COMPLETENESS_COLUMNS]
    if counts.empty:
        return pd.DataFrame({c: pd.Series(dtype="int64" if c in COMPLETENESS_COLUMNS[2:] else "str") for c in columns})
    wide = counts.pivot_table(index=[*keys, *item], columns="state", values="hash_count", aggfunc="sum", fill_value=0)
    out = pd.DataFrame(index=wide.index)
    out["have"] = wide["ok"] if "ok" in wide.columns else 0
    faults = [c for c in wide.columns if c not in ("ok", LACKING)]
    out["faulty"] = wide[faults].sum(axis=1) if faults else 0
    out[LACKING] = wide[LACKING] if LACKING in wide.columns else 0
    out[STALE] = _stale_counts(states, [*keys, *item]).reindex(out.index, fill_value=0) if STALE in states.column_names else 0
    for name in ITEM_FAULTS:
        out[name] = wide[name] if name in wide.columns else 0
    out["simulations"] = out["have"] + out["faulty"] + out[LACKING]
    frame = out.reset_index()[columns]
    return frame.astype({c: "int64" for c in COMPLETENESS_COLUMNS[2:]}).sort_values([*keys, *item], ignore_index=True)


def _stale_counts(states: pa.Table, keys: list[str]) -> pd.Series:
    """Rows of `states` with `stale` true, counted per `keys` (a Series indexed like the pivot)."""
    import pandas as pd

    rows = states.filter(pc.fill_null(states[STALE], False))
    if rows.num_rows == 0:
        return pd.Series(dtype="int64")
    counts = rows.group_by(keys).aggregate([("hash", "count")]).to_pandas()
    return counts.set_index(keys)["hash_count"]


def lacking(
    catalog: CatalogBackend,
    root: str | None = None,
    by: CompletenessBy = "simulation_type",
    *,
    status: str | None = None,
    simulation_type: str | None = None,
    item_name: str | None = None,
) -> pd.DataFrame:
    """The simulations that lack an item others of their group have (LACKING_COLUMNS), one row per
    simulation and item; `item_name` keeps one item. See `item_states` for the arguments."""
    states = item_states(catalog, root, by, status=status, simulation_type=simulation_type)
    keep = pc.equal(states["state"], LACKING)
    if item_name is not None:
        keep = pc.and_(keep, pc.equal(states["item_name"], item_name))
    return states.filter(keep).select(LACKING_COLUMNS).to_pandas()


def _under_root(rows: pa.Table, root: str | None) -> pa.Table:
    """The rows whose `directory` is `root` or inside it (all rows when root is None)."""
    if root is None:
        return rows
    base = os.path.abspath(root).rstrip("/") or "/"
    prefix = base if base == "/" else base + "/"
    inside = pc.or_(pc.equal(rows["directory"], base), pc.starts_with(rows["directory"], prefix))
    return rows.filter(pc.fill_null(inside, False))
