"""The worker task (mdbatch/batch.py): a batch of simulation directories in, one Arrow table per
catalog concern out, each row exactly what the per-simulation scan found; and scan_group, which
keeps what provably did not change and defers what did."""

from __future__ import annotations

import json
import os
from collections import Counter
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pytest

from mdbatch.batch import (
    ANALYSES_SCHEMA,
    ARTIFACTS_SCHEMA,
    FILES_SCHEMA,
    FINDINGS_SCHEMA,
    SYSTEMS_SCHEMA,
    Group,
    scan_batch,
    scan_group,
    to_tables,
    tuples_table,
)
from mdbatch.hashcache import HASH_CACHE_VERSION, INVENTORY_COLUMNS
from mdbatch.scan import ScanOptions, scan_simulation

from .conftest import expected


def paths_of(result) -> list[str]:
    return [str(result.dest / s) for s in result.simulations]


def without_time(table: pa.Table) -> pa.Table:
    return table.drop_columns([c for c in ("scanned_at",) if c in table.column_names])


def test_empty_batch_has_every_table_typed():
    batch = scan_batch([], "/nowhere")
    assert [t.schema for t in (batch.systems, batch.analyses, batch.artifacts, batch.files, batch.findings)] == [
        SYSTEMS_SCHEMA,
        ANALYSES_SCHEMA,
        ARTIFACTS_SCHEMA,
        FILES_SCHEMA,
        FINDINGS_SCHEMA,
    ]
    assert (batch.simulations, batch.file_count, batch.bytes) == (0, 0, 0)


def test_schemas_are_the_documented_columns():
    assert SYSTEMS_SCHEMA.names == [
        "hash",
        "simulation",
        "directory",
        "simulation_type",
        "engine",
        "parametrization",
        "status",
        "input_data",
        "input_data_type",
        "scanned_at",
        "file_count",
        "bytes",
        "finding_count",
        "fingerprint",
    ]
    assert [str(t) for t in SYSTEMS_SCHEMA.types].count("int64") == 3
    assert ANALYSES_SCHEMA.names == [
        "hash",
        "simulation",
        "simulation_type",
        "name",
        "filename",
        "status",
        "registered_rows",
        "file_rows",
        "columns",
        "file_size",
        "updated_at",
    ]
    assert ARTIFACTS_SCHEMA.names == [
        "hash",
        "simulation",
        "simulation_type",
        "name",
        "status",
        "file_count",
        "files",
        "checksums",
        "updated_at",
    ]
    assert FILES_SCHEMA.names == [
        "simulation",
        "path",
        "path_raw",
        "size",
        "mtime_ns",
        "ctime_ns",
        "inode",
        "device",
        "xxh3_128",
        "sha256",
        "facts",
        "cached",
    ]
    assert FILES_SCHEMA.field("path_raw").type == pa.binary() and FILES_SCHEMA.field("cached").type == pa.bool_()
    assert FINDINGS_SCHEMA.names == ["simulation", "kind", "item", "detail"]


def test_tables_hold_exactly_what_each_scan_found(make_campaign):
    result = make_campaign(18, seed=71, faults=True, nested=True, hostile=True)
    root = str(result.dest)
    batch = scan_batch(paths_of(result), root, index=5)
    scans = [scan_simulation(p, root) for p in paths_of(result)]
    assert batch.index == 5 and batch.simulations == len(result.simulations)
    assert [t.schema for t in (batch.systems, batch.analyses, batch.artifacts, batch.files, batch.findings)] == [
        SYSTEMS_SCHEMA,
        ANALYSES_SCHEMA,
        ARTIFACTS_SCHEMA,
        FILES_SCHEMA,
        FINDINGS_SCHEMA,
    ]

    systems = batch.systems.to_pylist()
    # `simulation` relative to the root (nested ones with '/'), `directory` absolute, in the order given.
    assert [r["simulation"] for r in systems] == result.simulations
    assert any("/" in s for s in result.simulations)
    assert [r["directory"] for r in systems] == [str(result.dest / s) for s in result.simulations]
    assert all(os.path.isabs(r["directory"]) for r in systems)
    for row, scan in zip(systems, scans, strict=True):
        assert {k: v for k, v in row.items() if k != "scanned_at"} == {
            "hash": scan.hash,
            "simulation": scan.simulation,
            "directory": scan.directory,
            "simulation_type": scan.simulation_type,
            "engine": scan.engine,
            "parametrization": scan.parametrization,
            "status": scan.status,
            "input_data": scan.input_data,
            "input_data_type": scan.input_data_type,
            "file_count": len(scan.files),
            "bytes": scan.bytes,
            "finding_count": len(scan.findings),
            "fingerprint": scan.fingerprint,
        }
    assert (batch.file_count, batch.bytes) == (result.files, result.bytes)

    # One findings row per finding, exactly the campaign's injected faults.
    assert batch.findings.to_pylist() == [
        {"simulation": f.simulation, "kind": f.kind, "item": f.item, "detail": f.detail} for s in scans for f in s.findings
    ]
    assert {(r["simulation"], r["kind"], r["item"]) for r in batch.findings.to_pylist()} == expected(result)
    per_sim = Counter(batch.findings["simulation"].to_pylist())
    assert {r["simulation"]: r["finding_count"] for r in systems if r["finding_count"]} == dict(per_sim)

    assert batch.files.to_pylist() == [
        {
            "simulation": s.simulation,
            "path": f.path,
            "path_raw": f.path_raw,
            "size": f.size,
            "mtime_ns": f.mtime_ns,
            "ctime_ns": f.ctime_ns,
            "inode": f.inode,
            "device": f.device,
            "xxh3_128": f.xxh3_128,
            "sha256": f.sha256,
            "facts": f.facts,
            "cached": False,
        }
        for s in scans
        for f in s.files
    ]
    assert batch.files.num_rows == result.files
    assert batch.analyses.to_pylist() == [
        {
            "hash": s.hash,
            "simulation": s.simulation,
            "simulation_type": s.simulation_type,
            "name": a.name,
            "filename": a.filename,
            "status": a.status,
            "registered_rows": a.registered_rows,
            "file_rows": a.file_rows,
            "columns": json.dumps(list(a.registered_columns)),
            "file_size": a.file_size,
            "updated_at": a.updated_at,
        }
        for s in scans
        for a in s.analyses
    ]
    assert batch.artifacts.to_pylist() == [
        {
            "hash": s.hash,
            "simulation": s.simulation,
            "simulation_type": s.simulation_type,
            "name": a.name,
            "status": a.status,
            "file_count": len(a.files),
            "files": json.dumps(list(a.files)),
            "checksums": json.dumps(dict(a.checksums), sort_keys=True),
            "updated_at": a.updated_at,
        }
        for s in scans
        for a in s.artifacts
    ]
    assert batch.analyses.num_rows > 0 and batch.artifacts.num_rows > 0
    assert to_tables(scans, 5).systems.drop_columns(["scanned_at"]).equals(batch.systems.drop_columns(["scanned_at"]))


def test_undecodable_names_keep_their_bytes(make_campaign):
    result = make_campaign(6, seed=72, hostile=True)
    batch = scan_batch(paths_of(result), str(result.dest))
    raw = [r for r in batch.files.to_pylist() if r["path_raw"] is not None]
    assert raw, "the hostile campaign has a name that is not UTF-8"
    for row in raw:
        base = os.fsencode(result.dest / row["simulation"])
        assert os.path.isfile(os.path.join(base, row["path_raw"]))
        assert row["path"] == row["path_raw"].decode("utf-8", "backslashreplace")


def test_without_a_root_and_from_relative_paths(make_campaign, monkeypatch):
    result = make_campaign(3, seed=73)
    sim = result.simulations[0]
    alone = scan_batch([str(result.dest / sim)], None)
    assert alone.systems["simulation"].to_pylist() == [os.path.basename(sim)]
    monkeypatch.chdir(result.dest.parent)
    relative = scan_batch([f"{result.dest.name}/{sim}"], result.dest.name)
    assert relative.systems["simulation"].to_pylist() == [sim]
    assert relative.systems["directory"].to_pylist() == [str(result.dest / sim)]
    assert relative.findings.num_rows == 0


def test_a_scan_that_raises_is_an_unreadable_finding_and_the_batch_goes_on(make_campaign):
    result = make_campaign(4, seed=74)
    root = str(result.dest)
    bad = str(result.dest / "listed\x00name")  # a listed path no system call accepts: scan_simulation raises
    with pytest.raises(ValueError):
        scan_simulation(bad, root)
    paths = paths_of(result)
    batch = scan_batch([paths[0], bad, *paths[1:]], root)
    good = scan_batch(paths, root)
    rows = batch.systems.to_pylist()
    assert [r["simulation"] for r in rows] == [result.simulations[0], "listed\x00name", *result.simulations[1:]]
    failed = rows[1]
    scanned_at = failed.pop("scanned_at")
    assert scanned_at.endswith("+00:00")
    assert failed == {
        "hash": "listed\x00name",
        "simulation": "listed\x00name",
        "directory": bad,
        "simulation_type": None,
        "engine": None,
        "parametrization": None,
        "status": "build",
        "input_data": None,
        "input_data_type": None,
        "file_count": 0,
        "bytes": 0,
        "finding_count": 1,
        "fingerprint": None,
    }
    assert batch.findings.to_pylist() == [
        {"simulation": "listed\x00name", "kind": "unreadable", "item": ".", "detail": "scan failed: ValueError: embedded null byte"}
    ]
    keep = pc.not_equal(batch.systems["simulation"], "listed\x00name")
    assert without_time(batch.systems.filter(keep)).equals(without_time(good.systems))
    assert batch.files.equals(good.files)


def test_io_threads_give_the_same_tables(make_campaign):
    result = make_campaign(16, seed=75, faults=True, hostile=True)
    root = str(result.dest)
    one = scan_batch(paths_of(result), root, ScanOptions(io_threads=1))
    four = scan_batch(paths_of(result), root, ScanOptions(io_threads=4))
    assert without_time(four.systems).equals(without_time(one.systems))
    for name in ("analyses", "artifacts", "files", "findings"):
        assert getattr(four, name).equals(getattr(one, name)), name


def test_tuples_table_types_rows_and_refuses_ragged_rows():
    table = tuples_table([("s", "kind", "item", "detail")], FINDINGS_SCHEMA)
    assert table.schema == FINDINGS_SCHEMA
    assert table.to_pylist() == [{"simulation": "s", "kind": "kind", "item": "item", "detail": "detail"}]
    assert tuples_table([], FINDINGS_SCHEMA).schema == FINDINGS_SCHEMA
    with pytest.raises(ValueError):
        tuples_table([("s", "kind", "item")], FINDINGS_SCHEMA)


# -- scan_group: what the catalog recorded travels with the batch --------------------------------


def recorded_inventory(batch, sims: set[str]) -> pa.Table:
    """Inventory rows (INVENTORY_COLUMNS) as the catalog would hand back for `sims` of a scanned batch."""
    files = batch.files.filter(pc.is_in(batch.files["simulation"], value_set=pa.array(sorted(sims), pa.string())))
    files = files.append_column("cache_version", pa.array([HASH_CACHE_VERSION] * files.num_rows, pa.int64()))
    return files.select(INVENTORY_COLUMNS)


@pytest.fixture
def recorded(make_campaign):
    """A faulty campaign scanned once: (result, first batch, the simulations that have a fingerprint)."""
    result = make_campaign(24, seed=76, faults=True)
    first = scan_batch(paths_of(result), str(result.dest))
    with_fp = [r["simulation"] for r in first.systems.to_pylist() if r["fingerprint"] is not None]
    assert len(with_fp) >= 8
    return result, first, with_fp


def test_scan_group_keeps_what_holds_defers_what_moved_and_scans_the_rest(recorded):
    result, first, with_fp = recorded
    root = str(result.dest)
    rows = {r["simulation"]: r for r in first.systems.to_pylist()}
    with_findings = {s for s in with_fp if rows[s]["finding_count"]}
    moved = sorted(set(with_fp) - with_findings)[0]
    fresh = sorted(set(with_fp) - with_findings - {moved})[0]  # recorded without a fingerprint: scanned with its cache
    kept = set(with_fp) - {moved, fresh}
    assert with_findings and with_findings <= kept  # some kept simulations carry recorded findings
    victim = next(r["path"] for r in first.files.to_pylist() if r["simulation"] == moved and not r["path"].startswith(".analysis"))
    with open(result.dest / moved / victim, "ab") as handle:
        handle.write(b"appended\n")

    group = Group(
        id=9,
        paths=paths_of(result),
        inventory=recorded_inventory(first, {fresh}),
        fingerprints={s: rows[s]["fingerprint"] for s in with_fp if s != fresh},
        hashes={s: rows[s]["hash"] for s in with_fp},
        findings=first.findings,
    )
    out = scan_group(group, root)
    assert out.index == 9
    assert out.deferred == (str(result.dest / moved),)
    assert out.kept == frozenset(kept)
    scanned = [s for s in result.simulations if s not in kept and s != moved]
    assert out.systems["simulation"].to_pylist() == scanned + [s for s in result.simulations if s in kept]
    for row in out.systems.to_pylist():
        if row["simulation"] not in kept:
            continue
        was = rows[row["simulation"]]
        assert {k: v for k, v in row.items() if k != "scanned_at"} == {
            "hash": was["hash"],
            "simulation": was["simulation"],
            "directory": was["directory"],
            "simulation_type": None,
            "engine": None,
            "parametrization": None,
            "status": was["status"],
            "input_data": None,
            "input_data_type": None,
            "file_count": was["file_count"],
            "bytes": was["bytes"],
            "finding_count": was["finding_count"],
            "fingerprint": was["fingerprint"],
        }
    # Findings: those of the scanned simulations, then the recorded ones of the kept simulations.
    assert Counter(map(tuple, (r.values() for r in out.findings.to_pylist()))) == Counter(
        tuple(r.values()) for r in first.findings.to_pylist() if r["simulation"] != moved
    )
    # Files: only what was scanned; `fresh` came from its hash cache and is identical to its record.
    assert set(out.files["simulation"].to_pylist()) == set(scanned)
    fresh_files = out.files.filter(pc.equal(out.files["simulation"], fresh))
    assert all(fresh_files["cached"].to_pylist())
    assert fresh in out.identical and kept <= out.identical and moved not in out.identical
    assert out.changes == ()
    kept_files = sum(rows[s]["file_count"] for s in kept)
    assert out.unchanged_files == kept_files + fresh_files.num_rows


@pytest.mark.parametrize("how", ["verify full", "no cache"])
def test_scan_group_keeps_nothing_when_the_cache_is_not_trusted(recorded, how):
    result, first, with_fp = recorded
    rows = {r["simulation"]: r for r in first.systems.to_pylist()}
    options = ScanOptions(verify="full") if how == "verify full" else None
    group = Group(
        id=1,
        paths=paths_of(result),
        use_cache=how != "no cache",
        fingerprints={s: rows[s]["fingerprint"] for s in with_fp},
        hashes={s: rows[s]["hash"] for s in with_fp},
        findings=first.findings,
    )
    out = scan_group(group, str(result.dest), options)
    assert out.kept == frozenset() and out.deferred == ()
    assert without_time(out.systems).equals(without_time(first.systems)) and out.findings.equals(first.findings)


def test_scan_group_without_a_record_is_scan_batch(recorded):
    result, first, _ = recorded
    out = scan_group(Group(id=3, paths=paths_of(result)), str(result.dest))
    assert out.index == 3 and out.kept == frozenset() and out.deferred == () and out.identical == frozenset()
    assert without_time(out.systems).equals(without_time(first.systems)) and out.files.equals(first.files)


def test_a_changed_file_of_a_recorded_simulation_is_a_change(recorded):
    result, first, with_fp = recorded
    sim = with_fp[0]
    victim = next(r for r in first.files.to_pylist() if r["simulation"] == sim and not r["path"].startswith(".analysis"))
    with open(result.dest / sim / victim["path"], "ab") as handle:
        handle.write(b"x")
    group = Group(id=2, paths=[str(result.dest / sim)], inventory=recorded_inventory(first, {sim}))
    out = scan_group(group, str(result.dest))
    assert [(c[0], c[1], c[2], c[3], c[4]) for c in out.changes] == [("file", "changed", sim, victim["path"], victim["size"] + 1)]
    assert out.identical == frozenset() and out.unchanged_files == victim_count(first, sim) - 1


def victim_count(batch, sim: str) -> int:
    return sum(1 for s in batch.files["simulation"].to_pylist() if s == sim)


def test_a_vanished_simulation_is_a_finding_under_its_relative_name(tmp_path: Path):
    assert scan_batch([str(tmp_path / "gone")], str(tmp_path)).findings.to_pylist() == [
        {"simulation": "gone", "kind": "unreadable", "item": ".", "detail": "simulation directory vanished before the scan"}
    ]
