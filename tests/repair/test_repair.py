"""Repair on real campaigns: dry run, repair, re-audit, undo (and undo of the undo), conflicts, restore, backends."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest

from mdbatch.auditing import audit
from mdbatch.catalog import open_catalog, schema
from mdbatch.engine import ClusterOptions
from mdbatch.errors import UsageError
from mdbatch.registry import Registry
from mdbatch.repair import history, repair, restore, undo

from ..conftest import backend_url
from .conftest import FIXED_ALL, NEVER_FIXED, kinds_of, registries, tree

FLAGS = {"accept_checksums": True, "rebuild_corrupt": True}


def _catalog_rows(url: str) -> dict[str, list[dict[str, object]]]:
    with open_catalog(url) as cat:
        return {name: [r for c in cat.iter_rows(name) for r in c.to_pylist()] for name in cat.tables()}


def test_dry_run_changes_no_byte_and_records_nothing(audited) -> None:  # type: ignore[no-untyped-def]
    a = audited()
    before_tree, before_rows = tree(a.root), _catalog_rows(a.db)
    result = repair(a.root, db=a.db, dry_run=True, progress=False, **FLAGS)
    assert tree(a.root) == before_tree
    assert _catalog_rows(a.db) == before_rows
    assert result.run_id == "" and result.summary["mode"] == "dry-run"
    assert result.summary["fixed"] == FIXED_ALL and result.summary["registries_changed"] == 8
    assert result.summary["never_fixed"] == NEVER_FIXED
    assert len(result.diffs) == 8 and all(d.startswith("--- a/") and "\n+++ b/" in d for d in result.diffs)
    row_fix = [d for d in result.diffs if '"row_count": ' in d and d.count("row_count") == 2]
    assert row_fix, "the row_count fix shows as a -/+ pair"


def test_repair_then_reaudit_leaves_only_never_fixed_kinds_and_undo_restores_every_byte(audited) -> None:  # type: ignore[no-untyped-def]
    a = audited()
    original = registries(a.root)
    result = repair(a.root, db=a.db, progress=False, **FLAGS)
    s = result.summary
    assert s["outcome"] == "completed" and s["registries_changed"] == 8 and s["fixed"] == FIXED_ALL
    assert s["skipped"] == [] and result.exit_code == 0
    repaired = registries(a.root)
    changed = {sim for sim in original if original[sim] != repaired[sim]}
    assert len(changed) == 8
    again = audit(a.root, db=a.db, progress=False)
    assert kinds_of(again.summary["findings"]) == NEVER_FIXED
    assert again.summary["changes"]["findings"]["resolved"] == 8 and again.summary["changes"]["findings"]["new"] == 0
    # The run and its snapshots are in the catalog: exact bytes before and after, with their sha256.
    with sqlite3.connect(a.db.removeprefix("sqlite:///")) as conn:
        run = conn.execute("SELECT command, status FROM MDBATCH_RUNS WHERE run_id = ?", (result.run_id,)).fetchone()
        snaps = conn.execute(
            "SELECT directory, bytes_before, bytes_after, sha256_before, action FROM MDBATCH_REGISTRY_SNAPSHOTS WHERE run_id = ?",
            (result.run_id,),
        ).fetchall()
    assert run == ("repair", "completed")
    assert {Path(d).name: (b, af) for d, b, af, _sha, _ac in snaps} == {sim: (original[sim], repaired[sim]) for sim in changed}
    assert {action for *_x, action in snaps} == {"repair"}
    undone = undo(result.run_id, db=a.db, progress=False)
    assert undone.summary["registries_changed"] == 8 and undone.summary["conflicts"] == []
    assert registries(a.root) == original
    # The undo is a run of its own, and undoable: undoing it puts the repair back, byte for byte.
    redo = undo(undone.run_id, db=a.db, progress=False)
    assert redo.summary["registries_changed"] == 8
    assert registries(a.root) == repaired


def test_undo_leaves_a_registry_changed_since_as_a_conflict_unless_forced(audited) -> None:  # type: ignore[no-untyped-def]
    a = audited()
    original = registries(a.root)
    result = repair(a.root, db=a.db, progress=False, kinds=["row_count_mismatch", "extra_file"])
    assert result.summary["fixed"] == {"extra_file": 1, "row_count_mismatch": 1}
    touched = sorted(o.simulation for o in result.outcomes if o.status == "replaced")
    reg = Registry(a.root / touched[0])
    reg.add_entry("added_later", __import__("pandas").DataFrame({"x": [1, 2]}))
    later = (a.root / touched[0] / ".analysis" / "metadata.json").read_bytes()
    first = undo(result.run_id, db=a.db, progress=False)
    assert first.exit_code == 1 and [c["simulation"] for c in first.summary["conflicts"]] == [touched[0]]
    assert "changed since run" in first.summary["conflicts"][0]["reason"]
    assert (a.root / touched[0] / ".analysis" / "metadata.json").read_bytes() == later
    assert registries(a.root)[touched[1]] == original[touched[1]]
    forced = undo(result.run_id, db=a.db, force=True, progress=False)
    assert forced.summary["registries_changed"] == 1 and forced.exit_code == 0
    assert registries(a.root) == original


def test_flagged_kinds_need_their_option_and_kind_and_simulation_select(audited) -> None:  # type: ignore[no-untyped-def]
    a = audited()
    plain = repair(a.root, db=a.db, progress=False)
    assert plain.summary["needs_option"] == {
        "artifact_checksum_mismatch": {"count": 1, "option": "--accept-checksums"},
        "registry_corrupt": {"count": 2, "option": "--rebuild-corrupt"},
    }
    assert "registry_corrupt" not in plain.summary["fixed"] and plain.summary["registries_changed"] == 5
    again = audit(a.root, db=a.db, progress=False)
    assert kinds_of(again.summary["findings"]) == {**NEVER_FIXED, "artifact_checksum_mismatch": 1, "registry_corrupt": 2}
    one = next(f for f in a.camp.expected_findings if f["kind"] == "registry_corrupt")
    only = repair(a.root, db=a.db, progress=False, simulation=one["simulation"], rebuild_corrupt=True)
    assert only.summary["fixed"] == {"registry_corrupt": 1} and only.summary["findings"] == 1
    with pytest.raises(UsageError, match="unknown finding kind"):
        repair(a.root, db=a.db, progress=False, kinds=["no_such_kind"])


def test_a_finding_that_no_longer_holds_is_skipped_and_reported(audited) -> None:  # type: ignore[no-untyped-def]
    a = audited()
    row = next(f for f in a.camp.expected_findings if f["kind"] == "row_count_mismatch")
    missing = next(f for f in a.camp.expected_findings if f["kind"] == "missing_file")
    # Someone fixes one registry by hand and restores the other's file before the repair runs.
    path = a.root / row["simulation"] / ".analysis" / "metadata.json"
    registry = json.loads(path.read_bytes())
    registry["analyses"][row["item"]]["row_count"] -= 7
    path.write_text(json.dumps(registry, indent=2))
    gone = a.root / missing["simulation"] / ".analysis" / f"{missing['item']}.parquet"
    gone.write_bytes((a.root / row["simulation"] / ".analysis" / f"{row['item']}.parquet").read_bytes())
    result = repair(a.root, db=a.db, progress=False)
    skipped = {(s["simulation"], s["kind"]): s["reason"] for s in result.summary["skipped"]}
    assert skipped[(row["simulation"], "row_count_mismatch")].startswith("the registry already says")
    assert skipped[(missing["simulation"], "missing_file")].endswith("is present again")
    assert result.exit_code == 1 and result.summary["registries_changed"] == 3


def test_history_and_restore_put_back_one_snapshot_and_are_undoable(audited) -> None:  # type: ignore[no-untyped-def]
    a = audited()
    original = registries(a.root)
    result = repair(a.root, db=a.db, progress=False, kinds=["columns_mismatch"])
    sim = next(o.simulation for o in result.outcomes if o.status == "replaced")
    listed = history(a.root / sim, db=a.db)
    assert [(h["snapshot"], h["action"]) for h in listed] == [(f"{result.run_id}:1", "repair")]
    back = restore(a.root / sim, f"{result.run_id}:1", db=a.db)
    assert registries(a.root) == original and back.summary["mode"] == "restore"
    assert [h["action"] for h in history(a.root / sim, db=a.db)] == ["repair", "restore"]
    undo(back.run_id, db=a.db, progress=False)
    assert registries(a.root)[sim] != original[sim]
    with pytest.raises(UsageError, match="is of"):
        restore(a.root / "elsewhere", f"{result.run_id}:1", db=a.db)


@pytest.mark.parametrize("kind", ["sqlite", "postgresql", "csv"])
def test_snapshots_round_trip_on_every_backend(kind: str, audited, tmp_path: Path, request: pytest.FixtureRequest) -> None:  # type: ignore[no-untyped-def]
    url = backend_url(kind, tmp_path, request)
    a = audited(sims=24, db=url)
    original = registries(a.root)
    result = repair(a.root, db=url, progress=False, **FLAGS)
    assert result.summary["fixed"] == FIXED_ALL
    with open_catalog(url) as cat:
        rows = [r for c in cat.iter_rows(schema.REGISTRY_SNAPSHOTS.name, {"run_id": result.run_id}) for r in c.to_pylist()]
    assert sorted(r["seq"] for r in rows) == list(range(1, 9))
    assert {Path(r["directory"]).name: r["bytes_before"] for r in rows} == {
        Path(r["directory"]).name: original[Path(r["directory"]).name] for r in rows
    }
    undo(result.run_id, db=url, progress=False)
    assert registries(a.root) == original


def test_the_plan_fans_out_on_a_dask_cluster(audited) -> None:  # type: ignore[no-untyped-def]
    a = audited()
    result = repair(a.root, db=a.db, progress=False, cluster=ClusterOptions(workers=2, dashboard=False), **FLAGS)
    # Eight simulations keep one worker busy (engine.plan sizes the cluster as the audit does).
    assert result.summary["in_process"] is False and result.summary["workers"] == 1
    assert result.summary["fixed"] == FIXED_ALL


def test_an_old_catalog_gains_the_snapshot_table(audited) -> None:  # type: ignore[no-untyped-def]
    a = audited()
    path = a.db.removeprefix("sqlite:///")
    with sqlite3.connect(path) as conn:  # the catalog as mdbatch of schema version 5 left it
        conn.execute("DROP TABLE MDBATCH_REGISTRY_SNAPSHOTS")
        conn.execute("UPDATE MDBATCH_SCHEMA SET value = '5' WHERE key = 'schema_version'")
    result = repair(a.root, db=a.db, progress=False)
    assert result.summary["registries_changed"] == 5
    with sqlite3.connect(path) as conn:
        assert conn.execute("SELECT value FROM MDBATCH_SCHEMA").fetchone() == (str(schema.SCHEMA_VERSION),)
        assert conn.execute("SELECT COUNT(*) FROM MDBATCH_REGISTRY_SNAPSHOTS").fetchone() == (5,)
