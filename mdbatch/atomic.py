"""Atomic file writes: temp file in the same directory, fsync, os.replace, directory fsync.

A write that fails (its directory missing or unwritable, the disk full, the target a directory)
raises WriteError naming the file to be written, not the temporary one, so every command that
writes a file through here reports it as one line.
"""

from __future__ import annotations

import contextlib
import errno as errnos
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

from .errors import MdbatchError


class WriteError(MdbatchError, OSError):
    """A file could not be written. Also an OSError carrying the cause's errno, so code that
    handles OSError (a full disk, say) still does."""

    def __init__(self, path: str | os.PathLike[str], code: int | None, reason: str) -> None:
        OSError.__init__(self, code, reason, os.fsdecode(path))
        self.path = os.fsdecode(path)
        self.reason = reason

    def __str__(self) -> str:
        return f"cannot write {self.path}: {self.reason}"

    def __reduce__(self) -> tuple[Any, ...]:  # survive pickling across processes
        return type(self), (self.path, self.errno, self.reason)

    @classmethod
    def of(cls, path: Path, exc: OSError) -> WriteError:
        """The WriteError for `exc`, met while writing `path` (its temp file's name left out)."""
        if exc.errno == errnos.ENOENT and not path.parent.is_dir():
            return cls(path, exc.errno, f"directory {path.parent} does not exist")
        return cls(path, exc.errno, exc.strerror or str(exc))


def fsync_dir(directory: str | os.PathLike[str]) -> None:
    """Make a rename inside `directory` durable (no-op where directories cannot be opened)."""
    try:
        fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_writer(path: str | os.PathLike[str], mode: int | None = None) -> Iterator[IO[bytes]]:
    """A binary handle on a temp file beside `path` that replaces `path` when the block succeeds.

    Readers see the old bytes or the new ones, never a mix; the temp file is removed if anything
    fails. `mode` sets the new file's permissions (default: mkstemp's 0600). An OSError from
    creating, writing or renaming becomes WriteError naming `path`.
    """
    target = Path(path)
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    except OSError as exc:
        raise WriteError.of(target, exc) from exc
    try:
        with os.fdopen(fd, "wb") as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        if mode is not None:
            os.chmod(tmp, mode)
        os.replace(tmp, target)
    except BaseException as exc:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        if isinstance(exc, OSError) and not isinstance(exc, MdbatchError):
            raise WriteError.of(target, exc) from exc
        raise
    fsync_dir(target.parent)


def umask_mode(base: int = 0o666) -> int:
    """`base` less the process's umask: the mode `open()` would give a new file, for files written to
    be shared (a report) rather than kept private (mkstemp's 0600)."""
    try:  # Linux shows it without changing it (os.umask can only be read by setting it)
        with open("/proc/self/status", encoding="ascii") as status:
            mask = next((int(line.split()[1], 8) for line in status if line.startswith("Umask:")), None)
    except (OSError, ValueError, IndexError):
        mask = None
    if mask is None:
        mask = os.umask(0o077)
        os.umask(mask)
    return base & ~mask


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes, mode: int | None = None) -> None:
    """Replace `path` with `data` so that readers see either the old or the new bytes, never a mix.

    `mode` sets the file's permissions (default 0600; `umask_mode()` for what `open()` would give).
    The temporary file is removed if anything fails before the rename; failures raise WriteError.
    """
    with atomic_writer(path, mode) as handle:
        handle.write(data)


def atomic_write_text(path: str | os.PathLike[str], text: str, encoding: str = "utf-8") -> None:
    """Text form of :func:`atomic_write_bytes`."""
    atomic_write_bytes(path, text.encode(encoding))
