"""The embedded default catalog: SQLite in WAL mode, safe with many writers at once.

Write transactions begin IMMEDIATE (they take the write lock up front, so a transaction that reads
before it writes cannot fail half-way with SQLITE_BUSY), wait on a 60 s busy timeout, and are
retried with backoff if SQLite still reports the database locked. Rows go through the driver's
executemany with tuples, one transaction per batch: ~5x faster than Core `insert()` with dicts.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
from collections.abc import Sequence
from typing import Any

import pyarrow as pa
from sqlalchemy import Engine, Table, create_engine, event
from sqlalchemy.exc import DBAPIError

from ..errors import CatalogDamagedError
from . import schema
from .ops import Delete, Op, Update, timestamp_text, typed, unique_keys
from .sql import LOOKUP_PARAMS, SQLCatalog

BUSY_TIMEOUT_S = 60.0
CACHE_KIB = 128 * 1024
MMAP_BYTES = 256 << 20


#: What SQLite says of a damaged file (SQLITE_CORRUPT, SQLITE_NOTADB).
_DAMAGED = ("malformed", "file is not a database", "database corrupt")


class _Damaged(Exception):
    """A damage verdict from PRAGMA quick_check, as an exception `_damage` can describe."""


class SQLiteCatalog(SQLCatalog):
    """A catalog in one SQLite file (`sqlite:///relative.db`, `sqlite:////absolute.db`)."""

    _checked = False
    _damaged = ""

    @property
    def _file(self) -> str | None:
        """The database file's path (None in memory)."""
        path = self.url.split("///", 1)[1].split("?", 1)[0] if "///" in self.url else ""
        return path if path and not path.startswith(":memory:") else None

    def _create_engine(self, url: str) -> Engine:
        engine = create_engine(url, connect_args={"timeout": BUSY_TIMEOUT_S})

        @event.listens_for(engine, "connect")
        def _on_connect(dbapi_conn: Any, _record: Any) -> None:
            dbapi_conn.isolation_level = None  # transactions are begun below, not by sqlite3
            cur = dbapi_conn.cursor()
            cur.execute(f"PRAGMA busy_timeout={int(BUSY_TIMEOUT_S * 1000)}")
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=NORMAL")
            # Key lookups and index updates touch random pages of a table that outgrows SQLite's 2 MB
            # default cache: a bigger cache and memory-mapped reads keep them off the syscall path.
            # Both count towards the client's memory (mapped pages once touched): bounded here, so
            # the client does not grow with a campaign's catalog.
            cur.execute(f"PRAGMA cache_size=-{CACHE_KIB}")
            cur.execute(f"PRAGMA mmap_size={MMAP_BYTES}")
            cur.close()

        @event.listens_for(engine, "begin")
        def _on_begin(conn: Any) -> None:
            conn.exec_driver_sql("BEGIN IMMEDIATE" if conn.get_execution_options().get("mdbatch_write") else "BEGIN")

        self._writer = engine.execution_options(mdbatch_write=True)
        return engine

    def _write_engine(self) -> Engine:
        return self._writer

    def _retryable(self, exc: DBAPIError) -> bool:
        message = str(exc.orig or exc).lower()
        return "locked" in message or "busy" in message

    def _damage(self, exc: BaseException) -> CatalogDamagedError | None:
        text = str(getattr(exc, "orig", None) or exc).strip()
        reason = text.splitlines()[0] if text else ""
        if not self._damaged and any(sign in reason.lower() for sign in _DAMAGED):
            path = self._file or self.display_url
            self._damaged = (
                f"catalog {path} is damaged ({reason}); mdbatch will not write to it. Recover what it holds with "
                f"`sqlite3 {path} '.recover' | sqlite3 recovered.db`, or move it away and audit again"
            )
        return CatalogDamagedError(self._damaged) if self._damaged else None

    def _check_storage(self) -> None:
        """PRAGMA quick_check once per catalog object (a few ms per 10 MB): a damaged file is reported
        before a command reads a wrong answer from it or writes into it; then every use says so."""
        if self._damaged:
            raise CatalogDamagedError(self._damaged)
        if self._checked:
            return
        self._checked = True
        if not self._file or not os.path.exists(self._file):
            return
        try:
            with contextlib.closing(sqlite3.connect(f"file:{self._file}?mode=ro", uri=True, timeout=BUSY_TIMEOUT_S)) as conn:
                verdict = str(conn.execute("PRAGMA quick_check(1)").fetchone()[0])
        except sqlite3.Error as exc:
            if self._damage(exc):
                raise CatalogDamagedError(self._damaged) from exc
            return  # not readable as it stands (locked, permissions): the statement itself will say why
        if verdict != "ok":
            self._damage(_Damaged(f"database disk image is malformed: {verdict.splitlines()[-1]}"))
            raise CatalogDamagedError(self._damaged)

    def _apply_ops(self, conn: Any, ops: Sequence[Op]) -> list[int]:
        cur = conn.connection.dbapi_connection.cursor()
        counts: list[int] = []
        try:
            for op in ops:
                table = schema.table_for(op.table)
                rows = typed(table, op.rows)
                if isinstance(op, Delete):
                    where = " AND ".join(f"{self._q(c)} = ?" for c in rows.column_names)
                    cur.executemany(f"DELETE FROM {self._q(table.name)} WHERE {where}", _tuples(rows))
                    counts.append(max(cur.rowcount, 0))
                    continue
                keys = schema.key_columns(table)
                if isinstance(op, Update):
                    on = op.match_columns()
                    sets = ", ".join(f"{self._q(c)} = ?" for c in rows.column_names if c not in on)
                    match = " AND ".join(f"{self._q(k)} = ?" for k in on)
                    ordered = rows.select([c for c in rows.column_names if c not in on] + list(on))
                    cur.executemany(f"UPDATE {self._q(table.name)} SET {sets} WHERE {match}", _tuples(ordered))
                    counts.append(max(cur.rowcount, 0))
                    continue
                if op.on_conflict != "new":  # new rows come unique (and, from a scan, in key order)
                    rows = unique_keys(rows, keys, "last" if op.on_conflict == "replace" else "first")
                    if keys and rows.num_rows > 1:  # in key order, index insertions walk the B-tree
                        rows = rows.sort_by([(k, "ascending") for k in keys])
                if rows.num_rows == 0:
                    counts.append(0)
                    continue
                sql = self._upsert_sql(
                    table, type(op)(op.table, rows, op.on_conflict, op.keep, op.keep_if_same), f"VALUES ({self._p(rows.num_columns)})"
                )
                cur.executemany(sql, _tuples(rows))
                written = max(cur.rowcount, 0)
                self._check_written(op, written, rows.num_rows)
                counts.append(written)
        finally:
            cur.close()
        return counts

    def _lookup(
        self, conn: Any, table: Table, keys: list[str], rows: pa.Table, present: str | None, select: list[str]
    ) -> list[tuple[Any, ...]]:
        # Each key tuple once: the join below would return a row per repetition, where IN did not.
        values = list(dict.fromkeys(zip(*[rows[k].to_pylist() for k in keys], strict=True)))
        q = self._q
        picked = ", ".join(f"t.{q(c)}" for c in select)
        cond = f" AND t.{q(present)} IS NOT NULL" if present else ""
        cols = ", ".join(q(k) for k in keys)
        match = " AND ".join(f"t.{q(k)} = u.{q(k)}" for k in keys)
        step = max(1, LOOKUP_PARAMS // len(keys))
        found: list[tuple[Any, ...]] = []
        cur = conn.connection.dbapi_connection.cursor()
        try:
            for start in range(0, len(values), step):
                part = values[start : start + step]
                if len(keys) == 1:
                    sql = f"SELECT {picked} FROM {q(table.name)} AS t WHERE t.{cols} IN ({self._p(len(part))}){cond}"
                    params: list[Any] = [v[0] for v in part]
                else:
                    # Not `(a, b) IN (VALUES ...)`: SQLite plans that as a scan of the whole index per
                    # query, so a lookup per batch grows with the table (quadratic over a campaign).
                    # The key tuples as the outer loop of a CROSS JOIN probe the primary key instead.
                    tuples = ", ".join(f"({self._p(len(keys))})" for _ in part)
                    sql = f"WITH u({cols}) AS (VALUES {tuples}) SELECT {picked} FROM u CROSS JOIN {q(table.name)} AS t WHERE {match}{cond}"
                    params = [x for v in part for x in v]
                found.extend(tuple(r) for r in cur.execute(sql, params).fetchall())
        finally:
            cur.close()
        return found


def _tuples(rows: pa.Table) -> list[tuple[Any, ...]]:
    """Rows as tuples for executemany; timestamps in SQLAlchemy's SQLite DateTime text format (UTC)."""
    cols = []
    for column in rows.columns:
        if pa.types.is_timestamp(column.type):
            column = timestamp_text(column)
        cols.append(column.to_pylist())
    return list(zip(*cols, strict=True))
