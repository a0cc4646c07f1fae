"""What each backend does in its own way: SQLite locking and migration, PostgreSQL COPY, CSV journal."""

from __future__ import annotations

import os
import sqlite3
import threading
import time
from datetime import UTC, datetime

import pyarrow as pa
import pytest

from mdbatch.catalog import Upsert, open_catalog, redact, schema, url_password
from mdbatch.catalog.ops import rows_table, typed
from mdbatch.errors import CatalogError

from .test_contract import analysis_rows, run_rows

T0 = datetime(2024, 5, 1, tzinfo=UTC)


# -- SQLite ---------------------------------------------------------------------------------------


def test_sqlite_is_wal_and_waits_for_a_held_write_lock(tmp_path):
    path = tmp_path / "c.db"
    url = f"sqlite:///{path}"
    with open_catalog(url) as cat:
        cat.init_schema()
    holder = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    assert holder.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    holder.execute("BEGIN IMMEDIATE")
    holder.execute("INSERT INTO RUN_DATABASE (hash) VALUES ('held')")
    release = threading.Timer(1.0, lambda: holder.execute("COMMIT"))
    release.start()
    started = time.monotonic()
    with open_catalog(url) as cat:
        assert cat.apply([Upsert("RUN_DATABASE", run_rows(["A"]), "error")]) == [1]
        assert cat.count_rows("RUN_DATABASE") == 2
    assert time.monotonic() - started >= 0.9  # it waited for the lock instead of failing
    release.join()
    holder.close()


def test_sqlite_catalog_of_schema_1_is_migrated(tmp_path):
    path = tmp_path / "old.db"
    url = f"sqlite:///{path}"
    with open_catalog(url) as cat:
        cat.apply([Upsert("ANALYSIS_apl", analysis_rows(["A"])), Upsert("ANALYSIS_apl", analysis_rows(["B"], data=None))])
    with sqlite3.connect(path) as conn:  # make it look like a version-1 catalog
        conn.execute('ALTER TABLE "ANALYSIS_apl" DROP COLUMN data_csv_bytes')
        conn.execute("ALTER TABLE MDBATCH_FILES DROP COLUMN facts")
        conn.execute("UPDATE MDBATCH_SCHEMA SET value = '1'")
    with open_catalog(url) as cat:
        assert cat.schema_version() == 1
        cat.init_schema()
        assert cat.schema_version() == schema.SCHEMA_VERSION
        got = {r["hash"]: r["data_csv_bytes"] for t in cat.iter_rows("ANALYSIS_apl") for r in t.to_pylist()}
    assert got == {"A": len("a,b\n1,2\n"), "B": None}  # rows pushed before keep counting as pushed


def test_newer_schema_is_refused(catalog_url):
    with open_catalog(catalog_url) as cat:
        cat.init_schema()
        cat.apply([Upsert("MDBATCH_SCHEMA", pa.table({"key": ["schema_version"], "value": ["99"]}))])
    with open_catalog(catalog_url) as cat, pytest.raises(CatalogError, match="schema version 99, newer than this mdbatch"):
        cat.init_schema()


def test_unwritable_sqlite_is_a_catalog_error(tmp_path):
    with open_catalog(f"sqlite:///{tmp_path}/no/such/dir/c.db") as cat, pytest.raises(CatalogError, match="unable to open"):
        cat.init_schema()


# -- PostgreSQL -----------------------------------------------------------------------------------


def test_postgres_writes_through_copy_not_row_by_row(pg_url, monkeypatch):
    import psycopg

    from mdbatch.catalog.postgres import PostgresCatalog

    def forbidden(*_a, **_k):
        raise AssertionError("executemany used for a bulk write")

    monkeypatch.setattr(psycopg.Cursor, "executemany", forbidden)
    hashes = [f"H{i:05d}" for i in range(5000)]
    with open_catalog(pg_url) as cat:
        cat.init_schema()
        before = PostgresCatalog.copies
        assert cat.apply([Upsert("RUN_DATABASE", run_rows(hashes)), Upsert("ANALYSIS_apl", analysis_rows(hashes))]) == [5000, 5000]
        assert PostgresCatalog.copies - before == 2  # one COPY per table, whatever the row count
        assert cat.count_rows("ANALYSIS_apl") == 5000


def test_postgres_binary_copy_round_trips_awkward_values(pg_url):
    overview = rows_table(
        schema.ANALYSIS_OVERVIEW,
        [
            {
                "hash": "A",
                "item_type": "analysis",
                "item_name": "nul\x00inside",
                "status": "ok",
                "row_count": 2**40,
                "file_count": -3,
                "updated_at": datetime(1999, 12, 31, 23, 59, 59, 999999, tzinfo=UTC),
            },
            {
                "hash": "B",
                "item_type": "analysis",
                "item_name": "",
                "status": None,
                "row_count": None,
                "file_count": None,
                "updated_at": None,
            },
            {
                "hash": "C",
                "item_type": "analysis",
                "item_name": "ünï ✓ \\ \" ' \t\n",
                "status": "ok",
                "row_count": 0,
                "file_count": 0,
                "updated_at": datetime(2300, 1, 1, tzinfo=UTC),
            },
        ],
    )
    files = pa.table(
        {
            "root": ["/r", "/r"],
            "simulation": ["s", "s"],
            "path": ["a", "b"],
            "path_raw": pa.array([b"\x00\xff\\x", None], pa.binary()),
            "size": [1, 2],
            "mtime_ns": [2**62, 0],
            "ctime_ns": [1, 1],
            "inode": [1, 2],
            "device": [1, 1],
            "run_id": ["r", "r"],
        }
    )
    with open_catalog(pg_url) as cat:
        cat.apply([Upsert("ANALYSIS_OVERVIEW", overview), Upsert("MDBATCH_FILES", files)])
        got = {r["hash"]: r for t in cat.iter_rows("ANALYSIS_OVERVIEW") for r in t.to_pylist()}
        raw = [r["path_raw"] for t in cat.iter_rows("MDBATCH_FILES") for r in t.to_pylist()]
    assert got["A"]["item_name"] == "nul\ufffdinside"  # PostgreSQL text cannot hold NUL
    assert got["A"]["row_count"] == 2**40 and got["A"]["file_count"] == -3
    assert got["A"]["updated_at"] == datetime(1999, 12, 31, 23, 59, 59, 999999, tzinfo=UTC)
    assert got["B"]["item_name"] == "" and got["B"]["status"] is None and got["B"]["updated_at"] is None
    assert got["C"]["item_name"] == "ünï ✓ \\ \" ' \t\n" and got["C"]["updated_at"].year == 2300
    assert raw == [b"\x00\xff\\x", None]


def test_postgres_concurrent_table_creation(pg_url):
    errors: list[BaseException] = []

    def create(i: int) -> None:
        try:
            with open_catalog(pg_url) as cat:
                cat.apply([Upsert("ANALYSIS_shared", analysis_rows([f"T{i}"]))])
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=create, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    with open_catalog(pg_url) as cat:
        assert cat.count_rows("ANALYSIS_shared") == 8


# -- CSV --------------------------------------------------------------------------------------------


def test_csv_files_are_typed_readable_and_sorted(tmp_path):
    url = f"csv://{tmp_path / 'cat'}"
    with open_catalog(url) as cat:
        cat.apply([Upsert("RUN_DATABASE", run_rows(["B", "A"])), Upsert("ANALYSIS_apl", analysis_rows(["A"]))])
    text = (tmp_path / "cat" / "RUN_DATABASE.csv").read_text()
    assert text.splitlines()[0] == ",".join(c.name for c in schema.RUN_DATABASE.columns)
    assert text.splitlines()[1].startswith('"A",')
    assert {p.name for p in (tmp_path / "cat").iterdir() if not p.name.startswith(".")} >= {"ANALYSIS_apl.csv", "RUN_DATABASE.csv"}
    import pandas as pd

    frame = pd.read_csv(tmp_path / "cat" / "ANALYSIS_apl.csv")
    assert frame.loc[0, "data_csv"] == "a,b\n1,2\n" and frame.loc[0, "row_count"] == 1


def test_csv_commit_interrupted_between_renames_is_completed(tmp_path, monkeypatch):
    url = f"csv://{tmp_path / 'cat'}"
    with open_catalog(url) as cat:
        cat.init_schema()
    real_replace = os.replace
    done = []

    def dying_replace(src, dst):
        if str(dst).endswith(".csv") and done:
            raise KeyboardInterrupt("killed between renames")
        real_replace(src, dst)
        if str(dst).endswith(".csv"):
            done.append(dst)

    monkeypatch.setattr(os, "replace", dying_replace)
    with open_catalog(url) as cat, pytest.raises(KeyboardInterrupt):
        cat.apply([Upsert("RUN_DATABASE", run_rows(["A"])), Upsert("ANALYSIS_apl", analysis_rows(["A"]))])
    monkeypatch.setattr(os, "replace", real_replace)
    journal = tmp_path / "cat" / ".mdbatch-journal.json"
    assert journal.exists() and len(done) == 1  # half the batch's files are in place
    with open_catalog(url) as cat:  # the next user of the directory finishes the commit
        assert cat.count_rows("RUN_DATABASE") == 1 and cat.count_rows("ANALYSIS_apl") == 1
    assert not journal.exists() and not list((tmp_path / "cat").glob(".*.tmp"))


def test_csv_failed_write_leaves_no_trace(tmp_path):
    url = f"csv://{tmp_path / 'cat'}"
    with open_catalog(url) as cat:
        cat.apply([Upsert("RUN_DATABASE", run_rows(["A"]))])
        before = (tmp_path / "cat" / "RUN_DATABASE.csv").read_bytes()
        with pytest.raises(CatalogError):
            cat.apply([Upsert("RUN_DATABASE", run_rows(["B"])), Upsert("RUN_DATABASE", run_rows(["A"]), "error")])
    assert (tmp_path / "cat" / "RUN_DATABASE.csv").read_bytes() == before
    assert not list((tmp_path / "cat").glob(".*.tmp"))


# -- URLs -------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "shown", "secret"),
    [
        ("postgresql+psycopg://lab:s3cr%40t@db:5432/x", "postgresql+psycopg://lab:***@db:5432/x", "s3cr%40t"),
        ("postgresql://:pw@db/x", "postgresql://:***@db/x", "pw"),
        ("postgresql+psycopg://lab@db/x?password=pw2&sslmode=require", "postgresql+psycopg://lab@db/x?password=***&sslmode=require", "pw2"),
        ("sqlite:///a:b@c.db", "sqlite:///a:b@c.db", None),
        ("csv:///data/catalog", "csv:///data/catalog", None),
    ],
)
def test_passwords_are_redacted(url, shown, secret):
    assert redact(url) == shown
    assert url_password(url) == secret


def test_postgres_catalog_of_schema_1_is_migrated(pg_url):
    import psycopg

    with open_catalog(pg_url) as cat:
        cat.apply([Upsert("RUN_DATABASE", run_rows(["A"])), Upsert("ANALYSIS_apl", analysis_rows(["A"]))])
    conninfo, search = pg_url.split("?")[0], pg_url.split("search_path%3D")[1]
    from ..conftest import pg_conninfo

    with psycopg.connect(pg_conninfo(conninfo), autocommit=True) as conn:  # what version 1 looked like
        conn.execute(f'SET search_path TO "{search}"')
        conn.execute('ALTER TABLE "RUN_DATABASE" ALTER COLUMN hash TYPE varchar(64)')
        conn.execute('ALTER TABLE "ANALYSIS_apl" DROP COLUMN data_csv_bytes')
        conn.execute("UPDATE \"MDBATCH_SCHEMA\" SET value = '1'")
    long_hash = "x" * 300  # a directory name used as the hash: too long for version 1
    with open_catalog(pg_url) as cat:
        cat.init_schema()
        assert cat.schema_version() == schema.SCHEMA_VERSION
        cat.apply([Upsert("RUN_DATABASE", run_rows([long_hash]))])
        assert cat.count_rows("RUN_DATABASE") == 2
        assert cat.existing_keys("ANALYSIS_apl", pa.table({"hash": ["A"]})).num_rows == 1  # pushed data still counts


def test_sqlite_multi_column_lookup_probes_the_key_instead_of_scanning(tmp_path):
    """A per-batch lookup (root, simulation) must cost the same in a big table as in a small one:
    `(a, b) IN (VALUES ...)` made SQLite scan the whole index per query (quadratic audits)."""
    n = 40_000
    files = pa.table(
        {
            "root": ["/r"] * n,
            "simulation": [f"s{i // 4:05d}" for i in range(n)],
            "path": [f"f{i % 4}" for i in range(n)],
            "size": [1] * n,
            "mtime_ns": [0] * n,
            "ctime_ns": [0] * n,
            "inode": list(range(n)),
            "device": [1] * n,
            "run_id": ["r"] * n,
        }
    )
    with open_catalog(f"sqlite:///{tmp_path / 'c.db'}") as cat:
        cat.apply([Upsert("MDBATCH_FILES", files)])
        match = pa.table({"root": ["/r", "/r", "/r", "/other"], "simulation": ["s00003", "s09999", "s00003", "s00003"]})
        steps = 0

        def tick() -> int:
            nonlocal steps
            steps += 1
            return 0

        with cat.engine.connect() as conn:
            conn.connection.dbapi_connection.set_progress_handler(tick, 100)
            found = cat._lookup(conn, schema.FILES, ["root", "simulation"], typed(schema.FILES, match), None, ["simulation", "path"])
        assert sorted(found) == [("s00003", f"f{k}") for k in range(4)] + [("s09999", f"f{k}") for k in range(4)]
        assert steps < 50, f"{steps * 100} SQLite VM steps for 3 keys in {n} rows: the lookup scanned the table"
        got = cat.rows_matching("MDBATCH_FILES", match, ["simulation", "path"])
        assert got.num_rows == 8  # a repeated key tuple matches once
