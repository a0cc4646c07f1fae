"""Finishing an interrupted apply: roll back the action in flight, keep the completed ones.

Recovery reads the filesystem, not the ``done`` records: for every intent it looks at the path and
its temporary name. A temporary link that was created but not yet renamed is removed; a path that
already is the link stays one (its bytes were verified identical before the rename); a path still
holding its original inode was never touched. A read-only bit set for a link set none of whose links
completed is put back. Every path therefore reads exactly its original bytes afterwards, recovery
is idempotent (running it again changes nothing), and a re-run of ``mdbatch dedupe`` links what is left.
"""

from __future__ import annotations

import os
import stat
from collections import defaultdict
from dataclasses import asdict, dataclass, field
from typing import Any

from ..paths import display
from .fsops import RootFS, fchmod_path_checked
from .journal import ACTIVE_SUFFIX, JournalState, append_and_close, pending_journals, root_lock


@dataclass(slots=True)
class RecoveryReport:
    """What recovery found in one journal and what it did."""

    journal: str
    actions: int = 0
    completed: int = 0
    rolled_back: int = 0
    temps_removed: int = 0
    modes_restored: int = 0
    anomalies: list[dict[str, str]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _tmp_is_ours(st: os.stat_result, rec: dict[str, Any], fs: RootFS, rel: str) -> bool:
    kind = rec["kind"]
    if kind == "hardlink":
        return stat.S_ISREG(st.st_mode) and st.st_ino == rec["target_ino"]
    if kind == "symlink":
        return stat.S_ISLNK(st.st_mode) and fs.readlink(rel) == rec["target"]
    return stat.S_ISREG(st.st_mode)  # reflink: a unique name created with O_EXCL


def _path_is_link(st: os.stat_result, rec: dict[str, Any], fs: RootFS, rel: str) -> bool:
    kind = rec["kind"]
    if kind == "hardlink":
        return stat.S_ISREG(st.st_mode) and st.st_ino == rec["target_ino"]
    if kind == "symlink":
        return stat.S_ISLNK(st.st_mode) and fs.readlink(rel) == rec["target"]
    return stat.S_ISREG(st.st_mode) and st.st_ino != rec["old_ino"]


def _resolve_link(rec: dict[str, Any], fs: RootFS, report: RecoveryReport) -> bool:
    """Bring one link intent to a consistent state; True when the link is in place."""
    path, tmp = rec["path"], rec["tmp"]
    try:
        tmp_st = fs.try_lstat(tmp)
        if tmp_st is not None:
            if _tmp_is_ours(tmp_st, rec, fs, tmp):
                fs.unlink(tmp)
                report.temps_removed += 1
            else:
                report.anomalies.append(
                    {"path": display(tmp), "problem": "temporary name holds something mdbatch did not create; left alone"}
                )
        st = fs.try_lstat(path)
    except OSError as exc:
        report.anomalies.append({"path": display(path), "problem": f"cannot inspect: {exc.strerror or exc}"})
        return False
    if st is None:
        report.anomalies.append({"path": display(path), "problem": "path is gone (removed by someone else); nothing to recover"})
        return False
    if st.st_ino == rec["old_ino"] and st.st_dev == rec["old_dev"]:
        report.rolled_back += 1
        return False
    if _path_is_link(st, rec, fs, path):
        report.completed += 1
        return True
    report.anomalies.append({"path": display(path), "problem": "path was replaced by something else since; left alone"})
    return False


def _resolve_put(rec: dict[str, Any], report: RecoveryReport) -> None:
    tmp = rec.get("tmp")
    if tmp:
        try:
            os.unlink(tmp)
            report.temps_removed += 1
        except FileNotFoundError:
            pass
        except OSError as exc:
            report.anomalies.append({"path": display(tmp), "problem": f"cannot remove store temporary: {exc.strerror or exc}"})


def recover(journal_path: str) -> RecoveryReport:
    """Recover one pending journal (caller holds the root lock) and close it; returns what was done."""
    state = JournalState.load(journal_path)
    report = RecoveryReport(journal_path, actions=len(state.intents))
    root = state.header["root"]
    linked_sets: set[int] = set()
    chmods: list[dict[str, Any]] = []
    with RootFS(root) as fs:
        for rec in state.intents:
            t = rec["t"]
            if t == "link":
                if _resolve_link(rec, fs, report):
                    linked_sets.add(int(rec["set"]))
            elif t == "put":
                _resolve_put(rec, report)
            elif t == "chmod":
                chmods.append(rec)
        for rec in chmods:
            if int(rec["set"]) in linked_sets:
                continue
            try:
                restored = _restore_mode(rec, fs)
            except OSError as exc:
                report.anomalies.append({"path": display(rec["path"]), "problem": f"cannot restore mode: {exc.strerror or exc}"})
                continue
            report.modes_restored += restored
    append_and_close(journal_path, [{"t": "recovered", **{k: v for k, v in report.to_dict().items() if k != "journal"}}], "recovered")
    return report


def _restore_mode(rec: dict[str, Any], fs: RootFS) -> int:
    """Put back the mode of a kept file whose link set never linked anything; 1 if done."""
    if rec.get("abs"):
        try:
            st = os.lstat(rec["path"])
        except FileNotFoundError:
            return 0
        if st.st_ino == rec["ino"] and stat.S_ISREG(st.st_mode) and stat.S_IMODE(st.st_mode) == rec["after"]:
            return 1 if fchmod_path_checked(rec["path"], rec["ino"], rec["before"]) else 0
        return 0
    now = fs.try_lstat(rec["path"])
    if now is None or now.st_ino != rec["ino"] or stat.S_IMODE(now.st_mode) != rec["after"]:
        return 0
    return 1 if fs.fchmod_checked(rec["path"], rec["ino"], rec["before"]) else 0


def recover_pending(root: str, have_lock: bool = False) -> list[RecoveryReport]:
    """Recover every journal a killed apply left under `root` (taking the root lock unless held)."""
    if not pending_journals(root):
        return []
    if have_lock:
        return [recover(path) for path in pending_journals(root)]
    lock = root_lock(root)
    try:
        return [recover(path) for path in pending_journals(root)]
    finally:
        lock.release()


def recover_journal(path: str) -> RecoveryReport:
    """`mdbatch dedupe --recover JOURNAL`: recover one journal under its root's lock."""
    state = JournalState.load(path)
    if state.ended is not None and not path.endswith(ACTIVE_SUFFIX):
        return RecoveryReport(path)
    lock = root_lock(state.header["root"])
    try:
        if not os.path.exists(path):  # recovered meanwhile by another process
            return RecoveryReport(path)
        return recover(path)
    finally:
        lock.release()


def summarize(reports: list[RecoveryReport]) -> dict[str, Any]:
    """Totals over several recoveries (for the run summary)."""
    total: dict[str, Any] = defaultdict(int)
    anomalies: list[dict[str, str]] = []
    for r in reports:
        for key in ("actions", "completed", "rolled_back", "temps_removed", "modes_restored"):
            total[key] += getattr(r, key)
        anomalies.extend(r.anomalies)
    return {"journals": [r.journal for r in reports], **total, "anomalies": anomalies}
