"""An independent reader of what a catalog stored: sqlite3 on the SQLite file, psycopg on the
PostgreSQL schema of the URL's search_path, the csv module on the CSV directory's files, never
mdbatch's own reading code. The contract suite compares writes against it value by value, so a bug
that mdbatch's writer and reader share cannot pass.

What each backend is documented to store, and what this reader holds it to:
- SQLite: text as TEXT, integers as INTEGER, bytes as BLOB, timestamps as TEXT
  'YYYY-MM-DD HH:MM:SS[.ffffff]' in UTC (SQLAlchemy's SQLite DateTime format), NULL as NULL.
- PostgreSQL: text (with NUL stored as U+FFFD, see mdbatch/catalog/pgcopy.py), bigint/integer,
  bytea, timestamptz.
- CSV: one file per table, header first; strings quoted, NULL an empty unquoted field (so '' and
  NULL differ), integers as digits, bytes as hex, timestamps as ISO 8601 ending in Z.
"""

from __future__ import annotations

import csv
import io
import re
import sqlite3
import sys
from collections.abc import Iterable, Mapping, Sequence
from contextlib import closing
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from ..conftest import pg_conninfo

_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_]*")
#: One CSV field (quoted, or not) and what ends it.
_FIELD = re.compile(r'(?:"((?:[^"]|"")*)"|([^,"\n]*))(,|\n|$)', re.DOTALL)


def backend(url: str) -> str:
    return "sqlite" if url.startswith("sqlite") else "csv" if url.startswith("csv") else "postgresql"


# -- reading ---------------------------------------------------------------------------------------


def stored_tables(url: str) -> set[str]:
    """The tables the catalog's storage holds (every table, mdbatch's or not)."""
    kind = backend(url)
    if kind == "csv":
        return {p.stem for p in _csv_dir(url).glob("*.csv")}
    if kind == "sqlite":
        with closing(sqlite3.connect(_sqlite_file(url), timeout=60)) as conn:
            return {n for (n,) in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    rows = _pg_query(url, "SELECT tablename FROM pg_tables WHERE schemaname = %s", (_pg_schema(url),))
    return {n for (n,) in rows}


def stored_rows(url: str, table: str) -> list[dict[str, Any]]:
    """Every row of `table` as stored: SQLite and PostgreSQL values as their drivers return them,
    CSV fields as text (None for NULL)."""
    assert _NAME.fullmatch(table), table
    kind = backend(url)
    if kind == "csv":
        return _csv_rows(_csv_dir(url) / f"{table}.csv")
    if kind == "sqlite":
        with closing(sqlite3.connect(_sqlite_file(url), timeout=60)) as conn:
            cur = conn.execute(f'SELECT * FROM "{table}"')
            names = [d[0] for d in cur.description]
            return [dict(zip(names, row, strict=True)) for row in cur.fetchall()]
    from psycopg import sql

    query = sql.SQL("SELECT * FROM {}.{}").format(sql.Identifier(_pg_schema(url)), sql.Identifier(table))
    with closing(_pg_connect(url)) as conn, conn.cursor() as cur:
        cur.execute(query)
        names = [d.name for d in cur.description]
        return [dict(zip(names, row, strict=True)) for row in cur.fetchall()]


def decode(url: str, raw: Any, like: Any) -> Any:
    """A stored value in the Python type of `like` (the value written), by the backend's documented
    encoding; a value stored some other way comes back as it is, so the comparison fails on it."""
    kind = backend(url)
    if like is None or raw is None:
        return raw
    if isinstance(like, datetime):
        if kind == "postgresql" or not isinstance(raw, str):
            return raw
        if kind == "csv" and not raw.endswith("Z"):
            return raw
        parsed = datetime.fromisoformat(raw)
        if kind == "sqlite" and parsed.tzinfo is not None:
            return raw  # SQLite holds naive UTC text
        return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed
    if kind != "csv" or not isinstance(raw, str):
        return raw
    if isinstance(like, bool):
        return raw
    if isinstance(like, int):
        return int(raw) if re.fullmatch(r"-?[0-9]+", raw) else raw
    if isinstance(like, bytes):
        return bytes.fromhex(raw) if re.fullmatch(r"(?:[0-9a-f]{2})*", raw) else raw
    return raw


def written(url: str, value: Any) -> Any:
    """What the backend is documented to store for `value`: PostgreSQL text cannot hold NUL (U+FFFD)."""
    if backend(url) == "postgresql" and isinstance(value, str):
        return value.replace("\x00", "\ufffd")
    return value


def assert_stored(url: str, table: str, expected: Iterable[Mapping[str, Any]], key: Sequence[str]) -> None:
    """`table` holds exactly the `expected` rows (by `key`), each given column equal value by value
    (timestamps as instants) to what was written, read back without mdbatch."""
    want = {tuple(written(url, row[k]) for k in key): {c: written(url, v) for c, v in row.items()} for row in expected}
    like = next(iter(want), None)  # key values are decoded as the written ones' types
    got: dict[tuple[Any, ...], dict[str, Any]] = {}
    for row in stored_rows(url, table):
        ident = tuple(decode(url, row[k], like[i] if like else row[k]) for i, k in enumerate(key))
        assert ident not in got, f"{table}: key {ident!r} stored twice"
        got[ident] = row
    assert set(got) == set(want), f"{table}: stored keys {sorted(got, key=repr)} != written {sorted(want, key=repr)}"
    for ident, row in want.items():
        stored = got[ident]
        for column, value in row.items():
            assert column in stored, f"{table}: no column {column}"
            assert decode(url, stored[column], value) == value, (
                f"{table} {ident!r}: {column} stored as {stored[column]!r}, written {value!r}"
            )


def full_row(columns: Iterable[str], /, **values: Any) -> dict[str, Any]:
    """A row of every one of `columns`, NULL where `values` says nothing (so NULLs are checked too)."""
    names = list(columns)
    unknown = set(values) - set(names)
    assert not unknown, unknown
    return {c: values.get(c) for c in names}


# -- per backend -----------------------------------------------------------------------------------


def _sqlite_file(url: str) -> str:
    return url.split("///", 1)[1].split("?", 1)[0]


def _csv_dir(url: str) -> Path:
    rest = url.split(":", 1)[1]
    return Path(rest[2:] if rest.startswith("//") else rest)


def _csv_rows(path: Path) -> list[dict[str, Any]]:
    """The records of a CSV file as dicts, an unquoted empty field as None. The csv module reads
    the values; a scan of the quoting tells NULL from '' (the csv module of Python 3.11 cannot)."""
    text = path.read_bytes().decode("utf-8")
    records = _csv_records(text)
    csv.field_size_limit(sys.maxsize)
    plain = list(csv.reader(io.StringIO(text, newline="")))
    assert plain == [["" if v is None else v for v in r] for r in records], f"{path}: the csv module reads it otherwise"
    header, *body = records
    assert all(isinstance(h, str) for h in header) and all(len(r) == len(header) for r in body), path
    return [dict(zip(header, r, strict=True)) for r in body]  # type: ignore[arg-type]


def _csv_records(text: str) -> list[list[str | None]]:
    records: list[list[str | None]] = []
    record: list[str | None] = []
    pos = 0
    while pos < len(text):
        match = _FIELD.match(text, pos)
        assert match is not None and match.end() > pos, f"malformed CSV at offset {pos}: {text[pos : pos + 40]!r}"
        quoted, plain, end = match.groups()
        record.append(quoted.replace('""', '"') if quoted is not None else (plain or None))
        pos = match.end()
        if end != ",":
            records.append(record)
            record = []
    return records


def _pg_schema(url: str) -> str:
    options = parse_qs(urlsplit(url).query).get("options", [""])[0]
    return options.split("search_path=", 1)[1] if "search_path=" in options else "public"


def _pg_connect(url: str) -> Any:
    import psycopg

    return psycopg.connect(pg_conninfo(url), autocommit=True)


def _pg_query(url: str, query: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
    with closing(_pg_connect(url)) as conn, conn.cursor() as cur:
        cur.execute(query, params)
        return cur.fetchall()


# -- making an older catalog ------------------------------------------------------------------------


def make_older(url: str, version: int, drop: Sequence[str]) -> None:
    """Turn a catalog into one of an older schema `version` without mdbatch: drop the tables that
    version did not have (those of `drop` present) and record the version (for migration tests)."""
    assert all(_NAME.fullmatch(t) for t in drop), drop
    kind = backend(url)
    present = stored_tables(url)
    if kind == "csv":
        base = _csv_dir(url)
        for table in drop:
            if table in present:
                (base / f"{table}.csv").unlink()
        (base / "MDBATCH_SCHEMA.csv").write_text(f'key,value\n"schema_version","{version}"\n', encoding="utf-8")
        return
    statements = [f'DROP TABLE "{t}"' for t in drop if t in present]
    statements.append(f"UPDATE \"MDBATCH_SCHEMA\" SET value = '{version}' WHERE key = 'schema_version'")
    if kind == "sqlite":
        with closing(sqlite3.connect(_sqlite_file(url), timeout=60)) as conn, conn:
            for statement in statements:
                conn.execute(statement)
        return
    with closing(_pg_connect(url)) as conn, conn.cursor() as cur:
        cur.execute(f'SET search_path TO "{_pg_schema(url)}"')
        for statement in statements:
            cur.execute(statement)
