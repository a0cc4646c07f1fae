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
import json
import os
import socket
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from filelock import FileLock, Timeout

from ..atomic import fsync_dir
from ..errors import MdbatchError

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
    d = journal_dir(root)
    try:
        names = sorted(n for n in os.listdir(d) if n.endswith(ACTIVE_SUFFIX))
    except (FileNotFoundError, NotADirectoryError):
        return []
    return [os.path.join(d, n) for n in names]


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


class Journal:
    """Append-only writer of one run's journal; `sync()` makes what was written durable."""

    def __init__(self, root: str, run_id: str, action: str) -> None:
        d = journal_dir(root)
        os.makedirs(d, exist_ok=True)
        self.path = os.path.join(d, f"{run_id}{ACTIVE_SUFFIX}")
        self._fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o600)
        self._buf: list[str] = []
        begin = {
            "t": "begin",
            "v": JOURNAL_VERSION,
            "run_id": run_id,
            "root": root,
            "action": action,
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "started_at": datetime.now(UTC).isoformat(),
        }
        self.write(begin)
        self.sync()
        fsync_dir(d)

    def write(self, record: dict[str, Any]) -> None:
        """Buffer one record (durable after the next `sync`)."""
        self._buf.append(json.dumps(record, ensure_ascii=True, separators=(",", ":")))

    def sync(self) -> None:
        """Write the buffered records and fsync the journal."""
        if self._buf:
            view = memoryview(("\n".join(self._buf) + "\n").encode("ascii"))
            self._buf.clear()
            while view:
                view = view[os.write(self._fd, view) :]
        os.fsync(self._fd)

    def finish(self, status: str) -> None:
        """Record the end, then delete the journal: every snapshot it holds is in the catalog."""
        self.write({"t": "end", "status": status, "ended_at": datetime.now(UTC).isoformat()})
        self.sync()
        self.close()
        os.unlink(self.path)
        fsync_dir(os.path.dirname(self.path))

    def close(self) -> None:
        """Close the descriptor, leaving the journal pending for recovery."""
        if self._fd >= 0:
            try:
                self.sync()
            except OSError:
                pass
            os.close(self._fd)
            self._fd = -1


def read_records(path: str) -> Iterator[dict[str, Any]]:
    """Every complete record of a journal; a torn last line (a crash mid-write) is ignored."""
    with open(path, "rb") as handle:
        for line in handle:
            if not line.endswith(b"\n"):
                break
            try:
                rec = json.loads(line)
            except ValueError:
                break
            if isinstance(rec, dict):
                yield rec


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
