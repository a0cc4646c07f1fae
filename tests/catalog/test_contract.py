"""The contract every catalog backend keeps, run against SQLite, PostgreSQL and CSV alike.

Every test that writes checks what was stored through an independent reader (rawread: sqlite3,
psycopg, the csv module), value by value, besides reading it back through mdbatch.
"""

from __future__ import annotations

import json
import multiprocessing
from collections import Counter
from datetime import UTC, datetime, timedelta, timezone

import pyarrow as pa
import pytest

from mdbatch.batch import FILES_SCHEMA, scan_batch
from mdbatch.catalog import Delete, Upsert, open_catalog, queries, schema
from mdbatch.catalog.filestats import duplicate_totals
from mdbatch.catalog.ops import Update, rows_table
from mdbatch.catalog.writes import batch_ops
from mdbatch.errors import CatalogError, DuplicateKeysError, InvalidNameError, UsageError
from mdbatch.hashcache import HASH_CACHE_VERSION
from mdbatch.lifecycle import RunRecord

from .rawread import assert_stored, backend, decode, full_row, stored_rows, stored_tables

T0 = datetime(2024, 5, 1, 12, 0, 0, 123456, tzinfo=UTC)
HOSTILE = 'x\'); DROP TABLE "RUN_DATABASE";--'


def run_rows(hashes: list[str], status: str = "completed", when: datetime = T0) -> pa.Table:
    return rows_table(
        schema.RUN_DATABASE,
        [
            {
                "hash": h,
                "engine": "gromacs",
                "parametrization": "charmm36m",
                "simulation_type": "bilayer",
                "input_data": f"hash: {h}\n",
                "input_data_type": "yaml",
                "directory": f"/scratch/{h}",
                "status": status,
                "timestamp_utc": when,
            }
            for h in hashes
        ],
    )


def analysis_rows(hashes: list[str], data: str | None = "a,b\n1,2\n", rows: int = 1) -> pa.Table:
    return rows_table(
        schema.analysis_table("apl"),
        [
            {
                "hash": h,
                "directory": f"/scratch/{h}",
                "simulation_type": "bilayer",
                "row_count": rows,
                "columns": '["a", "b"]',
                "data_csv": data,
                "data_path": f"/scratch/{h}/.analysis/apl.parquet",
                "timestamp_utc": T0,
                "data_csv_bytes": None if data is None else len(data),
            }
            for h in hashes
        ],
    )


def all_rows(cat, table, **where):
    return [r for t in cat.iter_rows(table, where or None) for r in t.to_pylist()]


def run_row(h: str, status: str = "completed", when: datetime = T0) -> dict:
    """The whole RUN_DATABASE row `run_rows` writes for `h` (what the independent reader must find)."""
    return full_row(
        schema.RUN_DATABASE.c.keys(),
        hash=h,
        engine="gromacs",
        parametrization="charmm36m",
        simulation_type="bilayer",
        input_data=f"hash: {h}\n",
        input_data_type="yaml",
        directory=f"/scratch/{h}",
        status=status,
        timestamp_utc=when,
    )


def analysis_row(h: str, data: str | None = "a,b\n1,2\n", rows: int = 1) -> dict:
    """The whole ANALYSIS_apl row `analysis_rows` writes for `h`."""
    return full_row(
        schema.analysis_table("apl").c.keys(),
        hash=h,
        directory=f"/scratch/{h}",
        simulation_type="bilayer",
        row_count=rows,
        columns='["a", "b"]',
        data_csv=data,
        data_path=f"/scratch/{h}/.analysis/apl.parquet",
        timestamp_utc=T0,
        data_csv_bytes=None if data is None else len(data),
    )


def overview_row(**values) -> dict:
    return full_row(schema.ANALYSIS_OVERVIEW.c.keys(), **values)


RUN_KEY = ["hash"]
OVERVIEW_KEY = ["hash", "item_type", "item_name"]
FILES_KEY = ["root", "simulation", "path"]


class TestCatalogContract:
    """Shared tests: each runs once per backend (see `catalog_url` in tests/conftest.py)."""

    def test_schema_is_created_versioned_and_idempotent(self, catalog_url):
        with open_catalog(catalog_url) as cat:
            assert cat.schema_version() is None or cat.schema_version() == schema.SCHEMA_VERSION
            cat.init_schema()
            cat.init_schema()
            assert cat.schema_version() == schema.SCHEMA_VERSION
            assert {t.name for t in schema.FIXED_TABLES} <= set(cat.tables())
        with open_catalog(catalog_url) as again:
            again.init_schema()
            assert again.count_rows("RUN_DATABASE") == 0
        assert {t.name for t in schema.FIXED_TABLES} <= stored_tables(catalog_url)
        assert_stored(catalog_url, "MDBATCH_SCHEMA", [{"key": "schema_version", "value": str(schema.SCHEMA_VERSION)}], ["key"])
        assert stored_rows(catalog_url, "RUN_DATABASE") == []

    def test_force_drops_every_mdbatch_table(self, catalog_url):
        with open_catalog(catalog_url) as cat:
            cat.apply([Upsert("RUN_DATABASE", run_rows(["A"])), Upsert("ANALYSIS_apl", analysis_rows(["A"]))])
            assert "ANALYSIS_apl" in cat.tables()
            cat.init_schema(force=True)
            assert "ANALYSIS_apl" not in cat.tables()
            assert cat.count_rows("RUN_DATABASE") == 0 and cat.schema_version() == schema.SCHEMA_VERSION
        assert "ANALYSIS_apl" not in stored_tables(catalog_url) and stored_rows(catalog_url, "RUN_DATABASE") == []
        assert_stored(catalog_url, "MDBATCH_SCHEMA", [{"key": "schema_version", "value": str(schema.SCHEMA_VERSION)}], ["key"])

    def test_typed_round_trip(self, catalog_url):
        with open_catalog(catalog_url) as cat:
            cat.apply([Upsert("RUN_DATABASE", run_rows(["B", "A"]))])
            rows = all_rows(cat, "RUN_DATABASE")
        assert [r["hash"] for r in rows] == ["A", "B"]  # ordered by key
        assert rows[0]["timestamp_utc"] == T0 and rows[0]["timestamp_utc"].utcoffset() == timedelta(0)
        assert rows[0]["input_data"] == "hash: A\n" and rows[0]["status"] == "completed"
        assert_stored(catalog_url, "RUN_DATABASE", [run_row("A"), run_row("B")], RUN_KEY)

    def test_replace_skip_and_error(self, catalog_url):
        later = T0 + timedelta(days=1)
        with open_catalog(catalog_url) as cat:
            assert cat.apply([Upsert("RUN_DATABASE", run_rows(["A", "B"]), "error")]) == [2]
            assert cat.apply([Upsert("RUN_DATABASE", run_rows(["B", "C"], "build", later), "skip")]) == [1]
            assert {r["hash"]: r["status"] for r in all_rows(cat, "RUN_DATABASE")} == {"A": "completed", "B": "completed", "C": "build"}
            assert cat.apply([Upsert("RUN_DATABASE", run_rows(["A"], "production", later), "replace")]) == [1]
            assert all_rows(cat, "RUN_DATABASE", hash="A")[0]["timestamp_utc"] == later
            with pytest.raises(DuplicateKeysError, match="--diff.*--force"):
                cat.apply([Upsert("RUN_DATABASE", run_rows(["D"]), "error"), Upsert("RUN_DATABASE", run_rows(["A"]), "error")])
            # The failed transaction wrote nothing, not even its first operation.
            assert cat.count_rows("RUN_DATABASE") == 3
        assert_stored(catalog_url, "RUN_DATABASE", [run_row("A", "production", later), run_row("B"), run_row("C", "build", later)], RUN_KEY)

    def test_duplicate_keys_within_one_write(self, catalog_url):
        first, second = run_rows(["A"], "build"), run_rows(["A"], "completed")
        with open_catalog(catalog_url) as cat:
            cat.apply([Upsert("RUN_DATABASE", pa.concat_tables([first, second]), "replace")])
            assert all_rows(cat, "RUN_DATABASE")[0]["status"] == "completed"  # replace: the last wins
            cat.apply([Upsert("RUN_DATABASE", pa.concat_tables([run_rows(["B"], "build"), run_rows(["B"], "completed")]), "skip")])
            assert all_rows(cat, "RUN_DATABASE", hash="B")[0]["status"] == "build"  # skip: the first wins
        assert_stored(catalog_url, "RUN_DATABASE", [run_row("A"), run_row("B", "build")], RUN_KEY)

    def test_rows_recorded_without_data_are_filled_in_not_skipped(self, catalog_url):
        with open_catalog(catalog_url) as cat:
            cat.apply([Upsert("ANALYSIS_apl", analysis_rows(["A", "B"], data=None))])  # what an audit records
            assert cat.existing_keys("ANALYSIS_apl", pa.table({"hash": ["A", "B"]})).num_rows == 0
            assert cat.apply([Upsert("ANALYSIS_apl", analysis_rows(["A"]), "error")]) == [1]
            assert cat.existing_keys("ANALYSIS_apl", pa.table({"hash": ["A", "B"]}))["hash"].to_pylist() == ["A"]
            assert cat.apply([Upsert("ANALYSIS_apl", analysis_rows(["A", "B"], data="x\n9\n"), "skip")]) == [1]
            data = {r["hash"]: r["data_csv"] for r in all_rows(cat, "ANALYSIS_apl")}
            assert data == {"A": "a,b\n1,2\n", "B": "x\n9\n"}
            with pytest.raises(DuplicateKeysError):
                cat.apply([Upsert("ANALYSIS_apl", analysis_rows(["B"]), "error")])
        assert_stored(catalog_url, "ANALYSIS_apl", [analysis_row("A"), analysis_row("B", data="x\n9\n")], RUN_KEY)

    def test_replace_keeps_pushed_data_while_the_analysis_is_unchanged(self, catalog_url):
        audit_like = analysis_rows(["A", "B"], data=None).drop_columns(["data_csv", "data_csv_bytes"])
        with open_catalog(catalog_url) as cat:
            cat.apply([Upsert("ANALYSIS_apl", analysis_rows(["A", "B"]))])
            changed = audit_like.set_column(3, "row_count", pa.array([1, 5], pa.int64()))
            keep = ("data_csv", "data_csv_bytes")
            cat.apply([Upsert("ANALYSIS_apl", changed, keep=keep, keep_if_same=("row_count", "columns"))])
            rows = {r["hash"]: r for r in all_rows(cat, "ANALYSIS_apl")}
        assert rows["A"]["data_csv"] == "a,b\n1,2\n" and rows["A"]["data_csv_bytes"] == 8
        assert rows["B"]["data_csv"] is None and rows["B"]["row_count"] == 5  # stale data is dropped
        assert_stored(catalog_url, "ANALYSIS_apl", [analysis_row("A"), analysis_row("B", data=None, rows=5)], RUN_KEY)

    def test_existing_keys_composite_and_absent_table(self, catalog_url):
        overview = rows_table(
            schema.ANALYSIS_OVERVIEW,
            [
                {"hash": "A", "item_type": "analysis", "item_name": "apl", "status": "ok"},
                {"hash": "A", "item_type": "artifact", "item_name": "apl", "status": "ok"},
            ],
        )
        with open_catalog(catalog_url) as cat:
            assert cat.existing_keys("ANALYSIS_nothing", pa.table({"hash": ["A"]})).num_rows == 0
            cat.apply([Upsert("ANALYSIS_OVERVIEW", overview)])
            probe = pa.table({"hash": ["A", "A", "B"], "item_type": ["analysis", "analysis", "analysis"], "item_name": ["apl", "x", "apl"]})
            found = cat.existing_keys("ANALYSIS_OVERVIEW", probe)
        assert found.to_pylist() == [{"hash": "A", "item_type": "analysis", "item_name": "apl"}]
        assert_stored(catalog_url, "ANALYSIS_OVERVIEW", [overview_row(**r) for r in overview.to_pylist()], OVERVIEW_KEY)

    def test_update_delete_and_clear(self, catalog_url):
        with open_catalog(catalog_url) as cat:
            cat.apply([Upsert("RUN_DATABASE", run_rows(["A", "B", "C"]))])
            status = pa.table({"hash": ["B", "Z"], "status": ["build", "build"]})
            assert cat.apply([Update("RUN_DATABASE", status), Delete("RUN_DATABASE", pa.table({"hash": ["C"]}))]) == [1, 1]
            assert {r["hash"]: r["status"] for r in all_rows(cat, "RUN_DATABASE")} == {"A": "completed", "B": "build"}
            assert_stored(catalog_url, "RUN_DATABASE", [run_row("A"), run_row("B", "build")], RUN_KEY)
            assert cat.count_rows("RUN_DATABASE", {"status": "build"}) == 1
            assert cat.clear([("RUN_DATABASE", {"status": "build"}), ("ANALYSIS_none", {})]) == [1, 0]
            assert_stored(catalog_url, "RUN_DATABASE", [run_row("A")], RUN_KEY)
            assert cat.clear([("RUN_DATABASE", {})]) == [1]
            assert cat.count_rows("RUN_DATABASE") == 0
        assert stored_rows(catalog_url, "RUN_DATABASE") == []

    def test_reads_filter_select_and_chunk(self, catalog_url):
        hashes = [f"H{i:03d}" for i in range(25)]
        with open_catalog(catalog_url) as cat:
            cat.apply([Upsert("RUN_DATABASE", run_rows(hashes[:10], "build")), Upsert("RUN_DATABASE", run_rows(hashes[10:]))])
            chunks = list(cat.iter_rows("RUN_DATABASE", {"status": "completed"}, ["hash", "status"], chunk_rows=4))
            assert sum(c.num_rows for c in chunks) == 15 and len(chunks) >= 4
            assert chunks[0].column_names == ["hash", "status"]
            assert [h for c in chunks for h in c["hash"].to_pylist()] == hashes[10:]
            with pytest.raises(CatalogError, match="no table ANALYSIS_missing"):
                list(cat.iter_rows("ANALYSIS_missing"))
            assert cat.read_table("ANALYSIS_missing").empty
            assert len(cat.read_table("RUN_DATABASE")) == 25

    def test_hostile_values_are_only_data(self, catalog_url):
        names = [HOSTILE, "tab\there", "new\nline", 'quote"s', "ünïcödé ✓", "", "comma,semi;"]
        overview = rows_table(
            schema.ANALYSIS_OVERVIEW,
            [{"hash": f"H{i}", "item_type": "analysis", "item_name": n, "directory": n, "status": "invalid"} for i, n in enumerate(names)],
        )
        with open_catalog(catalog_url) as cat:
            cat.apply([Upsert("RUN_DATABASE", run_rows([HOSTILE])), Upsert("ANALYSIS_OVERVIEW", overview)])
            assert [r["hash"] for r in all_rows(cat, "RUN_DATABASE")] == [HOSTILE]
            got = {r["hash"]: (r["item_name"], r["directory"]) for r in all_rows(cat, "ANALYSIS_OVERVIEW")}
            assert got == {f"H{i}": (n, n) for i, n in enumerate(names)}
            assert all_rows(cat, "ANALYSIS_OVERVIEW", item_name=HOSTILE)[0]["hash"] == "H0"
            assert cat.existing_keys("RUN_DATABASE", pa.table({"hash": [HOSTILE, "nope"]}))["hash"].to_pylist() == [HOSTILE]
            assert "RUN_DATABASE" in cat.tables()
        assert_stored(catalog_url, "RUN_DATABASE", [run_row(HOSTILE)], RUN_KEY)
        assert_stored(catalog_url, "ANALYSIS_OVERVIEW", [overview_row(**r) for r in overview.to_pylist()], OVERVIEW_KEY)
        assert {"RUN_DATABASE", "ANALYSIS_OVERVIEW"} <= stored_tables(catalog_url)

    def test_bad_table_names_never_reach_the_database(self, catalog_url):
        with open_catalog(catalog_url) as cat:
            with pytest.raises(InvalidNameError):
                cat.apply([Upsert("ANALYSIS_x; DROP TABLE RUN_DATABASE", analysis_rows(["A"]))])
            with pytest.raises(UsageError):
                list(cat.iter_rows("sqlite_master"))
            with pytest.raises(UsageError):
                cat.count_rows("pg_class")
            with pytest.raises(InvalidNameError):
                schema.analysis_table("a" * 55)
            assert not [t for t in cat.tables() if "DROP" in t]
        assert not [t for t in stored_tables(catalog_url) if "DROP" in t]

    def test_audit_batch_runs_and_inventory(self, catalog_url, make_campaign):
        result = make_campaign(6, seed=3, hostile=True)
        root = str(result.dest)
        paths = [str(result.dest / s) for s in result.simulations]
        batch = scan_batch(paths, root)
        started = datetime.now(UTC)
        with open_catalog(catalog_url) as cat:
            record = RunRecord.start(cat, "audit", root, {"db": "postgresql://u:hunter2@h/db"})
            run_id = record.run_id
            cat.apply(batch_ops(run_id, root, batch))
            cat.apply(batch_ops(run_id, root, batch))  # a re-written batch replaces, never duplicates
            assert queries.scanned_simulations(cat, run_id) == set(result.simulations)
            columns = [f.name for f in FILES_SCHEMA if f.name in schema.FILES.c]
            inventory = pa.concat_tables(list(queries.file_inventory(cat, root, columns, chunk_rows=7)))
            assert inventory.num_rows == result.files == batch.files.num_rows
            key = [("simulation", "ascending"), ("path", "ascending")]
            cols = ["simulation", "path", "size", "xxh3_128", "path_raw"]
            assert inventory.select(cols).sort_by(key).equals(batch.files.select(cols).sort_by(key))
            match = pa.table({"root": [root, root], "simulation": result.simulations[:2]})
            some = cat.rows_matching(schema.FILES.name, match, ["simulation", "path"])
            assert some.num_rows == sum(1 for s in batch.files["simulation"].to_pylist() if s in result.simulations[:2])
            summary = duplicate_totals(cat, root)
            assert summary["groups"] > 0 and summary["files"] >= 2 * summary["groups"]
            record.finish("completed", {"simulations": len(paths)}, extra=[Delete(schema.SCANNED.name, pa.table({"run_id": [run_id]}))])
            assert queries.scanned_simulations(cat, run_id) == set()
            runs = all_rows(cat, "MDBATCH_RUNS")
            assert [(r["run_id"], r["status"], r["command"]) for r in runs] == [(run_id, "completed", "audit")]
            assert "hunter2" not in runs[0]["arguments"] and runs[0]["ended_at"] is not None
            assert cat.count_rows("RUN_DATABASE") == len(paths)
            assert cat.count_rows("MDBATCH_FINDINGS") == 2 * batch.findings.num_rows  # findings append per write
            directories = {r["directory"] for r in all_rows(cat, "ANALYSIS_OVERVIEW")}
            assert directories <= {str(result.dest / s) for s in result.simulations}
        ended = datetime.now(UTC)
        stored = [c for c in batch.files.column_names if c in schema.FILES.c]
        files = [
            {**{c: r[c] for c in stored}, "root": root, "run_id": run_id, "cache_version": HASH_CACHE_VERSION, "removed_run": None}
            for r in batch.files.to_pylist()
        ]
        assert any(f["path_raw"] is not None for f in files)  # names that are not UTF-8 keep their bytes
        assert_stored(catalog_url, "MDBATCH_FILES", files, FILES_KEY)
        findings = Counter((run_id, *r.values()) for r in batch.findings.to_pylist())
        raw_findings = Counter(
            (r["run_id"], r["simulation"], r["kind"], r["item"], r["detail"]) for r in stored_rows(catalog_url, "MDBATCH_FINDINGS")
        )
        assert raw_findings == Counter({k: 2 * n for k, n in findings.items()})
        [run] = stored_rows(catalog_url, "MDBATCH_RUNS")
        assert (run["run_id"], run["command"], run["root"], run["status"]) == (run_id, "audit", root, "completed")
        assert json.loads(run["arguments"]) == {"db": "postgresql://u:***@h/db"}
        assert json.loads(run["summary"]) == {"simulations": len(paths)}
        assert started <= decode(catalog_url, run["started_at"], T0) <= decode(catalog_url, run["ended_at"], T0) <= ended
        assert stored_rows(catalog_url, "MDBATCH_SCANNED") == []

    def test_many_processes_write_at_once_and_nothing_is_lost(self, catalog_url):
        writers, batches, rows = 8, 6, 150
        ctx = multiprocessing.get_context("fork")
        errors = ctx.Queue()
        procs = [ctx.Process(target=_writer, args=(catalog_url, w, batches, rows, errors)) for w in range(writers)]
        for p in procs:
            p.start()
        for p in procs:
            p.join(240)
        failures = []
        while not errors.empty():
            failures.append(errors.get())
        assert not failures and all(p.exitcode == 0 for p in procs), failures
        with open_catalog(catalog_url) as cat:
            assert cat.count_rows("RUN_DATABASE") == writers * batches * rows
            assert cat.count_rows("ANALYSIS_apl") == writers * batches * rows
            assert cat.count_rows("ANALYSIS_OVERVIEW") == writers * batches * rows
        hashes = {f"W{w}B{b}R{r:04d}" for w in range(writers) for b in range(batches) for r in range(rows)}
        for table in ("RUN_DATABASE", "ANALYSIS_apl", "ANALYSIS_OVERVIEW"):
            stored = [r["hash"] for r in stored_rows(catalog_url, table)]
            assert len(stored) == len(hashes) and set(stored) == hashes, table


def file_row(root: str, sim: str, path: str, **values) -> dict:
    """A whole MDBATCH_FILES row (stat fields filled in, the rest NULL unless given)."""
    base = {"root": root, "simulation": sim, "path": path, "size": 1, "mtime_ns": 2, "ctime_ns": 3, "inode": 4, "device": 5, "run_id": "r1"}
    return full_row(schema.FILES.c.keys(), **{**base, **values})


#: Strings that are only data, whatever they look like (display() renders undecodable bytes as \\xNN).
AWKWARD = [
    "caf\\xe9/traj.xtc",
    "ünïcödé ✓",
    "𝄞 astral 🧪",
    "e\u0301 combining",
    "\u202eright-to-left",
    "line\u2028sep\u2029",
    "\ufeffBOM",
    "\ufffd",
    "crlf\r\nin",
    "cr\ronly",
    "back\\slash\\",
    "\\N",
    "NULL",
    "None",
    '"quoted"',
    "'single'",
    " leading",
    "trailing ",
    " ",
    "\t",
    "comma,semi;colon",
    "%s %(x)s {0} ?",
    "\x7f\x01control",
]


class TestWritesAsStored:
    """What each kind of write leaves in storage, value by value, read without mdbatch."""

    def test_update_with_a_partial_key_match_sets_every_row_that_shares_it(self, catalog_url):
        rows = (
            [file_row("/r", "s1", p) for p in ("a", "b", "c")]
            + [file_row("/r", "s2", p) for p in ("a", "b")]
            + [file_row("/other", "s1", "a")]
        )
        with open_catalog(catalog_url) as cat:
            cat.apply([Upsert(schema.FILES.name, rows_table(schema.FILES, rows))])
            mark = pa.table({"root": ["/r", "/r"], "simulation": ["s1", "gone"], "removed_run": ["run9", "run9"]})
            assert cat.apply([Update(schema.FILES.name, mark, match=("root", "simulation"))]) == [3]
            marked = [{**r, "removed_run": "run9"} if (r["root"], r["simulation"]) == ("/r", "s1") else r for r in rows]
            assert_stored(catalog_url, schema.FILES.name, marked, FILES_KEY)
            assert sorted(r["path"] for r in all_rows(cat, schema.FILES.name, removed_run="run9")) == ["a", "b", "c"]

            both = pa.table(
                {
                    "root": ["/r", "/r"],
                    "simulation": ["s1", "s2"],
                    "run_id": ["r2", "r3"],
                    "removed_run": pa.array([None, None], pa.string()),
                }
            )
            assert cat.apply([Update(schema.FILES.name, both, match=("root", "simulation"))]) == [5]
            rerun = [
                {**r, "run_id": {"s1": "r2", "s2": "r3"}[r["simulation"]], "removed_run": None} if r["root"] == "/r" else r for r in rows
            ]
            assert_stored(catalog_url, schema.FILES.name, rerun, FILES_KEY)

            one = pa.table({"root": ["/r"], "simulation": ["s2"], "path": ["b"], "size": [99], "xxh3_128": ["f" * 32]})
            assert cat.apply([Update(schema.FILES.name, one)]) == [1]  # by the whole key (the default): one row
            assert cat.apply([Update(schema.FILES.name, one.set_column(2, "path", pa.array(["zz"])))]) == [0]
        final = [
            {**r, "size": 99, "xxh3_128": "f" * 32} if (r["root"], r["simulation"], r["path"]) == ("/r", "s2", "b") else r for r in rerun
        ]
        assert_stored(catalog_url, schema.FILES.name, final, FILES_KEY)

    def test_an_upsert_of_some_columns_leaves_the_others(self, catalog_url):
        with open_catalog(catalog_url) as cat:
            cat.apply([Upsert("RUN_DATABASE", run_rows(["A"]))])
            cat.apply([Upsert("RUN_DATABASE", pa.table({"hash": ["A", "N"], "status": ["production", "build"]}))])
        new = full_row(schema.RUN_DATABASE.c.keys(), hash="N", status="build")
        assert_stored(catalog_url, "RUN_DATABASE", [run_row("A", "production"), new], RUN_KEY)

    def test_nulls_empty_strings_and_zeros_are_distinct(self, catalog_url):
        runs = [
            full_row(schema.RUN_DATABASE.c.keys(), hash="E", engine="", simulation_type=" ", input_data="", directory="", status=""),
            full_row(schema.RUN_DATABASE.c.keys(), hash="N"),
        ]
        overview = [
            overview_row(hash="A", item_type="analysis", item_name="", row_count=0, file_count=0, status=""),
            overview_row(hash="A", item_type="analysis", item_name="x", row_count=None, file_count=None, status=None),
        ]
        files = [
            file_row("/r", "s", "empty", path_raw=b"", sha256="", facts="", size=0, mtime_ns=0, ctime_ns=0, inode=0, device=0),
            file_row("/r", "s", "null"),
        ]
        with open_catalog(catalog_url) as cat:
            cat.apply(
                [
                    Upsert("RUN_DATABASE", rows_table(schema.RUN_DATABASE, runs)),
                    Upsert("ANALYSIS_OVERVIEW", rows_table(schema.ANALYSIS_OVERVIEW, overview)),
                    Upsert(schema.FILES.name, rows_table(schema.FILES, files)),
                ]
            )
            assert all_rows(cat, "RUN_DATABASE") == runs
            assert all_rows(cat, "ANALYSIS_OVERVIEW") == overview
            assert all_rows(cat, schema.FILES.name) == files
            assert [r["hash"] for r in all_rows(cat, "RUN_DATABASE", engine="")] == ["E"]
            assert [r["hash"] for r in all_rows(cat, "RUN_DATABASE", engine=None)] == ["N"]
        assert_stored(catalog_url, "RUN_DATABASE", runs, RUN_KEY)
        assert_stored(catalog_url, "ANALYSIS_OVERVIEW", overview, OVERVIEW_KEY)
        assert_stored(catalog_url, schema.FILES.name, files, FILES_KEY)

    def test_binary_paths_and_extreme_integers_are_stored_exactly(self, catalog_url):
        files = [
            file_row("/r", "s", "every byte", path_raw=bytes(range(256)), size=2**63 - 1, mtime_ns=-1, ctime_ns=-(2**63), device=2**32 + 5),
            file_row("/r", "s", "nul", path_raw=b"\x00", size=0, inode=2**62),
            file_row("/r", "s", "long", path_raw=b"\xff\xfe" * 5000),
            file_row("/r", "s", "caf\\xe9.xtc", path_raw=b"caf\xe9.xtc", cache_version=-(2**31)),
        ]
        overview = [overview_row(hash="A", item_type="artifact", item_name="x", row_count=-(2**63), file_count=2**31 - 1)]
        with open_catalog(catalog_url) as cat:
            cat.apply(
                [
                    Upsert(schema.FILES.name, rows_table(schema.FILES, files)),
                    Upsert("ANALYSIS_OVERVIEW", rows_table(schema.ANALYSIS_OVERVIEW, overview)),
                ]
            )
            assert sorted(all_rows(cat, schema.FILES.name), key=lambda r: r["path"]) == sorted(files, key=lambda r: r["path"])
        assert_stored(catalog_url, schema.FILES.name, files, FILES_KEY)
        assert_stored(catalog_url, "ANALYSIS_OVERVIEW", overview, OVERVIEW_KEY)

    def test_an_integer_too_large_for_an_integer_column_is_never_wrapped(self, catalog_url, request):
        overview = [overview_row(hash="A", item_type="artifact", item_name="x", file_count=2**31 + 5)]
        with open_catalog(catalog_url) as cat:
            try:
                cat.apply([Upsert("ANALYSIS_OVERVIEW", rows_table(schema.ANALYSIS_OVERVIEW, overview))])
            except CatalogError:
                assert stored_rows(catalog_url, "ANALYSIS_OVERVIEW") == []  # refused whole: acceptable
                return
        assert_stored(catalog_url, "ANALYSIS_OVERVIEW", overview, OVERVIEW_KEY)

    def test_timestamps_are_stored_as_the_instants_written(self, catalog_url):
        moments = {
            "utc": T0,
            "plus2": datetime(2024, 5, 1, 14, 0, 0, 123456, tzinfo=timezone(timedelta(hours=2))),
            "minus5": datetime(2024, 3, 10, 22, 30, tzinfo=timezone(timedelta(hours=-5))),
            "pre1970": datetime(1969, 12, 31, 23, 59, 59, 999999, tzinfo=UTC),
            "whole": datetime(2024, 1, 1, tzinfo=UTC),
            "far": datetime(2300, 1, 1, 0, 0, 0, 1, tzinfo=UTC),
            "year1": datetime(1, 1, 1, tzinfo=UTC),
        }
        runs = [full_row(schema.RUN_DATABASE.c.keys(), hash=k, timestamp_utc=v) for k, v in moments.items()]
        started = datetime(2024, 5, 1, 9, 0, tzinfo=timezone(timedelta(hours=-7)))
        record = {"run_id": "r1", "command": "audit", "status": "running", "started_at": started}
        with open_catalog(catalog_url) as cat:
            cat.apply(
                [Upsert("RUN_DATABASE", rows_table(schema.RUN_DATABASE, runs)), Upsert(schema.RUNS.name, rows_table(schema.RUNS, [record]))]
            )
            back = {r["hash"]: r["timestamp_utc"] for r in all_rows(cat, "RUN_DATABASE")}
            assert back == moments and all(v.utcoffset() == timedelta(0) for v in back.values())
            ended = datetime(2024, 5, 1, 18, 30, 0, 5, tzinfo=timezone(timedelta(hours=5, minutes=30)))
            change = rows_table(schema.RUNS, [{"run_id": "r1", "status": "completed", "ended_at": ended, "heartbeat_at": ended}])
            assert cat.apply([Update(schema.RUNS.name, change)]) == [1]
        assert_stored(catalog_url, "RUN_DATABASE", runs, RUN_KEY)
        assert_stored(
            catalog_url,
            schema.RUNS.name,
            [full_row(schema.RUNS.c.keys(), **record, ended_at=ended, heartbeat_at=ended) | {"status": "completed"}],
            ["run_id"],
        )

    def test_awkward_strings_are_stored_as_written(self, catalog_url):
        runs = [full_row(schema.RUN_DATABASE.c.keys(), hash=s, engine=s, input_data=s * 3, directory=f"/scratch/{s}") for s in AWKWARD]
        runs.append(full_row(schema.RUN_DATABASE.c.keys(), hash="big", input_data="ü✓\n" * (1 << 18)))  # 1.5 MB of text
        overview = [overview_row(hash="A", item_type="analysis", item_name=s, directory=s, status="invalid") for s in AWKWARD]
        with open_catalog(catalog_url) as cat:
            cat.apply(
                [
                    Upsert("RUN_DATABASE", rows_table(schema.RUN_DATABASE, runs)),
                    Upsert("ANALYSIS_OVERVIEW", rows_table(schema.ANALYSIS_OVERVIEW, overview)),
                ]
            )
            assert {r["hash"]: r for r in all_rows(cat, "RUN_DATABASE")} == {r["hash"]: r for r in runs}
            found = cat.existing_keys(
                "ANALYSIS_OVERVIEW",
                pa.table({"hash": ["A"] * len(AWKWARD), "item_type": ["analysis"] * len(AWKWARD), "item_name": AWKWARD}),
            )
            assert sorted(found["item_name"].to_pylist()) == sorted(AWKWARD)
        assert_stored(catalog_url, "RUN_DATABASE", runs, RUN_KEY)
        assert_stored(catalog_url, "ANALYSIS_OVERVIEW", overview, OVERVIEW_KEY)

    def test_nul_in_keys_and_values_is_replaced_on_postgresql_only(self, catalog_url):
        """PostgreSQL text cannot hold NUL: it is stored as U+FFFD (pgcopy.py), and keys are looked up the same way."""
        runs = [full_row(schema.RUN_DATABASE.c.keys(), hash="A\x00B", input_data="line\x00nul", status="ok")]
        overview = [
            overview_row(hash="A\x00B", item_type="analysis", item_name="n\x00m", status="invalid"),
            overview_row(hash="A\x00B", item_type="analysis", item_name="plain", status="ok"),
        ]
        with open_catalog(catalog_url) as cat:
            cat.apply(
                [
                    Upsert("RUN_DATABASE", rows_table(schema.RUN_DATABASE, runs)),
                    Upsert("ANALYSIS_OVERVIEW", rows_table(schema.ANALYSIS_OVERVIEW, overview)),
                ]
            )
            assert_stored(catalog_url, "RUN_DATABASE", runs, RUN_KEY)
            assert_stored(catalog_url, "ANALYSIS_OVERVIEW", overview, OVERVIEW_KEY)
            nul = "\ufffd" if backend(catalog_url) == "postgresql" else "\x00"
            assert [r["hash"] for r in all_rows(cat, "RUN_DATABASE")] == [f"A{nul}B"]
            assert cat.existing_keys("RUN_DATABASE", pa.table({"hash": ["A\x00B", "AB"]})).num_rows == 1
            assert cat.apply([Upsert("RUN_DATABASE", rows_table(schema.RUN_DATABASE, runs), "skip")]) == [0]  # the same key
            assert cat.apply([Update("RUN_DATABASE", pa.table({"hash": ["A\x00B"], "status": ["s\x00t"]}))]) == [1]
            key = pa.table({"hash": ["A\x00B"], "item_type": ["analysis"], "item_name": ["n\x00m"]})
            assert cat.apply([Delete("ANALYSIS_OVERVIEW", key)]) == [1]
        assert_stored(catalog_url, "RUN_DATABASE", [{**runs[0], "status": "s\x00t"}], RUN_KEY)
        assert_stored(catalog_url, "ANALYSIS_OVERVIEW", overview[1:], OVERVIEW_KEY)

    def test_keys_that_differ_only_by_nul_and_its_replacement_in_one_write(self, catalog_url, request):
        runs = [full_row(schema.RUN_DATABASE.c.keys(), hash=h, status=s) for h, s in (("E\x00F", "1"), ("E\ufffdF", "2"))]
        with open_catalog(catalog_url) as cat:
            cat.apply([Upsert("RUN_DATABASE", run_rows(["E\ufffdF"]))])
            cat.apply([Upsert("RUN_DATABASE", rows_table(schema.RUN_DATABASE, runs))])
        # On PostgreSQL both are the key E\ufffdF: the last row wins, as for any repeated key.
        assert_stored(catalog_url, "RUN_DATABASE", runs, RUN_KEY)

    def test_delete_by_some_columns_removes_every_row_that_matches(self, catalog_url):
        overview = [
            overview_row(hash=h, item_type=kind, item_name=name, status="ok")
            for h in ("A", "B")
            for kind in ("analysis", "artifact")
            for name in ("apl", "x")
        ]
        with open_catalog(catalog_url) as cat:
            cat.apply([Upsert("ANALYSIS_OVERVIEW", rows_table(schema.ANALYSIS_OVERVIEW, overview))])
            deletes = [
                pa.table({"hash": ["A", "Z"]}),
                pa.table({"hash": ["B"], "item_type": ["artifact"]}),
                pa.table({"hash": ["B"], "item_type": ["analysis"], "item_name": ["nope"]}),
            ]
            assert cat.apply([Delete("ANALYSIS_OVERVIEW", d) for d in deletes]) == [4, 2, 0]
        left = [r for r in overview if r["hash"] == "B" and r["item_type"] == "analysis"]
        assert_stored(catalog_url, "ANALYSIS_OVERVIEW", left, OVERVIEW_KEY)


def _writer(url: str, writer: int, batches: int, rows: int, errors: multiprocessing.Queue) -> None:  # type: ignore[type-arg]
    try:
        with open_catalog(url) as cat:
            for b in range(batches):
                hashes = [f"W{writer}B{b}R{r:04d}" for r in range(rows)]
                overview = rows_table(
                    schema.ANALYSIS_OVERVIEW, [{"hash": h, "item_type": "analysis", "item_name": "apl", "status": "ok"} for h in hashes]
                )
                cat.apply(
                    [
                        Upsert("RUN_DATABASE", run_rows(hashes), "error"),
                        Upsert("ANALYSIS_apl", analysis_rows(hashes), "skip"),
                        Upsert("ANALYSIS_OVERVIEW", overview),
                    ]
                )
    except BaseException as exc:  # noqa: BLE001 - reported to the parent
        errors.put(f"writer {writer}: {type(exc).__name__}: {exc}")
        raise


def test_group_counts_count_rows_and_distinct_tuples_in_the_database(catalog_url):
    """`group_counts` (what the audit's duplicate summary is computed with) on every backend."""
    rows = [
        file_row("/r", "a", "x", size=10, xxh3_128="d1", inode=1, device=7),
        file_row("/r", "b", "x", size=10, xxh3_128="d1", inode=2, device=7),
        file_row("/r", "c", "x", size=10, xxh3_128="d1", inode=2, device=7),  # a hardlink of b: same inode
        file_row("/r", "a", "y", size=10, xxh3_128="d2", inode=3, device=7),
        file_row("/r", "b", "y", size=20, xxh3_128="d2", inode=4, device=7),  # same digest, other size: another group
        file_row("/r", "a", "z", size=5, xxh3_128="d3", inode=5, device=7, removed_run="old"),
        file_row("/r", "b", "z", size=5, xxh3_128="d3", inode=6, device=7),
        file_row("/other", "a", "x", size=10, xxh3_128="d1", inode=9, device=7),
    ]
    with open_catalog(catalog_url) as cat:
        cat.apply([Upsert(schema.FILES.name, rows_table(schema.FILES, rows))])
        got = cat.group_counts(schema.FILES.name, {"root": "/r", "removed_run": None}, ["size", "xxh3_128"], ["device", "inode"])
        assert sorted(got.to_pylist(), key=lambda r: (r["size"], r["xxh3_128"])) == [
            {"size": 5, "xxh3_128": "d3", "count": 1, "distinct": 1},
            {"size": 10, "xxh3_128": "d1", "count": 3, "distinct": 2},
            {"size": 10, "xxh3_128": "d2", "count": 1, "distinct": 1},
            {"size": 20, "xxh3_128": "d2", "count": 1, "distinct": 1},
        ]
        many = cat.group_counts(
            schema.FILES.name, {"root": "/r", "removed_run": None}, ["size", "xxh3_128"], ["device", "inode"], min_count=2
        )
        assert many.to_pylist() == [{"size": 10, "xxh3_128": "d1", "count": 3, "distinct": 2}]


# -- lineage: MDBATCH_LINEAGE -----------------------------------------------------------------------


def lineage_rows(root: str, edges: dict[str, list[tuple[str, str, str, str]]]) -> list[dict]:
    """The whole MDBATCH_LINEAGE rows an audit writes for `edges` ({simulation: [(item, depends_on, state, detail)]})."""
    return [
        full_row(schema.LINEAGE.c.keys(), root=root, simulation=sim, item=i, depends_on=d, hash=f"h-{sim}", state=s, detail=detail)
        for sim, rows in edges.items()
        for i, d, s, detail in rows
    ]


LINEAGE_KEY = ["root", "simulation", "item", "depends_on"]


def test_lineage_edges_are_written_per_scanned_simulation_and_replaced(catalog_url, tmp_path):
    from ..test_lineage import EXPECTED_EDGES, constructed

    root = constructed(tmp_path / "campaign")
    names = ["clean", "cycle", "missing", "stale"]
    batch = scan_batch([str(root / n) for n in names], str(root))
    with open_catalog(catalog_url) as cat:
        cat.apply(batch_ops("r1", str(root), batch))
        cat.apply(batch_ops("r1", str(root), batch))  # a re-written batch replaces, never duplicates
        got = queries.lineage(cat, "h-cycle")
        assert [(r.item, r.depends_on, r.state) for r in got.itertuples()] == [e[:3] for e in EXPECTED_EDGES["cycle"]]
    assert_stored(catalog_url, schema.LINEAGE.name, lineage_rows(str(root), EXPECTED_EDGES), LINEAGE_KEY)
    # The clean simulation's registry drops its dependencies: its next scan leaves it no edge; the others stand.
    registry = json.loads((root / "clean" / ".analysis" / "metadata.json").read_text())
    for entry in (*registry["analyses"].values(), *registry["artifacts"].values()):
        entry["extras"] = {}
    (root / "clean" / ".analysis" / "metadata.json").write_text(json.dumps(registry))
    with open_catalog(catalog_url) as cat:
        cat.apply(batch_ops("r2", str(root), scan_batch([str(root / "clean")], str(root))))
        assert queries.lineage(cat, "h-clean").empty
    left = {k: v for k, v in EXPECTED_EDGES.items() if k != "clean"}
    assert_stored(catalog_url, schema.LINEAGE.name, lineage_rows(str(root), left), LINEAGE_KEY)


def test_catalog_of_schema_5_gains_the_lineage_table(catalog_url):
    from mdbatch.api import Catalog

    from .rawread import make_older

    with open_catalog(catalog_url) as cat:
        cat.init_schema()
    make_older(catalog_url, 5, [schema.LINEAGE.name, "MDBATCH_REGISTRY_SNAPSHOTS"])
    assert schema.LINEAGE.name not in stored_tables(catalog_url)
    with Catalog(catalog_url) as cat:  # opening migrates (as every command does)
        assert cat.lineage().empty
        assert cat.backend.schema_version() == schema.SCHEMA_VERSION == 6
        assert {t.name for t in schema.FIXED_TABLES} <= set(cat.tables())
        row = lineage_rows("/r", {"s": [("artifact:plot", "analysis:rdf", "stale", "rdf was updated after plot")]})
        cat.backend.apply([Upsert(schema.LINEAGE.name, rows_table(schema.LINEAGE, row))])
        assert cat.lineage("h-s")[["item", "depends_on", "state"]].values.tolist() == [["artifact:plot", "analysis:rdf", "stale"]]
    assert_stored(catalog_url, schema.LINEAGE.name, row, LINEAGE_KEY)
    assert_stored(catalog_url, "MDBATCH_SCHEMA", [{"key": "schema_version", "value": str(schema.SCHEMA_VERSION)}], ["key"])
