"""`push` through the library, against every backend, on a real Dask cluster shared by the module."""

from __future__ import annotations

import io
import json
import logging
from collections import Counter
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
import pytest

from mdbatch.audit import audit
from mdbatch.catalog import open_catalog, schema
from mdbatch.engine import ClusterOptions
from mdbatch.errors import DuplicateKeysError, InvalidNameError, UsageError
from mdbatch.sync.push import push
from mdbatch.sync.records import frame_csv

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def cluster():
    from distributed import LocalCluster

    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1", dashboard_address=None, silence_logs=logging.ERROR) as c:
        yield ClusterOptions(scheduler=c.scheduler_address)


def registered(dest: Path) -> tuple[Counter[str], Counter[str]]:
    """How many simulations register each analysis and each artifact."""
    analyses: Counter[str] = Counter()
    artifacts: Counter[str] = Counter()
    for reg in dest.rglob(".analysis/metadata.json"):
        doc = json.loads(reg.read_text())
        analyses.update(list(doc["analyses"]))
        artifacts.update(list(doc["artifacts"]))
    return analyses, artifacts


def rows(url: str, table: str, **where: object) -> list[dict]:
    with open_catalog(url) as cat:
        return [r for t in cat.iter_rows(table, where or None) for r in t.to_pylist()]


def test_push_all_three_kinds_then_duplicates_diff_and_force(catalog_url, make_campaign, cluster):
    result = make_campaign(24, seed=31)
    analyses, artifacts = registered(result.dest)
    sims = len(result.simulations)
    first = push(result.dest, "systems", db=catalog_url, cluster=cluster, progress=False)
    assert first.simulations == sims and first.written == {"RUN_DATABASE": sims} and first.outcome == "completed"
    pushed = push(result.dest, "analysis", db=catalog_url, cluster=cluster, progress=False)
    assert pushed.written == {"ANALYSIS_OVERVIEW": sum(analyses.values()), **{f"ANALYSIS_{n}": c for n, c in analyses.items()}}
    arts = push(result.dest, "artifacts", db=catalog_url, cluster=cluster, progress=False)
    assert arts.written == {"ANALYSIS_OVERVIEW": sum(artifacts.values()), **{f"ARTIFACT_{n}": c for n, c in artifacts.items()}}

    # Default mode: every key is checked first; nothing is written and the message names the flags.
    with pytest.raises(DuplicateKeysError, match=f"^{sims} records already exist .*--diff.*--force"):
        push(result.dest, "systems", db=catalog_url, cluster=cluster, progress=False)
    diff = push(result.dest, "analysis", db=catalog_url, cluster=cluster, progress=False, mode="diff")
    assert sum(diff.written.values()) == 0 and sum(diff.skipped.values()) == 2 * sum(analyses.values())
    assert diff.transactions == 0
    forced = push(result.dest, "systems", db=catalog_url, cluster=cluster, progress=False, mode="force")
    assert forced.written == {"RUN_DATABASE": sims}

    run = {r["hash"]: r for r in rows(catalog_url, "RUN_DATABASE")}
    manifest = json.loads(result.manifest_path.read_text())
    assert {m["hash"]: m["status"] for m in manifest["simulations"]} == {h: r["status"] for h, r in run.items()}
    some = manifest["simulations"][0]
    assert run[some["hash"]]["directory"] == str(result.dest / some["dir"])
    assert run[some["hash"]]["input_data"].startswith("simulation_type:") and run[some["hash"]]["input_data_type"] == "yaml"
    with open_catalog(catalog_url) as cat:
        runs = cat.read_table("MDBATCH_RUNS")
    assert set(runs["command"]) == {"push systems", "push analysis", "push artifacts"}
    assert Counter(runs["status"]) == {"completed": 5, "failed": 1}


def test_data_csv_is_the_frame_and_rebuilds(catalog_url, make_campaign, cluster):
    result = make_campaign(12, seed=32)
    push(result.dest, "analysis", db=catalog_url, cluster=cluster, progress=False, name="area_per_lipid")
    got = rows(catalog_url, "ANALYSIS_area_per_lipid")
    assert got and {t for t in _tables(catalog_url) if t.startswith("ANALYSIS_") and t != "ANALYSIS_OVERVIEW"} == {"ANALYSIS_area_per_lipid"}
    for row in got:
        original = pq.read_table(row["data_path"]).to_pandas()
        frame = pd.read_csv(io.StringIO(row["data_csv"]))
        pd.testing.assert_frame_equal(frame, original, check_dtype=True)
        assert row["row_count"] == len(original) and row["data_csv_bytes"] == len(row["data_csv"].encode())
        assert json.loads(row["columns"]) == list(original.columns)
    overview = rows(catalog_url, "ANALYSIS_OVERVIEW")
    assert {(r["item_type"], r["item_name"]) for r in overview} == {("analysis", "area_per_lipid")}


def test_size_cap_keeps_only_path_and_size(catalog_url, make_campaign, cluster):
    result = make_campaign(10, seed=33)
    pushed = push(result.dest, "analysis", db=catalog_url, cluster=cluster, progress=False, max_csv=600)
    stored = [r for t in _tables(catalog_url) if schema.item_kind(t) == "analysis" for r in rows(catalog_url, t)]
    over = [r for r in stored if r["data_csv"] is None]
    assert over and pushed.over_cap == len(over)
    assert all(r["data_csv_bytes"] > 600 and Path(r["data_path"]).is_file() for r in over)
    assert all(len(r["data_csv"].encode()) <= 600 for r in stored if r["data_csv"] is not None)
    text, size = frame_csv(over[0]["data_path"], 10**9)
    assert size == over[0]["data_csv_bytes"] and text is not None


def test_audit_then_push_fills_in_the_data(catalog_url, make_campaign, cluster):
    result = make_campaign(10, seed=34)
    audit(result.dest, db=catalog_url, cluster=cluster, progress=False)
    before = rows(catalog_url, "ANALYSIS_area_per_lipid")
    assert before and all(r["data_csv"] is None for r in before)
    # What an audit recorded is not "already pushed": --diff (and the default mode) fill the data in.
    pushed = push(result.dest, "analysis", db=catalog_url, cluster=cluster, progress=False, mode="diff")
    after = rows(catalog_url, "ANALYSIS_area_per_lipid")
    assert len(after) == len(before) and all(r["data_csv"] for r in after)
    assert pushed.written["ANALYSIS_area_per_lipid"] == len(before)
    again = push(result.dest, "analysis", db=catalog_url, cluster=cluster, progress=False, mode="diff")
    assert sum(again.written.values()) == 0
    # A later audit keeps the pushed data while the analysis is unchanged.
    audit(result.dest, db=catalog_url, cluster=cluster, progress=False)
    assert [r["data_csv"] for r in rows(catalog_url, "ANALYSIS_area_per_lipid")] == [r["data_csv"] for r in after]


def test_faulty_campaign_pushes_what_is_sound(catalog_url, make_campaign, cluster):
    result = make_campaign(30, seed=35, faults=True)
    pushed = push(result.dest, "analysis", db=catalog_url, cluster=cluster, progress=False)
    overview = rows(catalog_url, "ANALYSIS_OVERVIEW")
    statuses = Counter(r["status"] for r in overview)
    assert statuses["ok"] > 0 and statuses["missing"] >= 1 and statuses["invalid"] >= 1
    tables = _tables(catalog_url)
    assert not [t for t in tables if ";" in t or " " in t]
    assert pushed.invalid_names >= 1 and pushed.findings > 0
    # Only analyses with a readable parquet get a data row.
    bad = {(r["hash"], r["item_name"]) for r in overview if r["status"] not in ("ok", "mismatch")}
    data_rows = {(r["hash"], t[len("ANALYSIS_"):]) for t in tables if schema.item_kind(t) == "analysis" for r in rows(catalog_url, t)}
    assert not bad & data_rows


def test_sources_summary_yaml_and_csv(tmp_path, make_campaign, cluster):
    result = make_campaign(8, seed=36)
    listed = [str(result.dest / s) for s in result.simulations[:5]]
    summary = tmp_path / "build_summary.yaml"
    summary.write_text("system_directory:\n" + "".join(f"  - {p}\n" for p in listed))
    db = f"sqlite:///{tmp_path / 'c.db'}"
    assert push(summary, "systems", db=db, cluster=cluster, progress=False).simulations == 5
    table = tmp_path / "systems.csv"
    table.write_text("directory\n" + "".join(f"{s}\n" for s in result.simulations[5:]))
    assert push(table, "systems", db=db, cluster=cluster, progress=False, csv_root=result.dest).simulations == 3
    assert len(rows(db, "RUN_DATABASE")) == 8


def test_bad_arguments_are_usage_errors(tmp_path, make_campaign):
    result = make_campaign(2, seed=37)
    db = f"sqlite:///{tmp_path / 'c.db'}"
    with pytest.raises(InvalidNameError):
        push(result.dest, "analysis", db=db, name="x; DROP TABLE RUN_DATABASE")
    with pytest.raises(UsageError):
        push(result.dest, "everything", db=db)
    with pytest.raises(UsageError):
        push(result.dest, "systems", db=db, name="area_per_lipid")
    assert not (tmp_path / "c.db").exists()  # refused before opening anything


def _tables(url: str) -> list[str]:
    with open_catalog(url) as cat:
        return cat.tables()
