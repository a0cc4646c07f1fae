"""The apply journal: every action is written (and fsync'd) before it is done, so any crash is recoverable.

A journal is a JSON-lines file `ROOT/.mdbatch-journal/<run_id>.active.jsonl`, renamed to
`<run_id>.jsonl` once every action in it is resolved. Records (`t` is the record type):

- ``begin``: version, run_id, root, link kind, store, host, pid, started_at
- ``link``: id, set, path, tmp, kind, target, target_ino, old_ino (replace `path` by a link)
- ``chmod``: id, set, path, ino, before, after (make the kept inode read-only)
- ``put``: id, set, src, object, ino, tmp (a store object created from `src`)
- ``done`` / ``skip``: id (and reason): how an action ended
- ``recovered``: what recovery found; ``end``: status

Intents are written in small groups and fsync'd before any of them is acted on; ``done`` records
ride along with the next fsync (recovery never relies on them: it reads the filesystem). Paths are
root-relative strings with undecodable bytes as lone surrogates (``\\udcXX`` in the JSON), so
every name round-trips exactly.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from typing import Any

from filelock import FileLock, Timeout

from ..atomic import fsync_dir
from ..errors import MdbatchError
from ..journal import AppendLog, dumps, now_iso, pending, read_records

JOURNAL_DIRNAME = ".mdbatch-journal"
JOURNAL_VERSION = 1
ACTIVE_SUFFIX = ".active.jsonl"
DONE_SUFFIX = ".jsonl"
LOCK_NAME = "lock"


class JournalBusyError(MdbatchError, RuntimeError):
    """Another mdbatch process holds the journal lock of this root (an apply or recovery is running)."""


def journal_dir(root: str) -> str:
    """Where the journals of `root` live."""
    return os.path.join(root, JOURNAL_DIRNAME)


def pending_journals(root: str) -> list[str]:
    """Journals of `root` that were not closed (an apply that was killed), oldest first."""
    return pending(journal_dir(root), ACTIVE_SUFFIX)


def root_lock(root: str, timeout: float = 0.0) -> FileLock:
    """The lock an apply or a recovery of `root` holds (released by the kernel if the holder dies)."""
    d = journal_dir(root)
    os.makedirs(d, exist_ok=True)
    lock = FileLock(os.path.join(d, LOCK_NAME), timeout=timeout)
    try:
        lock.acquire()
    except Timeout as exc:
        raise JournalBusyError(f"another mdbatch dedupe is applying or recovering {root} (lock {lock.lock_file})") from exc
    return lock


#: json's C string escaper (ASCII output; lone surrogates become \\udcXX): exactly what json.dumps writes.
_encode_str = json.encoder.encode_basestring_ascii  # type: ignore[attr-defined]


class Journal(AppendLog):
    """The apply journal of one run (see the module docstring); `sync()` makes everything written durable."""

    def __init__(self, root: str, run_id: str, header: dict[str, Any]) -> None:
        d = journal_dir(root)
        self.final_path = os.path.join(d, f"{run_id}{DONE_SUFFIX}")
        self._next_id = 0
        begin = {"v": JOURNAL_VERSION, "run_id": run_id, "root": root, **header}
        super().__init__(os.path.join(d, f"{run_id}{ACTIVE_SUFFIX}"), begin, exclusive=True, mode=0o644)

    def new_id(self) -> int:
        self._next_id += 1
        return self._next_id

    def write_link(self, r: dict[str, Any]) -> None:
        """Buffer a `link` intent (the hot path: strings escaped by the C encoder, no dict walk)."""
        enc = _encode_str
        self._buf.append(
            f'{{"t":"link","id":{r["id"]},"set":{r["set"]},"path":{enc(r["path"])},"tmp":{enc(r["tmp"])},'
            f'"kind":{enc(r["kind"])},"target":{enc(r["target"])},"target_ino":{int(r["target_ino"])},'
            f'"old_ino":{int(r["old_ino"])},"old_dev":{int(r["old_dev"])}}}'
        )

    def done(self, action_id: int) -> None:
        """Buffer the `done` record of an action (the hot path: no JSON encoder)."""
        self._buf.append(f'{{"t":"done","id":{int(action_id)}}}')

    def close(self, status: str) -> str:
        """Write the end record, fsync, and rename the journal to its closed name; returns that path."""
        self.write({"t": "end", "status": status, "ended_at": now_iso()})
        self.sync()
        os.close(self._fd)
        self._fd = -1
        os.replace(self.path, self.final_path)
        fsync_dir(os.path.dirname(self.path))
        return self.final_path


@dataclass(slots=True)
class JournalState:
    """A journal read back: its header, intents in order, and how each ended (if recorded)."""

    path: str
    header: dict[str, Any]
    intents: list[dict[str, Any]] = field(default_factory=list)
    outcomes: dict[int, str] = field(default_factory=dict)
    ended: str | None = None

    @classmethod
    def load(cls, path: str) -> JournalState:
        header: dict[str, Any] = {}
        state = cls(path, header)
        for rec in read_records(path):
            t = rec.get("t")
            if t == "begin":
                header.update(rec)
            elif t in ("link", "chmod", "put"):
                state.intents.append(rec)
            elif t in ("done", "skip"):
                state.outcomes[int(rec["id"])] = t
            elif t == "end":
                state.ended = str(rec.get("status"))
        if header.get("v") != JOURNAL_VERSION:
            raise MdbatchError(f"{path}: not an mdbatch dedupe journal (version {header.get('v')!r})")
        return state


def append_and_close(path: str, records: list[dict[str, Any]], status: str) -> str:
    """Append records and an end record to a pending journal, fsync, and rename it closed."""
    final = path[: -len(ACTIVE_SUFFIX)] + DONE_SUFFIX if path.endswith(ACTIVE_SUFFIX) else path
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CLOEXEC)
    try:
        # A torn last line from the crash would glue onto our first record: start on a fresh line.
        size = os.fstat(fd).st_size
        lines = [dumps(r) for r in records]
        lines.append(dumps({"t": "end", "status": status, "ended_at": now_iso()}))
        data = ("\n" if size and not _ends_with_newline(path) else "") + "\n".join(lines) + "\n"
        os.write(fd, data.encode("ascii"))
        os.fsync(fd)
    finally:
        os.close(fd)
    if final != path:
        os.replace(path, final)
        fsync_dir(os.path.dirname(path))
    return final


def _ends_with_newline(path: str) -> bool:
    with open(path, "rb") as handle:
        handle.seek(-1, os.SEEK_END)
        return handle.read(1) == b"\n"
