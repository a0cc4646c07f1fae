"""`Catalog`: the catalog from a notebook or a script, every query a pandas DataFrame.

The CLI's reading commands (`mdbatch runs`, `mdbatch report`) and the HTML report are built on
this class, so what a notebook sees is what the command line shows::

    import mdbatch

    cat = mdbatch.Catalog("sqlite:///mdbatch.db")
    cat.systems(status="completed", simulation_type="bilayer")
    cat.findings()                 # the last audit's findings
    cat.analysis("rdf")            # the combined frame pushed with `mdbatch push analysis`
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, Literal, Self

from .catalog import CatalogBackend, schema
from .config import redact, resolve_url
from .lifecycle import open_catalog_for_command
from .errors import UsageError

if TYPE_CHECKING:
    import pandas as pd

    from .report import ReportInfo

__all__ = ["Catalog"]

FINDING_COLUMNS = ["run_id", "simulation", "kind", "item", "detail"]
StorageKey = Literal["extension", "simulation", "simulation_type"]


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
            backend = open_catalog_for_command(self._url, must_exist=True)
            try:
                version = backend.schema_version()
                if version is not None and version < schema.SCHEMA_VERSION:
                    backend.init_schema()  # migrate before reading columns an old catalog lacks
            except BaseException:
                backend.close()
                raise
            self._backend = backend
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
        definition = schema.table_for(name)
        names = list(columns) if columns is not None else [c.name for c in definition.columns]
        if name not in self.backend.tables():
            return schema.arrow_schema(definition, names).empty_table().to_pandas()
        import pyarrow as pa

        chunks = list(self.backend.iter_rows(name, where or None, names))
        table = pa.concat_tables(chunks) if chunks else schema.arrow_schema(definition, names).empty_table()
        return table.to_pandas()

    def systems(
        self, status: str | None = None, simulation_type: str | None = None, *, root: str | os.PathLike[str] | None = None,
        columns: Sequence[str] | None = None,
    ) -> pd.DataFrame:
        """Simulations (RUN_DATABASE rows), optionally of one status, one simulation type, under one root.

        `columns` selects columns (default: all, including the build YAML in `input_data`).
        """
        where = {k: v for k, v in (("status", status), ("simulation_type", simulation_type)) if v is not None}
        wanted = list(columns) if columns is not None else None
        read = wanted if wanted is None or root is None or "directory" in wanted else [*wanted, "directory"]
        frame = self.table(schema.RUN_TABLE, where, columns=read)
        if root is not None:
            base = os.path.abspath(root).rstrip("/") or "/"
            prefix = base if base == "/" else base + "/"
            frame = frame[(frame["directory"] == base) | frame["directory"].str.startswith(prefix, na=False)]
            frame = frame[wanted] if wanted is not None else frame
        return frame.sort_values("directory" if "directory" in frame.columns else frame.columns[0], ignore_index=True)

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
            known = sorted(t[len(schema.ANALYSIS_PREFIX):] for t in self.backend.tables() if schema.item_kind(t) == "analysis")
            raise UsageError(f"no analysis {name!r} in catalog {self.url} (analyses: {', '.join(known) or 'none'})")
        with tempfile.TemporaryDirectory(prefix="mdbatch-analysis-") as tmp:
            path = os.path.join(tmp, "frame.parquet")
            rebuilt = rebuild_frames(self.backend, name, path, hash)
            frame = pq.read_table(path).to_pandas()
        frame.attrs["missing"] = list(rebuilt.missing)
        return frame

    def artifacts(self, name: str, hash: str | None = None) -> pd.DataFrame:
        """ARTIFACT_<name> rows (one per simulation); `files` and `checksums` are parsed from JSON."""
        table = schema.item_table_name("artifact", name)
        frame = self.table(table, {"hash": hash} if hash else None)
        for column in ("files", "checksums"):
            frame[column] = [json.loads(v) if isinstance(v, str) and v else None for v in frame[column]]
        return frame

    # -- audits and history -----------------------------------------------------------------------

    def findings(self, run: str | None = "last", *, kind: str | None = None, simulation: str | None = None) -> pd.DataFrame:
        """Findings of audit run `run` ('last' = the newest audit; None = every run), sorted.

        Columns run_id, simulation (relative to the run's root), kind, item, detail.
        """
        where: dict[str, Any] = {k: v for k, v in (("kind", kind), ("simulation", simulation)) if v is not None}
        if run is not None:
            where["run_id"] = self.run(run)["run_id"]
        frame = self.table("MDBATCH_FINDINGS", where, columns=FINDING_COLUMNS)
        return frame.sort_values(["run_id", "simulation", "kind", "item"], ignore_index=True)

    def run(self, run: str = "last") -> dict[str, Any]:
        """One audit run's record ('last' = the newest) with its `summary` and `arguments` as dicts."""
        from .runs import resolve_run

        return resolve_run(self.backend, run, command="audit")

    def runs(self, root: str | os.PathLike[str] | None = None) -> pd.DataFrame:
        """Every recorded run (oldest first, optionally of one root) with its headline numbers."""
        from .runs import list_runs

        return list_runs(self.backend, os.path.abspath(root) if root is not None else None)

    def diff(self, a: str | None = None, b: str | None = None, *, root: str | os.PathLike[str] | None = None) -> pd.DataFrame:
        """Change records between audit runs `a` and `b` (default: the last two audits of a root).

        Columns run_id, scope (file|simulation|finding), change, simulation, item, size, digest, detail.
        """
        from .runs import diff_runs

        return diff_runs(self.backend, a, b, os.path.abspath(root) if root is not None else None)

    # -- storage ----------------------------------------------------------------------------------

    def duplicates(self, root: str | os.PathLike[str] | None = None, *, top: int | None = None) -> pd.DataFrame:
        """Groups of identical non-empty files (same size and xxh3-128), most reclaimable bytes first.

        Columns size, xxh3_128, files, inodes (distinct), reclaimable_bytes ((inodes - 1) × size)
        and paths (absolute, sorted). Every root when `root` is None; `top` keeps the first groups.
        """
        from .report.inventory import inventory_stats

        return inventory_stats(self.backend, _root(root), top=top).duplicates

    def storage(self, root: str | os.PathLike[str] | None = None, *, by: StorageKey = "extension") -> pd.DataFrame:
        """Files and bytes per file extension, per simulation or per simulation type, largest first."""
        from .report.inventory import inventory_stats

        if by not in ("extension", "simulation", "simulation_type"):
            raise UsageError(f"by={by!r}: use 'extension', 'simulation' or 'simulation_type'")
        stats = inventory_stats(self.backend, _root(root))
        if by == "extension":
            return stats.by_extension
        sims = stats.by_simulation
        if by == "simulation":
            return sims.sort_values(["bytes", "root", "simulation"], ascending=[False, True, True], ignore_index=True)
        types = self.systems(columns=["simulation_type", "directory"])
        full = [os.path.normpath(os.path.join(r, s)) for r, s in zip(sims["root"], sims["simulation"], strict=True)]
        kind = dict(zip(types["directory"], types["simulation_type"], strict=True))
        sims = sims.assign(simulation_type=[kind.get(d) or "(unknown)" for d in full])
        grouped = sims.groupby("simulation_type", as_index=False)[["files", "bytes"]].sum()
        return grouped.sort_values(["bytes", "simulation_type"], ascending=[False, True], ignore_index=True)

    # -- the HTML report --------------------------------------------------------------------------

    def report(self, path: str | os.PathLike[str], run: str = "last", *, top: int = 20) -> ReportInfo:
        """Write the self-contained HTML report of audit run `run` ('last' = the newest) to `path`."""
        from .report import write_report

        return write_report(self, path, run, top=top)


def _root(root: str | os.PathLike[str] | None) -> str | None:
    return os.path.abspath(root) if root is not None else None
