"""Fixtures for the dedupe tests: small hand-made campaigns and byte-exact snapshots of a tree."""

from __future__ import annotations

import hashlib
import os
import stat
from collections.abc import Callable, Mapping
from pathlib import Path

import pytest

from mdbatch.dedupe.journal import JOURNAL_DIRNAME

from ..conftest import need_service

#: Top-level files that give a simulation each status (MDFactory's rule).
STATUS_FILES = {
    "completed": ("min.gro", "nvt.gro", "npt.gro", "prod.gro"),
    "production": ("prod.xtc",),
    "equilibrated": ("min.gro", "nvt.gro", "npt.gro"),
    "build": (),
}


def write_sim(root: Path, name: str, files: Mapping[str | bytes, bytes], status: str = "completed") -> Path:
    """A simulation directory `root/name` with a build.yaml marker, status files and `files`."""
    sim = root / name
    sim.mkdir(parents=True, exist_ok=True)
    (sim / "build.yaml").write_bytes(f"simulation: {name}\n".encode())
    for stage in STATUS_FILES[status]:
        (sim / stage).write_bytes(f"{stage} of {name}\n".encode())
    for rel, data in files.items():
        target = os.path.join(os.fsencode(sim), os.fsencode(rel))
        os.makedirs(os.path.dirname(target), exist_ok=True)
        with open(target, "wb") as handle:
            handle.write(data)
    return sim


def snapshot(root: str | os.PathLike[str]) -> dict[bytes, tuple[str, str]]:
    """What every path under `root` reads: sha256 of the bytes (through symlinks), or the link text
    of a symlink that cannot be read as a file. The journal directory is left out."""
    out: dict[bytes, tuple[str, str]] = {}
    base = os.fsencode(root)
    stack = [base]
    while stack:
        current = stack.pop()
        with os.scandir(current) as it:
            for entry in it:
                rel = os.path.relpath(entry.path, base)
                if rel == os.fsencode(JOURNAL_DIRNAME):
                    continue
                st = entry.stat(follow_symlinks=False)
                if stat.S_ISDIR(st.st_mode):
                    stack.append(entry.path)
                elif stat.S_ISLNK(st.st_mode):
                    try:
                        with open(entry.path, "rb") as handle:
                            out[rel] = ("file", hashlib.sha256(handle.read()).hexdigest())
                    except OSError:
                        out[rel] = ("symlink", os.fsdecode(os.readlink(entry.path)))
                else:
                    with open(entry.path, "rb") as handle:
                        out[rel] = ("file", hashlib.sha256(handle.read()).hexdigest())
    return out


def brute_force_groups(root: str | os.PathLike[str], sims: list[str], min_size: int = 1) -> list[list[str]]:
    """Groups of identical files under the simulation dirs, by sha256 of every byte (the slow truth)."""
    by: dict[tuple[int, str], list[str]] = {}
    base = os.fsencode(root)
    for sim in sims:
        for top, dirs, names in os.walk(os.fsencode(sim)):
            for n in names:
                p = os.path.join(top, n)
                st = os.lstat(p)
                if not stat.S_ISREG(st.st_mode) or st.st_size < max(1, min_size):
                    continue
                with open(p, "rb") as handle:
                    digest = hashlib.sha256(handle.read()).hexdigest()
                by.setdefault((st.st_size, digest), []).append(os.fsdecode(os.path.relpath(p, base)))
            dirs[:] = [d for d in dirs if not os.path.islink(os.path.join(top, d))]
    return sorted(sorted(v, key=os.fsencode) for v in by.values() if len(v) > 1)


@pytest.fixture
def tree(tmp_path: Path) -> Callable[..., Path]:
    """Factory: `tree({"simA": {"a.top": b"..."}, ...}, statuses={"simA": "build"})` -> campaign root."""
    counter = iter(range(1000))

    def make(sims: Mapping[str, Mapping[str | bytes, bytes]], statuses: Mapping[str, str] | None = None) -> Path:
        root = tmp_path / f"tree{next(counter)}"
        root.mkdir()
        for name, files in sims.items():
            write_sim(root, name, files, (statuses or {}).get(name, "completed"))
        return root

    return make


def _mount(args: list[str]) -> bool:
    import subprocess

    try:
        return subprocess.run(args, capture_output=True, check=False, timeout=60).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


@pytest.fixture
def mount_tmpfs():  # type: ignore[no-untyped-def]
    """Factory: mount a small tmpfs (another device) on an existing empty directory; skipped where
    mounting is not allowed (a failure under CI=true). Everything mounted is unmounted at teardown."""
    mounted: list[Path] = []

    def mount(where: Path) -> Path:
        where.mkdir(parents=True, exist_ok=True)
        need_service(_mount(["mount", "-t", "tmpfs", "-o", "size=64m", "tmpfs", str(where)]), "cannot mount a tmpfs here (needs root)")
        mounted.append(where)
        return where

    try:
        yield mount
    finally:
        for where in reversed(mounted):
            _mount(["umount", "-l", str(where)])


@pytest.fixture
def other_device(tmp_path: Path, mount_tmpfs):  # type: ignore[no-untyped-def]
    """A directory on another filesystem (a small tmpfs)."""
    return mount_tmpfs(tmp_path / "other-device")


@pytest.fixture
def reflink_fs(tmp_path: Path):  # type: ignore[no-untyped-def]
    """A directory on an XFS loop filesystem with reflink=1; skipped without root or mkfs.xfs (a
    failure under CI=true)."""
    import shutil

    need_service(shutil.which("mkfs.xfs") is not None, "mkfs.xfs not installed (apt-get install xfsprogs) for the reflink tests")
    image, mnt = tmp_path / "xfs.img", tmp_path / "xfs"
    mnt.mkdir()
    with open(image, "wb") as handle:
        handle.truncate(320 << 20)
    made = _mount(["mkfs.xfs", "-q", "-m", "reflink=1", str(image)]) and _mount(["mount", "-o", "loop", str(image), str(mnt)])
    need_service(made, "cannot make and mount an XFS loop filesystem here (needs root and loop devices)")
    try:
        yield mnt
    finally:
        _mount(["umount", "-l", str(mnt)])
