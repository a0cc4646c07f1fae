"""SIGKILL a real `mdbatch repair` at random instants: every registry stays as it was or as repaired, never
torn; the catalog's snapshots agree with the disk after recovery; a re-run completes."""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from mdbatch import findings as fk
from mdbatch.auditing import audit
from mdbatch.generate import generate_campaign, inject_fault

from ..signals import signal_held
from .conftest import NEVER_FIXED, kinds_of, registries

KILLS = 20
FLAGS = ["--yes", "--accept-checksums", "--rebuild-corrupt", "--quiet"]


def _campaign(dest: Path) -> Any:
    """A campaign with every fault kind, and a row or column mismatch in every other clean simulation."""
    camp = generate_campaign(dest, 200, seed=11, faults=True)
    faulty = {f["simulation"] for f in camp.expected_findings}
    clean = [s for s in camp.simulations if s not in faulty and (dest / s / ".analysis" / "metadata.json").exists()]
    for n, sim in enumerate(clean):
        registry = json.loads((dest / sim / ".analysis" / "metadata.json").read_bytes())
        if registry["analyses"] and registry["artifacts"]:
            inject_fault(dest / sim, fk.ROW_COUNT_MISMATCH if n % 2 else fk.COLUMNS_MISMATCH)
    return camp


def _repair(root: Path, db: str) -> subprocess.Popen[bytes]:
    cmd = [sys.executable, "-m", "mdbatch", "repair", str(root), "--db", db, *FLAGS]
    return subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)


def _normal(data: bytes | None) -> Any:
    """A registry's content without the timestamps a repair sets (they differ run to run)."""
    if data is None:
        return None
    try:
        registry = json.loads(data)
        for section in ("analyses", "artifacts"):
            for entry in registry[section].values():
                entry.pop("updated_at", None)
                entry.pop("created_at", None)
    except (ValueError, AttributeError, TypeError, KeyError):  # a corrupt registry compares as its bytes
        return data
    return registry


def _snapshots(db: str) -> list[tuple[str, bytes | None, bytes | None]]:
    with sqlite3.connect(db.removeprefix("sqlite:///")) as conn:
        return conn.execute("SELECT directory, bytes_before, bytes_after FROM MDBATCH_REGISTRY_SNAPSHOTS").fetchall()


@pytest.mark.slow
def test_sigkill_at_random_instants_leaves_every_registry_before_or_repaired(tmp_path: Path) -> None:
    root, ref_root = tmp_path / "campaign", tmp_path / "reference"
    _campaign(root)
    shutil.copytree(root, ref_root, symlinks=True)
    db, ref_db = f"sqlite:///{tmp_path / 'catalog.db'}", f"sqlite:///{tmp_path / 'reference.db'}"
    audit(root, db=db, progress=False)
    audit(ref_root, db=ref_db, progress=False)
    original = registries(root)
    # The reference: the same campaign repaired without a kill, and how long that takes.
    started = time.monotonic()
    ref = _repair(ref_root, ref_db)
    writing_s = None
    while ref.poll() is None:  # when the run starts writing (its journal appears), after start-up and planning
        if writing_s is None and list(ref_root.glob(".mdbatch-repair/*.active.jsonl")):
            writing_s = time.monotonic() - started
        time.sleep(0.002)
    assert ref.wait(timeout=120) == 0, ref.stderr.read() if ref.stderr else ""
    full_s = time.monotonic() - started
    assert writing_s is not None
    repaired = {sim: _normal(data) for sim, data in registries(ref_root).items()}
    to_fix = {sim for sim in original if _normal(original[sim]) != repaired[sim]}
    assert len(to_fix) >= 40
    rng = random.Random(20240601)
    hit = journaled = 0
    for _kill in range(KILLS):
        proc = _repair(root, db)
        # Random instants over the run, most of them while it writes (start-up is most of a run's time).
        time.sleep(rng.uniform(0.0, full_s) if _kill % 4 == 0 else rng.uniform(writing_s * 0.9, full_s))
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
        journaled += bool(list(root.glob(".mdbatch-repair/*.active.jsonl")))
        afters = {(Path(d).name, a) for d, _b, a in _snapshots(db)}
        now = registries(root)
        for sim, data in now.items():
            if data == original[sim]:
                continue
            hit += 1
            assert (sim, data) in afters, f"{sim}: bytes neither as before nor as a snapshot's after"
            assert _normal(data) == repaired[sim], f"{sim}: not as repaired"
    assert hit and journaled, "no kill landed while registries were being replaced"
    print(f"{KILLS} kills over {full_s:.2f}s runs (writing from {writing_s:.2f}s): {journaled} left a journal to recover")
    final = _repair(root, db)
    assert final.wait(timeout=120) in (0, 1), final.stderr.read() if final.stderr else ""
    assert not list((root / ".mdbatch-repair").glob("*.active.jsonl"))
    now = registries(root)
    assert {sim: _normal(data) for sim, data in now.items()} == repaired
    # The catalog agrees with the disk: one snapshot per repaired registry, from its original bytes to its bytes now.
    snaps = _snapshots(db)
    assert sorted(Path(d).name for d, _b, _a in snaps) == sorted(to_fix)
    assert all(b == original[Path(d).name] and a == now[Path(d).name] for d, b, a in snaps)
    again = audit(root, db=db, progress=False)
    assert kinds_of(again.summary["findings"]) == NEVER_FIXED


def _snapshot_count(db: str) -> int:
    with sqlite3.connect(db.removeprefix("sqlite:///"), timeout=30) as conn:
        return int(conn.execute("SELECT COUNT(*) FROM MDBATCH_REGISTRY_SNAPSHOTS").fetchone()[0])


@pytest.mark.slow
@pytest.mark.parametrize("moment", ["set-up", "after the first batch"])
def test_sigterm_records_interrupted_and_a_rerun_completes(tmp_path: Path, moment: str) -> None:
    """SIGTERM as the run opens its journal (before any plan), or once its first batch of registries is
    committed: the batch in hand completes (snapshots and files agree), the run is `interrupted`, exit 3
    with one line; the next repair finishes the rest."""
    root = tmp_path / "campaign"
    _campaign(root)
    db = f"sqlite:///{tmp_path / 'catalog.db'}"
    audit(root, db=db, progress=False)
    original = registries(root)
    cmd = [sys.executable, "-m", "mdbatch", "repair", str(root), "--db", db, "--yes", "--accept-checksums", "--rebuild-corrupt"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120

    def reached() -> bool:
        if moment == "set-up":
            return bool(list(root.glob(".mdbatch-repair/*.active.jsonl")))
        return _snapshot_count(db) > 0

    while not reached():
        assert proc.poll() is None and time.monotonic() < deadline, proc.stderr.read() if proc.stderr else ""
        time.sleep(0.001)
    assert proc.poll() is None, "the repair ended before it could be signalled"
    signal_held(proc.pid, signal.SIGTERM)
    _out, err = proc.communicate(timeout=120)
    assert proc.returncode == 3, err
    assert [line for line in err.splitlines() if line.startswith("error:")] == ["error: stopped by SIGTERM"] and "Traceback" not in err
    with sqlite3.connect(db.removeprefix("sqlite:///")) as conn:
        statuses = conn.execute("SELECT status FROM MDBATCH_RUNS WHERE command = 'repair'").fetchall()
    assert statuses == [("interrupted",)]
    assert not list(root.glob(".mdbatch-repair/*.active.jsonl"))  # the batch in hand finished; nothing to recover
    snaps = _snapshots(db)
    now = registries(root)
    changed = {sim for sim, data in now.items() if data != original[sim]}
    assert sorted(Path(d).name for d, _b, _a in snaps) == sorted(changed)  # every replaced registry, and no other
    assert all(a == now[Path(d).name] for d, _b, a in snaps)
    if moment == "set-up":
        assert changed == set()
    else:
        assert len(changed) >= 64  # at least the first batch
    final = _repair(root, db)
    assert final.wait(timeout=120) in (0, 1), final.stderr.read() if final.stderr else ""
    again = audit(root, db=db, progress=False)
    assert kinds_of(again.summary["findings"]) == NEVER_FIXED
