"""Killing an apply at any moment never changes what a path reads, and a re-run completes the job.

Three ways in: a crash (os._exit in a forked child) at every step the executor names, SIGKILL of a
real `dedupe --apply` process at random moments, and a hypothesis property over random trees.
"""

from __future__ import annotations

import os
import random
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mdbatch.dedupe import dedupe, recover_journal, recover_pending
from mdbatch.dedupe.journal import pending_journals
from mdbatch.dedupe.listing import TMP_PREFIX
from mdbatch.dedupe.store import Store

from .conftest import snapshot, write_sim

TOP = b"[ atoms ]\n" + b"  1 OW SOL\n" * 300
BIG = bytes(range(256)) * 1200  # 300 KiB: over the 128 KiB head+tail limit, so three stages run


def regular_stats(root: Path) -> list[os.stat_result]:
    out = []
    for top, dirs, names in os.walk(root):
        dirs[:] = [d for d in dirs if d != ".mdbatch-journal"]
        out.extend(os.lstat(os.path.join(top, n)) for n in names)
    return [st for st in out if stat.S_ISREG(st.st_mode)]


def only_originals(now: dict[bytes, tuple[str, str]], before: dict[bytes, tuple[str, str]]) -> None:
    """Every original path reads its original bytes; anything extra is one of our temporary names."""
    assert {p: now.get(p) for p in before} == before
    extra = set(now) - set(before)
    assert all(os.path.basename(p).startswith(TMP_PREFIX.encode()) for p in extra), extra


def build_template(root: Path, sims: int = 12) -> None:
    for i in range(sims):
        files = {
            "topology.top": TOP,
            "prod.mdp": b"nsteps = 500\n" * 50,
            "traj/big.xtc": BIG if i % 3 else BIG[::-1],
            "own.txt": f"unique {i}\n".encode(),
            b"caf\xe9.itp": b"; shared itp\n" * 20,
        }
        write_sim(root, f"sim{i:02d}", files, "completed" if i % 5 else "production")


def run_forked(root: Path, crash_at: int | None, link: str = "hardlink", store: Path | None = None, threads: int | None = None) -> int:
    """Run an apply in a forked child that dies (os._exit) at its `crash_at`-th step; returns the steps seen."""
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # child
        os.close(read)
        steps = 0

        def hook(_step: str) -> None:
            nonlocal steps
            if crash_at is not None and steps == crash_at:
                os._exit(9)
            steps += 1

        code = 0
        try:
            result = dedupe(
                root,
                apply=store is None,
                store=store,
                link=link,
                statuses=None,
                mode="local",
                progress=False,
                hook=hook,
                chunk_actions=8,
                link_threads=threads,
            )
            os.write(write, str(steps).encode())
            code = result.exit_code
        except BaseException:  # noqa: BLE001 - report through the exit code only
            code = 3
        finally:
            os._exit(code)
    os.close(write)
    _, status = os.waitpid(pid, 0)
    out = os.read(read, 64)
    os.close(read)
    if crash_at is None:
        assert os.waitstatus_to_exitcode(status) == 0
    return int(out) if out else -1


@pytest.mark.parametrize(
    "link,use_store,threads",
    [("hardlink", False, 1), ("hardlink", False, 4), ("symlink", False, None), ("hardlink", True, None), ("symlink", True, 4)],
)
def test_crash_at_every_step_then_recover_and_rerun(tmp_path: Path, link: str, use_store: bool, threads: int | None) -> None:
    template = tmp_path / "template"
    build_template(template, sims=4)
    before = snapshot(template)
    probe = tmp_path / "probe"
    shutil.copytree(template, probe, symlinks=True)
    total = run_forked(probe, None, link, tmp_path / "probe-store" if use_store else None, threads)
    assert total > 10
    # Every step for plain hardlinks; an even sample of the steps (first and last included) otherwise.
    steps = range(total) if (link, use_store) == ("hardlink", False) else sorted({0, total - 1, *range(0, total, max(1, total // 10))})
    for k in steps:
        root = tmp_path / f"run{k}"
        store = tmp_path / f"store{k}" if use_store else None
        shutil.copytree(template, root, symlinks=True)
        run_forked(root, k, link, store, threads)
        only_originals(snapshot(root), before)
        reports = recover_pending(str(root))
        assert len(reports) <= 1 and all(not r.anomalies for r in reports)
        assert snapshot(root) == before, f"after recovery from a crash at step {k}"
        if link == "hardlink":  # a file linked to nothing has its own mode back (no stray read-only bit)
            assert all(stat.S_IMODE(st.st_mode) == 0o644 for st in regular_stats(root) if st.st_nlink == 1), f"step {k}"
        assert not pending_journals(str(root))
        again = dedupe(root, apply=store is None, store=store, link=link, statuses=None, mode="local", progress=False)
        assert snapshot(root) == before
        assert again.exit_code == 0
        final = dedupe(root, mode="local", progress=False)
        assert final.summary["reclaimable_bytes"] == 0, f"re-run after a crash at step {k} did not complete"
        if store is not None:
            assert Store.open(str(store)).verify()["corrupt"] == 0
        shutil.rmtree(root)


def modes(root: Path) -> dict[str, int]:
    """Mode of every regular file under `root` (journal left out), by path."""
    out = {}
    for top, dirs, names in os.walk(root):
        dirs[:] = [d for d in dirs if d != ".mdbatch-journal"]
        for n in names:
            st = os.lstat(os.path.join(top, n))
            if stat.S_ISREG(st.st_mode):
                out[os.path.relpath(os.path.join(top, n), root)] = stat.S_IMODE(st.st_mode)
    return out


def test_crash_at_every_step_of_a_store_apply_split_by_mode(tmp_path: Path) -> None:
    """Groups whose paths differ in mode (one store object, the other sets linked apart) recover
    from a crash anywhere, and the re-run finishes with every file's bytes and mode."""
    template = tmp_path / "template"
    build_template(template, sims=4)
    for rel, m in (("sim01/topology.top", 0o400), ("sim02/topology.top", 0o400), ("sim03/prod.mdp", 0o440), ("sim02/traj/big.xtc", 0o600)):
        os.chmod(template / rel, m)
    before, modes_before = snapshot(template), modes(template)
    probe = tmp_path / "probe"
    shutil.copytree(template, probe, symlinks=True)
    total = run_forked(probe, None, "hardlink", tmp_path / "probe-store")
    assert total > 10
    for k in range(total):
        root, store = tmp_path / f"run{k}", tmp_path / f"store{k}"
        shutil.copytree(template, root, symlinks=True)
        run_forked(root, k, "hardlink", store)
        only_originals(snapshot(root), before)
        reports = recover_pending(str(root))
        assert len(reports) <= 1 and all(not r.anomalies for r in reports)
        assert snapshot(root) == before, f"after recovery from a crash at step {k}"
        now = modes(root)
        assert all(now[p] == modes_before[p] for p, st in ((p, os.lstat(root / p)) for p in now) if st.st_nlink == 1), f"step {k}"
        again = dedupe(root, store=store, statuses=None, mode="local", progress=False)
        assert again.exit_code == 0 and again.applied is not None and again.applied.skipped == [], f"step {k}"
        assert snapshot(root) == before
        done = dedupe(root, store=store, statuses=None, mode="local", progress=False)
        assert done.applied is not None and (done.applied.links, done.exit_code) == (0, 0), (
            f"re-run after a crash at step {k} did not complete"
        )
        assert {p: m & ~0o222 for p, m in modes(root).items()} == {p: m & ~0o222 for p, m in modes_before.items()}
        assert Store.open(str(store)).verify()["corrupt"] == 0
        shutil.rmtree(root)


_CHILD = r"""
import sys, time
from mdbatch.dedupe import dedupe
root, link, store, threads = sys.argv[1], sys.argv[2], (sys.argv[3] or None), int(sys.argv[4])
seen = []
def hook(step):
    if not seen:
        print("APPLYING", flush=True)
    seen.append(step)
    if step == "replaced":
        time.sleep(0.0003)  # spread the apply over time so random kills land everywhere
dedupe(root, apply=store is None, store=store, link=link, statuses=None, mode="local", progress=False, hook=hook, chunk_actions=16,
       link_threads=threads)
print("DONE", flush=True)
"""


@pytest.mark.slow
def test_sigkill_at_random_moments_loses_nothing(tmp_path: Path) -> None:
    template = tmp_path / "template"
    build_template(template, sims=40)
    before = snapshot(template)
    rng = random.Random(20240301)
    modes = [("hardlink", False), ("symlink", False), ("hardlink", True)]

    def start(root: Path, link: str, store: Path | None, threads: int = 1) -> subprocess.Popen[str]:
        return subprocess.Popen(
            [sys.executable, "-c", _CHILD, str(root), link, str(store or ""), str(threads)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )

    # Calibrate: how long does the apply phase take here?
    calib = tmp_path / "calib"
    shutil.copytree(template, calib, symlinks=True)
    proc = start(calib, "hardlink", None)
    assert proc.stdout is not None and proc.stdout.readline().strip() == "APPLYING"
    t0 = time.monotonic()
    out, err = proc.communicate(timeout=120)
    span = time.monotonic() - t0
    assert "DONE" in out, err

    kills = attempts = 0
    while kills < 24 and attempts < 80:
        attempts += 1
        link, use_store = modes[attempts % len(modes)]
        root = tmp_path / f"k{attempts}"
        store = tmp_path / f"store{attempts}" if use_store else None
        shutil.copytree(template, root, symlinks=True)
        proc = start(root, link, store, 4 if attempts % 4 < 2 else 1)  # links on the threads, or one by one
        assert proc.stdout is not None and proc.stdout.readline().strip() == "APPLYING"
        time.sleep(rng.uniform(0.0, span))
        proc.send_signal(signal.SIGKILL)
        proc.communicate(timeout=60)
        only_originals(snapshot(root), before)
        if proc.returncode == -signal.SIGKILL and pending_journals(str(root)):
            kills += 1  # killed with the apply's journal open: mid-apply
        else:
            span *= 0.8  # the kill came too late (a loaded machine runs slower than the calibration)
        if attempts % 2:  # explicit recovery of the named journal...
            for journal in pending_journals(str(root)):
                assert not recover_journal(journal).anomalies
            assert snapshot(root) == before
        # ...or the next run recovers on its own; either way it completes the job.
        again = dedupe(root, apply=store is None, store=store, link=link, statuses=None, mode="local", progress=False)
        assert again.exit_code == 0 and snapshot(root) == before
        assert dedupe(root, mode="local", progress=False).summary["reclaimable_bytes"] == 0
        shutil.rmtree(root)
    assert kills == 24, f"only {kills} of {attempts} runs were killed in the middle of an apply (the README says 24)"


CONTENTS = [b"x", b"shared itp\n" * 30, b"A" * 200_000, b"B" * 200_000, b"", bytes(range(256)) * 8]
NAMES = ["a.top", "b.mdp", "d/c.itp", "d/e/f.bin", "g.dat"]


@st.composite
def trees(draw: st.DrawFn) -> dict[str, object]:
    sims = draw(st.integers(2, 4))
    layout: dict[str, dict[str, bytes]] = {}
    for i in range(sims):
        names = draw(st.lists(st.sampled_from(NAMES), min_size=1, max_size=4, unique=True))
        layout[f"s{i}"] = {n: CONTENTS[draw(st.integers(0, len(CONTENTS) - 1))] for n in names}
    statuses = {name: draw(st.sampled_from(["completed", "production"])) for name in layout}
    hardlinks = draw(st.booleans())
    link = draw(st.sampled_from(["hardlink", "symlink", "store"]))
    crash_at = draw(st.one_of(st.none(), st.integers(0, 30)))
    return {"layout": layout, "statuses": statuses, "hardlinks": hardlinks, "link": link, "crash_at": crash_at}


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(trees())
def test_apply_and_recover_never_change_what_any_path_reads(spec: dict[str, object]) -> None:
    base = Path(tempfile.mkdtemp(prefix="mdbatch-prop-"))
    try:
        root = base / "root"
        root.mkdir()
        layout: dict[str, dict[str, bytes]] = spec["layout"]  # type: ignore[assignment]
        statuses: dict[str, str] = spec["statuses"]  # type: ignore[assignment]
        for name, files in layout.items():
            write_sim(root, name, files, statuses[name])
        if spec["hardlinks"]:  # some paths already share an inode
            first = next(iter(layout["s0"]))
            os.link(root / "s0" / first, root / "s0" / "hardlinked.copy")
        before = snapshot(root)
        link = str(spec["link"])
        store = base / "store" if link == "store" else None
        kind = "hardlink" if link == "store" else link
        run_forked(root, spec["crash_at"], kind, store)  # type: ignore[arg-type]
        only_originals(snapshot(root), before)
        recover_pending(str(root))
        assert snapshot(root) == before
        dedupe(root, apply=store is None, store=store, link=kind, statuses=None, mode="local", progress=False)
        assert snapshot(root) == before
        assert dedupe(root, mode="local", progress=False).summary["reclaimable_bytes"] == 0
    finally:
        for top, dirs, _files in os.walk(base):
            for d in dirs:
                os.chmod(os.path.join(top, d), 0o755)
        shutil.rmtree(base)
