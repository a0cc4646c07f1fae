"""`audit`: discover a campaign, scan it on the cluster, write the catalog, summarize.

Data flows one way: discovery stream -> batches -> scan tasks (workers) -> Arrow tables -> one
bulk transaction per batch in the catalog, with the run record wrapped around it (see
`lifecycle`): each batch's transaction also carries the run's summary so far, so a run killed at
any instant leaves a record that matches what it committed.

The scope of an audit is what it was asked to look at (`history.Scope`): a root, a sub-directory of
a root the catalog knows, or the simulations a CSV or summary YAML lists. An audit that would
record a mass removal (an empty or unreadable root, more than `max_removed` of its scope gone)
refuses: the run is recorded `refused` and nothing else changes.
"""

from __future__ import annotations

import errno
import json
import os
import sys
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from typing import IO, TYPE_CHECKING, Any

import pyarrow as pa

from .atomic import WriteError
from .batch import BatchResult, scan_group
from .catalog import CatalogBackend, open_catalog, queries, schema
from .catalog.filestats import duplicate_totals
from .catalog.ops import Delete
from .catalog.writes import batch_ops
from .config import resolve_url
from .discover import DiscoveryStats
from .engine import ClusterOptions, Fanout, Inline, Peek, Progress, batches, inline_is_faster, peek
from .errors import Interrupted, MdbatchError, RefusedError, UsageError
from .findings import KINDS
from .history import History, Scope, locate
from .iopolicy import AdaptiveIO
from .lifecycle import STOP, RunRecord, reap_abandoned
from .paths import relative_to_root
from .scan import ScanOptions

if TYPE_CHECKING:
    import pandas as pd


#: Findings of each kind kept in memory for the end-of-run summary (the catalog has them all).
EXAMPLES_PER_KIND = 20
#: What proving one simulation unchanged costs (a walk, an lstat per file, its fingerprint): ~0.2 ms.
UNCHANGED_S = 0.0002
#: The share of a scope's recorded simulations an audit may find gone before it refuses.
MAX_REMOVED = 0.5
#: What makes an audit exit 1 (`--fail-on`): any finding, findings new since each simulation's previous scan, nothing.
FAIL_ON = ("any", "new", "none")

__all__ = ["FAIL_ON", "MAX_REMOVED", "AuditResult", "Interrupted", "audit"]


@dataclass(slots=True)
class AuditResult:
    """What an audit returns: its run id, the JSON summary, and where the findings went."""

    run_id: str
    summary: dict[str, Any]
    catalog_url: str
    findings_path: str | None = None
    catalog_url_full: str = field(default="", repr=False)
    #: A few findings of each kind (at most EXAMPLES_PER_KIND), for summaries; all are in the catalog.
    examples: list[dict[str, Any]] = field(default_factory=list)

    @property
    def exit_code(self) -> int:
        """0 when the campaign has no findings, 1 when it has, 3 when the run was interrupted."""
        return self.exit_status("any")

    @property
    def new_findings(self) -> int:
        """Findings the simulations' previous scans did not have (all of them in a root's first audit)."""
        if self.summary.get("first_audit"):
            return int(self.summary["findings_total"])
        return int(((self.summary.get("changes") or {}).get("findings") or {}).get("new", 0))

    def exit_status(self, fail_on: str = "any") -> int:
        """The exit status under `fail_on`: 1 for any finding ('any'), for new findings only ('new'),
        or never ('none'); 0 otherwise, and 3 whatever was found when the run was interrupted."""
        if fail_on not in FAIL_ON:
            raise UsageError(f"fail_on must be one of {', '.join(FAIL_ON)}, got {fail_on!r}")
        if self.summary["outcome"] == "interrupted":
            return Interrupted.exit_code
        found = {"any": self.summary["findings_total"], "new": self.new_findings, "none": 0}[fail_on]
        return 1 if found else 0

    def __repr__(self) -> str:
        """One line: the run, its outcome and headline numbers, the catalog (the summary is in `.summary`)."""
        s = self.summary
        where = f", findings_path={self.findings_path!r}" if self.findings_path else ""
        return (
            f"AuditResult(run_id={self.run_id!r}, outcome={s.get('outcome')!r}, simulations={s.get('simulations')}, "
            f"findings={s.get('findings_total')}, catalog={self.catalog_url!r}{where})"
        )

    def findings(self) -> pd.DataFrame:
        """Every finding of this run (simulation, kind, item, detail), read back from the catalog, sorted."""
        columns = ["simulation", "kind", "item", "detail"]
        with open_catalog(self.catalog_url_full) as catalog:
            found = queries.frame(catalog, schema.FINDINGS.name, {"run_id": self.run_id}, columns)
        return found.sort_values(columns).reset_index(drop=True)


@dataclass(slots=True)
class _Tally:
    """Running totals of the summary, one batch at a time (`plus` returns a new tally)."""

    simulations: int = 0
    files: int = 0
    bytes: int = 0
    batches: int = 0
    scan_s: float = 0.0
    write_s: float = 0.0
    peek_s: float = 0.0
    cluster_s: float = 0.0
    first_result_s: float | None = None
    kinds: Counter[str] = field(default_factory=Counter)
    status: Counter[str] = field(default_factory=Counter)
    sims_with_findings: int = 0

    def seed(self, summary: dict[str, Any]) -> None:
        """Start from the counts a run had committed (for --resume)."""
        self.simulations = int(summary.get("simulations", 0))
        self.files = int(summary.get("files", 0))
        self.bytes = int(summary.get("bytes", 0))
        self.batches = int(summary.get("batches", 0))
        self.kinds.update({k: int(v) for k, v in (summary.get("findings") or {}).items()})
        self.status.update({k: int(v) for k, v in (summary.get("status") or {}).items()})
        self.sims_with_findings = int(summary.get("simulations_with_findings") or 0)

    def plus(self, batch: BatchResult) -> _Tally:
        """This tally with `batch` added (self is left as it was, until the batch is committed)."""
        out = replace(self, kinds=Counter(self.kinds), status=Counter(self.status))
        out.simulations += batch.simulations
        out.files += batch.file_count
        out.bytes += batch.bytes
        out.batches += 1
        out.scan_s += batch.elapsed_s
        out.kinds.update(batch.findings.column("kind").to_pylist())
        out.sims_with_findings += len(set(batch.findings.column("simulation").to_pylist()))
        out.status.update(batch.systems.column("status").to_pylist())
        return out


def audit(
    source: str | os.PathLike[str],
    *,
    db: str | None = None,
    cluster: ClusterOptions | None = None,
    batch_size: int | None = None,
    findings_path: str | os.PathLike[str] | None = None,
    csv_root: str | os.PathLike[str] | None = None,
    options: ScanOptions | None = None,
    progress: bool = True,
    log_stream: IO[str] | None = None,
    arguments: dict[str, Any] | None = None,
    resume: str | None = None,
    walk_threads: int = 1,
    max_removed: float = MAX_REMOVED,
    allow_removals: bool = False,
    io_concurrency: int | None = None,
) -> AuditResult:
    """Audit a campaign (a root directory, a sub-directory of a known root, a summary YAML or a
    CSV) into the catalog at `db`; returns the run's summary as an `AuditResult`.

    The outcome is `completed`, or `interrupted` after SIGTERM/SIGUSR1 (every completed batch is
    written). `resume` ("last" or a run id) continues an interrupted, failed or abandoned audit of
    the same root, scanning only the simulations it had not written. An audit that would record
    more than `max_removed` of its scope's simulations as removed (or finds its root empty or
    unreadable) records the run `refused` and raises RefusedError, unless `allow_removals`.
    `io_concurrency` fixes how many files each worker reads at once (default: measured, see
    `iopolicy`; an `options.io_threads` other than 1 fixes it too). Raises MdbatchError for fatal
    problems (bad input, unreachable catalog or cluster); problems inside simulations are findings,
    never exceptions.
    """
    if not 0.0 <= max_removed <= 1.0:
        raise UsageError(f"--max-removed takes a fraction between 0 and 1, got {max_removed}")
    if findings_path is not None:
        _check_output(os.fspath(findings_path))
    installed = STOP.install()
    catalog = open_catalog(db)
    try:
        stats = DiscoveryStats()
        root, stream, scope, top = locate(source, csv_root, catalog, stats, walk_threads)
        run = _AuditRun(
            catalog,
            root,
            scope,
            stats,
            options or ScanOptions(),
            cluster or ClusterOptions(),
            batch_size,
            findings_path,
            progress,
            log_stream,
            max_removed,
            allow_removals,
            top,
        )
        opts = options or ScanOptions()
        run.io = AdaptiveIO(io_concurrency or (opts.io_threads if opts.io_threads != 1 else None))
        run.begin(resume, arguments or {}, resolve_url(db))
        run.execute(stream)
    finally:
        catalog.close()
        if installed:
            STOP.uninstall()
    return AuditResult(
        run_id=run.run_id,
        summary=run.final,
        catalog_url=catalog.display_url,
        findings_path=os.fspath(findings_path) if findings_path else None,
        catalog_url_full=resolve_url(db),
        examples=run.examples,
    )


def _resume_state(catalog: CatalogBackend, resume: str, root: str) -> tuple[str, dict[str, Any], set[str]]:
    """(run id, its summary so far, simulations it already wrote) for `--resume RUN_ID|last`."""
    runs = queries.audits_of(catalog, root, status=None)
    if not runs:
        raise UsageError(f"nothing to resume: no audit of {root} in the catalog")
    found = runs[-1:] if resume == "last" else [r for r in runs if r["run_id"] == resume]
    if not found:
        raise UsageError(f"no audit run {resume!r} of {root} in the catalog")
    row = found[0]
    if row["status"] == "completed":
        raise UsageError(f"run {row['run_id']} completed; nothing to resume")
    if row["status"] == "refused":
        raise UsageError(f"run {row['run_id']} was refused; nothing to resume (start a new audit)")
    if row["status"] == "running":
        raise UsageError(f"run {row['run_id']} is still running (pid {row.get('pid')} on {row['host']}); wait for it or stop it first")
    return str(row["run_id"]), row["summary"], queries.scanned_simulations(catalog, str(row["run_id"]))


class _AuditRun:
    """One audit run: its record, scope, history tracker, tally and outputs; `execute` drives it."""

    def __init__(
        self,
        catalog: CatalogBackend,
        root: str,
        scope: Scope,
        stats: DiscoveryStats,
        options: ScanOptions,
        cluster: ClusterOptions,
        batch_size: int | None,
        findings_path: str | os.PathLike[str] | None,
        progress: bool,
        log_stream: IO[str] | None,
        max_removed: float,
        allow_removals: bool,
        top: str | None,
    ) -> None:
        self.started = time.monotonic()
        self.catalog, self.root, self.scope, self.stats, self.options = catalog, root, scope, stats, options
        self.cluster, self.batch_size, self.progress, self.log_stream = cluster, batch_size, progress, log_stream
        self.findings_path = os.fspath(findings_path) if findings_path else None
        self.max_removed, self.allow_removals, self.top = max_removed, allow_removals, top
        self.tally = _Tally()
        self.info: dict[str, Any] = {"scope": scope.to_dict()}
        self.examples: list[dict[str, Any]] = []
        self.per_kind: Counter[str] = Counter()
        self.done: set[str] = set()
        self.record: RunRecord | None = None
        self.tracker: History | None = None
        self.final: dict[str, Any] = {}
        self.committed: dict[str, Any] = {}
        self.walk_done = False
        self.io = AdaptiveIO()
        self.bar = Progress("audit", stream=log_stream, enabled=progress)

    @property
    def run_id(self) -> str:
        return self.record.run_id if self.record is not None else ""

    def begin(self, resume: str | None, arguments: dict[str, Any], url: str) -> None:
        """Record the run (new, or the resumed one) and set up its tracker."""
        with STOP.deferred():
            if resume:
                reap_abandoned(self.catalog)  # a killed leg's run is resumable at once, not "still running"
                run_id, before, self.done = _resume_state(self.catalog, resume, self.root)
                self.scope = Scope.from_dict(before.get("scope")) or self.scope
                self.info["scope"] = self.scope.to_dict()
                self.record = RunRecord.resume(self.catalog, run_id, "audit", self.root, url=url)
                self.tally.seed(before)
                self.committed = before
            else:
                self.record = RunRecord.start(self.catalog, "audit", self.root, arguments, exclusive=True, url=url)
        self.tracker = History(self.catalog, self.run_id, self.root, self.scope, keep_unchanged=self.options.trusts_cache, io=self.io)
        if resume:
            self.tracker.seed(self.committed.get("changes_partial"))
            if "first_audit" in self.committed:  # what the root had before this run's first leg, not after it
                self.tracker.has_history = not self.committed["first_audit"]
        self.info["first_audit"] = not self.tracker.has_history

    def execute(self, stream: Iterator[str]) -> None:
        """Scan the stream, write every batch, end the run; the final summary lands in `self.final`."""
        status = "failed"
        try:
            start = peek(stream, self.cluster, self.batch_size)
            self.tally.peek_s = start.elapsed_s
            self.io.start(start.head[:3])
            self._check_removals(start.head, start.exhausted)
            self._fan_out(self._paths(start.paths(stream)), start)
            self._complete()
            status = "completed"
        except Interrupted:
            status = "interrupted"
        except KeyboardInterrupt:
            status = "interrupted"
            self._end(status)
            raise
        except RefusedError:
            status = "refused"
            raise
        finally:
            if status != "refused" and not self.final:
                self._end(status)

    def _paths(self, paths: Iterator[str]) -> Iterator[str]:
        """The simulations to scan: the walk, less what a resumed run did before."""
        for path in paths:
            if not self.done or relative_to_root(path, self.root) not in self.done:
                yield path
        self.walk_done = True

    def _check_removals(self, head: list[str], exhausted: bool) -> None:
        """Refuse before writing anything when the root is unreadable or (walk finished) too much is gone."""
        assert self.tracker is not None
        if not self.scope.walks:
            return
        unreadable = [reason for path, reason in self.stats.unreadable if path == self.top]
        if unreadable:
            self._refuse(f"{self.top} cannot be read ({unreadable[0]}): refusing to audit it", {})
        if exhausted:
            seen = {relative_to_root(p, self.root) for p in head} | self.done
            recorded = [sim for sim, _ in self.tracker.recorded()]
            self._check_vanished(sum(1 for sim in recorded if sim not in seen), len(recorded), found=len(head))

    def _check_vanished(self, vanished: int, recorded: int, found: int) -> None:
        if self.allow_removals or vanished == 0:
            return
        where = self.top or self.root
        if found == 0 and not self.done:
            self._refuse(
                f"{where} holds no simulation directory (is it mounted?): refusing to record the {recorded} simulations the "
                "catalog records there as removed; if they are really gone, re-run with --allow-removals",
                {"vanished": vanished, "recorded": recorded},
            )
        if vanished > self.max_removed * recorded:
            self._refuse(
                f"{vanished} of the {recorded} simulations the catalog records under {where} are gone "
                f"({100 * vanished / recorded:.0f}%, more than --max-removed {self.max_removed:g}): refusing to record them as removed; "
                "if they are really gone, re-run with --allow-removals (or a higher --max-removed)",
                {"vanished": vanished, "recorded": recorded},
            )

    def _refuse(self, message: str, detail: dict[str, Any]) -> None:
        """Record the run `refused` (nothing else) and raise RefusedError."""
        assert self.record is not None
        self.final = {**self._summary(self.tally, "refused"), "refused": {"reason": message, **detail}}
        self.record.finish("refused", self.final)
        raise RefusedError(message, self.run_id, self.final)

    def _fan_out(self, paths: Iterator[str], start: Peek) -> None:
        assert self.tracker is not None
        size = start.batch_size
        self.bar.done = self.tally.simulations  # a resumed run counts what it did before
        t_cluster = time.monotonic()
        runner = Inline() if self._inline(start) else Fanout(self.cluster, workers_needed=start.workers, dashboard=not start.exhausted)
        with runner as fan:
            self.tally.cluster_s = time.monotonic() - t_cluster
            self.info["in_process"] = isinstance(fan, Inline)
            self.info.update({"workers": fan.n_workers, "batch_size": size, "dashboard": fan.dashboard_link})
            if self.progress and fan.dashboard_link:
                (self.log_stream or sys.stderr).write(f"mdbatch: Dask dashboard at {fan.dashboard_link}\n")
            t_fan = time.monotonic()
            with fan.performance_report():
                results = fan.stream(scan_group, self.tracker.work(batches(paths, size), size), self.root, self.options)
                try:
                    for batch in results:  # a stop signal raises Interrupted while this waits
                        with STOP.deferred():
                            self._handle(batch)
                except (Interrupted, KeyboardInterrupt):
                    # Keep what already finished: write completed batches, cancel the rest.
                    for batch in fan.drain():
                        with STOP.deferred():
                            self._handle(batch)
                    raise
                finally:
                    self.info["fanout_s"] = round(time.monotonic() - t_fan, 3)
                    self.info["workers"] = fan.n_workers  # the most that took part (workers may join late)
        self.bar.close()

    def _inline(self, start: Peek) -> bool:
        """Whether to scan in this process: the whole campaign is known and (almost) all of it can
        be proven unchanged by its fingerprint, a walk and an lstat per file (~0.2 ms a simulation),
        which is less than starting a cluster. A first audit, or one whose simulations changed,
        reads files and gets the cluster."""
        assert self.tracker is not None
        if not start.exhausted or not start.head or not self.options.trusts_cache:
            return False
        estimate = len(start.head) * UNCHANGED_S
        if not inline_is_faster(self.cluster, estimate):
            return False
        sims = [relative_to_root(p, self.root) for p in start.head]
        return self.tracker.keepable(sims) >= len(sims) * 0.99

    def _handle(self, batch: BatchResult) -> None:
        """Write one batch, its history and the run's summary so far in one transaction."""
        assert self.tracker is not None and self.record is not None
        t0 = time.monotonic()
        if self.tally.first_result_s is None:
            self.tally.first_result_s = t0 - self.started
        history, unchanged = self.tracker.batch_ops(batch)
        tally = self.tally.plus(batch)
        summary = self._summary(tally, "running")
        self.catalog.apply(
            [*batch_ops(self.run_id, self.root, batch, keep_inventory=unchanged), *history, self.record.progress_op(summary)]
        )
        tally.write_s += time.monotonic() - t0
        self.tally, self.committed = tally, summary
        for row in batch.findings.to_pylist():
            if self.per_kind[row["kind"]] < EXAMPLES_PER_KIND:
                self.per_kind[row["kind"]] += 1
                self.examples.append(row)
        self.bar.update(batch.simulations, batch.file_count, self.stats.simulations if self.walk_done else None)

    def _complete(self) -> None:
        """Record removals (or refuse them), the run's history and its end."""
        assert self.tracker is not None and self.record is not None
        t0 = time.monotonic()
        vanished: list[tuple[str, str]] = []
        if self.scope.walks:
            recorded = list(self.tracker.recorded())
            vanished = [(sim, run) for sim, run in recorded if run != self.run_id]
            self._check_vanished(len(vanished), len(recorded), found=self.tally.simulations)
        with STOP.deferred():
            self.catalog.apply(self.tracker.finish(vanished))
            self.info["duplicates"] = duplicate_totals(self.catalog, self.root)
            # Counted in the database, not in a per-simulation counter the client would carry all run.
            shared = self.catalog.group_counts(
                schema.SIMULATIONS.name, {"root": self.root, "removed_run": None}, ["hash"], ["simulation"], 2
            )
            self.info["duplicate_hashes"] = shared.num_rows
            self.info["changes"] = self.tracker.changes()
            self.info["changes_s"] = round(time.monotonic() - t0, 3)
            stages = self._stages()
            self.final = self._summary(self.tally, "completed")
            self._write_findings_file()
            done = Delete(schema.SCANNED.name, pa.table({"run_id": [self.run_id]}))
            self.record.finish("completed", self.final, extra=[self.tracker.stages_op(stages), done])

    def _end(self, status: str) -> None:
        """Record an unfinished run's end: the counts it committed, and how it ended."""
        if self.record is None:
            return
        with STOP.deferred():
            self.final = self._summary(self.tally, status)
            if status == "failed" and self.committed:  # the tracker may have counted a batch that was not written
                self.final["changes_partial"] = self.committed.get("changes_partial")
            ops = [self.tracker.stages_op(self._stages())] if self.tracker is not None else []
            try:
                self._write_findings_file()
                self.record.finish(status, self.final, extra=ops)
            except (MdbatchError, OSError):
                self.record.stop_heartbeat()
                if status != "failed":  # a failing run reports its own error, not this one
                    raise

    def _write_findings_file(self) -> None:
        """Write the findings file from the catalog at the end of a leg: every finding of the run, all
        legs of it (an earlier leg's file stays whole until then)."""
        if not self.findings_path:
            return
        from .atomic import atomic_write_text

        lines = []
        for chunk in self.catalog.iter_rows(schema.FINDINGS.name, {"run_id": self.run_id}, ["id", "simulation", "kind", "item", "detail"]):
            for row in chunk.drop_columns(["id"]).to_pylist():
                lines.append(json.dumps(row, ensure_ascii=False) + "\n")
        atomic_write_text(self.findings_path, "".join(lines))

    def _stages(self) -> dict[str, dict[str, Any]]:
        """Per-stage snapshots of the run (stored in MDBATCH_STAGES and the summary)."""
        tracker, tally, stats = self.tracker, self.tally, self.stats
        assert tracker is not None
        self.info["cache"] = {
            "hits": tracker.cache_hits,
            "files_read": tracker.files_read,
            "bytes_read": tracker.bytes_read,
            "simulations_kept": tracker.kept,
            "simulations_rescanned": tracker.rescanned,
            "lookup_s": round(tracker.lookup_s, 3),
        }
        stages = {
            "discover": {
                "items": stats.simulations,
                "elapsed_s": tally.peek_s,
                "errors": len(stats.unreadable),
                "directories": stats.directories,
            },
            "scan": {
                "items": tally.files,
                "bytes": tracker.bytes_read,
                "elapsed_s": tally.scan_s,
                "errors": tally.kinds.get("unreadable", 0),
                "cache_hits": tracker.cache_hits,
            },
            "write": {"items": tally.batches, "elapsed_s": tally.write_s, "lookup_s": tracker.lookup_s},
        }
        self.info["stages"] = stages
        return stages

    def _summary(self, tally: _Tally, status: str) -> dict[str, Any]:
        kinds = {k: tally.kinds.get(k, 0) for k in KINDS}
        stats, info = self.stats, self.info
        partial = None
        if self.tracker is not None and status != "completed":
            self._stages()
            partial = self.tracker.counts.to_dict()
        return {
            "run_id": self.run_id,
            "outcome": status,
            "root": self.root,
            "scope": info.get("scope"),
            "first_audit": info.get("first_audit"),
            "catalog": self.catalog.display_url,
            "simulations": tally.simulations,
            "files": tally.files,
            "bytes": tally.bytes,
            "findings": kinds,
            "findings_total": sum(kinds.values()),
            "simulations_with_findings": tally.sims_with_findings,
            "status": dict(sorted(tally.status.items())),
            "duplicate_hashes": info.get("duplicate_hashes"),
            "duplicates": info.get("duplicates"),
            "changes": info.get("changes"),
            "changes_partial": partial,
            "cache": info.get("cache"),
            "discovery": {
                "directories_walked": stats.directories,
                "unreadable_directories": [{"path": p, "error": e} for p, e in stats.unreadable],
                "listed_outside_root": stats.outside_root,
                "listed_missing": stats.missing,
                "listed_twice": stats.repeated,
            },
            "batches": tally.batches,
            "workers": info.get("workers"),
            "in_process": info.get("in_process"),
            "io_concurrency": {
                "fixed": self.io.fixed is not None,
                "threads": self.io.history or [self.io.threads],
                "latency_us": None if self.io.latency_s is None else round(self.io.latency_s * 1e6, 1),
            },
            "batch_size": info.get("batch_size"),
            "dashboard": info.get("dashboard"),
            "stages": info.get("stages"),
            "timings": {
                "peek_discovery_s": round(tally.peek_s, 3),
                "cluster_start_s": round(tally.cluster_s, 3),
                "first_result_s": None if tally.first_result_s is None else round(tally.first_result_s, 3),
                "fanout_s": info.get("fanout_s"),
                "scan_task_s": round(tally.scan_s, 3),
                "catalog_write_s": round(tally.write_s, 3),
            },
            "elapsed_s": round(time.monotonic() - self.started, 3),
        }


def _check_output(path: str) -> None:
    """A findings file that could not be written is a one-line error before anything is recorded."""
    directory = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(directory):
        raise WriteError(path, errno.ENOENT, f"directory {directory} does not exist")
    if not os.access(directory, os.W_OK) or os.path.isdir(path):
        raise WriteError(path, errno.EACCES, "Permission denied" if not os.path.isdir(path) else "Is a directory")
