"""The mdbatch config file (TOML) and the MDBATCH_* environment.

Where: `$MDBATCH_CONFIG`, else `$XDG_CONFIG_HOME/mdbatch/config.toml`, else
`~/.config/mdbatch/config.toml`. What:

    [catalog]
    url = "postgresql+psycopg://lab@db.example.org:5432/campaigns"

    [push]
    max_csv_bytes = 16777216

Precedence for the catalog URL: `--db`, then `$MDBATCH_DB`, then the file, then
`sqlite:///mdbatch.db`. The file is created readable by its owner only (it may hold a
password); `config show` and every message print the URL with the password replaced by ***.
"""

from __future__ import annotations

import json
import os
import re
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .atomic import atomic_write_bytes
from .errors import ConfigError, UsageError

ENV_CONFIG = "MDBATCH_CONFIG"
ENV_DB = "MDBATCH_DB"
#: Largest analysis frame (as CSV) stored in `data_csv`; larger frames keep only `data_path`.
DEFAULT_MAX_CSV_BYTES = 16 << 20
_KNOWN: dict[str, dict[str, type]] = {"catalog": {"url": str}, "push": {"max_csv_bytes": int}}
_TYPE_WORDS = {str: "a string", int: "an integer"}


def config_path() -> Path:
    """Where the config file is (whether or not it exists)."""
    if os.environ.get(ENV_CONFIG):
        return Path(os.environ[ENV_CONFIG]).expanduser()
    base = os.environ.get("XDG_CONFIG_HOME") or os.path.join(os.path.expanduser("~"), ".config")
    return Path(base) / "mdbatch" / "config.toml"


def load_config(path: Path | None = None) -> dict[str, Any]:
    """The config file's settings ({} when there is none); ConfigError when it is unreadable or invalid."""
    target = path or config_path()
    try:
        raw = target.read_bytes()
    except FileNotFoundError:
        return {}
    except OSError as exc:
        raise ConfigError(f"cannot read config file {target}: {exc.strerror or exc}") from exc
    try:
        doc = tomllib.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"config file {target} is not valid TOML: {exc}") from exc
    for section, values in doc.items():
        if section not in _KNOWN:
            raise ConfigError(f"config file {target}: unknown section [{section}] (known: {', '.join(sorted(_KNOWN))})")
        if not isinstance(values, dict):
            raise ConfigError(f"config file {target}: {section} must be a table ([{section}] with its settings below it)")
        for key, value in values.items():
            kind = _KNOWN[section].get(key)
            if kind is None:
                raise ConfigError(f"config file {target}: unknown setting {section}.{key}")
            if not isinstance(value, kind) or isinstance(value, bool):
                raise ConfigError(f"config file {target}: {section}.{key} must be {_TYPE_WORDS.get(kind, kind.__name__)}")
    max_csv = doc.get("push", {}).get("max_csv_bytes")
    if max_csv is not None and max_csv < 0:
        raise ConfigError(f"config file {target}: push.max_csv_bytes must be >= 0")
    return doc


DEFAULT_URL = "sqlite:///mdbatch.db"


_USERINFO = re.compile(r"(//[^:/@?#]*:)([^@/?#]*)@")
_QUERY_PASSWORD = re.compile(r"([?&]password=)[^&#]*", re.IGNORECASE)


def resolve_url(url: str | None) -> str:
    """The catalog URL to use: the argument, else $MDBATCH_DB, else the config file's, else `sqlite:///mdbatch.db`."""
    if url:
        return url
    if os.environ.get("MDBATCH_DB"):
        return os.environ["MDBATCH_DB"]
    return configured_url() or DEFAULT_URL


def redact(url: str) -> str:
    """`url` with any password replaced by *** (for logs, errors, summaries and `config show`)."""
    if url.lower().startswith(("sqlite", "csv")):  # file URLs carry no password (a ':' or '@' is part of the path)
        return url
    return _QUERY_PASSWORD.sub(r"\1***", _USERINFO.sub(r"\1***@", url))


def url_password(url: str) -> str | None:
    """The password a URL carries (the userinfo's, else the query's), or None."""
    found = url_passwords(url)
    return found[0] if found else None


def url_passwords(url: str) -> list[str]:
    """Every password a URL carries (userinfo and `?password=`), to scrub them all from driver messages."""
    if url.lower().startswith(("sqlite", "csv")):
        return []
    found = _USERINFO.search(url)
    out = [found.group(2)] if found and found.group(2) else []
    out += [q for q in re.findall(r"[?&]password=([^&#]*)", url, re.IGNORECASE) if q and q not in out]
    return out


def backend_name(url: str) -> str:
    """'sqlite', 'postgresql' or 'csv' for a catalog URL; UsageError for anything else."""
    scheme = url.split(":", 1)[0].lower() if ":" in url else ""
    for name in ("sqlite", "postgresql", "csv"):
        if scheme == name or scheme.startswith(name + "+"):
            return name
    raise UsageError(f"unsupported catalog URL {redact(url)!r}: use sqlite:///PATH, postgresql+psycopg://USER@HOST:PORT/DB or csv:///DIR")


def configured_url() -> str | None:
    """The catalog URL the config file sets, if any."""
    url = load_config().get("catalog", {}).get("url")
    return url or None


def max_csv_bytes(value: int | None = None) -> int:
    """The `data_csv` size cap: the argument, else the config file's, else 16 MiB."""
    if value is not None:
        return value
    configured = load_config().get("push", {}).get("max_csv_bytes")
    return DEFAULT_MAX_CSV_BYTES if configured is None else int(configured)


@dataclass(frozen=True, slots=True)
class Effective:
    """A setting's value and where it came from (for `config show`)."""

    name: str
    value: str
    source: str


def effective(db: str | None = None) -> list[Effective]:
    """Every setting as mdbatch would use it now, password redacted, with its source."""
    doc = load_config()
    if db:
        url, source = db, "--db"
    elif os.environ.get(ENV_DB):
        url, source = os.environ[ENV_DB], f"${ENV_DB}"
    elif doc.get("catalog", {}).get("url"):
        url, source = doc["catalog"]["url"], "config file"
    else:
        url, source = DEFAULT_URL, "default"
    cap = doc.get("push", {}).get("max_csv_bytes")
    return [
        Effective("catalog.url", redact(url), source),
        Effective("push.max_csv_bytes", str(DEFAULT_MAX_CSV_BYTES if cap is None else cap), "default" if cap is None else "config file"),
    ]


def init_config(db: str | None = None, *, max_csv: int | None = None, force: bool = False) -> Path:
    """Write a config file (owner-only permissions); refuse to overwrite one unless `force`."""
    target = config_path()
    if target.exists() and not force:
        raise UsageError(f"config file {target} already exists; pass --force to overwrite it")
    url = db or DEFAULT_URL
    backend_name(url)
    lines = [
        "# mdbatch configuration (see `mdbatch config show`).",
        "# Precedence for the catalog: --db, then $MDBATCH_DB, then this file.",
        "[catalog]",
        f"url = {_toml_string(url)}",
        "",
        "[push]",
        "# Largest analysis frame kept in data_csv (bytes of CSV); larger frames keep only data_path.",
        f"max_csv_bytes = {DEFAULT_MAX_CSV_BYTES if max_csv is None else int(max_csv)}",
        "",
    ]
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(target, "\n".join(lines).encode("utf-8"), mode=0o600)
    except OSError as exc:
        raise ConfigError(f"cannot write config file {target}: {exc.strerror or exc}") from exc
    return target


def _toml_string(value: str) -> str:
    """A TOML basic string (JSON's escaping is a subset TOML accepts)."""
    return json.dumps(value, ensure_ascii=False)
