"""The hash cache (mdbatch/hashcache.py): an entry answers for a file only while every stat field
matches and it holds what is asked; the recorded inventory splits into recorded, trusted and stale."""

from __future__ import annotations

import base64
import json
import os
import time
from pathlib import Path

import pyarrow as pa
import pytest
import xxhash

from mdbatch.hashcache import (
    CACHED_BYTES_MAX,
    HASH_CACHE_VERSION,
    INVENTORY_COLUMNS,
    CacheEntry,
    content_facts,
    entries,
    footer_facts,
    lookup,
)
from mdbatch.hashing import FileDigest

DATA = b'{"analyses": {}, "artifacts": {}}\n'
SHA = "0" * 64


def entry_for(path: Path, facts: str | None = None, sha256: str | None = None) -> CacheEntry:
    st = os.lstat(path)
    return CacheEntry(
        st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns, xxhash.xxh3_128_hexdigest(path.read_bytes()), sha256, facts
    )


@pytest.fixture
def small(tmp_path: Path) -> Path:
    path = tmp_path / "metadata.json"
    path.write_bytes(DATA)
    return path


def test_a_matching_entry_is_the_file(small):
    entry = entry_for(small, sha256=SHA)
    st = os.lstat(small)
    hit = lookup(str(small), entry)
    assert hit is not None
    assert hit.digest == FileDigest(st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino, st.st_dev, entry.xxh3_128, SHA, None, False)
    assert hit.facts is None and hit.footer is None
    assert lookup(str(small), entry, sha256=True).digest.sha256 == SHA


@pytest.mark.parametrize("field", ["device", "inode", "size", "mtime_ns", "ctime_ns"])
def test_any_stat_field_that_moved_is_a_miss(small, field):
    entry = entry_for(small)
    assert lookup(str(small), entry) is not None
    assert lookup(str(small), entry._replace(**{field: getattr(entry, field) + 1})) is None


def test_a_real_change_that_restores_size_and_mtime_is_a_miss(small):
    entry = entry_for(small)
    st = os.lstat(small)
    time.sleep(0.05)  # past the file system's timestamp granularity, so that the ctime can move
    os.utime(small, ns=(st.st_atime_ns, st.st_mtime_ns - 10**9))  # the ctime moves; put the mtime back below
    os.utime(small, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert os.lstat(small).st_size == entry.size and os.lstat(small).st_mtime_ns == entry.mtime_ns
    assert lookup(str(small), entry) is None


def test_a_replaced_file_of_the_same_size_is_a_miss(small):
    entry = entry_for(small)
    st = os.lstat(small)
    replacement = small.with_name("new")
    replacement.write_bytes(DATA)
    os.utime(replacement, ns=(st.st_atime_ns, st.st_mtime_ns))
    os.replace(replacement, small)  # a new inode
    assert lookup(str(small), entry) is None


def test_missing_file_or_symlink_in_its_place_is_a_miss(small, tmp_path):
    entry = entry_for(small)
    small.rename(tmp_path / "moved")
    assert lookup(str(small), entry) is None
    os.symlink(tmp_path / "moved", small)  # lstat: the link itself, never what it points to
    assert lookup(str(small), entry) is None


def test_an_entry_must_hold_what_is_asked(small):
    bare = entry_for(small)
    assert lookup(str(small), None) is None
    assert lookup(str(small), bare._replace(xxh3_128=None)) is None
    assert lookup(str(small), bare, sha256=True) is None
    assert lookup(str(small), bare, footer=True) is None
    assert lookup(str(small), bare, content=True) is None
    assert lookup(str(small), bare._replace(facts=""), content=True) is None


def test_footer_facts_are_parsed(small):
    facts = footer_facts(12, ("time", "area"))
    assert facts == '{"rows":12,"columns":["time","area"]}'
    hit = lookup(str(small), entry_for(small, facts), footer=True)
    assert hit is not None and hit.footer == (12, ("time", "area")) and hit.facts == facts
    assert lookup(str(small), entry_for(small, facts)).footer is None  # parsed only when asked


@pytest.mark.parametrize(
    "facts", ['{"rows": 12}', '{"columns": ["a"]}', "not json", '{"rows": "x", "columns": []}', "[1, 2]", '{"rows": 1, "columns": 5}']
)
def test_footer_facts_that_do_not_parse_are_a_miss(small, facts):
    assert lookup(str(small), entry_for(small, facts), footer=True) is None


def test_content_facts_give_the_bytes_back(small):
    facts = content_facts(DATA)
    assert facts == json.dumps({"bytes": base64.b64encode(DATA).decode("ascii")})
    hit = lookup(str(small), entry_for(small, facts), content=True)
    assert hit is not None and hit.digest.data == DATA and hit.digest.changed is False
    assert lookup(str(small), entry_for(small, facts)).digest.data is None  # bytes only when asked


@pytest.mark.parametrize(
    "facts",
    [
        json.dumps({"bytes": base64.b64encode(DATA[:-1]).decode()}),  # one byte short of the file's size
        json.dumps({"bytes": base64.b64encode(DATA + b"x").decode()}),
        json.dumps({"bytes": "!!" + base64.b64encode(DATA).decode()}),  # not base64
        json.dumps({"bytes": base64.b64encode(DATA).decode()[:-1]}),  # bad padding
        json.dumps({"bytes": 5}),
        json.dumps({"rows": 1, "columns": []}),
        "{",
    ],
)
def test_content_facts_of_the_wrong_size_or_not_base64_are_a_miss(small, facts):
    assert lookup(str(small), entry_for(small, facts), content=True) is None


def test_content_facts_keep_small_files_only():
    assert content_facts(None) is None
    assert content_facts(b"") == '{"bytes": ""}'
    assert content_facts(b"x" * CACHED_BYTES_MAX) is not None
    assert content_facts(b"x" * (CACHED_BYTES_MAX + 1)) is None


def inventory(rows: list[tuple]) -> pa.Table:
    types = [
        pa.string(),
        pa.string(),
        pa.int64(),
        pa.int64(),
        pa.int64(),
        pa.int64(),
        pa.int64(),
        pa.string(),
        pa.string(),
        pa.string(),
        pa.int64(),
    ]
    cols = list(zip(*rows, strict=True)) if rows else [[] for _ in INVENTORY_COLUMNS]
    return pa.table({n: pa.array(c, t) for n, c, t in zip(INVENTORY_COLUMNS, cols, types, strict=True)})


def test_entries_split_recorded_trusted_and_stale():
    v = HASH_CACHE_VERSION
    assert v == 2
    rows = [
        ("sim1", "a.gro", 1, 10, 100, 1000, 1001, "x" * 32, None, None, v),
        ("sim1", "b.xtc", 1, 11, 200, 2000, 2001, None, None, None, v),  # no digest (--no-hash): nothing to answer with
        ("sim2", "a.gro", 1, 20, 100, 1000, 1001, "y" * 32, SHA, '{"rows":1,"columns":["t"]}', v),
        ("sim3", "a.gro", 1, 30, 100, 1000, 1001, "z" * 32, None, None, v),
        ("sim3", "old.bin", 1, 31, 5, 50, 51, "w" * 32, None, None, 1),  # another cache version
        ("sim4", "a.gro", 1, 40, 100, 1000, 1001, "u" * 32, None, None, None),  # written before versions were recorded
    ]
    recorded, trusted, stale = entries(inventory(rows))
    as_entry = lambda r: CacheEntry(*r[2:10])  # noqa: E731
    assert recorded == {
        "sim1": {"a.gro": as_entry(rows[0]), "b.xtc": as_entry(rows[1])},
        "sim2": {"a.gro": as_entry(rows[2])},
        "sim3": {"a.gro": as_entry(rows[3]), "old.bin": as_entry(rows[4])},
        "sim4": {"a.gro": as_entry(rows[5])},
    }
    assert trusted == {"sim1": {"a.gro": as_entry(rows[0])}, "sim2": {"a.gro": as_entry(rows[2])}, "sim3": {"a.gro": as_entry(rows[3])}}
    assert stale == {"sim3", "sim4"}
    assert recorded["sim2"]["a.gro"] == CacheEntry(1, 20, 100, 1000, 1001, "y" * 32, SHA, '{"rows":1,"columns":["t"]}')

    recorded_again, untrusted, stale_again = entries(inventory(rows), use_cache=False)
    assert recorded_again == recorded and untrusted == {} and stale_again == stale


def test_entries_of_an_empty_inventory_and_extra_columns():
    assert entries(inventory([])) == ({}, {}, set())
    table = inventory([("s", "p", 1, 2, 3, 4, 5, "d" * 32, None, None, 2)]).append_column("root", pa.array(["/r"]))
    assert entries(table)[1] == {"s": {"p": CacheEntry(1, 2, 3, 4, 5, "d" * 32, None, None)}}
