"""`mdbatch status`: what changed on disk since the last audit, from stat calls alone, writing nothing."""

from __future__ import annotations

import builtins
import hashlib
import io
import json
import os
import shutil
import sqlite3
from pathlib import Path

import pytest

from mdbatch.errors import CatalogError, UsageError
from mdbatch.status import status

from .cli import conftest as shared
from .cli.conftest import mdbatch, one_line_error

pytestmark = pytest.mark.integration
#: The CLI tests' fixtures, used here too.
scheduler, audit_into = shared.scheduler, shared.audit_into


def changes_of(report) -> dict[str, tuple[str, list[tuple[str, str, str]]]]:
    """{simulation: (change, [(file change, path, detail)])} of a status report."""
    return {c.simulation: (c.change, [(f.change, f.path, f.detail) for f in c.file_changes]) for c in report.changes}


def catalog_bytes(db: Path) -> dict[str, str]:
    """Digest of every file of a SQLite catalog (the database, its WAL and shared memory if any)."""
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(db.parent.glob(db.name + "*"))}


@pytest.fixture
def audited(make_campaign, tmp_path, audit_into):
    """A clean 6-simulation campaign, audited; (campaign, catalog URL, catalog path, simulation names)."""
    result = make_campaign(6, seed=51)
    db = tmp_path / "c.db"
    url = f"sqlite:///{db}"
    first = audit_into(result.dest, url)
    assert first.summary["findings_total"] == 0
    return result, url, db, sorted(result.simulations)


def test_nothing_changed_is_clean_and_proven_by_fingerprints(audited):
    result, url, db, sims = audited
    report = status(result.dest, db=url)
    assert report.clean and report.changes == []
    assert (report.on_record, report.found, report.unchanged, report.compared) == (6, 6, 6, 0)
    assert report.files_on_record == result.files
    d = report.to_dict()
    assert d["simulations"] == {"on_record": 6, "found": 6, "unchanged": 6, "compared": 0, "new": 0, "vanished": 0, "modified": 0}
    assert d["files"] == {"on_record": result.files, "new": 0, "missing": 0, "changed": 0, "moved": 0}


def test_every_kind_of_change_grouped_per_simulation(audited):
    result, url, db, (a, b, c, d, e, f) = audited
    root = result.dest
    size_before = (root / a / "em.mdp").stat().st_size
    (root / a / "em.mdp").write_text("changed and longer than before\n" * 20)
    (root / a / "notes.txt").write_text("new")
    (root / a / "nvt.mdp").unlink()
    os.rename(root / a / "npt.mdp", root / a / "npt-renamed.mdp")
    os.chmod(root / b / "em.mdp", 0o600)  # ctime only
    os.rename(root / c / "prod.mdp", root / d / "prod-from-c.mdp")
    os.rename(root / e, root / "renamed")
    shutil.rmtree(root / f)
    shutil.copytree(root / b, root / "copied", symlinks=True)
    before = catalog_bytes(db)

    report = status(root, db=url)

    assert changes_of(report) == {
        a: (
            "modified",
            [
                ("changed", "em.mdp", f"size {size_before} -> 620, mtime, ctime"),
                ("new", "notes.txt", ""),
                ("moved", "npt-renamed.mdp", "from npt.mdp"),
                ("missing", "nvt.mdp", ""),
            ],
        ),
        b: ("modified", [("changed", "em.mdp", "ctime")]),
        c: ("modified", [("moved_away", "prod.mdp", f"to {d}/prod-from-c.mdp")]),
        d: ("modified", [("moved", "prod-from-c.mdp", f"from {c}/prod.mdp")]),
        e: ("vanished", []),
        f: ("vanished", []),
        "copied": ("new", []),
        "renamed": ("new", []),
    }
    by_name = {ch.simulation: ch for ch in report.changes}
    assert by_name["renamed"].detail == f"moved from {e}" and by_name[e].detail == "moved to renamed"
    assert by_name[b].status == by_name[b].recorded_status and by_name["copied"].files == by_name[b].files
    assert (report.on_record, report.found, report.unchanged, report.compared) == (6, 6, 0, 4)
    renamed_files = by_name[e].files
    assert report.counts() == {
        "simulations": {"new": 2, "vanished": 2, "modified": 4},
        # new: notes.txt and every file of the copy; moved: the rename in a, the move from c to d, the whole of e
        "files": {"new": 1 + by_name[b].files, "missing": 1 + by_name[f].files, "changed": 2, "moved": 1 + 1 + renamed_files},
    }
    assert catalog_bytes(db) == before  # nothing written, no run recorded
    with sqlite3.connect(db) as conn:
        assert conn.execute("SELECT COUNT(*) FROM MDBATCH_RUNS").fetchone() == (1,)


def test_status_reads_no_file_content(audited, monkeypatch):
    result, url, db, sims = audited
    (result.dest / sims[0] / "em.mdp").write_text("x")  # one simulation compared file by file too
    opened: list[str] = []
    real_open, real_os_open, real_io_open = builtins.open, os.open, io.open
    root = str(result.dest)

    def watch(path, *args, **kwargs):
        if str(path).startswith(root):
            opened.append(str(path))
        return real_open(path, *args, **kwargs)

    def watch_os(path, *args, **kwargs):
        if os.fsdecode(path).startswith(root):
            opened.append(os.fsdecode(path))
        return real_os_open(path, *args, **kwargs)

    monkeypatch.setattr(builtins, "open", watch)
    monkeypatch.setattr(io, "open", watch)
    monkeypatch.setattr(os, "open", watch_os)
    report = status(result.dest, db=url)
    monkeypatch.setattr(builtins, "open", real_open)
    monkeypatch.setattr(io, "open", real_io_open)
    assert [c.simulation for c in report.changes] == [sims[0]]
    assert opened == []


def test_a_fingerprint_that_moved_without_file_changes_is_no_change(audited):
    # A new mdbatch version salts fingerprints differently: the files are compared and found equal.
    result, url, db, sims = audited
    with sqlite3.connect(db) as conn:
        conn.execute("UPDATE MDBATCH_SIMULATIONS SET fingerprint = 'stale' WHERE simulation = ?", (sims[2],))
        conn.execute("UPDATE MDBATCH_SIMULATIONS SET fingerprint = NULL WHERE simulation = ?", (sims[3],))
    report = status(result.dest, db=url)
    assert report.clean and (report.unchanged, report.compared) == (6, 2)


def test_status_of_a_directory_inside_the_root(make_campaign, tmp_path, audit_into):
    result = make_campaign(8, seed=52, nested=True)
    url = f"sqlite:///{tmp_path / 'c.db'}"
    audit_into(result.dest, url)
    groups = sorted({s.split("/")[0] for s in result.simulations})
    inside = sorted(s for s in result.simulations if s.startswith(groups[0] + "/"))
    outside = sorted(s for s in result.simulations if not s.startswith(groups[0] + "/"))
    shutil.rmtree(result.dest / outside[0])  # out of scope: not reported
    (result.dest / inside[0] / "extra.txt").write_text("x")
    report = status(result.dest / groups[0], db=url)
    assert (report.root, report.subtree) == (str(result.dest), groups[0])
    assert changes_of(report) == {inside[0]: ("modified", [("new", "extra.txt", "")])}
    assert (report.on_record, report.found) == (len(inside), len(inside))


def test_errors_name_what_is_missing(make_campaign, tmp_path, audit_into):
    result = make_campaign(2, seed=53)
    with pytest.raises(CatalogError, match="does not exist"):
        status(result.dest, db=f"sqlite:///{tmp_path / 'none.db'}")
    url = f"sqlite:///{tmp_path / 'c.db'}"
    audit_into(result.dest, url)
    with pytest.raises(UsageError, match=f"no completed audit of {tmp_path}/elsewhere"):
        status(tmp_path / "elsewhere", db=url)


def test_cli_exit_codes_json_and_human_view(audited, tmp_path):
    result, url, db, sims = audited
    clean = mdbatch("status", str(result.dest), "--db", url, tmp=tmp_path)
    assert clean.returncode == 0, clean.stderr
    assert f"nothing changed: 6 simulations, {result.files} files as recorded" in clean.stdout

    (result.dest / sims[1] / "new.dat").write_text("x")
    changed = mdbatch("status", str(result.dest), "--db", url, tmp=tmp_path)
    assert changed.returncode == 1, changed.stderr
    lines = changed.stdout.splitlines()
    assert lines[2].split() == ["simulation", "change", "path", "detail"]
    assert lines[4].split()[:2] == [sims[1], "modified"] and lines[5].split() == ["new", "new.dat"]
    assert "1 of 6 simulations differ: 0 new, 0 vanished, 1 modified; files: 1 new, 0 missing, 0 changed, 0 moved" in changed.stdout

    as_json = mdbatch("status", str(result.dest), "--db", url, "--json", "-", tmp=tmp_path)
    assert as_json.returncode == 1
    doc = json.loads(as_json.stdout)  # stdout holds the JSON only; the human view went to stderr
    assert doc["clean"] is False and doc["files"]["new"] == 1 and "1 of 6 simulations differ" in as_json.stderr
    assert [c["simulation"] for c in doc["changes"]] == [sims[1]]
    assert doc["changes"][0]["file_changes"] == [{"change": "new", "path": "new.dat", "size": 1, "fields": [], "detail": ""}]
    quiet = mdbatch("status", str(result.dest), "--db", url, "--quiet", tmp=tmp_path)
    assert (quiet.returncode, quiet.stdout, quiet.stderr) == (1, "", "")


def test_cli_default_root_is_the_working_directory_or_the_last_audit(audited, tmp_path):
    result, url, db, sims = audited
    (result.dest / sims[0] / "x.txt").write_text("x")
    here = mdbatch("status", "--db", url, cwd=result.dest / sims[1], tmp=tmp_path)  # inside the root: that subtree
    assert here.returncode == 0 and f"status of {result.dest} (below {sims[1]})" in here.stdout, here.stderr
    elsewhere = mdbatch("status", "--db", url, cwd=tmp_path, tmp=tmp_path)  # not in an audited root: the last audit's
    assert elsewhere.returncode == 1 and f"status of {result.dest} against audit" in elsewhere.stdout


def test_cli_errors_exit_2(tmp_path, make_campaign, audit_into):
    one_line_error(mdbatch("status", str(tmp_path), "--db", f"sqlite:///{tmp_path / 'none.db'}", tmp=tmp_path), "does not exist")
    result = make_campaign(2, seed=54)
    url = f"sqlite:///{tmp_path / 'c.db'}"
    audit_into(result.dest, url)
    one_line_error(mdbatch("status", str(tmp_path), "--db", url, tmp=tmp_path), "no completed audit of", "audited roots:")


def test_status_on_every_backend(catalog_url, make_campaign, audit_into):
    result = make_campaign(4, seed=55)
    audit_into(result.dest, catalog_url)
    assert status(result.dest, db=catalog_url).clean
    sims = sorted(result.simulations)
    os.rename(result.dest / sims[0] / "em.mdp", result.dest / sims[1] / "em-from-0.mdp")
    report = status(result.dest, db=catalog_url)
    assert changes_of(report) == {
        sims[0]: ("modified", [("moved_away", "em.mdp", f"to {sims[1]}/em-from-0.mdp")]),
        sims[1]: ("modified", [("moved", "em-from-0.mdp", f"from {sims[0]}/em.mdp")]),
    }
