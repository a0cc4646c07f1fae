"""Discovery: root walks at any depth, summary YAML, CSV; never following symlinks or leaving the root."""

from __future__ import annotations

import os

import pytest

from mdbatch.discover import DiscoveryStats, discover, from_csv, from_summary_yaml, walk_root
from mdbatch.errors import InputError


def test_walk_finds_nested_simulations_in_sorted_order(make_campaign):
    result = make_campaign(25, seed=1, nested=True, hostile=True)
    found = [os.path.relpath(p, result.dest) for p in walk_root(result.dest)]
    assert sorted(found) == sorted(result.simulations)
    assert found == sorted(found, key=lambda p: p.split(os.sep))


def test_threaded_walk_finds_the_same_simulations(make_campaign):
    result = make_campaign(25, seed=3, nested=True, hostile=True)
    stats = DiscoveryStats()
    found = {os.path.relpath(p, result.dest) for p in walk_root(result.dest, stats, threads=4)}
    assert found == set(result.simulations) and stats.simulations == len(found)


def test_walk_does_not_follow_symlinks_or_descend_into_simulations(make_campaign, tmp_path):
    result = make_campaign(5, seed=2)
    other = make_campaign(3, seed=9)
    os.symlink(other.dest, result.dest / "linked_campaign")
    os.symlink(result.dest, result.dest / "self_loop")
    inner = result.dest / result.simulations[0] / "nested_copy"
    os.mkdir(inner)
    (inner / "build.yaml").write_text("x: 1\n")
    found = {os.path.relpath(p, result.dest) for p in walk_root(result.dest)}
    assert found == set(result.simulations)


def test_markers(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "build.yaml").write_text("x: 1\n")
    (tmp_path / "b" / ".analysis").mkdir(parents=True)
    (tmp_path / "b" / ".analysis" / "metadata.json").write_text("{}")
    (tmp_path / "c").mkdir()
    (tmp_path / "c" / "metadata.json").write_text('{"hash": "ABC"}')
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "metadata.json").write_text('{"no": "hash"}')
    (tmp_path / "e").mkdir()
    (tmp_path / "e" / "metadata.json").write_text("{broken")
    (tmp_path / "f").mkdir()
    (tmp_path / "f" / "f.yaml").write_text("x: 1\n")
    found = sorted(os.path.basename(p) for p in walk_root(tmp_path))
    assert found == ["a", "b", "c", "f"]


def test_summary_yaml_and_csv_inputs(make_campaign, tmp_path):
    result = make_campaign(6, seed=4)
    listed = result.simulations[:4]
    summary = tmp_path / "summary.yaml"
    summary.write_text("system_directory:\n" + "".join(f"  - {result.dest / p}\n" for p in listed) + "hash: []\n")
    stats = DiscoveryStats()
    root, stream = discover(summary, csv_root=result.dest, stats=stats)
    assert sorted(stream) == sorted(str(result.dest / p) for p in listed)
    table = tmp_path / "input.csv"
    again = [f"{listed[0]}/", str(result.dest / listed[1])]  # the same simulations, spelled differently
    table.write_text("directory,other\n" + "".join(f"{p},x\n" for p in [*listed, *again]) + "../../etc,y\nmissing_dir,z\n")
    stats = DiscoveryStats()
    got = sorted(from_csv(table, result.dest, stats))
    assert got == sorted(str(result.dest / p) for p in listed)
    assert stats.outside_root == [str(result.dest / "../../etc")]
    assert stats.missing == [str(result.dest / "missing_dir")]
    assert stats.repeated == [str(result.dest / listed[0]), str(result.dest / listed[1])] and stats.simulations == 4


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("s.yaml", "system_directory: 5\n", "no 'system_directory'"),
        ("s.yaml", "a: [unclosed\n", "cannot read summary YAML"),
        ("s.csv", "dir\nx\n", "no 'directory' column"),
        ("s.txt", "x", "neither a directory"),
    ],
)
def test_bad_inputs_are_clear_errors(tmp_path, name, content, message):
    path = tmp_path / name
    path.write_text(content)
    with pytest.raises(InputError, match=message):
        _, stream = discover(path)
        list(stream)


def test_missing_root_is_an_error(tmp_path):
    with pytest.raises(InputError, match="does not exist"):
        discover(tmp_path / "nope")


def test_summary_yaml_relative_paths_resolve_beside_the_yaml(make_campaign):
    result = make_campaign(3, seed=6)
    summary = result.dest / "summary.yaml"
    summary.write_text("system_directory:\n" + "".join(f"  - {p}\n" for p in result.simulations))
    assert sorted(from_summary_yaml(summary)) == sorted(str(result.dest / p) for p in result.simulations)
