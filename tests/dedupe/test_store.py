"""The content-addressed store: objects, references, stats, verify and orphan gc."""

from __future__ import annotations

import json
import os
import shutil
import stat
from pathlib import Path

import pytest

from mdbatch.dedupe import dedupe
from mdbatch.dedupe.journal import pending_journals
from mdbatch.dedupe.store import Store
from mdbatch.errors import UsageError
from mdbatch.hashing import xxh3_128_hex

from .conftest import snapshot

TOP = b"[ moleculetype ]\nPOPC 3\n" * 50
MDP = b"integrator = md\n" * 40


def test_store_apply_moves_one_copy_per_group_and_links_every_path(tree, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    root = tree({f"s{i}": {"topology.top": TOP, "prod.mdp": MDP} for i in range(4)})
    store_dir = tmp_path / "store"
    before = snapshot(root)
    result = dedupe(root, store=store_dir, mode="local", progress=False)
    assert snapshot(root) == before and result.exit_code == 0
    store = Store.open(str(store_dir))
    digest = xxh3_128_hex(TOP)
    obj = Path(store.object_path(digest))
    assert obj.parent.name == digest[:2] and obj.name == digest
    assert stat.S_IMODE(obj.stat().st_mode) & 0o222 == 0
    assert {os.lstat(root / f"s{i}" / "topology.top").st_ino for i in range(4)} == {obj.stat().st_ino}
    refs = store.refs()
    assert sorted(r.path for r in refs[digest]) == sorted(str(root / f"s{i}" / "topology.top") for i in range(4))
    stats = store.stats()
    assert stats["objects"] == 2 and stats["references"] == 8
    assert stats["stored_bytes"] == len(TOP) + len(MDP)
    assert stats["logical_bytes"] == 4 * (len(TOP) + len(MDP))
    assert stats["bytes_saved"] == 3 * (len(TOP) + len(MDP))
    assert stats["dedup_ratio"] == 4.0 and stats["orphans"] == 0
    assert store.verify()["corrupt"] == 0
    with pytest.raises(UsageError):
        dedupe(root, store=store_dir, writable=True, mode="local", progress=False)


def test_objects_are_shared_across_campaigns(tree, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    store_dir = tmp_path / "store"
    first = tree({"a": {"t.top": TOP}, "b": {"t.top": TOP}})
    second = tree({"c": {"t.top": TOP}, "d": {"t.top": TOP}})
    dedupe(first, store=store_dir, mode="local", progress=False)
    result = dedupe(second, store=store_dir, mode="local", progress=False)
    assert result.applied is not None and result.applied.objects_created == 0 and result.applied.links == 2
    inodes = {os.lstat(r / s / "t.top").st_ino for r, s in ((first, "a"), (first, "b"), (second, "c"), (second, "d"))}
    assert len(inodes) == 1
    assert Store.open(str(store_dir)).stats()["dedup_ratio"] == 4.0


def ino(path: Path) -> int:
    return os.lstat(path).st_ino


def mode(path: Path) -> int:
    return stat.S_IMODE(os.lstat(path).st_mode)


#: What can sit under an object's name without holding its bytes, and the reason a run gives.
BAD_OBJECTS = {
    "other_bytes": "content differs",  # same size, other bytes: bit rot, or what a hash collision looks like
    "other_size": "different file under this digest",
    "symlink_to_a_good_copy": "different file under this digest",  # a name is never trusted, nor followed
    "directory": "different file under this digest",
}


@pytest.mark.parametrize("bad", sorted(BAD_OBJECTS))
def test_an_object_that_is_not_these_bytes_is_never_linked(tree, tmp_path: Path, bad: str) -> None:  # type: ignore[no-untyped-def]
    root = tree({"a": {"t.top": TOP}, "b": {"t.top": TOP}})
    store = Store.open(str(tmp_path / "store"), create=True)
    fake = Path(store.ensure_shard(xxh3_128_hex(TOP)))
    good = tmp_path / "good-copy"
    good.write_bytes(TOP)
    if bad == "other_bytes":
        fake.write_bytes(TOP[:100] + b"#" + TOP[101:])
    elif bad == "other_size":
        fake.write_bytes(TOP + b"\n")
    elif bad == "symlink_to_a_good_copy":
        fake.symlink_to(good)
    else:
        fake.mkdir()
    before, store_before = snapshot(root), snapshot(tmp_path / "store" / "objects")
    result = dedupe(root, store=tmp_path / "store", mode="local", progress=False)
    assert snapshot(root) == before and result.exit_code == 1
    assert result.applied is not None and result.applied.links == 0 and result.applied.objects_created == 0
    (skip,) = result.applied.skipped
    assert BAD_OBJECTS[bad] in skip["reason"]
    assert len({ino(root / "a" / "t.top"), ino(root / "b" / "t.top"), os.lstat(fake).st_ino}) == 3
    assert snapshot(tmp_path / "store" / "objects") == store_before  # reported, left for `store verify`; never replaced blindly
    assert Store.open(str(tmp_path / "store")).refs() == {}


def test_a_group_split_by_mode_shares_one_object_and_exits_0(tree, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """Issue 13 item 7: a group whose paths differ in mode is split into link sets; only one of them
    may create the object, the others must not fail on it ("File exists")."""
    root = tree({f"s{i}": {"t.top": TOP} for i in range(6)})
    for name, m in (("s3", 0o400), ("s4", 0o400), ("s5", 0o440)):
        os.chmod(root / name / "t.top", m)
    before = snapshot(root)
    store_dir = tmp_path / "store"
    result = dedupe(root, store=store_dir, mode="local", progress=False)
    applied = result.applied
    assert applied is not None and applied.skipped == [] and result.exit_code == 0
    assert snapshot(root) == before
    obj = Path(Store.open(str(store_dir)).object_path(xxh3_128_hex(TOP)))
    paths = [root / f"s{i}" / "t.top" for i in range(6)]
    # The largest link set holds the object; a mode the object does not have keeps its own inode
    # (linked within its set), since a linked path would show the object's mode.
    assert {ino(p) for p in paths[:3]} == {ino(obj)}
    assert ino(paths[3]) == ino(paths[4]) != ino(obj) and ino(paths[5]) not in {ino(obj), ino(paths[3])}
    assert [mode(p) for p in paths] == [0o444, 0o444, 0o444, 0o400, 0o400, 0o440]
    assert (applied.objects_created, applied.links, applied.kept_out_of_store) == (1, 3, 3)
    assert any("3 paths of 1 group" in m and "kept out of the store" in m for m in applied.messages)
    refs = Store.open(str(store_dir)).refs()
    assert sorted(r.path for r in refs[xxh3_128_hex(TOP)]) == [str(p) for p in paths[:3]]
    again = dedupe(root, store=store_dir, mode="local", progress=False)
    assert again.exit_code == 0 and again.applied is not None
    assert (again.applied.links, again.applied.objects_created, again.applied.skipped) == (0, 0, [])
    assert snapshot(root) == before


def test_an_existing_object_is_reused_only_by_paths_with_its_owner_and_mode(tree, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    store_dir = tmp_path / "store"
    first = tree({"a": {"t.top": TOP}, "b": {"t.top": TOP}})
    dedupe(first, store=store_dir, mode="local", progress=False)
    obj = Path(Store.open(str(store_dir)).object_path(xxh3_128_hex(TOP)))
    second = tree({"c": {"t.top": TOP}, "d": {"t.top": TOP}, "e": {"t.top": TOP}})
    os.chmod(second / "d" / "t.top", 0o600)
    os.chmod(second / "e" / "t.top", 0o600)
    before = snapshot(second)
    result = dedupe(second, store=store_dir, mode="local", progress=False)
    assert result.exit_code == 0 and result.applied is not None and result.applied.skipped == []
    assert (result.applied.objects_created, result.applied.links, result.applied.kept_out_of_store) == (0, 2, 2)
    assert ino(second / "c" / "t.top") == ino(obj) and mode(obj) == 0o444
    assert ino(second / "d" / "t.top") == ino(second / "e" / "t.top") != ino(obj)
    assert mode(second / "d" / "t.top") == 0o400  # linked within its set, made read-only as without a store
    assert snapshot(second) == before


def test_an_object_that_appears_after_planning_is_never_trusted(tree, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    root = tree({"a": {"t.top": TOP}, "b": {"t.top": TOP}})
    store_dir = tmp_path / "store"
    before = snapshot(root)

    def hook(step: str) -> None:  # journaled, not yet carried out: someone else stores other bytes
        if step == "synced":
            fake = Path(Store.open(str(store_dir)).ensure_shard(xxh3_128_hex(TOP)))
            if not fake.exists():
                fake.write_bytes(b"X" * len(TOP))

    result = dedupe(root, store=store_dir, mode="local", progress=False, hook=hook)
    assert snapshot(root) == before and result.exit_code == 1
    assert result.applied is not None and result.applied.links == 0 and result.applied.objects_created == 0
    (skip,) = result.applied.skipped
    assert "appeared" in skip["reason"]
    assert len({ino(root / "a" / "t.top"), ino(root / "b" / "t.top")}) == 2
    assert not pending_journals(str(root))


def test_verify_finds_a_corrupted_object(tree, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    root = tree({"a": {"t.top": TOP}, "b": {"t.top": TOP}})
    dedupe(root, store=tmp_path / "store", mode="local", progress=False)
    store = Store.open(str(tmp_path / "store"))
    obj = Path(store.object_path(xxh3_128_hex(TOP)))
    # Bit rot on the object (it is the same inode as the campaign copies: they rot with it).
    os.chmod(obj, 0o644)
    with open(obj, "r+b") as handle:
        handle.seek(10)
        handle.write(b"#")
    report = store.verify()
    assert report["corrupt"] == 1 and report["corrupt_objects"][0]["digest"] == xxh3_128_hex(TOP)


def test_gc_deletes_only_objects_no_campaign_path_references(tree, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    root = tree({"a": {"t.top": TOP, "m.mdp": MDP}, "b": {"t.top": TOP, "m.mdp": MDP}})
    store_dir = tmp_path / "store"
    dedupe(root, store=store_dir, mode="local", progress=False)
    store = Store.open(str(store_dir))
    top_obj, mdp_obj = Path(store.object_path(xxh3_128_hex(TOP))), Path(store.object_path(xxh3_128_hex(MDP)))
    assert store.gc(dry_run=True).orphans == []
    # The topology is rewritten in both simulations (new inodes): its object is no longer referenced.
    for sim in ("a", "b"):
        (root / sim / "t.top").unlink()
        (root / sim / "t.top").write_bytes(TOP + b"; edited\n")
    dry = store.gc(dry_run=True)
    assert [o["digest"] for o in dry.orphans] == [xxh3_128_hex(TOP)]
    assert top_obj.exists()
    done = store.gc(dry_run=False)
    assert done.deleted == 1 and done.freed_bytes == len(TOP)
    assert not top_obj.exists() and mdp_obj.exists()
    assert done.journal is not None and Path(done.journal).parent == store_dir / ".mdbatch-journal"
    records = [json.loads(line) for line in Path(done.journal).read_text().splitlines()]
    assert [r["t"] for r in records] == ["begin", "delete", "done", "end"]
    assert done.refs_after == 2  # compacted to the live references of the .mdp object
    assert store.gc(dry_run=False).deleted == 0
    assert (root / "a" / "m.mdp").read_bytes() == MDP


def test_gc_never_deletes_an_object_a_symlink_still_points_to(tree, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    root = tree({"a": {"t.top": TOP}, "b": {"t.top": TOP}})
    store_dir = tmp_path / "store"
    before = snapshot(root)
    dedupe(root, store=store_dir, link="symlink", mode="local", progress=False)
    assert snapshot(root) == before
    store = Store.open(str(store_dir))
    obj = store.object_path(xxh3_128_hex(TOP))
    assert os.readlink(root / "a" / "t.top") == obj == os.readlink(root / "b" / "t.top")
    assert store.gc(dry_run=False).deleted == 0
    (root / "a" / "t.top").unlink()
    assert store.gc(dry_run=False).deleted == 0  # b still points to it
    assert (root / "b" / "t.top").read_bytes() == TOP
    (root / "b" / "t.top").unlink()
    assert store.gc(dry_run=False).deleted == 1


def test_store_stats_survive_a_moved_campaign(tree, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    root = tree({"a": {"t.top": TOP}, "b": {"t.top": TOP}})
    dedupe(root, store=tmp_path / "store", mode="local", progress=False)
    shutil.move(str(root), str(tmp_path / "moved"))
    stats = Store.open(str(tmp_path / "store")).stats()
    # Recorded paths no longer exist: the object counts as an orphan, but gc deleting it frees
    # nothing and loses nothing (the moved copies still hold the inode).
    assert stats["references"] == 0 and stats["orphans"] == 1
    gc = Store.open(str(tmp_path / "store")).gc(dry_run=False)
    assert gc.deleted == 1 and gc.freed_bytes == 0
    assert (tmp_path / "moved" / "a" / "t.top").read_bytes() == TOP


def test_store_on_another_device_needs_symlinks(tree, other_device: Path) -> None:  # type: ignore[no-untyped-def]
    root = tree({"a": {"t.top": TOP}, "b": {"t.top": TOP}})
    before = snapshot(root)
    hard = dedupe(root, store=other_device / "cas", mode="local", progress=False)
    assert hard.exit_code == 1 and hard.applied is not None and hard.applied.links == 0
    assert "another device" in hard.applied.skipped[0]["reason"]
    soft = dedupe(root, store=other_device / "cas", link="symlink", mode="local", progress=False)
    assert soft.exit_code == 0 and soft.applied is not None and soft.applied.links == 2 and soft.applied.objects_created == 1
    assert snapshot(root) == before
    obj = Store.open(str(other_device / "cas")).object_path(xxh3_128_hex(TOP))
    assert os.readlink(root / "a" / "t.top") == obj and Path(obj).read_bytes() == TOP
    assert os.stat(obj).st_dev != os.lstat(root / "a").st_dev


def test_reflink_apply_and_store_on_a_reflink_filesystem(reflink_fs: Path) -> None:
    from .conftest import write_sim

    root = reflink_fs / "campaign"
    big = bytes(range(256)) * 8192  # 2 MiB
    for i in range(3):
        write_sim(root, f"s{i}", {"traj.xtc": big, "t.top": TOP})
    os.chmod(root / "s1" / "t.top", 0o640)
    before = snapshot(root)
    result = dedupe(root, apply=True, link="reflink", mode="local", progress=False)
    assert result.applied is not None and result.applied.link == "reflink" and result.applied.links == 4
    assert snapshot(root) == before
    # Clones are their own inodes and keep their own mode (nothing to make read-only).
    assert len({os.lstat(root / f"s{i}" / "traj.xtc").st_ino for i in range(3)}) == 3
    assert stat.S_IMODE(os.lstat(root / "s1" / "t.top").st_mode) == 0o640
    stored = dedupe(root, store=reflink_fs / "cas", link="reflink", mode="local", progress=False)
    assert stored.exit_code == 0 and stored.applied is not None and stored.applied.objects_created == 2
    assert snapshot(root) == before
    store = Store.open(str(reflink_fs / "cas"))
    assert store.verify()["corrupt"] == 0 and store.stats()["dedup_ratio"] == 3.0


def test_dry_run_into_a_new_store_creates_nothing(tree, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    root = tree({"a": {"t.top": TOP}, "b": {"t.top": TOP}})
    result = dedupe(root, store=tmp_path / "new-store", dry_run=True, mode="local", progress=False)
    assert not (tmp_path / "new-store").exists()
    assert result.applied is not None and result.applied.links == 1
    assert {p["action"] for p in result.applied.planned} == {"store-link", "chmod a-w", "hardlink"}
