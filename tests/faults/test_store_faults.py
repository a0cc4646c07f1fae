"""Faults around the content-addressed store (issue 13, item 7), through the real CLI in a subprocess."""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

from mdbatch.dedupe.store import Store
from mdbatch.generate import generate_campaign

from ..conftest import IS_ROOT, need_service

#: Root without the capabilities that bypass file permissions: reads a mode-000 file like any user.
DROP_DAC = ["setpriv", "--inh-caps=-all", "--bounding-set=-dac_override,-dac_read_search"]


def _without_dac_override() -> list[str]:
    """The command prefix that makes this process's child obey file permissions."""
    if not IS_ROOT:
        return []
    need_service(shutil.which("setpriv") is not None, "setpriv (util-linux) is needed to drop DAC capabilities as root")
    return DROP_DAC


def test_a_store_run_that_cannot_read_a_copy_links_every_other_one(tmp_path: Path) -> None:
    """`generate --faults` makes one nvt.mdp mode 000. Without read permission it is reported as
    unreadable and left alone; every other path of its group (and of every group) shares its object."""
    prefix = _without_dac_override()
    camp = generate_campaign(tmp_path / "camp", 30, seed=13, faults=True)
    (fault,) = [f for f in camp.expected_findings if f["kind"] == "unreadable"]
    unreadable = f"{fault['simulation']}/{fault['item']}"
    store, out = tmp_path / "cas", tmp_path / "summary.json"

    def run(*args: str) -> None:
        proc = subprocess.run(
            [*prefix, sys.executable, "-m", "mdbatch", "dedupe", str(camp.dest), *args, "--local", "--quiet"],
            capture_output=True,
            text=True,
            timeout=300,
            stdin=subprocess.DEVNULL,
        )
        assert proc.returncode == 0 and proc.stderr == "", proc.stderr

    run("--store", str(store), "--status", "all", "--json", str(out))
    doc = json.loads(out.read_text())
    assert doc["unreadable"] == [{"path": unreadable, "error": "Permission denied"}]
    assert doc["apply"]["skipped"] == [] and doc["apply"]["kept_out_of_store"] == 0 and doc["apply"]["links"] > 0
    objects = Store.open(str(store))
    run("--groups", str(tmp_path / "groups.jsonl"))  # what the same user sees now: every group is one object
    groups = [json.loads(line) for line in (tmp_path / "groups.jsonl").read_text().splitlines()]
    assert len(groups) == doc["groups"]
    for g in groups:
        assert {os.lstat(camp.dest / p).st_ino for p in g["paths"]} == {os.lstat(objects.object_path(g["digest"])).st_ino}
    assert unreadable not in {p for g in groups for p in g["paths"]}
    assert stat.S_IMODE(os.lstat(camp.dest / unreadable).st_mode) == 0 and os.lstat(camp.dest / unreadable).st_nlink == 1
    assert objects.verify()["corrupt"] == 0
