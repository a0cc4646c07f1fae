"""One writing run of repair, undo or restore: its record, the root's lock, recovery, the journal, the end.

Every run that replaces registries goes through `Session`: the run is recorded (`lifecycle.RunRecord`,
command "repair", exclusive per root), the root's repair lock taken, journals a killed run left
recovered, a journal opened; at the end the run is recorded `completed`, `interrupted` or `failed`.
A journal is deleted when the run ends with every replace resolved, and left for the next run's
recovery when it fails in the middle of one.
"""

from __future__ import annotations

import contextlib
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from ..catalog.base import CatalogBackend
from ..catalog.ops import Op
from ..errors import Interrupted
from ..lifecycle import STOP, RunRecord
from .commit import Batch, Target, commit
from .journal import Journal, root_lock
from .model import Outcome
from .recover import RecoveryReport, recover_pending

#: Registries locked, journaled and committed together (one catalog transaction per batch).
BATCH_REGISTRIES = 64


@dataclass(slots=True)
class Session:
    """A writing run in progress: what it has done so far, for its summary."""

    catalog: CatalogBackend
    record: RunRecord
    root: str
    action: str
    batch: Batch | None = None
    outcomes: list[Outcome] = field(default_factory=list)
    recovery: list[RecoveryReport] = field(default_factory=list)
    status: str = "failed"
    #: How the run ends instead of `completed` (e.g. `refused` when the user declined).
    end_as: str | None = None
    summary: dict[str, Any] = field(default_factory=dict)
    #: The run's own summary keys from what it has done so far (set by the command; called at the end).
    describe: Callable[[Session], dict[str, Any]] = lambda _s: {}

    @property
    def run_id(self) -> str:
        return self.record.run_id

    def replace(self, targets: Sequence[Target], size: int = BATCH_REGISTRIES) -> None:
        """Replace the registries of `targets`, a batch at a time, the run's progress written with each."""
        assert self.batch is not None
        for start in range(0, len(targets), size):

            def progress(done: list[Outcome]) -> list[Op]:
                return [self.record.progress_op({"run_id": self.run_id, "outcome": "running", **counts([*self.outcomes, *done])})]

            self.outcomes.extend(commit(self.batch, targets[start : start + size], progress))


def counts(outcomes: Sequence[Outcome]) -> dict[str, Any]:
    """The per-registry tallies every summary carries."""
    by = Counter(o.status for o in outcomes)
    fixed = Counter(f["kind"] for o in outcomes if o.status == "replaced" for f in o.fixes)
    return {
        "registries_changed": by["replaced"],
        "registries_unchanged": by["unchanged"],
        "fixed": dict(sorted(fixed.items())),
        "conflicts": [o.to_dict() for o in outcomes if o.status == "conflict"],
        "failed": [o.to_dict() for o in outcomes if o.status == "failed"],
    }


@contextlib.contextmanager
def command_catalog(db: str | None, *, read_only: bool = False) -> Iterator[CatalogBackend]:
    """The stop signals handled and the catalog open for one repair, undo or restore command; both
    undone at its end. `read_only` (a dry run) neither migrates the catalog nor reaps dead runs."""
    from ..catalog import open_catalog
    from ..lifecycle import open_catalog_for_command

    installed = STOP.install()
    try:
        catalog = open_catalog(db, must_exist=True) if read_only else open_catalog_for_command(db, must_exist=True)
        try:
            yield catalog
        finally:
            catalog.close()
    finally:
        if installed:
            STOP.uninstall()


@contextlib.contextmanager
def session(
    catalog: CatalogBackend, root: str, action: str, arguments: dict[str, Any], url: str, *, record: RunRecord | None = None
) -> Iterator[Session]:
    """Record the run (or take `record`, already started), lock the root, recover, journal; end it all.

    The body sets `session.describe` (its summary's own keys) and leaves `status` to this context: `completed`
    when the body returns, `interrupted` after a stop signal, `failed` after an error.
    """
    rec = record or RunRecord.start(catalog, "repair", root, arguments, exclusive=True, url=url)
    s = Session(catalog, rec, root, action)
    journal: Journal | None = None
    resolved = False
    try:
        lock = root_lock(root)
        try:
            with STOP.deferred():  # a stop signal here is raised once the journal can be finished
                s.recovery = recover_pending(catalog, root)
                journal = Journal(root, rec.run_id, action)
                s.batch = Batch(catalog, journal, rec.run_id, root, action)
            yield s
            s.status = s.end_as or "completed"
        except Interrupted:  # a stop signal at any point of the run, its set-up included
            s.status = "interrupted"
            raise
        finally:
            if journal is not None:
                # Interrupted is raised between batches (each batch is one deferred section): all resolved.
                resolved = s.status != "failed"
                if resolved:
                    journal.finish(s.status)
                else:
                    journal.close()
            lock.release()
    finally:
        s.summary = {"run_id": rec.run_id, "outcome": s.status, **s.describe(s), **recovery_summary(s.recovery)}
        rec.finish(s.status, s.summary)


def recovery_summary(reports: Sequence[RecoveryReport]) -> dict[str, Any]:
    """What recovery of killed runs did, for the summary."""
    if not reports:
        return {"recovered": [], "recovery_anomalies": 0}
    return {"recovered": [r.to_dict() for r in reports], "recovery_anomalies": sum(len(r.anomalies) for r in reports)}
