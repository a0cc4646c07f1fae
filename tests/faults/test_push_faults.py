"""A push cut mid-way leaves whole simulations, never halves, and `push --diff` completes it.

Each backend gets several cuts at different moments of a real `mdbatch push analysis` process:
PostgreSQL has its server sessions terminated (`pg_terminate_backend`, only the push's own sessions
in the throwaway test database, picked by application_name) while a COPY streams, between the
statements of a transaction, or at any busy moment; SQLite and CSV pushes are SIGKILLed. After each
cut the catalog is read behind mdbatch's back (sqlite3, psycopg, the CSV files) and every simulation
present must be whole: each item row with its overview row and the reverse, and exactly the rows a
clean push writes for it. Then `push --diff` must complete the catalog to exactly a clean push.

The campaign is small, so the push is cut into many transactions through the documented knobs
(MDBATCH_PUSH_TASK_FRAMES, MDBATCH_PUSH_TRANSACTION_ROWS); the test checks that the split really
happens. The PostgreSQL pushes go through a throttled Unix-socket link, so that a COPY lasts long
enough to be hit while the client is still sending it (the moment that used to add a stray
`error ignored terminating <psycopg.Copy [BAD]>` after the error line).
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import random
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from mdbatch.catalog import Upsert, open_catalog, schema
from mdbatch.catalog.ops import rows_table
from mdbatch.engine import ClusterOptions
from mdbatch.errors import CatalogError
from mdbatch.generate import GenerateResult, generate_campaign
from mdbatch.sync.push import push

from ..sync.test_push import halves, raw, raw_identities, snapshot, unpaired

#: pg_url (a throwaway PostgreSQL schema; skip locally without a server, fail under CI=true) comes from tests/conftest.py.
pytestmark = pytest.mark.integration

SIMS = 60
#: Frames per serialize task and rows per transaction: a push of SIMS simulations makes ~40 transactions.
KNOBS = {"MDBATCH_PUSH_TASK_FRAMES": "3", "MDBATCH_PUSH_TRANSACTION_ROWS": "1"}


class SlowLink:
    """A Unix-socket front for a PostgreSQL server that passes client->server bytes at `rate` bytes/s.

    A slow link to a shared server, on this machine only: a COPY then takes long enough that a
    termination lands while the client is still sending it.
    """

    def __init__(self, directory: str, target: tuple[str, int], rate: int = 256 << 10) -> None:
        self.target, self.rate = target, rate
        self.listener = socket.socket(socket.AF_UNIX)
        self.listener.bind(os.path.join(directory, ".s.PGSQL.5432"))
        self.listener.listen(16)
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            server = socket.create_connection(self.target)
            threading.Thread(target=self._pump, args=(client, server, True), daemon=True).start()
            threading.Thread(target=self._pump, args=(server, client, False), daemon=True).start()

    def _pump(self, source: socket.socket, sink: socket.socket, slow: bool) -> None:
        try:
            while data := source.recv(8192):
                sink.sendall(data)
                if slow:
                    time.sleep(len(data) / self.rate)
        except OSError:
            pass
        finally:  # one side gone: the other goes too, as when a server session ends
            for s in (source, sink):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
                s.close()

    def close(self) -> None:
        self.listener.close()


@pytest.fixture(scope="module")
def scheduler() -> Iterator[str]:
    from distributed import LocalCluster

    with LocalCluster(
        n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1", dashboard_address=None, silence_logs=logging.ERROR
    ) as c:
        yield c.scheduler_address


@pytest.fixture(scope="module")
def campaign(tmp_path_factory: pytest.TempPathFactory) -> GenerateResult:
    return generate_campaign(tmp_path_factory.mktemp("push-faults") / "campaign", SIMS, seed=71)


@pytest.fixture(scope="module")
def clean(campaign: GenerateResult, scheduler: str, tmp_path_factory: pytest.TempPathFactory) -> tuple[str, set[tuple[Any, ...]]]:
    """A clean push of the campaign with the test's knobs (SQLite): its URL and row identities."""
    url = f"sqlite:///{tmp_path_factory.mktemp('clean') / 'clean.db'}"
    with pytest.MonkeyPatch.context() as m:
        for name, value in KNOBS.items():
            m.setenv(name, value)
        result = push(campaign.dest, "analysis", db=url, cluster=ClusterOptions(scheduler=scheduler), progress=False)
    frames = sum(n for t, n in result.written.items() if t != schema.OVERVIEW_TABLE)
    # The campaign really is cut: many serialize tasks of whole simulations, each its own transaction.
    assert result.serialize_tasks >= math.ceil(frames / int(KNOBS["MDBATCH_PUSH_TASK_FRAMES"])) > 30
    assert result.transactions == result.serialize_tasks
    return url, raw_identities(url)


def start_push(url: str, campaign: GenerateResult, scheduler: str, tmp: Path, *extra: str) -> subprocess.Popen[str]:
    env = {k: v for k, v in os.environ.items() if k != "MDBATCH_DB"}
    env.update(KNOBS, MDBATCH_CONFIG=str(tmp / "none.toml"))
    return subprocess.Popen(
        [sys.executable, "-m", "mdbatch", "push", "analysis", str(campaign.dest), "--db", url, "--scheduler", scheduler, "--quiet", *extra],
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )


def cut_when(
    proc: subprocess.Popen[str], ready: Callable[[], bool], cut: Callable[[], None], *, again: bool = False, timeout: float = 120
) -> tuple[int, str]:
    """Poll `ready` while the push runs and `cut` once it holds (with `again`, each time it holds
    until the push ends: a cut that only met an idle pooled session does not stop it). Exit status, stderr."""
    deadline = time.monotonic() + timeout
    while proc.poll() is None and time.monotonic() < deadline:
        if ready():
            cut()
            if not again:
                break
            time.sleep(0.05)
        time.sleep(0.002)
    _, err = proc.communicate(timeout=timeout)
    return proc.returncode, err


def assert_whole(url: str, clean: set[tuple[Any, ...]], committed_before: int) -> set[tuple[Any, ...]]:
    """The catalog holds whole simulations only, more than before the cut and not all of them."""
    found = raw_identities(url)
    assert unpaired(found) == set()
    assert halves(found, clean) == {}
    assert committed_before < len(found) < len(clean), (committed_before, len(found), len(clean))
    return found


def assert_completes(url: str, campaign: GenerateResult, scheduler: str, tmp: Path, clean_url: str, clean: set[tuple[Any, ...]]) -> None:
    """`push --diff` writes exactly what is missing; the catalog then equals a clean push, row for row."""
    before = Counter(r[0] for r in raw_identities(url))
    proc = start_push(url, campaign, scheduler, tmp, "--diff", "--json", "-")
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err
    wanted = Counter(r[0] for r in clean) - before
    assert json.loads(out)["written"] == dict(sorted(wanted.items()))
    assert raw_identities(url) == clean
    assert snapshot(url) == snapshot(clean_url)


def committed(url: str, monitor: Any = None) -> int:
    """Overview rows committed so far, counted without mdbatch (0 before the catalog has the table).

    Cheap enough to poll: one count on SQLite, or on PostgreSQL through the open `monitor`
    connection; the lines of the CSV file (overview values never span lines).
    """
    if url.startswith("csv"):
        path = Path(url.split("://", 1)[1]) / f"{schema.OVERVIEW_TABLE}.csv"
        with contextlib.suppress(FileNotFoundError), path.open("rb") as handle:
            return max(0, sum(1 for _ in handle) - 1)
        return 0
    query = f'SELECT count(*) FROM "{schema.OVERVIEW_TABLE}"'
    if monitor is not None:
        import psycopg

        try:
            return int(monitor.execute(query).fetchone()[0])
        except psycopg.errors.UndefinedTable:
            return 0
    if url.startswith("sqlite") and not Path(url.split("///", 1)[1]).exists():
        return 0  # sqlite3 would create it
    try:
        return int(raw(url, query)[0][0])
    except sqlite3.OperationalError:  # no such table yet
        return 0


def threshold(url: str, clean: set[tuple[Any, ...]], fraction: float) -> tuple[int, int]:
    """(overview rows committed now, the count to wait for: `fraction` of the way to all of them)."""
    now = len([r for r in raw_identities(url) if r[0] == schema.OVERVIEW_TABLE])
    total = sum(1 for r in clean if r[0] == schema.OVERVIEW_TABLE)
    return now, now + max(1, int(fraction * (total - now)))


@pytest.mark.parametrize("backend", ["sqlite", "csv"])
def test_killed_push_leaves_whole_simulations(backend, campaign, scheduler, clean, tmp_path):
    url = f"sqlite:///{tmp_path / 'catalog.db'}" if backend == "sqlite" else f"csv://{tmp_path / 'catalog'}"
    rng = random.Random(f"push-kill-{backend}")
    for attempt, fraction in enumerate((0.15, 0.3, 0.3)):
        rows_before = len(raw_identities(url)) if attempt else 0
        start, target = threshold(url, clean[1], fraction)
        proc = start_push(url, campaign, scheduler, tmp_path, *(["--diff"] if attempt else []))
        delay = rng.uniform(0, 0.005)  # a random moment after the threshold: inside a write, or between two

        def kill(proc: subprocess.Popen[str] = proc, delay: float = delay) -> None:
            time.sleep(delay)
            os.killpg(proc.pid, signal.SIGKILL)

        code, err = cut_when(proc, lambda target=target: committed(url) >= target, kill)
        assert code == -signal.SIGKILL, f"attempt {attempt}: the push ended before the kill ({code}): {err}"
        if backend == "csv":
            # The next user of a CSV catalog completes (or drops) a commit cut between its renames.
            with open_catalog(url) as cat:
                cat.tables()
        assert_whole(url, clean[1], rows_before)
        assert start <= committed(url)
    assert_completes(url, campaign, scheduler, tmp_path, clean[0], clean[1])


def test_postgres_push_cut_by_the_server_leaves_whole_simulations(campaign, scheduler, clean, pg_url, tmp_path):
    import psycopg
    from sqlalchemy.engine import URL, make_url

    target = make_url(pg_url)
    link_dir = tempfile.mkdtemp(prefix="mdb-link-")  # short: a socket path is at most 107 bytes
    link = SlowLink(link_dir, (target.host or "127.0.0.1", target.port or 5432))
    app = f"mdbatch-push-fault-{os.getpid()}"
    url = URL.create(
        target.drivername,
        username=target.username,
        password=target.password,
        database=target.database,
        query={**target.query, "host": link_dir, "application_name": app},
    ).render_as_string(hide_password=False)
    moments: dict[str, Callable[[list[tuple[str, str]]], bool]] = {
        "while a COPY streams": lambda s: any(state == "active" and query.startswith("COPY") for state, query in s),
        "between two statements": lambda s: any(state == "idle in transaction" for state, _ in s),
        "at any busy moment": lambda s: any(state != "idle" for state, _ in s),
    }
    monitor = psycopg.connect(pg_url.replace("+psycopg", "", 1), autocommit=True)
    try:

        def sessions() -> list[tuple[str, str]]:
            return monitor.execute(
                "SELECT coalesce(state, ''), coalesce(query, '') FROM pg_stat_activity WHERE datname = current_database() "
                "AND application_name = %s",
                (app,),
            ).fetchall()

        def terminate() -> None:
            monitor.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = current_database() AND application_name = %s",
                (app,),
            )

        for attempt, (moment, busy) in enumerate(moments.items()):
            rows_before = len(raw_identities(pg_url)) if attempt else 0
            start, goal = threshold(pg_url, clean[1], 0.15) if attempt else (0, 1)
            proc = start_push(url, campaign, scheduler, tmp_path, *(["--diff"] if attempt else []))
            code, err = cut_when(
                proc, lambda goal=goal, busy=busy: committed(pg_url, monitor) >= goal and busy(sessions()), terminate, again=True
            )
            assert code == 2, f"{moment}: the push was not cut ({code}): {err}"
            lines = [line for line in err.splitlines() if line.strip()]
            assert len(lines) == 1 and lines[0].startswith(f"error: catalog {url.split('?')[0]}"), f"{moment}: {err}"
            assert_whole(pg_url, clean[1], rows_before)
            assert start <= committed(pg_url, monitor)
        assert_completes(pg_url, campaign, scheduler, tmp_path, clean[0], clean[1])
    finally:
        monitor.close()
        link.close()
        shutil.rmtree(link_dir, ignore_errors=True)


def test_lost_connection_mid_copy_is_one_error_and_no_log(pg_url, caplog):
    """A COPY cut while the client is still sending: one CatalogError line, nothing logged, nothing written."""
    import psycopg
    from sqlalchemy.engine import URL, make_url

    target = make_url(pg_url)
    link_dir = tempfile.mkdtemp(prefix="mdb-link-")
    link = SlowLink(link_dir, (target.host or "127.0.0.1", target.port or 5432), rate=1 << 20)
    app = f"mdbatch-copy-fault-{os.getpid()}"
    url = URL.create(
        target.drivername,
        username=target.username,
        database=target.database,
        query={**target.query, "host": link_dir, "application_name": app},
    ).render_as_string(hide_password=False)
    # 4 MB of rows: psycopg sends a COPY in 1 MB flushes, so the cut lands inside the COPY block.
    rows = rows_table(
        schema.RUN_DATABASE,
        [{"hash": f"{i:040X}", "input_data": "x" * (128 << 10), "status": "completed", "directory": f"/d/{i}"} for i in range(32)],
    )
    monitor = psycopg.connect(pg_url.replace("+psycopg", "", 1), autocommit=True)

    def cut() -> None:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            streaming = monitor.execute(
                "SELECT pid FROM pg_stat_activity WHERE datname = current_database() AND application_name = %s "
                "AND state = 'active' AND query LIKE 'COPY%%'",
                (app,),
            ).fetchall()
            if streaming:
                time.sleep(0.3)  # well inside the 4 s the link takes to carry it
                monitor.execute(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = current_database() AND application_name = %s",
                    (app,),
                )
                return
            time.sleep(0.005)

    try:
        with open_catalog(url) as cat:
            cat.init_schema()
            cutter = threading.Thread(target=cut)
            cutter.start()
            with caplog.at_level(logging.WARNING), pytest.raises(CatalogError) as failed:
                cat.apply([Upsert(schema.RUN_TABLE, rows)])
            cutter.join()
            message = str(failed.value)
            assert "\n" not in message and message.startswith(f"catalog {url.split('?')[0]}"), message
            assert [r.getMessage() for r in caplog.records] == []
            # The dead connection was dropped, not handed back to the pool: the catalog works on.
            assert cat.count_rows(schema.RUN_TABLE) == 0
        assert raw(pg_url, 'SELECT count(*) FROM "RUN_DATABASE"') == [(0,)]
    finally:
        monitor.close()
        link.close()
        shutil.rmtree(link_dir, ignore_errors=True)
