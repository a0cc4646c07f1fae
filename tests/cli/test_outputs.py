"""Conventions every command shares: '-' is stdout for every output path, --debug/--quiet go before or
after the subcommand, one table renderer, a readable `runs show`, worker counts in words, progress
of a resumed audit."""

from __future__ import annotations

import csv
import io
import json
import os
import re
import signal
import sqlite3
import subprocess
import sys
import time

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from mdbatch.cli import render
from mdbatch.cli.audit import render_summary

from ..signals import signal_held
from .conftest import mdbatch, one_line_error

pytestmark = pytest.mark.integration


@pytest.fixture
def audited(make_campaign, tmp_path, audit_into):
    """A faulty campaign audited twice (so `runs diff` has two audits): (result, URL, last audit)."""
    result = make_campaign(16, seed=71, faults=True)
    url = f"sqlite:///{tmp_path / 'c.db'}"
    audit_into(result.dest, url, arguments={"root": str(result.dest), "db": url, "workers": 1, "command": "audit", "debug": False})
    return result, url, audit_into(result.dest, url)


def test_dash_is_stdout_for_every_listing(audited, cli, tmp_path, monkeypatch):
    result, url, last = audited
    monkeypatch.chdir(tmp_path)
    page = cli("report", "--db", url, "-o", "-")
    assert page.returncode == 0 and page.stdout.lstrip().lower().startswith("<!doctype html") and page.stdout.rstrip().endswith("</html>")
    assert not (tmp_path / "-").exists() and page.stderr == ""

    systems = cli("pull", "systems", "--db", url, "--output", "-")
    assert sorted(json.loads(line)["directory"] for line in systems.stdout.splitlines()) == sorted(
        str(result.dest / s) for s in result.simulations
    )
    as_csv = cli("pull", "systems", "--db", url, "--format", "csv")
    assert len(list(csv.DictReader(io.StringIO(as_csv.stdout)))) == 16
    runs = cli("runs", "list", "--db", url, "--output", "-")
    assert [json.loads(line)["run_id"] for line in runs.stdout.splitlines()][-1] == last.run_id
    diff = cli("runs", "diff", "--db", url, "-o", "-")
    assert diff.returncode == 0 and diff.stdout == ""  # nothing changed between the two audits: no records
    shown = cli("runs", "show", "--db", url, "-o", "-")
    assert json.loads(shown.stdout)["run_id"] == last.run_id


def test_parquet_to_stdout_is_a_readable_file(audited, tmp_path):
    result, url, last = audited
    proc = subprocess.run(
        [sys.executable, "-m", "mdbatch", "pull", "analysis", "--db", url, "--overview", "--output", "-", "--format", "parquet"],
        capture_output=True,
        timeout=120,
        stdin=subprocess.DEVNULL,
        env={**os.environ, "MDBATCH_CONFIG": str(tmp_path / "none.toml")},
    )
    assert proc.returncode == 0, proc.stderr
    table = pq.read_table(pa.BufferReader(proc.stdout))
    with sqlite3.connect(url.removeprefix("sqlite:///")) as conn:
        rows = conn.execute("SELECT COUNT(*) FROM ANALYSIS_OVERVIEW WHERE item_type = 'analysis'").fetchone()[0]
    assert table.num_rows == rows > 0 and "item_name" in table.column_names


def test_audit_findings_to_stdout_and_one_stdout_output_at_most(make_campaign, tmp_path):
    result = make_campaign(15, seed=72, faults=True)
    db = f"sqlite:///{tmp_path / 'c.db'}"
    file_out = tmp_path / "f.jsonl"
    base = ("audit", str(result.dest), "--db", db, "--no-dashboard", "--workers", "1")
    proc = mdbatch(*base, "--findings", "-", tmp=tmp_path)
    assert proc.returncode == 1, proc.stderr
    again = mdbatch(*base, "--findings", str(file_out), "--quiet", tmp=tmp_path)
    assert sorted(proc.stdout.splitlines()) == sorted(file_out.read_text().splitlines()) and proc.stdout
    assert "findings in" in proc.stderr and again.stdout == ""
    one_line_error(mdbatch(*base, "--findings", "-", "--json", "-", tmp=tmp_path), "only one output can go to stdout")
    one_line_error(mdbatch(*base, "--performance-report", "-", tmp=tmp_path), "give a file name")


def test_dedupe_groups_to_stdout_keep_stdout_for_the_data(make_campaign, tmp_path):
    result = make_campaign(15, seed=73)
    proc = mdbatch("dedupe", str(result.dest), "--groups", "-", "--local", "--no-db", tmp=tmp_path)
    assert proc.returncode == 0, proc.stderr
    groups = [json.loads(line) for line in proc.stdout.splitlines()]
    assert groups and all(set(g) == {"digest", "size", "paths"} for g in groups)
    assert f"{len(groups)} duplicate groups" in proc.stderr


@pytest.mark.parametrize("where", ["before", "after"])
def test_debug_and_quiet_before_or_after_the_subcommand(audited, cli, where):
    result, url, last = audited
    flags = ["--quiet"]
    args = [*flags, "runs", "prune", "--db", url] if where == "before" else ["runs", "prune", "--db", url, *flags]
    assert cli(*args).stdout == ""
    loud = cli("runs", "prune", "--db", url)
    assert loud.stdout.startswith("pruned 0 removed simulations")
    missing = "sqlite:///nonexistent/c.db"
    args = ["--debug", "runs", "list", "--db", missing] if where == "before" else ["runs", "list", "--db", missing, "--debug"]
    debug = cli(*args)
    assert debug.returncode == 2 and "Traceback" in debug.stderr and debug.stderr.rstrip().splitlines()[-1].startswith("error: ")


def test_quiet_after_audit_and_push_as_the_readme_writes_them(make_campaign, tmp_path):
    result = make_campaign(4, seed=74)
    db = f"sqlite:///{tmp_path / 'c.db'}"
    quiet = mdbatch("audit", str(result.dest), "--db", db, "--workers", "1", "--no-dashboard", "--quiet", "--debug", tmp=tmp_path)
    assert (quiet.returncode, quiet.stdout, quiet.stderr) == (0, "", "")
    before = mdbatch("--quiet", "push", "analysis", str(result.dest), "--db", db, "--workers", "1", tmp=tmp_path)
    assert (before.returncode, before.stdout, before.stderr) == (0, "", "")


def test_runs_show_is_readable_and_exports_json_and_csv(audited, cli, tmp_path):
    result, url, last = audited
    first = cli("runs", "list", "--db", url, "-o", "-").stdout.splitlines()[0]
    first_id = json.loads(first)["run_id"]
    text = cli("runs", "show", first_id, "--db", url).stdout
    lines = text.splitlines()
    assert lines[0] == f"audit {first_id}: completed of {result.dest}"
    assert "  options   --db " in text and "--workers 1" in text
    assert "debug" not in text and "func" not in text and "--command" not in text
    assert re.search(r"^  scanned   16 simulations, \d+ files, .* on 1 worker$", text, re.M), text
    assert f"  findings  {last.summary['findings_total']} in " in text
    record = json.loads(cli("runs", "show", first_id, "--db", url, "--format", "json").stdout)
    assert record["arguments"] == {"root": str(result.dest), "db": url, "workers": 1}  # argparse plumbing left out
    assert record["summary"]["simulations"] == 16
    out = tmp_path / "run.csv"
    assert cli("runs", "show", first_id, "--db", url, "--output", str(out)).returncode == 0
    row = next(csv.DictReader(out.open()))
    assert json.loads(row["arguments"]) == record["arguments"] and json.loads(row["summary"])["simulations"] == 16


def test_the_one_table_renderer():
    out = io.StringIO()
    shown = render.table(
        [("a", 1, None), ("a much longer name", 22, "x"), ("/" + "d/" * 40 + "end", 333, "y\nz")], ["name", "count", "note"], out, cell=30
    )
    lines = out.getvalue().splitlines()
    assert shown == 3 and lines[0] == "name                            count  note" and lines[1] == "-" * 30 + "  -----  ----"
    assert lines[2] == "a                                   1" and lines[3].endswith("   22  x")
    assert lines[4].startswith("/d/d/d/d/d…") and lines[4].split()[0].endswith("d/end") and lines[4].endswith("  333  y z")
    assert lines[5] == "(3 rows)"
    out = io.StringIO()
    render.table(((i,) for i in range(5)), ["n"], out, limit=2)
    assert out.getvalue().splitlines() == ["n", "-", "0", "1", "(2 of 5 rows shown)"]
    assert render.csv_cell({"a": [1, 2]}) == '{"a": [1, 2]}' and render.csv_cell(None) == ""


def test_summaries_count_workers_in_words():
    summary = {
        "run_id": "r",
        "outcome": "completed",
        "root": "/c",
        "simulations": 3,
        "files": 9,
        "bytes": 10,
        "elapsed_s": 1.0,
        "status": {},
        "findings_total": 0,
        "catalog": "sqlite://",
    }
    assert "in 1.0s on 1 worker\n" in render_summary({**summary, "workers": 1})
    assert "in 1.0s on 2 workers\n" in render_summary({**summary, "workers": 2})
    assert "in 1.0s on no worker\n" in render_summary({**summary, "workers": None})


def test_a_resumed_audits_progress_counts_what_the_run_has_done(make_campaign, tmp_path):
    result = make_campaign(60, seed=75)
    db = tmp_path / "c.db"
    cmd = [sys.executable, "-m", "mdbatch", "audit", str(result.dest), "--db", f"sqlite:///{db}", "--batch-size", "1", "--workers", "1"]
    env = {**os.environ, "MDBATCH_CONFIG": str(tmp_path / "none.toml"), "MDBATCH_PROGRESS_INTERVAL": "0"}
    proc = subprocess.Popen([*cmd, "--quiet"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        with sqlite3.connect(db, timeout=30) as conn:
            tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master")}
            if "MDBATCH_SCANNED" in tables and conn.execute("SELECT COUNT(*) FROM MDBATCH_SCANNED").fetchone()[0] >= 10:
                break
        time.sleep(0.05)
    assert proc.poll() is None, "the audit ended before it could be signalled"
    signal_held(proc.pid, signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 3, err
    with sqlite3.connect(db) as conn:
        before = conn.execute("SELECT COUNT(*) FROM MDBATCH_SCANNED").fetchone()[0]
    assert 10 <= before < 60
    resumed = subprocess.run([*cmd, "--resume", "last"], capture_output=True, text=True, timeout=300, env=env, stdin=subprocess.DEVNULL)
    assert resumed.returncode == 0, resumed.stderr
    counts = [int(m.group(1)) for m in re.finditer(r"^audit: (\d+)(?:/\d+)? simulations", resumed.stderr, re.M)]
    assert counts[0] == before + 1 and counts[-1] == 60  # the run's count, not this leg's (which starts at 1)
    assert re.search(r"^audit: 60/60 simulations", resumed.stderr, re.M)
