"""Reading a file once for every digest (mdbatch/hashing.py): the digests are the reference ones at
every size boundary, small files hand back their bytes, and a file that moves while it is read is
reported as changed."""

from __future__ import annotations

import errno
import hashlib
import os
import random
import threading
import time
from types import SimpleNamespace

import pytest
import xxhash

from mdbatch import hashing
from mdbatch.hashing import CHUNK_SIZE, SMALL_FILE_LIMIT, NotRegularFile, digest_file, sha256_file, xxh3_128_hex

#: What `xxhsum -H2` and `sha256sum` print for an empty file, and for bytes 0..255 repeated to exactly 1 MiB.
EMPTY = ("99aa06d3014798d86001c324468d497f", "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855")
MIB_OF_RANGE = ("1b208d2839093774d36c0e13a3df139e", "fbbab289f7f94b25736c58be46a994c441fd02552cc6022352e3d86d2fab7c83")


def payload(size: int, seed: int = 0) -> bytes:
    return random.Random(seed).randbytes(size)


def test_limits_are_what_the_docs_say():
    assert SMALL_FILE_LIMIT == 1 << 20 and CHUNK_SIZE == 128 << 10


def test_pinned_digests_of_an_empty_file_and_of_exactly_the_small_limit(tmp_path):
    (tmp_path / "empty").write_bytes(b"")
    d = digest_file(str(tmp_path / "empty"), want_sha256=True, keep_small=True)
    assert (d.xxh3_128, d.sha256, d.size, d.data, d.changed) == (*EMPTY, 0, b"", False)
    data = bytes(range(256)) * 4096
    assert len(data) == SMALL_FILE_LIMIT
    (tmp_path / "mib").write_bytes(data)
    d = digest_file(str(tmp_path / "mib"), want_sha256=True, keep_small=True)
    assert (d.xxh3_128, d.sha256, d.size, d.changed) == (*MIB_OF_RANGE, SMALL_FILE_LIMIT, False)
    assert d.data == data  # the largest file still read whole


@pytest.mark.parametrize(
    "size",
    [
        1,
        4096,
        CHUNK_SIZE - 1,
        CHUNK_SIZE,
        CHUNK_SIZE + 1,
        SMALL_FILE_LIMIT - 1,
        SMALL_FILE_LIMIT,
        SMALL_FILE_LIMIT + 1,
        SMALL_FILE_LIMIT + CHUNK_SIZE,
        9 * CHUNK_SIZE + 7,
    ],
)
def test_digests_match_xxhash_and_hashlib_at_every_boundary(tmp_path, size):
    data = payload(size, seed=size)
    path = tmp_path / "f.bin"
    path.write_bytes(data)
    st = path.stat()
    d = digest_file(str(path), want_sha256=True, keep_small=True)
    assert d.xxh3_128 == xxhash.xxh3_128_hexdigest(data) == xxh3_128_hex(data)
    assert d.sha256 == hashlib.sha256(data).hexdigest() == sha256_file(path)
    assert (d.size, d.mtime_ns, d.ctime_ns, d.inode, d.device) == (size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino, st.st_dev)
    assert d.changed is False
    # keep_small hands back the bytes of small files only.
    assert d.data == (data if size <= SMALL_FILE_LIMIT else None)


def test_only_the_asked_digests_and_bytes(tmp_path):
    data = b"registry bytes\n"
    (tmp_path / "f").write_bytes(data)
    plain = digest_file(str(tmp_path / "f"))
    assert (plain.xxh3_128, plain.sha256, plain.data) == (xxhash.xxh3_128_hexdigest(data), None, None)
    sha_only = digest_file(str(tmp_path / "f"), want_xxh3=False, want_sha256=True)
    assert (sha_only.xxh3_128, sha_only.sha256) == (None, hashlib.sha256(data).hexdigest())
    bytes_only = digest_file(str(tmp_path / "f"), want_xxh3=False, keep_small=True)
    assert (bytes_only.xxh3_128, bytes_only.sha256, bytes_only.data, bytes_only.size) == (None, None, data, len(data))


def test_relative_to_a_directory_fd_and_with_undecodable_names(tmp_path):
    name = b"caf\xe9.bin"  # latin-1, not UTF-8
    with open(os.path.join(os.fsencode(tmp_path), name), "wb") as handle:
        handle.write(b"bytes")
    expected = xxhash.xxh3_128_hexdigest(b"bytes")
    assert digest_file(os.path.join(os.fsencode(tmp_path), name)).xxh3_128 == expected
    fd = os.open(tmp_path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        assert digest_file(os.fsdecode(name), dir_fd=fd).xxh3_128 == expected
    finally:
        os.close(fd)


def test_threads_share_nothing_while_streaming(tmp_path):
    files = []
    for i in range(6):
        data = payload(SMALL_FILE_LIMIT + CHUNK_SIZE * (i + 1) + i, seed=100 + i)
        (tmp_path / f"{i}.bin").write_bytes(data)
        files.append((str(tmp_path / f"{i}.bin"), xxhash.xxh3_128_hexdigest(data)))
    results: dict[str, str | None] = {}

    def run(path: str) -> None:
        for _ in range(3):
            results[path] = digest_file(path).xxh3_128

    threads = [threading.Thread(target=run, args=(p,)) for p, _ in files]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == dict(files)


# -- what is refused -----------------------------------------------------------------------------


def test_a_fifo_is_refused_without_blocking(tmp_path):
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    with pytest.raises(NotRegularFile) as caught:
        digest_file(str(fifo))
    assert str(caught.value) == f"not a regular file: {str(fifo)!r}" and isinstance(caught.value, OSError)


def test_a_directory_is_refused(tmp_path):
    with pytest.raises(NotRegularFile):
        digest_file(str(tmp_path))


def test_a_symlink_is_never_followed(tmp_path):
    (tmp_path / "target").write_bytes(b"secret")
    os.symlink(tmp_path / "target", tmp_path / "link")
    with pytest.raises(OSError) as caught:
        digest_file(str(tmp_path / "link"))
    assert caught.value.errno == errno.ELOOP and not isinstance(caught.value, NotRegularFile)


def test_a_missing_file_is_file_not_found(tmp_path):
    with pytest.raises(FileNotFoundError):
        digest_file(str(tmp_path / "absent"))


# -- a file that moves while it is read ------------------------------------------------------------


def test_a_file_whose_size_lies_is_changed():
    # /proc files are regular files of size 0 that read as more: the bytes disagree with the size.
    d = digest_file("/proc/self/status", keep_small=True)
    assert d.size == 0 and d.changed is True


def _between_the_fstats(monkeypatch: pytest.MonkeyPatch, act) -> None:
    """Run `act` right after digest_file's first fstat, before it reads a byte: it asks xxhash for a
    hasher there. The digests are still xxhash's own."""

    def hasher():
        act()
        return xxhash.xxh3_128()

    monkeypatch.setattr(hashing, "xxhash", SimpleNamespace(xxh3_128=hasher))


@pytest.mark.parametrize("size", [100, SMALL_FILE_LIMIT, SMALL_FILE_LIMIT + CHUNK_SIZE + 3])
def test_a_file_that_grows_while_read_is_changed(tmp_path, monkeypatch, size):
    path = tmp_path / "growing.xtc"
    path.write_bytes(payload(size))

    def grow() -> None:
        with open(path, "ab") as handle:
            handle.write(b"appended by the simulation")

    _between_the_fstats(monkeypatch, grow)
    d = digest_file(str(path), keep_small=True)
    assert d.changed is True and d.size == size  # the size is the one stat'ed before the read


def test_a_file_rewritten_in_place_to_the_same_size_is_changed(tmp_path, monkeypatch):
    path = tmp_path / "f.bin"
    path.write_bytes(b"a" * 100)
    before = path.stat()

    def rewrite() -> None:
        with open(path, "r+b") as handle:
            handle.write(b"b" * 100)
        os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns + 1_000_000))

    _between_the_fstats(monkeypatch, rewrite)
    d = digest_file(str(path))
    assert d.changed is True and d.size == 100 and d.mtime_ns == before.st_mtime_ns


def test_a_metadata_change_alone_is_changed(tmp_path, monkeypatch):
    path = tmp_path / "f.bin"
    path.write_bytes(b"a" * 100)
    path.chmod(0o644)

    def chmod() -> None:
        time.sleep(0.05)  # past the file system's timestamp granularity (a clock tick)
        path.chmod(0o600)  # only the ctime moves

    _between_the_fstats(monkeypatch, chmod)
    d = digest_file(str(path))
    assert d.changed is True and d.xxh3_128 == xxhash.xxh3_128_hexdigest(b"a" * 100)


def test_a_quiet_file_is_not_changed(tmp_path, monkeypatch):
    path = tmp_path / "f.bin"
    path.write_bytes(b"a" * 100)
    _between_the_fstats(monkeypatch, lambda: None)
    assert digest_file(str(path)).changed is False
