"""The per-simulation fix, called directly (no catalog, no cluster): exact plans for every repairable fault,
and the re-check under the lock."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

from mdbatch import findings as fk
from mdbatch.generate import generate_campaign, inject_fault
from mdbatch.registry import Registry
from mdbatch.repair import SimTask, plan_simulation
from mdbatch.repair.fixes import build_after, parsed, recheck
from mdbatch.scan import ScanOptions, scan_simulation

NOW = "2030-01-01T00:00:00+00:00"
SIM = "4D8FA6AF45D2D346C1109DB36CA4E4DEC66DEA68"  # seed 2: area_per_lipid (294 rows), artifact bilayer_snapshot (2 files)


@pytest.fixture
def sim(tmp_path: Path) -> Path:
    camp = generate_campaign(tmp_path / "c", 6, seed=2)
    return camp.dest / SIM


def _plan(sim: Path, kind: str, item: str) -> Any:
    return plan_simulation(SimTask(SIM, str(sim), ((kind, item),)), now=NOW)


def _after(plan: Any) -> dict[str, Any]:
    return json.loads(plan.after)


def _clean_after_fix(sim: Path, plan: Any) -> None:
    """Written, the plan's registry leaves the scan with no finding."""
    (sim / ".analysis" / "metadata.json").write_bytes(plan.after)
    assert scan_simulation(sim, options=ScanOptions(hash_files=False)).findings == ()


def test_row_count_and_columns_take_the_footer_and_keep_created_at(sim: Path) -> None:
    before = json.loads((sim / ".analysis" / "metadata.json").read_bytes())["analyses"]["area_per_lipid"]
    inject_fault(sim, fk.ROW_COUNT_MISMATCH)
    plan = _plan(sim, fk.ROW_COUNT_MISMATCH, "area_per_lipid")
    assert [(f.kind, f.detail) for f in plan.fixes] == [(fk.ROW_COUNT_MISMATCH, "row_count 301 -> 294 (parquet footer)")]
    entry = _after(plan)["analyses"]["area_per_lipid"]
    assert entry == {**before, "updated_at": NOW}
    _clean_after_fix(sim, plan)
    inject_fault(sim, fk.COLUMNS_MISMATCH)
    plan = _plan(sim, fk.COLUMNS_MISMATCH, "area_per_lipid")
    assert _after(plan)["analyses"]["area_per_lipid"]["columns"] == ["frame", "time_ps", "value"]
    _clean_after_fix(sim, plan)


def test_extra_missing_and_artifact_fixes(sim: Path) -> None:
    inject_fault(sim, fk.EXTRA_FILE)
    plan = _plan(sim, fk.EXTRA_FILE, ".analysis/stray.parquet")
    stray = _after(plan)["analyses"]["stray"]
    assert (stray["filename"], stray["created_at"], stray["updated_at"], stray["extras"]) == ("stray.parquet", NOW, NOW, {})
    _clean_after_fix(sim, plan)
    inject_fault(sim, fk.MISSING_FILE)
    plan = _plan(sim, fk.MISSING_FILE, "area_per_lipid")
    assert "area_per_lipid" not in _after(plan)["analyses"]
    _clean_after_fix(sim, plan)
    inject_fault(sim, fk.ARTIFACT_MISSING_FILE)
    item = "bilayer_snapshot:artifacts/bilayer_snapshot/snapshot.png"
    plan = _plan(sim, fk.ARTIFACT_MISSING_FILE, item)
    art = _after(plan)["artifacts"]["bilayer_snapshot"]
    assert art["files"] == ["artifacts/bilayer_snapshot/snapshot.pdb"] and list(art["checksums"]) == art["files"]
    _clean_after_fix(sim, plan)


def test_checksum_and_rebuild(sim: Path) -> None:
    inject_fault(sim, fk.ARTIFACT_CHECKSUM_MISMATCH)
    item = "bilayer_snapshot:artifacts/bilayer_snapshot/snapshot.png"
    plan = _plan(sim, fk.ARTIFACT_CHECKSUM_MISMATCH, item)
    digest = plan.fixes[0].facts["sha256"]
    assert _after(plan)["artifacts"]["bilayer_snapshot"]["checksums"]["artifacts/bilayer_snapshot/snapshot.png"] == digest
    _clean_after_fix(sim, plan)
    inject_fault(sim, fk.REGISTRY_CORRUPT)
    plan = _plan(sim, fk.REGISTRY_CORRUPT, ".analysis/metadata.json")
    names = sorted(p.name.removesuffix(".parquet") for p in (sim / ".analysis").glob("*.parquet"))
    assert sorted(_after(plan)["analyses"]) == names and _after(plan)["artifacts"] == {}
    _clean_after_fix(sim, plan)


def test_a_finding_that_no_longer_holds_is_skipped_with_its_reason(sim: Path) -> None:
    plan = _plan(sim, fk.ROW_COUNT_MISMATCH, "area_per_lipid")
    assert plan.fixes == () and [s.reason for s in plan.skipped] == ["the registry already says 294 rows"]
    assert plan.after == plan.before and not plan.changes
    plan = _plan(sim, fk.UNSAFE_PATH, "bilayer_snapshot:/etc/hostname")
    assert [s.reason for s in plan.skipped] == ["unsafe_path is never fixed automatically"]


def test_the_recheck_under_the_lock_sees_a_changed_file_and_keeps_a_concurrent_entry(sim: Path) -> None:
    inject_fault(sim, fk.ROW_COUNT_MISMATCH)
    plan = _plan(sim, fk.ROW_COUNT_MISMATCH, "area_per_lipid")
    analysis = str(sim / ".analysis")
    # Another writer registers an analysis after the plan: the fix applies to the registry as it is now.
    import pandas as pd

    Registry(sim).add_analysis("later", pd.DataFrame({"x": [1]}))
    now = (sim / ".analysis" / "metadata.json").read_bytes()
    assert recheck(plan.fixes[0], parsed(now), now, analysis) is None
    after = json.loads(build_after(now, list(plan.fixes), NOW))
    assert after["analyses"]["later"]["row_count"] == 1 and after["analyses"]["area_per_lipid"]["row_count"] == 294
    # The parquet file is rewritten after the plan: its stat moved, the fix is not trusted.
    target = sim / ".analysis" / "area_per_lipid.parquet"
    os.utime(target, ns=(1, 1))
    assert recheck(plan.fixes[0], parsed(now), now, analysis) == "area_per_lipid.parquet changed since it was read"
