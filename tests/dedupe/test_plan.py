"""Staged duplicate finding: exact groups on real campaigns, stage accounting, reuse of audit digests."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from mdbatch.dedupe.digests import HEAD_TAIL, InventoryDigests, hash_batch, head_tail
from mdbatch.dedupe.listing import list_simulation
from mdbatch.dedupe.plan import find_duplicates
from mdbatch.discover import walk_root
from mdbatch.hashing import xxh3_128_hex

from .conftest import brute_force_groups


def groups_of(result) -> list[list[str]]:  # type: ignore[no-untyped-def]
    return sorted(sorted(g.paths, key=os.fsencode) for g in result.groups)


def test_groups_equal_brute_force_on_generated_campaign(make_campaign) -> None:  # type: ignore[no-untyped-def]
    camp = make_campaign(30, nested=True, hostile=True, seed=3)
    root = str(camp.dest)
    sims = list(walk_root(root))
    result = find_duplicates(root, sims)
    assert groups_of(result) == brute_force_groups(root, sims)
    assert result.groups, "generated campaigns share topology/.mdp bytes"
    # --hostile's near-duplicate checkpoints: same size, head and tail; only a whole read tells
    # variant 1 from the two variant-0 copies (a grouper trusting head+tail would merge all three).
    near = json.loads(camp.manifest_path.read_bytes())["near_duplicates"]
    twins, (odd,) = [[f"{e['simulation']}/{e['name']}" for e in near if e["variant"] == v] for v in (0, 1)]
    assert sorted(twins, key=os.fsencode) in groups_of(result)
    assert not any(odd in g.paths for g in result.groups)
    # Every generated simulation of one (type, parametrization) shares topology.top and the .mdp files.
    assert any(all(p.endswith("/topology.top") for p in g.paths) for g in result.groups)
    for g in result.groups:
        assert g.paths == sorted(g.paths, key=os.fsencode)
        assert g.digest == xxh3_128_hex((Path(root) / g.paths[0]).read_bytes())
    stats = result.stats
    assert stats.files == camp.files
    assert stats.size_candidates <= stats.files
    assert stats.partial_candidates <= stats.inode_candidates <= stats.size_candidates
    assert result.duplicate_files == sum(len(g) for g in brute_force_groups(root, sims))


def test_stages_shrink_and_whole_reads_only_for_large_collisions(tree) -> None:  # type: ignore[no-untyped-def]
    big = os.urandom(HEAD_TAIL * 3)
    same_head_tail = big[:HEAD_TAIL] + os.urandom(HEAD_TAIL) + big[-HEAD_TAIL:]
    root = tree(
        {
            "s1": {"a.bin": big, "unique.txt": b"only here", "small.top": b"topology\n"},
            "s2": {"a.bin": big, "b.bin": same_head_tail, "small.top": b"topology\n"},
            "s3": {"c.bin": os.urandom(HEAD_TAIL * 3)},  # same size, different head: dropped at head+tail
        }
    )
    sims = list(walk_root(str(root)))
    result = find_duplicates(str(root), sims)
    assert groups_of(result) == [["s1/a.bin", "s2/a.bin"], ["s1/small.top", "s2/small.top"]]
    st = result.stats
    # 4 files of size 3*HEAD_TAIL share a size; c.bin differs at the head, so 3 survive head+tail;
    # only those are read whole, and b.bin is told apart there.
    assert st.full_hashed == 3
    assert st.full_hashed_bytes == 3 * len(big)


def test_empty_min_size_and_files_outside_simulations_are_ignored(tree) -> None:  # type: ignore[no-untyped-def]
    root = tree({"s1": {"empty": b"", "tiny": b"ab", "mid": b"x" * 100}, "s2": {"empty": b"", "tiny": b"ab", "mid": b"x" * 100}})
    (root / "outside.txt").write_bytes(b"x" * 100)  # not in any simulation directory
    sims = list(walk_root(str(root)))
    all_groups = find_duplicates(str(root), sims)
    assert groups_of(all_groups) == [["s1/mid", "s2/mid"], ["s1/tiny", "s2/tiny"]]
    assert all_groups.stats.empty_or_small >= 2
    from mdbatch.dedupe.plan import FindOptions

    filtered = find_duplicates(str(root), sims, options=FindOptions(min_size=3))
    assert groups_of(filtered) == [["s1/mid", "s2/mid"]]


def test_hardlinked_paths_count_once_and_are_not_reread(tree) -> None:  # type: ignore[no-untyped-def]
    root = tree({"s1": {"a.dat": b"A" * 1000, "c.dat": b"C" * 1000}, "s2": {"a.dat": b"A" * 1000}})
    os.link(root / "s1" / "a.dat", root / "s1" / "a-link.dat")
    os.link(root / "s1" / "c.dat", root / "s2" / "c.dat")
    sims = list(walk_root(str(root)))
    result = find_duplicates(str(root), sims)
    groups = {tuple(g.paths): g for g in result.groups}
    a = groups[("s1/a-link.dat", "s1/a.dat", "s2/a.dat")]
    assert a.inodes == 2 and a.reclaimable_bytes == 1000
    c = groups[("s1/c.dat", "s2/c.dat")]  # one inode already: a group, nothing left to reclaim
    assert c.inodes == 1 and c.reclaimable_bytes == 0
    assert result.reclaimable_bytes == 1000


def test_symlinks_are_never_followed_and_odd_names_round_trip(tree, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "x.top").write_bytes(b"same bytes\n")
    root = tree({"s1": {b"caf\xe9.top": b"same bytes\n"}, "s2": {"x.top": b"same bytes\n"}})
    os.symlink(outside, root / "s2" / "escape")
    os.symlink(root / "s2" / "x.top", root / "s1" / "link.top")
    sims = list(walk_root(str(root)))
    result = find_duplicates(str(root), sims)
    assert len(result.groups) == 1
    paths = result.groups[0].paths
    assert [os.fsencode(p) for p in paths] == [b"s1/caf\xe9.top", b"s2/x.top"]
    assert result.groups[0].to_json()["paths"] == ["s1/caf\\xe9.top", "s2/x.top"]


def test_status_comes_from_top_level_names(tree) -> None:  # type: ignore[no-untyped-def]
    root = tree({"a": {"f": b"1"}, "b": {"f": b"1"}, "c": {"f": b"1"}}, statuses={"b": "production", "c": "build"})
    assert list_simulation(str(root / "a"), str(root))[0] == "completed"
    assert list_simulation(str(root / "b"), str(root))[0] == "production"
    result = find_duplicates(str(root), list(walk_root(str(root))))
    assert result.stats.status == {"build": 1, "completed": 1, "production": 1}
    statuses = {m.rel.split("/")[0]: m.status for g in result.groups for m in g.members}
    assert statuses == {"a": "completed", "b": "production", "c": "build"}


def test_a_file_changed_after_listing_is_reported_not_grouped(tree) -> None:  # type: ignore[no-untyped-def]
    root = tree({"s1": {"f.dat": b"z" * 500}, "s2": {"f.dat": b"z" * 500}})
    item = ("s1/f.dat", 500, 0, 0, 0, 0)  # a stat the file does not have
    assert head_tail(str(root / "s1/f.dat"), item)[0] == 2  # CHANGED
    outcomes = hash_batch([item], str(root), full=True)
    assert outcomes[0][0] == 2


def test_reuses_audit_digests_and_matches_the_audit_duplicate_summary(make_campaign, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    from mdbatch.auditing import audit
    from mdbatch.catalog import open_catalog

    camp = make_campaign(16, seed=5)
    root = str(camp.dest)
    url = f"sqlite:///{tmp_path / 'cat.db'}"
    summary = audit(root, db=url, progress=False).summary
    catalog = open_catalog(url)
    try:
        digests = InventoryDigests.from_catalog(catalog, root)
    finally:
        catalog.close()
    sims = list(walk_root(root))
    result = find_duplicates(root, sims, digests=digests)
    assert result.stats.reused_digests > 0
    assert result.stats.partial_hashed == 0 and result.stats.full_hashed == 0  # nothing re-read
    assert groups_of(result) == brute_force_groups(root, sims)
    assert summary["duplicates"] == {
        "groups": len(result.groups),
        "files": result.duplicate_files,
        "reclaimable_bytes": result.reclaimable_bytes,
    }


@pytest.mark.integration
def test_dask_cluster_gives_the_same_groups(make_campaign) -> None:  # type: ignore[no-untyped-def]
    from mdbatch.dedupe import dedupe
    from mdbatch.engine import ClusterOptions

    camp = make_campaign(20, seed=9)
    local = dedupe(camp.dest, mode="local", progress=False)
    fanned = dedupe(camp.dest, mode="cluster", cluster=ClusterOptions(workers=2), progress=False)
    assert [g.to_json() for g in fanned.groups] == [g.to_json() for g in local.groups]
    assert fanned.summary["workers"] == 2
