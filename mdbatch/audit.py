"""`audit`: discover a campaign, scan it on the cluster, write the catalog, summarize.

Data flows one way: discovery stream -> batches -> scan tasks (workers) -> Arrow tables -> one
bulk transaction per batch in the catalog, with the run record wrapped around it.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import socket
import sys
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timezone
from itertools import islice
from typing import IO, TYPE_CHECKING, Any

from . import __version__
from .catalog import CatalogBackend, RunInfo, open_catalog, resolve_url
from .discover import DiscoveryStats, discover
from .engine import ClusterOptions, Fanout, Progress, batches, plan
from .errors import MdbatchError, UsageError
from .findings import KINDS
from .catalog.ops import batch_ops
from .records import BatchResult
from .tracking import RunTracker, scan_group
from .paths import relative_to_root
from .scan import ScanOptions

if TYPE_CHECKING:
    import pandas as pd


#: Findings of each kind kept in memory for the end-of-run summary (the catalog has them all).
EXAMPLES_PER_KIND = 20
#: Campaigns with more simulations than this get the Dask dashboard unless told otherwise.
DASHBOARD_THRESHOLD = 10_000


class Interrupted(MdbatchError):
    """The run was stopped by a signal; completed batches are in the catalog."""

    exit_code = 3


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
        if self.summary["outcome"] == "interrupted":
            return Interrupted.exit_code
        return 1 if self.summary["findings_total"] else 0

    def findings(self) -> pd.DataFrame:
        """Every finding of this run (simulation, kind, item, detail), read back from the catalog."""
        import pandas as pd

        columns = ["simulation", "kind", "item", "detail"]
        with open_catalog(self.catalog_url_full) as catalog:
            table = catalog.read_table("MDBATCH_FINDINGS")
        if table.empty:
            return pd.DataFrame(columns=columns)
        return table.loc[table["run_id"] == self.run_id, columns].sort_values(columns).reset_index(drop=True)


def new_run_id() -> str:
    """Sortable, unique run id: UTC timestamp plus random suffix."""
    return f"{datetime.now(timezone.utc):%Y%m%dT%H%M%SZ}-{secrets.token_hex(3)}"


class _Tally:
    """Running totals of the summary, fed one batch at a time."""

    def __init__(self) -> None:
        self.simulations = 0
        self.files = 0
        self.bytes = 0
        self.batches = 0
        self.scan_s = 0.0
        self.write_s = 0.0
        self.peek_s = 0.0
        self.cluster_s = 0.0
        self.first_result_s: float | None = None
        self.kinds: Counter[str] = Counter()
        self.status: Counter[str] = Counter()
        self.hashes: Counter[str] = Counter()
        self.sims_with_findings = 0

    def seed(self, summary: dict[str, Any]) -> None:
        """Start from the counts an interrupted run had recorded (for --resume)."""
        self.simulations = int(summary.get("simulations", 0))
        self.files = int(summary.get("files", 0))
        self.bytes = int(summary.get("bytes", 0))
        self.batches = int(summary.get("batches", 0))
        self.kinds.update({k: int(v) for k, v in (summary.get("findings") or {}).items()})
        self.status.update({k: int(v) for k, v in (summary.get("status") or {}).items()})
        self.sims_with_findings = int(summary.get("simulations_with_findings") or 0)

    def add(self, batch: BatchResult) -> None:
        self.simulations += batch.simulations
        self.files += batch.file_count
        self.bytes += batch.bytes
        self.batches += 1
        self.scan_s += batch.elapsed_s
        self.kinds.update(batch.findings.column("kind").to_pylist())
        self.sims_with_findings += len(set(batch.findings.column("simulation").to_pylist()))
        self.status.update(batch.systems.column("status").to_pylist())
        self.hashes.update(batch.systems.column("hash").to_pylist())


class _Stop:
    """Signal state: a stop is requested; it interrupts only while the client waits for results."""

    def __init__(self) -> None:
        self.requested: str | None = None
        self.waiting = False

    def handler(self, signum: int, _frame: Any) -> None:
        self.requested = signal.Signals(signum).name
        if self.waiting:
            raise Interrupted(f"stopped by {self.requested}")


def _install_signal_handlers(stop: _Stop) -> dict[int, Any]:
    """SIGTERM and SIGUSR1 (what Slurm sends before the walltime) stop the run gracefully."""
    previous: dict[int, Any] = {}
    for sig in (signal.SIGTERM, signal.SIGUSR1):
        try:
            previous[sig] = signal.signal(sig, stop.handler)
        except ValueError:  # not the main thread: no graceful stop, the default action stands
            pass
    return previous


def _resume_state(catalog: CatalogBackend, resume: str, root: str) -> tuple[str, dict[str, Any], set[str]]:
    """(run id, its summary so far, simulations it already wrote) for `--resume RUN_ID|last`."""
    runs = catalog.read_table("MDBATCH_RUNS")
    if runs.empty:
        raise UsageError("nothing to resume: the catalog has no runs")
    runs = runs[(runs["command"] == "audit") & (runs["root"] == root)]
    if resume == "last":
        runs = runs.sort_values("started_at")
        if runs.empty:
            raise UsageError(f"nothing to resume: no audit of {root} in the catalog")
        row = runs.iloc[-1]
    else:
        match = runs[runs["run_id"] == resume]
        if match.empty:
            raise UsageError(f"no audit run {resume!r} of {root} in the catalog")
        row = match.iloc[0]
    if row["status"] == "completed":
        raise UsageError(f"run {row['run_id']} completed; nothing to resume")
    summary = json.loads(row["summary"]) if isinstance(row["summary"], str) and row["summary"] else {}
    return str(row["run_id"]), summary, catalog.scanned_simulations(str(row["run_id"]))


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
) -> AuditResult:
    """Audit a campaign (a root directory, a summary YAML or a CSV) into the catalog at `db`.

    Returns the run's summary (outcome `completed`, or `interrupted` after SIGTERM/SIGUSR1, with
    every completed batch written). `resume` ("last" or a run id) continues an interrupted or failed
    audit of the same root, scanning only the simulations it had not written. Raises MdbatchError
    for fatal problems (bad input, unreachable catalog or cluster); problems inside simulations are
    findings, never exceptions.
    """
    started = time.monotonic()
    cluster = cluster or ClusterOptions()
    stats = DiscoveryStats()
    root, stream = discover(source, csv_root=csv_root, stats=stats, threads=walk_threads)
    catalog = open_catalog(db)
    tally = _Tally()
    examples: list[dict[str, Any]] = []
    per_kind: Counter[str] = Counter()
    stop = _Stop()
    previous: dict[int, Any] = {}
    status = "failed"
    info: dict[str, Any] = {}
    sink: IO[str] | None = None
    run_id = ""
    tracker: RunTracker | None = None
    try:
        if resume:
            run_id, before, done = _resume_state(catalog, resume, root)
            tally.seed(before)
            stream = (p for p in stream if relative_to_root(p, root) not in done)
            catalog.finish_run(run_id, "running", before)
        else:
            run_id = new_run_id()
            catalog.begin_run(RunInfo(run_id, "audit", root, arguments or {}, socket.gethostname(), __version__, datetime.now(timezone.utc).isoformat()))
        opts = options or ScanOptions()
        tracker = RunTracker(catalog, run_id, root, keep_unchanged=opts.trusts_cache, complete_walk=os.path.isdir(os.fspath(source)))
        if resume:
            tracker.seed(before.get("changes_partial"))
        sink = open(findings_path, "w", encoding="utf-8") if findings_path else None  # noqa: SIM115 - closed below
        cores = cluster.workers or os.cpu_count() or 1
        # Peek at the start of the stream: a campaign that ends within it gets a right-sized cluster
        # and no dashboard (a run of a few seconds is not watched; --dashboard forces it).
        limit = max(cores * 2 * (batch_size or 250), DASHBOARD_THRESHOLD)
        t_peek = time.monotonic()
        head = list(islice(stream, limit + 1))
        tally.peek_s = time.monotonic() - t_peek
        exhausted = len(head) <= limit
        workers, size = plan(len(head), exhausted, cores, batch_size)
        walk_done = [exhausted]

        def paths() -> Iterator[str]:
            yield from head
            yield from stream
            walk_done[0] = True

        def handle(batch: BatchResult) -> None:
            t0 = time.monotonic()
            if tally.first_result_s is None:
                tally.first_result_s = t0 - started
            history, unchanged = tracker.batch_ops(batch)
            catalog.apply([*batch_ops(run_id, root, batch, keep_inventory=unchanged), *history])
            tally.write_s += time.monotonic() - t0
            tally.add(batch)
            rows = batch.findings.to_pylist()
            if sink is not None:
                sink.writelines(json.dumps(row, ensure_ascii=False) + "\n" for row in rows)
            for row in rows:
                if per_kind[row["kind"]] < EXAMPLES_PER_KIND:
                    per_kind[row["kind"]] += 1
                    examples.append(row)
            bar.update(batch.simulations, batch.file_count, stats.simulations if walk_done[0] else None)

        bar = Progress("audit", stream=log_stream, enabled=progress)
        t_cluster = time.monotonic()
        with Fanout(cluster, workers_needed=workers, dashboard=not exhausted) as fan:
            tally.cluster_s = time.monotonic() - t_cluster
            # Handlers only now: forked workers must not inherit them.
            previous = _install_signal_handlers(stop)
            info = {"workers": fan.n_workers, "batch_size": size, "dashboard": fan.dashboard_link}
            if progress and fan.dashboard_link:
                (log_stream or sys.stderr).write(f"mdbatch: Dask dashboard at {fan.dashboard_link}\n")
            t_fan = time.monotonic()
            with fan.performance_report():
                results = fan.stream(scan_group, tracker.groups(batches(paths(), size), size), root, opts)
                try:
                    while True:
                        stop.waiting = True
                        if stop.requested:
                            raise Interrupted(f"stopped by {stop.requested}")
                        try:
                            batch = next(results)
                        except StopIteration:
                            break
                        finally:
                            stop.waiting = False
                        handle(batch)
                except (Interrupted, KeyboardInterrupt):
                    # Keep what already finished: write completed batches, cancel the rest.
                    status = "interrupted"
                    for batch in fan.drain():
                        handle(batch)
                    if not stop.requested:
                        raise
            info["fanout_s"] = round(time.monotonic() - t_fan, 3)
        bar.close()
        if status != "interrupted":
            info["duplicates"] = catalog.duplicate_summary(root)
            t_changes = time.monotonic()
            stages = _stages(tally, stats, tracker, info)
            info["changes"] = tracker.finish(stages)
            info["changes_s"] = round(time.monotonic() - t_changes, 3)
            status = "completed"
    except KeyboardInterrupt:
        status = "interrupted"
        raise
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        if sink is not None:
            sink.close()
        if tracker is not None and status != "completed":
            info["changes_partial"] = tracker.counts.to_dict()
            try:
                tracker.record_stages(_stages(tally, stats, tracker, info))
            except MdbatchError:
                pass  # the run record below still says how far it got
        summary = _summary(run_id, root, catalog, tally, stats, info, time.monotonic() - started, status)
        try:
            if run_id:
                catalog.finish_run(run_id, status, summary)
        finally:
            catalog.close()
    return AuditResult(
        run_id=run_id, summary=summary, catalog_url=catalog.display_url,
        findings_path=os.fspath(findings_path) if findings_path else None, catalog_url_full=resolve_url(db), examples=examples,
    )


def _stages(tally: _Tally, stats: DiscoveryStats, tracker: RunTracker, info: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Per-stage snapshots of the run (stored in MDBATCH_STAGES and the summary)."""
    info["cache"] = {
        "hits": tracker.cache_hits, "files_read": tracker.files_read, "bytes_read": tracker.bytes_read,
        "simulations_kept": tracker.kept, "simulations_rescanned": tracker.rescanned, "lookup_s": round(tracker.lookup_s, 3),
    }
    stages = {
        "discover": {"items": stats.simulations, "elapsed_s": tally.peek_s, "errors": len(stats.unreadable), "directories": stats.directories},
        "scan": {"items": tally.files, "bytes": tracker.bytes_read, "elapsed_s": tally.scan_s, "errors": tally.kinds.get("unreadable", 0), "cache_hits": tracker.cache_hits},
        "write": {"items": tally.batches, "elapsed_s": tally.write_s, "lookup_s": tracker.lookup_s},
    }
    info["stages"] = stages
    return stages


def _summary(
    run_id: str, root: str, catalog: CatalogBackend, tally: _Tally, stats: DiscoveryStats, info: dict[str, Any], elapsed: float, status: str
) -> dict[str, Any]:
    kinds = {k: tally.kinds.get(k, 0) for k in KINDS}
    return {
        "run_id": run_id,
        "outcome": status,
        "root": root,
        "catalog": catalog.display_url,
        "simulations": tally.simulations,
        "files": tally.files,
        "bytes": tally.bytes,
        "findings": kinds,
        "findings_total": sum(kinds.values()),
        "simulations_with_findings": tally.sims_with_findings,
        "status": dict(sorted(tally.status.items())),
        "duplicate_hashes": sum(1 for c in tally.hashes.values() if c > 1),
        "duplicates": info.get("duplicates"),
        "changes": info.get("changes"),
        "changes_partial": info.get("changes_partial"),
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
        "elapsed_s": round(elapsed, 3),
    }
