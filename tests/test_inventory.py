"""Simulation fingerprints: the stat-only proof that a simulation's scan would be the recorded one."""

from __future__ import annotations

import os
import time

import pytest
import xxhash

from mdbatch.inventory import check_unchanged, fingerprint, stat_files
from mdbatch.scan import ScanOptions, scan_salt, scan_simulation

SALT = scan_salt(ScanOptions())


def scanned(result, index=0):
    sim = result.dest / result.simulations[index]
    return sim, scan_simulation(sim, result.dest)


def test_the_scan_and_the_stat_only_check_agree(make_campaign):
    result = make_campaign(12, seed=61, hostile=True, nested=True)
    for rel in result.simulations:
        sim = result.dest / rel
        scan = scan_simulation(sim, result.dest)
        assert scan.fingerprint is not None and len(scan.fingerprint) == 32
        same = check_unchanged(os.fspath(sim), SALT, scan.fingerprint)
        assert same is not None
        assert (same.status, same.files, same.bytes) == (scan.status, len(scan.files), scan.bytes)


def test_the_fingerprint_is_a_pinned_function_of_paths_and_stats():
    rows = [("a.txt", 3, 10, 11, 5, 7), (os.fsdecode(b"b\xff/c.gro"), 0, 1, 2, 3, 4)]
    assert fingerprint(rows, "salt") == fingerprint(list(rows), "salt")
    # The on-disk bytes of each path, then its stat fields: pinned so that catalogs stay comparable.
    assert fingerprint(rows, "salt") == xxhash.xxh3_128_hexdigest(b"salta.txt\x003,10,11,5,7\nb\xff/c.gro\x000,1,2,3,4\n")
    assert fingerprint(rows, "salt") == "6a01e8e1e8b104e7338ee503796fc1b0"
    assert fingerprint(rows, "other salt") != fingerprint(rows, "salt")
    for i in range(1, 6):  # every stat field counts
        moved = list(rows[0])
        moved[i] += 1
        assert fingerprint([tuple(moved), rows[1]], "salt") != fingerprint(rows, "salt")
    assert fingerprint([("a.txx", 3, 10, 11, 5, 7), rows[1]], "salt") != fingerprint(rows, "salt")
    assert fingerprint(rows[:1], "salt") != fingerprint(rows, "salt")


@pytest.mark.parametrize(
    "change",
    ["new_file", "removed_file", "same_size_same_mtime", "chmod", "renamed", "new_subdirectory_file", "replaced_by_symlink"],
)
def test_any_change_to_a_file_breaks_the_fingerprint(make_campaign, change):
    result = make_campaign(1, seed=62)
    sim, scan = scanned(result)
    target = sim / "topology.top"
    if change == "new_file":
        (sim / "notes.txt").write_text("x")
    elif change == "removed_file":
        target.unlink()
    elif change == "same_size_same_mtime":  # only the ctime moves
        st = target.stat()
        data = bytearray(target.read_bytes())
        data[0] ^= 1
        time.sleep(0.01)
        target.write_bytes(bytes(data))
        os.utime(target, ns=(st.st_atime_ns, st.st_mtime_ns))
    elif change == "chmod":
        os.chmod(target, 0o600)
    elif change == "renamed":
        target.rename(sim / "topology2.top")
    elif change == "new_subdirectory_file":
        (sim / "sub").mkdir()
        (sim / "sub" / "x.dat").write_bytes(b"1")
    elif change == "replaced_by_symlink":
        target.unlink()
        target.symlink_to(sim / "em.mdp")
    assert check_unchanged(os.fspath(sim), SALT, scan.fingerprint) is None


def test_what_the_scan_ignores_does_not_break_it(make_campaign):
    result = make_campaign(1, seed=63)
    sim, scan = scanned(result)
    (sim / "link").symlink_to("/etc")  # never followed, never inventoried
    (sim / "empty").mkdir()
    os.utime(sim)  # the directory's own times are not the files'
    assert check_unchanged(os.fspath(sim), SALT, scan.fingerprint) is not None
    rescanned = scan_simulation(sim, result.dest)
    assert rescanned.fingerprint == scan.fingerprint


def test_other_options_or_versions_salt_differently(make_campaign):
    result = make_campaign(1, seed=64)
    sim, scan = scanned(result)
    assert check_unchanged(os.fspath(sim), scan_salt(ScanOptions(max_input_bytes=10)), scan.fingerprint) is None
    assert scan_salt(ScanOptions(hash_files=False)) != SALT
    assert scan_salt(ScanOptions(io_threads=4)) == SALT  # how the scan reads does not change what it finds


def test_scans_that_stat_fields_cannot_reproduce_have_no_fingerprint(make_campaign, tmp_path):
    result = make_campaign(1, seed=65)
    sim = result.dest / result.simulations[0]
    assert scan_simulation(sim, result.dest, ScanOptions(hash_files=False)).fingerprint is None  # no digests
    gone = scan_simulation(tmp_path / "no-such-simulation", tmp_path)
    assert gone.fingerprint is None and [f.kind for f in gone.findings] == ["unreadable"]
    assert check_unchanged(os.fspath(tmp_path / "no-such-simulation"), SALT, "0" * 32) is None


def _sim_with_registry(make_campaign):
    result = make_campaign(6, seed=66)
    rel = next(r for r in result.simulations if (result.dest / r / ".analysis" / "metadata.json").is_file())
    return result, result.dest / rel


def _no_walk_problem(kind: str, item: str, detail: str) -> None:
    pytest.fail(f"walk reported {kind} {item}: {detail}")


def test_an_ordinary_fingerprint_is_paths_and_stats_only(make_campaign):
    # What the registry checks add to the fingerprint is empty for an ordinary simulation, so the
    # fingerprints recorded before they existed still hold (no re-read of a whole campaign).
    result, sim = _sim_with_registry(make_campaign)
    scan = scan_simulation(sim, result.dest)
    assert scan.fingerprint == fingerprint(stat_files(os.fspath(sim), _no_walk_problem), SALT)
    (sim / ".analysis" / "metadata.json").unlink()
    scan = scan_simulation(sim, result.dest)
    assert scan.fingerprint == fingerprint(stat_files(os.fspath(sim), _no_walk_problem), SALT)


@pytest.mark.timeout(30)
@pytest.mark.parametrize("then", ["directory", "fifo", "symlink", "analysis_symlink"])
def test_something_appearing_where_no_registry_was_breaks_the_fingerprint(make_campaign, tmp_path, then):
    # The walk inventories regular files only: an empty directory, a FIFO or a symlink at the
    # registry path adds no row, yet it turns "no registry" (extra_file findings) into registry_corrupt.
    result, sim = _sim_with_registry(make_campaign)
    registry = sim / ".analysis" / "metadata.json"
    registry.unlink()
    before = scan_simulation(sim, result.dest)
    assert {f.kind for f in before.findings} == {"extra_file"}
    if then == "directory":
        registry.mkdir()
    elif then == "fifo":
        os.mkfifo(registry)
    elif then == "symlink":
        registry.symlink_to(tmp_path / "absent.json")
    else:
        os.mkdir(tmp_path / "elsewhere")
        (sim / ".analysis").rename(tmp_path / "elsewhere" / ".analysis")
        (sim / ".analysis").symlink_to(tmp_path / "elsewhere" / ".analysis")
    assert check_unchanged(os.fspath(sim), SALT, before.fingerprint) is None
    after = scan_simulation(sim, result.dest)
    assert [f.kind for f in after.findings] == ["registry_corrupt"]
    assert after.fingerprint is not None and after.fingerprint != before.fingerprint
    assert check_unchanged(os.fspath(sim), SALT, after.fingerprint) is not None  # the two agree


def test_a_registry_symlink_made_anew_breaks_the_fingerprint(make_campaign, tmp_path):
    result, sim = _sim_with_registry(make_campaign)
    registry = sim / ".analysis" / "metadata.json"
    registry.unlink()
    registry.symlink_to(tmp_path / "a.json")
    scan = scan_simulation(sim, result.dest)
    assert check_unchanged(os.fspath(sim), SALT, scan.fingerprint) is not None
    registry.unlink()
    registry.symlink_to(tmp_path / "b.json")
    assert check_unchanged(os.fspath(sim), SALT, scan.fingerprint) is None


def test_the_registry_paths_agree_with_the_registry_module():
    from mdbatch.inventory import ANALYSIS_DIR, REGISTRY_PATH
    from mdbatch.registry import ANALYSIS_DIRNAME, REGISTRY_FILENAME

    assert (ANALYSIS_DIRNAME, f"{ANALYSIS_DIRNAME}/{REGISTRY_FILENAME}") == (ANALYSIS_DIR, REGISTRY_PATH)
