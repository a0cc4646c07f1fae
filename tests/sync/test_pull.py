"""`pull` and `clear` against every backend, on catalogs filled directly (no cluster needed)."""

from __future__ import annotations

import csv
import io
import json
from datetime import UTC, datetime

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from mdbatch.catalog import Upsert, open_catalog, schema
from mdbatch.catalog.ops import rows_table
from mdbatch.errors import CatalogError, InvalidNameError, UsageError
from mdbatch.sync import clear, pull

from ..catalog.test_contract import T0 as RUN_T0
from ..catalog.test_contract import run_rows

T0 = datetime(2024, 5, 1, tzinfo=UTC)


def analysis(hashes_frames: dict[str, str | None], paths: dict[str, str] | None = None) -> pa.Table:
    return rows_table(
        schema.analysis_table("apl"),
        [
            {
                "hash": h,
                "directory": f"/d/{h}",
                "simulation_type": "bilayer",
                "row_count": None,
                "columns": None,
                "data_csv": text,
                "data_path": (paths or {}).get(h, f"/nonexistent/{h}.parquet"),
                "timestamp_utc": T0,
                "data_csv_bytes": None if text is None else len(text),
            }
            for h, text in hashes_frames.items()
        ],
    )


@pytest.fixture
def filled(catalog_url):
    overview = rows_table(
        schema.ANALYSIS_OVERVIEW,
        [
            {"hash": h, "item_type": kind, "item_name": "apl", "status": "ok", "row_count": 2, "file_count": 1, "updated_at": T0}
            for h in ("A", "B", "C")
            for kind in ("analysis", "artifact")
        ],
    )
    artifacts = rows_table(
        schema.artifact_table("snap"),
        [
            {
                "hash": "A",
                "directory": "/d/A",
                "simulation_type": "bilayer",
                "file_count": 1,
                "files": '["s.png"]',
                "checksums": '{"s.png": "ab"}',
                "timestamp_utc": T0,
            }
        ],
    )
    frames = {"A": "t,v\n1,0.5\n2,0.25\n", "B": "t,v\n3,1.0\n", "C": "t,v,extra\n4,2.0,x\n"}
    with open_catalog(catalog_url) as cat:
        cat.apply(
            [
                Upsert("RUN_DATABASE", run_rows(["A", "B"], "completed")),
                Upsert("RUN_DATABASE", run_rows(["C"], "build")),
                Upsert("ANALYSIS_OVERVIEW", overview),
                Upsert("ANALYSIS_apl", analysis(frames)),
                Upsert("ARTIFACT_snap", artifacts),
            ]
        )
    return catalog_url


def test_terminal_table_filters_and_limits(filled):
    with pull.open_for_read(filled) as cat:
        out = io.StringIO()
        assert pull.render(cat, pull.systems_query(status="completed"), out) == 2
        lines = out.getvalue().splitlines()
        assert lines[0].split() == ["hash", "simulation_type", "parametrization", "status", "directory"]
        assert lines[-1] == "(2 rows)" and lines[2].startswith("A ")
        out = io.StringIO()
        pull.render(cat, pull.systems_query(), out, full=True, limit=1)
        assert "input_data" in out.getvalue().splitlines()[0] and out.getvalue().endswith("(1 row shown)\n")
        assert "\n" not in out.getvalue().splitlines()[2]  # multi-line YAML is one cell
        out = io.StringIO()
        pull.render(cat, pull.systems_query(hash="nope"), out)
        assert out.getvalue().startswith("no rows in RUN_DATABASE")
        out = io.StringIO()
        pull.render(cat, pull.overview_query("artifact"), out)
        assert out.getvalue().count("apl") == 3


def test_files_csv_json_parquet(filled, tmp_path):
    with pull.open_for_read(filled) as cat:
        assert pull.write_output(cat, pull.systems_query(), str(tmp_path / "s.csv")) == 3
        assert pull.write_output(cat, pull.item_query("artifact", "snap"), str(tmp_path / "a.json")) == 1
        assert pull.write_output(cat, pull.overview_query("analysis", hash="B"), str(tmp_path / "o.parquet")) == 1
    rows = list(csv.DictReader((tmp_path / "s.csv").open(newline="")))
    assert [r["hash"] for r in rows] == ["A", "B", "C"] and rows[0]["input_data"] == "hash: A\n"
    assert rows[0]["timestamp_utc"] == RUN_T0.isoformat()
    record = json.loads((tmp_path / "a.json").read_text())
    assert record["files"] == '["s.png"]' and record["file_count"] == 1 and record["timestamp_utc"] == T0.isoformat()
    table = pq.read_table(tmp_path / "o.parquet")
    assert table.num_rows == 1 and table.schema.field("row_count").type == pa.int64()
    assert not list(tmp_path.glob(".*.tmp"))


def test_rebuild_widens_types_and_reads_data_path_when_capped(filled, tmp_path):
    frame = tmp_path / "D.parquet"
    pq.write_table(pa.table({"t": [5], "v": [9.5]}), frame)
    broken = tmp_path / "F.parquet"  # truncated since the push: counted as missing, not a traceback
    pq.write_table(pa.table({"t": [6]}), broken)
    broken.write_bytes(broken.read_bytes()[:-9])
    with open_catalog(filled) as cat:
        cat.apply([Upsert("ANALYSIS_apl", analysis({"D": None, "E": None, "F": None}, {"D": str(frame), "F": str(broken)}))])
    with pull.open_for_read(filled) as cat:
        built = pull.rebuild_frames(cat, "apl", str(tmp_path / "all.parquet"))
    assert (built.frames, built.rows, built.from_parquet, built.missing) == (4, 5, 1, ["E", "F"])
    table = pq.read_table(tmp_path / "all.parquet")
    assert table.column_names == ["hash", "t", "v", "extra"]
    assert table.schema.field("v").type == pa.float64() and table.schema.field("t").type == pa.int64()
    assert table.column("hash").to_pylist() == ["A", "A", "B", "C", "D"]
    assert table.column("extra").to_pylist() == [None, None, None, "x", None]


def test_output_and_name_errors(filled, tmp_path):
    with pytest.raises(UsageError, match=r"\.csv, \.json"):
        pull.output_format("x.xlsx")
    with pytest.raises(InvalidNameError):
        pull.item_query("analysis", "apl; DROP TABLE x")
    with pull.open_for_read(filled) as cat, pytest.raises(UsageError, match="does not exist"):
        pull.write_output(cat, pull.systems_query(), str(tmp_path / "no" / "dir" / "s.csv"))


def test_clear_plans_counts_and_deletes(filled):
    with open_catalog(filled) as cat:
        targets = clear.plan(cat, "analysis", analysis_name="apl")
        assert [t.describe() for t in targets] == [
            "ANALYSIS_apl",
            "ANALYSIS_OVERVIEW where item_type = 'analysis', item_name = 'apl'",
        ]
        assert clear.count(cat, targets) == [3, 3]
        assert clear.execute(cat, targets) == [3, 3]
        assert cat.count_rows("ANALYSIS_OVERVIEW") == 3 and cat.count_rows("ARTIFACT_snap") == 1
        artifacts = clear.plan(cat, "analysis", artifacts=True)
        assert clear.execute(cat, artifacts) == [1, 3]
        everything = clear.plan(cat, "all")
        assert [t.table for t in everything] == ["RUN_DATABASE", "ANALYSIS_OVERVIEW", "ANALYSIS_apl", "ARTIFACT_snap"]
        assert clear.execute(cat, everything) == [3, 0, 0, 0]
        with pytest.raises(UsageError, match="exactly one"):
            clear.plan(cat, "analysis")
        with pytest.raises(UsageError, match="exactly one"):
            clear.plan(cat, "analysis", overview=True, analyses=True)


def test_reading_a_catalog_that_is_not_there(tmp_path):
    with pytest.raises(CatalogError, match="does not exist"):
        pull.open_for_read(f"sqlite:///{tmp_path / 'none.db'}")
    assert not (tmp_path / "none.db").exists()
    with pytest.raises(CatalogError, match="does not exist"):
        pull.open_for_read(f"csv://{tmp_path / 'none'}")
