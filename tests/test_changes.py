"""Change classification between two scans (pure functions)."""

from __future__ import annotations

import pyarrow as pa

from mdbatch.batch import FILES_SCHEMA
from mdbatch.changes import (
    Change,
    ChangeCounts,
    describe,
    file_changes,
    finding_changes,
    pair_moves,
    removed_simulations,
    simulation_changes,
)
from mdbatch.hashcache import CacheEntry


def recorded(size: int, mtime: int, ctime: int, inode: int, device: int, digest: str) -> CacheEntry:
    return CacheEntry(device=device, inode=inode, size=size, mtime_ns=mtime, ctime_ns=ctime, xxh3_128=digest)


def files_table(rows):
    names = ["simulation", "path", "size", "mtime_ns", "ctime_ns", "inode", "device", "xxh3_128"]
    full = [(s, p, size, 1, 2, ino, 9, d) for s, p, size, ino, d in rows]
    cols = list(zip(*full, strict=True))
    return pa.Table.from_arrays([pa.array(c, type=FILES_SCHEMA.field(n).type) for c, n in zip(cols, names, strict=True)], names=names)


def test_file_changes_and_identical_simulations():
    previous = {
        "a": {"x": recorded(3, 1, 2, 10, 9, "d1"), "y": recorded(4, 1, 2, 11, 9, "d2"), "gone": recorded(5, 1, 2, 12, 9, "d3")},
        "b": {"k": recorded(1, 1, 2, 20, 9, "e1")},
    }
    now = files_table([("a", "x", 3, 10, "d1"), ("a", "y", 4, 11, "CHANGED"), ("a", "fresh", 7, 13, "d4"), ("b", "k", 1, 20, "e1")])
    changes, unchanged, identical = file_changes(previous, now, ["a", "b", "c"])
    assert sorted((c.change, c.simulation, c.item) for c in changes) == [
        ("changed", "a", "y"),
        ("missing", "a", "gone"),
        ("new", "a", "fresh"),
    ]
    assert unchanged == 2 and identical == {"b"}


def test_moves_pair_across_simulations():
    new = [Change("file", "new", "s2", "traj.xtc", 100, "aa"), Change("file", "new", "s2", "other", 5, "bb")]
    missing = [Change("file", "missing", "s1", "traj.xtc", 100, "aa"), Change("file", "missing", "s1", "lost", 7, "cc")]
    moves, left_new, left_missing = pair_moves(new, missing)
    assert [(m.simulation, m.item, m.detail) for m in moves] == [("s2", "traj.xtc", "from s1/traj.xtc")]
    assert [c.item for c in left_new] == ["other"] and [c.item for c in left_missing] == ["lost"]


def test_simulations_and_findings():
    assert [(c.change, c.item, c.detail) for c in simulation_changes({"a": "production"}, {"a": "completed", "b": "build"})] == [
        ("status_changed", "a", "production -> completed"),
        ("new", "b", "build"),
    ]
    assert [c.item for c in removed_simulations(["a", "b", "z"], {"a"})] == ["b", "z"]
    records, persisting = finding_changes(
        [("a", "missing_file", "x"), ("b", "extra_file", "y")], [("a", "missing_file", "x"), ("c", "unreadable", "z")]
    )
    assert [(c.change, c.simulation, c.item) for c in records] == [("new", "c", "unreadable:z"), ("resolved", "b", "extra_file:y")]
    assert persisting == 1


def test_counts_and_description():
    counts = ChangeCounts()
    counts.add([Change("file", "new", "a", "x"), Change("simulation", "removed", "b", "b"), Change("finding", "resolved", "a", "k:i")])
    counts.files["unchanged"] += 5
    d = counts.to_dict()
    assert d["files"]["new"] == 1 and d["files"]["unchanged"] == 5 and d["simulations"]["removed"] == 1
    assert describe(d, None).startswith("First audit")
    assert "1 new" in describe(d, "R1") and "5 unchanged" in describe(d, "R1")
