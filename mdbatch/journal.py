"""Append-only JSON-lines journals: an intent is written and fsync'd before the change it announces.

What dedupe's link executor (`dedupe/journal.py`) and repair (`repair/journal.py`) share: the
writer (records buffered, then written and fsync'd together) and the reader, which stops at a torn
last line (a crash mid-write). Each keeps its own records, names and recovery.
"""

from __future__ import annotations

import json
import os
import socket
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

from .atomic import fsync_dir


def dumps(record: dict[str, Any]) -> str:
    """One record as a line. ensure_ascii keeps lone surrogates (undecodable name bytes) as \\udcXX
    escapes, so every path round-trips exactly."""
    return json.dumps(record, ensure_ascii=True, separators=(",", ":"))


class AppendLog:
    """Append-only writer of one journal; `sync()` makes everything written so far durable.

    Opening writes a `begin` record (with `begin`'s fields, the host, pid and start time), fsyncs it
    and the directory, so a journal that exists can always be attributed.
    """

    def __init__(self, path: str, begin: dict[str, Any], *, exclusive: bool, mode: int) -> None:
        directory = os.path.dirname(path)
        os.makedirs(directory, exist_ok=True)
        flags = os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC | (os.O_EXCL if exclusive else 0)
        self.path = path
        self._fd = os.open(path, flags, mode)
        self._buf: list[str] = []
        self.write({"t": "begin", **begin, "host": socket.gethostname(), "pid": os.getpid(), "started_at": now_iso()})
        self.sync()
        fsync_dir(directory)

    def write(self, record: dict[str, Any]) -> None:
        """Buffer one record (durable after the next `sync`)."""
        self._buf.append(dumps(record))

    def sync(self) -> None:
        """Write the buffered records and fsync the journal."""
        if self._buf:
            view = memoryview(("\n".join(self._buf) + "\n").encode("ascii"))
            self._buf.clear()
            while view:
                view = view[os.write(self._fd, view) :]
        os.fsync(self._fd)

    def abandon(self) -> None:
        """Close the descriptor without ending the journal (it stays pending for recovery)."""
        if self._fd >= 0:
            try:
                self.sync()
            except OSError:
                pass
            os.close(self._fd)
            self._fd = -1


def now_iso() -> str:
    return datetime.now(UTC).isoformat()


def read_records(path: str) -> Iterator[dict[str, Any]]:
    """Every complete record of a journal; a torn last line (a crash mid-write) ends the reading."""
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


def pending(directory: str, suffix: str) -> list[str]:
    """The journals in `directory` whose name ends with `suffix` (left open by a killed run), oldest first."""
    try:
        names = sorted(n for n in os.listdir(directory) if n.endswith(suffix))
    except (FileNotFoundError, NotADirectoryError):
        return []
    return [os.path.join(directory, n) for n in names]
