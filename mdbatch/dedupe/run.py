"""`dedupe`: recover, discover, find duplicates (staged, fanned out), report, and optionally link them.

Order of a run: finish any interrupted apply under the root (journals in `.mdbatch-journal/`),
walk the campaign for simulation directories, find duplicate groups (see `plan.py`), write the
groups file, apply if asked (see `apply.py`), and record the run in the catalog when one is given.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import IO, TYPE_CHECKING, Any

from ..atomic import atomic_writer
from ..discover import DiscoveryStats, walk_root
from ..errors import InputError, Interrupted, UsageError
from ..lifecycle import STOP, RunRecord, new_run_id
from ..paths import display
from .apply import Hook, apply_groups
from .catalog_listing import CatalogListing
from .digests import DigestSource, InventoryDigests
from .journal import JOURNAL_DIRNAME, pending_journals, root_lock
from .model import DEFAULT_STATUSES, LINK_KINDS, ApplyOptions, ApplyResult, DuplicateGroup, FindResult
from .plan import FindOptions, LocalRunner, Runner, find_duplicates
from .recover import RecoveryReport, recover_pending, summarize

if TYPE_CHECKING:
    from ..catalog import CatalogBackend
    from ..engine import ClusterOptions

#: A stage goes to the Dask cluster when its estimated serial time exceeds this (cluster start-up
#: and teardown cost about a second; below this the work is done faster in-process).
CLUSTER_THRESHOLD_S = 2.0
STATUSES = ("completed", "production", "equilibrated", "build")
#: Where the listing of files comes from (see `dedupe`).
LISTINGS = ("auto", "catalog", "walk")


@dataclass(slots=True)
class DedupeResult:
    """A dedupe run: its summary (what `--json` writes), the groups, and the apply result if any."""

    run_id: str
    summary: dict[str, Any]
    groups: list[DuplicateGroup]
    applied: ApplyResult | None = None
    recovery: list[RecoveryReport] = field(default_factory=list)

    @property
    def exit_code(self) -> int:
        """0 done; 1 when something needs a look (groups skipped because files changed or differed,
        recovery anomalies)."""
        if self.applied is not None and not self.applied.dry_run and self.applied.skipped:
            return 1
        if any(r.anomalies for r in self.recovery):
            return 1
        return 0


class _Runners:
    """Picks where each stage runs, starting the Dask cluster only once a stage is worth it."""

    def __init__(self, stack: contextlib.ExitStack, cluster: ClusterOptions | None, mode: str, say: Any) -> None:
        self.stack = stack
        self.cluster = cluster
        self.mode = mode
        self.say = say
        self.fan: Any = None
        self.local = LocalRunner()
        self.cluster_s = 0.0

    def __call__(self, stage: str, estimate_s: float) -> Runner:
        if self.fan is not None:
            return self.fan  # type: ignore[no-any-return]
        cores = (self.cluster.workers if self.cluster and self.cluster.workers else None) or os.cpu_count() or 1
        if self.mode == "local" or (self.mode == "auto" and (estimate_s < CLUSTER_THRESHOLD_S or cores < 2)):
            return self.local
        from ..engine import ClusterOptions, Fanout

        started = time.monotonic()
        # Auto mode sizes the cluster to the work (about a worker per half second of it).
        workers = cores if self.mode == "cluster" else max(1, min(cores, int(estimate_s / 0.5) + 1))
        self.fan = self.stack.enter_context(Fanout(self.cluster or ClusterOptions(), workers_needed=workers, dashboard=False))
        self.cluster_s = time.monotonic() - started
        self.say(f"started a Dask cluster of {self.fan.n_workers} workers for the {stage} stage ({self.cluster_s:.1f}s)")
        return self.fan  # type: ignore[no-any-return]

    @property
    def workers(self) -> int:
        return int(self.fan.n_workers) if self.fan is not None else 1


def parse_statuses(text: str | None) -> frozenset[str] | None:
    """`--status completed,production` -> frozenset; 'all' -> None (every status may be modified)."""
    if text is None:
        return DEFAULT_STATUSES
    names = {s.strip() for s in text.split(",") if s.strip()}
    if "all" in names:
        return None
    unknown = names - set(STATUSES)
    if unknown or not names:
        raise UsageError(f"--status takes a comma-separated list of {', '.join(STATUSES)} (or 'all'), got {text!r}")
    return frozenset(names)


def _thread_options(link_threads: int | None) -> dict[str, Any]:
    if link_threads is None:
        return {}
    if link_threads < 1:
        raise UsageError("--link-threads must be >= 1")
    return {"threads": link_threads, "fast_link_s": 0.0}


@dataclass(slots=True)
class _Run:
    """One dedupe run as it goes, filled in phase by phase and summarised however it ends."""

    top: str
    say: Callable[[str], None]
    run_id: str  # the journal's name too
    catalog: CatalogBackend | None = None
    record: RunRecord | None = None
    outcome: str = "failed"
    recovery: list[RecoveryReport] = field(default_factory=list)
    runners: _Runners | None = None
    found: FindResult | None = None
    applied: ApplyResult | None = None
    timings: dict[str, float] = field(default_factory=dict)
    recorded: CatalogListing | None = None


def dedupe(
    root: str | os.PathLike[str],
    *,
    db: str | None = None,
    groups_path: str | os.PathLike[str] | None = None,
    min_size: int = 1,
    statuses: frozenset[str] | None = DEFAULT_STATUSES,
    apply: bool = False,
    link: str = "hardlink",
    store: str | os.PathLike[str] | None = None,
    dry_run: bool = False,
    writable: bool = False,
    cluster: ClusterOptions | None = None,
    mode: str = "auto",
    io_threads: int = 1,
    digests: DigestSource | None = None,
    progress: bool = True,
    log_stream: IO[str] | None = None,
    arguments: dict[str, Any] | None = None,
    hook: Hook | None = None,
    chunk_actions: int = 2048,
    link_threads: int | None = None,
    listing: str = "auto",
) -> DedupeResult:
    """Find identical files across the campaign under `root`; link them when `apply` or `store`.

    `mode` is "auto" (in-process for small work, the Dask cluster when a stage is big), "local"
    or "cluster". `link_threads`: threads that link (None: 1 or 4, chosen by timing the first
    chunk). `listing`: "catalog" takes the files of the simulations an audit recorded from the
    catalog and re-stats only the candidates, "walk" lists the tree, "auto" the catalog when it
    holds an audit of the root. Raises MdbatchError for fatal problems; files that changed are
    reported, never fatal.
    """
    started = time.monotonic()
    top = _checked_root(root, link=link, store=store, writable=writable, min_size=min_size)
    if listing not in LISTINGS:
        raise UsageError(f"--listing must be one of {', '.join(LISTINGS)}")
    if listing == "catalog" and not db:
        raise UsageError("--listing catalog needs a catalog (--db)")
    acting = (apply or store is not None) and not dry_run
    planning = apply or store is not None or dry_run
    installed = STOP.install()
    run = _Run(top, _progress(progress, log_stream or sys.stderr), new_run_id())
    summary: dict[str, Any] = {}
    with contextlib.ExitStack() as stack:
        try:
            _open_record(run, db, arguments)
            _lock_and_recover(run, stack, acting=acting, dry_run=dry_run)
            found = _find(run, stack, digests, cluster, mode, FindOptions(min_size=min_size, io_threads=io_threads), listing)
            if groups_path:
                write_groups(groups_path, found.groups)
            if planning:
                options = ApplyOptions(
                    link=link,
                    store=os.fspath(store) if store is not None else None,
                    writable=writable,
                    statuses=statuses,
                    dry_run=not acting,
                    chunk_actions=chunk_actions,
                    **_thread_options(link_threads),
                )
                _apply(run, found.groups, options, hook)
            run.outcome = "completed"
        except Interrupted as exc:
            run.outcome = "interrupted"
            raise Interrupted(f"{exc}; any apply in flight was rolled back") from exc
        finally:
            summary = _summary(
                run, statuses=statuses, min_size=min_size, dry_run=dry_run, apply=apply, store=store, elapsed=time.monotonic() - started
            )
            _close(run, summary, installed)
    return DedupeResult(run.run_id, summary, run.found.groups if run.found else [], run.applied, run.recovery)


def _checked_root(
    root: str | os.PathLike[str],
    *,
    link: str,
    store: str | os.PathLike[str] | None,
    writable: bool,
    min_size: int,
) -> str:
    """The absolute campaign root; InputError or UsageError for arguments no run can honour."""
    top = os.path.abspath(os.fspath(root))
    if not os.path.isdir(top):
        raise InputError(f"campaign root {top!r} is not a directory")
    if link not in LINK_KINDS:
        raise UsageError(f"--link must be one of {', '.join(LINK_KINDS)}")
    if store is not None and writable:
        raise UsageError("--writable cannot be used with --store: store objects are always read-only")
    if min_size < 0:
        raise UsageError("--min-size must be >= 0")
    return top


def _progress(progress: bool, stream: IO[str]) -> Callable[[str], None]:
    """The run's progress line writer (silent unless `progress`)."""

    def say(message: str) -> None:
        if progress:
            stream.write(f"mdbatch dedupe: {message}\n")
            stream.flush()

    return say


def _open_record(run: _Run, db: str | None, arguments: dict[str, Any] | None) -> None:
    """Open the catalog `db` and record the run's start there; the run takes the record's id."""
    if not db:
        return
    from ..catalog import open_catalog
    from ..config import resolve_url

    run.catalog = open_catalog(db)
    with STOP.deferred():
        run.record = RunRecord.start(run.catalog, "dedupe", run.top, arguments, url=resolve_url(db))
    run.run_id = run.record.run_id


def _lock_and_recover(run: _Run, stack: contextlib.ExitStack, *, acting: bool, dry_run: bool) -> None:
    """Take the root's lock when the run will link (held until `stack` closes), then finish any
    interrupted apply; a dry run only mentions the journals it left."""
    lock = root_lock(run.top) if acting else None
    if lock is not None:
        stack.callback(lock.release)
    if dry_run:
        if pending_journals(run.top):
            run.say(
                f"an interrupted apply left {len(pending_journals(run.top))} journal(s) in {JOURNAL_DIRNAME}/; "
                "a run without --dry-run recovers them"
            )
        return
    run.recovery = recover_pending(run.top, have_lock=lock is not None)
    for r in run.recovery:
        run.say(
            f"recovered interrupted apply {display(r.journal)}: {r.completed} links kept, {r.rolled_back} rolled back, "
            f"{r.temps_removed} temporaries removed"
        )


def _find(
    run: _Run,
    stack: contextlib.ExitStack,
    digests: DigestSource | None,
    cluster: ClusterOptions | None,
    mode: str,
    options: FindOptions,
    listing: str,
) -> FindResult:
    """Find the duplicate groups under the root, reusing the catalog's listing and digests when it has them."""
    t_cat = time.monotonic()
    if run.catalog is not None and listing != "walk":
        run.recorded = CatalogListing.load(run.catalog, run.top)
        if not run.recorded.files:
            if listing == "catalog":
                raise InputError(f"the catalog holds no audit of {display(run.top)}: run `mdbatch audit` first, or --listing walk")
            run.recorded = None
        elif digests is None:
            digests = run.recorded.digests
            run.say(f"reusing {len(run.recorded.digests)} digests from the audit catalog")
    if digests is None and run.catalog is not None:
        digests = InventoryDigests.from_catalog(run.catalog, run.top)
        run.say(f"reusing {len(digests)} digests from the audit catalog")
    run.timings["catalog_read_s"] = time.monotonic() - t_cat
    disc = DiscoveryStats()
    t_disc = time.monotonic()
    sims = list(walk_root(run.top, disc))
    run.timings["discovery_s"] = time.monotonic() - t_disc
    if run.recorded is not None:
        run.say(
            "listing the audited simulations from the catalog (their files as last audited; files added to them "
            "since are not seen: --listing walk lists the tree)"
        )
    run.runners = _Runners(stack, cluster, mode, run.say)
    found = run.found = find_duplicates(run.top, sims, run.runners, options, digests, run.say, run.recorded)
    run.say(f"{len(found.groups)} groups, {found.duplicate_files} files, {found.reclaimable_bytes} bytes reclaimable")
    return found


def _listing_summary(run: _Run) -> dict[str, Any]:
    """Where the listing came from and what the re-stat found (the summary's `listing`)."""
    recorded = run.recorded
    if recorded is None:
        return {"source": "walk"}
    return {
        "source": "catalog",
        "simulations_from_catalog": recorded.used,
        "simulations_walked": recorded.walked,
        "candidates_restatted": recorded.restatted,
        "changed_since_audit": recorded.changed,
        "vanished_since_audit": len(recorded.vanished),
        "vanished_examples": [display(p) for p in recorded.vanished[:10]],
    }


def _apply(run: _Run, groups: list[DuplicateGroup], options: ApplyOptions, hook: Hook | None) -> None:
    """Link the groups (or say what would be linked, for a dry run)."""
    applied = run.applied = apply_groups(run.top, groups, options, run.run_id, hook)
    verb = "would link" if applied.dry_run else "linked"
    run.say(
        f"{verb} {applied.links} paths in {applied.groups_linked or applied.link_sets} groups, {applied.bytes_reclaimed} bytes; "
        f"{len(applied.skipped)} skipped"
    )


def _close(run: _Run, summary: dict[str, Any], installed: bool) -> None:
    """Record how the run ended, close the catalog, and stop handling signals if this run started to."""
    try:
        if run.record is not None:
            run.record.finish(run.outcome, summary)
    finally:
        if run.catalog is not None:
            run.catalog.close()
        if installed:
            STOP.uninstall()


def write_groups(path: str | os.PathLike[str], groups: list[DuplicateGroup]) -> None:
    """Write one JSON object per group per line (digest, size, sorted paths), atomically ('-': stdout)."""
    target = os.fspath(path)
    if target == "-":
        for g in groups:
            sys.stdout.write(json.dumps(g.to_json(), ensure_ascii=False) + "\n")
        return
    with atomic_writer(target, mode=0o644) as handle:
        for g in groups:
            handle.write((json.dumps(g.to_json(), ensure_ascii=False) + "\n").encode("utf-8"))


def _summary(
    run: _Run,
    *,
    statuses: frozenset[str] | None,
    min_size: int,
    dry_run: bool,
    apply: bool,
    store: str | os.PathLike[str] | None,
    elapsed: float,
) -> dict[str, Any]:
    """The run's summary: what `--json` writes and the run record keeps."""
    found, applied, runners = run.found, run.applied, run.runners
    mode = "dry-run" if dry_run else "store" if store is not None else "apply" if apply else "report"
    stats = found.stats.to_dict() if found else {}
    out: dict[str, Any] = {
        "run_id": run.run_id,
        "command": "dedupe",
        "outcome": run.outcome,
        "root": run.top,
        "mode": mode,
        "groups": len(found.groups) if found else 0,
        "duplicate_files": found.duplicate_files if found else 0,
        "reclaimable_bytes": found.reclaimable_bytes if found else 0,
        "dedup_ratio": found.dedup_ratio if found else 1.0,
        "elapsed_s": round(elapsed, 3),
        "min_size": min_size,
        "modify_statuses": sorted(statuses) if statuses is not None else "all",
        "physical_bytes": found.stats.physical_bytes if found else 0,
        **stats,
        "listing": _listing_summary(run),
        "workers": runners.workers if runners else None,
        "catalog": run.catalog.display_url if run.catalog is not None else None,
        "apply": applied.to_dict() if applied else None,
        "recovery": summarize(run.recovery) if run.recovery else None,
    }
    t = dict(out.get("timings", {}))
    t.update({k: round(v, 3) for k, v in run.timings.items()})
    if runners is not None and runners.cluster_s:
        t["cluster_start_s"] = round(runners.cluster_s, 3)
    if applied is not None:
        t["apply_s"] = round(applied.elapsed_s, 3)
    out["timings"] = t
    return out
