"""What happens to the catalog itself (issue 13, items 6 and 8): damaged, full, shared, and a quiet run.

A damaged SQLite file is named as damaged in one line and never written to; a catalog on a full
filesystem stays intact with its run recorded `failed`; two audits of one root at once never record
each other's simulations as removed; `--quiet` prints nothing on success even when port 8787 is taken.
"""

from __future__ import annotations

import shutil
import socket
import sqlite3
import subprocess
import sys
import threading

import pytest

from ..conftest import IS_ROOT, need_service
from .helpers import mdbatch, one_error_line, rows, summary, value

pytestmark = pytest.mark.integration


def _audit(root, db, *extra: str):
    return mdbatch("audit", root, "--db", f"sqlite:///{db}", "--quiet", "--no-dashboard", "--workers", "2", *extra)


def _damage(path) -> bytes:
    """Overwrite six pages in the middle of a SQLite file, as a bad disk or a torn copy would."""
    data = bytearray(path.read_bytes())
    assert len(data) > 4096 * 10
    data[4096 * 3 : 4096 * 9] = b"\xff" * (4096 * 6)
    path.write_bytes(bytes(data))
    return bytes(data)


@pytest.mark.parametrize(
    "command",
    [
        ["runs", "list"],
        ["runs", "show"],
        ["report", "-o", "{tmp}/r.html"],
        ["audit", "{camp}", "--quiet", "--no-dashboard"],
        ["push", "systems", "{camp}", "--diff", "--quiet"],
        ["runs", "prune", "--older-than", "0"],
    ],
)
def test_a_damaged_sqlite_catalog_is_named_and_never_written(make_campaign, tmp_path, command):
    camp = make_campaign(40, seed=71, faults=True)
    db = tmp_path / "c.db"
    assert _audit(camp.dest, db).returncode == 1
    with sqlite3.connect(db) as conn:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    damaged = _damage(db)
    args = [a.format(tmp=tmp_path, camp=camp.dest) for a in command]
    result = mdbatch(*args, "--db", f"sqlite:///{db}")
    assert result.returncode == 2
    line = one_error_line(result.stderr)
    assert f"catalog {db} is damaged" in line and f"sqlite3 {db} '.recover'" in line
    assert db.read_bytes() == damaged
    assert not (tmp_path / "c.db-wal").exists() or (tmp_path / "c.db-wal").stat().st_size == 0


def test_a_catalog_on_a_full_filesystem_stays_intact_and_its_run_failed(make_campaign, tmp_path):
    need_service(IS_ROOT and shutil.which("mount") is not None, "mounting a 2 MB tmpfs needs root")
    camp = make_campaign(300, seed=72, faults=True)
    small = tmp_path / "small"
    small.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(small)], capture_output=True, text=True)
    need_service(mounted.returncode == 0, f"cannot mount a tmpfs here: {mounted.stderr.strip()}")
    try:
        db = small / "c.db"
        full = _audit(camp.dest, db)
        assert full.returncode == 2
        line = one_error_line(full.stderr)
        assert "full" in line.lower()
        with sqlite3.connect(db) as conn:
            assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
            assert conn.execute("SELECT status FROM MDBATCH_RUNS").fetchall() == [("failed",)]
            committed = conn.execute("SELECT COUNT(*) FROM MDBATCH_SCANNED").fetchone()[0]
            assert committed == conn.execute("SELECT COUNT(DISTINCT simulation) FROM MDBATCH_SIMULATIONS").fetchone()[0]
    finally:
        subprocess.run(["umount", "-l", str(small)], check=False)


def test_two_audits_of_one_root_at_once_leave_one_record(make_campaign, tmp_path):
    camp = make_campaign(60, seed=73, faults=True)
    db = tmp_path / "c.db"
    assert _audit(camp.dest, db).returncode == 1
    out = [tmp_path / "a.json", tmp_path / "b.json"]
    results: list[subprocess.CompletedProcess[str]] = [None, None]  # type: ignore[list-item]
    barrier = threading.Barrier(2)

    def run(i: int) -> None:
        barrier.wait()
        results[i] = _audit(camp.dest, db, "--json", str(out[i]))

    threads = [threading.Thread(target=run, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(300)
    codes = sorted(r.returncode for r in results)
    statuses = sorted(s for (s,) in rows(db, "SELECT status FROM MDBATCH_RUNS"))
    # Either both ran one after the other, or the later one was refused while the first ran.
    assert codes in ([1, 1], [1, 2]), [r.stderr for r in results]
    assert statuses == (["completed"] * 3 if codes == [1, 1] else ["completed", "completed", "refused"])
    assert value(db, "SELECT COUNT(*) FROM MDBATCH_CHANGES WHERE change = 'removed'") == 0
    assert value(db, "SELECT COUNT(*) FROM MDBATCH_SIMULATIONS WHERE removed_run IS NULL") == 60
    for r, path in zip(results, out, strict=True):
        if r.returncode == 1:
            assert summary(path)["changes"]["simulations"] == {"new": 0, "removed": 0, "status_changed": 0}


def test_quiet_is_quiet_with_port_8787_taken(make_campaign, tmp_path):
    camp = make_campaign(60, seed=74)
    holder = socket.socket()
    holder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        holder.bind(("0.0.0.0", 8787))
        holder.listen()
    except OSError:
        pass  # taken already: the condition under test holds anyway
    try:
        for extra in ([], ["--dashboard"]):
            result = subprocess.run(
                [sys.executable, "-m", "mdbatch", "audit", str(camp.dest), "--db", f"sqlite:///{tmp_path / 'c.db'}", "--quiet", *extra],
                capture_output=True,
                text=True,
                timeout=300,
                stdin=subprocess.DEVNULL,
            )
            assert result.returncode == 0 and result.stderr == "" and result.stdout == "", (extra, result.stderr)
        shown = mdbatch("audit", camp.dest, "--db", f"sqlite:///{tmp_path / 'd.db'}", "--dashboard")
        assert shown.returncode == 0
        assert "Dask dashboard at http://" in shown.stderr and ":8787/" not in shown.stderr
    finally:
        holder.close()
