"""The shipped sbatch scripts on a real Slurm, submitted as docs/slurm.md shows, through walltime signals.

Each test submits deploy/slurm/audit-driver.sbatch (pattern 1: dask-jobqueue worker jobs) or
deploy/slurm/audit-allocation.sbatch (pattern 2: Dask under srun in one allocation) with `sbatch`
from a directory holding `deploy/` (a link to this repository's), settings in the environment,
sends the batch shell what Slurm sends before a walltime (`scancel --signal=USR1 --batch`), lets the
requeued job start again, and checks the job ends with one completed run whose catalog equals an
undisturbed local audit and whose findings file holds every finding of the campaign.

Needs the local single-node Slurm of deploy/slurm/local-test-cluster.sh (.ci/run starts it and
exports SLURM_CONF). Skips locally without it; fails under CI=true.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from mdbatch.auditing import audit
from mdbatch.engine import ClusterOptions
from mdbatch.generate import GenerateResult, generate_campaign

from .conftest import expected, need_service
from .signals import signal_held
from .test_resilience import catalog_snapshot, count

pytestmark = [pytest.mark.integration, pytest.mark.slow]
REPO = Path(__file__).resolve().parents[1]
DRIVER = "deploy/slurm/audit-driver.sbatch"
ALLOCATION = "deploy/slurm/audit-allocation.sbatch"
SIMS = 160
FINAL_STATES = {"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY", "BOOT_FAIL", "DEADLINE", "PREEMPTED"}
#: Worker jobs of pattern 1 on the 2-core test node: one single-process core (the yaml asks for 4).
WORKER_OPTIONS = ("--cores", "1", "--processes", "1", "--memory", "1GB", "--interface", "lo")


def slurm_available() -> bool:
    if not shutil.which("sbatch") or not os.environ.get("SLURM_CONF"):
        return False
    try:
        out = subprocess.run(["sinfo", "-h", "-o", "%t"], capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return out.returncode == 0 and any(s.strip() in ("idle", "mix", "alloc") for s in out.stdout.split())


@dataclass(frozen=True)
class Reference:
    """The campaign every test audits (jobs only read it) and its undisturbed local audit."""

    result: GenerateResult
    db: Path
    run_id: str


@pytest.fixture(scope="module")
def campaign(tmp_path_factory: pytest.TempPathFactory) -> Reference:
    need_service(slurm_available(), "no local Slurm (run deploy/slurm/local-test-cluster.sh start and eval its env)")
    base = tmp_path_factory.mktemp("slurm-campaign")
    result = generate_campaign(base / "campaign", SIMS, seed=43, faults=True)
    db = base / "local.db"
    ref = audit(result.dest, db=f"sqlite:///{db}", cluster=ClusterOptions(workers=2, dashboard=False), progress=False)
    return Reference(result, db, ref.run_id)


def job_state(job: str) -> dict[str, str]:
    """`scontrol show job` as a dict (empty when the job is unknown)."""
    out = subprocess.run(["scontrol", "-o", "show", "job", job], capture_output=True, text=True, timeout=20).stdout
    return dict(field.split("=", 1) for field in out.split() if "=" in field)


def wait_until(what: str, ready: Callable[[], bool], timeout: float, why: Callable[[], str] = lambda: "") -> None:
    """Poll `ready` until it holds; fail naming `what` (and `why()`) after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not ready():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}: {why()}")
        time.sleep(0.1)


@dataclass
class Job:
    """A submitted batch job of one of the shipped scripts, and the directory it runs in."""

    id: str
    workdir: Path
    log: Path
    requeued_at: list[float] = field(default_factory=list)

    @property
    def db(self) -> Path:
        return self.workdir / "mdbatch.db"  # the scripts' default catalog, sqlite:///$PWD/mdbatch.db

    def state(self) -> dict[str, str]:
        return job_state(self.id)

    def text(self) -> str:
        return self.log.read_text() if self.log.exists() else "(no log yet)"

    def running(self) -> bool:
        """Whether the job is still running its leg (fails at once if it ended)."""
        state = self.state().get("JobState")
        if state in FINAL_STATES:
            pytest.fail(f"job {self.id} ended {state} before the test signalled it:\n{self.text()}")
        return state == "RUNNING"

    def signal(self) -> None:
        """What Slurm does before the walltime (--signal=B:USR1@300): SIGUSR1 to the batch shell only."""
        subprocess.run(["scancel", "--signal=USR1", "--batch", self.id], check=True, timeout=20)

    def signal_mid_audit(self, root: Path, written: int = 20) -> None:
        """USR1 once `written` simulations are in the catalog, while the audit cannot finish meanwhile.

        A campaign of this size is audited in seconds, faster than Slurm relays a signal on a loaded
        machine, so the audit's client is stopped (SIGSTOP) from the moment `written` is reached until
        the signal the batch shell forwards is pending on it (/proc/PID/status), then continued: it
        handles the signal before it can write more than the batches already on their way.
        """
        wait_until(
            f"{written} simulations written",
            lambda: self.running() and count(self.db, "SELECT COUNT(*) FROM MDBATCH_SCANNED") >= written,
            150,
            self.text,
        )
        pattern = f"-m mdbatch audit {root} "
        pids = subprocess.run(["pgrep", "-f", "--", pattern], capture_output=True, text=True, timeout=20).stdout.split()
        assert len(pids) == 1, f"one audit client expected, found {pids}:\n{self.text()}"
        signal_held(int(pids[0]), signal.SIGUSR1, send=self.signal)

    def wait_requeued(self, restarts: int = 1) -> None:
        """Until the job is pending again after its `restarts`-th requeue."""

        def requeued() -> bool:
            state = self.state()
            assert state.get("JobState") not in FINAL_STATES, f"job {self.id} ended instead of requeueing:\n{self.text()}"
            return state.get("Restarts") == str(restarts) and state.get("JobState") == "PENDING"

        wait_until(f"job {self.id} to requeue", requeued, 90, self.text)
        self.requeued_at.append(time.monotonic())

    def finish(self, timeout: float = 180) -> dict[str, str]:
        """Let the requeued job start now instead of after Slurm's hold, and wait for its final state.

        Not within the second of the requeue: slurmd refuses a job whose credential was created in the
        second its predecessor's was revoked ("Job credential revoked"), which the hold guards against.
        """
        if self.requeued_at:
            time.sleep(max(0.0, self.requeued_at[-1] + 2.5 - time.monotonic()))
        deadline = time.monotonic() + timeout
        while (state := self.state()).get("JobState") not in FINAL_STATES:
            assert time.monotonic() < deadline, f"job {self.id} did not finish: {state}\n{self.text()}"
            if state.get("JobState") == "PENDING" and state.get("Reason") == "BeginTime":
                subprocess.run(["scontrol", "update", f"JobId={self.id}", "StartTime=now"], capture_output=True, timeout=20)
            time.sleep(0.3)
        return state


def submit(
    script: str, root: Path, workdir: Path, *audit_args: str, sbatch_args: tuple[str, ...] = (), env: dict[str, str] | None = None
) -> Job:
    """`sbatch [sbatch_args] deploy/slurm/SCRIPT ROOT [audit_args]` run from `workdir`, as docs/slurm.md shows.

    The environment is the user's with the venv's bin first (what the scripts' "Site setup" does
    with `source venv/bin/activate`); TMPDIR keeps scheduler files and worker scratch in `workdir`.
    """
    (workdir / "deploy").symlink_to(REPO / "deploy")
    environ = {
        **os.environ,
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
        "TMPDIR": str(workdir),
        **(env or {}),
    }
    out = subprocess.run(
        ["sbatch", "--parsable", *sbatch_args, script, str(root), *audit_args],
        capture_output=True,
        text=True,
        env=environ,
        cwd=workdir,
        timeout=60,
        check=True,
    )
    job = out.stdout.strip().split(";")[0]
    name = "mdbatch-audit" if script == DRIVER else "mdbatch-alloc"
    return Job(job, workdir, workdir / f"{name}-{job}.log")


def tagged_jobs(tag: str) -> list[tuple[str, str]]:
    """(job id, state) of the jobs in squeue whose comment is `tag` (pattern 1's worker jobs)."""
    out = subprocess.run(["squeue", "-h", "-o", "%i|%T|%k"], capture_output=True, text=True, timeout=20, check=True).stdout
    return [(job, state) for job, state, comment in (line.split("|", 2) for line in out.splitlines()) if comment.strip() == tag]


@pytest.fixture
def cleanup() -> Iterator[list[str]]:
    """Job ids to cancel when the test ends, whatever happened."""
    jobs: list[str] = []
    yield jobs
    if jobs:
        subprocess.run(["scancel", *jobs], capture_output=True, timeout=30)


def runs(db: Path) -> list[tuple[str, str]]:
    with sqlite3.connect(db) as conn:
        return conn.execute("SELECT run_id, status FROM MDBATCH_RUNS ORDER BY started_at").fetchall()


def check_completed_like_undisturbed(
    job: Job, final: dict[str, str], ref: Reference, *, restarts: int = 1, by_script: int = 1, exit_code: str = "0:0"
) -> None:
    """The job ended after `restarts` requeues (`by_script` of them by the script itself) with exactly
    one run, completed, whose catalog is an undisturbed local audit's and whose findings file holds
    every finding of the campaign once."""
    text = job.text()
    assert (final.get("JobState"), final.get("ExitCode"), final.get("Restarts")) == (
        "COMPLETED" if exit_code == "0:0" else "FAILED",
        exit_code,
        str(restarts),
    ), text
    assert text.count(f"requeueing job {job.id}") == by_script, text
    summary = json.loads((job.workdir / f"mdbatch-summary-{job.id}.json").read_text())
    assert (summary["outcome"], summary["simulations"], summary["files"]) == ("completed", SIMS, ref.result.files), text
    assert runs(job.db) == [(summary["run_id"], "completed")], text
    assert catalog_snapshot(job.db, summary["run_id"]) == catalog_snapshot(ref.db, ref.run_id)
    lines = (job.workdir / f"mdbatch-findings-{job.id}.jsonl").read_text().splitlines()
    found = sorted((f["simulation"], f["kind"], f["item"]) for f in map(json.loads, lines))
    assert found == sorted(expected(ref.result))


def test_driver_walltime_signal_mid_audit_requeues_and_completes(campaign, tmp_path, cleanup):
    """Pattern 1 as documented (MDBATCH_JOBS worker jobs, jobqueue.yaml found next to the script):
    USR1 mid-audit saves the written batches, cancels the worker job, requeues; the next leg
    continues the same run to the end; a job with findings ends COMPLETED (MDBATCH_FINDINGS_EXIT=0)."""
    tag = f"mdbatch-test-{uuid.uuid4().hex[:8]}"
    job = submit(
        DRIVER,
        campaign.result.dest,
        tmp_path,
        *WORKER_OPTIONS,
        f"--job-extra=--comment={tag}",
        "--batch-size",
        "1",
        "--no-dashboard",
        sbatch_args=("--cpus-per-task=1",),
        env={"MDBATCH_JOBS": "1"},
    )
    cleanup.append(job.id)
    job.signal_mid_audit(campaign.result.dest)
    job.wait_requeued()
    scanned = count(job.db, "SELECT COUNT(*) FROM MDBATCH_SCANNED")
    assert [status for _, status in runs(job.db)] == ["interrupted"] and 20 <= scanned < SIMS, job.text()
    assert tagged_jobs(tag) == [], "a worker job outlived the interrupted leg"
    final = job.finish()
    assert tagged_jobs(tag) == []
    check_completed_like_undisturbed(job, final, campaign)


def test_allocation_walltime_signal_mid_audit_requeues_and_completes(campaign, tmp_path, cleanup):
    """Pattern 2 as documented (MDBATCH_INTERFACE, Dask under srun): the same walltime cycle."""
    job = submit(ALLOCATION, campaign.result.dest, tmp_path, "--batch-size", "1", "--no-dashboard", env={"MDBATCH_INTERFACE": "lo"})
    cleanup.append(job.id)
    job.signal_mid_audit(campaign.result.dest)
    job.wait_requeued()
    scanned = count(job.db, "SELECT COUNT(*) FROM MDBATCH_SCANNED")
    assert [status for _, status in runs(job.db)] == ["interrupted"] and 20 <= scanned < SIMS, job.text()
    final = job.finish()
    check_completed_like_undisturbed(job, final, campaign)


def test_driver_signal_while_its_worker_job_is_pending(campaign, tmp_path, cleanup):
    """USR1 while the driver waits for a worker job that cannot start (the node's other core is taken):
    the worker job is cancelled, never orphaned; the run is recorded interrupted with nothing
    scanned, and the requeued job continues it to the end. MDBATCH_FINDINGS_EXIT=1 makes a job
    whose audit found something end FAILED with exit code 1."""
    blocker = (
        subprocess.run(
            ["sbatch", "--parsable", "--cpus-per-task=1", "--mem=100M", "--output=/dev/null", "--wrap", "sleep 600"],
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
            cwd=tmp_path,
        )
        .stdout.strip()
        .split(";")[0]
    )
    cleanup.append(blocker)
    wait_until("the blocker job to run", lambda: job_state(blocker).get("JobState") == "RUNNING", 60)
    tag = f"mdbatch-test-{uuid.uuid4().hex[:8]}"
    job = submit(
        DRIVER,
        campaign.result.dest,
        tmp_path,
        *WORKER_OPTIONS,
        f"--job-extra=--comment={tag}",
        "--no-dashboard",
        sbatch_args=("--cpus-per-task=1",),
        env={"MDBATCH_JOBS": "1", "MDBATCH_FINDINGS_EXIT": "1"},
    )
    cleanup.append(job.id)
    wait_until("a pending worker job", lambda: job.running() and [s for _, s in tagged_jobs(tag)] == ["PENDING"], 120, job.text)
    [(worker, _)] = tagged_jobs(tag)
    cleanup.append(worker)
    job.signal()
    job.wait_requeued()
    assert tagged_jobs(tag) == [] and job_state(worker).get("JobState") == "CANCELLED", job.text()
    assert [status for _, status in runs(job.db)] == ["interrupted"], job.text()
    assert count(job.db, "SELECT COUNT(*) FROM MDBATCH_SCANNED") == 0
    subprocess.run(["scancel", blocker], check=True, timeout=20)
    final = job.finish()
    assert tagged_jobs(tag) == []
    check_completed_like_undisturbed(job, final, campaign, exit_code="1:0")
    assert "the audit found problems (--fail-on any;" in job.text()  # MDBATCH_FINDINGS_EXIT=1 alone: --fail-on any


def test_allocation_signal_as_the_job_starts(campaign, tmp_path, cleanup):
    """USR1 the moment the batch shell starts (before Dask or mdbatch run): the job requeues, and
    its next leg audits the campaign to the end (nothing was recorded, so a new run)."""
    job = submit(ALLOCATION, campaign.result.dest, tmp_path, "--no-dashboard", env={"MDBATCH_INTERFACE": "lo"})
    cleanup.append(job.id)
    wait_until("the job to start", lambda: f"mdbatch: job {job.id}, leg 0" in job.text(), 60, job.text)
    job.signal()
    job.wait_requeued()
    assert not job.db.exists() or runs(job.db) == [], job.text()
    final = job.finish()
    check_completed_like_undisturbed(job, final, campaign)


def test_allocation_signal_as_mdbatch_starts(campaign, tmp_path, cleanup):
    """USR1 the moment the script launches mdbatch: it lands while Python starts (mdbatch dies of it,
    exit 138) or just after mdbatch handles it (exit 3, nothing or an empty run recorded); either way
    the job requeues and its next leg audits the campaign to the end, in one run. MDBATCH_FAIL_ON=none
    wins over MDBATCH_FINDINGS_EXIT=1: the job whose audit found something ends COMPLETED."""
    job = submit(
        ALLOCATION,
        campaign.result.dest,
        tmp_path,
        "--no-dashboard",
        env={"MDBATCH_INTERFACE": "lo", "MDBATCH_FAIL_ON": "none", "MDBATCH_FINDINGS_EXIT": "1"},
    )
    cleanup.append(job.id)
    wait_until("mdbatch to start", lambda: "mdbatch: starting a new audit" in job.text(), 60, job.text)
    job.signal()
    job.wait_requeued()
    final = job.finish()
    check_completed_like_undisturbed(job, final, campaign)


def test_allocation_mdbatch_killed_then_job_requeued_by_hand_resumes_its_run(campaign, tmp_path, cleanup):
    """mdbatch SIGKILLed mid-audit (OOM killer, node lost) cannot record its end: the job fails with
    137 and is not requeued by the script; `scontrol requeue` by hand makes a next leg that resumes
    the run it left `running` instead of starting over."""
    job = submit(ALLOCATION, campaign.result.dest, tmp_path, "--batch-size", "1", "--no-dashboard", env={"MDBATCH_INTERFACE": "lo"})
    cleanup.append(job.id)
    wait_until(
        "20 simulations written", lambda: job.running() and count(job.db, "SELECT COUNT(*) FROM MDBATCH_SCANNED") >= 20, 150, job.text
    )
    with sqlite3.connect(job.db, timeout=30) as conn:
        [(run_id, pid)] = conn.execute("SELECT run_id, pid FROM MDBATCH_RUNS WHERE status = 'running'").fetchall()
    os.kill(pid, signal.SIGKILL)
    wait_until(f"job {job.id} to fail", lambda: job.state().get("JobState") == "FAILED", 60, job.text)
    assert job.state().get("ExitCode") == "137:0" and runs(job.db) == [(run_id, "running")], job.text()
    subprocess.run(["scontrol", "requeue", job.id], check=True, timeout=20)
    job.wait_requeued()
    final = job.finish()
    assert f"mdbatch: resuming run {run_id}" in job.text()
    check_completed_like_undisturbed(job, final, campaign, by_script=0)
