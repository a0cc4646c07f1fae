"""What the SQL catalogs (SQLite and PostgreSQL, through SQLAlchemy 2 Core) have in common.

Schema creation and migration, typed streaming reads, counts, clears and the retry policy live
here; how a batch of rows reaches the database (executemany of tuples on SQLite, COPY into a
staging table then `INSERT … ON CONFLICT` on PostgreSQL) is each dialect's `_apply_ops`. Table
names come only from `schema` (validated, then quoted by the dialect); every value is a bound
parameter or COPY data, never SQL text.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, TypeVar

import pyarrow as pa
from sqlalchemy import Engine, Table, Text, func, inspect, select, text
from sqlalchemy.exc import DBAPIError, SQLAlchemyError
from sqlalchemy.schema import CreateIndex, CreateTable

from ..errors import CatalogDamagedError, CatalogError, DuplicateKeysError, MdbatchError
from . import schema
from .base import CatalogBackend
from .ops import Op, Upsert, typed

T = TypeVar("T")

_RETRIES = 10
#: Parameters per statement in chunked lookups (SQLite's historical limit is 999).
LOOKUP_PARAMS = 900


class SQLCatalog(CatalogBackend):
    """A catalog in a SQL database reachable through SQLAlchemy (subclassed per dialect)."""

    def __init__(self, url: str) -> None:
        from ..config import redact, url_passwords

        self.url = url
        self.display_url = redact(url)
        self._secrets = url_passwords(url)
        self.is_sqlite = url.startswith("sqlite")
        try:
            self.engine: Engine = self._create_engine(url)
        except (SQLAlchemyError, ImportError, ValueError) as exc:
            raise CatalogError(f"cannot open catalog {self.display_url}: {self._one_line(exc)}") from exc
        self._known_tables: set[str] = set()
        self._schema_ready = False

    # -- dialect hooks --------------------------------------------------------------------------

    def _create_engine(self, url: str) -> Engine:
        raise NotImplementedError

    def _write_engine(self) -> Engine:
        """The engine write transactions run on (SQLite: one that begins IMMEDIATE)."""
        return self.engine

    def _lock_ddl(self, conn: Any) -> None:
        """Serialize schema changes between processes (PostgreSQL: an advisory lock)."""

    def _apply_ops(self, conn: Any, ops: Sequence[Op]) -> list[int]:
        raise NotImplementedError

    def _lookup(
        self, conn: Any, table: Table, keys: list[str], rows: pa.Table, present: str | None, select: list[str]
    ) -> list[tuple[Any, ...]]:
        """Rows (the `select` columns) of `table` equal to a row of `rows` on `keys`, by index lookups."""
        raise NotImplementedError

    def _retryable(self, exc: DBAPIError) -> bool:
        return False

    def _damage(self, exc: BaseException) -> CatalogDamagedError | None:
        """The error to report when `exc` says the database's storage is damaged, else None."""
        return None

    def _check_storage(self) -> None:
        """Check the storage once before the first statement (SQLite: PRAGMA quick_check)."""

    # -- schema -------------------------------------------------------------------------------

    def init_schema(self, force: bool = False) -> None:
        if self._schema_ready and not force:
            return

        def run() -> None:
            with self._write_engine().begin() as conn:
                self._lock_ddl(conn)
                if force:
                    for name in inspect(conn).get_table_names():
                        if schema.item_kind(name) is not None:
                            schema.table_for(name).drop(conn)
                    schema.metadata.drop_all(conn)
                    self._known_tables.clear()
                self._create(conn, schema.FIXED_TABLES)
                version = conn.execute(select(schema.SCHEMA_INFO.c.value).where(schema.SCHEMA_INFO.c.key == "schema_version")).scalar()
                if version is None:
                    conn.execute(schema.SCHEMA_INFO.insert().values(key="schema_version", value=str(schema.SCHEMA_VERSION)))
                elif int(version) > schema.SCHEMA_VERSION:
                    raise CatalogError(
                        f"catalog {self.display_url} has schema version {version}, "
                        f"newer than this mdbatch ({schema.SCHEMA_VERSION}); upgrade mdbatch"
                    )
                elif int(version) < schema.SCHEMA_VERSION:
                    self._migrate(conn, int(version))
                    conn.execute(
                        schema.SCHEMA_INFO.update()
                        .where(schema.SCHEMA_INFO.c.key == "schema_version")
                        .values(value=str(schema.SCHEMA_VERSION))
                    )

        self._retry(run)
        self._schema_ready = True

    def _create(self, conn: Any, tables: Sequence[Table]) -> None:
        for table in tables:
            conn.execute(CreateTable(table, if_not_exists=True))
            for index in sorted(table.indexes, key=lambda i: str(i.name)):
                conn.execute(CreateIndex(index, if_not_exists=True))
            self._known_tables.add(table.name)

    def _migrate(self, conn: Any, version: int) -> None:
        """Bring a catalog of schema `version` up to `schema.SCHEMA_VERSION` (inside the DDL lock)."""
        if version < 2:
            insp = inspect(conn)
            if "facts" not in {c["name"] for c in insp.get_columns(schema.FILES.name)}:
                conn.exec_driver_sql(f"ALTER TABLE {self._q(schema.FILES.name)} ADD COLUMN facts TEXT")
            for name in insp.get_table_names():
                if schema.item_kind(name) == "analysis":
                    present = {c["name"] for c in insp.get_columns(name)}
                    if "data_csv_bytes" not in present:
                        q = self._q(name)
                        conn.exec_driver_sql(f"ALTER TABLE {q} ADD COLUMN data_csv_bytes BIGINT")
                        size = "length(CAST(data_csv AS BLOB))" if self.is_sqlite else "octet_length(data_csv)"
                        conn.exec_driver_sql(f"UPDATE {q} SET data_csv_bytes = {size} WHERE data_csv IS NOT NULL")
            if not self.is_sqlite:  # version 1 bounded user-derived strings (a long directory name broke a batch)
                for name in insp.get_table_names():
                    if name not in {t.name for t in schema.FIXED_TABLES} and schema.item_kind(name) is None:
                        continue
                    wanted = schema.table_for(name)
                    for column in insp.get_columns(name):
                        if (
                            column["name"] in wanted.c
                            and isinstance(wanted.c[column["name"]].type, Text)
                            and not isinstance(column["type"], Text)
                        ):
                            conn.exec_driver_sql(f"ALTER TABLE {self._q(name)} ALTER COLUMN {self._q(column['name'])} TYPE TEXT")
        if version < 3:  # run history tables are created with the fixed tables; the cache gains a version
            self._add_columns(conn, schema.FILES, ["cache_version"])
        if version < 4:  # simulations gain the fingerprint of their recorded inventory (NULL: scan them)
            self._add_columns(conn, schema.SIMULATIONS, ["fingerprint"])
        if version < 5:  # runs gain pid and heartbeat; removed simulations are marked, not deleted
            self._add_columns(conn, schema.RUNS, ["pid", "heartbeat_at", "job"])
            self._add_columns(conn, schema.SIMULATIONS, ["removed_run", "removed_at"])
            self._add_columns(conn, schema.FILES, ["removed_run"])
            # The inventory is no longer indexed by (size, digest): every audit paid for it on every row.
            conn.exec_driver_sql("DROP INDEX IF EXISTS ix_files_digest")

    def _add_columns(self, conn: Any, table: Table, names: Sequence[str]) -> None:
        """Add the named columns of `table`'s definition that the database table lacks (NULL in old rows)."""
        present = {c["name"] for c in inspect(conn).get_columns(table.name)}
        for name in names:
            if name not in present:
                kind = table.c[name].type.compile(dialect=conn.dialect)
                conn.exec_driver_sql(f"ALTER TABLE {self._q(table.name)} ADD COLUMN {self._q(name)} {kind}")

    def _ensure_tables(self, names: Sequence[str]) -> None:
        """Create the item tables among `names` that this process has not seen yet (own transaction)."""
        missing = [n for n in dict.fromkeys(names) if n not in self._known_tables]
        if not missing:
            return

        def run() -> None:
            with self._write_engine().begin() as conn:
                self._lock_ddl(conn)
                self._create(conn, [schema.table_for(n) for n in missing])

        self._retry(run)

    def schema_version(self) -> int | None:
        def go() -> int | None:
            with self.engine.connect() as conn:
                if not inspect(conn).has_table(schema.SCHEMA_INFO.name):
                    return None
                value = conn.execute(select(schema.SCHEMA_INFO.c.value).where(schema.SCHEMA_INFO.c.key == "schema_version")).scalar()
            return None if value is None else int(value)

        return self._retry(go)

    def tables(self) -> list[str]:
        def go() -> list[str]:
            with self.engine.connect() as conn:
                names = inspect(conn).get_table_names()
            return sorted(n for n in names if n in {t.name for t in schema.FIXED_TABLES} or schema.item_kind(n) is not None)

        return self._retry(go)

    # -- writes -------------------------------------------------------------------------------

    def apply(self, ops: Sequence[Op]) -> list[int]:
        self.init_schema()
        self._ensure_tables([op.table for op in ops if schema.item_kind(op.table) is not None])

        def run() -> list[int]:
            with self._write_engine().begin() as conn:
                return self._apply_ops(conn, ops)

        return self._retry(run)

    def existing_keys(self, table: str, keys: pa.Table) -> pa.Table:
        definition = schema.table_for(table)
        names = list(schema.key_columns(definition))
        return self._match(definition, keys.select(names), names, schema.present_column(definition))

    def rows_matching(self, table: str, match: pa.Table, columns: Sequence[str] | None = None) -> pa.Table:
        definition = schema.table_for(table)
        return self._match(definition, match, list(columns) if columns is not None else [c.name for c in definition.columns], None)

    def _match(self, definition: Table, wanted: pa.Table, select: list[str], present: str | None) -> pa.Table:
        arrow = schema.arrow_schema(definition, select)
        if wanted.num_rows == 0 or not self._exists(definition.name):
            return arrow.empty_table()
        wanted = typed(definition, wanted)

        def go() -> list[tuple[Any, ...]]:
            with self.engine.connect() as conn:
                return self._lookup(conn, definition, wanted.column_names, wanted, present, select)

        found = self._retry(go)
        if not found:
            return arrow.empty_table()
        cols = list(zip(*found, strict=True))
        return pa.Table.from_arrays([_arrow_column(c, f.type) for c, f in zip(cols, arrow, strict=True)], schema=arrow)

    def clear(self, targets: Sequence[tuple[str, Mapping[str, Any]]]) -> list[int]:
        existing = set(self._table_names())

        def run() -> list[int]:
            counts = []
            with self._write_engine().begin() as conn:
                for name, where in targets:
                    if name not in existing:
                        counts.append(0)
                        continue
                    table = schema.table_for(name)
                    counts.append(int(conn.execute(table.delete().where(*self._conditions(table, where))).rowcount or 0))
            return counts

        return self._retry(run)

    # -- reads --------------------------------------------------------------------------------

    def iter_rows(
        self, table: str, where: Mapping[str, Any] | None = None, columns: Sequence[str] | None = None, chunk_rows: int = 50_000
    ) -> Iterator[pa.Table]:
        definition = schema.table_for(table)
        if not self._exists(table):
            raise CatalogError(
                f"catalog {self.display_url} has no table {table} (nothing pushed there yet; `mdbatch init-db` creates the schema)"
            )
        names = list(columns) if columns is not None else [c.name for c in definition.columns]
        arrow = schema.arrow_schema(definition, names)
        keys = [definition.c[k] for k in schema.key_columns(definition)] or list(definition.primary_key.columns)
        stmt = select(*[definition.c[n] for n in names]).where(*self._conditions(definition, where or {})).order_by(*keys)
        self._check_storage()
        try:
            with self.engine.connect() as conn:
                result = conn.execution_options(stream_results=True, yield_per=chunk_rows).execute(stmt)
                for part in result.partitions(chunk_rows):
                    cols = list(zip(*part, strict=True))
                    yield pa.Table.from_arrays([_arrow_column(c, f.type) for c, f in zip(cols, arrow, strict=True)], schema=arrow)
        except (SQLAlchemyError, self._driver_error) as exc:
            raise self._error(exc) from exc

    def count_rows(self, table: str, where: Mapping[str, Any] | None = None) -> int:
        definition = schema.table_for(table)
        if not self._exists(table):
            return 0

        def go() -> int:
            with self.engine.connect() as conn:
                stmt = select(func.count()).select_from(definition).where(*self._conditions(definition, where or {}))
                return int(conn.execute(stmt).scalar() or 0)

        return self._retry(go)

    def group_counts(
        self, table: str, where: Mapping[str, Any], by: Sequence[str], distinct: Sequence[str], min_count: int = 1
    ) -> pa.Table:
        definition = schema.table_for(table)
        arrow = schema.arrow_schema(definition, list(by)).append(pa.field("count", pa.int64())).append(pa.field("distinct", pa.int64()))
        if not self._exists(table):
            return arrow.empty_table()
        columns = [definition.c[c] for c in by]
        tuple_text: Any = definition.c[distinct[0]].cast(Text)  # the distinct tuple as one text: a:b:c
        for c in distinct[1:]:
            tuple_text = tuple_text.op("||")(":").op("||")(definition.c[c].cast(Text))
        stmt = (
            select(*columns, func.count().label("count"), func.count(tuple_text.distinct()).label("distinct"))
            .where(*self._conditions(definition, where))
            .group_by(*columns)
            .having(func.count() >= min_count)
        )

        def go() -> list[tuple[Any, ...]]:
            with self.engine.connect() as conn:
                return [tuple(r) for r in conn.execute(stmt)]

        rows = self._retry(go)
        cols: list[Sequence[Any]] = list(zip(*rows, strict=True)) if rows else [[] for _ in arrow]
        return pa.Table.from_arrays([_arrow_column(c, f.type) for c, f in zip(cols, arrow, strict=True)], schema=arrow)

    def read_table(self, name: str) -> Any:
        schema.table_for(name)  # a name that is not a catalog table never reaches SQL
        return super().read_table(name)

    def close(self) -> None:
        self.engine.dispose()

    # -- helpers ------------------------------------------------------------------------------

    def _exists(self, name: str) -> bool:
        """Whether table `name` exists (tables seen once are remembered: no catalog query per lookup)."""
        if name in self._known_tables:
            return True
        names = self._table_names()
        self._known_tables.update(n for n in names if n == name or schema.item_kind(n) is not None)
        return name in names

    def _table_names(self) -> list[str]:
        def go() -> list[str]:
            with self.engine.connect() as conn:
                return list(inspect(conn).get_table_names())

        return self._retry(go)

    def _conditions(self, table: Table, where: Mapping[str, Any]) -> list[Any]:
        for name in where:
            if name not in table.c:
                raise CatalogError(f"internal: {table.name} has no column {name!r}")
        return [table.c[k] == v for k, v in where.items()] or [text("1 = 1")]

    def _q(self, name: str) -> str:
        return str(self.engine.dialect.identifier_preparer.quote(name))

    def _p(self, n: int = 1) -> str:
        mark = "?" if self.engine.dialect.paramstyle == "qmark" else "%s"
        return ", ".join([mark] * n)

    def _set_clause(self, table: Table, op: Upsert, keys: Sequence[str]) -> str:
        """`col = excluded.col, …` for an upsert's provided non-key columns, honouring `keep`."""
        q, tq = self._q, self._q(table.name)
        parts = [f"{q(c)} = excluded.{q(c)}" for c in op.rows.column_names if c not in keys and c not in op.keep]
        if op.keep:
            same = " AND ".join(f"{tq}.{q(c)} {self._null_safe_eq()} excluded.{q(c)}" for c in op.keep_if_same) or "1 = 1"
            parts += [f"{q(c)} = CASE WHEN {same} THEN {tq}.{q(c)} ELSE excluded.{q(c)} END" for c in op.keep]
        return ", ".join(parts)

    def _null_safe_eq(self) -> str:
        return "IS" if self.is_sqlite else "IS NOT DISTINCT FROM"

    def _upsert_sql(self, table: Table, op: Upsert, source: str) -> str:
        """`INSERT INTO t (cols) <source> ON CONFLICT …` for one Upsert; `source` is VALUES or SELECT."""
        keys = schema.key_columns(table)
        cols = ", ".join(self._q(c) for c in op.rows.column_names)
        sql = f"INSERT INTO {self._q(table.name)} ({cols}) {source}"
        if not keys or op.on_conflict == "new":
            return sql
        target = ", ".join(self._q(k) for k in keys)
        present = schema.present_column(table)
        if op.on_conflict == "replace":
            sets = self._set_clause(table, op, keys)
            return f"{sql} ON CONFLICT ({target}) " + (f"DO UPDATE SET {sets}" if sets else "DO NOTHING")
        if present is not None:  # fill in rows recorded without data; leave pushed ones alone
            sets = self._set_clause(table, Upsert(op.table, op.rows), keys)
            if sets:
                return f"{sql} ON CONFLICT ({target}) DO UPDATE SET {sets} WHERE {self._q(table.name)}.{self._q(present)} IS NULL"
        return f"{sql} ON CONFLICT ({target}) DO NOTHING"

    @staticmethod
    def _check_written(op: Upsert, written: int, expected: int) -> None:
        if op.on_conflict == "error" and written < expected:
            raise DuplicateKeysError(expected - written, {op.table: expected - written}, concurrent=True)

    def _one_line(self, exc: BaseException) -> str:
        msg = str(getattr(exc, "orig", None) or exc).strip()
        line = msg.splitlines()[0] if msg else type(exc).__name__
        for secret in self._secrets:
            line = line.replace(secret, "***")
        return line

    def _retry(self, action: Callable[[], T]) -> T:
        """Run `action`, retrying with backoff while the database is locked or a transaction must be retried."""
        self._check_storage()
        delay = 0.05
        for attempt in range(_RETRIES):
            try:
                return action()
            except MdbatchError:
                raise
            except DBAPIError as exc:
                if not self._retryable(exc) or attempt == _RETRIES - 1:
                    raise self._error(exc) from exc
            except (SQLAlchemyError, self._driver_error) as exc:
                raise self._error(exc) from exc
            time.sleep(delay)
            delay = min(delay * 2, 2.0)
        raise CatalogError(f"catalog {self.display_url}: gave up after {_RETRIES} attempts")

    @property
    def _driver_error(self) -> type[Exception]:
        """The DBAPI driver's own error class (raised by raw cursors, outside SQLAlchemy's wrapping)."""
        return getattr(self.engine.dialect.loaded_dbapi, "Error", SQLAlchemyError)  # type: ignore[no-any-return]

    def _error(self, exc: BaseException) -> CatalogError:
        """The one-line CatalogError for a database error (a damaged catalog said so)."""
        return self._damage(exc) or CatalogError(f"catalog {self.display_url}: {self._one_line(exc)}")


def _arrow_column(values: Sequence[Any], kind: pa.DataType) -> pa.Array:
    if pa.types.is_timestamp(kind):
        values = [_utc(v) for v in values]
    return pa.array(values, type=kind)


def _utc(value: Any) -> Any:
    if isinstance(value, str):  # a timestamp SQLite holds as text written by something else
        from .ops import parse_ts

        return parse_ts(value)
    if isinstance(value, datetime) and value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value
