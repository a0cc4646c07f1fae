"""The catalog commands as users run them: push, pull, clear, init-db, config; errors, kills, concurrency."""

from __future__ import annotations

import json
import logging
import os
import re
import signal
import stat
import subprocess
import sys
import textwrap
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from mdbatch.catalog import open_catalog, schema

from .test_push import halves, raw_identities, registered, snapshot

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def scheduler():
    from distributed import LocalCluster

    with LocalCluster(
        n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1", dashboard_address=None, silence_logs=logging.ERROR
    ) as c:
        yield c.scheduler_address


def run(*args: str, tmp: Path, env: dict[str, str] | None = None, **kw) -> subprocess.CompletedProcess[str]:
    full = {k: v for k, v in os.environ.items() if k != "MDBATCH_DB"}
    full["MDBATCH_CONFIG"] = str(tmp / "config.toml")
    full.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "mdbatch", *args], env=full, capture_output=True, text=True, timeout=300, stdin=subprocess.DEVNULL, **kw
    )


class Ran:
    """What an in-process `mdbatch` call returned and printed (same shape as CompletedProcess)."""

    def __init__(self, returncode: int, stdout: str, stderr: str) -> None:
        self.returncode, self.stdout, self.stderr = returncode, stdout, stderr


@pytest.fixture
def cli(capsys, monkeypatch, tmp_path):
    """Run `mdbatch ARGS` in this process (no interpreter start-up); MDBATCH_CONFIG isolated in tmp_path."""
    from mdbatch.cli import main

    monkeypatch.delenv("MDBATCH_DB", raising=False)
    monkeypatch.setenv("MDBATCH_CONFIG", str(tmp_path / "config.toml"))

    def call(*args: str, env: dict[str, str] | None = None) -> Ran:
        with monkeypatch.context() as m:
            for k, v in (env or {}).items():
                m.setenv(k, v)
            capsys.readouterr()
            code = main(list(args))
            out = capsys.readouterr()
        return Ran(code, out.out, out.err)

    return call


def one_line_error(proc: subprocess.CompletedProcess[str] | Ran, *fragments: str) -> str:
    assert proc.returncode == 2, (proc.stdout, proc.stderr)
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in proc.stderr, proc.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    return lines[0]


def count(url: str, table: str) -> int:
    with open_catalog(url) as cat:
        return cat.count_rows(table)


def test_push_pull_clear_round_trip(tmp_path, make_campaign, scheduler, cli):
    result = make_campaign(16, seed=41)
    db = f"sqlite:///{tmp_path / 'cat.db'}"
    base = ["--db", db, "--scheduler", scheduler, "--quiet"]
    for what in ("systems", "analysis", "artifacts"):
        proc = cli("push", what, str(result.dest), *base, "--json", str(tmp_path / f"{what}.json"))
        assert proc.returncode == 0 and proc.stdout == "", proc.stderr
    summary = json.loads((tmp_path / "analysis.json").read_text())
    assert summary["simulations"] == 16 and summary["outcome"] == "completed"
    assert summary["written"]["ANALYSIS_OVERVIEW"] == sum(registered(result.dest)[0].values())

    dup = cli("push", "systems", str(result.dest), *base)
    one_line_error(dup, "16 records already exist", "--diff", "--force")
    human = cli("push", "systems", str(result.dest), "--db", db, "--scheduler", scheduler, "--diff")
    assert human.returncode == 0 and "skipped (already in the catalog): 16 in RUN_DATABASE" in human.stdout

    table = cli("pull", "systems", "--db", db, "--status", "completed")
    assert table.returncode == 0 and table.stdout.splitlines()[0].split() == [
        "hash",
        "simulation_type",
        "parametrization",
        "status",
        "directory",
    ]
    completed = sum(1 for line in table.stdout.splitlines()[2:-1])
    assert f"({completed} rows)" in table.stdout and completed == count_status(result, "completed")

    out = tmp_path / "systems.json"
    assert cli("pull", "systems", "--db", db, "--output", str(out)).returncode == 0
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(records) == 16 and set(records[0]) >= {"hash", "input_data", "timestamp_utc", "directory"}
    assert stat.S_IMODE(out.stat().st_mode) & 0o044  # an ordinary file, readable as the umask allows

    overview = cli("pull", "analysis", "--db", db, "--overview", "--output", str(tmp_path / "ov.csv"))
    assert overview.returncode == 0 and (tmp_path / "ov.csv").read_text().startswith("hash,item_type,item_name,")
    frames = tmp_path / "apl.parquet"
    rebuilt = cli("pull", "analysis", "--db", db, "--analysis-name", "area_per_lipid", "--output", str(frames))
    assert rebuilt.returncode == 0 and "rebuilt area_per_lipid" in rebuilt.stdout, rebuilt.stderr
    combined = pq.read_table(frames)
    assert combined.column_names[0] == "hash" and combined.num_rows == count_rows_of(db, "area_per_lipid")
    arts = cli("pull", "artifacts", "--db", db, "--artifact-name", "bilayer_snapshot", "--full")
    assert arts.returncode == 0 and "checksums" in arts.stdout.splitlines()[0]

    refused = cli("clear", "analysis", "--analyses", "--db", db)
    one_line_error(refused, "--yes")
    cleared = cli("clear", "analysis", "--analysis-name", "area_per_lipid", "--db", db, "--yes")
    assert cleared.returncode == 0 and "deleted" in cleared.stdout and "from ANALYSIS_area_per_lipid" in cleared.stdout
    assert count(db, "ANALYSIS_area_per_lipid") == 0
    everything = cli("clear", "all", "--db", db, "--yes")
    assert everything.returncode == 0 and "deleted 16 rows from RUN_DATABASE" in everything.stdout
    assert count(db, "RUN_DATABASE") == count(db, "ANALYSIS_OVERVIEW") == 0
    assert count(db, "MDBATCH_RUNS") == 5  # run history is not sync data: 3 pushes, the refused duplicate, --diff
    assert "nothing to delete" in cli("clear", "systems", "--db", db, "--yes").stdout


def test_push_headline_says_what_happened(tmp_path, make_campaign, scheduler, cli):
    result = make_campaign(4, seed=44)
    db = f"sqlite:///{tmp_path / 'cat.db'}"
    tail = rf" for 4 simulations into {re.escape(db)} in \d+\.\ds"
    lines = {}
    for mode in ("", "--diff", "--force"):
        proc = cli("push", "systems", str(result.dest), "--db", db, "--scheduler", scheduler, *([mode] if mode else []))
        assert proc.returncode == 0, proc.stderr
        lines[mode] = proc.stdout.splitlines()
    assert re.fullmatch("push systems: 4 rows written" + tail, lines[""][0]), lines[""]
    assert lines[""][1:] == ["  wrote 4 rows to RUN_DATABASE"]
    assert re.fullmatch("push systems --diff: 0 rows written, 4 already in the catalog," + tail, lines["--diff"][0]), lines["--diff"]
    assert lines["--diff"][1:] == ["  wrote nothing new", "  skipped (already in the catalog): 4 in RUN_DATABASE"]
    assert re.fullmatch(r"push systems --force: 4 rows written \(existing keys overwritten\)" + tail, lines["--force"][0])


def count_status(result, status: str) -> int:
    manifest = json.loads(result.manifest_path.read_text())
    return sum(1 for s in manifest["simulations"] if s["status"] == status)


def count_rows_of(db: str, name: str) -> int:
    with open_catalog(db) as cat:
        return sum(r["row_count"] for t in cat.iter_rows(f"ANALYSIS_{name}", None, ["row_count"]) for r in t.to_pylist())


@pytest.mark.parametrize(
    ("args", "fragments"),
    [
        (["push", "systems"], ["exactly one of SOURCE or --csv"]),
        (["push", "analysis", ".", "--artifact-name", "x"], ["--artifact-name goes with push artifacts"]),
        (["push", "analysis", ".", "--analysis-name", "x;drop"], ["invalid name 'x;drop'"]),
        (["push", "systems", ".", "--diff", "--force"], ["not allowed with argument"]),
        (["pull", "systems", "--db", "sqlite:///missing.db"], ["does not exist"]),
        (["pull", "analysis", "--analysis-name", "a", "--overview"], ["not allowed with argument"]),
        (["pull", "systems", "--output", "x.xlsx"], [".csv, .json"]),
        (["clear", "analysis"], ["one of the arguments"]),
        (["push", "systems", ".", "--db", "mysql://u:pw@h/x"], ["unsupported catalog URL", "***"]),
    ],
)
def test_usage_errors_are_one_line(tmp_path, args, fragments):
    line = one_line_error(run(*args, tmp=tmp_path, cwd=tmp_path), *fragments)
    assert "pw@" not in line


def test_missing_table_and_database_errors(tmp_path, cli):
    db = f"sqlite:///{tmp_path / 'c.db'}"
    assert cli("init-db", "--db", db).returncode == 0
    one_line_error(cli("pull", "analysis", "--analysis-name", "nothing", "--db", db), "no table ANALYSIS_nothing")
    empty = tmp_path / "empty.db"
    empty.touch()
    one_line_error(cli("pull", "systems", "--db", f"sqlite:///{empty}"), "no mdbatch schema")
    one_line_error(cli("pull", "systems", "--db", f"csv://{tmp_path / 'nodir'}"), "does not exist")


def test_unreachable_postgres_hides_the_password(tmp_path):
    proc = run("pull", "systems", "--db", "postgresql+psycopg://postgres:s3cr3t@127.0.0.1:1/none", tmp=tmp_path)
    line = one_line_error(proc, "catalog postgresql+psycopg://postgres:***@127.0.0.1:1/none")
    assert "s3cr3t" not in proc.stderr + proc.stdout and len(line) < 400


def test_missing_postgres_database_or_role_is_one_line(tmp_path, pg_url):
    server = pg_url.split("?")[0].rsplit("/", 1)[0]
    url = server.replace("postgres@", "postgres:pw@") + "/mdbatch_no_such_database"
    one_line_error(run("init-db", "--db", url, tmp=tmp_path), "does not exist", ":***@")
    stranger = server.replace("postgres@", "mdbatch_no_such_role:pw@") + "/postgres"
    proc = run("pull", "systems", "--db", stranger, tmp=tmp_path)
    one_line_error(proc, "mdbatch_no_such_role", ":***@")
    assert "pw@" not in proc.stderr


def test_init_db_and_config(tmp_path, cli):
    cfg = tmp_path / "config.toml"
    secret_url = "postgresql+psycopg://lab:hunter2@db.example.org:5432/campaigns"
    made = cli("config", "init", "--db", secret_url)
    assert made.returncode == 0 and "hunter2" not in made.stdout and cfg.exists()
    assert stat.S_IMODE(cfg.stat().st_mode) == 0o600
    assert cli("config", "path").stdout.strip() == str(cfg)
    shown = cli("config", "show")
    assert "hunter2" not in shown.stdout and "lab:***@db.example.org" in shown.stdout and "from config file" in shown.stdout
    env = cli("config", "show", env={"MDBATCH_DB": f"sqlite:///{tmp_path / 'env.db'}"})
    assert f"catalog.url = sqlite:///{tmp_path / 'env.db'}" in env.stdout and "$MDBATCH_DB" in env.stdout
    one_line_error(cli("config", "init"), "already exists", "--force")
    cfg.write_text("[catalog]\nurl = 5\n")
    one_line_error(cli("config", "show"), "catalog.url must be a string")

    cfg.write_text(f'[catalog]\nurl = "csv://{tmp_path / "csvcat"}"\n')
    created = cli("init-db")
    assert created.returncode == 0 and "created the catalog csv://" in created.stdout
    assert (tmp_path / "csvcat" / "RUN_DATABASE.csv").exists()
    one_line_error(cli("init-db", "--force"), "--yes")
    again = cli("init-db", "--force", "--yes")
    assert again.returncode == 0 and "recreated" in again.stdout


KILLER = textwrap.dedent(
    """
    import os, signal, sys
    import mdbatch.sync.push as push_mod
    from mdbatch.catalog.sql import SQLCatalog
    from mdbatch.engine import ClusterOptions

    push_mod.FLUSH_ROWS = push_mod.LOOKUP_ROWS = 1  # one transaction per batch
    calls = 0
    original = SQLCatalog.apply

    def apply(self, ops):
        global calls
        if any(op.table.startswith("ANALYSIS_") for op in ops):
            calls += 1
            if calls == 3:  # die inside the third transaction, after its statements ran, before COMMIT
                self._apply_ops = lambda conn, ops, _orig=self._apply_ops: (_orig(conn, ops), os.kill(os.getpid(), signal.SIGKILL))
        return original(self, ops)

    SQLCatalog.apply = apply
    push_mod.push(sys.argv[1], "analysis", db=sys.argv[2], batch_size=3, progress=False,
                  cluster=ClusterOptions(scheduler=sys.argv[3]), mode=sys.argv[4])
    """
)


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_killed_push_leaves_a_consistent_catalog_that_diff_completes(tmp_path, make_campaign, scheduler, backend, request):
    from ..conftest import backend_url

    url = backend_url(backend, tmp_path, request)
    result = make_campaign(30, seed=42)
    full = {k: v for k, v in os.environ.items() if k != "MDBATCH_DB"}
    proc = subprocess.Popen(
        [sys.executable, "-c", KILLER, str(result.dest), url, scheduler, "error"],
        env=full,
        start_new_session=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == -signal.SIGKILL, err
    clean_db = f"sqlite:///{tmp_path / 'clean.db'}"
    assert run("push", "analysis", str(result.dest), "--db", clean_db, "--scheduler", scheduler, "--quiet", tmp=tmp_path).returncode == 0
    clean = raw_identities(clean_db)
    found = raw_identities(url)
    # Two transactions committed before the kill: whole simulations, each with every row it has in a clean push.
    assert 0 < len(found) < len(clean) and halves(found, clean) == {}
    with open_catalog(url) as cat:
        runs = cat.read_table("MDBATCH_RUNS")
    assert list(runs["status"]) == ["running"]  # the killed run never got to record an outcome

    done = run(
        "push", "analysis", str(result.dest), "--db", url, "--diff", "--scheduler", scheduler, "--json", "-", "--quiet", tmp=tmp_path
    )
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout)
    assert sum(summary["skipped_existing"].values()) == len(found)
    assert sum(summary["written"].values()) == len(clean) - len(found)
    assert raw_identities(url) == clean and snapshot(url) == snapshot(clean_db)
    with open_catalog(url) as cat:
        runs = cat.read_table("MDBATCH_RUNS").sort_values("started_at")
    # The next command to open the catalog found the killed run's process gone.
    assert list(runs["status"]) == ["abandoned", "completed"]


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_eight_pushers_at_once_lose_nothing(tmp_path, make_campaign, scheduler, backend, request):
    from ..conftest import backend_url

    url = backend_url(backend, tmp_path, request)
    result = make_campaign(48, seed=43)
    hashes = {s["dir"]: s["hash"] for s in json.loads(result.manifest_path.read_text())["simulations"]}
    expected: set[tuple[object, ...]] = set()
    for sim, sim_hash in hashes.items():
        registry = result.dest / sim / ".analysis" / "metadata.json"
        for name in json.loads(registry.read_text())["analyses"] if registry.exists() else ():
            expected |= {(f"ANALYSIS_{name}", sim_hash, True), (schema.OVERVIEW_TABLE, sim_hash, "analysis", name, "ok")}
    lists = []
    for i in range(8):
        part = tmp_path / f"part{i}.yaml"
        part.write_text("system_directory:\n" + "".join(f"  - {result.dest / s}\n" for s in result.simulations[i::8]))
        lists.append(part)
    full = {k: v for k, v in os.environ.items() if k != "MDBATCH_DB"}
    full["MDBATCH_CONFIG"] = str(tmp_path / "none.toml")
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "mdbatch", "push", "analysis", str(part), "--db", url, "--scheduler", scheduler, "--quiet"],
            env=full,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for part in lists
    ]
    outcomes = [(p.wait(timeout=600), p.stderr.read()) for p in procs]
    assert all(code == 0 for code, _ in outcomes), outcomes
    assert raw_identities(url) == expected  # every row of every simulation, each once, with its data
    with open_catalog(url) as cat:
        assert cat.count_rows("ANALYSIS_OVERVIEW") == len(expected) // 2
        assert (cat.read_table("MDBATCH_RUNS")["status"] == "completed").sum() == 8
