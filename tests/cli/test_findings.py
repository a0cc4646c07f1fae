"""`mdbatch findings` and `audit --fail-on`: a stored run's findings, and what a nightly job gates on."""

from __future__ import annotations

import csv
import io
import json
import os
import pty
import subprocess
import sys
from pathlib import Path

import pytest

from mdbatch.auditing import AuditResult
from mdbatch.catalog import open_catalog, queries

from ..conftest import expected
from .conftest import mdbatch, one_line_error

pytestmark = pytest.mark.integration


def break_one_analysis(root: Path, sims: list[str]) -> tuple[str, str]:
    """Delete a registered analysis parquet of a simulation that has one: (simulation, analysis name)."""
    for sim in sorted(sims):
        registry = root / sim / ".analysis" / "metadata.json"
        if registry.exists():
            analyses = json.loads(registry.read_text())["analyses"]
            for name, entry in sorted(analyses.items()):
                target = root / sim / ".analysis" / entry["filename"]
                if target.exists():
                    target.unlink()
                    return sim, name
    raise AssertionError("no simulation with a registered analysis")


@pytest.fixture
def faulty(make_campaign, tmp_path, audit_into):
    """A campaign with one fault of each kind, audited once: (result, catalog URL, first audit)."""
    result = make_campaign(20, seed=61, faults=True)
    url = f"sqlite:///{tmp_path / 'c.db'}"
    return result, url, audit_into(result.dest, url)


def test_findings_query_carries_hash_and_directory_that_join_systems(faulty):
    result, url, first = faulty
    with open_catalog(url) as catalog:
        found = queries.findings(catalog)
        systems = queries.systems(catalog)
    assert list(found.columns) == ["run_id", "simulation", "kind", "item", "detail", "hash", "directory"]
    assert set(zip(found["simulation"], found["kind"], found["item"], strict=True)) == expected(result)
    joined = found.dropna(subset=["hash"]).merge(systems[["hash", "directory"]], on="hash", suffixes=("", "_systems"))
    assert len(joined) == found["hash"].notna().sum() > 0
    assert (joined["directory"] == joined["directory_systems"]).all()
    assert all(d == os.path.join(str(result.dest), s) for d, s in zip(found["directory"], found["simulation"], strict=True))


def test_fail_on_and_findings_new_across_audits(faulty, audit_into):
    result, url, first = faulty
    total = first.summary["findings_total"]
    # A first audit: every finding is new.
    assert (first.exit_status("any"), first.exit_status("new"), first.exit_status("none")) == (1, 1, 0)
    assert first.new_findings == total
    again = audit_into(result.dest, url)
    assert (again.exit_status("any"), again.exit_status("new"), again.exit_status("none")) == (1, 0, 0)
    with open_catalog(url) as catalog:
        assert len(queries.findings(catalog, first.run_id, new=True)) == total
        assert len(queries.findings(catalog, again.run_id, new=True)) == 0
    sim, item = break_one_analysis(result.dest, result.simulations)
    third = audit_into(result.dest, url)
    assert (third.exit_status("any"), third.exit_status("new"), third.new_findings) == (1, 1, 1)
    with open_catalog(url) as catalog:
        new = queries.findings(catalog, "last", new=True)
    assert list(zip(new["simulation"], new["kind"], new["item"], strict=True)) == [(sim, "missing_file", item)]


def test_an_interrupted_audit_exits_3_whatever_fail_on_says():
    summary = {"outcome": "interrupted", "findings_total": 4, "first_audit": True}
    result = AuditResult(run_id="r", summary=summary, catalog_url="sqlite://")
    assert [result.exit_status(f) for f in ("any", "new", "none")] == [3, 3, 3]


def test_cli_fail_on_exit_codes(make_campaign, tmp_path):
    result = make_campaign(15, seed=62, faults=True)
    db = f"sqlite:///{tmp_path / 'c.db'}"
    base = ("audit", str(result.dest), "--db", db, "--quiet", "--no-dashboard", "--workers", "1")
    assert mdbatch(*base, "--fail-on", "new", tmp=tmp_path).returncode == 1  # first audit: all new
    assert mdbatch(*base, "--fail-on", "new", tmp=tmp_path).returncode == 0  # nothing new since
    assert mdbatch(*base, tmp=tmp_path).returncode == 1  # default any: the findings persist
    assert mdbatch(*base, "--fail-on", "none", tmp=tmp_path).returncode == 0
    one_line_error(mdbatch(*base, "--fail-on", "some", tmp=tmp_path), "--fail-on", "invalid choice")


def test_cli_findings_filters_and_formats(faulty, cli, tmp_path):
    result, url, first = faulty
    every = sorted(expected(result))
    piped = cli("findings", "--db", url)  # not a terminal: JSON lines with every column
    assert piped.returncode == 0, piped.stderr
    rows = [json.loads(line) for line in piped.stdout.splitlines()]
    assert sorted((r["simulation"], r["kind"], r["item"]) for r in rows) == every
    assert set(rows[0]) == {"run_id", "simulation", "kind", "item", "detail", "hash", "directory"}

    kinds = "missing_file,extra_file"
    some = cli("findings", first.run_id, "--db", url, "--kind", kinds, "--output", "-")
    got = sorted((r["simulation"], r["kind"], r["item"]) for r in map(json.loads, some.stdout.splitlines()))
    assert got == [f for f in every if f[1] in kinds.split(",")] and got

    sim = every[0][0]
    by_dir = cli("findings", "--db", url, "--simulation", str(result.dest / sim), "--format", "csv")
    table = list(csv.DictReader(io.StringIO(by_dir.stdout)))
    assert sorted((r["simulation"], r["kind"], r["item"]) for r in table) == [f for f in every if f[0] == sim]

    shown = cli("findings", "--db", url, "--format", "table", "--kind", "missing_file")
    lines = shown.stdout.splitlines()
    assert lines[1].split() == ["simulation", "kind", "item", "detail"]
    n = sum(1 for f in every if f[1] == "missing_file")
    assert lines[-1] == f"({n} row{'s' if n != 1 else ''})" and len(lines) == 1 + 2 + n + 1

    out = tmp_path / "f.csv"
    wrote = cli("findings", "--db", url, "--output", str(out))
    assert wrote.stdout == f"wrote {len(every)} rows to {out}\n"
    assert next(csv.reader(out.open())) == ["run_id", "simulation", "kind", "item", "detail", "hash", "directory"]
    none_new = cli("findings", "--db", url, "--new", "--format", "table", "--kind", "missing_file")
    assert f"({n} row" in none_new.stdout  # a first audit: all new


def test_cli_findings_errors(faulty, cli):
    result, url, first = faulty
    one_line_error(cli("findings", "--db", url, "--kind", "missing_file,bogus"), "unknown kind bogus", "known kinds: missing_file")
    one_line_error(cli("findings", "nope", "--db", url), "no run 'nope'")
    one_line_error(cli("findings", "--db", url, "--format", "table", "--output", "x.csv"), "--format table is for the terminal")


def test_cli_findings_default_is_a_table_on_a_terminal(faulty, tmp_path):
    result, url, first = faulty
    leader, follower = pty.openpty()
    env = {**os.environ, "MDBATCH_CONFIG": str(tmp_path / "none.toml"), "COLUMNS": "200"}
    proc = subprocess.run(
        [sys.executable, "-m", "mdbatch", "findings", "--db", url, "--kind", "missing_file"],
        stdout=follower,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        env=env,
        timeout=120,
    )
    os.close(follower)
    out = b""
    while True:
        try:
            chunk = os.read(leader, 65536)
        except OSError:  # EIO: the terminal's other end is closed and drained
            break
        if not chunk:
            break
        out += chunk
    os.close(leader)
    lines = out.decode().replace("\r\n", "\n").splitlines()
    n = sum(1 for f in expected(result) if f[1] == "missing_file")
    assert proc.returncode == 0, proc.stderr
    assert lines[0] == f"findings of audit {first.run_id} (completed) of {result.dest}"
    assert lines[1].split() == ["simulation", "kind", "item", "detail"] and lines[-1] == f"({n} row{'s' if n != 1 else ''})"
