"""The shared lab catalog on PostgreSQL (`postgresql+psycopg://user@host:5432/db`, psycopg 3).

Every bulk write is COPY into a temporary staging table (binary COPY built by Arrow, see
pgcopy.py; never row-by-row Python) followed by one set-based `INSERT … SELECT` into the target,
all inside the batch's transaction. The INSERT is first tried plain inside a savepoint (the
common case: every key is new, and a plain insert costs the server about half of a speculative
`ON CONFLICT` one); if it meets an existing key it is rolled back to the savepoint and run as
`INSERT … ON CONFLICT` (DO NOTHING, or DO UPDATE for --force and for status rows), so the result
is the same and a unique violation from a concurrent pusher is never an error. Schema changes take a
transaction-level advisory lock, so many pushers creating the same `ANALYSIS_<name>` table at
once do not collide. Key lookups send the keys as arrays in one statement (`JOIN unnest(...)`),
answered from the primary-key index.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import psycopg
import pyarrow as pa
import pyarrow.compute as pc
from psycopg.copy import LibpqWriter
from psycopg.errors import UniqueViolation
from psycopg.pq import TransactionStatus
from sqlalchemy import Engine, Table, create_engine
from sqlalchemy.exc import DBAPIError

from ..errors import CatalogError, MdbatchError
from . import schema
from .ops import Delete, Op, Update, Upsert, typed, unique_keys
from .pgcopy import copy_chunks, pg_types
from .sql import SQLCatalog

#: pg_advisory_xact_lock key serializing mdbatch's DDL ("mdba").
DDL_LOCK_KEY = 0x6D646261
_RETRY_SQLSTATES = {"40001", "40P01", "55P03"}  # serialization failure, deadlock, lock not available
_SEP = "\x1f"
_PG_ARRAY = {"int64": "bigint", "timestamp[us, tz=UTC]": "timestamptz", "binary": "bytea"}
#: Where a failed transaction can still be rolled back on its connection.
_ROLLBACK_STATES = (TransactionStatus.INTRANS, TransactionStatus.INERROR)


class _CopyWriter(LibpqWriter):
    """psycopg's COPY writer, except that a COPY that failed because the connection is gone ends quietly.

    psycopg would try to end it on the dead connection and log `error ignored terminating
    <psycopg.Copy [BAD]>` on stderr after mdbatch's one error line.
    """

    def finish(self, exc: BaseException | None = None) -> None:
        if exc is None:
            super().finish(exc)
            return
        if self.connection.closed or self.connection.broken:
            return
        try:
            super().finish(exc)
        except psycopg.OperationalError:
            pass  # the connection went while the COPY was being ended: `exc` already says what failed


class PostgresCatalog(SQLCatalog):
    """A catalog in a PostgreSQL database, written through COPY and staging tables."""

    #: Transactions a writer may keep in flight at once (each on its own connection).
    write_parallelism = 2
    #: COPY statements, rows and seconds so far in this process (tests and benchmarks read them).
    copies = 0
    copy_rows = 0
    copy_seconds = 0.0

    def _create_engine(self, url: str) -> Engine:
        return create_engine(url, pool_pre_ping=True, connect_args={"connect_timeout": 10})

    def _lock_ddl(self, conn: Any) -> None:
        conn.exec_driver_sql("SELECT pg_advisory_xact_lock(%s)", (DDL_LOCK_KEY,))

    def _retryable(self, exc: DBAPIError) -> bool:
        return getattr(exc.orig, "sqlstate", None) in _RETRY_SQLSTATES

    def _apply_ops(self, conn: Any, ops: Sequence[Op]) -> list[int]:
        raw = conn.connection.driver_connection
        try:
            return self._copy_and_merge(raw, ops)
        except psycopg.Error as exc:
            if raw.closed or raw.broken or raw.info.transaction_status not in _ROLLBACK_STATES:
                # The server is gone, or libpq is stuck mid-COPY: there is nothing to roll back, and
                # SQLAlchemy's ROLLBACK would fail again and log a traceback. Drop the connection.
                conn.invalidate(exc)
            # As SQLAlchemy's own errors: the retry policy and the one-line message apply.
            raise DBAPIError.instance(None, None, exc, psycopg.Error, connection_invalidated=conn.invalidated) from exc
        except MdbatchError:
            raise
        except ValueError as exc:  # a value the COPY encoding refuses (an integer out of its column's range)
            raise CatalogError(f"catalog {self.display_url}: {exc}") from exc

    def _copy_and_merge(self, raw: Any, ops: Sequence[Op]) -> list[int]:
        """Stage each operation's rows by COPY and merge them into their tables; rows affected per op."""
        prepared: list[tuple[Op, Table, pa.Table]] = []
        for op in ops:
            table = schema.table_for(op.table)
            rows = _without_nul(typed(table, op.rows))
            keys = schema.key_columns(table)
            if isinstance(op, Upsert) and op.on_conflict != "new":  # after the NUL replacement: keys that differ only by it are one key
                rows = unique_keys(rows, keys, "last" if op.on_conflict == "replace" else "first")
                if keys and rows.num_rows > 1:  # in key order, index insertions walk the B-tree
                    rows = rows.sort_by([(k, "ascending") for k in keys])
            prepared.append((op, table, rows))
        counts: list[int] = []
        # The COPY data of the next operation is encoded (Arrow, GIL released) while the server loads this one.
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="mdbatch-copy") as pool, raw.cursor() as cur:
            payloads = [
                pool.submit(lambda r, t: list(copy_chunks(r, pg_types(t, r.column_names))), rows, table) if rows.num_rows else None
                for _, table, rows in prepared
            ]
            for index, ((op, table, rows), payload) in enumerate(zip(prepared, payloads, strict=True)):
                if payload is None:
                    counts.append(0)
                    continue
                if isinstance(op, Upsert) and op.on_conflict == "new":  # known-new rows: COPY straight into the table
                    counts.append(self._copy(cur, table.name, rows.column_names, payload.result(), rows.num_rows))
                    continue
                stage = self._stage(cur, table, rows.column_names, payload.result(), rows.num_rows, index)
                counts.append(self._merge(cur, op, table, rows, stage))
        return counts

    def _merge(self, cur: Any, op: Op, table: Table, rows: pa.Table, stage: str) -> int:
        """Apply one staged operation to its target table; rows affected."""
        q = self._q
        if isinstance(op, Delete):
            match = " AND ".join(f"t.{q(c)} = s.{q(c)}" for c in rows.column_names)
            cur.execute(f"DELETE FROM {q(table.name)} AS t USING {stage} AS s WHERE {match}")
            return max(cur.rowcount, 0)
        if isinstance(op, Update):
            on = op.match_columns()
            sets = ", ".join(f"{q(c)} = s.{q(c)}" for c in rows.column_names if c not in on)
            match = " AND ".join(f"t.{q(k)} = s.{q(k)}" for k in on)
            cur.execute(f"UPDATE {q(table.name)} AS t SET {sets} FROM {stage} AS s WHERE {match}")
            return max(cur.rowcount, 0)
        cols = ", ".join(q(c) for c in rows.column_names)
        source = f"SELECT {cols} FROM {stage}"
        staged = Upsert(op.table, rows, op.on_conflict, op.keep, op.keep_if_same)
        if schema.key_columns(table):  # optimistic: all keys new (a first push, or --diff after its lookups)
            cur.execute("SAVEPOINT mdbatch_plain")
            try:
                cur.execute(f"INSERT INTO {q(table.name)} ({cols}) {source}")
            except UniqueViolation:
                cur.execute("ROLLBACK TO SAVEPOINT mdbatch_plain")
            else:
                written = max(cur.rowcount, 0)
                cur.execute("RELEASE SAVEPOINT mdbatch_plain")
                return written
        cur.execute(self._upsert_sql(table, staged, source))
        written = max(cur.rowcount, 0)
        self._check_written(op, written, rows.num_rows)
        return written

    def _stage(self, cur: Any, table: Table, columns: list[str], chunks: list[pa.Buffer | bytes], count: int, index: int) -> str:
        """COPY binary `chunks` into a fresh temporary table shaped like `columns` of `table`; its name."""
        stage = f"mdbatch_stage_{index}"
        cols = ", ".join(self._q(c) for c in columns)
        cur.execute(f"CREATE TEMP TABLE {stage} ON COMMIT DROP AS SELECT {cols} FROM {self._q(table.name)} WITH NO DATA")
        self._copy(cur, stage, columns, chunks, count, quoted=True)
        return stage

    def _copy(self, cur: Any, target: str, columns: list[str], chunks: list[pa.Buffer | bytes], count: int, quoted: bool = False) -> int:
        """COPY binary `chunks` into `target` (a table name, quoted here unless `quoted`); rows copied."""
        started = time.perf_counter()
        cols = ", ".join(self._q(c) for c in columns)
        with cur.copy(f"COPY {target if quoted else self._q(target)} ({cols}) FROM STDIN (FORMAT binary)", writer=_CopyWriter(cur)) as copy:
            for chunk in chunks:
                copy.write(memoryview(chunk))
        cls = type(self)
        cls.copies += 1
        cls.copy_rows += count
        cls.copy_seconds += time.perf_counter() - started
        return count

    def _lookup(
        self, conn: Any, table: Table, keys: list[str], rows: pa.Table, present: str | None, select: list[str]
    ) -> list[tuple[Any, ...]]:
        q = self._q
        rows = rows.sort_by([(k, "ascending") for k in keys])  # probes in index order: cache-friendly
        # Keys are stored with NUL as U+FFFD (see pgcopy): look them up the same way.
        values = [[v.replace("\x00", "\ufffd") if isinstance(v, str) else v for v in rows[k].to_pylist()] for k in keys]
        if all(pa.types.is_string(rows.schema.field(k).type) for k in keys) and not any(
            not v or _SEP in v
            for column in values
            for v in column  # string_to_array drops empty strings
        ):
            # One text parameter per key column, split by the server: no per-element work in Python.
            unnest = ", ".join("string_to_array(%s, E'\\x1f')" for _ in keys)
            params: list[Any] = [_SEP.join(column) for column in values]
        else:
            unnest = ", ".join(f"%b::{_PG_ARRAY.get(str(rows.schema.field(k).type), 'text')}[]" for k in keys)
            params = values
        names = ", ".join(q(k) for k in keys)
        match = " AND ".join(f"t.{q(k)} = u.{q(k)}" for k in keys)
        cond = f" WHERE t.{q(present)} IS NOT NULL" if present else ""
        sql = (
            f"SELECT {', '.join(f't.{q(c)}' for c in select)} FROM {q(table.name)} AS t "
            f"JOIN unnest({unnest}) AS u({names}) ON {match}{cond}"
        )
        with conn.connection.driver_connection.cursor() as cur:
            # Index probes per key, whatever the table size: a hash join would scan the whole table,
            # making a --diff re-push cost grow with the catalog instead of with the campaign.
            cur.execute("SET LOCAL enable_hashjoin = off; SET LOCAL enable_mergejoin = off; SET LOCAL enable_seqscan = off")
            cur.execute(sql, params)
            return cur.fetchall()


def _without_nul(rows: pa.Table) -> pa.Table:
    """`rows` with NUL in text replaced by U+FFFD, as PostgreSQL text stores it (it cannot hold NUL)."""
    for i, field in enumerate(rows.schema):
        if pa.types.is_string(field.type) or pa.types.is_large_string(field.type):
            column = rows.column(i)
            if pc.any(pc.match_substring(column, "\x00")).as_py():
                rows = rows.set_column(i, field, pc.replace_substring(column, "\x00", "\ufffd"))
    return rows
