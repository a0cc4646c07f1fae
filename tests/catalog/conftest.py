"""Backends for the shared contract suite: SQLite and CSV in tmp_path, PostgreSQL in a throwaway database.

PostgreSQL tests use a database created for this session (`mdbatch_test_<random>`, dropped at the
end) and a fresh schema per test, so runs on a shared server never see each other's tables. They
skip when the server is unreachable, and fail instead under CI=true.
"""

from __future__ import annotations

import itertools
import os
import secrets
from collections.abc import Iterator
from pathlib import Path

import pytest

from ..conftest import need_service

PG_ADMIN = os.environ.get("MDBATCH_TEST_PG", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
BACKENDS = ("sqlite", "postgresql", "csv")
_schemas = itertools.count()


def _conninfo(url: str) -> str:
    from sqlalchemy.engine import make_url

    u = make_url(url)
    parts = {"host": u.host or "127.0.0.1", "port": u.port or 5432, "user": u.username or "postgres", "dbname": u.database or "postgres"}
    if u.password:
        parts["password"] = u.password
    return " ".join(f"{k}={v}" for k, v in parts.items())


@pytest.fixture(scope="session")
def pg_database() -> Iterator[str | None]:
    """URL of a database created for this test session, or None when PostgreSQL is unreachable."""
    try:
        import psycopg

        admin = psycopg.connect(_conninfo(PG_ADMIN), autocommit=True, connect_timeout=3)
    except Exception:  # noqa: BLE001 - any failure means "not reachable" here
        yield None
        return
    name = f"mdbatch_test_{secrets.token_hex(4)}"
    with admin:
        admin.execute(f'CREATE DATABASE "{name}"')
        try:
            yield PG_ADMIN.rsplit("/", 1)[0] + f"/{name}"
        finally:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def pg_url(pg_database: str | None) -> str:
    """A fresh, empty schema in the session database, as a catalog URL (search_path set)."""
    need_service(pg_database is not None, "PostgreSQL at 127.0.0.1:5432 not reachable")
    assert pg_database is not None
    import psycopg

    schema = f"t{next(_schemas)}_{secrets.token_hex(3)}"
    with psycopg.connect(_conninfo(pg_database), autocommit=True) as conn:
        conn.execute(f'CREATE SCHEMA "{schema}"')
    return f"{pg_database}?options=-csearch_path%3D{schema}"


def backend_url(kind: str, tmp_path: Path, request: pytest.FixtureRequest) -> str:
    if kind == "sqlite":
        return f"sqlite:///{tmp_path / 'catalog.db'}"
    if kind == "csv":
        return f"csv://{tmp_path / 'catalog'}"
    return str(request.getfixturevalue("pg_url"))


@pytest.fixture(params=BACKENDS)
def catalog_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """One URL per backend: the contract suite runs once against each."""
    return backend_url(request.param, tmp_path, request)
