"""Journal format, torn writes, locking, and the byte comparison the apply relies on."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from mdbatch.dedupe.fsops import RootFS, same_bytes
from mdbatch.dedupe.journal import (
    ACTIVE_SUFFIX,
    Journal,
    JournalBusyError,
    JournalState,
    append_and_close,
    pending_journals,
    read_records,
    root_lock,
)


def test_records_round_trip_undecodable_names_and_close_renames(tmp_path: Path) -> None:
    journal = Journal(str(tmp_path), "run1", {"op": "apply", "link": "hardlink"})
    name = os.fsdecode(b"sim/caf\xe9.top")
    journal.write(
        {
            "t": "link",
            "id": journal.new_id(),
            "set": 1,
            "path": name,
            "tmp": "sim/.mdbatch-tmp-x-1",
            "kind": "hardlink",
            "target": "other/caf.top",
            "target_ino": 7,
            "old_ino": 8,
            "old_dev": 9,
        }
    )
    journal.done(1)
    assert journal.path.endswith(ACTIVE_SUFFIX) and pending_journals(str(tmp_path)) == [journal.path]
    final = journal.close("completed")
    assert not pending_journals(str(tmp_path)) and final.endswith("run1.jsonl")
    raw = Path(final).read_bytes()
    assert raw.isascii() and b"\\udce9" in raw  # the undecodable byte survives as an escape
    state = JournalState.load(final)
    assert os.fsencode(state.intents[0]["path"]) == b"sim/caf\xe9.top"
    assert state.outcomes == {1: "done"} and state.ended == "completed"


def test_a_torn_last_line_is_ignored_and_recovery_appends_cleanly(tmp_path: Path) -> None:
    journal = Journal(str(tmp_path), "run2", {"op": "apply", "link": "hardlink"})
    journal.write({"t": "chmod", "id": journal.new_id(), "set": 1, "path": "a", "ino": 1, "before": 420, "after": 292, "abs": False})
    journal.sync()
    with open(journal.path, "ab") as handle:  # a crash in the middle of a write
        handle.write(b'{"t":"link","id":2,"pa')
    journal.abandon()
    assert [r["t"] for r in read_records(journal.path)] == ["begin", "chmod"]
    final = append_and_close(journal.path, [{"t": "recovered"}], "recovered")
    lines = Path(final).read_text().splitlines()
    assert json.loads(lines[-1])["status"] == "recovered" and json.loads(lines[-2]) == {"t": "recovered"}


def test_one_apply_per_root(tmp_path: Path) -> None:
    lock = root_lock(str(tmp_path))
    try:
        with pytest.raises(JournalBusyError):
            # flock locks belong to the open file: a second descriptor conflicts even in-process.
            root_lock(str(tmp_path))
    finally:
        lock.release()
    root_lock(str(tmp_path)).release()


def test_same_bytes_streams_large_files(tmp_path: Path) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    data = os.urandom(3 << 20)
    a.write_bytes(data)
    b.write_bytes(data)
    fa, fb = os.open(a, os.O_RDONLY), os.open(b, os.O_RDONLY)
    try:
        assert same_bytes(fa, fb, len(data))
        with open(b, "r+b") as handle:
            handle.seek(len(data) - 1)
            handle.write(bytes([data[-1] ^ 1]))
        assert not same_bytes(fa, fb, len(data))
        with open(b, "ab") as handle:
            handle.write(b"x")
        assert not same_bytes(fa, fa, len(data) - 1)  # more bytes than expected is not "the same"
    finally:
        os.close(fa)
        os.close(fb)


def test_rootfs_refuses_symlinked_directories(tmp_path: Path) -> None:
    (tmp_path / "real").mkdir()
    (tmp_path / "real" / "f").write_bytes(b"x")
    os.symlink(tmp_path / "real", tmp_path / "link")
    with RootFS(str(tmp_path)) as fs:
        assert fs.lstat("real/f").st_size == 1
        with pytest.raises(OSError):
            fs.lstat("link/f")
        with pytest.raises(OSError):
            fs.open_read("link")  # the symlink itself is never opened through


def test_the_fast_link_encoder_writes_what_json_reads_back(tmp_path: Path) -> None:
    journal = Journal(str(tmp_path), "run3", {"op": "apply", "link": "symlink"})
    rec = {
        "t": "link",
        "id": journal.new_id(),
        "set": 4,
        "path": os.fsdecode(b'd/"q" caf\xe9\n.top'),
        "tmp": "d/.mdbatch-tmp-ab-1",
        "kind": "symlink",
        "target": "../e/x.top",
        "target_ino": 0,
        "old_ino": 12,
        "old_dev": 2049,
    }
    journal.write_link(rec)
    final = journal.close("completed")
    assert JournalState.load(final).intents == [rec]
