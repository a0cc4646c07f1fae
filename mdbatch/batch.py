"""The worker task: a batch of simulation directories in, Arrow tables out (pure: no Dask, no database).

`scan_group` is what a Dask task runs. It keeps the simulations whose recorded fingerprint still
holds (their recorded findings travel with the group), defers those whose fingerprint moved (the
client sends them again with their hash-cache entries), scans the rest with `scan_batch` (each
file looked up in the hash cache first, see `hashcache`), and classifies their files against the
recorded inventory (`changes.file_changes`), so that the client only writes. Everything returned
is one Arrow table per catalog concern (systems, analyses, artifacts, files, findings).

Column names: `simulation` is a path relative to the campaign root, `directory` an absolute path.
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from .changes import file_changes
from .findings import UNREADABLE, Finding
from .hashcache import CacheEntry, entries
from .inventory import Unchanged, check_unchanged
from .paths import display, relative_to_root
from .scan import ScanOptions, SimulationScan, scan_salt, scan_simulation

SYSTEMS_SCHEMA = pa.schema(
    [
        ("hash", pa.string()),
        ("simulation", pa.string()),
        ("directory", pa.string()),
        ("simulation_type", pa.string()),
        ("engine", pa.string()),
        ("parametrization", pa.string()),
        ("status", pa.string()),
        ("input_data", pa.string()),
        ("input_data_type", pa.string()),
        ("scanned_at", pa.string()),
        ("file_count", pa.int64()),
        ("bytes", pa.int64()),
        ("finding_count", pa.int64()),
        ("fingerprint", pa.string()),
    ]
)
ANALYSES_SCHEMA = pa.schema(
    [
        ("hash", pa.string()),
        ("simulation", pa.string()),
        ("simulation_type", pa.string()),
        ("name", pa.string()),
        ("filename", pa.string()),
        ("status", pa.string()),
        ("registered_rows", pa.int64()),
        ("file_rows", pa.int64()),
        ("columns", pa.string()),
        ("file_size", pa.int64()),
        ("updated_at", pa.string()),
    ]
)
ARTIFACTS_SCHEMA = pa.schema(
    [
        ("hash", pa.string()),
        ("simulation", pa.string()),
        ("simulation_type", pa.string()),
        ("name", pa.string()),
        ("status", pa.string()),
        ("file_count", pa.int64()),
        ("files", pa.string()),
        ("checksums", pa.string()),
        ("updated_at", pa.string()),
    ]
)
FILES_SCHEMA = pa.schema(
    [
        ("simulation", pa.string()),
        ("path", pa.string()),
        ("path_raw", pa.binary()),
        ("size", pa.int64()),
        ("mtime_ns", pa.int64()),
        ("ctime_ns", pa.int64()),
        ("inode", pa.int64()),
        ("device", pa.int64()),
        ("xxh3_128", pa.string()),
        ("sha256", pa.string()),
        ("facts", pa.string()),
        ("cached", pa.bool_()),
    ]
)
FINDINGS_SCHEMA = pa.schema([("simulation", pa.string()), ("kind", pa.string()), ("item", pa.string()), ("detail", pa.string())])
#: The edges of each scanned simulation's dependency graph (see `lineage.check_lineage`).
LINEAGE_SCHEMA = pa.schema(
    [
        ("hash", pa.string()),
        ("simulation", pa.string()),
        ("item", pa.string()),
        ("depends_on", pa.string()),
        ("state", pa.string()),
        ("detail", pa.string()),
    ]
)


@dataclass(frozen=True, slots=True)
class BatchResult:
    """One batch's scans as Arrow tables, plus what the batch cost."""

    index: int
    systems: pa.Table
    analyses: pa.Table
    artifacts: pa.Table
    files: pa.Table
    findings: pa.Table
    elapsed_s: float
    #: Change detection against the recorded inventory, done on the worker (see `scan_group`): the
    #: change records (changes.Change tuples), unchanged files, and the simulations whose inventory
    #: is exactly the recorded one.
    changes: tuple[tuple[Any, ...], ...] = ()
    unchanged_files: int = 0
    identical: frozenset[str] = frozenset()
    #: Simulations (of `identical`) whose recorded fingerprint held: kept as recorded without a scan.
    #: Their `systems` rows carry only simulation, directory, hash, status, counts and fingerprint; they
    #: have no `files` rows, and their `findings` are the recorded ones.
    kept: frozenset[str] = frozenset()
    #: Paths whose recorded fingerprint did not hold: to be scanned again with their hash-cache entries.
    deferred: tuple[str, ...] = ()
    #: What adaptive I/O measures (see `scan.SimulationScan.reads`), summed over the batch.
    reads: int = 0
    read_s: float = 0.0
    known: int = 0
    cold: int = 0
    #: Lineage edges of the scanned simulations (none for `kept` ones: the catalog's edges stand).
    lineage: pa.Table = field(default_factory=LINEAGE_SCHEMA.empty_table)

    @property
    def simulations(self) -> int:
        return self.systems.num_rows

    @property
    def file_count(self) -> int:
        return int(pc.sum(self.systems.column("file_count")).as_py() or 0) if self.systems.num_rows else 0

    @property
    def bytes(self) -> int:
        return int(pc.sum(self.systems.column("bytes")).as_py() or 0) if self.systems.num_rows else 0


def tuples_table(rows: Iterable[tuple[object, ...]], schema: pa.Schema) -> pa.Table:
    """Row tuples (in the order of `schema`'s fields) as an Arrow table of that schema."""
    cols = list(zip(*rows, strict=True)) if rows else []
    if not cols:
        return schema.empty_table()
    return pa.Table.from_arrays([pa.array(c, type=f.type) for c, f in zip(cols, schema, strict=True)], schema=schema)


def to_tables(scans: Sequence[SimulationScan], index: int = 0, elapsed_s: float = 0.0) -> BatchResult:
    """Columnar form of a list of scans."""
    systems = [
        (
            s.hash,
            s.simulation,
            s.directory,
            s.simulation_type,
            s.engine,
            s.parametrization,
            s.status,
            s.input_data,
            s.input_data_type,
            s.scanned_at,
            len(s.files),
            s.bytes,
            len(s.findings),
            s.fingerprint,
        )
        for s in scans
    ]
    analyses = [
        (
            s.hash,
            s.simulation,
            s.simulation_type,
            a.name,
            a.filename,
            a.status,
            a.registered_rows,
            a.file_rows,
            json.dumps(list(a.registered_columns)),
            a.file_size,
            a.updated_at,
        )
        for s in scans
        for a in s.analyses
    ]
    artifacts = [
        (
            s.hash,
            s.simulation,
            s.simulation_type,
            a.name,
            a.status,
            len(a.files),
            json.dumps(list(a.files)),
            json.dumps(dict(a.checksums), sort_keys=True),
            a.updated_at,
        )
        for s in scans
        for a in s.artifacts
    ]
    files = [
        (s.simulation, f.path, f.path_raw, f.size, f.mtime_ns, f.ctime_ns, f.inode, f.device, f.xxh3_128, f.sha256, f.facts, f.cached)
        for s in scans
        for f in s.files
    ]
    found = [(f.simulation, f.kind, f.item, f.detail) for s in scans for f in s.findings]
    edges = [(s.hash, s.simulation, e.item, e.depends_on, e.state, e.detail) for s in scans for e in s.lineage]
    return BatchResult(
        index=index,
        systems=tuples_table(systems, SYSTEMS_SCHEMA),
        analyses=tuples_table(analyses, ANALYSES_SCHEMA),
        artifacts=tuples_table(artifacts, ARTIFACTS_SCHEMA),
        files=tuples_table(files, FILES_SCHEMA),
        findings=tuples_table(found, FINDINGS_SCHEMA),
        elapsed_s=elapsed_s,
        lineage=tuples_table(edges, LINEAGE_SCHEMA),
        reads=sum(s.reads for s in scans),
        read_s=sum(s.read_s for s in scans),
        known=sum(s.known for s in scans),
        cold=sum(s.cold for s in scans),
    )


def scan_batch(
    paths: Sequence[str],
    root: str | None,
    options: ScanOptions | None = None,
    index: int = 0,
    cache: Mapping[str, Mapping[str, CacheEntry]] | None = None,
) -> BatchResult:
    """Scan every simulation in `paths` and return the batch as Arrow tables (what a task returns).

    `cache` maps a simulation (relative to `root`) to its hash-cache entries, looked up by the
    client in one query per batch.
    """
    started = time.perf_counter()
    threads = options.io_threads if options is not None else 1
    lookup = cache or {}

    def one(path: str) -> SimulationScan:
        return _scan_guarded(path, root, options, lookup.get(relative_to_root(path, root)) if lookup else None)

    if threads > 1 and len(paths) > 1:
        with ThreadPoolExecutor(max_workers=threads, thread_name_prefix="mdbatch-io") as pool:
            scans = list(pool.map(one, paths))
    else:
        scans = [one(p) for p in paths]
    return to_tables(scans, index, time.perf_counter() - started)


def _scan_guarded(
    path: str, root: str | None, options: ScanOptions | None, cache: Mapping[str, CacheEntry] | None = None
) -> SimulationScan:
    """scan_simulation, with any unforeseen error turned into a finding: one simulation never stops a batch."""
    try:
        return scan_simulation(path, root, options, cache)
    except Exception as exc:  # noqa: BLE001 - the last line of defence for the campaign
        name = relative_to_root(path, root)
        return SimulationScan(
            simulation=name,
            directory=display(os.path.abspath(path)),
            hash=display(os.path.basename(path)),
            simulation_type=None,
            engine=None,
            parametrization=None,
            status="build",
            input_data=None,
            input_data_type=None,
            analyses=(),
            artifacts=(),
            files=(),
            findings=(Finding(name, UNREADABLE, ".", f"scan failed: {type(exc).__name__}: {exc}"),),
            scanned_at=datetime.now(UTC).isoformat(),
            elapsed_s=0.0,
        )


@dataclass(frozen=True, slots=True)
class Group:
    """A batch as submitted: its id, simulation paths, and what the catalog recorded of them.

    `fingerprints` maps simulations to their recorded fingerprint, `hashes` to their recorded hash,
    and `findings` holds their findings in the run that last scanned them: a simulation whose
    fingerprint still holds is kept as recorded. `inventory` holds the recorded inventory (rows of
    hashcache.INVENTORY_COLUMNS) of the others; None when there is nothing to compare against.
    """

    id: int
    paths: list[str]
    inventory: pa.Table | None = None
    use_cache: bool = True
    fingerprints: Mapping[str, str] = field(default_factory=dict)
    hashes: Mapping[str, str] = field(default_factory=dict)
    findings: pa.Table | None = None
    #: Files each worker reads at once for this group (None: the scan options'); set by adaptive I/O.
    io_threads: int | None = None


def scan_group(group: Group, root: str | None, options: ScanOptions | None = None, index: int = 0) -> BatchResult:
    """The task a worker runs. Simulations whose recorded fingerprint still holds are kept as
    recorded; those whose fingerprint moved are deferred (the client sends them again with their
    hash-cache entries); the rest go through `scan_batch` with their hash-cache entries, and their
    files are classified against the recorded inventory (so the client only writes). `index` is the
    task's place in the stream (`Fanout.stream` passes it); the result carries `group.id`, which the
    client matches it by."""
    started = time.perf_counter()
    opts = options or ScanOptions()
    if group.io_threads is not None and group.io_threads != opts.io_threads:
        opts = dataclasses.replace(opts, io_threads=group.io_threads)
    kept: dict[str, tuple[str, Unchanged]] = {}
    deferred: list[str] = []
    paths = group.paths
    if group.fingerprints and group.use_cache and opts.trusts_cache:
        salt = scan_salt(opts)
        paths = []
        for path in group.paths:
            sim = relative_to_root(path, root)
            expected = group.fingerprints.get(sim)
            if expected is None:
                paths.append(path)
            elif (same := check_unchanged(path, salt, expected)) is not None:
                kept[sim] = (path, same)
            else:
                deferred.append(path)
    if group.inventory is None or group.inventory.num_rows == 0:
        batch = scan_batch(paths, root, opts, group.id, None)
    else:
        previous, cache, stale = entries(group.inventory, group.use_cache)
        batch = scan_batch(paths, root, opts, group.id, cache)
        changes, unchanged, identical = file_changes(previous, batch.files, batch.systems.column("simulation").to_pylist())
        batch = dataclasses.replace(batch, changes=tuple(changes), unchanged_files=unchanged, identical=frozenset(identical - stale))
    if kept:
        batch = _with_kept(batch, kept, group)
    return dataclasses.replace(batch, deferred=tuple(deferred), elapsed_s=time.perf_counter() - started)


def _with_kept(batch: BatchResult, kept: Mapping[str, tuple[str, Unchanged]], group: Group) -> BatchResult:
    """`batch` plus the simulations kept as recorded: their systems rows and recorded findings."""
    found = group.findings if group.findings is not None else FINDINGS_SCHEMA.empty_table()
    found = found.select(FINDINGS_SCHEMA.names).filter(pc.is_in(found.column("simulation"), value_set=pa.array(list(kept), pa.string())))
    per_sim = Counter(found.column("simulation").to_pylist())
    now = datetime.now(UTC).isoformat()
    systems = tuples_table(
        [
            (
                group.hashes.get(sim),
                sim,
                display(os.path.abspath(path)),
                None,
                None,
                None,
                same.status,
                None,
                None,
                now,
                same.files,
                same.bytes,
                per_sim.get(sim, 0),
                group.fingerprints[sim],
            )
            for sim, (path, same) in kept.items()
        ],
        SYSTEMS_SCHEMA,
    )
    return dataclasses.replace(
        batch,
        systems=pa.concat_tables([batch.systems, systems]),
        findings=pa.concat_tables([batch.findings, found.cast(FINDINGS_SCHEMA)]),
        unchanged_files=batch.unchanged_files + sum(same.files for _, same in kept.values()),
        identical=batch.identical | frozenset(kept),
        kept=frozenset(kept),
    )
