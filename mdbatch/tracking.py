"""The run tracker: the hash cache and change detection wrapped around an audit's batches.

Before a batch is submitted the tracker looks up, in one catalog query, what the catalog knows
of the batch's simulations: their recorded inventory and their recorded status. The inventory
travels with the task, as an Arrow table: on the worker it is the hash cache (a file whose device,
inode, size, mtime_ns and ctime_ns still match is not read again) and, after the scan, the
baseline the batch's files are classified against (`runs.file_changes`), so the client does no
per-file work. When the batch's result comes back, the tracker returns the operations that record
its changes, written in the same transaction as the batch itself. At the end of a run it pairs
moves across the campaign, finds removed simulations, diffs the findings with the previous
audit, and stores per-stage snapshots.
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections import defaultdict
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from .catalog import schema
from .catalog.base import CatalogBackend
from .catalog.ops import Delete, Op, Upsert
from .paths import relative_to_root
from .records import BatchResult, scan_batch
from .runs import Change, ChangeCounts, FileState, PreviousFile, describe, file_changes, finding_changes, pair_moves, removed_simulations, simulation_changes
from .scan import CachedFile, ScanOptions

#: Bumped when what the cache stores changes meaning; entries of other versions are ignored.
CACHE_VERSION = schema.HASH_CACHE_VERSION
_INVENTORY_COLUMNS = ["simulation", "path", "size", "mtime_ns", "ctime_ns", "inode", "device", "xxh3_128", "sha256", "facts", "cache_version"]
_CHANGE_COLUMNS = ["run_id", "scope", "change", "simulation", "item", "size", "digest", "detail"]


@dataclass(frozen=True, slots=True)
class Group:
    """A batch as submitted: its id, simulation paths, and the catalog's recorded inventory of those
    simulations (rows of _INVENTORY_COLUMNS; None when there is nothing to compare against)."""

    id: int
    paths: list[str]
    inventory: pa.Table | None = None
    use_cache: bool = True


def split_inventory(inventory: pa.Table, use_cache: bool = True) -> tuple[dict[str, dict[str, FileState]], dict[str, dict[str, CachedFile]], set[str]]:
    """(previous state per simulation and path, hash-cache entries, simulations with rows of
    another cache version) from recorded inventory rows. One record per row serves as both the
    previous state and the cache entry."""
    previous: dict[str, dict[str, FileState]] = defaultdict(dict)
    cache: dict[str, dict[str, CachedFile]] = defaultdict(dict)
    stale: set[str] = set()
    cols = inventory.select(_INVENTORY_COLUMNS).to_pydict()
    for sim, path, size, mtime, ctime, ino, dev, digest, sha, facts, version in zip(*cols.values(), strict=True):
        if version != CACHE_VERSION:
            stale.add(sim)
            previous[sim][path] = PreviousFile(size, mtime, ctime, ino, dev, digest)
            continue
        entry = CachedFile(dev, ino, size, mtime, ctime, digest, sha, facts)
        previous[sim][path] = entry
        if use_cache and digest is not None:
            cache[sim][path] = entry
    return dict(previous), dict(cache), stale


def scan_group(group: Group, root: str | None, options: ScanOptions | None = None, index: int = 0) -> BatchResult:
    """The task a worker runs: `scan_batch` over the group with its hash-cache entries, then the
    classification of its files against the recorded inventory (so the client only writes)."""
    if group.inventory is None or group.inventory.num_rows == 0:
        return scan_batch(group.paths, root, options, group.id, None)
    previous, cache, stale = split_inventory(group.inventory, group.use_cache)
    batch = scan_batch(group.paths, root, options, group.id, cache)
    changes, unchanged, identical = file_changes(previous, batch.files, batch.systems.column("directory").to_pylist())
    return dataclasses.replace(batch, changes=tuple(changes), unchanged_files=unchanged, identical=frozenset(identical - stale))


@dataclass(slots=True)
class _Baseline:
    #: Recorded status of each simulation of the batch.
    status: dict[str, str]


@dataclass(slots=True)
class RunTracker:
    """History bookkeeping for one audit run of `root` in `catalog`."""

    catalog: CatalogBackend
    run_id: str
    root: str
    use_cache: bool = True
    complete_walk: bool = True
    previous_run: str | None = None
    counts: ChangeCounts = field(default_factory=ChangeCounts)
    cache_hits: int = 0
    files_read: int = 0
    bytes_read: int = 0
    lookup_s: float = 0.0
    _baselines: dict[int, _Baseline] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.previous_run = self._previous_audit()

    def _previous_audit(self) -> str | None:
        runs = self.catalog.read_table("MDBATCH_RUNS")
        if runs.empty:
            return None
        done = runs[(runs["command"] == "audit") & (runs["root"] == self.root) & (runs["status"] == "completed") & (runs["run_id"] != self.run_id)]
        return None if done.empty else str(done.sort_values("started_at").iloc[-1]["run_id"])

    # -- per batch ------------------------------------------------------------------------------

    def groups(self, batches: Iterator[list[str]]) -> Iterator[Group]:
        """Wrap batches of paths with their cache entries, looked up in one query per batch."""
        for gid, paths in enumerate(batches):
            yield self._prepare(gid, paths)

    def _prepare(self, gid: int, paths: list[str]) -> Group:
        t0 = time.monotonic()
        sims = [relative_to_root(p, self.root) for p in paths]
        status: dict[str, str] = {}
        inventory: pa.Table | None = None
        if self.previous_run is not None or self.use_cache:
            match = pa.table({"root": pa.array([self.root] * len(sims), pa.string()), "simulation": pa.array(sims, pa.string())})
            inventory = self.catalog.rows_matching(schema.FILES.name, match, columns=_INVENTORY_COLUMNS)
            known = self.catalog.rows_matching(schema.SIMULATIONS.name, match, columns=["simulation", "status"])
            status = dict(zip(known.column("simulation").to_pylist(), known.column("status").to_pylist(), strict=True))
        self._baselines[gid] = _Baseline(status)
        self.lookup_s += time.monotonic() - t0
        return Group(gid, paths, inventory, self.use_cache)

    def batch_ops(self, batch: BatchResult) -> tuple[list[Op], set[str]]:
        """History operations for a finished batch, and the simulations whose inventory is unchanged
        (the worker classified the files: see `scan_group`)."""
        base = self._baselines.pop(batch.index, _Baseline({}))
        sims = batch.systems.column("directory").to_pylist()
        files = batch.files
        if files.num_rows:
            cached = files.column("cached")
            hits = int(pc.sum(cached).as_py() or 0)
            self.cache_hits += hits
            self.files_read += files.num_rows - hits
            self.bytes_read += int(pc.sum(pc.if_else(cached, 0, files.column("size"))).as_py() or 0)
        changes = [Change(*c) for c in batch.changes]  # a first audit compares nothing and records nothing
        self.counts.files["unchanged"] += batch.unchanged_files
        status_now = dict(zip(sims, batch.systems.column("status").to_pylist(), strict=True))
        records: list[Change] = []
        if self.previous_run is not None:
            records = changes + simulation_changes(base.status, status_now)
        self.counts.add(records)
        ops: list[Op] = []
        if records:
            ops.append(Upsert(schema.CHANGES.name, self._changes_table(records)))
        hashes = batch.systems.column("hash").to_pylist()
        ops.append(
            Upsert(
                schema.SIMULATIONS.name,
                pa.table({
                    "root": pa.array([self.root] * len(sims), pa.string()), "simulation": pa.array(sims, pa.string()),
                    "hash": pa.array(hashes, pa.string()), "status": pa.array(list(status_now.values()), pa.string()),
                    "run_id": pa.array([self.run_id] * len(sims), pa.string()),
                }),
            )
        )
        return ops, set(batch.identical)

    def _changes_table(self, records: list[Change]) -> pa.Table:
        rows = [(self.run_id, *c) for c in records]
        cols = list(zip(*rows, strict=True))
        return pa.table({name: list(col) for name, col in zip(_CHANGE_COLUMNS, cols, strict=True)}, schema=schema.arrow_schema(schema.CHANGES))

    def seed(self, counts: Mapping[str, Mapping[str, int]] | None) -> None:
        """Continue the counts of an interrupted run (for --resume)."""
        for scope in ("files", "simulations", "findings"):
            getattr(self.counts, scope).update((counts or {}).get(scope, {}))

    # -- end of run -----------------------------------------------------------------------------

    def record_stages(self, stages: Mapping[str, Mapping[str, Any]]) -> None:
        """Store the per-stage snapshots of a run that did not complete."""
        self.catalog.apply([Upsert(schema.STAGES.name, self._stages_table(stages))])

    def finish(self, stages: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
        """Pair moves, record removed simulations and finding changes, store stage snapshots.

        Returns the `changes` object of the run summary.
        """
        ops: list[Op] = []
        if self.previous_run is not None:
            ops += self._pair_moves()
            if self.complete_walk:
                ops += self._removed()
            ops += self._findings_diff()
        ops.append(Upsert(schema.STAGES.name, self._stages_table(stages)))
        self.catalog.apply(ops)
        out: dict[str, Any] = {"previous_run": self.previous_run, **self.counts.to_dict()}
        out["summary"] = describe(out, self.previous_run)
        return out

    def _read_changes(self, scope: str, change: str) -> list[Change]:
        out: list[Change] = []
        for chunk in self.catalog.iter_rows(schema.CHANGES.name, where={"run_id": self.run_id, "scope": scope, "change": change}):
            d = chunk.to_pydict()
            out += [Change(scope, change, s, i, z, g, t or "") for s, i, z, g, t in zip(d["simulation"], d["item"], d["size"], d["digest"], d["detail"], strict=True)]
        return out

    def _pair_moves(self) -> list[Op]:
        new, missing = self._read_changes("file", "new"), self._read_changes("file", "missing")
        moves, _, _ = pair_moves(new, missing)
        if not moves:
            return []
        by_target = {(m.simulation, m.item) for m in moves}
        paired_missing = _paired_sources(moves, missing)
        gone = [c for c in new if (c.simulation, c.item) in by_target] + paired_missing
        self.counts.files["new"] -= len(moves)
        self.counts.files["missing"] -= len(moves)
        self.counts.files["moved"] += len(moves)
        return [Delete(schema.CHANGES.name, self._changes_table(gone).select(["run_id", "scope", "change", "simulation", "item"])),
                Upsert(schema.CHANGES.name, self._changes_table(moves))]

    def _removed(self) -> list[Op]:
        before = {
            s
            for chunk in self.catalog.iter_rows(schema.SIMULATIONS.name, where={"root": self.root}, columns=["simulation", "run_id"])
            for s, r in zip(chunk.column("simulation").to_pylist(), chunk.column("run_id").to_pylist(), strict=True)
            if r != self.run_id
        }
        records = removed_simulations(before, set())
        if not records:
            return []
        self.counts.add(records)
        gone = pa.table({"root": pa.array([self.root] * len(records), pa.string()), "simulation": pa.array([c.simulation for c in records], pa.string())})
        return [
            Upsert(schema.CHANGES.name, self._changes_table(records)),
            Delete(schema.SIMULATIONS.name, gone),
            Delete(schema.FILES.name, gone),
        ]

    def _finding_keys(self, run_id: str) -> list[tuple[str, str, str]]:
        keys: list[tuple[str, str, str]] = []
        for chunk in self.catalog.iter_rows(schema.FINDINGS.name, where={"run_id": run_id}, columns=["simulation", "kind", "item"]):
            d = chunk.to_pydict()
            keys += list(zip(d["simulation"], d["kind"], d["item"], strict=True))
        return keys

    def _findings_diff(self) -> list[Op]:
        assert self.previous_run is not None
        records, persisting = finding_changes(self._finding_keys(self.previous_run), self._finding_keys(self.run_id))
        self.counts.add(records)
        self.counts.findings["persisting"] += persisting
        return [Upsert(schema.CHANGES.name, self._changes_table(records))] if records else []

    def _stages_table(self, stages: Mapping[str, Mapping[str, Any]]) -> pa.Table:
        names = list(stages)
        return pa.table(
            {
                "run_id": [self.run_id] * len(names),
                "stage": names,
                "items": [int(stages[n].get("items", 0)) for n in names],
                "bytes": [int(stages[n].get("bytes", 0)) for n in names],
                "elapsed_ms": [int(round(float(stages[n].get("elapsed_s", 0.0)) * 1000)) for n in names],
                "errors": [int(stages[n].get("errors", 0)) for n in names],
                "detail": [json.dumps({k: v for k, v in stages[n].items() if k not in ("items", "bytes", "elapsed_s", "errors")}) for n in names],
            },
            schema=schema.arrow_schema(schema.STAGES),
        )


def _paired_sources(moves: list[Change], missing: list[Change]) -> list[Change]:
    """The missing-file records each move consumed (named in the move's detail)."""
    sources = {m.detail[len("from "):] for m in moves}
    return [c for c in missing if f"{c.simulation}/{c.item}" in sources]
