"""Smoke test of the dedupe benchmark harness: it runs end to end and reports what it promises.

Timings are never asserted (the machine is shared): only the document's shape, that mdbatch's
groups equal rmlint's, and that the apply made every link.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from ..conftest import need_service

BENCH = Path(__file__).resolve().parents[2] / "benchmarks" / "bench_dedupe.py"

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def test_quick_benchmark_reports_groups_times_and_apply_rate(tmp_path: Path) -> None:
    need_service(bool(shutil.which("rmlint") and shutil.which("jdupes")), "rmlint and jdupes are needed (apt-get install rmlint jdupes)")
    out = tmp_path / "result.json"
    proc = subprocess.run(
        [
            sys.executable,
            str(BENCH),
            "--quick",
            "--repeat",
            "1",
            "--apply-repeat",
            "1",
            "--no-cluster",
            "--workdir",
            str(tmp_path / "work"),
            "--json-out",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=900,
        stdin=subprocess.DEVNULL,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    doc = json.loads(proc.stdout)
    assert json.loads(out.read_text()) == doc
    assert set(doc["profiles"]) == {"metadata", "bytes"}
    for profile in doc["profiles"].values():
        assert profile["groups"]["identical_to_rmlint"] is True
        assert profile["groups"]["mdbatch"]["groups"] > 0
        for temperature in ("warm", "cold"):
            for tool in ("mdbatch", "rmlint", "jdupes", "mdbatch-db", "mdbatch-db-walk"):
                assert profile[temperature][tool]["n"] == 1 and profile[temperature][tool]["median_s"] > 0
            assert profile[temperature]["mdbatch-db_ratio_to_jdupes"] > 0
            stages = profile[temperature]["mdbatch-db"]["median_run"]["stages"]
            assert stages["digests_reused"] == stages["distinct_inodes"] and stages["full_hashed"] == 0  # nothing read
        assert profile["groups"]["mdbatch-db_identical"] is True and profile["groups"]["mdbatch-db-walk_identical"] is True
        assert profile["cold"]["eviction"]["max_resident_fraction_after"] <= 0.01
        assert set(profile["targets"]) == {
            "groups_identical_to_rmlint",
            "warm_time_vs_rmlint",
            "cold_time_vs_rmlint",
            "warm_db_time_vs_jdupes",
        }
    apply = doc["apply"]
    assert apply["targets"]["all_links_made"]["pass"] is True
    assert apply["runs"][0]["links"] == apply["tree"]["expected_links"] == 2000
    assert apply["median_links_per_s"] > 0
