"""The nightly sequence end to end: audit, push systems, push analysis, push artifacts, re-audit, push --diff.

An audit records RUN_DATABASE, ANALYSIS_OVERVIEW and the artifact tables itself; a push of those
records right after it says so (and what --diff and --force do) instead of a bare "already exist".
"""

from __future__ import annotations

import json
import re
import shutil
import sqlite3
from collections import Counter
from pathlib import Path

import pytest

from .conftest import one_line_error

pytestmark = pytest.mark.integration


def analyses_of(sim: Path) -> list[str]:
    registry = sim / ".analysis" / "metadata.json"
    return sorted(json.loads(registry.read_text())["analyses"]) if registry.exists() else []


def with_data(db: Path) -> Counter[str]:
    """Rows holding pushed data (data_csv) per ANALYSIS_<name> table, read behind mdbatch's back."""
    with sqlite3.connect(db) as conn:
        tables = [
            r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table' AND name LIKE 'ANALYSIS\\_%' ESCAPE '\\'")
        ]
        return Counter(
            {
                t: conn.execute(f'SELECT COUNT(*) FROM "{t}" WHERE data_csv IS NOT NULL').fetchone()[0]
                for t in tables
                if t != "ANALYSIS_OVERVIEW"
            }
        )


def test_nightly_sequence(make_campaign, tmp_path, scheduler, cli):
    result = make_campaign(16, seed=81)
    root = result.dest
    # Tonight's newcomer is away during the first audit.
    late = next(s for s in sorted(result.simulations) if analyses_of(root / s))
    parked = tmp_path / "parked"
    shutil.move(str(root / late), parked)
    db = tmp_path / "c.db"
    url = f"sqlite:///{db}"
    base = ["--db", url, "--scheduler", scheduler, "--quiet"]

    audit = cli("audit", str(root), *base)
    assert audit.returncode == 0, audit.stderr
    with sqlite3.connect(db) as conn:
        (run_id,) = conn.execute("SELECT run_id FROM MDBATCH_RUNS WHERE command = 'audit'").fetchone()

    systems = cli("push", "systems", str(root), *base)
    line = one_line_error(systems, f"15 records already exist in the catalog (15 in RUN_DATABASE): audit {run_id} of {root} wrote them")
    assert "`push systems --diff` skips them" in line and "--force rewrites them" in line
    diff = cli("push", "systems", str(root), "--db", url, "--scheduler", scheduler, "--diff")
    assert diff.returncode == 0 and re.match(r"push systems --diff: 0 rows written, 15 already in the catalog,", diff.stdout)

    assert with_data(db) == Counter()  # the audit records each analysis without its data
    analysis = cli("push", "analysis", str(root), *base, "--json", "-")
    assert analysis.returncode == 0, analysis.stderr
    expected = Counter(f"ANALYSIS_{name}" for s in result.simulations if s != late for name in analyses_of(root / s))
    assert with_data(db) == expected and json.loads(analysis.stdout)["outcome"] == "completed"

    artifacts = cli("push", "artifacts", str(root), *base)
    one_line_error(artifacts, f"audit {run_id} of {root} wrote them", "`push artifacts --diff` skips them")
    assert cli("push", "artifacts", str(root), *base, "--diff").returncode == 0

    shutil.move(str(parked), root / late)
    reaudit = cli("audit", str(root), *base, "--json", "-")
    assert reaudit.returncode == 0, reaudit.stderr
    changes = json.loads(reaudit.stdout)["changes"]
    assert changes["simulations"]["new"] == 1 and changes["files"]["changed"] == 0

    nightly = cli("push", "analysis", str(root), *base, "--diff", "--json", "-")
    pushed = json.loads(nightly.stdout)
    late_tables = {f"ANALYSIS_{name}": 1 for name in analyses_of(root / late)}
    # Only the newcomer's data, and its overview rows (which a push of its analyses rewrites).
    assert {t: n for t, n in pushed["written"].items() if n} == {**late_tables, "ANALYSIS_OVERVIEW": len(late_tables)}
    assert with_data(db) == expected + Counter(late_tables)  # the re-audit kept every pushed frame
    again = cli("push", "systems", str(root), *base, "--diff", "--json", "-")
    assert json.loads(again.stdout)["skipped_existing"] == {"RUN_DATABASE": 16} and not any(json.loads(again.stdout)["written"].values())
    assert cli("status", str(root), "--db", url).returncode == 0
