"""Stage 0: list every regular file of a batch of simulations with its stat (no reads).

`list_batch` is what a task runs: pure (no Dask, no database), it walks each simulation directory
without following symlinks and returns compact columns for the whole batch (``array`` columns
pickle as raw bytes; Arrow is not used here because its first conversion imports pandas, ~0.5 s).
Files outside any simulation directory are not part of the campaign and are never listed.
"""

from __future__ import annotations

import os
import time
from array import array
from collections.abc import Sequence
from dataclasses import dataclass

#: Temporary names the apply step creates beside a file; never listed as campaign files.
TMP_PREFIX = ".mdbatch-tmp-"

@dataclass(frozen=True, slots=True)
class ListingBatch:
    """The files of a batch of simulations as columns, plus per-simulation status."""

    index: int
    rel: list[str]  # path relative to the root (undecodable bytes as surrogate escapes)
    sim: array  # index into `simulations`
    size: array
    mtime_ns: array
    ctime_ns: array
    inode: array
    device: array
    simulations: tuple[str, ...]  # relative to the root (surrogateescape str)
    statuses: tuple[str, ...]
    unreadable: tuple[tuple[str, str], ...]
    elapsed_s: float


def list_simulation(sim_dir: str, root: str) -> tuple[str, list[tuple[str, int, int, int, int, int]], list[tuple[str, str]]]:
    """(status, [(rel, size, mtime_ns, ctime_ns, inode, device)], [(rel, error)]) of one simulation.

    Symlinks (to files or directories) are neither followed nor listed; FIFOs and devices are skipped.
    """
    # Imported here: mdbatch.scan pulls in pyarrow (~0.3 s), which `store` and `--recover` never need.
    from ..scan import simulation_status

    rows: list[tuple[str, int, int, int, int, int]] = []
    errors: list[tuple[str, str]] = []
    base = os.path.relpath(sim_dir, root).replace(os.sep, "/")
    base = "" if base == "." else base
    top: set[str] = set()
    stack: list[tuple[str, str]] = [(base, sim_dir)]
    first = True
    while stack:
        rel_dir, abs_dir = stack.pop()
        try:
            with os.scandir(abs_dir) as it:
                entries = list(it)
        except OSError as exc:
            errors.append((rel_dir or ".", exc.strerror or str(exc)))
            continue
        if first:
            top = {e.name for e in entries}
            first = False
        for entry in entries:
            rel = f"{rel_dir}/{entry.name}" if rel_dir else entry.name
            try:
                if entry.is_dir(follow_symlinks=False):
                    stack.append((rel, entry.path))
                elif entry.is_file(follow_symlinks=False):
                    if entry.name.startswith(TMP_PREFIX):
                        continue
                    st = entry.stat(follow_symlinks=False)
                    rows.append((rel, st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino, st.st_dev))
            except OSError as exc:
                errors.append((rel, exc.strerror or str(exc)))
    return simulation_status(top), rows, errors


def list_batch(sim_dirs: Sequence[str], root: str, index: int = 0) -> ListingBatch:
    """List every simulation of a batch (what one task runs)."""
    started = time.perf_counter()
    rels: list[str] = []
    cols = (array("i"), array("q"), array("q"), array("q"), array("Q"), array("Q"))
    sims: list[str] = []
    statuses: list[str] = []
    unreadable: list[tuple[str, str]] = []
    for k, sim_dir in enumerate(sim_dirs):
        status, rows, errors = list_simulation(sim_dir, root)
        rel_sim = os.path.relpath(sim_dir, root).replace(os.sep, "/")
        sims.append(rel_sim)
        statuses.append(status)
        unreadable.extend(errors)
        for rel, size, mtime, ctime, ino, dev in rows:
            rels.append(rel)
            cols[0].append(k)
            cols[1].append(size)
            cols[2].append(mtime)
            cols[3].append(ctime)
            cols[4].append(ino)
            cols[5].append(dev)
    return ListingBatch(index, rels, *cols, tuple(sims), tuple(statuses), tuple(unreadable), time.perf_counter() - started)
