"""The SQL catalog (SQLAlchemy 2 Core): SQLite by default, PostgreSQL through the same code.

Bulk writes go through the driver's executemany with tuples (`exec_driver_sql`), one transaction
per batch: on SQLite that is ~5x faster than Core `insert()` with dicts.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

import pyarrow as pa
from sqlalchemy import Engine, create_engine, event, inspect, select, text, update
from sqlalchemy.exc import OperationalError, SQLAlchemyError

from ..errors import CatalogError
from ..naming import is_valid_name
from ..records import BatchResult
from . import schema
from .base import CatalogBackend, RunInfo

if TYPE_CHECKING:
    import pandas as pd

_SQLITE_BUSY_S = 60.0
_RETRIES = 8


def parse_ts(value: str | None) -> datetime | None:
    """An ISO 8601 timestamp as an aware UTC datetime (None stays None; junk becomes None)."""
    if not value:
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        return None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=timezone.utc)
    return parsed.astimezone(timezone.utc)


class SQLCatalog(CatalogBackend):
    """A catalog in a SQL database reachable through SQLAlchemy."""

    def __init__(self, url: str) -> None:
        from . import redact

        self.url = url
        self.display_url = redact(url)
        self.is_sqlite = url.startswith("sqlite")
        try:
            self.engine: Engine = self._create_engine(url)
        except (SQLAlchemyError, ImportError, ValueError) as exc:
            raise CatalogError(f"cannot open catalog {self.display_url}: {_one_line(exc)}") from exc
        self._known_tables: set[str] = set()
        self._schema_ready = False

    def _create_engine(self, url: str) -> Engine:
        if not self.is_sqlite:
            return create_engine(url, pool_pre_ping=True)
        engine = create_engine(url, connect_args={"timeout": _SQLITE_BUSY_S})

        @event.listens_for(engine, "connect")
        def _pragmas(dbapi_conn: Any, _record: Any) -> None:
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.execute(f"PRAGMA busy_timeout={int(_SQLITE_BUSY_S * 1000)}")
            cur.close()

        return engine

    # -- schema -------------------------------------------------------------------------------

    def init_schema(self, force: bool = False) -> None:
        def run() -> None:
            with self.engine.begin() as conn:
                if force:
                    schema.metadata.drop_all(conn)
                schema.metadata.create_all(conn)
                version = conn.execute(select(schema.SCHEMA_INFO.c.value).where(schema.SCHEMA_INFO.c.key == "schema_version")).scalar()
                if version is None:
                    conn.execute(schema.SCHEMA_INFO.insert().values(key="schema_version", value=str(schema.SCHEMA_VERSION)))
                elif int(version) > schema.SCHEMA_VERSION:
                    raise CatalogError(
                        f"catalog {self.display_url} has schema version {version}, newer than this mdbatch ({schema.SCHEMA_VERSION})"
                    )

        self._retry(run)
        self._schema_ready = True

    def _ensure_schema(self) -> None:
        if not self._schema_ready:
            self.init_schema()

    def _ensure_item_tables(self, conn: Any, analyses: list[str], artifacts: list[str]) -> None:
        wanted = [(n, schema.analysis_table) for n in analyses] + [(n, schema.artifact_table) for n in artifacts]
        for name, factory in wanted:
            table = factory(name)
            if table.name not in self._known_tables:
                table.create(conn, checkfirst=True)
                self._known_tables.add(table.name)

    # -- runs ---------------------------------------------------------------------------------

    def begin_run(self, run: RunInfo) -> None:
        self._ensure_schema()

        def go() -> None:
            with self.engine.begin() as conn:
                conn.execute(
                    schema.RUNS.insert().values(
                        run_id=run.run_id, command=run.command, root=run.root, arguments=json.dumps(run.arguments, default=str),
                        host=run.host, version=run.version, catalog=self.display_url,
                        started_at=parse_ts(run.started_at) or datetime.now(timezone.utc), status="running",
                    )
                )

        self._retry(go)

    def finish_run(self, run_id: str, status: str, summary: dict[str, Any]) -> None:
        def go() -> None:
            with self.engine.begin() as conn:
                if status == "completed":  # resume bookkeeping is only needed for unfinished runs
                    conn.execute(schema.SCANNED.delete().where(schema.SCANNED.c.run_id == run_id))
                conn.execute(
                    update(schema.RUNS)
                    .where(schema.RUNS.c.run_id == run_id)
                    .values(status=status, ended_at=datetime.now(timezone.utc), summary=json.dumps(summary, default=str))
                )

        self._retry(go)

    # -- bulk writes --------------------------------------------------------------------------

    def write_batch(self, run_id: str, root: str, batch: BatchResult) -> None:
        self._ensure_schema()
        self._retry(lambda: self._write(run_id, root, batch))

    def _write(self, run_id: str, root: str, batch: BatchResult) -> None:
        now = self._ts(datetime.now(timezone.utc).isoformat())
        systems = batch.systems.to_pydict()
        analyses = batch.analyses.to_pydict()
        artifacts = batch.artifacts.to_pydict()
        an_names = sorted({n for n in analyses["name"] if is_valid_name(n)})
        ar_names = sorted({n for n in artifacts["name"] if is_valid_name(n)})
        with self.engine.begin() as conn:
            self._ensure_item_tables(conn, an_names, ar_names)
            self._upsert(
                conn, schema.RUN_DATABASE, ["hash"],
                list(zip(
                    systems["hash"], systems["engine"], systems["parametrization"], systems["simulation_type"],
                    systems["input_data"], systems["input_data_type"], systems["path"], systems["status"],
                    [self._ts(t) for t in systems["scanned_at"]], strict=True,
                )),
            )
            # The overview mirrors each scanned simulation's registry exactly: replace its rows.
            self._executemany(conn, f"DELETE FROM {self._q('ANALYSIS_OVERVIEW')} WHERE hash = {self._p()}", [(h,) for h in systems["hash"]])
            overview = [
                (h, "analysis", n, t, d, s, r, 1, self._ts(u))
                for h, n, t, d, s, r, u in zip(
                    analyses["hash"], analyses["name"], analyses["simulation_type"], analyses["directory"],
                    analyses["status"], analyses["file_rows"], analyses["updated_at"], strict=True,
                )
            ] + [
                (h, "artifact", n, t, d, s, None, c, self._ts(u))
                for h, n, t, d, s, c, u in zip(
                    artifacts["hash"], artifacts["name"], artifacts["simulation_type"], artifacts["directory"],
                    artifacts["status"], artifacts["file_count"], artifacts["updated_at"], strict=True,
                )
            ]
            self._upsert(conn, schema.ANALYSIS_OVERVIEW, ["hash", "item_type", "item_name"], overview)
            for name in an_names:
                rows = [
                    (h, d, t, r, c, None, f".analysis/{fn}", now)
                    for h, d, t, n, r, c, fn in zip(
                        analyses["hash"], analyses["directory"], analyses["simulation_type"], analyses["name"],
                        analyses["file_rows"], analyses["columns"], analyses["filename"], strict=True,
                    )
                    if n == name
                ]
                self._upsert(conn, schema.analysis_table(name), ["hash"], rows, keep=("data_csv",))
            for name in ar_names:
                rows = [
                    (h, d, t, c, f, s, now)
                    for h, d, t, n, c, f, s in zip(
                        artifacts["hash"], artifacts["directory"], artifacts["simulation_type"], artifacts["name"],
                        artifacts["file_count"], artifacts["files"], artifacts["checksums"], strict=True,
                    )
                    if n == name
                ]
                self._upsert(conn, schema.artifact_table(name), ["hash"], rows)
            self._write_files(conn, run_id, root, batch.files, systems["directory"])
            self._executemany(
                conn,
                f"INSERT INTO {self._q('MDBATCH_SCANNED')} (run_id, simulation) VALUES ({self._p(2)}) ON CONFLICT DO NOTHING",
                [(run_id, d) for d in systems["directory"]],
            )
            found = batch.findings.to_pydict()
            self._executemany(
                conn,
                f"INSERT INTO {self._q('MDBATCH_FINDINGS')} (run_id, simulation, kind, item, detail) VALUES ({self._p(5)})",
                [(run_id, s, k, i, d) for s, k, i, d in zip(found["simulation"], found["kind"], found["item"], found["detail"], strict=True)],
            )

    def _write_files(self, conn: Any, run_id: str, root: str, files: pa.Table, simulations: list[str]) -> None:
        """Replace the inventory of every simulation in the batch (vanished files disappear)."""
        q = self._q("MDBATCH_FILES")
        self._executemany(conn, f"DELETE FROM {q} WHERE root = {self._p()} AND simulation = {self._p()}", [(root, s) for s in simulations])
        cols = files.to_pydict()
        n = files.num_rows
        rows = list(zip(
            [root] * n, cols["simulation"], cols["path"], cols["path_raw"], cols["size"], cols["mtime_ns"], cols["ctime_ns"],
            cols["inode"], cols["device"], cols["xxh3_128"], cols["sha256"], [run_id] * n, strict=True,
        ))
        names = "root, simulation, path, path_raw, size, mtime_ns, ctime_ns, inode, device, xxh3_128, sha256, run_id"
        self._executemany(conn, f"INSERT INTO {q} ({names}) VALUES ({self._p(12)})", rows)

    def _upsert(self, conn: Any, table: Any, keys: list[str], rows: list[tuple[Any, ...]], keep: tuple[str, ...] = ()) -> None:
        if not rows:
            return
        cols = [c.name for c in table.columns]
        if len(rows[0]) != len(cols):
            raise CatalogError(f"internal: {table.name} expects {len(cols)} values, got {len(rows[0])}")
        updates = ", ".join(f"{self._q(c)} = excluded.{self._q(c)}" for c in cols if c not in keys and c not in keep)
        sql = (
            f"INSERT INTO {self._q(table.name)} ({', '.join(self._q(c) for c in cols)}) VALUES ({self._p(len(cols))}) "
            f"ON CONFLICT ({', '.join(self._q(k) for k in keys)}) DO UPDATE SET {updates}"
        )
        self._executemany(conn, sql, rows)

    def _executemany(self, conn: Any, sql: str, rows: list[tuple[Any, ...]]) -> None:
        if rows:
            conn.exec_driver_sql(sql, rows)

    # -- reading ------------------------------------------------------------------------------

    def duplicate_summary(self, root: str) -> dict[str, int]:
        q = self._q("MDBATCH_FILES")
        inode = "device || ':' || inode" if self.is_sqlite else "CAST(device AS TEXT) || ':' || CAST(inode AS TEXT)"
        sql = (
            f"SELECT COUNT(*), COALESCE(SUM(n), 0), COALESCE(SUM((n_inodes - 1) * size), 0) FROM ("
            f"SELECT size, COUNT(*) AS n, COUNT(DISTINCT {inode}) AS n_inodes FROM {q} "
            f"WHERE root = {self._p()} AND xxh3_128 IS NOT NULL AND size > 0 GROUP BY size, xxh3_128 "
            f"HAVING COUNT(*) > 1) AS groups"
        )

        def go() -> dict[str, int]:
            with self.engine.connect() as conn:
                groups, files, reclaim = conn.exec_driver_sql(sql, (root,)).one()
            return {"groups": int(groups), "files": int(files), "reclaimable_bytes": int(reclaim)}

        self._ensure_schema()
        return self._retry(go)

    def file_inventory(self, root: str, chunk_rows: int = 100_000) -> Iterator[pa.Table]:
        from ..records import FILES_SCHEMA

        self._ensure_schema()
        names = [f.name for f in FILES_SCHEMA]
        sql = f"SELECT {', '.join(names)} FROM {self._q('MDBATCH_FILES')} WHERE root = {self._p()} ORDER BY simulation, path"
        with self.engine.connect() as conn:
            result = conn.exec_driver_sql(sql, (root,))
            while rows := result.fetchmany(chunk_rows):
                cols = list(zip(*rows, strict=True))
                yield pa.Table.from_arrays([pa.array(c, type=f.type) for c, f in zip(cols, FILES_SCHEMA, strict=True)], schema=FILES_SCHEMA)

    def scanned_simulations(self, run_id: str) -> set[str]:
        self._ensure_schema()
        with self.engine.connect() as conn:
            rows = conn.execute(select(schema.SCANNED.c.simulation).where(schema.SCANNED.c.run_id == run_id)).all()
        return {r[0] for r in rows}

    def read_table(self, name: str) -> pd.DataFrame:
        import pandas as pd

        if not inspect(self.engine).has_table(name):
            return pd.DataFrame()
        with self.engine.connect() as conn:
            return pd.read_sql_query(text(f"SELECT * FROM {self._q(name)}"), conn)

    def close(self) -> None:
        self.engine.dispose()

    # -- dialect details ----------------------------------------------------------------------

    def _q(self, name: str) -> str:
        return self.engine.dialect.identifier_preparer.quote(name)

    def _p(self, n: int = 1) -> str:
        mark = "?" if self.engine.dialect.paramstyle == "qmark" else "%s"
        return ", ".join([mark] * n)

    def _ts(self, iso: str | None) -> Any:
        parsed = parse_ts(iso)
        if parsed is None or not self.is_sqlite:
            return parsed
        # SQLAlchemy's SQLite DateTime storage format, so typed reads round-trip.
        return parsed.replace(tzinfo=None).strftime("%Y-%m-%d %H:%M:%S.%f")

    def _retry(self, action: Any) -> Any:
        """Run `action`, retrying with backoff while SQLite reports the database locked."""
        delay = 0.05
        for attempt in range(_RETRIES):
            try:
                return action()
            except OperationalError as exc:
                locked = "locked" in str(exc).lower() or "busy" in str(exc).lower()
                if not locked or attempt == _RETRIES - 1:
                    raise CatalogError(f"catalog {self.display_url}: {_one_line(exc)}") from exc
                time.sleep(delay)
                delay = min(delay * 2, 2.0)
            except SQLAlchemyError as exc:
                raise CatalogError(f"catalog {self.display_url}: {_one_line(exc)}") from exc
        return None


def _one_line(exc: BaseException) -> str:
    msg = str(getattr(exc, "orig", None) or exc)
    return msg.strip().splitlines()[0] if msg.strip() else type(exc).__name__
