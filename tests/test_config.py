"""The config file and the MDBATCH_* environment (mdbatch/config.py): where the file is, what it may
hold, which catalog URL wins, and that no password is ever shown."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest

from mdbatch import config
from mdbatch.config import (
    DEFAULT_MAX_CSV_BYTES,
    DEFAULT_URL,
    Effective,
    backend_name,
    config_path,
    effective,
    init_config,
    load_config,
    max_csv_bytes,
    redact,
    resolve_url,
    url_password,
)
from mdbatch.errors import ConfigError, UsageError


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> pytest.MonkeyPatch:
    """No MDBATCH_* or XDG setting from the caller's environment; HOME in tmp_path."""
    for name in ("MDBATCH_CONFIG", "MDBATCH_DB", "XDG_CONFIG_HOME"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    return monkeypatch


def write_config(env: pytest.MonkeyPatch, path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    env.setenv("MDBATCH_CONFIG", str(path))
    return path


def config_error(path: Path) -> str:
    """The one-line message load_config raises for `path`."""
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    message = str(caught.value)
    assert "\n" not in message, message
    return message


# -- where the file is ----------------------------------------------------------------------------


def test_mdbatch_config_names_the_file_with_tilde_expanded(env, tmp_path):
    env.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    env.setenv("MDBATCH_CONFIG", "~/lab/mdbatch.toml")
    assert config_path() == tmp_path / "home" / "lab" / "mdbatch.toml"


def test_xdg_config_home_then_home_dot_config(env, tmp_path):
    env.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    assert config_path() == tmp_path / "xdg" / "mdbatch" / "config.toml"
    env.setenv("XDG_CONFIG_HOME", "")  # set but empty: as if unset
    assert config_path() == tmp_path / "home" / ".config" / "mdbatch" / "config.toml"
    env.delenv("XDG_CONFIG_HOME")
    env.setenv("MDBATCH_CONFIG", "")
    assert config_path() == tmp_path / "home" / ".config" / "mdbatch" / "config.toml"


# -- what the file may hold -----------------------------------------------------------------------


def test_no_file_is_no_settings(env, tmp_path):
    env.setenv("MDBATCH_CONFIG", str(tmp_path / "absent.toml"))
    assert load_config() == {}
    assert load_config(tmp_path / "also-absent.toml") == {}


def test_valid_file_is_read_as_written(env, tmp_path):
    path = write_config(env, tmp_path / "c.toml", '[catalog]\nurl = "csv:///data/cat"\n\n[push]\nmax_csv_bytes = 0\n')
    assert load_config() == {"catalog": {"url": "csv:///data/cat"}, "push": {"max_csv_bytes": 0}}
    assert load_config(path) == load_config()


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('[catalog]\nuri = "sqlite:///x.db"\n', "unknown setting catalog.uri"),
        ("[push]\nmax_csv = 5\n", "unknown setting push.max_csv"),
        ("[pushh]\nmax_csv_bytes = 5\n", "unknown section [pushh] (known: catalog, push)"),
        ('url = "sqlite:///x.db"\n', "unknown section [url] (known: catalog, push)"),
        ("[catalog]\nurl = 5\n", "catalog.url must be a string"),
        ("[catalog]\nurl = true\n", "catalog.url must be a string"),
        ('[push]\nmax_csv_bytes = "16M"\n', "push.max_csv_bytes must be an integer"),
        ("[push]\nmax_csv_bytes = 1.5\n", "push.max_csv_bytes must be an integer"),
        ("[push]\nmax_csv_bytes = true\n", "push.max_csv_bytes must be an integer"),
        ("[push]\nmax_csv_bytes = -1\n", "push.max_csv_bytes must be >= 0"),
    ],
)
def test_invalid_settings_are_one_line_naming_the_file(env, tmp_path, text, message):
    path = write_config(env, tmp_path / "c.toml", text)
    assert config_error(path) == f"config file {path}: {message}"


def test_a_known_section_that_is_not_a_table_is_not_called_unknown(env, tmp_path):
    path = write_config(env, tmp_path / "c.toml", 'catalog = "sqlite:///x.db"\n')
    message = config_error(path)
    assert message.startswith(f"config file {path}: ") and "[catalog]" in message and "unknown" not in message


def test_a_file_that_is_not_toml_or_not_utf8_or_not_a_file(env, tmp_path):
    path = write_config(env, tmp_path / "c.toml", "[catalog\nurl = 1\n")
    assert config_error(path).startswith(f"config file {path} is not valid TOML: ")
    path.write_bytes(b'[catalog]\nurl = "\xff"\n')
    assert config_error(path).startswith(f"config file {path} is not valid TOML: 'utf-8' codec can't decode byte 0xff")
    directory = tmp_path / "dir.toml"
    directory.mkdir()
    assert config_error(directory) == f"cannot read config file {directory}: Is a directory"


def test_every_reader_of_the_file_raises_the_same_error(env, tmp_path):
    write_config(env, tmp_path / "c.toml", "[push]\nmax_csv_bytes = -5\n")
    for read in (load_config, config.configured_url, max_csv_bytes, effective, lambda: resolve_url(None)):
        with pytest.raises(ConfigError, match=r"push\.max_csv_bytes must be >= 0$"):
            read()
    assert resolve_url("sqlite:///given.db") == "sqlite:///given.db"  # --db never reads the file
    assert max_csv_bytes(7) == 7


# -- which URL wins -------------------------------------------------------------------------------


def test_url_precedence_db_then_environment_then_file_then_default(env, tmp_path):
    env.setenv("MDBATCH_CONFIG", str(tmp_path / "c.toml"))
    assert resolve_url(None) == DEFAULT_URL == "sqlite:///mdbatch.db"
    write_config(env, tmp_path / "c.toml", '[catalog]\nurl = "csv:///from/file"\n')
    assert resolve_url(None) == "csv:///from/file"
    assert resolve_url("") == "csv:///from/file"  # an empty --db is no --db
    env.setenv("MDBATCH_DB", "sqlite:////from/env.db")
    assert resolve_url(None) == "sqlite:////from/env.db"
    assert resolve_url("postgresql+psycopg://u@h/db") == "postgresql+psycopg://u@h/db"
    env.setenv("MDBATCH_DB", "")  # set but empty: the file's
    assert resolve_url(None) == "csv:///from/file"
    write_config(env, tmp_path / "c.toml", '[catalog]\nurl = ""\n')
    assert resolve_url(None) == DEFAULT_URL


def test_effective_settings_name_their_source_and_hide_the_password(env, tmp_path):
    env.setenv("MDBATCH_CONFIG", str(tmp_path / "c.toml"))
    cap = Effective("push.max_csv_bytes", str(DEFAULT_MAX_CSV_BYTES), "default")
    assert effective() == [Effective("catalog.url", DEFAULT_URL, "default"), cap]
    write_config(env, tmp_path / "c.toml", '[catalog]\nurl = "postgresql+psycopg://lab:pw1@h/db"\n[push]\nmax_csv_bytes = 1024\n')
    filed = Effective("push.max_csv_bytes", "1024", "config file")
    assert effective() == [Effective("catalog.url", "postgresql+psycopg://lab:***@h/db", "config file"), filed]
    env.setenv("MDBATCH_DB", "postgresql+psycopg://lab:pw2@h/db")
    assert effective() == [Effective("catalog.url", "postgresql+psycopg://lab:***@h/db", "$MDBATCH_DB"), filed]
    assert effective("postgresql+psycopg://lab:pw3@h/db") == [Effective("catalog.url", "postgresql+psycopg://lab:***@h/db", "--db"), filed]
    assert max_csv_bytes() == 1024 and max_csv_bytes(0) == 0


# -- passwords ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "shown", "password"),
    [
        (
            "postgresql+psycopg://lab:hunter2@db.example.org:5432/campaigns",
            "postgresql+psycopg://lab:***@db.example.org:5432/campaigns",
            "hunter2",
        ),
        ("postgresql+psycopg://lab@db.example.org/campaigns", "postgresql+psycopg://lab@db.example.org/campaigns", None),
        ("postgresql+psycopg://lab:@db/x", "postgresql+psycopg://lab:***@db/x", None),
        ("postgresql://lab@db/x?password=s3cret&sslmode=require", "postgresql://lab@db/x?password=***&sslmode=require", "s3cret"),
        ("postgresql://lab@db/x?sslmode=require&PASSWORD=Up", "postgresql://lab@db/x?sslmode=require&PASSWORD=***", "Up"),
        ("postgresql://lab:pw1@db/x?password=pw2", "postgresql://lab:***@db/x?password=***", "pw1"),
        ("postgresql://lab:p%40ss@db/x", "postgresql://lab:***@db/x", "p%40ss"),
        ("postgresql://db/x?options=-csearch_path%3Dt1", "postgresql://db/x?options=-csearch_path%3Dt1", None),
        # File URLs carry no password: ':' and '@' are part of the path.
        ("sqlite:////data/a:b@c.db", "sqlite:////data/a:b@c.db", None),
        ("SQLITE:////data/x?password=y", "SQLITE:////data/x?password=y", None),
        ("csv:///data/u:p@cat", "csv:///data/u:p@cat", None),
    ],
)
def test_redact_and_url_password(url, shown, password):
    assert redact(url) == shown
    assert url_password(url) == password
    if password:
        assert password not in redact(url)


# -- backends -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "name"),
    [
        ("sqlite:///mdbatch.db", "sqlite"),
        ("sqlite+pysqlite:////abs.db", "sqlite"),
        ("SQLite:///x.db", "sqlite"),
        ("postgresql://u@h/db", "postgresql"),
        ("postgresql+psycopg://u@h:5432/db", "postgresql"),
        ("csv:///data/cat", "csv"),
        ("csv://relative/cat", "csv"),
    ],
)
def test_backend_name(url, name):
    assert backend_name(url) == name


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("mysql://u:pw@h/db", "mysql://u:***@h/db"),
        ("postgres://u:pw@h/db", "postgres://u:***@h/db"),
        ("sqlitex:///x.db", "sqlitex:///x.db"),
        ("mdbatch.db", "mdbatch.db"),
        ("", ""),
    ],
)
def test_unsupported_urls_are_usage_errors_without_the_password(url, shown):
    with pytest.raises(UsageError) as caught:
        backend_name(url)
    assert str(caught.value) == (
        f"unsupported catalog URL {shown!r}: use sqlite:///PATH, postgresql+psycopg://USER@HOST:PORT/DB or csv:///DIR"
    )


# -- writing the file -----------------------------------------------------------------------------


def test_init_config_writes_an_owner_only_file_and_refuses_to_overwrite(env, tmp_path):
    path = tmp_path / "nested" / "dirs" / "config.toml"
    env.setenv("MDBATCH_CONFIG", str(path))
    old = os.umask(0o022)
    try:
        assert init_config("postgresql+psycopg://lab:hunter2@db/x") == path
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert path.read_text(encoding="utf-8") == (
        "# mdbatch configuration (see `mdbatch config show`).\n"
        "# Precedence for the catalog: --db, then $MDBATCH_DB, then this file.\n"
        "[catalog]\n"
        'url = "postgresql+psycopg://lab:hunter2@db/x"\n'
        "\n"
        "[push]\n"
        "# Largest analysis frame kept in data_csv (bytes of CSV); larger frames keep only data_path.\n"
        f"max_csv_bytes = {16 << 20}\n"
    )
    assert load_config() == {"catalog": {"url": "postgresql+psycopg://lab:hunter2@db/x"}, "push": {"max_csv_bytes": 16 << 20}}

    with pytest.raises(UsageError) as caught:
        init_config("sqlite:///other.db")
    assert str(caught.value) == f"config file {path} already exists; pass --force to overwrite it"
    assert "hunter2" in path.read_text()  # untouched

    path.chmod(0o644)
    assert init_config(None, max_csv=0, force=True) == path
    assert load_config() == {"catalog": {"url": DEFAULT_URL}, "push": {"max_csv_bytes": 0}}
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert sorted(p.name for p in path.parent.iterdir()) == ["config.toml"]  # no temp file left


def test_init_config_round_trips_awkward_urls(env, tmp_path):
    env.setenv("MDBATCH_CONFIG", str(tmp_path / "c.toml"))
    url = 'sqlite:////data/we"ird\\päth\t✓.db'
    init_config(url)
    assert load_config()["catalog"]["url"] == url and resolve_url(None) == url
    assert json.loads(config._toml_string(url)) == url


def test_init_config_checks_the_url_before_writing(env, tmp_path):
    path = tmp_path / "c.toml"
    env.setenv("MDBATCH_CONFIG", str(path))
    with pytest.raises(UsageError, match=r"^unsupported catalog URL 'mysql://u:\*\*\*@h/db'"):
        init_config("mysql://u:pw@h/db")
    assert not path.exists()


def test_init_config_into_a_path_under_a_file_is_one_config_error(env, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory\n")
    path = blocker / "mdbatch" / "config.toml"
    env.setenv("MDBATCH_CONFIG", str(path))
    with pytest.raises(ConfigError) as caught:
        init_config("sqlite:///x.db")
    assert str(caught.value) == f"cannot write config file {path}: Not a directory"
    assert blocker.read_text() == "not a directory\n"
