"""The journaled executor: replaces a batch of registries, each re-checked under its lock, with a way back.

For one batch (registries taken in path order, so two repairs never wait on each other in a
circle): every registry's lock is taken and its bytes read; `decide` re-checks what is planned
against them and gives the new bytes; the intents are fsync'd to the journal; the snapshots (the
exact bytes before and after) are committed to the catalog with the run's progress, in one
transaction; only then is each registry replaced (atomically), and the locks released. A SIGKILL
at any instant leaves each registry as it was or as decided, and the journal says which to check.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from ..catalog.base import CatalogBackend
from ..catalog.ops import Op
from ..errors import MdbatchError, RegistryCorruptError, RegistryLockError
from ..lifecycle import STOP
from ..registry.store import Registry
from .journal import Journal, encode_bytes
from .model import Outcome, Skip, sha256_bytes
from .snapshots import Snapshot, delete_ops, insert_ops


@dataclass(frozen=True, slots=True)
class Decision:
    """What to do with one registry, decided under its lock from its current bytes."""

    change: bool
    after: bytes | None = None
    fixes: tuple[dict[str, Any], ...] = ()
    skipped: tuple[Skip, ...] = ()
    conflict: str = ""


@dataclass(frozen=True, slots=True)
class Target:
    """One registry to replace: where it is, and how to decide its new bytes from its current ones."""

    simulation: str
    directory: str
    hash: str | None
    decide: Callable[[bytes | None], Decision]


@dataclass(slots=True)
class Batch:
    """The state of one run's writes: its journal, catalog, next snapshot number."""

    catalog: CatalogBackend
    journal: Journal
    run_id: str
    root: str
    action: str
    next_seq: int = 1
    lock_timeout: float = 60.0


def commit(batch: Batch, targets: Sequence[Target], progress: Callable[[list[Outcome]], list[Op]]) -> list[Outcome]:
    """Replace the registries of `targets` as decided (see the module docstring); one outcome each.

    `progress(outcomes)` gives the run-record operations written with the snapshots.
    """
    outcomes: list[Outcome] = []
    with STOP.deferred(), contextlib.ExitStack() as locks:
        staged: list[tuple[Target, Registry, Snapshot, Decision]] = []
        for target in sorted(targets, key=lambda t: t.directory):
            reg = Registry(target.directory, lock_timeout=batch.lock_timeout)
            try:
                locks.enter_context(reg.locked())
                current = reg.read_bytes()
            except (RegistryLockError, RegistryCorruptError, OSError) as exc:
                outcomes.append(_left(target, "failed", f"registry not locked or read: {exc}"))
                continue
            decision = target.decide(current)
            if not decision.change or decision.after == current:
                status = "conflict" if decision.conflict else "unchanged"
                outcomes.append(_left(target, status, decision.conflict, decision.skipped))
                continue
            snap = _snapshot(batch, target, current, decision)
            staged.append((target, reg, snap, decision))
        if not staged:
            return outcomes
        for _target, _reg, snap, decision in staged:
            batch.journal.write(_intent(snap, decision))
        batch.journal.sync()
        done = [_done(t, s, d) for t, _r, s, d in staged]
        batch.catalog.apply([*insert_ops([s for _t, _r, s, _d in staged]), *progress([*outcomes, *done])])
        outcomes.extend(_replace(batch, staged))
        batch.journal.sync()
    return outcomes


def _replace(batch: Batch, staged: list[tuple[Target, Registry, Snapshot, Decision]]) -> list[Outcome]:
    """Replace each staged registry; a write that fails is rolled out of the catalog."""
    out: list[Outcome] = []
    failed: list[int] = []
    for target, reg, snap, decision in staged:
        try:
            reg.replace_bytes(snap.bytes_after)
        except (MdbatchError, OSError) as exc:
            failed.append(snap.seq)
            batch.journal.write({"t": "failed", "seq": snap.seq, "reason": str(exc)})
            out.append(_left(target, "failed", f"cannot write the registry: {exc}", decision.skipped))
            continue
        batch.journal.write({"t": "done", "seq": snap.seq})
        out.append(_done(target, snap, decision))
    if failed:
        batch.catalog.apply(delete_ops(batch.run_id, failed))
    return out


def _snapshot(batch: Batch, target: Target, current: bytes | None, decision: Decision) -> Snapshot:
    seq = batch.next_seq
    batch.next_seq += 1
    return Snapshot(
        batch.run_id,
        seq,
        batch.root,
        target.simulation,
        target.hash,
        os.path.abspath(target.directory),
        batch.action,
        sha256_bytes(current),
        current,
        sha256_bytes(decision.after),
        decision.after,
        datetime.now(UTC),
        json.dumps({"fixes": list(decision.fixes)}),
    )


def _intent(snap: Snapshot, decision: Decision) -> dict[str, Any]:
    return {
        "t": "intent",
        "seq": snap.seq,
        "simulation": snap.simulation,
        "directory": snap.directory,
        "hash": snap.hash,
        "action": snap.action,
        "taken_at": snap.taken_at.isoformat(),
        "sha_before": snap.sha256_before,
        "sha_after": snap.sha256_after,
        "before": encode_bytes(snap.bytes_before),
        "after": encode_bytes(snap.bytes_after),
        "detail": {"fixes": list(decision.fixes)},
    }


def _done(target: Target, snap: Snapshot, decision: Decision) -> Outcome:
    return Outcome(
        target.simulation,
        target.directory,
        "replaced",
        snap.seq,
        snap.sha256_before,
        snap.sha256_after,
        decision.fixes,
        decision.skipped,
        decision.conflict,
    )


def _left(target: Target, status: str, reason: str, skipped: tuple[Skip, ...] = ()) -> Outcome:
    return Outcome(target.simulation, target.directory, status, skipped=skipped, reason=reason)
