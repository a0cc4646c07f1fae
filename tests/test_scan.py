"""The per-simulation scan on real generated simulations: every finding kind, no false positives."""

from __future__ import annotations

import base64
import hashlib
import json
import multiprocessing
import os
import shutil
import stat
import tempfile
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import xxhash

from mdbatch import findings as fk
from mdbatch.hashing import SMALL_FILE_LIMIT, digest_file
from mdbatch.scan import ScanOptions, scan_simulation, simulation_status

from .conftest import IS_ROOT, expected


def scan_all(result, **kw):
    return [scan_simulation(result.dest / rel, result.dest, **kw) for rel in result.simulations]


def found(scans):
    return {(f.simulation, f.kind, f.item) for s in scans for f in s.findings}


def test_every_injected_fault_is_found_and_nothing_else(make_campaign):
    result = make_campaign(40, seed=3, faults=True, nested=True, hostile=True)
    scans = scan_all(result)
    assert found(scans) == expected(result)
    kinds = {k for _, k, _ in expected(result)}
    # Every kind the generator can inject statically is covered (unreadable needs a non-root user;
    # changed_during_scan and silent_corruption need a live writer and a cache: tested below; the
    # lineage kinds are injected one by one in tests/test_lineage.py).
    assert kinds >= set(fk.KINDS) - {fk.CHANGED_DURING_SCAN, fk.UNREADABLE, fk.SILENT_CORRUPTION, *fk.LINEAGE_KINDS}


def test_clean_campaign_has_no_findings(make_campaign):
    result = make_campaign(30, seed=11, hostile=True)
    scans = scan_all(result)
    assert [f for s in scans for f in s.findings] == []
    assert sum(len(s.files) for s in scans) == result.files
    assert sum(s.bytes for s in scans) == result.bytes


def test_identity_status_and_registry_facts(make_campaign):
    result = make_campaign(16, seed=5)
    manifest = json.loads(result.manifest_path.read_text())
    by_dir = {s["dir"]: s for s in manifest["simulations"]}
    for scan in scan_all(result):
        sim = by_dir[scan.simulation]
        assert scan.hash == sim["hash"]
        assert len(scan.hash) == 40 and scan.hash == scan.hash.upper()
        assert scan.status == sim["status"]
        assert scan.simulation_type == sim["simulation_type"]
        assert scan.engine == "gromacs"
        assert scan.input_data_type == "yaml" and scan.input_data
        for a in scan.analyses:
            assert a.status == "ok" and a.file_rows == a.registered_rows and a.file_columns == a.registered_columns


def test_inventory_digests_match_reference_hashes(make_campaign):
    result = make_campaign(6, seed=2)
    for scan in scan_all(result):
        base = result.dest / scan.simulation
        for entry in scan.files:
            data = (base / entry.path).read_bytes()
            assert entry.size == len(data)
            assert entry.xxh3_128 == xxhash.xxh3_128_hexdigest(data)
        art = [f for f in scan.files if f.path.startswith(".analysis/artifacts/")]
        for entry in art:
            assert entry.sha256 == hashlib.sha256((base / entry.path).read_bytes()).hexdigest()


def test_known_digest_pinned(tmp_path):
    (tmp_path / "abc").write_bytes(b"abc")
    d = digest_file(str(tmp_path / "abc"), want_sha256=True)
    assert d.xxh3_128 == "06b05ab6733a618578af5f94892f3950"  # xxhsum -H2
    assert d.sha256 == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"


def test_large_file_streams_with_constant_buffer(tmp_path):
    data = os.urandom(3 * SMALL_FILE_LIMIT + 12345) * 4  # > 12 MiB: many 128 KiB chunks, a partial last one
    (tmp_path / "big.xtc").write_bytes(data)
    d = digest_file(str(tmp_path / "big.xtc"), want_sha256=True, keep_small=True)
    assert d.data is None and not d.changed
    assert d.xxh3_128 == xxhash.xxh3_128_hexdigest(data)
    assert d.sha256 == hashlib.sha256(data).hexdigest()


def test_status_rule():
    assert simulation_status({"prod.gro", "prod.xtc"}) == "completed"
    assert simulation_status({"prod.xtc", "min.gro"}) == "production"
    assert simulation_status({"min.gro", "nvt.gro", "npt.gro"}) == "equilibrated"
    assert simulation_status({"min.gro", "nvt.gro"}) == "build"
    assert simulation_status(set()) == "build"


def _one_clean_sim(make_campaign):
    result = make_campaign(8, seed=7)
    rel = next(
        r
        for r in result.simulations
        if (result.dest / r / ".analysis" / "metadata.json").exists()
        and json.loads((result.dest / r / ".analysis" / "metadata.json").read_text())["analyses"]
    )
    return result, result.dest / rel


def test_identity_falls_back_to_yaml_then_directory(make_campaign):
    result, sim = _one_clean_sim(make_campaign)
    expected_hash = scan_simulation(sim, result.dest).hash
    (sim / "metadata.json").unlink()
    assert scan_simulation(sim, result.dest).hash == expected_hash  # from <HASH>.yaml
    renamed = sim.parent / "plain_dir"
    sim.rename(renamed)
    for y in renamed.glob("*.yaml"):
        y.unlink()
    assert scan_simulation(renamed, result.dest).hash == "plain_dir"


def test_symlinks_are_never_followed(make_campaign, tmp_path):
    result, sim = _one_clean_sim(make_campaign)
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.dat").write_bytes(b"x" * 100)
    os.symlink(outside, sim / "escape")
    os.symlink(".", sim / "loop")
    os.symlink(sim / "loop", sim / "loop2")
    os.symlink("/nonexistent/target", sim / "dangling")
    scan = scan_simulation(sim, result.dest)
    assert scan.findings == ()
    assert not any("secret" in f.path or f.path.startswith(("escape", "loop", "dangling")) for f in scan.files)


def test_registry_artifact_symlink_is_missing_not_followed(make_campaign, tmp_path):
    result, sim = _one_clean_sim(make_campaign)
    reg = json.loads((sim / ".analysis" / "metadata.json").read_text())
    name, entry = next(iter(reg["artifacts"].items()))
    target = sim / ".analysis" / entry["files"][0]
    data = target.read_bytes()
    (tmp_path / "elsewhere").write_bytes(data)
    target.unlink()
    os.symlink(tmp_path / "elsewhere", target)
    scan = scan_simulation(sim, result.dest)
    assert {(f.kind, f.item) for f in scan.findings} == {(fk.ARTIFACT_MISSING_FILE, f"{name}:{entry['files'][0]}")}


def test_non_utf8_and_quoted_names(make_campaign):
    result, sim = _one_clean_sim(make_campaign)
    raw = os.fsencode(str(sim)) + b"/caf\xe9 'x\";--.dat"
    with open(raw, "wb") as handle:
        handle.write(b"hostile")
    scan = scan_simulation(sim, result.dest)
    assert scan.findings == ()
    entry = next(f for f in scan.files if f.path_raw is not None)
    assert entry.path_raw == b"caf\xe9 'x\";--.dat"
    assert entry.path == "caf\\xe9 'x\";--.dat"
    entry.path.encode("utf-8")  # storable as text


@pytest.mark.skipif(not hasattr(os, "setuid"), reason="needs POSIX user switching")
def test_unreadable_file_is_a_finding(make_campaign):
    result, sim = _one_clean_sim(make_campaign)
    (sim / "nvt.mdp").chmod(0)
    if not IS_ROOT:
        scan = scan_simulation(sim, result.dest)
    else:
        # Root reads anything: scan as 'nobody' in a child process to get a real EACCES, on a copy
        # in a directory 'nobody' may enter (pytest's tmp dirs are private to root).
        public = Path(tempfile.mkdtemp(prefix="mdbatch-unreadable-"))
        try:
            public.chmod(0o755)
            copy = public / sim.name
            shutil.copytree(sim, copy, symlinks=True)
            for p in [copy, *copy.rglob("*")]:
                if not p.is_symlink() and p.name != "nvt.mdp":
                    p.chmod(p.stat().st_mode | stat.S_IROTH | (stat.S_IXOTH if p.is_dir() else 0))
            (copy / "nvt.mdp").chmod(0)
            ctx = multiprocessing.get_context("fork")
            queue = ctx.Queue()
            proc = ctx.Process(target=_scan_as_nobody, args=(str(copy), str(public), queue))
            proc.start()
            scan = queue.get(timeout=60)
            proc.join(10)
        finally:
            shutil.rmtree(public)
    kinds = {(f.kind, f.item) for f in scan.findings}
    assert kinds == {(fk.UNREADABLE, "nvt.mdp")}
    assert any(f.path == "nvt.mdp" and f.xxh3_128 is None for f in scan.files)
    assert scan.fingerprint is None  # an audit must scan it again, not keep it


def _scan_as_nobody(sim: str, root: str, queue) -> None:  # pragma: no cover - runs in a child
    os.setgid(65534)
    os.setuid(65534)
    queue.put(scan_simulation(sim, root))


def test_file_changing_during_scan_is_reported(tmp_path, make_campaign):
    result, sim = _one_clean_sim(make_campaign)
    big = sim / "prod.trr"
    big.write_bytes(os.urandom(64 << 20))
    ctx = multiprocessing.get_context("fork")
    stop = ctx.Event()
    writer = ctx.Process(target=_keep_writing, args=(str(big), stop))
    writer.start()
    try:
        time.sleep(0.2)
        scan = None
        for _ in range(20):
            scan = scan_simulation(sim, result.dest)
            if scan.findings:
                break
    finally:
        stop.set()
        writer.join(10)
    assert {(f.kind, f.item) for f in scan.findings} == {(fk.CHANGED_DURING_SCAN, "prod.trr")}
    assert next(f for f in scan.files if f.path == "prod.trr").xxh3_128 is None
    assert scan.fingerprint is None


def _keep_writing(path: str, stop) -> None:  # pragma: no cover - runs in a child
    n = 0
    with open(path, "r+b") as handle:
        while not stop.is_set():
            handle.seek((n * 4096) % (32 << 20))
            handle.write(os.urandom(4096))
            handle.flush()
            n += 1


def test_missing_simulation_directory_is_a_finding(tmp_path):
    scan = scan_simulation(tmp_path / "gone", tmp_path)
    assert [(f.kind, f.item) for f in scan.findings] == [(fk.UNREADABLE, ".")]


def test_registry_corrupt_variants(make_campaign):
    result, sim = _one_clean_sim(make_campaign)
    reg = sim / ".analysis" / "metadata.json"
    for payload in (
        b"",
        b"\xff\xfe{}",
        b"[1, 2]",
        b'{"analyses": []}',
        b'{"analyses": {"a": {"filename": "a.parquet", "row_count": true, "columns": []}}}',
    ):
        reg.write_bytes(payload)
        kinds = [(f.kind, f.item) for f in scan_simulation(sim, result.dest).findings]
        assert kinds == [(fk.REGISTRY_CORRUPT, ".analysis/metadata.json")], payload


def test_pandas_index_columns_are_not_data_columns(make_campaign):
    import pandas as pd

    result, sim = _one_clean_sim(make_campaign)
    reg_path = sim / ".analysis" / "metadata.json"
    reg = json.loads(reg_path.read_text())
    df = pd.DataFrame({"time_ps": [1.0, 2.0, 3.0], "value": [4.0, 5.0, 6.0]}, index=[10, 20, 30])
    df.to_parquet(sim / ".analysis" / "indexed.parquet")
    reg["analyses"]["indexed"] = {
        "filename": "indexed.parquet",
        "row_count": 3,
        "columns": ["time_ps", "value"],
        "created_at": "2025-01-01T00:00:00+00:00",
        "updated_at": "2025-01-01T00:00:00+00:00",
        "extras": {},
    }
    reg_path.write_text(json.dumps(reg, indent=2))
    assert scan_simulation(sim, result.dest).findings == ()


def test_hash_files_off_reads_only_what_checks_need(make_campaign):
    result, sim = _one_clean_sim(make_campaign)
    scan = scan_simulation(sim, result.dest, ScanOptions(hash_files=False))
    assert scan.findings == ()
    assert all(f.xxh3_128 is None for f in scan.files)
    assert any(f.sha256 for f in scan.files)


def test_large_parquet_footer_read_from_file(make_campaign):
    result, sim = _one_clean_sim(make_campaign)
    reg_path = sim / ".analysis" / "metadata.json"
    reg = json.loads(reg_path.read_text())
    n = 300_000
    table = pa.table(
        {
            "frame": pa.array(range(n), pa.int64()),
            "noise": pa.array(os.urandom(n * 8)).cast(pa.binary()) if False else pa.array([float(i) for i in range(n)]),
        }
    )
    pq.write_table(table, sim / ".analysis" / "big.parquet", compression="none")
    assert (sim / ".analysis" / "big.parquet").stat().st_size > SMALL_FILE_LIMIT
    reg["analyses"]["big"] = {
        "filename": "big.parquet",
        "row_count": n + 1,
        "columns": ["frame", "noise"],
        "created_at": "2025-01-01T00:00:00+00:00",
        "updated_at": "2025-01-01T00:00:00+00:00",
        "extras": {},
    }
    reg_path.write_text(json.dumps(reg, indent=2))
    kinds = [(f.kind, f.item) for f in scan_simulation(sim, result.dest).findings]
    assert kinds == [(fk.ROW_COUNT_MISMATCH, "big")]


def test_scan_of_copied_simulation_is_identical_but_for_location(make_campaign, tmp_path):
    result, sim = _one_clean_sim(make_campaign)
    copy = tmp_path / "copy" / sim.name
    shutil.copytree(sim, copy, symlinks=True)
    a, b = scan_simulation(sim, result.dest), scan_simulation(copy, tmp_path / "copy")
    assert a.hash == b.hash and a.status == b.status
    assert [(f.path, f.size, f.xxh3_128) for f in a.files] == [(f.path, f.size, f.xxh3_128) for f in b.files]


def cache_of(scan):
    from mdbatch.hashcache import CacheEntry

    return {f.path: CacheEntry(f.device, f.inode, f.size, f.mtime_ns, f.ctime_ns, f.xxh3_128, f.sha256, f.facts) for f in scan.files}


def test_unchanged_files_come_from_the_cache(make_campaign):
    result, sim = _one_clean_sim(make_campaign)
    first = scan_simulation(sim, result.dest)
    assert any(f.facts for f in first.files if f.path.endswith(".parquet"))
    second = scan_simulation(sim, result.dest, cache=cache_of(first))
    assert second.findings == ()
    strip = lambda s: [(f.path, f.size, f.xxh3_128, f.sha256, f.facts) for f in s.files]  # noqa: E731
    assert strip(second) == strip(first)
    # Every file comes from the cache, the identity inputs (metadata.json, build YAML) and the
    # registry included: their bytes are kept in the cache's facts.
    assert all(f.cached for f in second.files)
    kept = {f.path: f.facts for f in first.files if f.path in ("metadata.json", ".analysis/metadata.json") or f.path.endswith(".yaml")}
    assert len(kept) == 3
    for path, facts in kept.items():
        assert base64.b64decode(json.loads(facts)["bytes"]) == (sim / path).read_bytes()
    same = lambda s: (s.hash, s.simulation_type, s.engine, s.parametrization, s.status, s.input_data, s.analyses, s.artifacts)  # noqa: E731
    assert same(second) == same(first)


@pytest.mark.parametrize("name", ["metadata.json", ".analysis/metadata.json"])
def test_a_cached_identity_or_registry_file_is_read_again_once_its_stat_moves(make_campaign, name):
    result, sim = _one_clean_sim(make_campaign)
    first = scan_simulation(sim, result.dest)
    target = sim / name
    st = target.stat()
    raw = target.read_bytes()
    if name == "metadata.json":  # same size, new engine: only ctime tells
        engine = json.loads(raw)["engine"]
        new = raw.replace(f'"{engine}"'.encode(), f'"{"x" * len(engine)}"'.encode(), 1)
    else:
        new = raw.replace(b'"analyses"', b'"analyzes"')
    assert len(new) == st.st_size
    time.sleep(0.01)
    target.write_bytes(new)
    os.utime(target, ns=(st.st_atime_ns, st.st_mtime_ns))
    second = scan_simulation(sim, result.dest, cache=cache_of(first))
    entry = next(f for f in second.files if f.path == name)
    assert not entry.cached and entry.xxh3_128 == xxhash.xxh3_128_hexdigest(new)
    if name == "metadata.json":
        assert second.engine == "x" * len(engine) != first.engine
    else:
        assert first.analyses and second.analyses != first.analyses  # the registry was parsed anew


def test_cached_bytes_that_do_not_decode_are_read_again(make_campaign):
    result, sim = _one_clean_sim(make_campaign)
    first = scan_simulation(sim, result.dest)
    cache = cache_of(first)
    for name in ("metadata.json", ".analysis/metadata.json"):
        cache[name] = cache[name]._replace(facts='{"bytes": "not base64!"}')
    second = scan_simulation(sim, result.dest, cache=cache)
    assert {f.path for f in second.files if not f.cached} == {"metadata.json", ".analysis/metadata.json"}
    assert second.findings == () and second.hash == first.hash and second.analyses == first.analyses


def test_cache_never_outlives_a_change(make_campaign):
    result, sim = _one_clean_sim(make_campaign)
    first = scan_simulation(sim, result.dest)
    target = sim / "topology.top"
    st = target.stat()
    data = bytearray(target.read_bytes())
    data[10] ^= 0xFF
    time.sleep(0.01)
    target.write_bytes(bytes(data))
    os.utime(target, ns=(st.st_atime_ns, st.st_mtime_ns))  # same size, same mtime; ctime moved
    second = scan_simulation(sim, result.dest, cache=cache_of(first))
    entry = next(f for f in second.files if f.path == "topology.top")
    assert not entry.cached and entry.xxh3_128 == xxhash.xxh3_128_hexdigest(bytes(data))


def test_cached_parquet_facts_still_drive_the_checks(make_campaign):
    result, sim = _one_clean_sim(make_campaign)
    first = scan_simulation(sim, result.dest)
    reg_path = sim / ".analysis" / "metadata.json"
    reg = json.loads(reg_path.read_text())
    name = sorted(reg["analyses"])[0]
    reg["analyses"][name]["row_count"] += 1
    reg_path.write_text(json.dumps(reg, indent=2))
    second = scan_simulation(sim, result.dest, cache=cache_of(first))
    assert [(f.kind, f.item) for f in second.findings] == [(fk.ROW_COUNT_MISMATCH, name)]
    assert next(f for f in second.files if f.path == f".analysis/{name}.parquet").cached


def test_verify_full_reports_silent_corruption(make_campaign):
    result, sim = _one_clean_sim(make_campaign)
    first = scan_simulation(sim, result.dest)
    cache = cache_of(first)
    # The cache recorded other bytes for a file whose stat has not moved since: silent corruption.
    cache["system.pdb"] = cache["system.pdb"]._replace(xxh3_128="0" * 32)
    trusting = scan_simulation(sim, result.dest, cache=cache)
    assert trusting.findings == ()
    full = scan_simulation(sim, result.dest, ScanOptions(verify="full"), cache=cache)
    assert [(f.kind, f.item) for f in full.findings] == [(fk.SILENT_CORRUPTION, "system.pdb")]
    assert not any(f.cached for f in full.files)


# -- a registry that is absent, or not a regular file (issue 13, item 4) ------------------------------

REG = ".analysis/metadata.json"
NO_REGISTRY = "parquet file in .analysis, which has no registry (.analysis/metadata.json is absent)"


def _loose_parquets(sim: Path) -> list[str]:
    """The parquet files at the top of `.analysis`, as extra_file items, from the registry's own list."""
    reg = json.loads((sim / REG).read_text())
    return sorted(f".analysis/{e['filename']}" for e in reg["analyses"].values())


def test_a_missing_registry_makes_every_parquet_an_extra_file(make_campaign):
    result, sim = _one_clean_sim(make_campaign)
    parquets = _loose_parquets(sim)
    assert len(parquets) >= 2
    (sim / REG).unlink()
    # Neither a non-parquet file in .analysis nor a parquet below it is an analysis MDFactory registers.
    (sim / ".analysis" / "notes.txt").write_text("x")
    (sim / ".analysis" / "artifacts" / "nested.parquet").write_bytes(b"PAR1")
    scan = scan_simulation(sim, result.dest)
    assert [(f.kind, f.item, f.detail) for f in scan.findings] == [(fk.EXTRA_FILE, p, NO_REGISTRY) for p in parquets]
    assert scan.analyses == () and scan.artifacts == ()
    assert scan.fingerprint is not None  # nothing unreadable: an unchanged re-audit may keep it


def test_an_analysis_directory_without_registry_or_parquet_is_clean(make_campaign):
    # Artifacts are only known through a registry that lists them (as MDFactory's check_integrity
    # does), so an .analysis holding artifacts alone, or nothing, has nothing to check.
    result, sim = _one_clean_sim(make_campaign)
    for parquet in (sim / ".analysis").glob("*.parquet"):
        parquet.unlink()
    (sim / REG).unlink()
    assert list((sim / ".analysis" / "artifacts").rglob("*.*"))
    assert scan_simulation(sim, result.dest).findings == ()
    shutil.rmtree(sim / ".analysis")
    (sim / ".analysis").mkdir()
    assert scan_simulation(sim, result.dest).findings == ()


def _make_fifo(path: Path) -> None:
    os.mkfifo(path)


def _make_socket(path: Path) -> None:
    import socket

    cwd = os.getcwd()
    os.chdir(path.parent)  # AF_UNIX paths are limited to 108 bytes: bind a relative one
    try:
        with socket.socket(socket.AF_UNIX) as sock:
            sock.bind(path.name)
    finally:
        os.chdir(cwd)


def _replace_registry(sim: Path, what: str, tmp_path: Path) -> str:
    """Put `what` where the registry (or .analysis) was; return the registry_corrupt detail expected."""
    reg = sim / REG
    data = reg.read_bytes()
    reg.unlink()
    if what == "directory":
        reg.mkdir()
        (reg / "inside.json").write_bytes(data)  # its content is inventoried, never read as a registry
        return "registry is a directory, not a regular file"
    if what == "fifo":
        _make_fifo(reg)
        return "registry is a FIFO, not a regular file"
    if what == "socket":
        _make_socket(reg)
        return "registry is a socket, not a regular file"
    if what in ("symlink inside", "symlink outside", "dangling symlink"):
        target = {
            "symlink inside": sim / ".analysis" / "real.json",
            "symlink outside": tmp_path / "real.json",
            "dangling symlink": tmp_path / "absent.json",
        }[what]
        if what != "dangling symlink":
            target.write_bytes(data)
        reg.symlink_to(target)
        return "registry is a symbolic link, not a regular file (symlinks are never followed)"
    if what == ".analysis symlink":
        elsewhere = tmp_path / "elsewhere"
        (sim / ".analysis").rename(elsewhere)
        (elsewhere / "metadata.json").write_bytes(data)
        (sim / ".analysis").symlink_to(elsewhere)
        return ".analysis is a symbolic link, not a directory (symlinks are never followed)"
    if what == ".analysis file":
        shutil.rmtree(sim / ".analysis")
        (sim / ".analysis").write_bytes(data)
        return ".analysis is a regular file, not a directory"
    raise AssertionError(what)


NOT_A_FILE = ["directory", "fifo", "socket", "symlink inside", "symlink outside", "dangling symlink", ".analysis symlink", ".analysis file"]


@pytest.mark.timeout(30)  # a FIFO opened for reading without O_NONBLOCK would block forever
@pytest.mark.parametrize("what", NOT_A_FILE)
def test_a_registry_that_is_not_a_regular_file_is_corrupt(make_campaign, tmp_path, what):
    result, sim = _one_clean_sim(make_campaign)
    detail = _replace_registry(sim, what, tmp_path)
    for options in (ScanOptions(), ScanOptions(hash_files=False)):
        scan = scan_simulation(sim, result.dest, options)
        assert [(f.kind, f.item, f.detail) for f in scan.findings] == [(fk.REGISTRY_CORRUPT, REG, detail)], options
        assert scan.analyses == () and scan.artifacts == ()
    assert scan_simulation(sim, result.dest).fingerprint is not None


@pytest.mark.timeout(30)
def test_a_cached_registry_replaced_by_a_directory_is_not_taken_from_the_cache(make_campaign, tmp_path):
    result, sim = _one_clean_sim(make_campaign)
    first = scan_simulation(sim, result.dest)
    detail = _replace_registry(sim, "directory", tmp_path)
    second = scan_simulation(sim, result.dest, cache=cache_of(first))
    assert [(f.kind, f.item, f.detail) for f in second.findings] == [(fk.REGISTRY_CORRUPT, REG, detail)]
    assert second.fingerprint != first.fingerprint
