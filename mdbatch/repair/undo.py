"""The way back: `repair --undo RUN`, `registry history SIM_DIR` and `registry restore SIM_DIR --to SNAPSHOT`.

An undo is itself a recorded, journaled run (command "repair", action "undo") whose snapshots make
it undoable in turn. It puts back the exact bytes each registry had before RUN, but only where the
registry still holds the bytes RUN wrote: one changed since is a conflict, left alone unless
`force`. A restore puts back one snapshot's `before` bytes, whatever the registry holds now (the
bytes it replaces are snapshotted first, so a restore is undoable too).
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable
from typing import IO, Any

from ..catalog import open_catalog, queries
from ..catalog.base import CatalogBackend
from ..config import resolve_url
from ..errors import UsageError
from . import snapshots
from .commit import Decision, Target
from .model import RepairResult, sha256_bytes
from .session import Session, command_catalog, counts, session
from .snapshots import Snapshot


def undo(
    run: str,
    *,
    db: str | None = None,
    force: bool = False,
    progress: bool = True,
    log_stream: IO[str] | None = None,
    arguments: dict[str, Any] | None = None,
) -> RepairResult:
    """Put back every registry repair run `run` ('last': the newest repair run) replaced, byte for byte.

    A registry changed since that run is a conflict and is left alone, unless `force`.
    """
    started = time.monotonic()
    with command_catalog(db) as catalog:
        row = queries.resolve_run(catalog, run, command="repair")
        taken = snapshots.of_run(catalog, str(row["run_id"]))
        if not taken:
            raise UsageError(f"run {row['run_id']} replaced no registry: nothing to undo")
        root = str(row["root"])
        with session(catalog, root, "undo", arguments or {}, resolve_url(db)) as s:
            s.describe = _describer("undo", root, started, undone=str(row["run_id"]), force=force)
            s.replace([Target(sn.simulation or "", sn.directory, sn.hash, _undoer(sn, force)) for sn in taken])
        if progress:
            (log_stream or sys.stderr).write(f"mdbatch repair: undid {s.summary['registries_changed']} registries of {row['run_id']}\n")
        return RepairResult(s.run_id, s.summary, s.outcomes)


def _undoer(snap: Snapshot, force: bool) -> Callable[[bytes | None], Decision]:
    """Under the lock: the registry goes back to `snap`'s before bytes if it still holds its after bytes."""
    fix = ({"kind": "undo", "item": snap.id, "detail": f"restored the bytes from before run {snap.run_id}"},)

    def decide(current: bytes | None) -> Decision:
        now = sha256_bytes(current)
        if now == snap.sha256_after:
            return Decision(True, snap.bytes_before, fix)
        if now == snap.sha256_before:
            return Decision(False)  # already as it was before that run
        conflict = (
            f"changed since run {snap.run_id} (sha256 {(now or 'absent')[:16]}, that run wrote {(snap.sha256_after or 'absent')[:16]})"
        )
        if force:
            return Decision(True, snap.bytes_before, ({**fix[0], "detail": fix[0]["detail"] + "; forced: " + conflict},))
        return Decision(False, conflict=conflict)

    return decide


def restore(
    sim_dir: str | os.PathLike[str],
    snapshot_id: str,
    *,
    db: str | None = None,
    arguments: dict[str, Any] | None = None,
) -> RepairResult:
    """Put back the bytes the registry of `sim_dir` had before snapshot `snapshot_id` (RUN:SEQ) was taken."""
    started = time.monotonic()
    with command_catalog(db) as catalog:
        snap = snapshots.one(catalog, snapshot_id)
        directory = os.path.abspath(os.fspath(sim_dir))
        if snap.directory != directory:
            raise UsageError(f"snapshot {snapshot_id} is of {snap.directory}, not of {directory}")
        root = snap.root or os.path.dirname(directory)
        fix = ({"kind": "restore", "item": snap.id, "detail": f"restored the bytes from before snapshot {snap.id}"},)
        with session(catalog, root, "restore", arguments or {}, resolve_url(db)) as s:
            s.describe = _describer("restore", root, started, snapshot=snap.id)
            s.replace([Target(snap.simulation or "", directory, snap.hash, lambda _current: Decision(True, snap.bytes_before, fix))])
        return RepairResult(s.run_id, s.summary, s.outcomes)


def _describer(mode: str, root: str, started: float, **extra: Any) -> Callable[[Session], dict[str, Any]]:
    def describe(s: Session) -> dict[str, Any]:
        return {
            "command": "repair",
            "mode": mode,
            "root": root,
            **extra,
            **counts(s.outcomes),
            "elapsed_s": round(time.monotonic() - started, 3),
        }

    return describe


def history(sim_dir: str | os.PathLike[str], *, db: str | None = None) -> list[dict[str, Any]]:
    """The snapshots of one simulation's registry, oldest first: id (RUN:SEQ), when, which action, sha256s."""
    catalog = open_catalog(db, must_exist=True)
    try:
        return _history(catalog, os.fspath(sim_dir))
    finally:
        catalog.close()


def _history(catalog: CatalogBackend, sim_dir: str) -> list[dict[str, Any]]:
    out = []
    for row in snapshots.of_directory(catalog, sim_dir):
        out.append(
            {
                "snapshot": f"{row['run_id']}:{row['seq']}",
                "taken_at": row["taken_at"].isoformat() if row["taken_at"] is not None else None,
                "action": row["action"],
                "run_id": row["run_id"],
                "sha256_before": row["sha256_before"],
                "sha256_after": row["sha256_after"],
                "detail": row["detail"],
            }
        )
    return out
