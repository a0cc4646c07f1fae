"""The repair journal: each registry replace is written down (and fsync'd) before it is done.

A journal is a JSON-lines file `ROOT/.mdbatch-repair/<run_id>.active.jsonl` (ROOT: the campaign
root of the run). Records (`t` is the type):

- ``begin``: version, run_id, root, action, host, pid, started_at
- ``intent``: seq, simulation, directory, hash, sha256 and base64 bytes before and after (None: no file)
- ``done`` / ``failed``: seq (and reason): how a replace ended
- ``end``: status

Order per batch of registries, all of them locked: intents fsync'd, then the snapshots committed to
the catalog, then each registry replaced atomically, then the ``done`` records. Recovery (see
`recover.py`) reads the registries, not the ``done`` records. A journal whose run ended is deleted:
the catalog's MDBATCH_REGISTRY_SNAPSHOTS holds the same bytes.
"""

from __future__ import annotations

import base64
import os
from dataclasses import dataclass, field
from typing import Any

from filelock import FileLock, Timeout

from ..atomic import fsync_dir
from ..errors import MdbatchError
from ..journal import AppendLog, now_iso, pending, read_records

JOURNAL_DIRNAME = ".mdbatch-repair"
JOURNAL_VERSION = 1
ACTIVE_SUFFIX = ".active.jsonl"
LOCK_NAME = "lock"


class RepairBusyError(MdbatchError, RuntimeError):
    """Another mdbatch repair (or undo, or restore) holds the journal lock of this root."""


def journal_dir(root: str) -> str:
    """Where the repair journals of `root` live."""
    return os.path.join(root, JOURNAL_DIRNAME)


def pending_journals(root: str) -> list[str]:
    """Journals a killed repair of `root` left open, oldest first."""
    return pending(journal_dir(root), ACTIVE_SUFFIX)


def root_lock(root: str) -> FileLock:
    """The lock one repair of `root` holds while it writes (the kernel releases it if the holder dies)."""
    d = journal_dir(root)
    os.makedirs(d, exist_ok=True)
    lock = FileLock(os.path.join(d, LOCK_NAME), timeout=0)
    try:
        lock.acquire()
    except Timeout as exc:
        raise RepairBusyError(f"another mdbatch repair is writing registries under {root} (lock {lock.lock_file})") from exc
    return lock


def encode_bytes(data: bytes | None) -> str | None:
    return None if data is None else base64.b64encode(data).decode("ascii")


def decode_bytes(text: str | None) -> bytes | None:
    return None if text is None else base64.b64decode(text)


class Journal(AppendLog):
    """Append-only writer of one run's journal; `sync()` makes what was written durable."""

    def __init__(self, root: str, run_id: str, action: str) -> None:
        begin = {"v": JOURNAL_VERSION, "run_id": run_id, "root": root, "action": action}
        super().__init__(os.path.join(journal_dir(root), f"{run_id}{ACTIVE_SUFFIX}"), begin, exclusive=False, mode=0o600)

    def finish(self, status: str) -> None:
        """Record the end, then delete the journal: every snapshot it holds is in the catalog."""
        self.write({"t": "end", "status": status, "ended_at": now_iso()})
        self.sync()
        self.close()
        os.unlink(self.path)
        fsync_dir(os.path.dirname(self.path))

    def close(self) -> None:
        """Close the descriptor, leaving the journal pending for recovery."""
        self.abandon()


@dataclass(slots=True)
class JournalState:
    """A journal read back: its header, its intents in order, and the seqs recorded done."""

    path: str
    header: dict[str, Any]
    intents: list[dict[str, Any]] = field(default_factory=list)
    done: set[int] = field(default_factory=set)

    @classmethod
    def load(cls, path: str) -> JournalState:
        state = cls(path, {})
        for rec in read_records(path):
            t = rec.get("t")
            if t == "begin":
                state.header.update(rec)
            elif t == "intent":
                state.intents.append(rec)
            elif t == "done":
                state.done.add(int(rec["seq"]))
        if state.header.get("v") != JOURNAL_VERSION:
            raise MdbatchError(f"{path}: not an mdbatch repair journal (version {state.header.get('v')!r})")
        return state
