"""Catalog backends behind one interface; the URL picks the backend."""

from __future__ import annotations

import os
import re

from ..errors import UsageError
from .base import CatalogBackend, RunInfo

DEFAULT_URL = "sqlite:///mdbatch.db"

__all__ = ["DEFAULT_URL", "CatalogBackend", "RunInfo", "open_catalog", "redact", "resolve_url"]


def resolve_url(url: str | None) -> str:
    """The catalog URL to use: the argument, else $MDBATCH_DB, else `sqlite:///mdbatch.db`."""
    return url or os.environ.get("MDBATCH_DB") or DEFAULT_URL


def redact(url: str) -> str:
    """`url` with any password replaced by *** (for logs, errors and summaries)."""
    return re.sub(r"(//[^:/@]+:)[^@]*@", r"\1***@", url)


def open_catalog(url: str | None = None) -> CatalogBackend:
    """Open the backend named by `url` (see :func:`resolve_url`)."""
    resolved = resolve_url(url)
    scheme = resolved.split(":", 1)[0].lower()
    if scheme.startswith("sqlite") or scheme.startswith("postgresql"):
        from .sql import SQLCatalog

        return SQLCatalog(resolved)
    raise UsageError(f"unsupported catalog URL {redact(resolved)!r}: use sqlite:///PATH or postgresql+psycopg://...")
