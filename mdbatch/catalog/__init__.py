"""Catalog backends behind one interface; the URL picks the backend.

`sqlite:///relative.db` / `sqlite:////absolute.db` (the default, embedded), `postgresql+psycopg://user@host:5432/db`
(a shared server; `postgresql://` means the same), `csv:///path/to/dir` (one CSV per table).
"""

from __future__ import annotations

import os
import re

from ..errors import CatalogError, UsageError
from .base import CatalogBackend, RunInfo
from .ops import Delete, Op, Upsert

DEFAULT_URL = "sqlite:///mdbatch.db"

__all__ = [
    "DEFAULT_URL", "CatalogBackend", "Delete", "Op", "RunInfo", "Upsert", "backend_name", "open_catalog", "redact",
    "resolve_url", "url_password",
]

_USERINFO = re.compile(r"(//[^:/@?#]*:)([^@/?#]*)@")
_QUERY_PASSWORD = re.compile(r"([?&]password=)[^&#]*", re.IGNORECASE)


def resolve_url(url: str | None) -> str:
    """The catalog URL to use: the argument, else $MDBATCH_DB, else the config file's, else `sqlite:///mdbatch.db`."""
    if url:
        return url
    if os.environ.get("MDBATCH_DB"):
        return os.environ["MDBATCH_DB"]
    from ..config import configured_url

    return configured_url() or DEFAULT_URL


def redact(url: str) -> str:
    """`url` with any password replaced by *** (for logs, errors, summaries and `config show`)."""
    if url.lower().startswith(("sqlite", "csv")):  # file URLs carry no password (a ':' or '@' is part of the path)
        return url
    return _QUERY_PASSWORD.sub(r"\1***", _USERINFO.sub(r"\1***@", url))


def url_password(url: str) -> str | None:
    """The password a URL carries (to scrub it from driver messages), or None."""
    if url.lower().startswith(("sqlite", "csv")):
        return None
    found = _USERINFO.search(url)
    if found and found.group(2):
        return found.group(2)
    query = re.search(r"[?&]password=([^&#]*)", url, re.IGNORECASE)
    return query.group(1) if query and query.group(1) else None


def backend_name(url: str) -> str:
    """'sqlite', 'postgresql' or 'csv' for a catalog URL; UsageError for anything else."""
    scheme = url.split(":", 1)[0].lower() if ":" in url else ""
    for name in ("sqlite", "postgresql", "csv"):
        if scheme == name or scheme.startswith(name + "+"):
            return name
    raise UsageError(
        f"unsupported catalog URL {redact(url)!r}: use sqlite:///PATH, postgresql+psycopg://USER@HOST:PORT/DB or csv:///DIR"
    )


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
