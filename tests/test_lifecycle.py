"""One run's lifecycle (mdbatch/lifecycle.py): stop signals, the MDBATCH_RUNS row a run writes, and
which running runs are abandoned. Real signals, a real fork, a real SQLite catalog read back through
sqlite3. (tests/faults/test_killed_runs.py kills real audits; this file pins the rules.)"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import sqlite3
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest

from mdbatch import lifecycle
from mdbatch.catalog import Delete, Upsert, open_catalog, schema
from mdbatch.catalog.ops import rows_table
from mdbatch.errors import Interrupted, RefusedError
from mdbatch.lifecycle import ABANDON_AFTER_S, RunRecord, Stop, abandoned_reason, process_gone, reap_abandoned
from mdbatch.version import __version__

HERE = socket.gethostname()
ELSEWHERE = "elsewhere.example"


# -- stop signals ----------------------------------------------------------------------------------


@pytest.fixture
def stop() -> Iterator[Stop]:
    """A Stop of its own, handling SIGTERM and SIGUSR1 for the test, then the old dispositions again."""
    before = {sig: signal.getsignal(sig) for sig in lifecycle.STOP_SIGNALS}
    own = Stop()
    assert own.install() and own.installed
    try:
        yield own
    finally:
        own.uninstall()
    assert {sig: signal.getsignal(sig) for sig in lifecycle.STOP_SIGNALS} == before


def signal_self(sig: signal.Signals = signal.SIGUSR1) -> None:
    os.kill(os.getpid(), sig)


def test_a_signal_outside_a_deferred_section_stops_at_once(stop):
    reached = []
    with pytest.raises(Interrupted, match="^stopped by SIGUSR1$"):
        signal_self()
        reached.append("after the signal")
    assert reached == [] and stop.requested == "SIGUSR1"
    assert Interrupted.exit_code == 3


def test_the_stop_is_raised_once_and_the_first_signal_names_it(stop):
    with pytest.raises(Interrupted, match="^stopped by SIGTERM$"):
        signal_self(signal.SIGTERM)
    # The run is stopping (writing what completed, recording its end): later signals do not cut that.
    signal_self(signal.SIGUSR1)
    signal_self(signal.SIGTERM)
    stop.check()
    with stop.deferred():
        pass
    assert stop.requested == "SIGTERM"
    stop.reset()  # the next run in this process starts afresh
    assert stop.requested is None
    with pytest.raises(Interrupted, match="^stopped by SIGUSR1$"):
        signal_self(signal.SIGUSR1)


def test_inside_deferred_sections_the_stop_waits_for_the_outermost_end(stop):
    reached = []
    with pytest.raises(Interrupted, match="^stopped by SIGUSR1$"), stop.deferred():
        signal_self(signal.SIGUSR1)
        reached.append("outer, after the signal")
        with stop.deferred():
            signal_self(signal.SIGTERM)
            reached.append("inner")
        reached.append("outer, after the inner section")
        stop.check()  # still inside: only noted
        reached.append("outer end")
    assert reached == ["outer, after the signal", "inner", "outer, after the inner section", "outer end"]
    with stop.deferred():  # raised once: a later section ends quietly
        signal_self()


def test_an_error_inside_a_deferred_section_keeps_the_stop_pending(stop):
    with pytest.raises(ValueError, match="write failed"), stop.deferred():
        signal_self()
        raise ValueError("write failed")
    with pytest.raises(Interrupted):
        stop.check()


def test_without_a_signal_nothing_is_raised(stop):
    with stop.deferred(), stop.deferred():
        pass
    stop.check()
    assert stop.requested is None


def test_install_twice_and_uninstall_forgets_the_request(stop):
    assert stop.install() is False  # already installed
    with stop.deferred():
        signal_self()
        stop.uninstall()
    assert stop.requested is None and not stop.installed


def test_outside_the_main_thread_the_default_action_stands():
    other = Stop()
    result: list[bool] = []
    thread = threading.Thread(target=lambda: result.append(other.install()))
    thread.start()
    thread.join()
    assert result == [False] and not other.installed


@pytest.mark.parametrize("deferred", [False, True])
def test_a_forked_child_dies_of_the_signal_as_by_default(stop, deferred):
    pid = os.fork()
    if pid == 0:  # the child: a Dask worker forked from the client, with its handler inherited
        try:
            if deferred:
                with stop.deferred():
                    signal_self()
            else:
                signal_self()
            time.sleep(5)
        finally:
            os._exit(0)  # only reached if the signal did not kill it
    _, status = os.waitpid(pid, 0)
    assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGUSR1
    assert stop.requested is None  # the parent saw nothing


# -- the run's row ---------------------------------------------------------------------------------


@pytest.fixture
def catalog(tmp_path: Path) -> Iterator[Any]:
    with open_catalog(f"sqlite:///{tmp_path / 'c.db'}") as cat:
        yield cat


@pytest.fixture
def no_job(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    monkeypatch.delenv("SLURM_JOB_ID", raising=False)
    monkeypatch.delenv("SLURM_RESTART_COUNT", raising=False)
    return monkeypatch


def runs(tmp_path: Path) -> dict[str, dict[str, Any]]:
    """MDBATCH_RUNS through sqlite3, timestamps as aware UTC datetimes, summary and arguments parsed."""
    with sqlite3.connect(tmp_path / "c.db") as conn:
        conn.row_factory = sqlite3.Row
        rows = [dict(r) for r in conn.execute("SELECT * FROM MDBATCH_RUNS")]
    for row in rows:
        for key in ("started_at", "ended_at", "heartbeat_at"):
            if row[key] is not None:
                row[key] = datetime.fromisoformat(row[key]).replace(tzinfo=UTC)
        for key in ("summary", "arguments"):
            if row[key] is not None:
                row[key] = json.loads(row[key])
    return {r["run_id"]: r for r in rows}


def test_start_records_a_running_run_with_host_pid_job_and_redacted_arguments(catalog, tmp_path, no_job):
    no_job.setenv("SLURM_JOB_ID", "4242")
    no_job.setenv("SLURM_RESTART_COUNT", "3")
    before = datetime.now(UTC)
    record = RunRecord.start(
        catalog,
        "audit",
        "/campaign",
        {"db": "postgresql+psycopg://lab:hunter2@db/x", "workers": 2, "func": print, "paths": ["a", "b"], "resume": None},
    )
    after = datetime.now(UTC)
    assert re.fullmatch(r"\d{8}T\d{6}Z-[0-9a-f]{6}", record.run_id)
    row = runs(tmp_path)[record.run_id]
    started, beat = row.pop("started_at"), row.pop("heartbeat_at")
    assert before <= started <= after and before <= beat <= after
    assert row == {
        "run_id": record.run_id,
        "command": "audit",
        "root": "/campaign",
        "arguments": {"db": "postgresql+psycopg://lab:***@db/x", "workers": 2, "paths": ["a", "b"], "resume": None},
        "host": HERE,
        "version": __version__,
        "catalog": catalog.display_url,
        "ended_at": None,
        "status": "running",
        "summary": None,
        "pid": os.getpid(),
        "job": "slurm:4242:3",
    }
    assert record._beat is None  # no URL given: no heartbeat thread


@pytest.mark.parametrize(("job", "restart", "recorded"), [("77", None, "slurm:77:0"), ("77", "", "slurm:77:0"), (None, "2", None)])
def test_the_job_and_leg_recorded(catalog, tmp_path, no_job, job, restart, recorded):
    if job is not None:
        no_job.setenv("SLURM_JOB_ID", job)
    if restart is not None:
        no_job.setenv("SLURM_RESTART_COUNT", restart)
    record = RunRecord.start(catalog, "push analysis", None, prefix="push-")
    assert record.run_id.startswith("push-")
    assert runs(tmp_path)[record.run_id]["job"] == recorded and runs(tmp_path)[record.run_id]["root"] is None


def test_progress_and_finish_write_exactly_their_columns(catalog, tmp_path, no_job):
    record = RunRecord.start(catalog, "audit", "/campaign", {"batch_size": 4})
    first = runs(tmp_path)[record.run_id]
    time.sleep(0.002)
    catalog.apply([record.progress_op({"simulations": 3, "when": datetime(2024, 1, 2, tzinfo=UTC)})])
    second = runs(tmp_path)[record.run_id]
    assert second["summary"] == {"simulations": 3, "when": "2024-01-02 00:00:00+00:00"}
    assert second["heartbeat_at"] > first["heartbeat_at"]
    assert {k: v for k, v in second.items() if k not in ("summary", "heartbeat_at")} == {
        k: v for k, v in first.items() if k not in ("summary", "heartbeat_at")
    }
    time.sleep(0.002)
    catalog.apply([record.progress_op()])  # a heartbeat alone keeps the summary so far
    third = runs(tmp_path)[record.run_id]
    assert third["summary"] == second["summary"] and third["heartbeat_at"] > second["heartbeat_at"]

    catalog.apply([Upsert(schema.SCANNED.name, pa.table({"run_id": [record.run_id] * 2, "simulation": ["s1", "s2"]}))])
    record.finish(
        "completed", {"simulations": 2, "outcome": "completed"}, extra=[Delete(schema.SCANNED.name, pa.table({"run_id": [record.run_id]}))]
    )
    done = runs(tmp_path)[record.run_id]
    assert done["status"] == "completed" and done["summary"] == {"simulations": 2, "outcome": "completed"}
    assert third["heartbeat_at"] <= done["ended_at"] <= done["heartbeat_at"]
    assert (done["started_at"], done["pid"], done["host"], done["arguments"]) == (first["started_at"], os.getpid(), HERE, {"batch_size": 4})
    assert catalog.count_rows(schema.SCANNED.name) == 0  # the extra operation, in the same transaction


def test_the_heartbeat_thread_beats_until_stopped(tmp_path, no_job, monkeypatch):
    monkeypatch.setattr(lifecycle, "HEARTBEAT_S", 0.05)
    url = f"sqlite:///{tmp_path / 'c.db'}"
    with open_catalog(url) as catalog:
        record = RunRecord.start(catalog, "audit", "/campaign", url=url)
        beats = {runs(tmp_path)[record.run_id]["heartbeat_at"]}
        deadline = time.monotonic() + 20
        while len(beats) < 3 and time.monotonic() < deadline:
            time.sleep(0.02)
            beats.add(runs(tmp_path)[record.run_id]["heartbeat_at"])
        assert len(beats) >= 3  # it beat on its own while nothing else was written
        record.stop_heartbeat()
        assert record._beat is None
        last = runs(tmp_path)[record.run_id]["heartbeat_at"]
        time.sleep(0.3)
        assert runs(tmp_path)[record.run_id]["heartbeat_at"] == last


def test_a_second_exclusive_run_of_the_same_root_is_refused(catalog, tmp_path, no_job):
    first = RunRecord.start(catalog, "audit", "/campaign", exclusive=True)
    other_root = RunRecord.start(catalog, "audit", "/elsewhere", exclusive=True)
    other_command = RunRecord.start(catalog, "push analysis", "/campaign", exclusive=True)
    with pytest.raises(RefusedError) as caught:
        RunRecord.start(catalog, "audit", "/campaign", exclusive=True)
    message = (
        f"another audit of /campaign is running (run {first.run_id}, pid {os.getpid()} on {HERE}); wait for it to end, "
        f"or stop it and resume it with --resume {first.run_id}"
    )
    assert str(caught.value) == message
    table = runs(tmp_path)
    refused = [r for r in table.values() if r["status"] == "refused"]
    assert len(refused) == 1 and refused[0]["summary"] == {
        "run_id": refused[0]["run_id"],
        "outcome": "refused",
        "root": "/campaign",
        "reason": message,
    }
    assert {table[r.run_id]["status"] for r in (first, other_root, other_command)} == {"running"}


def test_resume_takes_the_run_over(catalog, tmp_path, no_job):
    old = RunRecord.start(catalog, "audit", "/campaign")
    old.finish("interrupted", {"outcome": "interrupted", "simulations": 7})
    no_job.setenv("SLURM_JOB_ID", "9")
    no_job.setenv("SLURM_RESTART_COUNT", "1")
    again = RunRecord.resume(catalog, old.run_id, "audit", "/campaign")
    row = runs(tmp_path)[old.run_id]
    assert again.run_id == old.run_id
    assert (row["status"], row["ended_at"], row["pid"], row["host"], row["job"]) == ("running", None, os.getpid(), HERE, "slurm:9:1")
    assert row["summary"] == {"outcome": "interrupted", "simulations": 7}  # the summary so far is kept


# -- which runs are abandoned ----------------------------------------------------------------------


def running(
    run_id: str,
    host: str,
    pid: int | None,
    beat: datetime | None,
    job: str | None = None,
    started: datetime | None = None,
    summary: str | None = None,
) -> dict[str, Any]:
    return {
        "run_id": run_id,
        "command": "audit",
        "root": f"/{run_id}",
        "arguments": "{}",
        "host": host,
        "version": "0",
        "catalog": "",
        "started_at": started or beat,
        "status": "running",
        "pid": pid,
        "heartbeat_at": beat,
        "job": job,
        "summary": summary,
    }


def record_runs(catalog: Any, rows: list[dict[str, Any]]) -> None:
    catalog.init_schema()
    catalog.apply([Upsert(schema.RUNS.name, rows_table(schema.RUNS, rows))])


@pytest.fixture
def zombie() -> Iterator[int]:
    """A child process that has exited and not been waited for."""
    pid = os.fork()
    if pid == 0:
        os._exit(0)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        with open(f"/proc/{pid}/stat", "rb") as handle:
            if handle.read().rsplit(b")", 1)[1].split()[0] == b"Z":
                break
        time.sleep(0.01)
    try:
        yield pid
    finally:
        os.waitpid(pid, 0)


def test_process_gone(zombie):
    assert process_gone(os.getpid()) is False
    assert process_gone(zombie) is True  # a zombie runs nothing
    assert process_gone(None) is True and process_gone(0) is True and process_gone(-1) is True


def test_an_earlier_leg_of_this_slurm_job_is_abandoned_and_nothing_else_of_it(catalog, tmp_path, no_job, zombie):
    no_job.setenv("SLURM_JOB_ID", "77")
    no_job.setenv("SLURM_RESTART_COUNT", "2")
    now = datetime.now(UTC)
    record_runs(
        catalog,
        [
            running("leg1", ELSEWHERE, 1234, now, "slurm:77:1"),  # an earlier leg, on another node
            running("leg0-pid-alive", HERE, os.getpid(), now, "slurm:77:0"),  # an earlier leg whose pid lives again
            running("leg2", ELSEWHERE, 1234, now, "slurm:77:2"),  # this leg
            running("leg3", ELSEWHERE, 1234, now, "slurm:77:3"),
            running("other-job", ELSEWHERE, 1234, now, "slurm:78:0"),
            running("not-a-leg", ELSEWHERE, 1234, now, "slurm:77:x"),
            running("pbs", ELSEWHERE, 1234, now, "pbs:77:1"),
            running("no-job", ELSEWHERE, 1234, now),
            running("zombie", HERE, zombie, now, "slurm:77:2"),
        ],
    )
    assert sorted(reap_abandoned(catalog)) == ["leg0-pid-alive", "leg1", "zombie"]
    table = runs(tmp_path)
    assert {k: r["status"] for k, r in table.items() if r["status"] != "running"} == {
        "leg0-pid-alive": "abandoned",
        "leg1": "abandoned",
        "zombie": "abandoned",
    }
    assert table["leg1"]["summary"]["abandoned"]["reason"] == "it ran in an earlier leg of this batch job (slurm:77:1)"
    assert table["zombie"]["summary"]["abandoned"]["reason"] == f"its process {zombie} on {HERE} is gone"
    assert reap_abandoned(catalog) == []


def test_outside_a_job_the_legs_of_a_job_are_left_alone(catalog, tmp_path, no_job):
    record_runs(catalog, [running("leg1", ELSEWHERE, 1234, datetime.now(UTC), "slurm:77:1")])
    assert reap_abandoned(catalog) == []


def test_the_heartbeat_rule_and_what_an_abandoned_row_says(catalog, tmp_path, no_job):
    now = datetime.now(UTC)
    quiet = now - timedelta(seconds=ABANDON_AFTER_S - 60)
    silent = now - timedelta(seconds=ABANDON_AFTER_S + 120)
    record_runs(
        catalog,
        [
            running("quiet", ELSEWHERE, 1, quiet),
            running("silent", ELSEWHERE, 1, silent, summary='{"simulations": 5, "outcome": "running"}'),
            running("never-beat", ELSEWHERE, 1, None, started=silent, summary="not json"),
        ],
    )
    before = datetime.now(UTC)
    assert sorted(reap_abandoned(catalog)) == ["never-beat", "silent"]
    after = datetime.now(UTC)
    table = runs(tmp_path)
    assert table["quiet"]["status"] == "running"
    silent_row = table["silent"]
    detected = silent_row["summary"]["abandoned"].pop("detected_at")
    assert before <= datetime.fromisoformat(detected) <= after
    reason = silent_row["summary"]["abandoned"]["reason"]
    assert re.fullmatch(r"no heartbeat from elsewhere\.example for (\d+)s \(more than 600s\)", reason)
    assert ABANDON_AFTER_S + 119 <= int(reason.split(" for ")[1].split("s")[0]) <= ABANDON_AFTER_S + 180
    assert silent_row["summary"] == {"simulations": 5, "outcome": "abandoned", "abandoned": {"reason": reason, "detected_by": HERE}}
    assert silent_row["ended_at"] == silent_row["heartbeat_at"] == silent  # it ended when it last said it was alive
    never = table["never-beat"]
    assert never["summary"]["outcome"] == "abandoned" and set(never["summary"]) == {"outcome", "abandoned"}
    assert never["ended_at"] == never["started_at"] == silent and never["heartbeat_at"] is None


def test_abandoned_reason_rules(no_job):
    now = datetime.now(UTC)
    fresh = now - timedelta(seconds=5)
    assert abandoned_reason({"host": HERE, "pid": os.getpid(), "heartbeat_at": fresh}, HERE, now) is None
    assert abandoned_reason({"host": ELSEWHERE, "pid": os.getpid(), "heartbeat_at": fresh}, HERE, now) is None
    assert abandoned_reason({"host": HERE, "pid": None, "heartbeat_at": fresh}, HERE, now) == f"its process None on {HERE} is gone"
    # Exactly at the limit is still alive; a second more is not.
    assert abandoned_reason({"host": ELSEWHERE, "heartbeat_at": now - timedelta(seconds=ABANDON_AFTER_S)}, HERE, now) is None
    assert abandoned_reason({"host": ELSEWHERE, "heartbeat_at": now - timedelta(seconds=ABANDON_AFTER_S + 1)}, HERE, now) == (
        "no heartbeat from elsewhere.example for 601s (more than 600s)"
    )
    assert abandoned_reason({"host": ELSEWHERE}, HERE, now) is None  # nothing to judge by


def test_a_catalog_of_an_older_schema_is_not_reaped(catalog, tmp_path, no_job):
    record_runs(catalog, [running("gone", HERE, None, datetime.now(UTC))])
    with sqlite3.connect(tmp_path / "c.db") as conn:
        conn.execute("UPDATE MDBATCH_SCHEMA SET value = ? WHERE key = 'schema_version'", (str(schema.SCHEMA_VERSION - 1),))
    with open_catalog(f"sqlite:///{tmp_path / 'c.db'}") as again:
        assert reap_abandoned(again) == []
    assert runs(tmp_path)["gone"]["status"] == "running"


HOOK = '''
import importlib.abc, os, signal, sys

class SignalDuringImport(importlib.abc.MetaPathFinder):
    """Sends this process {sig} as module {module!r} starts importing (once)."""

    def find_spec(self, name, path=None, target=None):
        if name == {module!r} and not getattr(self, "sent", False):
            self.sent = True
            os.kill(os.getpid(), signal.{sig})
        return None

sys.meta_path.insert(0, SignalDuringImport())
'''


@pytest.mark.parametrize("module", ["mdbatch.cli", "mdbatch.cli.common"])
@pytest.mark.parametrize("sig", ["SIGUSR1", "SIGTERM"])
def test_a_signal_while_python_m_mdbatch_imports_its_cli_is_one_line_and_exit_3(tmp_path: Path, module: str, sig: str) -> None:
    """What a walltime signal does to `python -m mdbatch` during its imports (a real signal, sent at a
    chosen import by an import hook): one line, exit 3 (the sbatch scripts requeue on 3), no traceback."""
    import subprocess
    import sys

    (tmp_path / "sitecustomize.py").write_text(HOOK.format(module=module, sig=sig))
    env = {**os.environ, "PYTHONPATH": str(tmp_path)}
    proc = subprocess.run([sys.executable, "-m", "mdbatch", "audit", str(tmp_path)], capture_output=True, text=True, env=env, timeout=120)
    assert (proc.returncode, proc.stderr) == (3, f"error: stopped by {sig}\n")
