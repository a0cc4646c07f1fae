"""Shared fixtures: real campaigns on disk, catalogs of every backend, and services that skip
locally but fail under CI.

PostgreSQL tests use a database created for this session (`mdbatch_test_<random>`, dropped at the
end) and a fresh schema per test, so runs on a shared server never see each other's tables. They
skip when the server is unreachable, and fail instead under CI=true.
"""

from __future__ import annotations

import itertools
import os
import secrets
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from mdbatch.generate import GenerateResult, generate_campaign

IS_ROOT = hasattr(os, "geteuid") and os.geteuid() == 0
IN_CI = os.environ.get("CI", "").lower() == "true"


def need_service(available: bool, reason: str) -> None:
    """Skip with `reason` when a service is missing locally; fail instead under CI=true."""
    if available:
        return
    if IN_CI:
        pytest.fail(f"required under CI: {reason}")
    pytest.skip(reason)


@pytest.fixture
def make_campaign(tmp_path: Path) -> Callable[..., GenerateResult]:
    """Factory: a generated campaign under tmp_path (real parquet, registries, binaries)."""
    counter = iter(range(1000))

    def make(sims: int = 12, **kwargs: object) -> GenerateResult:
        return generate_campaign(tmp_path / f"campaign{next(counter)}", sims, **kwargs)  # type: ignore[arg-type]

    return make


def expected(result: GenerateResult) -> set[tuple[str, str, str]]:
    """The findings a scan must report for a generated campaign, as (simulation, kind, item)."""
    return {(f["simulation"], f["kind"], f["item"]) for f in result.expected_findings if not (IS_ROOT and f.get("requires_non_root"))}


# -- catalogs: SQLite and CSV in tmp_path, PostgreSQL in a throwaway database ---------------------

PG_ADMIN = os.environ.get("MDBATCH_TEST_PG", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
BACKENDS = ("sqlite", "postgresql", "csv")
_schemas = itertools.count()


def pg_conninfo(url: str) -> str:
    """A libpq connection string for a SQLAlchemy PostgreSQL URL (its query string ignored)."""
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

        admin = psycopg.connect(pg_conninfo(PG_ADMIN), autocommit=True, connect_timeout=3)
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
    with psycopg.connect(pg_conninfo(pg_database), autocommit=True) as conn:
        conn.execute(f'CREATE SCHEMA "{schema}"')
    return f"{pg_database}?options=-csearch_path%3D{schema}"


def backend_url(kind: str, tmp_path: Path, request: pytest.FixtureRequest) -> str:
    """A catalog URL of backend `kind` ('sqlite', 'postgresql' or 'csv'), empty."""
    if kind == "sqlite":
        return f"sqlite:///{tmp_path / 'catalog.db'}"
    if kind == "csv":
        return f"csv://{tmp_path / 'catalog'}"
    return str(request.getfixturevalue("pg_url"))


@pytest.fixture(params=BACKENDS)
def catalog_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """One URL per backend: the contract suite (and the sync tests) run once against each."""
    return backend_url(request.param, tmp_path, request)
