"""The client side of an audit's history: what the catalog recorded, what changed, what to scan next.

Before a batch is submitted, `History.prepare` looks up, in one query per table, what the catalog
recorded of its simulations: their fingerprints, hashes and latest findings (a simulation whose
fingerprint holds is kept unscanned), their recorded inventory (the hash cache and the baseline its
files are classified against, on the worker), and their status. When the batch's result comes back,
`History.batch_ops` returns the operations that record its changes, written in the same
transaction as the batch. Simulations whose fingerprint moved come back as follow-up work the
client owns (`Work`), sent again with their hash-cache entries. At the end of a run `finish` pairs
moves across the run and records the simulations its scope no longer holds as removed.

The baseline of a simulation is its latest completed scan, whichever run it came from; an audit
compares and records changes only for the simulations it scanned (see `Scope`).
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from .batch import BatchResult, Group
from .catalog import queries, schema
from .catalog.base import CatalogBackend
from .catalog.ops import Delete, Op, Update, Upsert
from .changes import CHANGE_COLUMNS, Change, ChangeCounts, describe, finding_changes, pair_moves, removed_simulations, simulation_changes
from .discover import DiscoveryStats, discover
from .hashcache import INVENTORY_COLUMNS
from .iopolicy import AdaptiveIO
from .paths import relative_to_root


@dataclass(frozen=True, slots=True)
class Scope:
    """What an audit was asked to look at: a whole root, a sub-directory of one, or listed simulations.

    The baseline of a simulation is its latest completed scan, whichever run it came from: an audit
    compares and records changes only for the simulations it scanned, and records as removed only
    what a complete walk of its scope (a root or a sub-directory; never a list) no longer finds.
    """

    kind: str = "root"  # root | subtree | listed
    #: For a subtree: the sub-directory, relative to the root.
    path: str = ""

    def covers(self, simulation: str) -> bool:
        """Whether `simulation` (relative to the root) lies in the scope's walk."""
        return self.kind != "subtree" or simulation == self.path or simulation.startswith(self.path + "/")

    @property
    def walks(self) -> bool:
        """Whether the audit walks its scope completely (so what it does not find there is gone)."""
        return self.kind != "listed"

    def to_dict(self) -> dict[str, str]:
        return {"kind": self.kind, "path": self.path} if self.kind == "subtree" else {"kind": self.kind}

    @classmethod
    def from_dict(cls, value: Mapping[str, Any] | None) -> Scope | None:
        if not isinstance(value, Mapping) or value.get("kind") not in ("root", "subtree", "listed"):
            return None
        return cls(str(value["kind"]), str(value.get("path") or ""))


def locate(
    source: str | os.PathLike[str], csv_root: str | os.PathLike[str] | None, catalog: CatalogBackend, stats: DiscoveryStats, threads: int
) -> tuple[str, Iterator[str], Scope, str | None]:
    """(root, stream of simulation paths, scope, the directory walked) for an audit of `source`.

    A directory inside a root the catalog has audited is a partial audit of that root.
    """
    found, stream = discover(source, csv_root=csv_root, stats=stats, threads=threads)
    if not os.path.isdir(os.fspath(source)):
        return found, stream, Scope("listed"), None
    parent = enclosing_root(catalog, found)
    if parent is None:
        return found, stream, Scope("root"), found
    return parent, stream, Scope("subtree", relative_to_root(found, parent)), found


def enclosing_root(catalog: CatalogBackend, directory: str) -> str | None:
    """The nearest root of a completed audit that holds `directory` below it, if any."""
    roots = {r["root"] for r in queries.audits_of_any_root(catalog) if r["root"]}
    inside = [r for r in roots if r != directory and os.path.commonpath([r, directory]) == r]
    return max(inside, key=len) if inside else None


@dataclass(slots=True)
class _Baseline:
    """What the catalog recorded of a group's simulations before this run scanned them."""

    #: Recorded status of each present simulation.
    status: dict[str, str] = field(default_factory=dict)
    #: Findings (kind, item) of each present simulation in its latest scan.
    findings: dict[str, set[tuple[str, str]]] = field(default_factory=dict)
    #: Simulations recorded as removed (a scan of one now means it came back).
    removed: set[str] = field(default_factory=set)


@dataclass(slots=True)
class History:
    """The history of one audit run of `root` (limited to `scope`) in `catalog`."""

    catalog: CatalogBackend
    run_id: str
    root: str
    scope: Scope = field(default_factory=Scope)
    use_cache: bool = True
    #: Keep simulations whose recorded fingerprint holds, unscanned (not under --verify full).
    keep_unchanged: bool = True
    #: The last completed audit of the root (named in the summary of changes).
    previous_run: str | None = None
    #: Whether the catalog has recorded any simulation of the root (else: a first audit, no records).
    has_history: bool = False
    counts: ChangeCounts = field(default_factory=ChangeCounts)
    cache_hits: int = 0
    files_read: int = 0
    bytes_read: int = 0
    lookup_s: float = 0.0
    #: Simulations kept as recorded (fingerprint held), and those rescanned because it moved.
    kept: int = 0
    rescanned: int = 0
    #: What the catalog recorded of each group in flight, by group id.
    _baselines: dict[int, _Baseline] = field(default_factory=dict)
    #: Follow-up work: paths whose fingerprint did not hold, to be scanned with their hash-cache entries.
    followups: list[str] = field(default_factory=list)
    #: How many files a worker reads at once, followed batch by batch (see `iopolicy`).
    io: AdaptiveIO = field(default_factory=AdaptiveIO)
    _next_gid: int = 0

    def __post_init__(self) -> None:
        done = [r["run_id"] for r in queries.audits_of(self.catalog, self.root) if r["run_id"] != self.run_id]
        self.previous_run = done[-1] if done else None
        self.has_history = self.catalog.count_rows(schema.SIMULATIONS.name, {"root": self.root}) > 0

    def recorded(self) -> Iterator[tuple[str, str]]:
        """(simulation, run that last scanned it) of every present simulation the catalog records in the scope."""
        where = {"root": self.root, "removed_run": None}
        for chunk in self.catalog.iter_rows(schema.SIMULATIONS.name, where, ["simulation", "run_id"]):
            for sim, run in zip(chunk.column("simulation").to_pylist(), chunk.column("run_id").to_pylist(), strict=True):
                if self.scope.covers(sim):
                    yield sim, run

    def vanished(self) -> list[tuple[str, str]]:
        """Recorded simulations of the scope that this run did not scan (call once every batch is written)."""
        return [(sim, run) for sim, run in self.recorded() if run != self.run_id]

    # -- per batch ------------------------------------------------------------------------------

    def work(self, batches: Iterator[list[str]], size: int) -> Work:
        """The groups to scan: the batches of paths, each with what the catalog recorded of its
        simulations, and, as results come back, groups of the simulations whose fingerprint did not
        hold (`size` at a time)."""
        return Work(self, batches, size)

    def prepare(self, paths: list[str], keep: bool = True) -> Group:
        """A batch of paths as a group to send: with what the catalog recorded of its simulations
        (one query per table), the hash cache among it. `keep=False` (follow-ups) keeps nothing."""
        t0 = time.monotonic()
        gid = self._next_gid
        self._next_gid += 1
        sims = [relative_to_root(p, self.root) for p in paths]
        base = _Baseline()
        inventory: pa.Table | None = None
        fingerprints: dict[str, str] = {}
        hashes: dict[str, str] = {}
        findings: pa.Table | None = None
        known = self.catalog.rows_matching(
            schema.SIMULATIONS.name, self._match(sims), columns=["simulation", "status", "hash", "run_id", "fingerprint", "removed_run"]
        ).to_pydict()
        last_scan: dict[str, str] = {}
        trust = keep and self.use_cache and self.keep_unchanged
        for sim, status, digest, run, fp, gone in zip(*known.values(), strict=True):
            if gone is not None:  # it came back: rescanned from its hash cache, rewritten, counted new
                base.removed.add(sim)
                continue
            base.status[sim] = status
            last_scan[sim] = run
            if trust and fp is not None and digest is not None:
                fingerprints[sim], hashes[sim] = fp, digest
        rest = [s for s in sims if s not in fingerprints]
        if rest:
            inventory = self.catalog.rows_matching(schema.FILES.name, self._match(rest), columns=INVENTORY_COLUMNS)
        if last_scan:
            findings = self.catalog.rows_matching(
                schema.FINDINGS.name,
                pa.table({"run_id": pa.array(list(last_scan.values()), pa.string()), "simulation": pa.array(list(last_scan), pa.string())}),
                columns=["simulation", "kind", "item", "detail"],
            )
            base.findings = {sim: set() for sim in last_scan}
            for sim, kind, item in zip(*findings.select(["simulation", "kind", "item"]).to_pydict().values(), strict=True):
                base.findings[sim].add((kind, item))
        self._baselines[gid] = base
        self.lookup_s += time.monotonic() - t0
        return Group(gid, paths, inventory, self.use_cache, fingerprints, hashes, findings, self.io.threads)

    def keepable(self, sims: list[str]) -> int:
        """How many of `sims` have a recorded fingerprint (and no removal): those a scan may keep
        with a walk and an lstat per file, if nothing changed."""
        if not self.keep_unchanged or not sims:
            return 0
        found = self.catalog.rows_matching(schema.SIMULATIONS.name, self._match(sims), columns=["fingerprint", "removed_run"])
        return int(pc.sum(pc.and_(pc.is_valid(found["fingerprint"]), pc.is_null(found["removed_run"]))).as_py() or 0)

    def _match(self, sims: list[str]) -> pa.Table:
        return pa.table({"root": pa.array([self.root] * len(sims), pa.string()), "simulation": pa.array(sims, pa.string())})

    def batch_ops(self, batch: BatchResult) -> tuple[list[Op], set[str]]:
        """History operations for a finished batch, and the simulations whose inventory is unchanged
        (the worker classified the files and checked the fingerprints: see `scan_group`)."""
        base = self._baselines.pop(batch.index, _Baseline())
        self.followups.extend(batch.deferred)
        self.io.observe(batch.reads, batch.read_s, batch.known, batch.cold)
        self.kept += len(batch.kept)
        self.rescanned += len(batch.deferred)
        sims = batch.systems.column("simulation").to_pylist()
        self._count_reads(batch, sims)
        self.counts.files["unchanged"] += batch.unchanged_files
        records: list[Change] = []
        if self.has_history:  # a first audit compares nothing and records nothing
            status_now = dict(zip(sims, batch.systems.column("status").to_pylist(), strict=True))
            records = [Change(*c) for c in batch.changes] + simulation_changes(base.status, status_now, base.removed)
            records += self._finding_changes(base, sims, batch.findings)
        self.counts.add(records)
        ops: list[Op] = []
        if records:
            ops.append(Upsert(schema.CHANGES.name, self._changes_table(records)))
        n = len(sims)
        nulls = pa.nulls(n, pa.string())
        ops.append(
            Upsert(
                schema.SIMULATIONS.name,
                pa.table(
                    {
                        "root": pa.array([self.root] * n, pa.string()),
                        "simulation": pa.array(sims, pa.string()),
                        "hash": batch.systems.column("hash"),
                        "status": batch.systems.column("status"),
                        "run_id": pa.array([self.run_id] * n, pa.string()),
                        "fingerprint": batch.systems.column("fingerprint"),
                        "removed_run": nulls,
                        "removed_at": pa.nulls(n, pa.timestamp("us", tz="UTC")),
                    }
                ),
            )
        )
        # A simulation that came back is rewritten even when identical: its rows carry the removal mark.
        return ops, set(batch.identical) - base.removed

    def _count_reads(self, batch: BatchResult, sims: list[str]) -> None:
        files = batch.files
        if files.num_rows:
            cached = files.column("cached")
            hits = int(pc.sum(cached).as_py() or 0)
            self.cache_hits += hits
            self.files_read += files.num_rows - hits
            self.bytes_read += int(pc.sum(pc.if_else(cached, 0, files.column("size"))).as_py() or 0)
        if batch.kept:
            counts = batch.systems.column("file_count").to_pylist()
            self.cache_hits += sum(n for sim, n in zip(sims, counts, strict=True) if sim in batch.kept)

    def _finding_changes(self, base: _Baseline, sims: list[str], found: pa.Table) -> list[Change]:
        """New and resolved findings of the batch's simulations against their latest scans."""
        before = [(sim, kind, item) for sim in sims for kind, item in base.findings.get(sim, ())]
        cols = found.select(["simulation", "kind", "item"]).to_pydict()
        after = list(zip(cols["simulation"], cols["kind"], cols["item"], strict=True))
        records, persisting = finding_changes(before, after)
        self.counts.findings["persisting"] += persisting
        return records

    def _changes_table(self, records: list[Change]) -> pa.Table:
        rows = [(self.run_id, *c) for c in records]
        cols = list(zip(*rows, strict=True))
        return pa.table(
            {name: list(col) for name, col in zip(CHANGE_COLUMNS, cols, strict=True)}, schema=schema.arrow_schema(schema.CHANGES)
        )

    def seed(self, counts: Mapping[str, Mapping[str, int]] | None) -> None:
        """Continue the counts of an interrupted run (for --resume)."""
        for scope in ("files", "simulations", "findings"):
            getattr(self.counts, scope).update((counts or {}).get(scope, {}))

    # -- end of run -----------------------------------------------------------------------------

    def stages_op(self, stages: Mapping[str, Mapping[str, Any]]) -> Op:
        """The per-stage snapshots of the run, as an operation."""
        return Upsert(schema.STAGES.name, self._stages_table(stages))

    def finish(self, removed: list[tuple[str, str]]) -> list[Op]:
        """Operations that end the run's history: moves paired across the campaign, and `removed`
        (simulation, its last scan) recorded as removed with their findings resolved."""
        ops: list[Op] = []
        if self.has_history:
            ops += self._pair_moves()
        if removed:
            ops += self._removed(removed)
        return ops

    def changes(self) -> dict[str, Any]:
        """The `changes` object of the run summary."""
        out: dict[str, Any] = {"previous_run": self.previous_run, **self.counts.to_dict()}
        out["summary"] = describe(out, self.previous_run, first=not self.has_history)
        return out

    def _read_changes(self, scope: str, change: str) -> list[Change]:
        out: list[Change] = []
        for chunk in self.catalog.iter_rows(schema.CHANGES.name, where={"run_id": self.run_id, "scope": scope, "change": change}):
            d = chunk.to_pydict()
            out += [
                Change(scope, change, s, i, z, g, t or "")
                for s, i, z, g, t in zip(d["simulation"], d["item"], d["size"], d["digest"], d["detail"], strict=True)
            ]
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
        return [
            Delete(schema.CHANGES.name, self._changes_table(gone).select(["run_id", "scope", "change", "simulation", "item"])),
            Upsert(schema.CHANGES.name, self._changes_table(moves)),
        ]

    def _removed(self, removed: list[tuple[str, str]]) -> list[Op]:
        """Record `removed` simulations: change records, their findings resolved, and their rows marked
        removed (kept as the hash cache of a directory that comes back, until `runs prune`)."""
        sims = sorted(sim for sim, _ in removed)
        records = removed_simulations(sims, set())
        last = dict(removed)
        found = self.catalog.rows_matching(
            schema.FINDINGS.name,
            pa.table({"run_id": pa.array([last[s] for s in sims], pa.string()), "simulation": pa.array(sims, pa.string())}),
            columns=["simulation", "kind", "item"],
        ).to_pydict()
        gone_findings = list(zip(found["simulation"], found["kind"], found["item"], strict=True))
        resolved, _ = finding_changes(gone_findings, [])
        records += resolved
        self.counts.add(records)
        n = len(sims)
        keys = {"root": pa.array([self.root] * n, pa.string()), "simulation": pa.array(sims, pa.string())}
        mark = pa.array([self.run_id] * n, pa.string())
        now = pa.array([datetime.now(UTC)] * n, pa.timestamp("us", tz="UTC"))
        return [
            Upsert(schema.CHANGES.name, self._changes_table(records)),
            Update(schema.SIMULATIONS.name, pa.table({**keys, "removed_run": mark, "removed_at": now})),
            Update(schema.FILES.name, pa.table({**keys, "removed_run": mark}), match=("root", "simulation")),
        ]

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
                "detail": [
                    json.dumps({k: v for k, v in stages[n].items() if k not in ("items", "bytes", "elapsed_s", "errors")}) for n in names
                ],
            },
            schema=schema.arrow_schema(schema.STAGES),
        )


class Work:
    """The groups of one audit run, in the order they are sent: the walk's batches, then follow-up
    groups of the simulations whose fingerprint moved, from the queue the history fills as results
    are handled (`History.followups`). `take` gives None when there is nothing to send now."""

    def __init__(self, history: History, batches: Iterator[list[str]], size: int) -> None:
        self.history = history
        self.batches = batches
        self.size = max(1, size)
        self.walked = False

    def take(self) -> Group | None:
        waiting = self.history.followups
        if not self.walked and len(waiting) < self.size:
            paths = next(self.batches, None)
            if paths is not None:
                return self.history.prepare(paths)
            self.walked = True
        if waiting:
            paths = waiting[: self.size]
            del waiting[: self.size]
            return self.history.prepare(paths, keep=False)
        return None


def _paired_sources(moves: list[Change], missing: list[Change]) -> list[Change]:
    """The missing-file records each move consumed (named in the move's detail)."""
    sources = {m.detail[len("from ") :] for m in moves}
    return [c for c in missing if f"{c.simulation}/{c.item}" in sources]
