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

from ..inventory import simulation_status, stat_files, top_level

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
    recorded: bool = False  # stats as an audit recorded them (catalog_listing): re-stat before trusting


def list_simulation(sim_dir: str, root: str) -> tuple[str, list[tuple[str, int, int, int, int, int]], list[tuple[str, str]]]:
    """(status, [(rel, size, mtime_ns, ctime_ns, inode, device)], [(rel, error)]) of one simulation.

    Symlinks (to files or directories) are neither followed nor listed; FIFOs and devices are skipped.
    """
    errors: list[tuple[str, str]] = []
    base = os.path.relpath(sim_dir, root).replace(os.sep, "/")
    base = "" if base == "." else base

    def note(kind: str, item: str, detail: str) -> None:
        errors.append((f"{base}/{item}" if base and item != "." else base or item, detail))

    listed = stat_files(sim_dir, note)
    prefix = f"{base}/" if base else ""
    rows = [
        (prefix + rel, size, mtime, ctime, ino, dev)
        for rel, size, mtime, ctime, ino, dev in listed
        if not rel.rsplit("/", 1)[-1].startswith(TMP_PREFIX)
    ]
    return simulation_status(top_level(r[0] for r in listed)), rows, errors


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
