"""Audits on a real LocalCluster (processes) into a real SQLite catalog."""

from __future__ import annotations

import json
import logging
import sqlite3

import pytest

from mdbatch.auditing import audit
from mdbatch.catalog import queries
from mdbatch.engine import ClusterOptions, plan
from mdbatch.findings import KINDS

from .conftest import expected

pytestmark = pytest.mark.integration
LOCAL = ClusterOptions(workers=2, dashboard=False)


def rows(db, sql):
    with sqlite3.connect(db) as conn:
        return conn.execute(sql).fetchall()


def test_audit_writes_the_catalog(make_campaign, tmp_path):
    result = make_campaign(40, seed=8, faults=True, nested=True, hostile=True)
    db = tmp_path / "cat.db"
    res = audit(result.dest, db=f"sqlite:///{db}", cluster=LOCAL, progress=False)
    s = res.summary
    want = expected(result)
    assert s["simulations"] == len(result.simulations)
    assert s["files"] == result.files and s["bytes"] == result.bytes
    assert s["findings_total"] == len(want) and set(s["findings"]) == set(KINDS)
    assert s["outcome"] == "completed" and res.exit_code == 1
    assert {(f["simulation"], f["kind"], f["item"]) for f in res.findings().to_dict("records")} == want
    assert rows(db, "SELECT COUNT(*) FROM MDBATCH_FILES")[0][0] == result.files
    assert set(rows(db, "SELECT simulation, kind, item FROM MDBATCH_FINDINGS")) == want
    assert rows(db, "SELECT status, command FROM MDBATCH_RUNS") == [("completed", "audit")]
    manifest = json.loads(result.manifest_path.read_text())
    assert rows(db, "SELECT COUNT(*) FROM RUN_DATABASE")[0][0] == len({m["hash"] for m in manifest["simulations"]})
    tables = {r[0] for r in rows(db, "SELECT name FROM sqlite_master WHERE type='table'")}
    assert "RUN_DATABASE" in tables  # the SQL-ish analysis name dropped nothing
    assert {t for t in tables if t.startswith(("ANALYSIS_", "ARTIFACT_"))} >= {"ANALYSIS_OVERVIEW", "ANALYSIS_area_per_lipid"}
    assert not any(";" in t or "'" in t or " " in t for t in tables)
    # The overview records every registered item, invalid names included (as values, not tables).
    names = {r[0] for r in rows(db, "SELECT item_name FROM ANALYSIS_OVERVIEW")}
    assert "x; DROP TABLE RUN_DATABASE;--" in names
    typed = rows(db, "SELECT typeof(size), typeof(mtime_ns) FROM MDBATCH_FILES LIMIT 1")
    assert typed == [("integer", "integer")]


def test_results_do_not_depend_on_batching(make_campaign, tmp_path):
    result = make_campaign(30, seed=9, faults=True)
    dbs = []
    for size in (1, 7, 250):
        db = tmp_path / f"b{size}.db"
        audit(result.dest, db=f"sqlite:///{db}", cluster=LOCAL, batch_size=size, progress=False)
        dbs.append(db)
    snapshots = [
        (
            rows(db, "SELECT simulation, path, size, xxh3_128, sha256 FROM MDBATCH_FILES ORDER BY simulation, path"),
            rows(db, "SELECT simulation, kind, item, detail FROM MDBATCH_FINDINGS ORDER BY 1, 2, 3"),
            rows(db, "SELECT hash, status, simulation_type FROM RUN_DATABASE ORDER BY hash"),
        )
        for db in dbs
    ]
    assert snapshots[0] == snapshots[1] == snapshots[2]


def test_reaudit_replaces_inventory_and_keeps_runs(make_campaign, tmp_path):
    result = make_campaign(10, seed=10)
    db = tmp_path / "cat.db"
    first = audit(result.dest, db=f"sqlite:///{db}", cluster=LOCAL, progress=False)
    sim = result.dest / result.simulations[0]
    (sim / "system.pdb").unlink()
    (sim / "new_file.txt").write_text("hello")
    second = audit(result.dest, db=f"sqlite:///{db}", cluster=LOCAL, progress=False)
    assert first.run_id != second.run_id and second.exit_code == 0
    paths = {r[0] for r in rows(db, f"SELECT path FROM MDBATCH_FILES WHERE simulation = '{result.simulations[0]}'")}
    assert "system.pdb" not in paths and "new_file.txt" in paths
    assert rows(db, "SELECT COUNT(*) FROM MDBATCH_FILES")[0][0] == result.files
    assert [r[0] for r in rows(db, "SELECT status FROM MDBATCH_RUNS ORDER BY started_at")] == ["completed", "completed"]


def test_audit_through_a_running_scheduler(make_campaign, tmp_path):
    from distributed import LocalCluster

    result = make_campaign(20, seed=12, faults=True)
    with LocalCluster(
        n_workers=1, threads_per_worker=1, processes=True, host="127.0.0.1", dashboard_address=None, silence_logs=logging.ERROR
    ) as cluster:
        res = audit(
            result.dest, db=f"sqlite:///{tmp_path / 'c.db'}", cluster=ClusterOptions(scheduler=cluster.scheduler_address), progress=False
        )
        scheduler_file = tmp_path / "scheduler.json"
        scheduler_file.write_text(json.dumps({"address": cluster.scheduler_address, "type": "Scheduler"}))
        res2 = audit(
            result.dest, db=f"sqlite:///{tmp_path / 'd.db'}", cluster=ClusterOptions(scheduler_file=str(scheduler_file)), progress=False
        )
    assert res.summary["workers"] == 1
    found = {(f["simulation"], f["kind"], f["item"]) for f in res.findings().to_dict("records")}
    assert found == {(f["simulation"], f["kind"], f["item"]) for f in res2.findings().to_dict("records")} == expected(result)


def test_plan_sizes_small_campaigns_down():
    assert plan(10, True, 2, None) == (1, 8)
    assert plan(60, True, 2, None) == (1, 15)
    assert plan(100, True, 2, None) == (2, 13)
    assert plan(5000, True, 2, None) == (2, 250)
    assert plan(500, False, 2, None) == (2, 250)
    assert plan(100, True, 2, 50) == (2, 50)
    assert plan(100, True, 2, 500) == (2, 500)
    assert plan(0, True, 2, None) == (1, 8)


def test_duplicates_in_summary_match_the_files(make_campaign, tmp_path):
    import os
    from collections import defaultdict

    import xxhash

    result = make_campaign(30, seed=13)
    # A hardlinked pair shares an inode: it is one copy on disk, nothing to reclaim between them.
    first = result.dest / result.simulations[0]
    os.link(first / "topology.top", first / "topology_link.top")
    res = audit(result.dest, db=f"sqlite:///{tmp_path / 'c.db'}", cluster=LOCAL, progress=False)
    groups: dict[tuple[int, str], set[tuple[int, int]]] = defaultdict(set)
    counts: dict[tuple[int, str], int] = defaultdict(int)
    for path in result.dest.rglob("*"):
        if path.is_file() and not path.is_symlink() and path.name != "mdbatch-campaign.json":
            data = path.read_bytes()
            if data:
                st = path.stat()
                key = (len(data), xxhash.xxh3_128_hexdigest(data))
                groups[key].add((st.st_dev, st.st_ino))
                counts[key] += 1
    dup = {k for k, n in counts.items() if n > 1}
    want = {
        "groups": len(dup),
        "files": sum(counts[k] for k in dup),
        "reclaimable_bytes": sum((len(groups[k]) - 1) * k[0] for k in dup),
    }
    assert want["groups"] > 0 and want["reclaimable_bytes"] > 0
    assert res.summary["duplicates"] == want


def test_inventory_reads_back_from_the_catalog(make_campaign, tmp_path):
    from mdbatch.catalog import open_catalog

    result = make_campaign(12, seed=14, hostile=True)
    db = f"sqlite:///{tmp_path / 'c.db'}"
    res = audit(result.dest, db=db, cluster=LOCAL, progress=False)
    with open_catalog(db) as cat:
        chunks = list(queries.file_inventory(cat, str(result.dest), ["simulation", "path", "path_raw"], chunk_rows=50))
        assert queries.scanned_simulations(cat, res.run_id) == set()  # completed runs drop resume bookkeeping
    assert len(chunks) > 1 and sum(c.num_rows for c in chunks) == result.files
    raw = [r for c in chunks for r in c.column("path_raw").to_pylist() if r is not None]
    assert raw and all(isinstance(r, bytes) for r in raw)


# -- registries that are missing or not files (issue 13, item 4) ---------------------------------------

NO_REGISTRY = "parquet file in .analysis, which has no registry (.analysis/metadata.json is absent)"
A_DIRECTORY = "registry is a directory, not a regular file"


def _sims_with_parquets(result, count):
    """`count` simulations whose registry lists analyses, with their sorted parquet items."""
    picked = []
    for rel in result.simulations:
        registry = result.dest / rel / ".analysis" / "metadata.json"
        if registry.is_file() and json.loads(registry.read_text())["analyses"]:
            items = sorted(f".analysis/{e['filename']}" for e in json.loads(registry.read_text())["analyses"].values())
            picked.append((rel, items))
    assert len(picked) >= count
    return picked[:count]


def test_cli_audit_reports_a_missing_registry_and_one_that_is_a_directory(make_campaign, tmp_path):
    from .test_cli import mdbatch

    result = make_campaign(5, seed=31)
    (gone, parquets), (dir_sim, _) = _sims_with_parquets(result, 2)
    (result.dest / gone / ".analysis" / "metadata.json").unlink()
    registry = result.dest / dir_sim / ".analysis" / "metadata.json"
    registry.unlink()
    registry.mkdir()
    out = tmp_path / "f.jsonl"
    proc = mdbatch(
        "audit",
        str(result.dest),
        "--db",
        f"sqlite:///{tmp_path / 'c.db'}",
        "--findings",
        str(out),
        "--workers",
        "1",
        "--no-dashboard",
        "--quiet",
    )
    assert proc.returncode == 1, proc.stderr
    lines = sorted((json.loads(line) for line in out.read_text().splitlines()), key=lambda f: (f["simulation"], f["item"]))
    want = [{"simulation": gone, "kind": "extra_file", "item": p, "detail": NO_REGISTRY} for p in parquets]
    want.append({"simulation": dir_sim, "kind": "registry_corrupt", "item": ".analysis/metadata.json", "detail": A_DIRECTORY})
    assert lines == sorted(want, key=lambda f: (f["simulation"], f["item"]))


def test_reaudit_sees_a_registry_that_became_a_directory(make_campaign, tmp_path):
    # Between two audits: one registry is replaced by a directory; where another was already missing
    # (extra_file findings), an empty directory appears. That adds no file to the walk, so only the
    # fingerprint's view of the registry path keeps the second audit from keeping the first's findings.
    result = make_campaign(6, seed=32)
    (replaced, _), (absent, parquets) = _sims_with_parquets(result, 2)
    (result.dest / absent / ".analysis" / "metadata.json").unlink()
    db = f"sqlite:///{tmp_path / 'c.db'}"
    first = audit(result.dest, db=db, cluster=LOCAL, progress=False)
    assert {(f["simulation"], f["kind"], f["item"]) for f in first.findings().to_dict("records")} == {
        (absent, "extra_file", p) for p in parquets
    }
    for rel in (replaced, absent):
        registry = result.dest / rel / ".analysis" / "metadata.json"
        registry.unlink(missing_ok=True)
        registry.mkdir()
    second = audit(result.dest, db=db, cluster=LOCAL, progress=False)
    assert second.exit_code == 1
    assert sorted((f["simulation"], f["kind"], f["item"], f["detail"]) for f in second.findings().to_dict("records")) == sorted(
        (rel, "registry_corrupt", ".analysis/metadata.json", A_DIRECTORY) for rel in (replaced, absent)
    )
    assert second.summary["cache"]["simulations_kept"] == len(result.simulations) - 2
