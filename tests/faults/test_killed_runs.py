"""Runs that die (issue 13, item 5): no dead run looks alive, and no worker outlives its client.

A SIGKILLed audit is marked `abandoned` by the next command that opens the catalog, `--resume`
finishes it into a catalog identical to an undisturbed run, and its forked workers are gone within
seconds, wherever the kill lands.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta

import pytest

from mdbatch.auditing import audit
from mdbatch.catalog import open_catalog, schema
from mdbatch.catalog.ops import Upsert, rows_table
from mdbatch.engine import ClusterOptions
from mdbatch.lifecycle import ABANDON_AFTER_S, reap_abandoned

from ..test_resilience import catalog_snapshot
from .helpers import mdbatch, rows, value

pytestmark = pytest.mark.integration


def children_of(client_pid: int, db) -> set[int]:
    """Processes started for the client `client_pid`: its forked workers run the client's own
    command line, which names the test's unique catalog `db`."""
    found = set()
    marker = str(db).encode()
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == client_pid:
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as handle:
                if marker in handle.read():
                    found.add(int(entry))
        except OSError:
            continue
    return alive(found)


def alive(pids: set[int]) -> set[int]:
    out = set()
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat", "rb") as handle:
                if handle.read().rsplit(b")", 1)[1].split()[0] not in (b"Z", b"X"):
                    out.add(pid)
        except OSError:
            continue
    return out


def start_audit(root, db, *extra: str) -> subprocess.Popen[str]:
    cmd = [sys.executable, "-m", "mdbatch", "audit", str(root), "--db", f"sqlite:///{db}", "--quiet", "--no-dashboard", *extra]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, stdin=subprocess.DEVNULL)


def wait_for(condition, timeout: float = 120.0, step: float = 0.02) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(step)
    return False


def scanned(db) -> int:
    try:
        return int(value(db, "SELECT COUNT(*) FROM MDBATCH_SCANNED") or 0)
    except Exception:  # noqa: BLE001 - the table may not exist yet
        return 0


def test_a_killed_audit_is_abandoned_and_resumes_to_an_identical_catalog(make_campaign, tmp_path):
    camp = make_campaign(300, seed=61, faults=True)
    db = tmp_path / "c.db"
    proc = start_audit(camp.dest, db, "--batch-size", "2", "--workers", "2")
    assert wait_for(lambda: scanned(db) >= 20 or proc.poll() is not None)
    workers = children_of(proc.pid, db)
    assert proc.poll() is None and len(workers) == 2  # the kill lands mid-audit, with both workers alive
    proc.kill()
    proc.wait(timeout=30)
    assert wait_for(lambda: not alive(workers), timeout=10), f"workers outlived their client: {alive(workers)}"

    assert rows(db, "SELECT status FROM MDBATCH_RUNS") == [("running",)]  # nothing ran since
    listing = mdbatch("runs", "list", "--db", f"sqlite:///{db}", "--output", tmp_path / "runs.json")
    assert listing.returncode == 0, listing.stderr
    runs = [json.loads(line) for line in (tmp_path / "runs.json").read_text().splitlines()]
    assert [r["status"] for r in runs] == ["abandoned"]
    # The summary it committed with its last batch matches the catalog exactly.
    summary = json.loads(value(db, "SELECT summary FROM MDBATCH_RUNS"))
    assert summary["outcome"] == "abandoned" and "is gone" in summary["abandoned"]["reason"]
    assert summary["simulations"] == scanned(db) == value(db, "SELECT COUNT(*) FROM MDBATCH_SIMULATIONS")

    resumed = mdbatch(
        "audit", camp.dest, "--db", f"sqlite:///{db}", "--quiet", "--no-dashboard", "--resume", "last", "--json", tmp_path / "s.json"
    )
    assert resumed.returncode == 1, resumed.stderr
    final = json.loads((tmp_path / "s.json").read_text())
    assert final["outcome"] == "completed" and final["simulations"] == 300 and final["files"] == camp.files
    clean_db = tmp_path / "clean.db"
    clean = audit(camp.dest, db=f"sqlite:///{clean_db}", cluster=ClusterOptions(workers=2, dashboard=False), progress=False)
    assert final["findings"] == clean.summary["findings"] and final["status"] == clean.summary["status"]
    assert catalog_snapshot(db, final["run_id"]) == catalog_snapshot(clean_db, clean.run_id)
    assert rows(db, "SELECT status FROM MDBATCH_RUNS") == [("completed",)]


@pytest.mark.parametrize("delay", [0.3, 0.8, 1.5, 3.0])
def test_no_process_outlives_a_client_killed_at_any_instant(make_campaign, tmp_path, delay):
    camp = make_campaign(200, seed=62)
    db = tmp_path / "c.db"
    proc = start_audit(camp.dest, db, "--batch-size", "4", "--workers", "2")
    seen: set[int] = set()
    deadline = time.monotonic() + delay
    while time.monotonic() < deadline and proc.poll() is None:
        seen |= children_of(proc.pid, db)
        time.sleep(0.01)
    seen |= children_of(proc.pid, db)
    proc.kill()
    proc.wait(timeout=30)
    seen |= children_of(proc.pid, db)  # a worker forked in the last instant
    assert wait_for(lambda: not alive(seen | children_of(proc.pid, db)), timeout=10), f"left behind: {alive(seen)}"


def _running_row(run_id: str, host: str, pid: int, beat: datetime) -> dict:
    return {
        "run_id": run_id,
        "command": "audit",
        "root": "/x",
        "arguments": "{}",
        "host": host,
        "version": "0",
        "catalog": "",
        "started_at": beat,
        "status": "running",
        "pid": pid,
        "heartbeat_at": beat,
    }


def test_abandoned_runs_are_told_by_process_or_by_heartbeat(tmp_path):
    url = f"sqlite:///{tmp_path / 'c.db'}"
    now = datetime.now(UTC)
    here = socket.gethostname()
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    stale = now - timedelta(seconds=ABANDON_AFTER_S + 60)
    with open_catalog(url) as catalog:
        catalog.init_schema()
        catalog.apply(
            [
                Upsert(
                    schema.RUNS.name,
                    rows_table(
                        schema.RUNS,
                        [
                            _running_row("here-alive", here, os.getpid(), now),  # this process: alive
                            _running_row("here-dead", here, dead.pid, now),  # its process is gone
                            _running_row("there-fresh", "elsewhere.example", 12345, now),  # another host, recent heartbeat
                            _running_row("there-stale", "elsewhere.example", 12345, stale),  # another host, silent too long
                        ],
                    ),
                )
            ]
        )
        assert sorted(reap_abandoned(catalog)) == ["here-dead", "there-stale"]
        assert reap_abandoned(catalog) == []
    status = dict(rows(tmp_path / "c.db", "SELECT run_id, status FROM MDBATCH_RUNS"))
    assert status == {"here-alive": "running", "here-dead": "abandoned", "there-fresh": "running", "there-stale": "abandoned"}
    ended = value(tmp_path / "c.db", "SELECT ended_at FROM MDBATCH_RUNS WHERE run_id = 'there-stale'")
    assert ended is not None


def test_a_running_audit_beats_and_a_second_audit_of_its_root_is_refused(make_campaign, tmp_path, monkeypatch):
    camp = make_campaign(200, seed=63)
    db = tmp_path / "c.db"
    proc = start_audit(camp.dest, db, "--batch-size", "2", "--workers", "1")
    try:
        assert wait_for(lambda: scanned(db) >= 4 or proc.poll() is not None)
        assert proc.poll() is None
        beat = value(db, "SELECT heartbeat_at FROM MDBATCH_RUNS")
        assert wait_for(lambda: value(db, "SELECT heartbeat_at FROM MDBATCH_RUNS") != beat, timeout=30)
        second = mdbatch("audit", camp.dest, "--db", f"sqlite:///{db}", "--quiet", "--no-dashboard")
        assert second.returncode == 2
        assert f"another audit of {camp.dest} is running" in second.stderr and len(second.stderr.strip().splitlines()) == 1
        statuses = sorted(s for (s,) in rows(db, "SELECT status FROM MDBATCH_RUNS"))
        assert statuses == ["refused", "running"]
    finally:
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=120)
    assert proc.returncode == 3, err
    assert sorted(s for (s,) in rows(db, "SELECT status FROM MDBATCH_RUNS")) == ["interrupted", "refused"]
