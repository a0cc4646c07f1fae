"""An empty or unmounted root, and simulations that really vanish (issue 13, item 1).

An audit that would record a mass removal refuses (run `refused`, nothing else changed, exit 2);
a real removal keeps the simulation's inventory as the hash cache, so a directory that comes back
is read from the cache, not re-read.
"""

from __future__ import annotations

import os
import shutil

import pytest

from .helpers import mdbatch, one_error_line, rows, summary, value

pytestmark = pytest.mark.integration


def _audit(root, db, out, *extra: str):
    return mdbatch("audit", root, "--db", f"sqlite:///{db}", "--quiet", "--no-dashboard", "--workers", "2", "--json", out, *extra)


def test_unmounted_root_is_refused_and_the_history_survives(make_campaign, tmp_path):
    camp = make_campaign(30, seed=41, faults=True)
    db, out = tmp_path / "c.db", tmp_path / "s.json"
    first = _audit(camp.dest, db, out)
    assert first.returncode == 1, first.stderr
    before = summary(out)
    files_before = rows(db, "SELECT simulation, path, size, xxh3_128 FROM MDBATCH_FILES ORDER BY 1, 2")

    # What an unmounted scratch filesystem looks like: the mount point, empty.
    away = tmp_path / "away"
    os.rename(camp.dest, away)
    os.mkdir(camp.dest)
    refused = _audit(camp.dest, db, out)
    assert refused.returncode == 2, refused.stderr
    line = one_error_line(refused.stderr)
    assert str(camp.dest) in line and "30" in line and "--allow-removals" in line
    assert [s for (s,) in rows(db, "SELECT status FROM MDBATCH_RUNS ORDER BY started_at")] == ["completed", "refused"]
    refused_id = value(db, "SELECT run_id FROM MDBATCH_RUNS WHERE status = 'refused'")
    # Nothing else changed: no change record, no finding, no removal mark, every inventory row kept.
    assert value(db, "SELECT COUNT(*) FROM MDBATCH_CHANGES WHERE run_id = ?", refused_id) == 0
    assert value(db, "SELECT COUNT(*) FROM MDBATCH_FINDINGS WHERE run_id = ?", refused_id) == 0
    assert value(db, "SELECT COUNT(*) FROM MDBATCH_SIMULATIONS WHERE removed_run IS NULL") == 30
    assert rows(db, "SELECT simulation, path, size, xxh3_128 FROM MDBATCH_FILES ORDER BY 1, 2") == files_before

    # The filesystem is back: nothing is new, nothing is re-read.
    os.rmdir(camp.dest)
    os.rename(away, camp.dest)
    third = _audit(camp.dest, db, out)
    assert third.returncode == 1, third.stderr
    after = summary(out)
    assert after["changes"]["simulations"] == {"new": 0, "removed": 0, "status_changed": 0}
    assert after["changes"]["findings"]["new"] == 0 and after["changes"]["findings"]["resolved"] == 0
    assert after["changes"]["findings"]["persisting"] == before["findings_total"]
    assert after["cache"]["files_read"] == 0 and after["cache"]["bytes_read"] == 0
    assert after["findings"] == before["findings"]


def test_unreadable_root_is_refused(make_campaign, tmp_path):
    camp = make_campaign(5, seed=43)
    db, out = tmp_path / "c.db", tmp_path / "s.json"
    assert _audit(camp.dest, db, out).returncode == 0
    os.chmod(camp.dest, 0)
    try:
        refused = mdbatch("audit", camp.dest, "--db", f"sqlite:///{db}", "--quiet", "--no-dashboard", "--workers", "1", permissions=True)
    finally:
        os.chmod(camp.dest, 0o755)
    assert refused.returncode == 2
    line = one_error_line(refused.stderr)
    assert f"{camp.dest} cannot be read (Permission denied)" in line
    assert [s for (s,) in rows(db, "SELECT status FROM MDBATCH_RUNS ORDER BY started_at")] == ["completed", "refused"]
    assert value(db, "SELECT COUNT(*) FROM MDBATCH_SIMULATIONS WHERE removed_run IS NULL") == 5


def test_more_than_the_threshold_gone_is_refused_unless_allowed(make_campaign, tmp_path):
    camp = make_campaign(10, seed=44)
    db, out = tmp_path / "c.db", tmp_path / "s.json"
    assert _audit(camp.dest, db, out).returncode == 0
    for sim in camp.simulations[:6]:  # 60% > the default 50%
        shutil.move(camp.dest / sim, tmp_path / f"gone-{sim}")
    refused = _audit(camp.dest, db, out)
    assert refused.returncode == 2
    line = one_error_line(refused.stderr)
    assert "6 of the 10 simulations" in line and "--allow-removals" in line and "--max-removed" in line
    assert value(db, "SELECT COUNT(*) FROM MDBATCH_SIMULATIONS WHERE removed_run IS NULL") == 10

    raised = _audit(camp.dest, db, out, "--max-removed", "0.7")
    assert raised.returncode == 0, raised.stderr
    assert summary(out)["changes"]["simulations"]["removed"] == 6
    assert value(db, "SELECT COUNT(*) FROM MDBATCH_SIMULATIONS WHERE removed_run IS NULL") == 4


def test_allow_removals_accepts_an_empty_root(make_campaign, tmp_path):
    camp = make_campaign(4, seed=45)
    db, out = tmp_path / "c.db", tmp_path / "s.json"
    assert _audit(camp.dest, db, out).returncode == 0
    for sim in camp.simulations:
        shutil.rmtree(camp.dest / sim)
    accepted = _audit(camp.dest, db, out, "--allow-removals")
    assert accepted.returncode == 0, accepted.stderr
    assert summary(out)["changes"]["simulations"]["removed"] == 4
    assert [s for (s,) in rows(db, "SELECT status FROM MDBATCH_RUNS ORDER BY started_at")] == ["completed", "completed"]


def test_a_removed_simulation_keeps_its_cache_and_comes_back_as_a_hit(make_campaign, tmp_path):
    camp = make_campaign(16, seed=46, faults=True)
    db, out = tmp_path / "c.db", tmp_path / "s.json"
    assert _audit(camp.dest, db, out).returncode == 1
    # A clean one: a simulation with an unreadable parquet is re-read on every audit anyway.
    gone = sorted(set(camp.simulations) - {f["simulation"] for f in camp.expected_findings})[0]
    files = value(db, "SELECT COUNT(*) FROM MDBATCH_FILES WHERE simulation = ?", gone)
    duplicates = summary(out)["duplicates"]
    shutil.move(camp.dest / gone, tmp_path / "parked")
    second = _audit(camp.dest, db, out)
    assert second.returncode == 1, second.stderr
    s2 = summary(out)
    assert s2["changes"]["simulations"]["removed"] == 1 and s2["simulations"] == 15
    # Its rows stay as the hash cache, marked removed; the current view leaves them out.
    assert value(db, "SELECT COUNT(*) FROM MDBATCH_FILES WHERE simulation = ? AND removed_run = ?", gone, s2["run_id"]) == files
    assert value(db, "SELECT removed_run FROM MDBATCH_SIMULATIONS WHERE simulation = ?", gone) == s2["run_id"]
    assert s2["duplicates"]["files"] <= duplicates["files"]

    shutil.move(tmp_path / "parked", camp.dest / gone)
    third = _audit(camp.dest, db, out)
    assert third.returncode == 1, third.stderr
    s3 = summary(out)
    assert s3["changes"]["simulations"]["new"] == 1 and s3["simulations"] == 16
    assert s3["cache"]["files_read"] == 0 and s3["cache"]["bytes_read"] == 0
    assert value(db, "SELECT COUNT(*) FROM MDBATCH_FILES WHERE removed_run IS NOT NULL") == 0
    assert value(db, "SELECT removed_run FROM MDBATCH_SIMULATIONS WHERE simulation = ?", gone) is None
    assert s3["duplicates"] == duplicates


def test_runs_prune_drops_the_rows_of_removed_simulations(make_campaign, tmp_path):
    camp = make_campaign(6, seed=47)
    db, out = tmp_path / "c.db", tmp_path / "s.json"
    assert _audit(camp.dest, db, out).returncode == 0
    gone = camp.simulations[0]
    files = value(db, "SELECT COUNT(*) FROM MDBATCH_FILES")
    kept = files - value(db, "SELECT COUNT(*) FROM MDBATCH_FILES WHERE simulation = ?", gone)
    shutil.rmtree(camp.dest / gone)
    assert _audit(camp.dest, db, out).returncode == 0
    young = mdbatch("runs", "prune", "--db", f"sqlite:///{db}")  # default retention: 30 days
    assert young.returncode == 0 and "0 removed simulations" in young.stdout
    assert value(db, "SELECT COUNT(*) FROM MDBATCH_FILES") == files
    pruned = mdbatch("runs", "prune", "--db", f"sqlite:///{db}", "--older-than", "0")
    assert pruned.returncode == 0, pruned.stderr
    assert "1 removed simulations" in pruned.stdout
    assert value(db, "SELECT COUNT(*) FROM MDBATCH_FILES") == kept
    assert value(db, "SELECT COUNT(*) FROM MDBATCH_SIMULATIONS") == 5
