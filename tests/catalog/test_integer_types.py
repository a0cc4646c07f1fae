"""Integer columns read back as integers on every backend, with NULLs present: int64 where the schema
forbids NULL, pandas' nullable Int64 where it allows it (pandas' default gave float64 as soon as one
row held a NULL, so a dtype depended on which rows a query returned)."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pandas as pd

import mdbatch
from mdbatch.catalog import Upsert, open_catalog, schema
from mdbatch.catalog.ops import rows_table
from mdbatch.catalog.writes import run_row

T0 = datetime(2024, 5, 1, tzinfo=UTC)
ROOT = "/scratch/c"
HASHES = ["A1", "B2"]


def _fill(url: str) -> None:
    """Two simulations: an analysis with a row count and an artifact without (NULL); an audit run
    and a push run (whose summary has no files, bytes or findings)."""
    sims = [
        {"hash": h, "simulation_type": "bilayer", "parametrization": "charmm36m", "status": "completed", "directory": f"{ROOT}/{h}"}
        for h in HASHES
    ]
    overview = [
        {"hash": "A1", "item_type": "analysis", "item_name": "rdf", "status": "ok", "row_count": 50, "file_count": 1},
        {"hash": "A1", "item_type": "artifact", "item_name": "snap", "status": "ok", "row_count": None, "file_count": 2},
        {"hash": "B2", "item_type": "artifact", "item_name": "snap", "status": "missing", "row_count": None, "file_count": None},
    ]
    analysis = [{"hash": "A1", "directory": f"{ROOT}/A1", "row_count": 50, "data_csv_bytes": None}]
    artifact = [{"hash": h, "directory": f"{ROOT}/{h}", "file_count": n} for h, n in (("A1", 2), ("B2", None))]
    files = [
        {
            "root": ROOT,
            "simulation": h,
            "path": "prod.xtc",
            "size": 10 + i,
            "mtime_ns": 1,
            "ctime_ns": 1,
            "inode": i,
            "device": 1,
            "run_id": "r1",
        }
        | {"cache_version": 1 if i == 0 else None}
        for i, h in enumerate(HASHES)
    ]
    audit = {"simulations": 2, "files": 2, "bytes": 21, "findings_total": 0, "elapsed_s": 0.5, "outcome": "completed"}
    push = {"simulations": 2, "files": None, "bytes": None, "findings_total": None, "elapsed_s": 0.25}
    with open_catalog(url) as cat:
        cat.init_schema()
        cat.apply(
            [
                Upsert(schema.RUN_TABLE, rows_table(schema.RUN_DATABASE, sims)),
                Upsert(schema.OVERVIEW_TABLE, rows_table(schema.ANALYSIS_OVERVIEW, overview)),
                Upsert("ANALYSIS_rdf", rows_table(schema.analysis_table("rdf"), analysis)),
                Upsert("ARTIFACT_snap", rows_table(schema.artifact_table("snap"), artifact)),
                Upsert(schema.FILES.name, rows_table(schema.FILES, files)),
                run_row("r1", "audit", ROOT, status="completed", started_at=T0, summary=json.dumps(audit)),
                run_row("r2", "push analysis", ROOT, status="completed", started_at=T0 + timedelta(hours=1), summary=json.dumps(push)),
            ]
        )


def test_integer_columns_stay_integers_with_nulls(catalog_url: str) -> None:
    _fill(catalog_url)
    with mdbatch.Catalog(catalog_url) as cat:
        overview = cat.table("ANALYSIS_OVERVIEW").sort_values(["hash", "item_type"], ignore_index=True)
        assert (str(overview["row_count"].dtype), str(overview["file_count"].dtype)) == ("Int64", "Int64")
        assert overview["row_count"].tolist()[:1] == [50] and overview["row_count"].isna().tolist() == [False, True, True]
        assert overview["file_count"].iloc[:2].tolist() == [1, 2] and pd.isna(overview["file_count"].iloc[2])
        # A query that happens to return no NULL has the same dtype.
        assert str(cat.table("ANALYSIS_OVERVIEW", {"item_type": "analysis"})["row_count"].dtype) == "Int64"
        rdf = cat.table("ANALYSIS_rdf")
        assert (str(rdf["row_count"].dtype), str(rdf["data_csv_bytes"].dtype)) == ("Int64", "Int64") and pd.isna(rdf["data_csv_bytes"][0])
        snap = cat.artifacts("snap").sort_values("hash", ignore_index=True)
        assert str(snap["file_count"].dtype) == "Int64" and snap["file_count"][0] == 2 and pd.isna(snap["file_count"][1])
        files = cat.table("MDBATCH_FILES").sort_values("simulation", ignore_index=True)
        assert {c: str(files[c].dtype) for c in ("size", "mtime_ns", "inode", "device", "cache_version")} == {
            "size": "int64",  # NOT NULL: plain int64
            "mtime_ns": "int64",
            "inode": "int64",
            "device": "int64",
            "cache_version": "Int64",
        }
        assert files["size"].tolist() == [10, 11] and files["cache_version"].isna().tolist() == [False, True]
        runs = cat.runs(ROOT)
        assert list(runs["command"]) == ["audit", "push analysis"]
        assert {c: str(runs[c].dtype) for c in ("simulations", "files", "bytes", "findings_total", "elapsed_s")} == {
            "simulations": "Int64",
            "files": "Int64",
            "bytes": "Int64",
            "findings_total": "Int64",
            "elapsed_s": "Float64",
        }
        assert runs["simulations"].tolist() == [2, 2] and runs["bytes"].iloc[0] == 21 and pd.isna(runs["bytes"].iloc[1])
        completeness = cat.completeness(ROOT)
        assert completeness[["item_name", "have", "faulty", "lacking", "missing"]].values.tolist() == [
            ["rdf", 1, 0, 1, 0],
            ["snap", 1, 1, 0, 1],
        ]
        assert {str(completeness[c].dtype) for c in completeness.columns[3:]} == {"int64"}
