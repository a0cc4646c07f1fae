"""The CLI contract scripted audits rely on: exit codes, JSON summary, findings JSONL, one-line errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from .conftest import IS_ROOT, expected

pytestmark = pytest.mark.integration


def mdbatch(*args: str, cwd: Path | None = None, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    full_env = {**os.environ, **(env or {})}
    full_env.pop("MDBATCH_DB", None) if env is None or "MDBATCH_DB" not in env else None
    return subprocess.run(
        [sys.executable, "-m", "mdbatch", *args],
        cwd=cwd,
        env=full_env,
        capture_output=True,
        text=True,
        timeout=300,
        stdin=subprocess.DEVNULL,
    )


def assert_one_line_error(proc: subprocess.CompletedProcess[str], fragment: str) -> None:
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and fragment in lines[0], proc.stderr


def test_clean_campaign_exits_0_with_json_summary(make_campaign, tmp_path):
    result = make_campaign(15, seed=21)
    summary = tmp_path / "s.json"
    proc = mdbatch("audit", str(result.dest), "--db", f"sqlite:///{tmp_path / 'c.db'}", "--json", str(summary), "--quiet", "--no-dashboard")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == ""
    s = json.loads(summary.read_text())
    for key in ("run_id", "root", "simulations", "files", "bytes", "findings", "status", "elapsed_s"):
        assert key in s
    assert s["simulations"] == 15 and s["files"] == result.files and s["findings_total"] == 0
    assert s["root"] == str(result.dest)


def test_findings_exit_1_and_jsonl(make_campaign, tmp_path):
    result = make_campaign(20, seed=22, faults=True)
    out = tmp_path / "f.jsonl"
    proc = mdbatch(
        "audit", str(result.dest), "--db", f"sqlite:///{tmp_path / 'c.db'}", "--findings", str(out), "--json", "-", "--no-dashboard"
    )
    assert proc.returncode == 1, proc.stderr
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert {(f["simulation"], f["kind"], f["item"]) for f in lines} == expected(result)
    assert all(set(f) == {"simulation", "kind", "item", "detail"} for f in lines)
    summary = json.loads(proc.stdout)  # stdout holds the JSON only: the human summary goes to stderr
    assert summary["findings_total"] == len(lines)
    assert "findings in" in proc.stderr and "findings in" not in proc.stdout


def test_reaudit_exits_the_same_and_says_what_it_kept(make_campaign, tmp_path):
    result = make_campaign(20, seed=22, faults=True)
    args = ("audit", str(result.dest), "--db", f"sqlite:///{tmp_path / 'c.db'}", "--no-dashboard")
    first = mdbatch(*args, "--findings", str(tmp_path / "1.jsonl"))
    second = mdbatch(*args, "--findings", str(tmp_path / "2.jsonl"))
    assert first.returncode == second.returncode == 1, second.stderr  # the findings persist, so does the exit code
    assert sorted((tmp_path / "2.jsonl").read_text().splitlines()) == sorted((tmp_path / "1.jsonl").read_text().splitlines())
    assert (
        f"hash cache: {result.files} unchanged files not read again, 0 read; 20 simulations unchanged (fingerprint), 0 rescanned"
        in second.stdout
    )
    assert "findings 0 new, 0 resolved" in second.stdout


def test_default_db_in_working_directory_and_env_override(make_campaign, tmp_path):
    result = make_campaign(5, seed=23)
    work = tmp_path / "work"
    work.mkdir()
    proc = mdbatch("audit", str(result.dest), "--quiet", cwd=work)
    assert proc.returncode == 0, proc.stderr
    assert (work / "mdbatch.db").exists()
    proc = mdbatch("audit", str(result.dest), "--quiet", cwd=work, env={"MDBATCH_DB": f"sqlite:///{tmp_path / 'env.db'}"})
    assert proc.returncode == 0 and (tmp_path / "env.db").exists()


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["audit", "/nonexistent/campaign"], "does not exist"),
        (["audit", "."], "--batch-size"),
        (["audit", ".", "--db", "mysql://u@h/x"], "unsupported catalog URL"),
        (["audit", ".", "--scheduler-file", "/nonexistent/sched.json"], "does not exist"),
        (["frobnicate"], "invalid choice"),
    ],
)
def test_usage_errors_exit_2_with_one_line(tmp_path, args, fragment):
    if args[:2] == ["audit", "."] and fragment == "--batch-size":
        args = [*args, "--batch-size", "0"]
    proc = mdbatch(*args, cwd=tmp_path)
    assert_one_line_error(proc, fragment)


def test_unreachable_postgres_is_one_line_exit_2(make_campaign, tmp_path):
    result = make_campaign(3, seed=24)
    proc = mdbatch("audit", str(result.dest), "--db", "postgresql+psycopg://postgres:secret@127.0.0.1:1/none", "--quiet")
    assert_one_line_error(proc, "catalog")
    assert "secret" not in proc.stderr


@pytest.mark.parametrize("content", [b"{not json", b"[]", b'{"address": ""}', b"\xff\xfe not UTF-8"])
def test_a_malformed_scheduler_file_is_one_line_exit_2(make_campaign, tmp_path, content):
    result = make_campaign(2, seed=26)
    sched = tmp_path / "sched.json"
    sched.write_bytes(content)
    proc = mdbatch("audit", str(result.dest), "--db", f"sqlite:///{tmp_path / 'c.db'}", "--scheduler-file", str(sched), "--quiet")
    assert_one_line_error(proc, "scheduler file")


def test_postgres_without_psycopg_names_the_extra(make_campaign, tmp_path):
    result = make_campaign(2, seed=27)
    code = "import sys; sys.modules['psycopg'] = None; from mdbatch.cli import main; sys.exit(main(sys.argv[1:]))"
    proc = subprocess.run(
        [sys.executable, "-c", code, "audit", str(result.dest), "--db", "postgresql+psycopg://postgres:secret@127.0.0.1/test", "--quiet"],
        capture_output=True,
        text=True,
        timeout=300,
        stdin=subprocess.DEVNULL,
    )
    assert_one_line_error(proc, "pip install 'mdbatch[postgres]'")
    assert "secret" not in proc.stderr


def test_unwritable_sqlite_location_is_one_line_exit_2(make_campaign, tmp_path):
    result = make_campaign(3, seed=25)
    proc = mdbatch("audit", str(result.dest), "--db", f"sqlite:///{tmp_path}/no/such/dir/c.db", "--quiet")
    assert_one_line_error(proc, "catalog")


def test_generate_then_audit(tmp_path):
    proc = mdbatch("generate", str(tmp_path / "camp"), "--sims", "20", "--faults", "--seed", "4")
    assert proc.returncode == 0, proc.stderr
    assert "generated 20 simulations" in proc.stdout and (tmp_path / "camp" / "mdbatch-campaign.json").exists()


def test_demo_runs_and_explains(tmp_path):
    proc = mdbatch("demo", "--sims", "40", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "findings in" in proc.stdout and "sqlite3 mdbatch.db" in proc.stdout
    assert (tmp_path / "mdbatch.db").exists() and (tmp_path / "demo-campaign" / "mdbatch-campaign.json").exists()
    again = mdbatch("demo", "--sims", "40", cwd=tmp_path)
    assert again.returncode == 0 and "reusing" in again.stdout


# -- output paths and closed pipes (issue 13, item 6) -------------------------------------------------


def _without_dac(cmd: list[str]) -> list[str]:
    """`cmd` run so that directory permissions bind: as root, without the DAC-override capabilities."""
    return ["setpriv", "--bounding-set=-dac_override,-dac_read_search,-fowner", *cmd] if IS_ROOT else cmd


def test_unwritable_output_paths_are_one_line_errors(make_campaign, tmp_path):
    result = make_campaign(3, seed=26)
    db = f"sqlite:///{tmp_path / 'c.db'}"
    missing = tmp_path / "missing" / "s.json"
    proc = mdbatch("audit", str(result.dest), "--db", db, "--json", str(missing), "--quiet", "--no-dashboard")
    assert_one_line_error(proc, f"cannot write {missing}: directory {missing.parent} does not exist")
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o555)
    for args, target in (
        (["report", "--db", db, "-o", str(locked / "r.html")], locked / "r.html"),
        (["runs", "list", "--db", db, "--output", str(locked / "runs.csv")], locked / "runs.csv"),
    ):
        proc = subprocess.run(
            _without_dac([sys.executable, "-m", "mdbatch", *args]), capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL
        )
        assert_one_line_error(proc, f"cannot write {target}: Permission denied")
        assert os.listdir(locked) == []
    proc = mdbatch("report", "--db", db, "-o", str(tmp_path))  # a directory cannot be replaced by the page
    assert_one_line_error(proc, f"cannot write {tmp_path}: Is a directory")


def test_write_error_is_an_os_error_naming_the_target(tmp_path):
    import errno
    import pickle

    from mdbatch.atomic import WriteError, atomic_write_text
    from mdbatch.errors import MdbatchError

    target = tmp_path / "no" / "such" / "x.txt"
    with pytest.raises(WriteError) as info:
        atomic_write_text(target, "x")
    error = info.value
    assert isinstance(error, MdbatchError) and isinstance(error, OSError)
    assert (error.errno, error.filename, str(error)) == (
        errno.ENOENT,
        str(target),
        f"cannot write {target}: directory {target.parent} does not exist",
    )
    again = pickle.loads(pickle.dumps(error))
    assert (type(again), again.errno, str(again)) == (WriteError, errno.ENOENT, str(error))
    assert os.listdir(tmp_path) == []


def _catalog_with_runs(path: Path, count: int) -> str:
    import json
    from datetime import datetime

    from mdbatch.catalog import open_catalog
    from mdbatch.catalog.writes import run_row

    url = f"sqlite:///{path}"
    with open_catalog(url) as catalog:
        catalog.init_schema()
        catalog.apply(
            [
                run_row(
                    f"20260101T{i // 3600:02d}{i // 60 % 60:02d}{i % 60:02d}Z-{i:06x}",
                    "audit",
                    f"/scratch/project/a/rather/long/campaign/root/number_{i:012d}",
                    started_at=datetime.fromisoformat(f"2026-01-01T{i // 3600:02d}:{i // 60 % 60:02d}:{i % 60:02d}+00:00"),
                    host="node001",
                    version="0.1.0",
                    status="completed",
                    summary=json.dumps({"simulations": i, "findings_total": 0}),
                )
                for i in range(count)
            ]
        )
    return url


def _into_head(cmd: list[str], pipe_size: int | None) -> tuple[int, str, str]:
    """Run `cmd` with its stdout piped into `head -1` (the pipe shrunk to `pipe_size` bytes, so that
    the output surely outlasts head); (exit code, head's output, stderr)."""
    import fcntl

    read_end, write_end = os.pipe()
    if pipe_size is not None:
        fcntl.fcntl(write_end, fcntl.F_SETPIPE_SZ, pipe_size)
    head = subprocess.Popen(["head", "-1"], stdin=read_end, stdout=subprocess.PIPE, text=True)
    os.close(read_end)
    proc = subprocess.Popen(cmd, stdout=write_end, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True)
    os.close(write_end)
    _, err = proc.communicate(timeout=120)
    first, _ = head.communicate(timeout=30)
    return proc.returncode, first, err


def test_a_reader_that_goes_away_ends_the_command_quietly(tmp_path):
    url = _catalog_with_runs(tmp_path / "c.db", 60)
    cmd = [sys.executable, "-m", "mdbatch", "runs", "list", "--db", url]
    full = subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=True).stdout
    # More than a pipe-full read by head and a refill before it exits: the rest meets a closed pipe.
    assert len(full) > 2 * 4096 + 2048
    for _ in range(3):
        code, first, err = _into_head(cmd, 4096)
        assert (code, err) == (141, "")  # as a Unix tool killed by SIGPIPE, and nothing on stderr
        assert first == full.splitlines(keepends=True)[0]


def test_a_reader_gone_before_the_first_write_ends_the_command_quietly(tmp_path):
    # The output fits in the buffer, so it is written only at the end: the exit's flush must not
    # print "Exception ignored ... BrokenPipeError" either.
    url = _catalog_with_runs(tmp_path / "c.db", 2)
    read_end, write_end = os.pipe()
    os.close(read_end)
    proc = subprocess.run(
        [sys.executable, "-m", "mdbatch", "runs", "list", "--db", url],
        stdout=write_end,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        text=True,
        timeout=120,
    )
    os.close(write_end)
    assert (proc.returncode, proc.stderr) == (141, "")


def test_a_broken_pipe_that_is_not_stdout_is_still_an_error(tmp_path):
    # Only a closed stdout is quiet: a BrokenPipeError from anything else stays an internal error.
    from mdbatch.cli import _stdout_closed

    assert _stdout_closed(BrokenPipeError(32, "Broken pipe")) is False  # stdout is pytest's capture, open
    assert _stdout_closed(ValueError("x")) is False
