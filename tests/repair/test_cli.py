"""The repair command line: refusal off a terminal, the one question on a terminal (pty), --json, errors."""

from __future__ import annotations

import json
import os
import pty
import select
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

from mdbatch.cli import main

from .conftest import registries


def _mdbatch(*argv: str, stdin: int | None = subprocess.DEVNULL) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "mdbatch", *argv], capture_output=True, text=True, stdin=stdin)


def test_without_a_terminal_and_without_yes_it_refuses_in_one_line(audited) -> None:  # type: ignore[no-untyped-def]
    a = audited()
    before = registries(a.root)
    proc = _mdbatch("repair", str(a.root), "--db", a.db)
    assert proc.returncode == 2
    assert proc.stderr == "error: repair changes registries: pass --yes to go ahead (or --dry-run to see the changes)\n"
    assert registries(a.root) == before
    with sqlite3.connect(a.db.removeprefix("sqlite:///")) as conn:
        assert conn.execute("SELECT COUNT(*) FROM MDBATCH_RUNS WHERE command = 'repair'").fetchone() == (0,)


def _on_a_terminal(argv: list[str], answer: bytes) -> tuple[int, str]:
    """Run mdbatch with a pty as stdin, answer its question, return (exit code, what it wrote to the pty)."""
    master, slave = pty.openpty()
    proc = subprocess.Popen([sys.executable, "-m", "mdbatch", *argv], stdin=slave, stdout=subprocess.PIPE, stderr=slave)
    os.close(slave)
    seen = b""
    deadline = time.monotonic() + 60
    while b"[y/N]" not in seen and time.monotonic() < deadline:
        if select.select([master], [], [], 0.5)[0]:
            seen += os.read(master, 4096)
    os.write(master, answer)
    proc.wait(timeout=60)
    os.close(master)
    return proc.returncode, seen.decode()


def test_on_a_terminal_it_asks_once(audited) -> None:  # type: ignore[no-untyped-def]
    a = audited()
    before = registries(a.root)
    code, asked = _on_a_terminal(["repair", str(a.root), "--db", a.db], b"n\n")
    assert "repair 5 registries (5 fixes; --dry-run shows them)? [y/N]" in asked and code == 0
    assert registries(a.root) == before
    with sqlite3.connect(a.db.removeprefix("sqlite:///")) as conn:
        assert conn.execute("SELECT status FROM MDBATCH_RUNS WHERE command = 'repair'").fetchall() == [("refused",)]
    code, _asked = _on_a_terminal(["repair", str(a.root), "--db", a.db], b"y\n")
    assert code == 0 and sum(before[s] != now for s, now in registries(a.root).items()) == 5


def test_json_summary_and_undo_on_stdout(audited, capsys) -> None:  # type: ignore[no-untyped-def]
    a = audited()
    assert main(["repair", str(a.root), "--db", a.db, "--yes", "--json", "-", "--kind", "missing_file,extra_file"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["fixed"] == {"extra_file": 1, "missing_file": 1} and summary["outcome"] == "completed"
    assert main(["repair", "--undo", "last", "--db", a.db, "--json", "-"]) == 0
    undone = json.loads(capsys.readouterr().out)
    assert undone["mode"] == "undo" and undone["undone"] == summary["run_id"] and undone["registries_changed"] == 2


def test_argument_errors_are_one_line(audited, capsys) -> None:  # type: ignore[no-untyped-def]
    a = audited()
    assert main(["repair", "--db", a.db, "--yes"]) == 2
    assert capsys.readouterr().err == "error: repair: give the campaign ROOT (its last completed audit is repaired) or --run RUN\n"
    assert main(["repair", str(a.root), "--db", a.db, "--force", "--yes"]) == 2
    assert capsys.readouterr().err == "error: --force goes with --undo RUN\n"
    assert main(["repair", str(Path(a.root) / "nowhere"), "--db", a.db, "--yes"]) == 2
    assert "no completed audit of" in capsys.readouterr().err
    assert main(["registry", "restore", str(a.root), "--to", "nonsense", "--db", a.db]) == 2
    assert "a snapshot is named RUN:SEQ" in capsys.readouterr().err
    # A catalog with audits but no repair yet: the answer names the command, not "no runs" at all.
    assert main(["repair", "--undo", "last", "--db", a.db]) == 2
    assert capsys.readouterr().err == "error: no runs recorded in this catalog by `mdbatch repair`\n"
    assert main(["repair", "--undo", a.audit_run, "--db", a.db]) == 2
    assert capsys.readouterr().err == "error: no runs recorded in this catalog by `mdbatch repair`\n"  # an audit's id is no repair
