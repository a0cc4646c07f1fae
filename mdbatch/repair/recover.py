"""Finishing a killed repair: each journaled replace is found done or not done, and the catalog made to agree.

Recovery reads the registries, not the journal's ``done`` records: a registry whose sha256 is the
intent's `after` was replaced (its snapshot is kept, written from the journal if the catalog lacks
it); one whose sha256 is still `before` was not (its snapshot, if committed, is deleted: undo must
not put back what was never changed); anything else changed again since and is reported, its
snapshot kept (an undo then reports a conflict and leaves it alone). Recovery is idempotent, and
deletes the journal once the catalog agrees; a re-run of `mdbatch repair` fixes what is left.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field
from typing import Any

from ..atomic import fsync_dir
from ..catalog.base import CatalogBackend
from ..catalog.ops import Op
from ..errors import MdbatchError, RegistryCorruptError
from ..registry.store import Registry
from .journal import JournalState, decode_bytes, pending_journals
from .model import sha256_bytes
from .snapshots import Snapshot, delete_ops, insert_ops


@dataclass(slots=True)
class RecoveryReport:
    """What recovery found in one journal."""

    journal: str
    run_id: str = ""
    intents: int = 0
    replaced: int = 0
    not_replaced: int = 0
    anomalies: list[dict[str, str]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def recover(catalog: CatalogBackend, path: str) -> RecoveryReport:
    """Recover one pending journal (the caller holds the root's repair lock); then delete it."""
    report = RecoveryReport(path)
    try:
        state = JournalState.load(path)
    except MdbatchError:
        state = None
    if state is None or not state.header:  # killed before its header was durable: nothing was done
        _remove(path)
        return report
    run_id, root = str(state.header["run_id"]), state.header.get("root")
    report.run_id, report.intents = run_id, len(state.intents)
    keep: list[Snapshot] = []
    drop: list[int] = []
    for rec in state.intents:
        try:
            now = sha256_bytes(Registry(rec["directory"]).read_bytes())
        except (OSError, RegistryCorruptError) as exc:
            report.anomalies.append({"directory": rec["directory"], "problem": f"cannot read the registry: {exc}"})
            continue
        before, after = decode_bytes(rec.get("before")), decode_bytes(rec.get("after"))
        if now == rec.get("sha_after"):
            report.replaced += 1
            keep.append(Snapshot.from_intent(run_id, root, rec, before, after))
        elif now == rec.get("sha_before"):
            report.not_replaced += 1
            drop.append(int(rec["seq"]))
        else:
            keep.append(Snapshot.from_intent(run_id, root, rec, before, after))
            report.anomalies.append(
                {"directory": rec["directory"], "problem": "the registry changed again since this repair was killed; its snapshot is kept"}
            )
    ops: list[Op] = [*delete_ops(run_id, drop), *insert_ops(keep, skip_present=True)]
    if ops:
        catalog.apply(ops)
    _remove(path)
    return report


def recover_pending(catalog: CatalogBackend, root: str) -> list[RecoveryReport]:
    """Recover every journal a killed repair left under `root` (the caller holds the root's repair lock)."""
    return [recover(catalog, path) for path in pending_journals(root)]


def _remove(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        return
    fsync_dir(os.path.dirname(path))
