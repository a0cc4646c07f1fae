"""The catalog's tables: MDFactory's four logical tables plus mdbatch's files, findings and runs.

Analysis and artifact names become table names (`ANALYSIS_<name>`, `ARTIFACT_<name>`) only after
`naming.is_valid_name`; everything else reaches the database as bound parameters, never as SQL.
Every backend (SQLite, PostgreSQL, CSV) takes its column names, keys and types from here, and
the Arrow schema of every table (what reads return and writes accept) is derived from the same
definitions, so the three backends cannot drift apart.
"""

from __future__ import annotations

import functools

import pyarrow as pa
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

from ..errors import InvalidNameError, UsageError
from ..naming import is_valid_name

#: Version 2: `ANALYSIS_<name>.data_csv_bytes`, `MDBATCH_FILES.facts`; user-derived strings are unbounded TEXT.
#: Version 3: run history (`MDBATCH_SIMULATIONS`, `MDBATCH_CHANGES`, `MDBATCH_STAGES`), `MDBATCH_FILES.cache_version`.
#: Version 4: `MDBATCH_SIMULATIONS.fingerprint`; an index on `MDBATCH_FINDINGS` (run_id, simulation).
#: Version 5: runs record `pid`, `heartbeat_at` and `job`; removed simulations keep their rows, marked by
#: `removed_run` (`MDBATCH_SIMULATIONS`, `MDBATCH_FILES`) and `removed_at`.
#: Version 6: `MDBATCH_REGISTRY_SNAPSHOTS`: the exact bytes of every registry `mdbatch repair` replaced, before and after.
#: `MDBATCH_LINEAGE`: the edges of each simulation's dependency graph (`extras.depends_on`) and their state.
SCHEMA_VERSION = 6

#: Run statuses. `running` until it ends; `abandoned` when its process died without recording an end
#: (see `lifecycle.reap_abandoned`); `refused` when it would have recorded something it cannot vouch for.
RUN_STATUSES = ("running", "completed", "interrupted", "failed", "refused", "abandoned")

RUN_TABLE = "RUN_DATABASE"
OVERVIEW_TABLE = "ANALYSIS_OVERVIEW"
ANALYSIS_PREFIX = "ANALYSIS_"
ARTIFACT_PREFIX = "ARTIFACT_"

metadata = MetaData()

RUN_DATABASE = Table(
    RUN_TABLE,
    metadata,
    Column("hash", Text, primary_key=True),
    Column("engine", Text),
    Column("parametrization", Text),
    Column("simulation_type", Text),
    Column("input_data", Text),
    Column("input_data_type", String(32)),
    Column("directory", Text),
    Column("status", String(32)),
    Column("timestamp_utc", DateTime(timezone=True)),
)

ANALYSIS_OVERVIEW = Table(
    OVERVIEW_TABLE,
    metadata,
    Column("hash", Text, primary_key=True),
    Column("item_type", String(16), primary_key=True),
    Column("item_name", Text, primary_key=True),
    Column("simulation_type", Text),
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
    #: Parquet footer facts as JSON ({"rows", "columns"}) for registered analyses (the hash cache's).
    Column("facts", Text),
    #: The hash cache's version (hashcache.HASH_CACHE_VERSION) when the digests were taken; the algorithms are
    #: the column names (xxh3_128, sha256).
    Column("cache_version", Integer),
    #: The run that recorded the simulation removed (NULL: present). Removed rows stay as the hash
    #: cache of a directory that comes back, until `mdbatch runs prune`.
    Column("removed_run", String(64)),
)

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
#: An unchanged simulation's findings are copied from the run that last scanned it.
Index("ix_findings_run_simulation", FINDINGS.c.run_id, FINDINGS.c.simulation)

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
    #: The process that runs it (on `host`), and when it last said it was alive.
    Column("pid", Integer),
    Column("heartbeat_at", DateTime(timezone=True)),
    #: The batch job it runs in, as `slurm:<job id>:<restart count>` (NULL outside a job).
    Column("job", String(64)),
)

#: Which simulations a run has written (for --resume); emptied when the run completes.
SCANNED = Table(
    "MDBATCH_SCANNED",
    metadata,
    Column("run_id", String(64), primary_key=True),
    Column("simulation", Text, primary_key=True),
)

#: The current state of each simulation of each root (what change detection compares against).
SIMULATIONS = Table(
    "MDBATCH_SIMULATIONS",
    metadata,
    Column("root", Text, primary_key=True),
    Column("simulation", Text, primary_key=True),
    Column("hash", Text),
    Column("status", String(32)),
    #: The run that last scanned the simulation; its findings there are the simulation's current ones.
    Column("run_id", String(64), nullable=False),
    #: The fingerprint of the recorded inventory (`inventory.fingerprint`); NULL when the last scan
    #: cannot be reproduced from stat fields. An audit keeps a simulation whose fingerprint holds.
    Column("fingerprint", String(32)),
    #: The run that found the simulation gone, and when (NULL: present). Its rows are kept.
    Column("removed_run", String(64)),
    Column("removed_at", DateTime(timezone=True)),
)

#: What each run found changed since the previous one (files, simulations, findings).
CHANGES = Table(
    "MDBATCH_CHANGES",
    metadata,
    Column("run_id", String(64), primary_key=True),
    Column("scope", String(16), primary_key=True),
    Column("change", String(16), primary_key=True),
    Column("simulation", Text, primary_key=True),
    Column("item", Text, primary_key=True),
    Column("size", BigInteger),
    Column("digest", String(32)),
    Column("detail", Text),
)

#: Per-stage snapshots of each run: discover, scan, write, changes.
STAGES = Table(
    "MDBATCH_STAGES",
    metadata,
    Column("run_id", String(64), primary_key=True),
    Column("stage", String(16), primary_key=True),
    Column("items", BigInteger),
    Column("bytes", BigInteger),
    Column("elapsed_ms", BigInteger),
    Column("errors", BigInteger),
    Column("detail", Text),
)

#: Every registry a repair, an undo or a restore replaced: its exact bytes before and after, with their
#: sha256 (NULL bytes and sha: there was no registry file). `seq` numbers the registries of one run.
REGISTRY_SNAPSHOTS = Table(
    "MDBATCH_REGISTRY_SNAPSHOTS",
    metadata,
    Column("run_id", String(64), primary_key=True),
    Column("seq", Integer, primary_key=True),
    Column("root", Text),
    Column("simulation", Text),
    Column("hash", Text),
    Column("directory", Text, nullable=False),
    Column("action", String(16), nullable=False),
    Column("sha256_before", String(64)),
    Column("bytes_before", LargeBinary),
    Column("sha256_after", String(64)),
    Column("bytes_after", LargeBinary),
    Column("taken_at", DateTime(timezone=True), nullable=False),
    #: What changed, as JSON: the fixes applied ({kind, item, detail}) or the run undone/restored.
    Column("detail", Text),
)
Index("ix_registry_snapshots_directory", REGISTRY_SNAPSHOTS.c.directory)

#: The edges of each simulation's dependency graph (see `lineage`): `item` (``analysis:<name>`` or
#: ``artifact:<name>``) was made from `depends_on`; `state` ok, stale, missing or cycle. An audit
#: replaces a scanned simulation's edges (those of a simulation it kept unscanned stand).
LINEAGE = Table(
    "MDBATCH_LINEAGE",
    metadata,
    Column("root", Text, primary_key=True),
    Column("simulation", Text, primary_key=True),
    Column("item", Text, primary_key=True),
    Column("depends_on", Text, primary_key=True),
    Column("hash", Text),
    Column("state", String(16), nullable=False),
    Column("detail", Text),
)
#: `Catalog.lineage(hash)` looks a simulation's edges up by its hash.
Index("ix_lineage_hash", LINEAGE.c.hash)

SCHEMA_INFO = Table(
    "MDBATCH_SCHEMA",
    metadata,
    Column("key", String(64), primary_key=True),
    Column("value", Text, nullable=False),
)

#: The fixed tables, in creation order.
FIXED_TABLES: tuple[Table, ...] = tuple(metadata.sorted_tables)
_FIXED = {t.name: t for t in FIXED_TABLES}

#: Column that must be non-NULL for a row to count as already pushed (`--diff`, duplicate check).
#: An audit records each analysis without its data; a later push fills `data_csv` in.
PRESENT_COLUMN = {"analysis": "data_csv_bytes"}


def analysis_table(name: str, meta: MetaData | None = None) -> Table:
    """The `ANALYSIS_<name>` table (one row per simulation hash)."""
    if meta is None:
        return _item_table("analysis", name)
    return Table(
        f"{ANALYSIS_PREFIX}{checked_name(name)}",
        meta,
        Column("hash", Text, primary_key=True),
        Column("directory", Text),
        Column("simulation_type", Text),
        Column("row_count", BigInteger),
        Column("columns", Text),
        Column("data_csv", Text),
        Column("data_path", Text),
        Column("timestamp_utc", DateTime(timezone=True)),
        Column("data_csv_bytes", BigInteger),
    )


def artifact_table(name: str, meta: MetaData | None = None) -> Table:
    """The `ARTIFACT_<name>` table (one row per simulation hash)."""
    if meta is None:
        return _item_table("artifact", name)
    return Table(
        f"{ARTIFACT_PREFIX}{checked_name(name)}",
        meta,
        Column("hash", Text, primary_key=True),
        Column("directory", Text),
        Column("simulation_type", Text),
        Column("file_count", Integer),
        Column("files", Text),
        Column("checksums", Text),
        Column("timestamp_utc", DateTime(timezone=True)),
    )


@functools.lru_cache(maxsize=4096)
def _item_table(kind: str, name: str) -> Table:
    """One definition per item table, built once (a SQLAlchemy Table costs ~1 ms to build)."""
    build = analysis_table if kind == "analysis" else artifact_table
    return build(name, MetaData())


def checked_name(name: str) -> str:
    """`name` when it may become part of a table name, else InvalidNameError."""
    if not is_valid_name(name):
        raise InvalidNameError(name)
    return name


def item_kind(table_name: str) -> str | None:
    """'analysis' for `ANALYSIS_<name>`, 'artifact' for `ARTIFACT_<name>`, else None."""
    if table_name == OVERVIEW_TABLE:
        return None
    if table_name.startswith(ANALYSIS_PREFIX) and is_valid_name(table_name[len(ANALYSIS_PREFIX) :]):
        return "analysis"
    if table_name.startswith(ARTIFACT_PREFIX) and is_valid_name(table_name[len(ARTIFACT_PREFIX) :]):
        return "artifact"
    return None


def item_table_name(kind: str, name: str) -> str:
    """`ANALYSIS_<name>` or `ARTIFACT_<name>` after validating `name`."""
    prefix = ANALYSIS_PREFIX if kind == "analysis" else ARTIFACT_PREFIX
    return f"{prefix}{checked_name(name)}"


def table_for(name: str) -> Table:
    """The table definition behind a catalog table name (fixed, `ANALYSIS_<n>` or `ARTIFACT_<n>`).

    Anything else is a UsageError: table names are never taken from input unchecked.
    """
    if name in _FIXED:
        return _FIXED[name]
    kind = item_kind(name)
    if kind == "analysis":
        return analysis_table(name[len(ANALYSIS_PREFIX) :])
    if kind == "artifact":
        return artifact_table(name[len(ARTIFACT_PREFIX) :])
    for prefix in (ANALYSIS_PREFIX, ARTIFACT_PREFIX):
        if name.startswith(prefix):
            raise InvalidNameError(name[len(prefix) :])
    raise UsageError(f"{name!r} is not a catalog table (RUN_DATABASE, ANALYSIS_OVERVIEW, ANALYSIS_<name>, ARTIFACT_<name>, MDBATCH_*)")


def key_columns(table: Table) -> tuple[str, ...]:
    """The columns that identify a row; () for append-only tables with a generated id."""
    keys = tuple(c.name for c in table.primary_key.columns)
    if len(keys) == 1 and table.c[keys[0]].autoincrement is True:
        return ()
    return keys


def present_column(table: Table) -> str | None:
    """The column whose NULL means "recorded, but not yet pushed" (see PRESENT_COLUMN)."""
    kind = item_kind(table.name)
    return PRESENT_COLUMN.get(kind) if kind else None


def arrow_type(column: Column) -> pa.DataType:  # type: ignore[type-arg]
    """The Arrow type every backend reads and writes for `column`."""
    kind = column.type
    if isinstance(kind, (BigInteger, Integer)):
        return pa.int64()
    if isinstance(kind, DateTime):
        return pa.timestamp("us", tz="UTC")
    if isinstance(kind, LargeBinary):
        return pa.binary()
    return pa.string()


def arrow_schema(table: Table, columns: list[str] | None = None) -> pa.Schema:
    """The Arrow schema of `table` (or of the named `columns`, in that order)."""
    names = columns if columns is not None else [c.name for c in table.columns]
    return pa.schema([pa.field(n, arrow_type(table.c[n])) for n in names])
