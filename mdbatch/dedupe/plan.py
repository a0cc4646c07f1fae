"""Staged, campaign-wide grouping of identical files: size, inode, head+tail, whole file.

Each stage only looks at what the previous one left: a unique size cannot be a duplicate; paths
that already share an inode are one file (hashed once); a head+tail xxh3 splits same-size files
cheaply; only what still collides is read whole. Grouping is global (the client holds every
candidate); the reading fans out through a runner (the Dask cluster, or in-process for small work).
Digests an audit already recorded are reused when the file is provably unchanged.
"""

from __future__ import annotations

import math
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from ..engine import batches
from .catalog_listing import CatalogListing
from .digests import CHANGED, ERROR, FULL, PARTIAL, WHOLE_LIMIT, DigestSource, Item, Outcome, hash_batch, read_cost, split
from .listing import ListingBatch, list_batch
from .model import DuplicateGroup, FileRef, FindResult, FindStats, sort_key

#: Simulations per listing task.
LIST_BATCH = 250
#: Upper bounds of one hash task.
TASK_MAX_FILES = 4000
TASK_MAX_BYTES = 512 << 20
#: Serial cost model used to decide whether a stage is worth a cluster (seconds per file / per byte).
COST_PER_FILE_S = 15e-6
COST_PER_BYTE_S = 1 / 2.0e9
LIST_COST_PER_SIM_S = 80e-6


class Runner(Protocol):
    """Something that maps a task function over groups and streams results (engine.Fanout, LocalRunner)."""

    n_workers: int

    def stream(
        self, fn: Callable[..., Any], groups: Iterable[Any], *args: Any, prefix: str = ..., in_flight: int | None = ...
    ) -> Iterator[Any]: ...


class LocalRunner:
    """Runs tasks in this process, one after the other (small campaigns, tests)."""

    n_workers = 1

    def stream(
        self, fn: Callable[..., Any], groups: Iterable[Any], *args: Any, prefix: str = "task", in_flight: int | None = None
    ) -> Iterator[Any]:
        for index, group in enumerate(groups):
            yield fn(group, *args, index=index)


#: Given a stage name and its estimated serial seconds, the runner to use.
RunnerFor = Callable[[str, float], Runner]


@dataclass(frozen=True, slots=True)
class FindOptions:
    """What counts and how reading is done."""

    min_size: int = 1
    io_threads: int = 1


@dataclass(slots=True)
class _Rep:
    """One inode of a size class: the files (paths) that share it and what is known of its content."""

    files: list[FileRef]
    seq: int  # listing position of its first path: hashing follows directory order
    full: str | None = None
    partial: str | None = None
    dropped: bool = False

    @property
    def ref(self) -> FileRef:
        return self.files[0]

    def item(self) -> Item:
        r = self.files[0]
        return (r.rel, r.size, r.mtime_ns, r.ctime_ns, r.inode, r.device)


def find_duplicates(
    root: str,
    sim_dirs: Sequence[str],
    runner_for: RunnerFor | None = None,
    options: FindOptions | None = None,
    digests: DigestSource | None = None,
    log: Callable[[str], None] | None = None,
    recorded: CatalogListing | None = None,
) -> FindResult:
    """Every group of identical non-empty files (size + xxh3-128) across the simulations of `root`.

    `runner_for(stage, estimated_serial_seconds)` picks where each stage runs (default: here).
    `recorded`: the catalog's listing of the simulations it knows (only their candidates are re-statted).
    """
    options = options or FindOptions()
    runner_for = runner_for or (lambda _stage, _est: LocalRunner())
    say = log or (lambda _msg: None)
    stats = FindStats(simulations=len(sim_dirs))
    t0 = time.perf_counter()
    refs = _list(root, sim_dirs, runner_for, options, stats, recorded)
    stats.timings["list_s"] = time.perf_counter() - t0
    say(f"listed {stats.files} files in {stats.simulations} simulations; {stats.size_candidates} share a size")

    t1 = time.perf_counter()
    classes = _inode_classes(refs)
    stats.inode_candidates = sum(len(reps) for reps in classes.values() if len(reps) > 1)
    if digests is not None:
        for reps in classes.values():
            for rep in reps:
                r = rep.ref
                rep.full = digests.lookup(r.device, r.inode, r.size, r.mtime_ns, r.ctime_ns)
                stats.reused_digests += rep.full is not None
    stats.timings["group_s"] = time.perf_counter() - t1

    t2 = time.perf_counter()
    partial_items = [rep for reps in classes.values() if len(reps) > 1 for rep in reps if _needs_partial(rep, reps)]
    stats.partial_hashed = len(partial_items)
    _hash(root, partial_items, False, runner_for, options, stats)
    stats.timings["head_tail_s"] = time.perf_counter() - t2

    t3 = time.perf_counter()
    full_items: list[_Rep] = []
    for reps in classes.values():
        live = [r for r in reps if not r.dropped]
        for rep in _survivors(live):
            if rep.full is None:
                full_items.append(rep)
    stats.partial_candidates = sum(1 for reps in classes.values() for r in _survivors([x for x in reps if not x.dropped]))
    stats.full_hashed = len(full_items)
    stats.full_hashed_bytes = sum(r.ref.size for r in full_items)
    say(f"{stats.partial_candidates} candidates after head+tail; reading {stats.full_hashed} files whole")
    _hash(root, full_items, True, runner_for, options, stats)
    stats.timings["full_s"] = time.perf_counter() - t3

    groups = _final_groups(classes)
    stats.timings["find_s"] = time.perf_counter() - t0
    return FindResult(root, groups, stats)


def _list(
    root: str, sim_dirs: Sequence[str], runner_for: RunnerFor, options: FindOptions, stats: FindStats, recorded: CatalogListing | None
) -> list[FileRef]:
    """Stage 0+1: list every file, keep non-empty files over min_size whose size occurs twice or more."""
    listed: list[ListingBatch] = []
    if recorded is not None:
        from_catalog, sim_dirs = recorded.split(sim_dirs, root)
        listed.append(from_catalog)
    if sim_dirs:
        runner = runner_for("list", len(sim_dirs) * LIST_COST_PER_SIM_S)
        size = max(8, min(LIST_BATCH, math.ceil(len(sim_dirs) / max(1, runner.n_workers * 4))))
        streamed = runner.stream(list_batch, batches(iter(sim_dirs), size), root, prefix="dedupe-list")
        listed.extend(sorted(streamed, key=lambda b: b.index))
    minimum = max(1, options.min_size)
    counts: Counter[int] = Counter()
    physical: dict[tuple[int, int], int] = {}
    for batch in listed:
        for s in batch.statuses:
            stats.status[s] = stats.status.get(s, 0) + 1
        stats.unreadable.extend(batch.unreadable)
        stats.files += len(batch.rel)
        stats.bytes += sum(batch.size)
        physical.update(zip(zip(batch.device, batch.inode, strict=True), batch.size, strict=True))
        counts.update(s for s in batch.size if s >= minimum)
    stats.physical_bytes = sum(physical.values())
    stats.empty_or_small = stats.files - sum(counts.values())
    shared = {s for s, n in counts.items() if n > 1}
    refs: list[FileRef] = []
    for batch in listed:
        sims, statuses = batch.simulations, batch.statuses
        for i, s in enumerate(batch.size):
            if s in shared:
                k = batch.sim[i]
                listed_ref = FileRef(
                    batch.rel[i], sims[k], statuses[k], s, batch.mtime_ns[i], batch.ctime_ns[i], batch.inode[i], batch.device[i]
                )
                ref = recorded.restat(root, listed_ref) if batch.recorded and recorded is not None else listed_ref
                if ref is not None:
                    refs.append(ref)
    stats.size_candidates = len(refs)
    return refs


def _inode_classes(refs: list[FileRef]) -> dict[int, list[_Rep]]:
    """size -> one _Rep per inode (in listing order); paths sharing an inode sorted by bytes."""
    by_size: dict[int, dict[tuple[int, int], _Rep]] = defaultdict(dict)
    for seq, ref in enumerate(refs):
        inodes = by_size[ref.size]
        rep = inodes.get(ref.identity)
        if rep is None:
            inodes[ref.identity] = _Rep([ref], seq)
        else:
            rep.files.append(ref)
    classes: dict[int, list[_Rep]] = {}
    for size, inodes in by_size.items():
        for rep in inodes.values():
            if len(rep.files) > 1:
                rep.files.sort(key=lambda f: sort_key(f.rel))
        classes[size] = list(inodes.values())
    return classes


def _needs_partial(rep: _Rep, reps: list[_Rep]) -> bool:
    """A rep is read at the head+tail stage unless its full digest is known and no comparison needs it."""
    if rep.full is None:
        return True
    if rep.ref.size <= WHOLE_LIMIT:
        return False
    return any(r.full is None for r in reps)


def _survivors(reps: list[_Rep]) -> list[_Rep]:
    """Reps that may still have a twin (or are already one inode with several paths)."""
    if len(reps) == 1:
        return reps if len(reps[0].files) > 1 else []
    if all(r.full is not None for r in reps):
        counts: dict[str, int] = defaultdict(int)
        for r in reps:
            counts[r.full] += 1  # type: ignore[index]
        return [r for r in reps if counts[r.full] > 1 or len(r.files) > 1]  # type: ignore[index]
    keyed: dict[str, int] = defaultdict(int)
    for r in reps:
        keyed[_key(r)] += 1
    return [r for r in reps if keyed[_key(r)] > 1 or len(r.files) > 1]


def _key(rep: _Rep) -> str:
    if rep.partial is not None:
        return "p" + rep.partial
    return "f" + (rep.full or "")


def _hash(root: str, reps: list[_Rep], full: bool, runner_for: RunnerFor, options: FindOptions, stats: FindStats) -> None:
    """Hash `reps` in tasks; record digests, drop reps that changed or could not be read."""
    if not reps:
        return
    reps = sorted(reps, key=lambda r: r.seq)
    items = [r.item() for r in reps]
    cost = sum(read_cost(it, full) for it in items)
    runner = runner_for("full" if full else "head_tail", len(items) * COST_PER_FILE_S + cost * COST_PER_BYTE_S)
    tasks = max(1, runner.n_workers * 4)
    max_items = max(64, min(TASK_MAX_FILES, math.ceil(len(items) / tasks)))
    max_bytes = max(64 << 20, min(TASK_MAX_BYTES, math.ceil(cost / tasks)))
    chunks = list(split(items, max_items, max_bytes, full))
    starts = [0]
    for c in chunks:
        starts.append(starts[-1] + len(c))
    prefix = "dedupe-full" if full else "dedupe-headtail"
    for outcomes, index in runner.stream(_hash_task, chunks, root, full, options.io_threads, prefix=prefix):
        for offset, outcome in enumerate(outcomes):
            _record(reps[starts[index] + offset], outcome, stats)


def _hash_task(items: Sequence[Item], root: str, full: bool, io_threads: int, index: int = 0) -> tuple[list[Outcome], int]:
    """One hash task: outcomes plus the task's index (results arrive out of order)."""
    return hash_batch(items, root, full, io_threads), index


def _record(rep: _Rep, outcome: Outcome, stats: FindStats) -> None:
    code, value = outcome
    if code == FULL:
        rep.full = value
        rep.partial = None
    elif code == PARTIAL:
        rep.partial = value
    elif code == CHANGED:
        rep.dropped = True
        stats.changed.extend(f.rel for f in rep.files)
    elif code == ERROR:
        rep.dropped = True
        stats.unreadable.extend((f.rel, value) for f in rep.files)


def _final_groups(classes: dict[int, list[_Rep]]) -> list[DuplicateGroup]:
    """Groups of two or more paths per (size, full digest), largest reclaimable first."""
    groups: list[DuplicateGroup] = []
    for size, reps in classes.items():
        by_digest: dict[str, list[FileRef]] = defaultdict(list)
        for rep in reps:
            if rep.dropped or rep.full is None:
                continue
            by_digest[rep.full].extend(rep.files)
        for digest, files in by_digest.items():
            if len(files) > 1:
                groups.append(DuplicateGroup(digest, size, tuple(sorted(files, key=lambda f: sort_key(f.rel)))))
    groups.sort(key=lambda g: (-g.reclaimable_bytes, -g.size, g.digest))
    return groups
