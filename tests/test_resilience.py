"""What clusters do to jobs: SIGTERM before the walltime, then --resume; a worker killed mid-run."""

from __future__ import annotations

import json
import logging
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time

import pytest

from mdbatch.auditing import audit
from mdbatch.engine import ClusterOptions

from .signals import signal_held

pytestmark = pytest.mark.integration


def count(db, sql: str) -> int:
    try:
        with sqlite3.connect(db, timeout=30) as conn:
            return int(conn.execute(sql).fetchone()[0])
    except sqlite3.OperationalError:
        return 0


def catalog_snapshot(db, run_id: str | None = None):
    with sqlite3.connect(db) as conn:
        files = conn.execute("SELECT simulation, path, size, xxh3_128, sha256 FROM MDBATCH_FILES ORDER BY 1, 2").fetchall()
        where = f"WHERE run_id = '{run_id}'" if run_id else ""
        found = conn.execute(f"SELECT simulation, kind, item, detail FROM MDBATCH_FINDINGS {where} ORDER BY 1, 2, 3").fetchall()
        systems = conn.execute("SELECT hash, status, simulation_type, directory FROM RUN_DATABASE ORDER BY 1").fetchall()
        overview = conn.execute("SELECT hash, item_type, item_name, status, row_count FROM ANALYSIS_OVERVIEW ORDER BY 1, 2, 3").fetchall()
    return files, found, systems, overview


def test_sigterm_saves_completed_batches_and_resume_finishes(make_campaign, tmp_path):
    result = make_campaign(500, seed=31, faults=True)
    db = tmp_path / "c.db"
    summary = tmp_path / "s.json"
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
        "--json",
        str(summary),
        "--no-dashboard",
    ]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, stdin=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while count(db, "SELECT COUNT(*) FROM MDBATCH_SCANNED") < 20 and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.02)
    assert proc.poll() is None, "the audit ended before it could be signalled"
    signal_held(proc.pid, signal.SIGTERM)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 3, err
    assert "--resume" in err and "Traceback" not in err
    first = json.loads(summary.read_text())
    assert first["outcome"] == "interrupted" and 20 <= first["simulations"] < 500
    run_id = first["run_id"]
    with sqlite3.connect(db) as conn:
        assert conn.execute("SELECT status FROM MDBATCH_RUNS").fetchall() == [("interrupted",)]
        # Everything the summary counted is in the catalog, and nothing more.
        assert conn.execute("SELECT COUNT(*) FROM MDBATCH_SCANNED").fetchone()[0] == first["simulations"]
        assert conn.execute("SELECT COUNT(DISTINCT simulation) FROM MDBATCH_FILES").fetchone()[0] == first["simulations"]

    resumed = subprocess.run([*cmd, "--resume", "last"], capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 1, resumed.stderr
    final = json.loads(summary.read_text())
    assert final["run_id"] == run_id and final["outcome"] == "completed"
    assert final["simulations"] == 500 and final["files"] == result.files

    clean_db = tmp_path / "clean.db"
    clean = audit(result.dest, db=f"sqlite:///{clean_db}", cluster=ClusterOptions(workers=2, dashboard=False), progress=False)
    assert final["findings"] == clean.summary["findings"] and final["status"] == clean.summary["status"]
    assert catalog_snapshot(db, run_id) == catalog_snapshot(clean_db, clean.run_id)
    with sqlite3.connect(db) as conn:
        assert conn.execute("SELECT status FROM MDBATCH_RUNS").fetchall() == [("completed",)]
        assert conn.execute("SELECT COUNT(*) FROM MDBATCH_SCANNED").fetchone()[0] == 0
        # A first audit records no change, in however many legs it ran.
        assert conn.execute("SELECT COUNT(*) FROM MDBATCH_CHANGES").fetchone()[0] == 0
    assert final["first_audit"] is True and final["changes"]["summary"].startswith("First audit")


def test_resume_refuses_completed_runs(make_campaign, tmp_path):
    result = make_campaign(5, seed=32)
    db = f"sqlite:///{tmp_path / 'c.db'}"
    audit(result.dest, db=db, cluster=ClusterOptions(workers=1, dashboard=False), progress=False)
    proc = subprocess.run(
        [sys.executable, "-m", "mdbatch", "audit", str(result.dest), "--db", db, "--resume", "last", "--quiet"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2 and "nothing to resume" in proc.stderr


def test_killed_worker_changes_nothing(make_campaign, tmp_path):
    from distributed import Client, LocalCluster

    result = make_campaign(300, seed=33, faults=True)
    reference_db = tmp_path / "ref.db"
    ref = audit(result.dest, db=f"sqlite:///{reference_db}", cluster=ClusterOptions(workers=2, dashboard=False), progress=False)

    db = tmp_path / "killed.db"
    with LocalCluster(
        n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1", dashboard_address=None, silence_logs=logging.CRITICAL
    ) as cluster:
        with Client(cluster) as client:
            pids = list(client.run(os.getpid).values())
        box: dict[str, object] = {}

        def run() -> None:
            box["result"] = audit(
                result.dest, db=f"sqlite:///{db}", cluster=ClusterOptions(scheduler=cluster.scheduler_address), batch_size=2, progress=False
            )

        worker = threading.Thread(target=run)
        worker.start()
        deadline = time.monotonic() + 120
        while count(db, "SELECT COUNT(*) FROM MDBATCH_SCANNED") < 10 and time.monotonic() < deadline:
            time.sleep(0.01)
        # The kill lands mid-audit: the audit is running, the worker alive, most of the campaign still to scan.
        assert worker.is_alive() and count(db, "SELECT COUNT(*) FROM MDBATCH_SCANNED") < 150
        os.kill(pids[0], 0)
        os.kill(pids[0], signal.SIGKILL)
        worker.join(300)
        assert not worker.is_alive()
    got = box["result"]
    assert got.summary["outcome"] == "completed"
    assert got.summary["simulations"] == 300 and got.summary["findings"] == ref.summary["findings"]
    assert catalog_snapshot(db, got.run_id) == catalog_snapshot(reference_db, ref.run_id)
