"""`Catalog`: the catalog from a notebook or a script, every query a pandas DataFrame.

The CLI's reading commands (`mdbatch runs`, `mdbatch report`) and the HTML report are built on
this class, so what a notebook sees is what the command line shows::

    import mdbatch

    cat = mdbatch.Catalog("sqlite:///mdbatch.db")
    cat.systems(status="completed", simulation_type="bilayer")
    cat.findings()                 # the last audit's findings
    cat.completeness(status="completed")               # per simulation type, each analysis: have/faulty/lacking
    cat.lacking("rdf", status="completed", simulation_type="bilayer")   # which completed bilayers lack rdf
    cat.analysis("rdf")            # the combined frame pushed with `mdbatch push analysis`

Integer columns are integers on every backend: int64 where the schema forbids NULL, pandas'
nullable Int64 where it allows it (never float64 because one row holds a NULL).
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, Literal, Self

from .catalog import CatalogBackend, filestats, queries, schema
from .config import redact, resolve_url
from .errors import UsageError
from .lifecycle import open_catalog_for_command

if TYPE_CHECKING:
    import pandas as pd

    from .report import ReportInfo

__all__ = ["Catalog"]

StorageKey = Literal["extension", "simulation", "simulation_type"]
GroupKey = Literal["simulation_type", "parametrization", "status"]


class Catalog:
    """A catalog opened for reading (SQLite, PostgreSQL or CSV URL; see `mdbatch.catalog`).

    `url` defaults to $MDBATCH_DB, then the config file, then `sqlite:///mdbatch.db`. A catalog
    file or directory that does not exist is an error rather than being created empty. The
    connection opens on first use; close it with :meth:`close` or use the object as a context
    manager. An already open :class:`~mdbatch.catalog.CatalogBackend` may be passed instead of a
    URL (it is then not closed by :meth:`close`).
    """

    def __init__(self, url: str | CatalogBackend | None = None) -> None:
        if isinstance(url, CatalogBackend):
            self._url = url.display_url
            self._backend: CatalogBackend | None = url
            self._owned = False
        else:
            self._url = resolve_url(url)
            self._backend = None
            self._owned = True

    # -- connection -----------------------------------------------------------------------------

    @property
    def url(self) -> str:
        """The catalog URL with any password replaced by ***."""
        return redact(self._url)

    @property
    def backend(self) -> CatalogBackend:
        """The open backend (opened, and an older schema migrated, on first use)."""
        if self._backend is None:
            self._backend = open_catalog_for_command(self._url, must_exist=True)
        return self._backend

    def close(self) -> None:
        """Release the connection (the object can be used again; it reconnects)."""
        if self._backend is not None and self._owned:
            self._backend.close()
            self._backend = None

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Catalog({self.url!r})"

    # -- tables ---------------------------------------------------------------------------------

    def tables(self) -> list[str]:
        """Names of the tables in the catalog, sorted."""
        return self.backend.tables()

    def table(self, name: str, where: Mapping[str, Any] | None = None, *, columns: Sequence[str] | None = None) -> pd.DataFrame:
        """Rows of one catalog table (RUN_DATABASE, ANALYSIS_<name>, MDBATCH_FILES, …) equal to `where` ({column: value}).

        An absent table gives an empty frame with the table's columns; a name that is not a
        catalog table raises UsageError.
        """
        return queries.frame(self.backend, name, where, columns)

    def systems(
        self,
        status: str | None = None,
        simulation_type: str | None = None,
        *,
        root: str | os.PathLike[str] | None = None,
        columns: Sequence[str] | None = None,
    ) -> pd.DataFrame:
        """Simulations (RUN_DATABASE rows), optionally of one status, one simulation type, under one root.

        `columns` selects columns (default: all, including the build YAML in `input_data`).
        """
        return queries.systems(self.backend, status, simulation_type, root=_root(root), columns=columns)

    def analysis(self, name: str, hash: str | None = None) -> pd.DataFrame:
        """The combined frame of analysis `name` across simulations, with a `hash` column first.

        Rebuilt from what `mdbatch push analysis` stored (`data_csv`, else the parquet at
        `data_path` when it is readable). `hash` restricts it to one simulation. Hashes of
        simulations without stored data are listed in ``frame.attrs["missing"]``.
        """
        import pyarrow.parquet as pq

        from .sync.pull import rebuild_frames

        table = schema.item_table_name("analysis", name)
        if table not in self.backend.tables():
            known = sorted(t[len(schema.ANALYSIS_PREFIX) :] for t in self.backend.tables() if schema.item_kind(t) == "analysis")
            raise UsageError(f"no analysis {name!r} in catalog {self.url} (analyses: {', '.join(known) or 'none'})")
        with tempfile.TemporaryDirectory(prefix="mdbatch-analysis-") as tmp:
            path = os.path.join(tmp, "frame.parquet")
            rebuilt = rebuild_frames(self.backend, name, path, hash)
            frame = pq.read_table(path).to_pandas()
        frame.attrs["missing"] = list(rebuilt.missing)
        return frame

    def artifacts(self, name: str, hash: str | None = None) -> pd.DataFrame:
        """ARTIFACT_<name> rows (one per simulation); `files` and `checksums` are parsed from JSON."""
        return queries.artifacts(self.backend, name, hash)

    # -- audits and history -----------------------------------------------------------------------

    def findings(
        self,
        run: str | None = "last",
        *,
        kind: str | Sequence[str] | None = None,
        simulation: str | None = None,
        new: bool = False,
    ) -> pd.DataFrame:
        """Findings of audit run `run` ('last' = the newest audit; None = every run), sorted.

        Columns run_id, simulation (relative to the run's root), kind, item, detail, and the
        simulation's hash and directory (so the frame joins `systems()` on either). `kind` is one
        kind or several; `new` keeps the findings the previous audit of the root did not have.
        """
        return queries.findings(self.backend, run, kind=kind, simulation=simulation, new=new)

    def run(self, run: str = "last") -> dict[str, Any]:
        """One audit run's record ('last' = the newest) with its `summary` and `arguments` as dicts."""
        return queries.resolve_run(self.backend, run, command="audit")

    def runs(self, root: str | os.PathLike[str] | None = None) -> pd.DataFrame:
        """Every recorded run (oldest first, optionally of one root) with its headline numbers."""
        return queries.list_runs(self.backend, _root(root))

    def diff(self, a: str | None = None, b: str | None = None, *, root: str | os.PathLike[str] | None = None) -> pd.DataFrame:
        """Change records between audit runs `a` and `b` (default: the last two audits of a root).

        Columns run_id, scope (file|simulation|finding), change, simulation, item, size, digest, detail.
        """
        return queries.diff_runs(self.backend, a, b, _root(root))

    # -- analysis completeness ----------------------------------------------------------------------

    def completeness(
        self,
        root: str | os.PathLike[str] | None = None,
        by: GroupKey | Sequence[GroupKey] = "simulation_type",
        *,
        status: str | None = None,
        simulation_type: str | None = None,
    ) -> pd.DataFrame:
        """Which registered analyses and artifacts each group of simulations has, has faulty, or lacks.

        Groups are simulation types (`by`: "simulation_type", "parametrization", "status", or several,
        e.g. ("simulation_type", "parametrization")); a simulation lacks an item when it has no
        ANALYSIS_OVERVIEW row for it while others of its group have one. One row per group and item:
        the `by` columns, item_type (analysis|artifact), item_name, simulations, have (status ok),
        faulty (registered, not ok), lacking, stale (registered with a stale dependency, see
        `lineage`), then the faulty per status: missing, mismatch, unreadable, unsafe (int64;
        have + faulty + lacking == simulations). `status` and
        `simulation_type` keep only those simulations (status="completed": which completed runs
        lack what other completed runs have); `root` the simulations under it.
        """
        return queries.completeness(self.backend, _root(root), by, status=status, simulation_type=simulation_type)

    def lacking(
        self,
        item_name: str | None = None,
        *,
        root: str | os.PathLike[str] | None = None,
        by: GroupKey | Sequence[GroupKey] = "simulation_type",
        status: str | None = None,
        simulation_type: str | None = None,
    ) -> pd.DataFrame:
        """The simulations behind `completeness()`'s lacking counts, one row per simulation and item
        (of `item_name` only when given): hash, directory, simulation_type, parametrization, status,
        item_type, item_name."""
        return queries.lacking(self.backend, _root(root), by, status=status, simulation_type=simulation_type, item_name=item_name)

    # -- lineage ----------------------------------------------------------------------------------

    def lineage(self, hash: str | None = None, *, state: str | None = None) -> pd.DataFrame:
        """The edges of a simulation's dependency graph (`extras.depends_on`, see docs/lineage.md) as
        the audits recorded them: one row per edge with hash, simulation, item (the dependent,
        ``analysis:<name>`` or ``artifact:<name>``), depends_on (its upstream), state (ok, stale,
        missing, cycle), detail and root. Every simulation's edges when `hash` is None; `state`
        keeps one state."""
        return queries.lineage(self.backend, hash, state=state)

    # -- storage ----------------------------------------------------------------------------------

    def duplicates(self, root: str | os.PathLike[str] | None = None, *, top: int | None = None) -> pd.DataFrame:
        """Groups of identical non-empty files (same size and xxh3-128), most reclaimable bytes first.

        Columns size, xxh3_128, files, inodes (distinct), reclaimable_bytes ((inodes - 1) × size)
        and paths (absolute, sorted). Every root when `root` is None; `top` keeps the first groups.
        """
        return filestats.inventory_stats(self.backend, _root(root), top=top).duplicates

    def storage(self, root: str | os.PathLike[str] | None = None, *, by: StorageKey = "extension") -> pd.DataFrame:
        """Files and bytes per file extension, per simulation or per simulation type, largest first."""
        return filestats.storage(self.backend, _root(root), by)

    # -- the HTML report --------------------------------------------------------------------------

    def report(self, path: str | os.PathLike[str], run: str = "last", *, top: int = 20) -> ReportInfo:
        """Write the self-contained HTML report of audit run `run` ('last' = the newest) to `path`."""
        from .report import write_report

        return write_report(self.backend, path, run, top=top)


def _root(root: str | os.PathLike[str] | None) -> str | None:
    return os.path.abspath(root) if root is not None else None
