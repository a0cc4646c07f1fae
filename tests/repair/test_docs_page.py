"""docs/repair.md's worked example, run command by command against a generated campaign with every fault."""

from __future__ import annotations

import json
import os
import re
import sqlite3
import subprocess
import sys
from pathlib import Path

from mdbatch.generate import generate_campaign

from .conftest import FIXED_ALL, NEVER_FIXED, registries

PAGE = Path(__file__).resolve().parents[2] / "docs" / "repair.md"
FENCE = re.compile(r"^```(\w*)\n(.*?)^```", re.MULTILINE | re.DOTALL)


def page_commands() -> list[str]:
    """Every `mdbatch ...` line of the page's fenced blocks, in order (a `$ ` prompt stripped)."""
    lines = []
    for _lang, body in FENCE.findall(PAGE.read_text()):
        for line in body.splitlines():
            text = line.removeprefix("$ ").strip()
            if text.startswith("mdbatch "):
                lines.append(text)
    return lines


def test_the_page_shows_the_worked_example() -> None:
    assert [c.split(" $")[0] for c in page_commands()] == [
        "mdbatch audit",
        "mdbatch repair",
        "mdbatch repair",
        "mdbatch audit",
        "mdbatch registry history",
        "mdbatch repair --undo",
    ]


def test_every_command_of_the_page_runs_as_it_says(tmp_path: Path) -> None:
    camp = generate_campaign(tmp_path / "campaign", 30, seed=7, faults=True)
    db_path = tmp_path / "catalog.db"
    values = {"ROOT": str(camp.dest), "DB": f"sqlite:///{db_path}"}
    original = registries(camp.dest)
    outputs = []
    for command in page_commands():
        if "$RUN" in command or "$SIM" in command:
            with sqlite3.connect(db_path) as conn:
                run, directory = conn.execute(
                    "SELECT r.run_id, s.directory FROM MDBATCH_RUNS r JOIN MDBATCH_REGISTRY_SNAPSHOTS s ON s.run_id = r.run_id "
                    "WHERE r.command = 'repair' ORDER BY r.started_at DESC, s.seq LIMIT 1"
                ).fetchone()
            values.update(RUN=run, SIM=directory)
        argv = [values[w[1:]] if w.startswith("$") else w for w in command.split()]
        proc = subprocess.run([sys.executable, "-m", "mdbatch", *argv[1:]], capture_output=True, text=True, env=os.environ.copy())
        assert proc.returncode in (0, 1), f"{command}: exit {proc.returncode}: {proc.stderr}"
        outputs.append(proc.stdout)
    audit1, dry, fix, audit2, hist, undo = outputs
    assert dry.count("\n--- a/") + dry.startswith("--- a/") == 5 and "would change 5 registries" in dry
    assert "changed 8 registries: " + ", ".join(f"{k} {n}" for k, n in FIXED_ALL.items()) in fix
    assert f"undo with: mdbatch repair --undo {values['RUN']}" in fix
    assert "8 resolved" in audit2
    assert f"{values['RUN']}:1" in hist
    assert "changed 8 registries: undo 8" in undo
    assert registries(camp.dest) == original
    with sqlite3.connect(db_path) as conn:
        last = json.loads(conn.execute("SELECT summary FROM MDBATCH_RUNS WHERE command = 'audit' ORDER BY started_at DESC").fetchone()[0])
    assert {k: v for k, v in last["findings"].items() if v} == NEVER_FIXED
