"""A partial audit records changes only for what it scanned (issue 13, item 2).

The baseline of a simulation is its latest completed scan, whichever run it came from: an audit of
a CSV, a summary YAML or a sub-directory of a root neither removes nor resolves anything outside
itself, and the next full audit reports no spurious new simulation or finding.
"""

from __future__ import annotations

import csv
import shutil

import pytest

from .helpers import mdbatch, rows, summary, value

pytestmark = pytest.mark.integration


def _audit(source, db, out, *extra: str):
    return mdbatch("audit", source, "--db", f"sqlite:///{db}", "--quiet", "--no-dashboard", "--workers", "2", "--json", out, *extra)


def _with_and_without_findings(camp):
    faulty = sorted({f["simulation"] for f in camp.expected_findings})
    clean = [s for s in camp.simulations if s not in faulty]
    return faulty, clean


def test_a_csv_audit_changes_nothing_outside_its_simulations(make_campaign, tmp_path):
    camp = make_campaign(24, seed=51, faults=True)
    db, out = tmp_path / "c.db", tmp_path / "s.json"
    assert _audit(camp.dest, db, out).returncode == 1
    full = summary(out)
    faulty, clean = _with_and_without_findings(camp)
    listed = faulty[:2] + clean[:3]
    table = tmp_path / "five.csv"
    with table.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["directory"])
        writer.writerows([[s] for s in listed])
    partial = _audit(table, db, out, "--csv-root", str(camp.dest))
    assert partial.returncode == 1, partial.stderr
    p = summary(out)
    assert p["simulations"] == 5 and p["root"] == str(camp.dest)
    assert p["changes"]["simulations"] == {"new": 0, "removed": 0, "status_changed": 0}
    assert p["changes"]["findings"]["new"] == 0 and p["changes"]["findings"]["resolved"] == 0
    mine = value(db, "SELECT COUNT(*) FROM MDBATCH_FINDINGS WHERE run_id = ?", full["run_id"])
    listed_findings = value(
        db, f"SELECT COUNT(*) FROM MDBATCH_FINDINGS WHERE run_id = ? AND simulation IN ({','.join('?' * 5)})", full["run_id"], *listed
    )
    assert p["changes"]["findings"]["persisting"] == listed_findings < mine
    assert rows(db, "SELECT scope, change FROM MDBATCH_CHANGES WHERE run_id = ? AND change IN ('resolved', 'removed')", p["run_id"]) == []
    assert value(db, "SELECT COUNT(*) FROM MDBATCH_SIMULATIONS WHERE removed_run IS NULL") == 24

    again = _audit(camp.dest, db, out)
    assert again.returncode == 1
    a = summary(out)
    assert a["changes"]["simulations"] == {"new": 0, "removed": 0, "status_changed": 0}
    assert (a["changes"]["findings"]["new"], a["changes"]["findings"]["resolved"]) == (0, 0)
    assert a["changes"]["findings"]["persisting"] == full["findings_total"]


def test_a_sub_directory_audit_is_part_of_its_root(make_campaign, tmp_path):
    camp = make_campaign(40, seed=52, faults=True, nested=True)
    db, out = tmp_path / "c.db", tmp_path / "s.json"
    assert _audit(camp.dest, db, out).returncode == 1
    group = sorted({s.split("/")[0] for s in camp.simulations if s.startswith("group_")})[0]
    inside = [s for s in camp.simulations if s.startswith(f"{group}/")]
    outside = [s for s in camp.simulations if not s.startswith(f"{group}/")]
    # One simulation inside the sub-directory and one outside it vanish.
    shutil.rmtree(camp.dest / inside[0])
    shutil.rmtree(camp.dest / outside[0])
    sub = _audit(camp.dest / group, db, out)
    assert sub.returncode in (0, 1), sub.stderr
    s = summary(out)
    assert s["root"] == str(camp.dest) and s["scope"] == {"kind": "subtree", "path": group}
    assert s["simulations"] == len(inside) - 1
    assert s["changes"]["simulations"]["removed"] == 1
    assert rows(db, "SELECT simulation FROM MDBATCH_CHANGES WHERE run_id = ? AND change = 'removed'", s["run_id"]) == [(inside[0],)]
    # Outside the sub-directory nothing is removed or resolved.
    assert value(db, "SELECT removed_run FROM MDBATCH_SIMULATIONS WHERE simulation = ?", outside[0]) is None
    assert value(db, "SELECT COUNT(*) FROM MDBATCH_CHANGES WHERE run_id = ? AND simulation NOT LIKE ?", s["run_id"], f"{group}/%") == 0

    again = _audit(camp.dest, db, out)
    a = summary(out)
    assert a["changes"]["simulations"] == {"new": 0, "removed": 1, "status_changed": 0}
    assert rows(db, "SELECT simulation FROM MDBATCH_CHANGES WHERE run_id = ? AND change = 'removed'", a["run_id"]) == [(outside[0],)]
    assert a["changes"]["findings"]["new"] == 0
    assert again.returncode in (0, 1)


def test_runs_diff_across_a_partial_audit_nets_the_changes(make_campaign, tmp_path):
    camp = make_campaign(16, seed=53, faults=True)
    db, out = tmp_path / "c.db", tmp_path / "s.json"
    assert _audit(camp.dest, db, out).returncode == 1
    first = summary(out)["run_id"]
    faulty, _ = _with_and_without_findings(camp)
    table = tmp_path / "one.csv"
    table.write_text(f"directory\n{faulty[0]}\n")
    assert _audit(table, db, out, "--csv-root", str(camp.dest)).returncode == 1
    assert _audit(camp.dest, db, out).returncode == 1
    last = summary(out)["run_id"]
    diff = mdbatch("runs", "diff", first, last, "--db", f"sqlite:///{db}", "--output", tmp_path / "d.csv")
    assert diff.returncode == 0, diff.stderr
    text = (tmp_path / "d.csv").read_text()
    assert "finding" not in text  # nothing changed: the partial audit in between resolved nothing
