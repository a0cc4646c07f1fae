"""What changed in a campaign between two scans: pure functions over plain data.

Files are new, missing, changed, moved (same size and digest at a new path; pairs are matched
across a whole run) or unchanged; simulations new, removed or status-changed; findings new,
resolved or persisting. The worker classifies a batch's files (`file_changes`, in `batch`); the
client's `history` records the rest and the catalog stores the records (`MDBATCH_CHANGES`).
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import pyarrow as pa

from .hashcache import CacheEntry

FILE_CHANGES = ("new", "missing", "changed", "moved", "unchanged")
SIMULATION_CHANGES = ("new", "removed", "status_changed")
FINDING_CHANGES = ("new", "resolved", "persisting")
#: The columns of a change record (MDBATCH_CHANGES): the run, then a `Change`.
CHANGE_COLUMNS = ["run_id", "scope", "change", "simulation", "item", "size", "digest", "detail"]


class Change(NamedTuple):
    """One change record: scope file|simulation|finding, the change, where, and what."""

    scope: str
    change: str
    simulation: str
    item: str
    size: int | None = None
    digest: str | None = None
    detail: str = ""


@dataclass(slots=True)
class ChangeCounts:
    """Per-scope counters of changes, including the unchanged files no record is stored for."""

    files: Counter[str] = field(default_factory=Counter)
    simulations: Counter[str] = field(default_factory=Counter)
    findings: Counter[str] = field(default_factory=Counter)

    def add(self, changes: Iterable[Change]) -> None:
        for c in changes:
            getattr(self, f"{c.scope}s")[c.change] += 1

    def to_dict(self) -> dict[str, dict[str, int]]:
        return {
            "files": {k: self.files.get(k, 0) for k in FILE_CHANGES},
            "simulations": {k: self.simulations.get(k, 0) for k in SIMULATION_CHANGES},
            "findings": {k: self.findings.get(k, 0) for k in FINDING_CHANGES},
        }


def file_changes(
    previous: Mapping[str, Mapping[str, CacheEntry]], files: pa.Table, simulations: Iterable[str]
) -> tuple[list[Change], int, set[str]]:
    """Classify the files of a batch against the previous inventory of its simulations.

    Returns (change records, number of unchanged files, simulations whose inventory is identical
    to the recorded one and need no rewrite). A file whose digest could not be taken this time
    (unreadable, changed during the scan) counts as changed only if its size moved.
    """
    now: dict[str, dict[str, tuple[int, int, int, int, int, str | None]]] = defaultdict(dict)
    cols = files.select(["simulation", "path", "size", "mtime_ns", "ctime_ns", "inode", "device", "xxh3_128"]).to_pydict()
    for sim, path, size, mtime, ctime, ino, dev, digest in zip(*cols.values(), strict=True):
        now[sim][path] = (size, mtime, ctime, ino, dev, digest)
    changes: list[Change] = []
    unchanged = 0
    identical: set[str] = set()
    for sim in simulations:
        before = previous.get(sim, {})
        after = now.get(sim, {})
        same_sim = len(before) == len(after)
        for path, (size, mtime, ctime, ino, dev, digest) in after.items():
            old = before.get(path)
            if old is None:
                changes.append(Change("file", "new", sim, path, size, digest))
                same_sim = False
            elif old.size != size or (digest is not None and old.xxh3_128 is not None and digest != old.xxh3_128):
                changes.append(Change("file", "changed", sim, path, size, digest, f"{old.size} -> {size} bytes"))
                same_sim = False
            else:
                unchanged += 1
                if (old.mtime_ns, old.ctime_ns, old.inode, old.device, old.xxh3_128) != (mtime, ctime, ino, dev, digest):
                    same_sim = False
        for path, old in before.items():
            if path not in after:
                changes.append(Change("file", "missing", sim, path, old.size, old.xxh3_128))
                same_sim = False
        if same_sim and before:
            identical.add(sim)
    return changes, unchanged, identical


def pair_moves(new: Iterable[Change], missing: Iterable[Change]) -> tuple[list[Change], list[Change], list[Change]]:
    """Match missing and new files with the same size and digest into moves.

    Returns (moves, new files left, missing files left). Each missing file pairs with at most one
    new file, in a deterministic order.
    """
    pool: dict[tuple[int | None, str], list[Change]] = defaultdict(list)
    for m in sorted(missing, key=lambda c: (c.simulation, c.item)):
        if m.digest:
            pool[(m.size, m.digest)].append(m)
    unmatched_missing = [m for m in missing if not m.digest]
    moves: list[Change] = []
    left_new: list[Change] = []
    for n in sorted(new, key=lambda c: (c.simulation, c.item)):
        candidates = pool.get((n.size, n.digest or ""))
        if n.digest and candidates:
            src = candidates.pop(0)
            moves.append(Change("file", "moved", n.simulation, n.item, n.size, n.digest, f"from {src.simulation}/{src.item}"))
        else:
            left_new.append(n)
    left_missing = unmatched_missing + [m for group in pool.values() for m in group]
    return moves, left_new, left_missing


def simulation_changes(previous: Mapping[str, str], current: Mapping[str, str], reappeared: Collection[str] = ()) -> list[Change]:
    """New simulations and status changes for the simulations of a batch (dir -> status); those in
    `reappeared` were recorded removed and are new again."""
    out: list[Change] = []
    for sim, status in current.items():
        old = previous.get(sim)
        if old is None:
            out.append(Change("simulation", "new", sim, sim, detail=f"{status} (reappeared)" if sim in reappeared else status))
        elif old != status:
            out.append(Change("simulation", "status_changed", sim, sim, detail=f"{old} -> {status}"))
    return out


def removed_simulations(previous: Iterable[str], seen: set[str]) -> list[Change]:
    """Simulations the previous run had that a complete walk of the root no longer finds."""
    return [Change("simulation", "removed", sim, sim) for sim in sorted(set(previous) - seen)]


def finding_changes(before: Iterable[tuple[str, str, str]], after: Iterable[tuple[str, str, str]]) -> tuple[list[Change], int]:
    """(new and resolved findings as change records, number persisting) between two runs."""
    old, new = set(before), set(after)
    records = [Change("finding", "new", s, f"{k}:{i}") for s, k, i in sorted(new - old)]
    records += [Change("finding", "resolved", s, f"{k}:{i}") for s, k, i in sorted(old - new)]
    return records, len(old & new)


def describe(changes: Mapping[str, Mapping[str, int]], previous_run: str | None, *, first: bool | None = None) -> str:
    """The one-paragraph summary of changes an audit prints at its end (`first`: nothing was recorded
    of the root before; by default, when there is no previous completed audit)."""
    if first if first is not None else previous_run is None:
        return "First audit of this root: everything is new."
    f, s, g = changes["files"], changes["simulations"], changes["findings"]
    since = f"Since run {previous_run}" if previous_run else "Since each simulation's latest scan"
    parts = [
        f"{since}: files {f['new']} new, {f['missing']} missing, {f['changed']} changed, {f['moved']} moved, {f['unchanged']} unchanged",
        f"simulations {s['new']} new, {s['removed']} removed, {s['status_changed']} changed status",
        f"findings {g['new']} new, {g['resolved']} resolved, {g['persisting']} persisting.",
    ]
    return "; ".join(parts)


def net_finding_changes(records: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """The net effect of finding records over several runs (in run order): a finding new in one run and
    resolved in a later one changed nothing; one resolved then new again persisted."""
    first: dict[tuple[str, str], Mapping[str, Any]] = {}
    last: dict[tuple[str, str], Mapping[str, Any]] = {}
    for record in records:
        key = (record["simulation"], record["item"])
        first.setdefault(key, record)
        last[key] = record
    out = []
    for key, start in first.items():
        end = last[key]
        existed, exists = start["change"] == "resolved", end["change"] == "new"
        if existed != exists:
            out.append(dict(end))
    return out
