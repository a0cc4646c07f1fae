"""Incremental audits: the hash cache, change detection between runs, run history commands."""

from __future__ import annotations

import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time

import pytest

from mdbatch.auditing import audit
from mdbatch.engine import ClusterOptions
from mdbatch.generate import inject_fault
from mdbatch.scan import ScanOptions

from .signals import signal_held

pytestmark = pytest.mark.integration
LOCAL = ClusterOptions(workers=2, dashboard=False)


def run(result, db):
    return audit(result.dest, db=f"sqlite:///{db}", cluster=LOCAL, progress=False)


def test_unchanged_reaudit_reads_no_file_at_all(make_campaign, tmp_path):
    result = make_campaign(40, seed=51, hostile=True)
    db = tmp_path / "c.db"
    first = run(result, db)
    assert first.summary["changes"]["previous_run"] is None
    assert first.summary["cache"]["hits"] == 0
    second = run(result, db)
    c = second.summary["changes"]
    assert c["previous_run"] == first.run_id
    assert c["files"] == {"new": 0, "missing": 0, "changed": 0, "moved": 0, "unchanged": result.files}
    assert c["simulations"] == {"new": 0, "removed": 0, "status_changed": 0}
    # Not even the identity inputs and registries: their bytes are in the hash cache.
    assert second.summary["cache"]["files_read"] == 0 and second.summary["cache"]["bytes_read"] == 0
    assert second.summary["cache"]["hits"] == result.files
    # Hostile names (non-UTF-8 bytes, SQL-ish, spaces) fingerprint the same way on every walk.
    assert second.summary["cache"]["simulations_kept"] == len(result.simulations)
    # The inventory was not rewritten: its rows still carry the first run's id.
    with sqlite3.connect(db) as conn:
        assert conn.execute("SELECT DISTINCT run_id FROM MDBATCH_FILES").fetchall() == [(first.run_id,)]
        stages = dict(conn.execute("SELECT stage, items FROM MDBATCH_STAGES WHERE run_id = ?", (second.run_id,)).fetchall())
    assert stages["scan"] == result.files and stages["discover"] == len(result.simulations)


def test_rows_of_unchanged_simulations_are_not_rewritten(make_campaign, tmp_path):
    result = make_campaign(12, seed=54)
    db = tmp_path / "c.db"
    run(result, db)

    def stamps() -> dict[str, str]:
        with sqlite3.connect(db) as conn:
            return dict(conn.execute("SELECT directory, timestamp_utc FROM RUN_DATABASE").fetchall())

    before = stamps()
    time.sleep(0.01)
    second = run(result, db)
    assert stamps() == before  # an unchanged re-audit writes no simulation rows...
    assert second.summary["changes"]["files"]["unchanged"] == result.files
    with sqlite3.connect(db) as conn:  # ...but records that it covered every simulation
        assert conn.execute("SELECT COUNT(*) FROM MDBATCH_SIMULATIONS WHERE run_id = ?", (second.run_id,)).fetchone() == (
            len(result.simulations),
        )
    touched = result.dest / result.simulations[3]
    (touched / "notes.txt").write_text("a new file\n")
    run(result, db)
    after = stamps()
    moved = {d for d in after if after[d] != before[d]}
    assert moved == {str(touched.resolve())} or moved == {str(touched)}


@pytest.mark.parametrize("fingerprint", [None, "0" * 32], ids=["no-fingerprint", "other-fingerprint"])
def test_entries_of_an_older_cache_version_are_read_and_rewritten_once(make_campaign, tmp_path, fingerprint):
    from mdbatch.hashcache import HASH_CACHE_VERSION

    result = make_campaign(12, seed=53)
    db = tmp_path / "c.db"
    run(result, db)
    with sqlite3.connect(db) as conn:  # a catalog written by an older mdbatch: before fingerprints, or salted differently
        conn.execute("UPDATE MDBATCH_FILES SET cache_version = ?", (HASH_CACHE_VERSION - 1,))
        conn.execute("UPDATE MDBATCH_SIMULATIONS SET fingerprint = ?", (fingerprint,))
    second = run(result, db)
    assert second.summary["cache"]["hits"] == 0 and second.summary["cache"]["files_read"] == result.files
    assert second.summary["changes"]["files"]["unchanged"] == result.files
    with sqlite3.connect(db) as conn:  # unchanged, yet rewritten under the current version
        assert conn.execute("SELECT DISTINCT cache_version FROM MDBATCH_FILES").fetchall() == [(HASH_CACHE_VERSION,)]
    third = run(result, db)
    assert third.summary["cache"]["files_read"] == 0 and third.summary["cache"]["hits"] == result.files


def test_every_change_class_is_classified(make_campaign, tmp_path):
    result = make_campaign(40, seed=52, faults=True)
    db = tmp_path / "c.db"
    first = run(result, db)
    manifest = json.loads(result.manifest_path.read_text())
    sims = {m["dir"]: m for m in manifest["simulations"]}
    faulty = {f["simulation"] for f in result.expected_findings}
    clean_completed = [d for d, m in sims.items() if m["status"] == "completed" and d not in faulty]
    production = next(d for d, m in sims.items() if m["status"] == "production" and d not in faulty)
    a, b, c, d = clean_completed[:4]
    (result.dest / a / "notes.txt").write_text("new file\n")  # new
    (result.dest / a / "em.mdp").unlink()  # missing
    top = result.dest / b / "topology.top"
    st = top.stat()
    data = bytearray(top.read_bytes())
    data[0] ^= 1
    time.sleep(0.01)
    top.write_bytes(bytes(data))
    os.utime(top, ns=(st.st_atime_ns, st.st_mtime_ns))  # changed, same size and mtime
    os.rename(result.dest / c / "system.pdb", result.dest / d / "system_from_c.pdb")  # moved
    (result.dest / production / "prod.gro").write_text("final frame\n")  # status changed (+ new file)
    shutil.rmtree(result.dest / clean_completed[4])  # removed simulation
    resolved = next(f for f in result.expected_findings if f["kind"] == "extra_file")
    (result.dest / resolved["simulation"] / resolved["item"]).unlink()  # a finding resolved
    new_fault = inject_fault(result.dest / clean_completed[5], "missing_file")  # a new finding

    second = run(result, db)
    ch = second.summary["changes"]
    assert ch["files"]["new"] == 2 and ch["files"]["missing"] == 3 and ch["files"]["changed"] == 1 and ch["files"]["moved"] == 1
    assert ch["simulations"] == {"new": 0, "removed": 1, "status_changed": 1}
    assert ch["findings"]["new"] == 1 and ch["findings"]["resolved"] == 1
    assert ch["findings"]["persisting"] == first.summary["findings_total"] - 1
    with sqlite3.connect(db) as conn:
        rows = set(
            conn.execute("SELECT scope, change, simulation, item FROM MDBATCH_CHANGES WHERE run_id = ?", (second.run_id,)).fetchall()
        )
        # A removed simulation's rows stay as its hash cache, marked removed by this run.
        assert (
            conn.execute(
                "SELECT COUNT(*) FROM MDBATCH_FILES WHERE simulation = ? AND removed_run IS NULL", (clean_completed[4],)
            ).fetchone()[0]
            == 0
        )
        assert (
            conn.execute(
                "SELECT COUNT(*) FROM MDBATCH_FILES WHERE simulation = ? AND removed_run = ?", (clean_completed[4], second.run_id)
            ).fetchone()[0]
            == 17
        )
    assert ("file", "moved", d, "system_from_c.pdb") in rows
    assert ("file", "changed", b, "topology.top") in rows
    assert ("file", "new", a, "notes.txt") in rows and ("file", "missing", a, "em.mdp") in rows
    assert ("simulation", "status_changed", production, production) in rows
    assert ("simulation", "removed", clean_completed[4], clean_completed[4]) in rows
    assert ("finding", "resolved", resolved["simulation"], f"extra_file:{resolved['item']}") in rows
    assert ("finding", "new", clean_completed[5], f"missing_file:{new_fault['item']}") in rows


def test_runs_commands(make_campaign, tmp_path):
    result = make_campaign(15, seed=53)
    db = tmp_path / "c.db"
    run(result, db)
    (result.dest / result.simulations[0] / "extra.dat").write_bytes(b"123")
    second = run(result, db)
    url = f"sqlite:///{db}"

    def cli(*args):
        return subprocess.run([sys.executable, "-m", "mdbatch", "runs", *args, "--db", url], capture_output=True, text=True, timeout=120)

    listing = cli("list", "--output", str(tmp_path / "runs.json"))
    assert listing.returncode == 0, listing.stderr
    runs = [json.loads(line) for line in (tmp_path / "runs.json").read_text().splitlines()]
    assert [r["status"] for r in runs] == ["completed", "completed"] and runs[1]["run_id"] == second.run_id
    show = cli("show", "last", "--format", "json")
    assert show.returncode == 0 and json.loads(show.stdout)["summary"]["changes"]["files"]["new"] == 1
    diff = cli("diff", "--output", str(tmp_path / "diff.csv"))
    assert diff.returncode == 0, diff.stderr
    text = (tmp_path / "diff.csv").read_text()
    assert "extra.dat" in text and ",new," in text
    table = cli("diff")
    assert "extra.dat" in table.stdout
    bad = cli("show", "no-such-run")
    assert bad.returncode == 2 and bad.stderr.startswith("error: ")


def test_interrupted_run_leaves_history_consistent(make_campaign, tmp_path):
    result = make_campaign(300, seed=54)
    db = tmp_path / "c.db"
    first = run(result, db)
    cmd = [
        sys.executable,
        "-m",
        "mdbatch",
        "audit",
        str(result.dest),
        "--db",
        f"sqlite:///{db}",
        "--batch-size",
        "1",
        "--workers",
        "1",
        "--quiet",
        "--no-dashboard",
    ]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        with sqlite3.connect(db, timeout=30) as conn:
            if conn.execute("SELECT COUNT(*) FROM MDBATCH_SCANNED").fetchone()[0] >= 10:
                break
        time.sleep(0.02)
    assert proc.poll() is None, "the audit ended before it could be signalled"
    signal_held(proc.pid, signal.SIGTERM)
    _out, err = proc.communicate(timeout=120)
    assert proc.returncode == 3, err
    (result.dest / result.simulations[-1] / "late.txt").write_text("after the interruption\n")
    third = run(result, db)
    ch = third.summary["changes"]
    assert ch["previous_run"] == first.run_id  # the interrupted run is not a baseline
    assert ch["files"]["new"] == 1 and ch["files"]["unchanged"] == result.files and ch["files"]["changed"] == 0
    assert third.summary["files"] == result.files + 1


def findings_of(res) -> list[tuple[str, str, str, str]]:
    return sorted(map(tuple, res.findings().itertuples(index=False)))


def test_unchanged_simulations_are_kept_with_their_recorded_findings(make_campaign, tmp_path):
    result = make_campaign(40, seed=55, faults=True)
    db = tmp_path / "c.db"
    first = audit(result.dest, db=f"sqlite:///{db}", cluster=LOCAL, progress=False, findings_path=tmp_path / "f1.jsonl")
    assert first.summary["cache"]["simulations_kept"] == 0
    second = audit(result.dest, db=f"sqlite:///{db}", cluster=LOCAL, progress=False, findings_path=tmp_path / "f2.jsonl")
    # Every simulation's fingerprint held: none was scanned, none was rescanned.
    assert second.summary["cache"]["simulations_kept"] == len(result.simulations)
    assert second.summary["cache"]["simulations_rescanned"] == 0
    assert second.summary["cache"]["hits"] == result.files and second.summary["cache"]["files_read"] == 0
    # ...and the run says exactly what a scan would have said.
    for key in ("simulations", "files", "bytes", "findings", "findings_total", "simulations_with_findings", "status", "duplicate_hashes"):
        assert second.summary[key] == first.summary[key], key
    expected = [f for f in result.expected_findings if not (f.get("requires_non_root") and os.geteuid() == 0)]
    assert findings_of(second) == findings_of(first) and len(findings_of(first)) == len(expected)
    lines = lambda p: sorted((tmp_path / p).read_text().splitlines())  # noqa: E731
    assert lines("f2.jsonl") == lines("f1.jsonl")
    assert second.summary["changes"]["findings"]["persisting"] == first.summary["findings_total"]
    with sqlite3.connect(db) as conn:
        assert conn.execute(
            "SELECT COUNT(*) FROM MDBATCH_SIMULATIONS WHERE run_id = ? AND fingerprint IS NOT NULL", (second.run_id,)
        ).fetchone() == (len(result.simulations),)


def test_a_moved_fingerprint_rescans_that_simulation_with_its_hash_cache(make_campaign, tmp_path):
    result = make_campaign(30, seed=56, faults=True)
    db = tmp_path / "c.db"
    run(result, db)
    manifest = json.loads(result.manifest_path.read_text())
    faulty = {f["simulation"] for f in result.expected_findings}
    sims = [m["dir"] for m in manifest["simulations"] if m["status"] == "completed" and m["dir"] not in faulty]
    # Same size, mtime restored: only the ctime betrays the change.
    top = result.dest / sims[2] / "topology.top"
    st = top.stat()
    data = bytearray(top.read_bytes())
    data[-1] ^= 1
    time.sleep(0.01)
    top.write_bytes(bytes(data))
    os.utime(top, ns=(st.st_atime_ns, st.st_mtime_ns))
    os.chmod(result.dest / sims[3] / "em.mdp", 0o600)  # metadata only: rescanned, found unchanged
    (result.dest / sims[4] / "notes.txt").write_text("new\n")
    new_fault = inject_fault(result.dest / sims[5], "missing_file")
    second = run(result, db)
    cache = second.summary["cache"]
    assert cache["simulations_rescanned"] == 4 and cache["simulations_kept"] == len(result.simulations) - 4
    # Only files whose stat moved were read: the rescanned simulations' other files came from the cache.
    assert cache["files_read"] == 3  # topology.top, em.mdp (its ctime moved) and notes.txt
    ch = second.summary["changes"]
    assert ch["files"]["changed"] == 1 and ch["files"]["new"] == 1 and ch["files"]["missing"] == 1
    assert ch["files"]["unchanged"] == result.files - 2
    assert ch["findings"]["new"] == 1
    assert ("missing_file", new_fault["item"]) in {(k, i) for s, k, i, _ in findings_of(second) if s == sims[5]}
    third = run(result, db)
    assert third.summary["cache"]["simulations_kept"] == len(result.simulations) and findings_of(third) == findings_of(second)


def test_verify_full_keeps_nothing_and_reads_every_file(make_campaign, tmp_path):
    result = make_campaign(10, seed=57)
    db = tmp_path / "c.db"
    run(result, db)
    full = audit(result.dest, db=f"sqlite:///{db}", cluster=LOCAL, progress=False, options=ScanOptions(verify="full"))
    assert full.summary["cache"]["simulations_kept"] == 0 and full.summary["cache"]["files_read"] == result.files
    assert full.summary["changes"]["files"]["unchanged"] == result.files


def test_catalog_of_schema_3_gains_fingerprints(make_campaign, tmp_path):
    from mdbatch.catalog import open_catalog, schema

    result = make_campaign(10, seed=58)
    db = tmp_path / "c.db"
    first = run(result, db)
    with sqlite3.connect(db) as conn:  # what a catalog of schema 3 looked like
        conn.execute("DROP INDEX ix_findings_run_simulation")
        conn.execute("ALTER TABLE MDBATCH_SIMULATIONS DROP COLUMN fingerprint")
        conn.execute("UPDATE MDBATCH_SCHEMA SET value = '3'")
    second = run(result, db)  # scanned (from the hash cache), fingerprints recorded
    assert second.summary["cache"]["simulations_kept"] == 0 and second.summary["cache"]["files_read"] == 0
    assert findings_of(second) == findings_of(first)
    with open_catalog(f"sqlite:///{db}") as cat:
        assert cat.schema_version() == schema.SCHEMA_VERSION
    with sqlite3.connect(db) as conn:
        assert conn.execute("SELECT COUNT(*) FROM sqlite_master WHERE name = 'ix_findings_run_simulation'").fetchone() == (1,)
    third = run(result, db)
    assert third.summary["cache"]["simulations_kept"] == len(result.simulations)


def test_an_unchanged_campaign_is_checked_in_process_and_a_changed_one_on_the_cluster(make_campaign, tmp_path):
    result = make_campaign(30, seed=58, faults=True)
    db = f"sqlite:///{tmp_path / 'c.db'}"
    auto = ClusterOptions(dashboard=False)  # no workers given: mdbatch chooses
    first = audit(result.dest, db=db, cluster=auto, progress=False)
    assert first.summary["in_process"] is False  # a first audit reads every file: the cluster
    again = audit(result.dest, db=db, cluster=auto, progress=False)
    assert again.summary["in_process"] is True and again.summary["workers"] == 1
    assert again.summary["cache"]["simulations_kept"] == 30 and again.summary["findings"] == first.summary["findings"]
    forced = audit(result.dest, db=db, cluster=LOCAL, progress=False)
    assert forced.summary["in_process"] is False  # workers asked for: Dask, whatever the size
    # A simulation that changed is rescanned in process too, from its hash cache.
    (result.dest / result.simulations[0] / "notes.txt").write_text("new\n")
    changed = audit(result.dest, db=db, cluster=auto, progress=False)
    assert changed.summary["in_process"] is True
    assert changed.summary["cache"]["simulations_rescanned"] == 1 and changed.summary["cache"]["files_read"] == 1
    assert changed.summary["changes"]["files"]["new"] == 1
