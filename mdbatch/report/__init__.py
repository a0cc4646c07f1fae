"""The HTML audit report: one self-contained file to look at a campaign instead of reading findings.

`write_report(catalog, path, run)` gathers the run's numbers through the `Catalog` API
(gather.py), aggregates the plots on the server as inline SVG (svg.py), embeds the tables as
compact JSON rendered and paginated by a small inline script (assets.py), and writes the page
(page.py) atomically. The file needs no network access to open.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass

from ..catalog.base import CatalogBackend
from .gather import ReportData, gather
from .page import render_html

__all__ = ["ReportData", "ReportInfo", "gather", "render_html", "write_report"]


@dataclass(frozen=True, slots=True)
class ReportInfo:
    """What `write_report` wrote: where, how big, which run, and how long gathering and rendering took."""

    path: str
    bytes: int
    run_id: str
    root: str
    simulations: int
    findings: int
    gather_s: float
    render_s: float


def write_report(catalog: CatalogBackend | str | None, path: str | os.PathLike[str], run: str = "last", *, top: int = 20) -> ReportInfo:
    """Write the report of audit run `run` ('last' = the newest audit) to `path`, atomically.

    `catalog` is an open catalog, or a catalog URL (None: $MDBATCH_DB, then the default). `top` is
    how many duplicate groups the report lists. The file gets the mode a new file would (0666 less
    the umask), so it can be shared. Raises UsageError when the catalog has no such run.
    """
    from ..atomic import atomic_write_bytes, umask_mode
    from ..lifecycle import open_catalog_for_command

    backend = catalog if isinstance(catalog, CatalogBackend) else open_catalog_for_command(catalog, must_exist=True)
    try:
        t0 = time.perf_counter()
        data = gather(backend, run, top=top)
        t1 = time.perf_counter()
        # backslashreplace: a lone surrogate in a catalog string must not make the page unwritable.
        page = render_html(data).encode("utf-8", "backslashreplace")
        t2 = time.perf_counter()
    finally:
        if backend is not catalog:
            backend.close()
    atomic_write_bytes(path, page, mode=umask_mode())  # a report is for sharing: the mode a new file would get
    return ReportInfo(
        path=os.fspath(path),
        bytes=len(page),
        run_id=str(data.run["run_id"]),
        root=data.root,
        simulations=data.simulations.total,
        findings=data.findings.total,
        gather_s=round(t1 - t0, 3),
        render_s=round(t2 - t1, 3),
    )
