"""What the CLI tests share: a Dask scheduler for in-process audits, and `mdbatch` run two ways
(in this process, and as the subprocess a user starts)."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from mdbatch.auditing import AuditResult, audit
from mdbatch.engine import ClusterOptions


@pytest.fixture(scope="module")
def scheduler() -> Iterator[str]:
    """A small in-process Dask cluster shared by a module's audits (no cluster start per audit)."""
    from distributed import LocalCluster

    with LocalCluster(
        n_workers=1,
        threads_per_worker=1,
        processes=False,
        protocol="tcp",
        host="127.0.0.1",
        dashboard_address=None,
        silence_logs=logging.ERROR,
    ) as cluster:
        yield cluster.scheduler_address


@pytest.fixture
def audit_into(scheduler: str) -> Callable[..., AuditResult]:
    """Audit `source` into the catalog `db` through the shared scheduler."""

    def run(source: object, db: str, **kwargs: object) -> AuditResult:
        return audit(source, db=db, cluster=ClusterOptions(scheduler=scheduler), progress=False, **kwargs)  # type: ignore[arg-type]

    return run


class Ran:
    """What an `mdbatch` call returned and printed (the shape of CompletedProcess)."""

    def __init__(self, returncode: int, stdout: str, stderr: str) -> None:
        self.returncode, self.stdout, self.stderr = returncode, stdout, stderr

    def __repr__(self) -> str:
        return f"Ran({self.returncode}, stdout={self.stdout[-2000:]!r}, stderr={self.stderr[-2000:]!r})"


@pytest.fixture
def cli(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Callable[..., Ran]:
    """`mdbatch ARGS` in this process; MDBATCH_DB unset and MDBATCH_CONFIG isolated in tmp_path."""
    from mdbatch.cli import main

    monkeypatch.delenv("MDBATCH_DB", raising=False)
    monkeypatch.setenv("MDBATCH_CONFIG", str(tmp_path / "config.toml"))

    def call(*args: str, env: dict[str, str] | None = None) -> Ran:
        with monkeypatch.context() as m:
            for k, v in (env or {}).items():
                m.setenv(k, v)
            capsys.readouterr()
            code = main(list(args))
            out = capsys.readouterr()
        return Ran(code, out.out, out.err)

    return call


def mdbatch(
    *args: str, cwd: Path | None = None, env: dict[str, str] | None = None, tmp: Path | None = None
) -> subprocess.CompletedProcess[str]:
    """`mdbatch ARGS` as a user runs it: a new process, no stdin, MDBATCH_DB unset unless `env` sets it."""
    full = {k: v for k, v in os.environ.items() if k != "MDBATCH_DB"}
    if tmp is not None:
        full["MDBATCH_CONFIG"] = str(tmp / "config.toml")
    full.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "mdbatch", *args], cwd=cwd, env=full, capture_output=True, text=True, timeout=300, stdin=subprocess.DEVNULL
    )


def one_line_error(proc: subprocess.CompletedProcess[str] | Ran, *fragments: str) -> str:
    """The single `error: ...` line of a command that exited 2; each fragment must be in it."""
    assert proc.returncode == 2, (proc.stdout, proc.stderr)
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in proc.stderr, proc.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    return lines[0]
