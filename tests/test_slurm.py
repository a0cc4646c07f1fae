"""mdbatch on a real Slurm: dask-jobqueue worker jobs, and one allocation running Dask via srun.

Needs the local single-node Slurm of deploy/slurm/local-test-cluster.sh (.ci/run starts it and
exports SLURM_CONF). Skips locally without it; fails under CI=true.
"""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from mdbatch.audit import audit
from mdbatch.engine import ClusterOptions

from .conftest import need_service
from .test_resilience import catalog_snapshot

pytestmark = pytest.mark.integration
REPO = Path(__file__).resolve().parents[1]


def slurm_available() -> bool:
    if not shutil.which("sbatch") or not os.environ.get("SLURM_CONF"):
        return False
    try:
        out = subprocess.run(["sinfo", "-h", "-o", "%t"], capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return out.returncode == 0 and any(s.strip() in ("idle", "mix", "alloc") for s in out.stdout.split())


@pytest.fixture
def slurm() -> None:
    need_service(slurm_available(), "no local Slurm (run deploy/slurm/local-test-cluster.sh start and eval its env)")


def local_reference(result, tmp_path):
    db = tmp_path / "local.db"
    ref = audit(result.dest, db=f"sqlite:///{db}", cluster=ClusterOptions(workers=2, dashboard=False), progress=False)
    return db, ref


def test_audit_with_slurm_worker_jobs_matches_local(slurm, make_campaign, tmp_path):
    result = make_campaign(40, seed=41, faults=True)
    db = tmp_path / "slurm.db"
    proc = subprocess.run(
        [sys.executable, "-m", "mdbatch", "audit", str(result.dest), "--db", f"sqlite:///{db}", "--cluster", "slurm",
         "--jobs", "1", "--cores", "1", "--memory", "1GB", "--walltime", "00:10:00", "--interface", "lo",
         "--jobqueue-config", str(REPO / "deploy" / "jobqueue.yaml"), "--job-extra=--comment=mdbatch-test",
         "--json", str(tmp_path / "s.json"), "--quiet"],
        capture_output=True, text=True, timeout=300, cwd=tmp_path, stdin=subprocess.DEVNULL,
    )
    assert proc.returncode == 1, proc.stderr
    ref_db, ref = local_reference(result, tmp_path)

    run_id = json.loads((tmp_path / "s.json").read_text())["run_id"]
    assert catalog_snapshot(db, run_id) == catalog_snapshot(ref_db, ref.run_id)


def test_one_allocation_with_srun_and_scheduler_file(slurm, make_campaign, tmp_path):
    result = make_campaign(30, seed=42, faults=True)
    db = tmp_path / "alloc.db"
    env = {**os.environ, "MDBATCH_DB": f"sqlite:///{db}", "MDBATCH_INTERFACE": "lo", "PYTHON": sys.executable, "TMPDIR": str(tmp_path)}
    job = subprocess.run(
        ["sbatch", "--parsable", "--export=ALL", f"--chdir={tmp_path}", str(REPO / "deploy" / "slurm" / "audit-allocation.sbatch"), str(result.dest)],
        capture_output=True, text=True, env=env, timeout=60, check=True,
    ).stdout.strip().split(";")[0]
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline:
        if not subprocess.run(["squeue", "-h", "-j", job], capture_output=True, text=True).stdout.strip():
            break
        time.sleep(0.5)
    else:
        subprocess.run(["scancel", job])
        pytest.fail(f"job {job} did not finish")
    log = (tmp_path / f"mdbatch-alloc-{job}.log").read_text()
    summary = tmp_path / f"mdbatch-summary-{job}.json"
    assert summary.exists(), log

    got = json.loads(summary.read_text())
    ref_db, ref = local_reference(result, tmp_path)
    assert got["outcome"] == "completed" and got["findings"] == ref.summary["findings"], log
    assert catalog_snapshot(db, got["run_id"]) == catalog_snapshot(ref_db, ref.run_id)
    findings = (tmp_path / f"mdbatch-findings-{job}.jsonl").read_text().splitlines()
    assert len(findings) == ref.summary["findings_total"]


_FINAL_STATES = {"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY", "BOOT_FAIL", "DEADLINE", "PREEMPTED"}


def _job_state(job: str) -> dict[str, str]:
    out = subprocess.run(["scontrol", "-o", "show", "job", job], capture_output=True, text=True, timeout=20).stdout
    return dict(field.split("=", 1) for field in out.split() if "=" in field)


def test_walltime_signal_requeues_the_job_and_resume_finishes(slurm, make_campaign, tmp_path):
    """What Slurm does before a walltime (--signal=B:USR1): the batch shell forwards USR1, mdbatch
    saves its completed batches and exits 3, the script requeues itself, and the restarted job
    continues the same run with --resume last; the catalog equals an undisturbed local run."""
    result = make_campaign(300, seed=43, faults=True)
    db = tmp_path / "requeue.db"
    env = {**os.environ, "MDBATCH_DB": f"sqlite:///{db}", "MDBATCH_INTERFACE": "lo", "PYTHON": sys.executable, "TMPDIR": str(tmp_path)}
    job = subprocess.run(
        ["sbatch", "--parsable", "--export=ALL", f"--chdir={tmp_path}", str(REPO / "deploy" / "slurm" / "audit-allocation.sbatch"),
         str(result.dest), "--batch-size", "1", "--no-dashboard"],
        capture_output=True, text=True, env=env, timeout=60, check=True,
    ).stdout.strip().split(";")[0]
    log = tmp_path / f"mdbatch-alloc-{job}.log"
    try:
        from .test_resilience import count

        deadline = time.monotonic() + 180
        while count(db, "SELECT COUNT(*) FROM MDBATCH_SCANNED") < 20:
            assert time.monotonic() < deadline, "the audit did not get going"
            assert _job_state(job).get("JobState") in ("PENDING", "RUNNING", "CONFIGURING"), log.read_text()
            time.sleep(0.1)
        subprocess.run(["scancel", "--signal=USR1", "--batch", job], check=True, timeout=20)
        deadline = time.monotonic() + 120
        while not ((state := _job_state(job)).get("Restarts", "0") != "0" and state.get("JobState") == "PENDING"):
            assert time.monotonic() < deadline, f"job {job} was not requeued: {log.read_text() if log.exists() else ''}"
            time.sleep(0.2)
        with sqlite3.connect(db) as conn:
            (status,) = conn.execute("SELECT status FROM MDBATCH_RUNS").fetchone()
            scanned = conn.execute("SELECT COUNT(*) FROM MDBATCH_SCANNED").fetchone()[0]
        assert status == "interrupted" and 20 <= scanned < 300
        # Slurm holds a requeued job back for a while (Reason=BeginTime); let it start now, and
        # again if an update raced the requeue. Not within the second of the requeue: slurmd
        # refuses a credential created in the second its predecessor was revoked ("Killing
        # non-startable batch job: Job credential revoked"), which is what the hold protects.
        # Done is a final JobState (exit 1: findings), never an empty answer: a squeue or
        # scontrol hiccup must not pass for the end.
        time.sleep(2.5)
        deadline = time.monotonic() + 240
        while (state := _job_state(job)).get("JobState") not in _FINAL_STATES:
            assert time.monotonic() < deadline, f"job {job} did not finish after its requeue: {state}"
            if state.get("JobState") == "PENDING" and state.get("Reason") == "BeginTime":
                subprocess.run(["scontrol", "update", f"JobId={job}", "StartTime=now"], capture_output=True, timeout=20)
            time.sleep(0.5)
    finally:
        subprocess.run(["scancel", job], capture_output=True)
    text = log.read_text()
    assert "requeueing job" in text, text
    got = json.loads((tmp_path / f"mdbatch-summary-{job}.json").read_text())
    ref_db, ref = local_reference(result, tmp_path)
    assert got["outcome"] == "completed" and got["simulations"] == 300, text
    with sqlite3.connect(db) as conn:  # the same run, continued: not a second one
        assert conn.execute("SELECT run_id, status FROM MDBATCH_RUNS").fetchall() == [(got["run_id"], "completed")]
    assert got["findings"] == ref.summary["findings"]
    assert catalog_snapshot(db, got["run_id"]) == catalog_snapshot(ref_db, ref.run_id)
