"""Catalog backends behind one interface; the URL picks the backend.

`sqlite:///relative.db` / `sqlite:////absolute.db` (the default, embedded), `postgresql+psycopg://user@host:5432/db`
(a shared server; `postgresql://` means the same), `csv:///path/to/dir` (one CSV per table).
"""

from __future__ import annotations

import os

from ..config import DEFAULT_URL, backend_name, redact, resolve_url, url_password
from ..errors import CatalogError
from .base import CatalogBackend
from .ops import Delete, Op, Upsert

__all__ = [
    "DEFAULT_URL",
    "CatalogBackend",
    "Delete",
    "Op",
    "Upsert",
    "backend_name",
    "open_catalog",
    "redact",
    "resolve_url",
    "url_password",
]


def open_catalog(url: str | None = None, *, must_exist: bool = False) -> CatalogBackend:
    """Open the backend named by `url` (see :func:`resolve_url`).

    With `must_exist` (reading commands), a SQLite file or CSV directory that is not there is a
    CatalogError instead of being created empty.
    """
    resolved = resolve_url(url)
    kind = backend_name(resolved)
    if kind == "csv":
        from .csvdir import CSVCatalog, csv_dir

        if must_exist and not csv_dir(resolved).is_dir():
            raise CatalogError(f"catalog {resolved}: directory {csv_dir(resolved)} does not exist")
        return CSVCatalog(resolved)
    if kind == "sqlite":
        from .sqlite import SQLiteCatalog

        path = resolved.split("///", 1)[1] if "///" in resolved else ""
        if must_exist and path and not path.startswith(":memory:") and not os.path.exists(path.split("?", 1)[0]):
            raise CatalogError(f"catalog {resolved}: file {path.split('?', 1)[0]} does not exist")
        return SQLiteCatalog(resolved)
    try:
        from .postgres import PostgresCatalog
    except ImportError as exc:  # psycopg is an extra, like dask-jobqueue for --cluster slurm
        raise CatalogError(f"catalog {redact(resolved)}: PostgreSQL needs psycopg 3: pip install 'mdbatch[postgres]' ({exc})") from exc

    scheme, rest = resolved.split(":", 1)
    if scheme.lower() == "postgresql":  # SQLAlchemy's default driver would be psycopg2
        resolved = f"postgresql+psycopg:{rest}"
    return PostgresCatalog(resolved)
