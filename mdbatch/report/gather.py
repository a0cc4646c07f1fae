"""Everything the report shows, gathered from a catalog through `catalog.queries` into plain data.

The headline, findings and changes are those of the chosen audit run; the simulations, storage
and duplicates are the catalog's current view of the run's root (its latest audit), since the
inventory is replaced by each audit. Large tables are capped at MAX_TABLE_ROWS rows (the counts
stay exact); plots are aggregated here, never in the browser.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import pyarrow as pa
import pyarrow.compute as pc

from ..catalog import queries
from ..catalog.base import CatalogBackend
from ..catalog.filestats import InventoryStats, inventory_stats
from ..errors import UsageError
from ..findings import KINDS
from ..version import __version__

if TYPE_CHECKING:
    import pandas as pd

#: Rows embedded per table; a campaign with more simulations or findings gets the first ones and a note.
MAX_TABLE_ROWS = 250_000
#: Paths listed per duplicate group (a group can have a copy in every simulation; the catalog has them all).
DUPLICATE_PATHS = 10
#: Status order in plots (MDFactory's life cycle), then anything else alphabetically.
STATUS_ORDER = ("build", "equilibrated", "production", "completed")
UNKNOWN = "(unknown)"
#: Columns shown in a monospace font (paths, digests).
MONO = frozenset({"simulation", "hash", "item", "run_id", "example", "all", "xxh3_128"})
#: Columns shown cut to this many characters (the full value in the tooltip, and searchable).
SHORT = {"hash": 12, "xxh3_128": 12}
FILE_CHANGES = ("new", "missing", "changed", "moved", "unchanged")
SIMULATION_CHANGES = ("new", "removed", "status_changed")
FINDING_CHANGES = ("new", "resolved", "persisting")


@dataclass(slots=True)
class TableData:
    """One interactive table: column specs, rows as lists, and the true row count before capping."""

    columns: list[dict[str, Any]]
    rows: list[list[Any]]
    total: int

    def to_payload(self) -> dict[str, Any]:
        """Compact form for the page: text columns marked 'cat' are dictionary-encoded."""
        dicts: dict[str, list[Any]] = {}
        rows = [list(r) for r in self.rows]
        for i, col in enumerate(self.columns):
            if col["kind"] != "cat":
                continue
            codes: dict[Any, int] = {}
            for r in rows:
                r[i] = codes.setdefault(r[i], len(codes))
            dicts[str(i)] = list(codes)
        return {"columns": self.columns, "rows": rows, "dicts": dicts, "total": self.total}


@dataclass(slots=True)
class ReportData:
    """The report's content: numbers, aggregated series for the plots, and the tables."""

    run: dict[str, Any]
    summary: dict[str, Any]
    catalog_url: str
    generated_at: str
    version: str
    status_by_type: dict[str, dict[str, int]]
    findings_by_kind: dict[str, int]
    storage_by_extension: list[tuple[str, int, int]]
    storage_by_type: list[tuple[str, int, int]]
    #: The top duplicate groups of the current inventory, and totals over all its groups.
    duplicates: list[dict[str, Any]]
    duplicate_totals: dict[str, int]
    #: {"simulation type · parametrization": {finding kind: count}}, most findings first.
    findings_by_group: dict[str, dict[str, int]]
    #: One point per audit of the root (oldest first): numbers, new/resolved findings, simulations per status.
    history: list[dict[str, Any]]
    #: The statuses of `history` points' `by_status`, in life-cycle order.
    history_statuses: list[str]
    changes: dict[str, Any]
    #: {simulations, lacking_simulations, faulty_simulations, stale_simulations, items}: the completeness section's headline.
    completeness_totals: dict[str, int]
    #: The interactive tables, by the name the page mounts them under.
    tables: dict[str, TableData]
    notes: list[str] = field(default_factory=list)

    @property
    def simulations(self) -> TableData:
        return self.tables["simulations"]

    @property
    def findings(self) -> TableData:
        return self.tables["findings"]

    @property
    def root(self) -> str:
        return str(self.run.get("root") or self.summary.get("root") or "")


def gather(catalog: CatalogBackend, run: str = "last", *, top: int = 20) -> ReportData:
    """Collect the report of audit run `run` ('last' or a run id) from `catalog`."""
    record = queries.resolve_run(catalog, run, command="audit")
    stored = record.get("summary")
    summary: dict[str, Any] = stored if isinstance(stored, dict) else {}
    root = str(record.get("root") or "")
    stats = inventory_stats(catalog, root, top=top)
    systems = queries.systems(catalog, root=root, columns=["hash", "engine", "parametrization", "simulation_type", "status", "directory"])
    findings = queries.findings(catalog, record["run_id"])
    sims = simulation_frame(systems, stats, findings, root)
    history = queries.audit_history(catalog, root)
    changes, change_frame = _changes(catalog, record, summary, root)
    kinds = {k: int((summary.get("findings") or {}).get(k, 0)) for k in KINDS}
    for k, n in Counter(findings["kind"]).items():
        kinds.setdefault(k, int(n))
    states = queries.item_states(catalog, root or None, queries.COMPLETENESS_GROUPS)
    points, statuses = history_points(history)
    duplicates = _duplicates(stats, root)
    tables = {
        "completeness": completeness_table(states),
        "lacking": lacking_table(states, root),
        "simulations": simulation_table(sims.sort_values(["findings", "simulation"], ascending=[False, True], ignore_index=True)),
        "findings": _table(findings, FINDING_TABLE),
        "changes": _table(change_frame, CHANGE_TABLE),
        "duplicates": duplicate_table(duplicates),
        "history": history_table(points, statuses),
    }
    notes = [
        f"The {name} table shows the first {len(table.rows):,} of {table.total:,} rows; the catalog has them all."
        for name, table in tables.items()
        if table.total > len(table.rows)
    ]
    return ReportData(
        run=record,
        summary=summary,
        catalog_url=catalog.display_url,
        generated_at=datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        version=__version__,
        status_by_type=status_by_type(sims),
        findings_by_kind=kinds,
        storage_by_extension=[
            (str(e), int(f), int(b)) for e, f, b in stats.by_extension[["extension", "files", "bytes"]].itertuples(index=False)
        ],
        storage_by_type=storage_by_type(sims),
        duplicates=duplicates,
        duplicate_totals=dict(stats.duplicate_totals),
        findings_by_group=findings_by_group(findings, sims),
        history=points,
        history_statuses=statuses,
        changes=changes,
        completeness_totals=completeness_totals(states, len(systems)),
        tables=tables,
        notes=notes,
    )


FINDING_TABLE = [("simulation", "Simulation", "text"), ("kind", "Kind", "cat"), ("item", "Item", "text"), ("detail", "Detail", "text")]
CHANGE_TABLE = [
    ("scope", "Scope", "cat"),
    ("change", "Change", "cat"),
    ("simulation", "Simulation", "text"),
    ("item", "Item", "text"),
    ("size", "Size", "bytes"),
    ("detail", "Detail", "text"),
]
GROUP_COLUMNS = [("simulation_type", "Type", "cat"), ("parametrization", "Parametrization", "cat"), ("status", "Status", "cat")]
ITEM_COLUMNS = [("item_type", "Kind", "cat"), ("item_name", "Item", "cat")]


def simulation_frame(systems: pd.DataFrame, stats: InventoryStats, findings: pd.DataFrame, root: str) -> pd.DataFrame:
    """One row per simulation of the root: identity and status (RUN_DATABASE), files and bytes
    (inventory), findings count and kinds (the run); simulations known to only one source included."""
    import pandas as pd

    base = root.rstrip("/")
    rel = [_relative(d, base) for d in systems["directory"]]
    ident = systems.drop(columns=["directory"]).assign(simulation=rel).drop_duplicates("simulation", keep="last")
    inv = stats.by_simulation[["simulation", "files", "bytes"]]
    per_sim = findings.groupby("simulation")["kind"].agg(["count", lambda k: ", ".join(sorted(set(k)))]) if not findings.empty else None
    frame = ident.merge(inv, on="simulation", how="outer")
    if per_sim is not None:
        per_sim.columns = ["findings", "kinds"]
        frame = frame.merge(per_sim.reset_index(), on="simulation", how="outer")
    else:
        frame = frame.assign(findings=0, kinds="")
    for column in ("simulation_type", "status", "parametrization", "engine", "hash"):
        frame[column] = frame[column].fillna(UNKNOWN if column in ("simulation_type", "status") else "")
    for column in ("files", "bytes", "findings"):
        frame[column] = pd.to_numeric(frame[column]).fillna(0).astype("int64")
    frame["kinds"] = frame["kinds"].fillna("")
    return frame.sort_values("simulation", ignore_index=True)


def simulation_table(sims: pd.DataFrame) -> TableData:
    """The simulations table, rows in the order given (the report puts those with findings first)."""
    return _table(
        sims,
        [
            ("simulation", "Simulation", "text"),
            ("hash", "Hash", "text"),
            ("simulation_type", "Type", "cat"),
            ("parametrization", "Parametrization", "cat"),
            ("status", "Status", "cat"),
            ("files", "Files", "num"),
            ("bytes", "Bytes", "bytes"),
            ("findings", "Findings", "num"),
            ("kinds", "Finding kinds", "text"),
        ],
    )


def status_by_type(sims: pd.DataFrame) -> dict[str, dict[str, int]]:
    """{simulation type: {status: count}}, types by size, statuses in life-cycle order."""
    counts: dict[str, Counter[str]] = {}
    for (kind, status), n in sims.groupby(["simulation_type", "status"]).size().items():
        counts.setdefault(str(kind), Counter())[str(status)] += int(n)
    order = sorted(counts, key=lambda k: (-sum(counts[k].values()), k))
    statuses = ordered_statuses({s for c in counts.values() for s in c})
    return {k: {s: counts[k].get(s, 0) for s in statuses} for k in order}


def ordered_statuses(statuses: set[str]) -> list[str]:
    """Statuses in MDFactory's life-cycle order, unknown ones after, alphabetically."""
    return [s for s in STATUS_ORDER if s in statuses] + sorted(statuses - set(STATUS_ORDER))


def storage_by_type(sims: pd.DataFrame) -> list[tuple[str, int, int]]:
    """[(simulation type, files, bytes)], largest first."""
    grouped = sims.groupby("simulation_type")[["files", "bytes"]].sum()
    rows = [(str(k), int(f), int(b)) for k, (f, b) in grouped.iterrows()]
    return sorted(rows, key=lambda r: (-r[2], r[0]))


def _relative(directory: object, base: str) -> str:
    text = str(directory)
    return "." if text == base else text[len(base) + 1 :] if text.startswith(base + "/") else text


def _table(frame: pd.DataFrame, columns: list[tuple[str, str, str]]) -> TableData:
    import pandas as pd

    total = len(frame)
    part = frame.head(MAX_TABLE_ROWS)
    cols: list[list[Any]] = []
    for key, _label, kind in columns:
        column = part[key] if key in part.columns else pd.Series([None] * len(part), index=part.index, dtype="object")
        missing = column.isna()
        if kind in ("num", "bytes"):
            numbers = pd.to_numeric(column, errors="coerce").fillna(0).astype("int64").tolist()
            cols.append([None if m else v for v, m in zip(numbers, missing.tolist(), strict=True)])
        else:
            cols.append(column.astype("object").where(~missing, "").astype(str).tolist())
    rows = [list(r) for r in zip(*cols, strict=True)] if cols and len(part) else []
    specs = [
        {"key": k, "label": label, "kind": kind, **({"mono": True} if k in MONO else {}), **({"short": SHORT[k]} if k in SHORT else {})}
        for k, label, kind in columns
    ]
    return TableData(specs, rows, total)


def _duplicates(stats: InventoryStats, root: str) -> list[dict[str, Any]]:
    base = root.rstrip("/") + "/"
    out = []
    for row in stats.duplicates.to_dict("records"):
        paths = [p.removeprefix(base) for p in row["paths"]]
        out.append(
            {k: int(row[k]) for k in ("size", "files", "inodes", "reclaimable_bytes")} | {"xxh3_128": row["xxh3_128"], "paths": paths}
        )
    return out


def _changes(catalog: CatalogBackend, record: dict[str, Any], summary: dict[str, Any], root: str) -> tuple[dict[str, Any], pd.DataFrame]:
    """({previous_run, files, simulations, findings} counts, change records) since the previous audit."""
    import pandas as pd

    from ..changes import CHANGE_COLUMNS

    counted = summary.get("changes") if isinstance(summary.get("changes"), dict) else None
    try:
        frame = queries.diff_runs(catalog, None, record["run_id"], root)
    except UsageError:  # the first audit of its root: nothing to compare with
        frame = pd.DataFrame(columns=CHANGE_COLUMNS)
        previous = None
    else:
        runs = [r for r in queries.list_runs(catalog, root).to_dict("records") if r.get("command") == "audit"]
        ids = [str(r["run_id"]) for r in runs]
        pos = ids.index(record["run_id"]) if record["run_id"] in ids else 0
        previous = ids[pos - 1] if pos > 0 else None
    if counted is not None:
        previous = counted.get("previous_run", previous)
        counts = {scope: dict(counted.get(scope) or {}) for scope in ("files", "simulations", "findings")}
    else:
        counts = {"files": {}, "simulations": {}, "findings": {}}
        for (scope, change), n in frame.groupby(["scope", "change"]).size().items() if not frame.empty else []:
            counts.setdefault(f"{scope}s", {})[str(change)] = int(n)
    for scope, names in (("files", FILE_CHANGES), ("simulations", SIMULATION_CHANGES), ("findings", FINDING_CHANGES)):
        counts[scope] = {n: counts[scope].get(n) for n in names}
    return {"previous_run": previous, **counts}, frame


# -- completeness, findings by group, history, duplicates ----------------------------------------------


def completeness_table(states: pa.Table) -> TableData:
    """Per simulation type, parametrization and status, each item: simulations that have it, have it faulty, lack it."""
    frame = queries.completeness_of(states, queries.COMPLETENESS_GROUPS)
    faults = frame[list(queries.ITEM_FAULTS)]
    frame["faults"] = [", ".join(f"{k} {n:,}" for k, n in row.items() if n) for _, row in faults.iterrows()]
    return _table(
        frame,
        [
            *GROUP_COLUMNS,
            *ITEM_COLUMNS,
            ("simulations", "Simulations", "num"),
            ("have", "Have", "num"),
            ("faulty", "Faulty", "num"),
            ("lacking", "Lacking", "num"),
            ("stale", "Stale", "num"),
            ("faults", "Faulty as", "text"),
        ],
    )


def lacking_table(states: pa.Table, root: str) -> TableData:
    """Every simulation lacking an item that others of its type, parametrization and status have."""
    frame = states.filter(pc.equal(states["state"], queries.LACKING)).to_pandas()
    frame["simulation"] = [_relative(d, root.rstrip("/")) for d in frame["directory"]]
    return _table(frame, [("simulation", "Simulation", "text"), ("hash", "Hash", "text"), *GROUP_COLUMNS, *ITEM_COLUMNS])


def completeness_totals(states: pa.Table, simulations: int) -> dict[str, int]:
    """{simulations, lacking_simulations, faulty_simulations, stale_simulations, items}: of the root's
    `simulations`, how many lack, have faulty, or have stale (a dependency updated after it was made)
    at least one item, and how many items are registered."""
    state = states["state"]
    lacking = states.filter(pc.equal(state, queries.LACKING))["hash"]
    faulty = states.filter(pc.and_(pc.not_equal(state, queries.LACKING), pc.not_equal(state, "ok")))["hash"]
    return {
        "simulations": simulations,
        "lacking_simulations": len(pc.unique(lacking)),
        "faulty_simulations": len(pc.unique(faulty)),
        "stale_simulations": len(pc.unique(states.filter(pc.fill_null(states[queries.STALE], False))["hash"])),
        "items": len(states.group_by(["item_type", "item_name"]).aggregate([])),
    }


def findings_by_group(findings: pd.DataFrame, sims: pd.DataFrame) -> dict[str, dict[str, int]]:
    """{"type · parametrization": {kind: findings}}: groups with most findings first, kinds by total."""
    ident = sims[["simulation", "simulation_type", "parametrization"]]
    joined = findings[["simulation", "kind"]].merge(ident, on="simulation", how="left")
    labels = [
        f"{t if isinstance(t, str) and t else UNKNOWN} · {p if isinstance(p, str) and p else UNKNOWN}"
        for t, p in zip(joined["simulation_type"], joined["parametrization"], strict=True)
    ]
    counts = Counter(zip(labels, joined["kind"], strict=True))
    kinds = sorted({k for _, k in counts}, key=lambda k: (-sum(n for (_, kk), n in counts.items() if kk == k), k))
    groups: dict[str, dict[str, int]] = {}
    for (label, kind), n in counts.items():
        groups.setdefault(label, dict.fromkeys(kinds, 0))[kind] = n
    return dict(sorted(groups.items(), key=lambda kv: (-sum(kv[1].values()), kv[0])))


def history_points(history: pd.DataFrame) -> tuple[list[dict[str, Any]], list[str]]:
    """The audits of `queries.audit_history` as plot points (started: an aware datetime), and their statuses."""
    statuses = ordered_statuses({c.removeprefix("status_") for c in history.columns if c.startswith("status_")})
    points = []
    for row in history.to_dict("records"):
        point = {k: _plain(row.get(k)) for k in ("run_id", "status", *queries.HEADLINE, "findings_new", "findings_resolved")}
        started = row.get("started_at")
        point["started"] = started.to_pydatetime() if hasattr(started, "to_pydatetime") else started
        point["by_status"] = {s: _plain(row.get(f"status_{s}")) for s in statuses}
        points.append(point)
    return points, statuses


def history_table(points: list[dict[str, Any]], statuses: list[str]) -> TableData:
    """Every audit of the root, newest first."""
    import pandas as pd

    rows = [
        {
            **p,
            "started": p["started"].strftime("%Y-%m-%d %H:%M:%S") if isinstance(p["started"], datetime) else "",
            "elapsed_s": None if p["elapsed_s"] is None else round(p["elapsed_s"]),
            **{f"status_{s}": n for s, n in p["by_status"].items()},
        }
        for p in reversed(points)
    ]
    columns = [
        ("run_id", "Run", "text"),
        ("started", "Started (UTC)", "text"),
        ("status", "Outcome", "cat"),
        ("simulations", "Simulations", "num"),
        *((f"status_{s}", s.replace("_", " ").capitalize(), "num") for s in statuses),
        ("files", "Files", "num"),
        ("bytes", "Bytes", "bytes"),
        ("findings_total", "Findings", "num"),
        ("findings_new", "New", "num"),
        ("findings_resolved", "Resolved", "num"),
        ("elapsed_s", "Elapsed (s)", "num"),
    ]
    return _table(pd.DataFrame(rows, columns=[c[0] for c in columns]), columns)


def duplicate_table(groups: list[dict[str, Any]]) -> TableData:
    """The duplicate groups the report lists, each with an example path and all of its paths."""
    import pandas as pd

    rows = [
        {
            **g,
            "name": g["paths"][0].rsplit("/", 1)[-1] if g["paths"] else "",
            "example": (g["paths"] or [""])[0],
            "all": "\n".join(g["paths"][:DUPLICATE_PATHS])
            + (f"\n… and {len(g['paths']) - DUPLICATE_PATHS:,} more" if len(g["paths"]) > DUPLICATE_PATHS else ""),
        }
        for g in groups
    ]
    columns = [
        ("name", "File", "text"),
        ("size", "Size", "bytes"),
        ("files", "Copies", "num"),
        ("inodes", "Inodes", "num"),
        ("reclaimable_bytes", "Reclaimable", "bytes"),
        ("example", "Example path", "text"),
        ("xxh3_128", "xxh3-128", "text"),
        ("all", f"Paths (the first {DUPLICATE_PATHS})", "text"),
    ]
    return _table(pd.DataFrame(rows, columns=[c[0] for c in columns]), columns)


def _plain(value: Any) -> Any:
    """A pandas scalar as a plain Python value (NA -> None)."""
    import pandas as pd

    if value is None or value is pd.NA or (isinstance(value, float) and value != value):
        return None
    return value.item() if hasattr(value, "item") else value
