"""The contract every catalog backend keeps, run against SQLite, PostgreSQL and CSV alike."""

from __future__ import annotations

import multiprocessing
from datetime import datetime, timedelta, timezone

import pyarrow as pa
import pytest

from mdbatch.catalog import Delete, Upsert, open_catalog, queries
from mdbatch.catalog import schema
from mdbatch.catalog.ops import Update, rows_table
from mdbatch.errors import CatalogError, DuplicateKeysError, InvalidNameError, UsageError
from mdbatch.batch import FILES_SCHEMA, scan_batch
from mdbatch.catalog.filestats import duplicate_totals
from mdbatch.catalog.writes import batch_ops
from mdbatch.lifecycle import RunRecord

T0 = datetime(2024, 5, 1, 12, 0, 0, 123456, tzinfo=timezone.utc)
HOSTILE = "x'); DROP TABLE \"RUN_DATABASE\";--"


def run_rows(hashes: list[str], status: str = "completed", when: datetime = T0) -> pa.Table:
    return rows_table(schema.RUN_DATABASE, [
        {"hash": h, "engine": "gromacs", "parametrization": "charmm36m", "simulation_type": "bilayer", "input_data": f"hash: {h}\n",
         "input_data_type": "yaml", "directory": f"/scratch/{h}", "status": status, "timestamp_utc": when}
        for h in hashes
    ])


def analysis_rows(hashes: list[str], data: str | None = "a,b\n1,2\n", rows: int = 1) -> pa.Table:
    return rows_table(schema.analysis_table("apl"), [
        {"hash": h, "directory": f"/scratch/{h}", "simulation_type": "bilayer", "row_count": rows, "columns": '["a", "b"]',
         "data_csv": data, "data_path": f"/scratch/{h}/.analysis/apl.parquet", "timestamp_utc": T0,
         "data_csv_bytes": None if data is None else len(data)}
        for h in hashes
    ])


def all_rows(cat, table, **where):
    return [r for t in cat.iter_rows(table, where or None) for r in t.to_pylist()]


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

    def test_force_drops_every_mdbatch_table(self, catalog_url):
        with open_catalog(catalog_url) as cat:
            cat.apply([Upsert("RUN_DATABASE", run_rows(["A"])), Upsert("ANALYSIS_apl", analysis_rows(["A"]))])
            assert "ANALYSIS_apl" in cat.tables()
            cat.init_schema(force=True)
            assert "ANALYSIS_apl" not in cat.tables()
            assert cat.count_rows("RUN_DATABASE") == 0 and cat.schema_version() == schema.SCHEMA_VERSION

    def test_typed_round_trip(self, catalog_url):
        with open_catalog(catalog_url) as cat:
            cat.apply([Upsert("RUN_DATABASE", run_rows(["B", "A"]))])
            rows = all_rows(cat, "RUN_DATABASE")
        assert [r["hash"] for r in rows] == ["A", "B"]  # ordered by key
        assert rows[0]["timestamp_utc"] == T0 and rows[0]["timestamp_utc"].utcoffset() == timedelta(0)
        assert rows[0]["input_data"] == "hash: A\n" and rows[0]["status"] == "completed"

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

    def test_duplicate_keys_within_one_write(self, catalog_url):
        first, second = run_rows(["A"], "build"), run_rows(["A"], "completed")
        with open_catalog(catalog_url) as cat:
            cat.apply([Upsert("RUN_DATABASE", pa.concat_tables([first, second]), "replace")])
            assert all_rows(cat, "RUN_DATABASE")[0]["status"] == "completed"  # replace: the last wins
            cat.apply([Upsert("RUN_DATABASE", pa.concat_tables([run_rows(["B"], "build"), run_rows(["B"], "completed")]), "skip")])
            assert all_rows(cat, "RUN_DATABASE", hash="B")[0]["status"] == "build"  # skip: the first wins

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

    def test_existing_keys_composite_and_absent_table(self, catalog_url):
        overview = rows_table(schema.ANALYSIS_OVERVIEW, [
            {"hash": "A", "item_type": "analysis", "item_name": "apl", "status": "ok"},
            {"hash": "A", "item_type": "artifact", "item_name": "apl", "status": "ok"},
        ])
        with open_catalog(catalog_url) as cat:
            assert cat.existing_keys("ANALYSIS_nothing", pa.table({"hash": ["A"]})).num_rows == 0
            cat.apply([Upsert("ANALYSIS_OVERVIEW", overview)])
            probe = pa.table({"hash": ["A", "A", "B"], "item_type": ["analysis", "analysis", "analysis"], "item_name": ["apl", "x", "apl"]})
            found = cat.existing_keys("ANALYSIS_OVERVIEW", probe)
        assert found.to_pylist() == [{"hash": "A", "item_type": "analysis", "item_name": "apl"}]

    def test_update_delete_and_clear(self, catalog_url):
        with open_catalog(catalog_url) as cat:
            cat.apply([Upsert("RUN_DATABASE", run_rows(["A", "B", "C"]))])
            status = pa.table({"hash": ["B", "Z"], "status": ["build", "build"]})
            assert cat.apply([Update("RUN_DATABASE", status), Delete("RUN_DATABASE", pa.table({"hash": ["C"]}))]) == [1, 1]
            assert {r["hash"]: r["status"] for r in all_rows(cat, "RUN_DATABASE")} == {"A": "completed", "B": "build"}
            assert cat.count_rows("RUN_DATABASE", {"status": "build"}) == 1
            assert cat.clear([("RUN_DATABASE", {"status": "build"}), ("ANALYSIS_none", {})]) == [1, 0]
            assert cat.clear([("RUN_DATABASE", {})]) == [1]
            assert cat.count_rows("RUN_DATABASE") == 0

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
        overview = rows_table(schema.ANALYSIS_OVERVIEW, [
            {"hash": f"H{i}", "item_type": "analysis", "item_name": n, "directory": n, "status": "invalid"} for i, n in enumerate(names)
        ])
        with open_catalog(catalog_url) as cat:
            cat.apply([Upsert("RUN_DATABASE", run_rows([HOSTILE])), Upsert("ANALYSIS_OVERVIEW", overview)])
            assert [r["hash"] for r in all_rows(cat, "RUN_DATABASE")] == [HOSTILE]
            got = {r["hash"]: (r["item_name"], r["directory"]) for r in all_rows(cat, "ANALYSIS_OVERVIEW")}
            assert got == {f"H{i}": (n, n) for i, n in enumerate(names)}
            assert all_rows(cat, "ANALYSIS_OVERVIEW", item_name=HOSTILE)[0]["hash"] == "H0"
            assert cat.existing_keys("RUN_DATABASE", pa.table({"hash": [HOSTILE, "nope"]}))["hash"].to_pylist() == [HOSTILE]
            assert "RUN_DATABASE" in cat.tables()

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

    def test_audit_batch_runs_and_inventory(self, catalog_url, make_campaign):
        result = make_campaign(6, seed=3, hostile=True)
        root = str(result.dest)
        paths = [str(result.dest / s) for s in result.simulations]
        batch = scan_batch(paths, root)
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


def _writer(url: str, writer: int, batches: int, rows: int, errors: multiprocessing.Queue) -> None:  # type: ignore[type-arg]
    try:
        with open_catalog(url) as cat:
            for b in range(batches):
                hashes = [f"W{writer}B{b}R{r:04d}" for r in range(rows)]
                overview = rows_table(schema.ANALYSIS_OVERVIEW, [{"hash": h, "item_type": "analysis", "item_name": "apl", "status": "ok"} for h in hashes])
                cat.apply([
                    Upsert("RUN_DATABASE", run_rows(hashes), "error"),
                    Upsert("ANALYSIS_apl", analysis_rows(hashes), "skip"),
                    Upsert("ANALYSIS_OVERVIEW", overview),
                ])
    except BaseException as exc:  # noqa: BLE001 - reported to the parent
        errors.put(f"writer {writer}: {type(exc).__name__}: {exc}")
        raise
