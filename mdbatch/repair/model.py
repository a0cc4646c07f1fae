"""What a repair works on and returns: finding kinds it fixes, the per-simulation task and plan, the result.

Plain, immutable records: a `SimTask` goes to a worker, a `SimPlan` comes back (the fixes that
hold, with the facts read from the files, and the registry's bytes before and after); the client
turns plans into `Outcome`s under each registry's lock (see `commit.py`).
"""

from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass, field
from typing import Any

from .. import findings as fk

#: Kinds every repair fixes.
FIXED_KINDS: tuple[str, ...] = (fk.ROW_COUNT_MISMATCH, fk.COLUMNS_MISMATCH, fk.EXTRA_FILE, fk.MISSING_FILE, fk.ARTIFACT_MISSING_FILE)
#: Kinds fixed only when the option that names them is given (they may be damage, not an update).
FLAGGED_KINDS: dict[str, str] = {fk.ARTIFACT_CHECKSUM_MISMATCH: "--accept-checksums", fk.REGISTRY_CORRUPT: "--rebuild-corrupt"}
#: Every kind a repair can fix; anything else an audit reports is never fixed automatically.
REPAIRABLE: tuple[str, ...] = (*FIXED_KINDS, *FLAGGED_KINDS)

#: How a registry came to be replaced (MDBATCH_REGISTRY_SNAPSHOTS.action).
ACTIONS = ("repair", "undo", "restore")


def sha256_bytes(data: bytes | None) -> str | None:
    """The sha256 of `data` in hex; None for no file."""
    return None if data is None else hashlib.sha256(data).hexdigest()


@dataclass(frozen=True, slots=True)
class SimTask:
    """One simulation to plan: its directory and the findings (kind, item) to fix there."""

    simulation: str
    directory: str
    findings: tuple[tuple[str, str], ...]


@dataclass(frozen=True, slots=True)
class Fix:
    """One planned fix: the finding, what will change (`detail`) and the facts it was planned from.

    `facts` holds what the fix writes (rows, columns, sha256) and the stat of the file it was read
    from, so the re-check under the lock can tell whether the file changed since.
    """

    kind: str
    item: str
    detail: str
    facts: dict[str, Any] = field(default_factory=dict, compare=False)

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "item": self.item, "detail": self.detail}


@dataclass(frozen=True, slots=True)
class Skip:
    """A finding that was not fixed, and why (it no longer holds, the file changed, the registry is busy)."""

    simulation: str
    kind: str
    item: str
    reason: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True, slots=True)
class SimPlan:
    """What one simulation's repair would do: its registry's bytes before and after, the fixes that
    hold (with their facts) and the findings skipped. `after` equals `before` when nothing changes."""

    simulation: str
    directory: str
    before: bytes | None
    after: bytes | None
    fixes: tuple[Fix, ...]
    skipped: tuple[Skip, ...]

    @property
    def changes(self) -> bool:
        return bool(self.fixes) and self.after != self.before


@dataclass(frozen=True, slots=True)
class Outcome:
    """What happened to one registry: replaced (with the snapshot's `seq`), or left alone and why."""

    simulation: str
    directory: str
    status: str  # replaced | unchanged | conflict | failed
    seq: int | None = None
    sha256_before: str | None = None
    sha256_after: str | None = None
    fixes: tuple[dict[str, Any], ...] = ()
    skipped: tuple[Skip, ...] = ()
    reason: str = ""

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["fixes"] = list(self.fixes)
        out["skipped"] = [s.to_dict() for s in self.skipped]
        return out


@dataclass(slots=True)
class RepairResult:
    """A repair, undo or restore run: its id, summary (what --json writes), per-registry outcomes and
    (dry run) the unified diff of each registry that would change."""

    run_id: str
    summary: dict[str, Any]
    outcomes: list[Outcome] = field(default_factory=list)
    diffs: list[str] = field(default_factory=list)

    @property
    def exit_code(self) -> int:
        """0 done; 1 when something was left that a look is due for: a finding skipped (it changed
        since the audit, or its registry was busy), a conflict, a failed write, a recovery anomaly."""
        s = self.summary
        return 1 if s.get("skipped") or s.get("conflicts") or s.get("failed") or s.get("recovery_anomalies") else 0
