"""Stages 2 and 3: head+tail and whole-file xxh3-128 of candidate files, and digests reused from elsewhere.

`hash_batch` is what a task runs (pure: no Dask, no database). Every file is opened without
following symlinks and its stat is compared with what the listing saw; a file that moved, changed
or vanished since is reported as changed and drops out of the candidates.
"""

from __future__ import annotations

import os
import stat
from collections import deque
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Protocol

import xxhash

from ..hashing import NotRegularFile, digest_file

if TYPE_CHECKING:
    from ..catalog import CatalogBackend

#: Bytes hashed at the head and at the tail of a file in the head+tail stage.
HEAD_TAIL = 64 << 10
#: Files up to this size are hashed whole in the head+tail stage (the same bytes would be read anyway).
WHOLE_LIMIT = 2 * HEAD_TAIL

_OPEN_FLAGS = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_NONBLOCK", 0)

# Result codes of one item of a hash task.
PARTIAL, FULL, CHANGED, ERROR = 0, 1, 2, 3

#: (path relative to root, size, mtime_ns, ctime_ns, inode, device)
Item = tuple[str, int, int, int, int, int]
#: (code, digest or error message)
Outcome = tuple[int, str]


class DigestSource(Protocol):
    """Somewhere digests were already computed: the audit's inventory, a hash cache."""

    def lookup(self, device: int, inode: int, size: int, mtime_ns: int, ctime_ns: int) -> str | None:
        """The xxh3-128 of the file, or None when unknown or no longer provably unchanged."""


class InventoryDigests:
    """xxh3-128 digests an audit recorded in the catalog, valid while device, inode, size, mtime_ns
    and ctime_ns all still match (the key that proves a file unchanged)."""

    def __init__(self, entries: dict[tuple[int, int], tuple[int, int, int, str]]) -> None:
        self._entries = entries

    def __len__(self) -> int:
        return len(self._entries)

    @classmethod
    def from_catalog(cls, catalog: CatalogBackend, root: str) -> InventoryDigests:
        """Load the inventory of `root` (only rows with a digest)."""
        from ..catalog.queries import file_inventory

        entries: dict[tuple[int, int], tuple[int, int, int, str]] = {}
        for chunk in file_inventory(catalog, root, ["device", "inode", "size", "mtime_ns", "ctime_ns", "xxh3_128"]):
            cols = [chunk.column(n).to_pylist() for n in ("device", "inode", "size", "mtime_ns", "ctime_ns", "xxh3_128")]
            for dev, ino, size, mtime, ctime, digest in zip(*cols, strict=True):
                if digest and dev is not None and ino is not None:
                    entries[(dev, ino)] = (size, mtime, ctime, digest)
        return cls(entries)

    def lookup(self, device: int, inode: int, size: int, mtime_ns: int, ctime_ns: int) -> str | None:
        hit = self._entries.get((device, inode))
        if hit is None or hit[0] != size or hit[1] != mtime_ns or hit[2] != ctime_ns:
            return None
        return hit[3]


def _matches(st: os.stat_result, item: Item) -> bool:
    return (
        st.st_size == item[1] and st.st_mtime_ns == item[2] and st.st_ctime_ns == item[3] and st.st_ino == item[4] and st.st_dev == item[5]
    )


def head_tail(path: str, item: Item) -> Outcome:
    """xxh3-128 over the first and last HEAD_TAIL bytes (the whole file when it is small)."""
    fd = os.open(path, _OPEN_FLAGS)
    try:
        return head_tail_fd(fd, item)
    finally:
        os.close(fd)


def head_tail_fd(fd: int, item: Item) -> Outcome:
    """`head_tail` on an open descriptor (which must be the listed file: its stat is checked)."""
    size = item[1]
    before = os.fstat(fd)
    if not stat.S_ISREG(before.st_mode) or not _matches(before, item):
        return (CHANGED, "changed since it was listed")
    if size <= WHOLE_LIMIT:
        data = os.pread(fd, size + 1, 0)
        if len(data) < size:  # a short read of a regular file: read on until EOF
            while len(data) <= size:
                more = os.pread(fd, size + 1 - len(data), len(data))
                if not more:
                    break
                data += more
        after = os.fstat(fd)
        if len(data) != size or not _matches(after, item):
            return (CHANGED, "changed while it was read")
        return (FULL, xxhash.xxh3_128_hexdigest(data))
    head = os.pread(fd, HEAD_TAIL, 0)
    tail = os.pread(fd, HEAD_TAIL, size - HEAD_TAIL)
    after = os.fstat(fd)
    if len(head) != HEAD_TAIL or len(tail) != HEAD_TAIL or not _matches(after, item):
        return (CHANGED, "changed while it was read")
    h = xxhash.xxh3_128(head)
    h.update(tail)
    return (PARTIAL, h.hexdigest())


def whole(path: str, item: Item) -> Outcome:
    """xxh3-128 of the whole file, read once."""
    d = digest_file(path)
    if d.changed or d.size != item[1] or d.mtime_ns != item[2] or d.ctime_ns != item[3] or d.inode != item[4] or d.device != item[5]:
        return (CHANGED, "changed since it was listed")
    assert d.xxh3_128 is not None
    return (FULL, d.xxh3_128)


def _one(root: str, item: Item, full: bool, fd: int | None = None) -> Outcome:
    """Hash one item (through `fd` when the prefetcher already opened it); never raises OSError."""
    try:
        if fd is not None:
            return head_tail_fd(fd, item)
        path = os.path.join(root, item[0])
        return whole(path, item) if full else head_tail(path, item)
    except (FileNotFoundError, NotRegularFile):
        return (CHANGED, "vanished or stopped being a regular file")
    except OSError as exc:
        if exc.errno == 40:  # ELOOP: replaced by a symlink
            return (CHANGED, "replaced by a symlink")
        return (ERROR, exc.strerror or str(exc))


def hash_batch(items: Sequence[Item], root: str, full: bool, io_threads: int = 1, index: int = 0) -> list[Outcome]:
    """Hash a batch of candidates (head+tail, or whole when `full`); one outcome per item, in order.

    The kernel is told (POSIX_FADV_WILLNEED) about the next few files while the current one is
    hashed, so cold reads overlap with hashing; at the head+tail stage those files are opened once,
    ahead, and hashed through that descriptor. `io_threads` > 1 keeps several reads in flight (cold
    or high-latency storage); whole-file hashing of large files always uses two threads, so one
    file is copied from the page cache while another is hashed (xxhash holds the GIL, reads do not).
    """
    if full and io_threads < 2 and len(items) > 1 and sum(it[1] for it in items) >= len(items) * (1 << 20):
        io_threads = 2
    if io_threads > 1 and len(items) > 1:
        with ThreadPoolExecutor(max_workers=io_threads, thread_name_prefix="mdbatch-dedupe") as pool:
            return list(pool.map(lambda it: _one(root, it, full), items))
    if full:
        out = []
        for k, item in enumerate(items):
            if k + 1 < len(items):
                _close(_prefetch(root, items[k + 1], True))
            out.append(_one(root, item, True))
        return out
    window: deque[int | None] = deque()
    results: list[Outcome] = []
    try:
        for k in range(min(PREFETCH, len(items))):
            window.append(_prefetch(root, items[k], False))
        for k, item in enumerate(items):
            fd = window.popleft()
            if k + PREFETCH < len(items):
                window.append(_prefetch(root, items[k + PREFETCH], False))
            try:
                results.append(_one(root, item, False, fd))
            finally:
                _close(fd)
    finally:
        for fd in window:
            _close(fd)
    return results


#: How many files ahead of the one being hashed are opened and announced to the kernel.
PREFETCH = 16


def _prefetch(root: str, item: Item, full: bool) -> int | None:
    """Open `item` and ask the kernel to start reading what will be hashed; None if it cannot be opened."""
    try:
        fd = os.open(os.path.join(root, item[0]), _OPEN_FLAGS)
    except OSError:
        return None
    if hasattr(os, "posix_fadvise"):
        size = item[1]
        try:
            if full or size <= WHOLE_LIMIT:
                os.posix_fadvise(fd, 0, size, os.POSIX_FADV_WILLNEED)
            else:
                os.posix_fadvise(fd, 0, HEAD_TAIL, os.POSIX_FADV_WILLNEED)
                os.posix_fadvise(fd, size - HEAD_TAIL, HEAD_TAIL, os.POSIX_FADV_WILLNEED)
        except OSError:
            pass
    return fd


def _close(fd: int | None) -> None:
    if fd is not None:
        os.close(fd)


def read_cost(item: Item, full: bool) -> int:
    """Bytes a hash task reads for `item`."""
    return item[1] if full or item[1] <= WHOLE_LIMIT else 2 * HEAD_TAIL


def split(items: Sequence[Item], max_items: int, max_bytes: int, full: bool) -> Iterator[list[Item]]:
    """Consecutive slices of `items` with at most `max_items` files and about `max_bytes` bytes to read."""
    batch: list[Item] = []
    total = 0
    for it in items:
        batch.append(it)
        total += read_cost(it, full)
        if len(batch) >= max_items or total >= max_bytes:
            yield batch
            batch, total = [], 0
    if batch:
        yield batch
