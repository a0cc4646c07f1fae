"""`mdbatch dedupe` finds its catalog as every command does (--db, $MDBATCH_DB, the config file), and
the built-in default only when it exists: a dedupe outside any audited place creates no catalog."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from .conftest import mdbatch, one_line_error

pytestmark = pytest.mark.integration


def dedupe_runs(db: Path) -> int:
    with sqlite3.connect(db) as conn:
        return conn.execute("SELECT COUNT(*) FROM MDBATCH_RUNS WHERE command = 'dedupe'").fetchone()[0]


@pytest.fixture
def audited(make_campaign, tmp_path, audit_into):
    result = make_campaign(15, seed=91)
    db = tmp_path / "audit.db"
    audit_into(result.dest, f"sqlite:///{db}")
    return result, db


def test_env_and_config_file_catalogs_are_used(audited, tmp_path):
    result, db = audited
    work = tmp_path / "work"
    work.mkdir()
    by_env = mdbatch("dedupe", str(result.dest), "--local", cwd=work, env={"MDBATCH_DB": f"sqlite:///{db}"}, tmp=tmp_path)
    assert by_env.returncode == 0, by_env.stderr
    assert f"reusing {result.files} digests from the audit catalog" in by_env.stderr and dedupe_runs(db) == 1
    (tmp_path / "config.toml").write_text(f'[catalog]\nurl = "sqlite:///{db}"\n')
    by_config = mdbatch("dedupe", str(result.dest), "--local", cwd=work, tmp=tmp_path)
    assert by_config.returncode == 0 and "reusing" in by_config.stderr and dedupe_runs(db) == 2
    off = mdbatch("dedupe", str(result.dest), "--local", "--no-db", cwd=work, tmp=tmp_path)
    assert off.returncode == 0 and "reusing" not in off.stderr and dedupe_runs(db) == 2
    assert list(work.iterdir()) == []
    one_line_error(mdbatch("dedupe", str(result.dest), "--db", f"sqlite:///{db}", "--no-db", tmp=tmp_path), "not allowed with")


def test_the_default_catalog_only_when_it_exists(audited, tmp_path):
    result, db = audited
    empty = tmp_path / "empty"
    empty.mkdir()
    none = mdbatch("dedupe", str(result.dest), "--local", cwd=empty, tmp=tmp_path)
    assert none.returncode == 0, none.stderr
    assert "no catalog (sqlite:///mdbatch.db does not exist): every file was hashed" in none.stdout
    assert list(empty.iterdir()) == []  # no catalog created
    here = tmp_path / "here"
    here.mkdir()
    (here / "mdbatch.db").write_bytes(db.read_bytes())
    found = mdbatch("dedupe", str(result.dest), "--local", cwd=here, tmp=tmp_path)
    assert found.returncode == 0 and f"reusing {result.files} digests" in found.stderr and dedupe_runs(here / "mdbatch.db") == 1
