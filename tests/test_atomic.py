"""Atomic file writes (mdbatch/atomic.py): readers see the old bytes or the new ones, never a mix;
nothing is left behind when a write fails; failures are one WriteError naming the target."""

from __future__ import annotations

import errno
import json
import os
import pickle
import stat
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import pytest

from mdbatch.atomic import WriteError, atomic_write_bytes, atomic_write_text, atomic_writer, fsync_dir
from mdbatch.errors import MdbatchError

from .faults.helpers import DROP_DAC


def names(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir())


def test_write_creates_then_replaces(tmp_path):
    target = tmp_path / "out.bin"
    atomic_write_bytes(target, b"first")
    assert target.read_bytes() == b"first"
    atomic_write_bytes(target, b"second, longer")
    assert target.read_bytes() == b"second, longer"
    atomic_write_bytes(target, b"")
    assert target.read_bytes() == b"" and names(tmp_path) == ["out.bin"]


def test_text_is_encoded(tmp_path):
    atomic_write_text(tmp_path / "t.txt", "ünï ✓\n")
    assert (tmp_path / "t.txt").read_bytes() == "ünï ✓\n".encode()
    atomic_write_text(tmp_path / "t.txt", "ünï\n", encoding="latin-1")
    assert (tmp_path / "t.txt").read_bytes() == b"\xfcn\xef\n"


def test_the_target_keeps_its_old_bytes_until_the_block_ends(tmp_path):
    target = tmp_path / "state.json"
    target.write_bytes(b"old")
    with open(target, "rb") as before:  # a reader that opened the file earlier keeps the old file
        with atomic_writer(target) as handle:
            handle.write(b"new, half")
            handle.flush()
            assert target.read_bytes() == b"old"
            temps = [n for n in names(tmp_path) if n != "state.json"]
            assert len(temps) == 1 and temps[0].startswith(".state.json.") and temps[0].endswith(".tmp")
            handle.write(b" and whole")
        assert target.read_bytes() == b"new, half and whole"
        assert before.read() == b"old"
    assert names(tmp_path) == ["state.json"]


def test_a_concurrent_reader_sees_only_whole_versions(tmp_path):
    target = tmp_path / "big.bin"
    versions = [bytes([v]) * (256 << 10) for v in range(8)]
    atomic_write_bytes(target, versions[0])
    seen: set[bytes] = set()
    bad: list[tuple[int, set[int]]] = []
    done = threading.Event()

    def read() -> None:
        while not done.is_set():
            data = target.read_bytes()
            if data not in versions:
                bad.append((len(data), set(data)))
            seen.add(data[:1])

    reader = threading.Thread(target=read)
    reader.start()
    try:
        for round_ in range(200):
            atomic_write_bytes(target, versions[round_ % len(versions)])
    finally:
        done.set()
        reader.join()
    assert bad == []
    assert len(seen) > 1  # the reader did overlap the writes


def test_a_failing_block_leaves_the_target_and_no_temp_file(tmp_path):
    target = tmp_path / "out.txt"
    target.write_bytes(b"kept")
    with pytest.raises(RuntimeError, match="boom"), atomic_writer(target) as handle:
        handle.write(b"partial")
        raise RuntimeError("boom")
    assert target.read_bytes() == b"kept" and names(tmp_path) == ["out.txt"]
    with pytest.raises(KeyboardInterrupt), atomic_writer(tmp_path / "new.txt") as handle:  # an interrupt too (BaseException)
        handle.write(b"partial")
        raise KeyboardInterrupt
    assert names(tmp_path) == ["out.txt"]


def test_an_oserror_in_the_block_is_a_write_error_naming_the_target(tmp_path):
    target = tmp_path / "out.txt"
    with pytest.raises(WriteError) as caught, atomic_writer(target) as handle:
        handle.write(b"partial")
        raise OSError(errno.ENOSPC, "No space left on device")
    err = caught.value
    assert str(err) == f"cannot write {target}: No space left on device"
    assert err.errno == errno.ENOSPC and err.filename == err.path == str(target)
    assert isinstance(err, OSError) and isinstance(err, MdbatchError)
    assert names(tmp_path) == []


def test_mode_is_set_whatever_the_umask(tmp_path):
    old = os.umask(0o077)
    try:
        atomic_write_bytes(tmp_path / "shared", b"x", mode=0o644)
        atomic_write_bytes(tmp_path / "private", b"x", mode=0o600)
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "shared").stat().st_mode) == 0o644
    assert stat.S_IMODE((tmp_path / "private").stat().st_mode) == 0o600
    # Without a mode the new file is mkstemp's 0600, whatever the file it replaces had.
    (tmp_path / "plain").write_bytes(b"old")
    (tmp_path / "plain").chmod(0o664)
    atomic_write_text(tmp_path / "plain", "new")
    assert stat.S_IMODE((tmp_path / "plain").stat().st_mode) == 0o600


def test_a_read_only_file_in_a_writable_directory_is_replaced(tmp_path):
    target = tmp_path / "ro.txt"
    target.write_bytes(b"old")
    target.chmod(0o444)
    atomic_write_bytes(target, b"new", mode=0o444)
    assert target.read_bytes() == b"new" and stat.S_IMODE(target.stat().st_mode) == 0o444


def test_a_missing_directory_is_named(tmp_path):
    target = tmp_path / "no" / "such" / "out.json"
    with pytest.raises(WriteError) as caught:
        atomic_write_bytes(target, b"{}")
    assert str(caught.value) == f"cannot write {target}: directory {target.parent} does not exist"
    assert caught.value.errno == errno.ENOENT and caught.value.path == str(target)
    assert not (tmp_path / "no").exists()


def test_a_directory_in_the_way_is_named(tmp_path):
    target = tmp_path / "report.html"
    target.mkdir()
    with pytest.raises(WriteError) as caught:
        atomic_write_text(target, "<html/>")
    assert str(caught.value) == f"cannot write {target}: Is a directory"
    assert caught.value.errno == errno.EISDIR
    assert names(tmp_path) == ["report.html"] and target.is_dir()  # the temp file is gone, the directory kept


def test_a_file_in_place_of_the_directory_is_named(tmp_path):
    (tmp_path / "file").write_text("x")
    target = tmp_path / "file" / "out.txt"
    with pytest.raises(WriteError) as caught:
        atomic_write_bytes(target, b"x")
    assert str(caught.value) == f"cannot write {target}: Not a directory"
    assert caught.value.errno == errno.ENOTDIR


UNWRITABLE = textwrap.dedent(
    """
    import json, sys
    from mdbatch.atomic import WriteError, atomic_write_bytes
    try:
        atomic_write_bytes(sys.argv[1], b"x")
    except WriteError as exc:
        print(json.dumps({"message": str(exc), "errno": exc.errno, "path": exc.path}))
    """
)


def test_an_unwritable_directory_is_named(tmp_path):
    locked = tmp_path / "locked"
    locked.mkdir()
    (locked / "out.txt").write_bytes(b"old")
    locked.chmod(0o555)
    target = locked / "out.txt"
    try:
        # As root, permissions only hold once the DAC capabilities are dropped (in a child process).
        prefix = DROP_DAC if os.geteuid() == 0 else []
        proc = subprocess.run(
            [*prefix, sys.executable, "-c", UNWRITABLE, str(target)],
            capture_output=True,
            text=True,
            timeout=120,
            cwd=Path(__file__).parent.parent,
        )
        assert proc.returncode == 0, proc.stderr
        assert json.loads(proc.stdout) == {
            "message": f"cannot write {target}: Permission denied",
            "errno": errno.EACCES,
            "path": str(target),
        }
        assert target.read_bytes() == b"old" and names(locked) == ["out.txt"]
    finally:
        locked.chmod(0o755)


def test_write_errors_survive_pickling(tmp_path):
    err = WriteError(tmp_path / "x", errno.EACCES, "Permission denied")
    back = pickle.loads(pickle.dumps(err))
    assert type(back) is WriteError and str(back) == str(err) == f"cannot write {tmp_path / 'x'}: Permission denied"
    assert (back.errno, back.path, back.reason) == (errno.EACCES, str(tmp_path / "x"), "Permission denied")


def test_fsync_dir_of_a_missing_directory_is_a_no_op(tmp_path):
    fsync_dir(tmp_path)
    fsync_dir(tmp_path / "absent")
