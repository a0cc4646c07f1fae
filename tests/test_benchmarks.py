"""Smoke tests of the benchmark harnesses: each runs end to end at a tiny size and reports what it promises.

Timings are never asserted (the machine is shared); only the document's shape, that both tools
saw the same campaign, and that cold eviction actually emptied the page cache.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_audit.py"

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def test_quick_benchmark_reports_both_profiles_with_matching_counts(tmp_path: Path) -> None:
    out = tmp_path / "result.json"
    proc = subprocess.run(
        [
            sys.executable,
            str(BENCH),
            "--quick",
            "--repeat",
            "1",
            "--baseline-repeat",
            "1",
            "--fair-repeat",
            "1",
            "--workdir",
            str(tmp_path / "work"),
            "--json-out",
            str(out),
        ],
        check=False,
        capture_output=True,
        text=True,
        timeout=600,
        stdin=subprocess.DEVNULL,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    doc = json.loads(proc.stdout)
    assert json.loads(out.read_text()) == doc

    assert doc["machine"]["nproc"] >= 1
    assert doc["machine"]["versions"]["mdbatch"] and doc["machine"]["versions"]["dask"] and doc["machine"]["versions"]["pyarrow"]
    assert set(doc["profiles"]) == {"metadata", "bytes", "metadata-cold", "unchanged"}
    for name, profile in doc["profiles"].items():
        if name == "unchanged":
            continue
        assert profile["campaign"]["simulations"] == {"metadata": 30, "bytes": 6, "metadata-cold": 30}[name]
        assert profile["campaign"]["files"] > 0
        for contender in ("mdbatch", "limit", "baseline", "baseline_wal", "baseline_fair"):
            stats = profile["contenders"][contender]
            assert stats["n"] == 1 and len(stats["samples_s"]) == 1 and stats["median_s"] > 0
        for key in ("speedup_vs_baseline", "ratio_to_limit", "speedup_vs_baseline_wal", "speedup_vs_baseline_fair"):
            assert profile["ratios"][key] > 0
        for key in ("speedup_vs_baseline", "ratio_to_limit"):
            assert set(profile["targets"][key]) == {"value", "target", "pass"}
            assert isinstance(profile["targets"][key]["pass"], bool)
        counts = profile["counts"]
        assert counts["match"] is True and counts["findings_match"] is True
        generated = counts["generated"]
        for tool in ("mdbatch", "baseline", "baseline_wal", "baseline_fair"):
            assert counts[tool] == [{"simulations": generated["simulations"], "files": generated["files"], "findings": 0}]
        run = profile["mdbatch_median_run"]
        assert run["elapsed_s"] > 0 and run["workers"] >= 1 and isinstance(run["timings"], dict)
        assert "scan_task_s" in run["timings"]
        phases = {mode: set(profile["baseline_median_run"][mode]["phases_s"]) for mode in ("baseline", "baseline_fair")}
        assert phases["baseline"] >= {"sha256_inventory", "parquet_full_read", "sqlite_commit_per_row"}
        assert phases["baseline_fair"] >= {"xxh3_inventory_one_read", "parquet_footer", "sqlite_batch_transaction"}
        assert not phases["baseline_fair"] & {"sha256_artifacts", "parquet_full_read", "sqlite_commit_per_row"}

    unchanged = doc["profiles"]["unchanged"]
    assert {n: s["n"] for n, s in unchanged["contenders"].items()} == {"mdbatch_unchanged": 1, "find_stat": 1}
    assert unchanged["ratios"]["ratio_to_find"] > 0 and set(unchanged["targets"]["ratio_to_find"]) == {"value", "target", "pass"}
    last = unchanged["mdbatch_last_run"]
    assert (last["simulations"], last["files"]) == (30, doc["profiles"]["metadata"]["campaign"]["files"])
    assert (last["cache"]["files_read"], last["cache"]["simulations_kept"]) == (0, 30), last["cache"]
    assert doc["profiles"]["metadata-cold"]["eviction"]["max_resident_fraction_at_start_of_timed_runs"] <= 0.01

    cold = doc["profiles"]["bytes"]["eviction"]
    assert cold["resident_fraction_before"] is not None
    assert cold["resident_fraction_after"] <= 0.01
    assert cold["max_resident_fraction_at_start_of_timed_runs"] <= 0.01
    assert doc["profiles"]["metadata"]["page_cache"] == "warm"
    assert doc["fixed_costs"]["audit_1_simulation_s"]["n"] == 1


def _run(script: str, *args: str, timeout: int = 600) -> dict:
    proc = subprocess.run(
        [sys.executable, str(BENCH.parent / script), *args],
        check=False,
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout)


def test_push_benchmark_runs_and_checks_its_targets(tmp_path: Path) -> None:
    doc = _run(
        "bench_push.py",
        "--sims",
        "600",
        "--repeat",
        "1",
        "--baseline-sims",
        "100",
        "--diff-sims",
        "200",
        "--no-pg",
        "--workdir",
        str(tmp_path / "push"),
    )
    assert doc["sims"] == 600 and doc["rows"] == 600 * 5
    assert doc["sqlite"]["rows"] == doc["rows"] and doc["sqlite"]["first_push"]["n"] == 1
    assert doc["sqlite"]["diff_growth"]["table_big_sims"] == 600
    assert 0 < doc["mdfactory_way_sqlite"]["measured_sims"] < 600 and doc["speedup_sqlite_vs_mdfactory"] > 0  # whole batches of 250
    assert set(doc["targets"]["sqlite_speedup_vs_mdfactory"]) == {"value", "target", "pass"}
    assert doc["postgresql"] == {"skipped": doc["postgresql"]["skipped"]}


def test_scale_benchmark_reports_every_size(tmp_path: Path) -> None:
    doc = _run(
        "bench_scale.py", "--sizes", "20,40", "--repeat", "1", "--max-extra", "0", "--interleave", "--workdir", str(tmp_path / "scale")
    )
    assert set(doc["sizes"]) == {"20", "40"}
    for size, report in doc["sizes"].items():
        assert report["simulations"] == int(size) and report["sims_per_s"] > 0
        assert report["client_peak_rss_mb"]["median"] > 0 and report["scheduler_tasks"] >= 1
        assert report["catalog"]["rows_total"] > 0


def test_incremental_benchmark_sees_the_cache_and_the_changes(tmp_path: Path) -> None:
    doc = _run("bench_incremental.py", "--quick", "--profile", "metadata", "--repeat", "1", "--workdir", str(tmp_path / "inc"))
    runs = doc["profiles"]["metadata"]["last_runs"]
    assert runs["first"]["cache"]["hits"] == 0
    assert runs["unchanged"]["cache"]["hits"] > 0 and runs["unchanged"]["changes"]["files"]["changed"] == 0
    assert runs["changed_1pct"]["changes"]["files"]["changed"] > 0
    assert doc["profiles"]["metadata"]["ratios"]["whole_first_over_unchanged"] > 0


def test_status_benchmark_reports_ratios_to_find(tmp_path: Path) -> None:
    doc = _run("bench_status.py", "--quick", "--repeat", "1", "--workdir", str(tmp_path / "status"))
    result = doc["result"]
    assert result["campaign"]["simulations"] == 40 and result["files"] == result["campaign"]["files"] > 0
    assert result["touched_files"] == max(1, result["files"] // 100) and result["changed_exit_code"] == 1
    for contender in ("find", "status_unchanged", "status_changed_1pct"):
        stats = result["contenders"][contender]
        assert stats["n"] == 1 and len(stats["samples_s"]) == 1 and stats["median_s"] > 0
    assert set(result["ratios"]) == {"status_unchanged_over_find", "status_changed_1pct_over_find"}
    assert all(r > 0 for r in result["ratios"].values())
    for target in result["targets"].values():
        assert set(target) == {"value", "target", "pass"} and isinstance(target["pass"], bool)
