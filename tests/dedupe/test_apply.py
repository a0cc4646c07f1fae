"""The journaled executor: links are made only where bytes were proven equal, and nothing else moves."""

from __future__ import annotations

import json
import os
import stat
import threading
import time
from pathlib import Path

from mdbatch.dedupe import dedupe
from mdbatch.dedupe.apply import ApplyOptions, apply_groups
from mdbatch.dedupe.journal import JOURNAL_DIRNAME, pending_journals
from mdbatch.dedupe.model import DuplicateGroup, FileRef
from mdbatch.dedupe.plan import find_duplicates
from mdbatch.discover import walk_root

from .conftest import snapshot, write_sim

TOP = b"[ moleculetype ]\nSOL 3\n" * 40
MDP = b"integrator = md\nnsteps = 50000\n" * 10


def find(root: Path):  # type: ignore[no-untyped-def]
    return find_duplicates(str(root), list(walk_root(str(root))))


def ino(path: Path) -> int:
    return os.lstat(path).st_ino


def test_hardlink_apply_keeps_every_byte_and_shares_inodes_read_only(tree) -> None:  # type: ignore[no-untyped-def]
    root = tree({f"s{i}": {"topology.top": TOP, "prod.mdp": MDP, "own.txt": f"own {i}".encode()} for i in range(5)})
    before = snapshot(root)
    result = dedupe(root, apply=True, mode="local", progress=False)
    assert snapshot(root) == before
    assert result.exit_code == 0
    applied = result.applied
    assert applied is not None and applied.links == 8 and applied.groups_linked == 2
    assert applied.bytes_reclaimed == 4 * (len(TOP) + len(MDP))
    assert len({ino(root / f"s{i}" / "topology.top") for i in range(5)}) == 1
    assert os.lstat(root / "s0" / "topology.top").st_nlink == 5
    assert stat.S_IMODE(os.lstat(root / "s3" / "prod.mdp").st_mode) & 0o222 == 0  # read-only by default
    assert stat.S_IMODE(os.lstat(root / "s3" / "own.txt").st_mode) & 0o200  # untouched file stays writable
    assert not pending_journals(str(root))
    journal = Path(applied.journal or "")
    assert journal.name.endswith(".jsonl") and journal.parent.name == JOURNAL_DIRNAME
    records = [json.loads(line) for line in journal.read_text().splitlines()]
    assert records[0]["t"] == "begin" and records[-1] == {**records[-1], "t": "end", "status": "completed"}
    links = [r for r in records if r["t"] == "link"]
    done = {r["id"] for r in records if r["t"] == "done"}
    assert len(links) == 8 and {r["id"] for r in links} <= done
    # Every intent precedes its outcome in the file.
    position = {(r["t"], r.get("id")): k for k, r in enumerate(records)}
    assert all(position[("link", r["id"])] < position[("done", r["id"])] for r in links)
    # Re-running finds the same groups (identical content) with nothing left to reclaim.
    again = dedupe(root, apply=True, mode="local", progress=False)
    assert again.summary["groups"] == 2 and again.summary["reclaimable_bytes"] == 0
    assert again.applied is not None and again.applied.links == 0


def test_writable_opt_out_and_different_modes_are_not_merged(tree) -> None:  # type: ignore[no-untyped-def]
    root = tree({"a": {"x.sh": TOP}, "b": {"x.sh": TOP}, "c": {"x.sh": TOP}})
    os.chmod(root / "c" / "x.sh", 0o755)  # an executable copy must not lose (or give) its x bit
    result = dedupe(root, apply=True, writable=True, mode="local", progress=False)
    assert result.applied is not None and result.applied.links == 1
    assert ino(root / "a" / "x.sh") == ino(root / "b" / "x.sh") != ino(root / "c" / "x.sh")
    assert stat.S_IMODE(os.lstat(root / "a" / "x.sh").st_mode) == 0o644
    assert stat.S_IMODE(os.lstat(root / "c" / "x.sh").st_mode) == 0o755


def test_only_selected_statuses_are_modified(tree) -> None:  # type: ignore[no-untyped-def]
    root = tree({"done1": {"t.top": TOP}, "done2": {"t.top": TOP}, "running": {"t.top": TOP}}, statuses={"running": "production"})
    before_running = os.lstat(root / "running" / "t.top")
    result = dedupe(root, apply=True, mode="local", progress=False)
    assert result.summary["duplicate_files"] == 3  # reporting covers everything
    assert result.applied is not None and result.applied.ineligible_paths == 1
    after_running = os.lstat(root / "running" / "t.top")
    assert (after_running.st_ino, after_running.st_mode, after_running.st_nlink) == (before_running.st_ino, before_running.st_mode, 1)
    assert ino(root / "done1" / "t.top") == ino(root / "done2" / "t.top")
    everything = dedupe(root, apply=True, statuses=None, mode="local", progress=False)
    assert everything.applied is not None and everything.applied.links == 1


def test_files_modified_between_scan_and_apply_are_left_alone_and_reported(tree) -> None:  # type: ignore[no-untyped-def]
    root = tree({"a": {"t.top": TOP, "m.mdp": MDP}, "b": {"t.top": TOP, "m.mdp": MDP}, "c": {"t.top": TOP}})
    found = find(root)
    # Same size, new bytes, mtime put back: only ctime (which no one can set) tells.
    target = root / "b" / "t.top"
    st = os.lstat(target)
    target.write_bytes(TOP.replace(b"SOL", b"NaC"))
    os.utime(target, ns=(st.st_atime_ns, st.st_mtime_ns))
    before = snapshot(root)
    result = apply_groups(str(root), found.groups, ApplyOptions(), "run-test")
    assert snapshot(root) == before
    assert [os.fsencode(p) for p in result.changed] == [b"b/t.top"]
    skipped = {s["digest"]: s for s in result.skipped}
    top_group = next(g for g in found.groups if g.paths[0].endswith("t.top"))
    assert skipped[top_group.digest]["reason"] == "changed since the scan"
    assert len({ino(root / s / "t.top") for s in "abc"}) == 3  # the whole group was skipped
    assert ino(root / "a" / "m.mdp") == ino(root / "b" / "m.mdp")  # other groups still linked


def test_a_fast_hash_match_is_never_proof(tree) -> None:  # type: ignore[no-untyped-def]
    root = tree({"a": {"f": b"A" * 4096}, "b": {"f": b"B" * 4096}})
    found = find(root)
    assert not found.groups
    members = []
    for sim in ("a", "b"):
        st = os.lstat(root / sim / "f")
        members.append(FileRef(f"{sim}/f", sim, "completed", st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino, st.st_dev))
    forged = DuplicateGroup("0" * 32, 4096, tuple(members))  # a pretend xxh3 collision
    before = snapshot(root)
    result = apply_groups(str(root), [forged], ApplyOptions(), "run-collision")
    assert snapshot(root) == before and result.links == 0
    assert "content differs" in result.skipped[0]["reason"]


def test_never_links_across_devices(tree, mount_tmpfs) -> None:  # type: ignore[no-untyped-def]
    root = tree({"a": {"f": TOP}, "b": {"f": TOP}})
    mount_tmpfs(root / "other")  # a directory of the campaign on another filesystem
    write_sim(root / "other", "c", {"f": TOP})
    write_sim(root / "other", "d", {"f": TOP})
    before = snapshot(root)
    found = find(root)
    assert [len(g.members) for g in found.groups if g.size == len(TOP)] == [4]  # one group across devices
    result = apply_groups(str(root), found.groups, ApplyOptions(), "run-dev")
    assert snapshot(root) == before and result.links == 2
    assert ino(root / "a" / "f") == ino(root / "b" / "f")
    assert ino(root / "other" / "c" / "f") == ino(root / "other" / "d" / "f")
    assert os.lstat(root / "a" / "f").st_dev != os.lstat(root / "other" / "c" / "f").st_dev
    assert os.lstat(root / "a" / "f").st_nlink == 2 == os.lstat(root / "other" / "c" / "f").st_nlink


def test_link_limit_starts_a_new_kept_copy(tree) -> None:  # type: ignore[no-untyped-def]
    root = tree({f"s{i}": {"t.top": TOP} for i in range(7)})
    before = snapshot(root)
    result = apply_groups(str(root), find(root).groups, ApplyOptions(link_max=3), "run-limit")
    assert snapshot(root) == before
    inodes = [ino(root / f"s{i}" / "t.top") for i in range(7)]
    assert all(os.lstat(root / f"s{i}" / "t.top").st_nlink <= 3 for i in range(7))
    assert len(set(inodes)) == 3 and result.links == 4


def test_symlink_mode_points_inside_the_root(tree) -> None:  # type: ignore[no-untyped-def]
    root = tree({"a": {"d/t.top": TOP}, "b": {"t.top": TOP}})
    before = snapshot(root)
    result = dedupe(root, apply=True, link="symlink", mode="local", progress=False)
    assert snapshot(root) == before
    assert result.applied is not None and result.applied.links == 1
    links = [p for p in (root / "a" / "d" / "t.top", root / "b" / "t.top") if p.is_symlink()]
    assert len(links) == 1
    target = os.readlink(links[0])
    assert not os.path.isabs(target)
    assert os.path.realpath(links[0]).startswith(str(root))


def test_reflink_falls_back_with_a_message_where_unsupported(tree) -> None:  # type: ignore[no-untyped-def]
    root = tree({"a": {"t.top": TOP}, "b": {"t.top": TOP}})
    before = snapshot(root)
    result = dedupe(root, apply=True, link="reflink", mode="local", progress=False)
    assert snapshot(root) == before
    applied = result.applied
    assert applied is not None and applied.links == 1
    if applied.link == "hardlink":  # ext4, tmpfs...: no FICLONE
        assert any("falling back to hardlinks" in m for m in applied.messages)
        assert ino(root / "a" / "t.top") == ino(root / "b" / "t.top")
    else:  # btrfs, XFS: a clone, its own inode, mode kept
        assert ino(root / "a" / "t.top") != ino(root / "b" / "t.top")


def test_dry_run_changes_nothing_and_lists_the_actions(tree) -> None:  # type: ignore[no-untyped-def]
    root = tree({"a": {"t.top": TOP}, "b": {"t.top": TOP}})
    before = snapshot(root)
    stats_before = {p: os.lstat(root / p) for p in ("a/t.top", "b/t.top")}
    result = dedupe(root, dry_run=True, mode="local", progress=False)
    assert snapshot(root) == before
    assert {p: os.lstat(root / p) for p in stats_before} == stats_before
    assert not (root / JOURNAL_DIRNAME).exists()
    applied = result.applied
    assert applied is not None and applied.dry_run and applied.links == 1
    actions = {p["action"] for p in applied.planned}
    assert actions == {"hardlink", "chmod a-w"}


def test_a_directory_swapped_for_a_symlink_is_never_followed(tree, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    root = tree({"a": {"sub/t.top": TOP}, "b": {"sub/t.top": TOP}})
    found = find(root)
    victim_dir = tmp_path / "victim"
    victim_dir.mkdir()
    (victim_dir / "t.top").write_bytes(TOP)
    victim = os.lstat(victim_dir / "t.top")
    # After the scan, b/sub becomes a symlink to a directory outside the root.
    os.rename(root / "b" / "sub", tmp_path / "moved-away")
    os.symlink(victim_dir, root / "b" / "sub")
    result = apply_groups(str(root), found.groups, ApplyOptions(), "run-swap")
    after = os.lstat(victim_dir / "t.top")
    assert (after.st_ino, after.st_nlink, after.st_mode) == (victim.st_ino, 1, victim.st_mode)
    assert result.links == 0 and result.skipped


def test_the_first_chunk_times_a_link_on_one_thread_and_chooses_the_threads(tree) -> None:  # type: ignore[no-untyped-def]
    root = tree({f"s{i:03d}": {"t.top": TOP} for i in range(41)})
    groups = find(root).groups
    fast = apply_groups(str(root), groups, ApplyOptions(chunk_actions=16, fast_link_s=10.0), "run-fast")
    assert fast.links == 40 and fast.threads == 1
    assert fast.link_s_one_thread is not None and 0 < fast.link_s_one_thread < 10.0
    # Four groups, one chunk each: the first is timed on the main thread, the rest use the threads.
    root = tree({f"s{i:03d}": {f"f{k}.itp": TOP * (k + 1) for k in range(4)} for i in range(11)})
    before = snapshot(root)
    seen_threads: set[str] = set()

    def slow(step: str) -> None:  # a filesystem where a link takes a millisecond
        if step == "replaced":
            seen_threads.add(threading.current_thread().name)
            time.sleep(0.001)

    slowed = apply_groups(str(root), find(root).groups, ApplyOptions(chunk_actions=16), "run-slow", hook=slow)
    assert snapshot(root) == before and slowed.links == 40 and slowed.groups_linked == 4
    assert slowed.threads == 4 and slowed.link_s_one_thread is not None and slowed.link_s_one_thread > 0.001
    assert "MainThread" in seen_threads and any(n.startswith("mdbatch-apply") for n in seen_threads)
    assert slowed.to_dict()["threads"] == 4 and slowed.to_dict()["link_us_one_thread"] > 1000


def test_threads_split_links_by_directory_and_crowded_directories_still_spread(tree) -> None:  # type: ignore[no-untyped-def]
    # 60 simulations with one copy each, plus one directory holding 90 copies: its slot is cut up.
    sims: dict[str, dict[str | bytes, bytes]] = {f"s{i:03d}": {"t.top": TOP} for i in range(60)}
    sims["crowd"] = {f"copy{j:03d}.top": TOP for j in range(90)}
    root = tree(sims)
    before = snapshot(root)
    result = apply_groups(str(root), find(root).groups, ApplyOptions(fast_link_s=0.0), "run-slots")
    assert snapshot(root) == before and result.threads == 4
    assert result.links == 149 and len({ino(p) for p in root.rglob("*.top")}) == 1
