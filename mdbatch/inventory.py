"""A simulation's file inventory: the walk that lists it, and the fingerprint that proves it unchanged.

A simulation's fingerprint is a digest of every inventoried file's path and stat fields (size,
mtime_ns, ctime_ns, inode, device), salted with what shaped its scan (mdbatch version, hash-cache
version, scan options). The scan's result is a function of exactly these: its findings, identity
and status come from the bytes of those files, which the hash cache already trusts while their stat
fields hold. So when a fresh walk and one lstat per file give the recorded fingerprint
(`check_unchanged`), the simulation's scan would be the recorded one, and an audit keeps it without
building a record per file.

The walk lists regular files only, yet what sits at the registry's path matters even when it is
none: a directory, FIFO or symlink there (or a `.analysis` that is no directory) is a finding. Such
an entry (`odd_entries`) is salted into the fingerprint too; an ordinary simulation has none, so
its fingerprint stays paths and stats alone.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import xxhash

from . import findings as fk
from .paths import display

_EQUILIBRATION = ("min.gro", "nvt.gro", "npt.gro")

#: The analysis directory and its registry (registry.ANALYSIS_DIRNAME and REGISTRY_FILENAME).
ANALYSIS_DIR = ".analysis"
REGISTRY_PATH = ".analysis/metadata.json"

_FILE_TYPES = (
    (stat.S_ISDIR, "a directory"),
    (stat.S_ISREG, "a regular file"),
    (stat.S_ISLNK, "a symbolic link"),
    (stat.S_ISFIFO, "a FIFO"),
    (stat.S_ISSOCK, "a socket"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
)

#: (relative path, size, mtime_ns, ctime_ns, inode, device) of one file, as the fingerprint takes it.
StatRow = tuple[str, int, int, int, int, int]


def simulation_status(top_level_names: set[str] | frozenset[str]) -> str:
    """MDFactory's status rule from the files at the top of a simulation directory."""
    if "prod.gro" in top_level_names:
        return "completed"
    if "prod.xtc" in top_level_names:
        return "production"
    if all(n in top_level_names for n in _EQUILIBRATION):
        return "equilibrated"
    return "build"


def walk(sim: str, on_error: Callable[[str, str, str], None]) -> dict[str, str]:
    """Every regular file below the simulation directory (relative path -> absolute path), sorted.

    Symlinks (to files or directories, loops included) are never followed and not inventoried.
    Problems are reported as `on_error(finding kind, item, detail)`; the walk goes on.
    """
    files: dict[str, str] = {}
    stack: list[tuple[str, str]] = [("", sim)]
    while stack:
        rel_dir, abs_dir = stack.pop()
        try:
            with os.scandir(abs_dir) as it:
                entries = list(it)
        except FileNotFoundError:
            if rel_dir:
                on_error(fk.CHANGED_DURING_SCAN, display(rel_dir), "directory vanished during the scan")
            else:
                on_error(fk.UNREADABLE, ".", "simulation directory vanished before the scan")
            continue
        except OSError as exc:
            on_error(fk.UNREADABLE, display(rel_dir) or ".", exc.strerror or str(exc))
            continue
        for entry in entries:
            rel = f"{rel_dir}/{entry.name}" if rel_dir else entry.name
            try:
                if entry.is_dir(follow_symlinks=False):
                    stack.append((rel, entry.path))
                elif entry.is_file(follow_symlinks=False):
                    files[rel] = entry.path
            except OSError as exc:
                on_error(fk.UNREADABLE, display(rel), exc.strerror or str(exc))
    return dict(sorted(files.items()))


def stat_files(sim: str, on_error: Callable[[str, str, str], None]) -> list[StatRow]:
    """`walk` plus one lstat per file: a StatRow per regular file, in path order. A file that
    vanished, could not be stat'ed or stopped being a regular file meanwhile is reported and left out."""
    rows: list[StatRow] = []
    for rel, path in walk(sim, on_error).items():
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            on_error(fk.CHANGED_DURING_SCAN, display(rel), "file vanished during the scan")
            continue
        except OSError as exc:
            on_error(fk.UNREADABLE, display(rel), exc.strerror or str(exc))
            continue
        if not stat.S_ISREG(st.st_mode):
            on_error(fk.CHANGED_DURING_SCAN, display(rel), "file stopped being a regular file during the scan")
            continue
        rows.append((rel, st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino, st.st_dev))
    return rows


def file_type(mode: int) -> str:
    """What an lstat mode is, in words for findings and errors: "a directory", "a FIFO", ..."""
    return next((words for test, words in _FILE_TYPES if test(mode)), "a file of unknown type")


def _lstat(path: str) -> os.stat_result | None:
    """lstat, or None when nothing is there (a missing parent or a parent that is a file included)."""
    try:
        return os.lstat(path)
    except (FileNotFoundError, NotADirectoryError):
        return None


def odd_entries(sim: str) -> dict[str, os.stat_result]:
    """What sits where MDFactory expects a directory (`.analysis`) or a regular file (its registry)
    but is something else, by relative path with its lstat; {} when each is as expected or absent.
    Raises OSError when a path cannot be looked at (permissions)."""
    analysis = _lstat(os.path.join(sim, ANALYSIS_DIR))
    if analysis is None:
        return {}
    if not stat.S_ISDIR(analysis.st_mode):
        return {ANALYSIS_DIR: analysis}
    registry = _lstat(os.path.join(sim, REGISTRY_PATH))
    if registry is None or stat.S_ISREG(registry.st_mode):
        return {}
    return {REGISTRY_PATH: registry}


def odd_salt(odd: dict[str, os.stat_result]) -> str:
    """The fingerprint salt for `odd_entries`: type, inode and ctime of each (a symlink made anew
    moves both); "" when there are none, so ordinary fingerprints are unchanged."""
    return "".join(f"|{rel} {stat.S_IFMT(st.st_mode):o} {st.st_ino} {st.st_ctime_ns}" for rel, st in sorted(odd.items()))


def registry_absence(
    sim: str, on_error: Callable[[str, str, str], None], unreadable: Iterable[str] = ()
) -> tuple[bool, dict[str, os.stat_result]]:
    """For a simulation whose walk found no registry file: (whether its path holds nothing at all,
    `odd_entries`). What is there instead is reported as `on_error(registry_corrupt, ...)`; a path
    that cannot be looked at as unreadable, unless `unreadable` already names `.` or `.analysis`.

    A registry symlink is never followed, even to a file inside the simulation: the scan reads
    nothing through a symlink, and the fingerprint could not see its target change.
    """
    try:
        odd = odd_entries(sim)
    except OSError as exc:
        if not {".", ANALYSIS_DIR} & set(unreadable):
            on_error(fk.UNREADABLE, REGISTRY_PATH, exc.strerror or str(exc))
        return False, {}
    for rel, st in odd.items():
        what, expected = ("registry", "a regular file") if rel == REGISTRY_PATH else (rel, "a directory")
        unfollowed = " (symlinks are never followed)" if stat.S_ISLNK(st.st_mode) else ""
        on_error(fk.REGISTRY_CORRUPT, REGISTRY_PATH, f"{what} is {file_type(st.st_mode)}, not {expected}{unfollowed}")
    return not odd, odd


def loose_parquets(rels: Iterable[str], registered: set[str]) -> list[str]:
    """The parquet files at the top of `.analysis` that are not in `registered` (MDFactory's extra files)."""
    prefix = f"{ANALYSIS_DIR}/"
    return [rel for rel in rels if rel.startswith(prefix) and rel.endswith(".parquet") and rel.count("/") == 1 and rel not in registered]


def top_level(rels: Iterable[str]) -> set[str]:
    """The names, among inventory paths, of the files at the top of the simulation directory."""
    return {rel for rel in rels if "/" not in rel}


def fingerprint(rows: Iterable[StatRow], salt: str) -> str:
    """The fingerprint of an inventory: xxh3-128 over the salt and every row, in path order."""
    # One encode and one hash call for the whole inventory (the same bytes as row by row, half the time).
    text = "".join([f"{rel}\0{size},{mtime},{ctime},{ino},{dev}\n" for rel, size, mtime, ctime, ino, dev in rows])
    return xxhash.xxh3_128_hexdigest(salt.encode() + os.fsencode(text))


@dataclass(frozen=True, slots=True)
class Unchanged:
    """What a stat-only check of an unchanged simulation learned: its status, file count and bytes."""

    status: str
    files: int
    bytes: int


class _WalkProblem(Exception):
    """Any problem the walk reports: the simulation cannot be proven unchanged."""


def _stop(kind: str, item: str, detail: str) -> None:
    raise _WalkProblem(kind, item, detail)


def check_unchanged(sim: str, salt: str, expected: str) -> Unchanged | None:
    """Walk `sim` and lstat every file: the simulation's status and totals if its fingerprint is
    still `expected`, else None (anything changed, or anything could not be walked or stat'ed)."""
    try:
        rows = stat_files(sim, _stop)
        odd = odd_entries(sim)
    except (_WalkProblem, OSError):
        return None
    if fingerprint(rows, salt + odd_salt(odd)) != expected:
        return None
    return Unchanged(simulation_status(top_level(r[0] for r in rows)), len(rows), sum(r[1] for r in rows))
