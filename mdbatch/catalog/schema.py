"""The catalog's tables: MDFactory's four logical tables plus mdbatch's files, findings and runs.

Analysis and artifact names become table names (`ANALYSIS_<name>`, `ARTIFACT_<name>`) only after
`naming.is_valid_name`; everything else reaches the database as bound parameters, never as SQL.
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Column,
    DateTime,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
)

from ..errors import InvalidNameError
from ..naming import is_valid_name

SCHEMA_VERSION = 1

metadata = MetaData()

RUN_DATABASE = Table(
    "RUN_DATABASE",
    metadata,
    Column("hash", String(64), primary_key=True),
    Column("engine", String(64)),
    Column("parametrization", String(128)),
    Column("simulation_type", String(128)),
    Column("input_data", Text),
    Column("input_data_type", String(32)),
    Column("directory", Text),
    Column("status", String(32)),
    Column("timestamp_utc", DateTime(timezone=True)),
)

ANALYSIS_OVERVIEW = Table(
    "ANALYSIS_OVERVIEW",
    metadata,
    Column("hash", String(64), primary_key=True),
    Column("item_type", String(16), primary_key=True),
    Column("item_name", String(256), primary_key=True),
    Column("simulation_type", String(128)),
    Column("directory", Text),
    Column("status", String(32)),
    Column("row_count", BigInteger),
    Column("file_count", Integer),
    Column("updated_at", DateTime(timezone=True)),
)

FILES = Table(
    "MDBATCH_FILES",
    metadata,
    Column("root", Text, primary_key=True),
    Column("simulation", Text, primary_key=True),
    Column("path", Text, primary_key=True),
    Column("path_raw", LargeBinary),
    Column("size", BigInteger, nullable=False),
    Column("mtime_ns", BigInteger, nullable=False),
    Column("ctime_ns", BigInteger, nullable=False),
    Column("inode", BigInteger, nullable=False),
    Column("device", BigInteger, nullable=False),
    Column("xxh3_128", String(32)),
    Column("sha256", String(64)),
    Column("run_id", String(64), nullable=False),
)
Index("ix_files_digest", FILES.c.size, FILES.c.xxh3_128)

FINDINGS = Table(
    "MDBATCH_FINDINGS",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("run_id", String(64), nullable=False, index=True),
    Column("simulation", Text, nullable=False),
    Column("kind", String(32), nullable=False),
    Column("item", Text, nullable=False),
    Column("detail", Text, nullable=False),
)

RUNS = Table(
    "MDBATCH_RUNS",
    metadata,
    Column("run_id", String(64), primary_key=True),
    Column("command", String(32), nullable=False),
    Column("root", Text),
    Column("arguments", Text),
    Column("host", String(256)),
    Column("version", String(32)),
    Column("catalog", Text),
    Column("started_at", DateTime(timezone=True), nullable=False),
    Column("ended_at", DateTime(timezone=True)),
    Column("status", String(16), nullable=False),
    Column("summary", Text),
)

#: Which simulations a run has written (for --resume); emptied when the run completes.
SCANNED = Table(
    "MDBATCH_SCANNED",
    metadata,
    Column("run_id", String(64), primary_key=True),
    Column("simulation", Text, primary_key=True),
)

SCHEMA_INFO = Table(
    "MDBATCH_SCHEMA",
    metadata,
    Column("key", String(64), primary_key=True),
    Column("value", Text, nullable=False),
)


def analysis_table(name: str, meta: MetaData | None = None) -> Table:
    """The `ANALYSIS_<name>` table (one row per simulation hash)."""
    return Table(
        f"ANALYSIS_{_checked(name)}",
        meta if meta is not None else MetaData(),
        Column("hash", String(64), primary_key=True),
        Column("directory", Text),
        Column("simulation_type", String(128)),
        Column("row_count", BigInteger),
        Column("columns", Text),
        Column("data_csv", Text),
        Column("data_path", Text),
        Column("timestamp_utc", DateTime(timezone=True)),
    )


def artifact_table(name: str, meta: MetaData | None = None) -> Table:
    """The `ARTIFACT_<name>` table (one row per simulation hash)."""
    return Table(
        f"ARTIFACT_{_checked(name)}",
        meta if meta is not None else MetaData(),
        Column("hash", String(64), primary_key=True),
        Column("directory", Text),
        Column("simulation_type", String(128)),
        Column("file_count", Integer),
        Column("files", Text),
        Column("checksums", Text),
        Column("timestamp_utc", DateTime(timezone=True)),
    )


def _checked(name: str) -> str:
    if not is_valid_name(name):
        raise InvalidNameError(name)
    return name
