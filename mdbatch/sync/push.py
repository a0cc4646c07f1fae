"""`push systems|analysis|artifacts`: a campaign's records into the shared catalog, MDFactory's sync done in bulk.

Data flows one way: discovery stream -> batches -> `collect` on the workers (scan, rows of the
logical tables) -> the client drops keys the catalog already holds (`--diff`, one indexed lookup
per batch) -> `serialize` on the workers (analysis frames as CSV) -> bulk transactions. Only the
writes are central. Duplicate keys: by default the push first checks every key (spooling the
records to a temp file) and writes nothing if any is present, naming the count and the flags;
`--diff` skips present keys; `--force` overwrites them. Work is cut only on simulation boundaries,
and each transaction (whole units coalesced, up to FLUSH_ROWS rows) is all or nothing, so a killed
push leaves whole simulations, never halves, and `--diff` completes it.
"""

from __future__ import annotations

import os
import pickle
import sys
import tempfile
import time
from collections import Counter, deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import IO, Any, TextIO, cast

import pyarrow as pa
import pyarrow.compute as pc

from ..catalog import CatalogBackend, Upsert, open_catalog, schema
from ..catalog.ops import key_strings, without_keys
from ..config import max_csv_bytes, resolve_url
from ..discover import DiscoveryStats, discover
from ..engine import ClusterOptions, Fanout, Progress, batches, peek
from ..errors import DuplicateKeysError, Interrupted, MdbatchError, UsageError
from ..lifecycle import STOP, RunRecord
from .collect import KINDS, PushUnit, collect, serialize, split_for_serialization

#: How a duplicate key is treated, per CLI mode: (default) error, --diff skip, --force replace.
MODES = {"error": "error", "diff": "skip", "force": "replace"}
#: A transaction is flushed at this many rows (MDBATCH_PUSH_TRANSACTION_ROWS), bytes or seconds,
#: whichever comes first; it always holds whole simulations, so it may pass the row count by one's rows.
FLUSH_ROWS = 50_000
FLUSH_BYTES = 64 << 20
FLUSH_SECONDS = 5.0
#: Keys looked up together (duplicate check, --diff): one statement per table per this many rows.
LOOKUP_ROWS = 20_000
#: Records the default mode keeps in memory while it checks keys; beyond this they go to a temp file.
SPOOL_MEMORY_BYTES = 256 << 20
#: Analysis frames one `serialize` task turns into CSV (MDBATCH_PUSH_TASK_FRAMES); whole simulations per task.
TASK_FRAMES = 256


def env_limit(name: str, default: int) -> int:
    """A positive integer tuning knob from the environment (`name`), else `default`."""
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        value = 0
    if value < 1:
        raise UsageError(f"${name} must be a positive integer, got {raw!r}")
    return value


@dataclass(slots=True)
class PushResult:
    """What a push did, per table: rows written and rows skipped because their key was present."""

    run_id: str
    kind: str
    mode: str
    root: str
    catalog: str
    simulations: int = 0
    written: Counter[str] = field(default_factory=Counter)
    skipped: Counter[str] = field(default_factory=Counter)
    over_cap: int = 0
    unreadable: int = 0
    invalid_names: int = 0
    findings: int = 0
    transactions: int = 0
    serialize_tasks: int = 0
    workers: int = 0
    batch_size: int = 0
    outcome: str = "running"
    timings: dict[str, float] = field(default_factory=dict)
    elapsed_s: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        """The JSON summary (`--json`)."""
        return {
            "run_id": self.run_id,
            "command": f"push {self.kind}",
            "mode": self.mode,
            "outcome": self.outcome,
            "root": self.root,
            "catalog": self.catalog,
            "simulations": self.simulations,
            "written": dict(sorted(self.written.items())),
            "skipped_existing": dict(sorted(self.skipped.items())),
            "data_csv_over_cap": self.over_cap,
            "data_csv_unreadable": self.unreadable,
            "invalid_names": self.invalid_names,
            "scan_findings": self.findings,
            "transactions": self.transactions,
            "serialize_tasks": self.serialize_tasks,
            "workers": self.workers,
            "batch_size": self.batch_size,
            "timings": {k: round(v, 3) for k, v in self.timings.items()},
            "elapsed_s": round(self.elapsed_s, 3),
        }


class Writer:
    """The central writer: coalesces units into transactions and applies each as one `apply`.

    A unit holds whole simulations (see `split_for_serialization`) and is never cut: a transaction is
    one or more whole units, so a failure between transactions leaves whole simulations. In the
    default mode, a backend that takes concurrent transactions (`write_parallelism`, PostgreSQL: 2)
    gets that many in flight, each on its own connection, so the server loads one while the client
    prepares the next. Call `close` to wait for every transaction.
    """

    def __init__(self, catalog: CatalogBackend, on_conflict: str, result: PushResult, flush_rows: int | None = None) -> None:
        self.catalog = catalog
        self.flush_rows = flush_rows or env_limit("MDBATCH_PUSH_TRANSACTION_ROWS", FLUSH_ROWS)
        self.on_conflict = on_conflict
        self.result = result
        self.pending: list[PushUnit] = []
        self.rows = 0
        self.bytes = 0
        self.since = time.monotonic()
        # Only the default mode, whose keys are known unique, may commit out of order: with --diff
        # (first occurrence wins) and --force (last wins) transactions stay in push order.
        self.parallel = max(1, int(getattr(catalog, "write_parallelism", 1))) if on_conflict == "error" else 1
        self.pool = ThreadPoolExecutor(max_workers=self.parallel, thread_name_prefix="mdbatch-write") if self.parallel > 1 else None
        self.in_flight: deque[tuple[Future[list[int]], list[Upsert], float]] = deque()

    def add(self, unit: PushUnit) -> None:
        """Queue `unit`; flush when the transaction is big or old enough."""
        if unit.rows:
            self.pending.append(unit)
            self.rows += unit.rows
            self.bytes += unit.nbytes
        if self.rows >= self.flush_rows or self.bytes >= FLUSH_BYTES or (self.pending and time.monotonic() - self.since >= FLUSH_SECONDS):
            self.flush()

    def flush(self) -> None:
        """Write everything queued in one transaction (in the background when the backend allows)."""
        if not self.pending:
            return
        parts: dict[str, list[pa.Table]] = {}
        for unit in self.pending:
            for name, table in unit.tables.items():
                parts.setdefault(name, []).append(table)
        names = sorted(parts, key=lambda n: (n == schema.OVERVIEW_TABLE, n != schema.RUN_TABLE, n))
        ops = [
            Upsert(n, pa.concat_tables(parts[n], promote_options="default"), "replace" if n == schema.OVERVIEW_TABLE else self.on_conflict)
            for n in names
        ]
        self.pending, self.rows, self.bytes, self.since = [], 0, 0, time.monotonic()
        if self.pool is None:
            started = time.monotonic()
            self._account(ops, self.catalog.apply(ops), started)
            return
        while len(self.in_flight) >= self.parallel:
            self._wait_oldest()
        self.in_flight.append((self.pool.submit(self.catalog.apply, ops), ops, time.monotonic()))

    def close(self) -> None:
        """Flush, wait for every transaction in flight, stop the writer threads."""
        try:
            self.flush()
            while self.in_flight:
                self._wait_oldest()
        finally:
            self.abandon()

    def abandon(self) -> None:
        """After a failure: write nothing more; let transactions already sent finish or fail."""
        self.pending, self.rows, self.bytes = [], 0, 0
        if self.pool is not None:
            self.pool.shutdown(wait=True, cancel_futures=True)
            self.in_flight.clear()

    def _wait_oldest(self) -> None:
        future, ops, started = self.in_flight.popleft()
        self._account(ops, future.result(), started)

    def _account(self, ops: list[Upsert], counts: list[int], started: float) -> None:
        for op, count in zip(ops, counts, strict=True):
            self.result.written[op.table] += count
        self.result.transactions += 1
        self.result.timings["write_s"] = self.result.timings.get("write_s", 0.0) + time.monotonic() - started


def merged(units: list[PushUnit]) -> PushUnit:
    """Several units as one (their tables concatenated), so lookups and writes go in bulk."""
    if len(units) == 1:
        return units[0]
    parts: dict[str, list[pa.Table]] = {}
    for unit in units:
        for name, table in unit.tables.items():
            parts.setdefault(name, []).append(table)
    return PushUnit(
        units[0].index,
        sum(u.simulations for u in units),
        {n: pa.concat_tables(p, promote_options="default") for n, p in parts.items()},
        sum(u.findings for u in units),
        sum(u.invalid_names for u in units),
        sum(u.elapsed_s for u in units),
        sum(u.over_cap for u in units),
        sum(u.unreadable for u in units),
    )


def grouped(units: Iterator[PushUnit], rows: int | None = None) -> Iterator[PushUnit]:
    """Consecutive units merged until they hold `rows` (LOOKUP_ROWS) rows: one key lookup per table per group."""
    rows = LOOKUP_ROWS if rows is None else rows
    group: list[PushUnit] = []
    count = 0
    for unit in units:
        group.append(unit)
        count += unit.rows
        if count >= rows:
            yield merged(group)
            group, count = [], 0
    if group:
        yield merged(group)


def drop_present(catalog: CatalogBackend, unit: PushUnit, skipped: Counter[str]) -> PushUnit:
    """`unit` without what the catalog already holds (`--diff`), each item checked on both sides.

    An item row is kept when its key is missing (or, for an analysis, its data); an overview row
    when it is missing or its item row is kept (the status follows the rows a push writes). So a
    simulation left half-present (item rows without overview rows, or the reverse) is completed.
    """
    tables: dict[str, pa.Table] = {}
    kept_items: list[pa.Array] = []
    for name, rows in unit.tables.items():
        if name == schema.OVERVIEW_TABLE:
            continue
        keys = schema.key_columns(schema.table_for(name))
        kept = without_keys(rows, keys, catalog.existing_keys(name, rows.select(keys)))
        skipped[name] += rows.num_rows - kept.num_rows
        kind = schema.item_kind(name)
        if kind is not None:
            kept_items.append(_item_keys(kept["hash"], kind, name.split("_", 1)[1]))
        if kept.num_rows:
            tables[name] = kept
    overview = unit.tables.get(schema.OVERVIEW_TABLE)
    if overview is not None:
        ids = key_strings(overview, OVERVIEW_KEY)
        present = key_strings(catalog.existing_keys(schema.OVERVIEW_TABLE, overview.select(OVERVIEW_KEY)), OVERVIEW_KEY)
        wanted = overview.filter(pc.or_(pc.is_in(ids, value_set=_concat(kept_items)), pc.invert(pc.is_in(ids, value_set=present))))
        skipped[schema.OVERVIEW_TABLE] += overview.num_rows - wanted.num_rows
        if wanted.num_rows:
            tables[schema.OVERVIEW_TABLE] = wanted
    return PushUnit(unit.index, unit.simulations, tables, unit.findings, unit.invalid_names, unit.elapsed_s)


OVERVIEW_KEY = ["hash", "item_type", "item_name"]


def _item_keys(hashes: pa.ChunkedArray, kind: str, item: str) -> pa.Array:
    """Overview key strings (as `key_strings` makes them) for `hashes` of one item."""
    n = len(hashes)
    return key_strings(
        pa.table({"hash": hashes, "item_type": pa.repeat(pa.scalar(kind), n), "item_name": pa.repeat(pa.scalar(item), n)}), OVERVIEW_KEY
    )


def _concat(arrays: list[pa.Array]) -> pa.Array:
    chunks = [c for a in arrays for c in (a.chunks if isinstance(a, pa.ChunkedArray) else [a])]
    return pa.concat_arrays(chunks) if chunks else pa.array([], pa.string())


def serialization_tasks(units: Iterator[PushUnit], cap: int, result: PushResult, max_frames: int | None = None) -> Iterator[list[PushUnit]]:
    """Each unit cut on simulation boundaries into `serialize` tasks (one single-part list per task)."""
    frames = max_frames or env_limit("MDBATCH_PUSH_TASK_FRAMES", TASK_FRAMES)
    for unit in units:
        parts = split_for_serialization(unit, cap, max_frames=frames)
        result.serialize_tasks += len(parts)
        yield from ([part] for part in parts)


class DuplicateCheck:
    """Counts keys that would collide (default mode): present in the catalog, or repeated within the push."""

    def __init__(self, catalog: CatalogBackend) -> None:
        self.catalog = catalog
        self.keys: dict[str, list[pa.Array]] = {}
        self.present: Counter[str] = Counter()

    def add(self, unit: PushUnit) -> None:
        for name, rows in unit.tables.items():
            if name == schema.OVERVIEW_TABLE:
                continue  # the overview is status, refreshed by every push
            keys = schema.key_columns(schema.table_for(name))
            self.present[name] += self.catalog.existing_keys(name, rows.select(keys)).num_rows
            self.keys.setdefault(name, []).append(key_strings(rows, keys))

    @property
    def found(self) -> Counter[str]:
        """Colliding keys per table: present in the catalog, plus repeats within the push."""
        found = Counter(self.present)
        for name, parts in self.keys.items():
            ids = pa.chunked_array(parts)
            found[name] += len(ids) - pc.count_distinct(ids).as_py()
        return found


class Spool:
    """Units parked while the default mode checks every key before writing anything.

    Held in memory up to `memory_bytes`, then pickled to an anonymous temp file: a campaign of
    millions of simulations never sits in memory whole.
    """

    def __init__(self, memory_bytes: int = SPOOL_MEMORY_BYTES) -> None:
        self.memory_bytes = memory_bytes
        self.held: list[PushUnit] = []
        self.held_bytes = 0
        self.handle: IO[bytes] | None = None
        self.spilled = 0

    def add(self, unit: PushUnit) -> None:
        if self.handle is None and self.held_bytes + unit.nbytes <= self.memory_bytes:
            self.held.append(unit)
            self.held_bytes += unit.nbytes
            return
        if self.handle is None:
            self.handle = tempfile.TemporaryFile(prefix="mdbatch-push-")  # noqa: SIM115 - closed in close()
        pickle.dump(unit, self.handle, protocol=pickle.HIGHEST_PROTOCOL)
        self.spilled += 1

    def replay(self) -> Iterator[PushUnit]:
        held, self.held = self.held, []
        yield from held
        if self.handle is not None:
            self.handle.seek(0)
            for _ in range(self.spilled):
                yield pickle.load(self.handle)  # noqa: S301 - our own temp file

    def close(self) -> None:
        self.held = []
        if self.handle is not None:
            self.handle.close()


def write_units(
    catalog: CatalogBackend,
    units: Iterator[PushUnit],
    mode: str,
    result: PushResult,
    serialized: Callable[[Iterator[PushUnit]], Iterator[PushUnit]] | None = None,
) -> Spool | None:
    """The central half of a push: duplicate handling per `mode`, then bulk transactions.

    `serialized` maps the units that will be written to units with `data_csv` filled in (the
    second Dask pass); units that need no serialization pass through. Returns the spool the
    default mode used (the caller closes it).
    """
    spool: Spool | None = None
    if mode == "error":
        spool = Spool()
        check = DuplicateCheck(catalog)
        for unit in grouped(units):
            check.add(unit)
            spool.add(unit)
        found = check.found
        if sum(found.values()):
            spool.close()
            raise DuplicateKeysError(sum(found.values()), {k: v for k, v in found.items() if v})
        units = spool.replay()
    elif mode == "diff":
        units = (u for u in (drop_present(catalog, unit, result.skipped) for unit in grouped(units)) if u.rows)
    if serialized is not None:
        units = serialized(units)
    writer = Writer(catalog, MODES[mode], result)
    try:
        for unit in units:
            result.over_cap += unit.over_cap
            result.unreadable += unit.unreadable
            writer.add(unit)
        writer.close()
    except BaseException:
        writer.abandon()
        raise
    return spool


def _check_request(kind: str, mode: str, name: str | None) -> None:
    if kind not in KINDS:
        raise UsageError(f"push what? expected one of {', '.join(KINDS)}, got {kind!r}")
    if mode not in MODES:
        raise UsageError(f"mode must be one of {', '.join(MODES)}, got {mode!r}")
    if name is not None:
        if kind == "systems":
            raise UsageError("--analysis-name/--artifact-name do not apply to push systems")
        schema.checked_name(name)


def _fan_out(
    catalog: CatalogBackend,
    stream: Iterator[str],
    stats: DiscoveryStats,
    cluster: ClusterOptions,
    batch_size: int | None,
    result: PushResult,
    name: str | None,
    cap: int,
    task_frames: int,
    progress: bool,
    log_stream: IO[str] | None,
) -> Spool | None:
    """Both passes on the cluster (collect, then serialize the frames that will be written) and the
    central writer; returns the spool the default mode used (the caller closes it)."""
    kind, root = result.kind, result.root
    head = peek(stream, cluster, batch_size)
    result.batch_size = head.batch_size
    bar = Progress(f"push {kind}", stream=cast("TextIO | None", log_stream), enabled=progress)
    with Fanout(cluster, workers_needed=head.workers, dashboard=not head.exhausted) as fan:
        result.workers = fan.n_workers
        if progress and fan.dashboard_link:
            (log_stream or sys.stderr).write(f"mdbatch: Dask dashboard at {fan.dashboard_link}\n")

        def scanned() -> Iterator[PushUnit]:
            for unit in fan.stream(collect, batches(head.paths(stream), head.batch_size), root, kind, name, prefix=f"push-{kind}"):
                result.simulations += unit.simulations
                result.findings += unit.findings
                result.invalid_names += unit.invalid_names
                result.timings["collect_task_s"] = result.timings.get("collect_task_s", 0.0) + unit.elapsed_s
                bar.update(unit.simulations, 0, stats.simulations if result.simulations >= stats.simulations else None)
                yield unit

        def serialized(units: Iterator[PushUnit]) -> Iterator[PushUnit]:
            if kind != "analysis":
                return units
            tasks = serialization_tasks(units, cap, result, task_frames)
            return fan.stream(serialize, cast("Iterator[list[str]]", tasks), cap, prefix="push-csv")  # groups of units

        spool = write_units(catalog, scanned(), result.mode, result, serialized)
        result.workers = fan.n_workers  # the most that took part (workers may join late)
    bar.close()
    return spool


def push(
    source: str | os.PathLike[str],
    kind: str,
    *,
    db: str | None = None,
    mode: str = "error",
    name: str | None = None,
    csv_root: str | os.PathLike[str] | None = None,
    cluster: ClusterOptions | None = None,
    batch_size: int | None = None,
    max_csv: int | None = None,
    progress: bool = True,
    log_stream: IO[str] | None = None,
    arguments: dict[str, Any] | None = None,
) -> PushResult:
    """Push a campaign's systems, analyses or artifacts into the catalog at `db`; returns what was written.

    Raises DuplicateKeysError (default mode, nothing written), UsageError, CatalogError; problems
    inside simulations only show up as counts (run `mdbatch audit` for the findings).
    """
    started = time.monotonic()
    _check_request(kind, mode, name)
    cap = max_csv_bytes(max_csv)
    task_frames = env_limit("MDBATCH_PUSH_TASK_FRAMES", TASK_FRAMES)
    env_limit("MDBATCH_PUSH_TRANSACTION_ROWS", FLUSH_ROWS)  # a bad value is refused before anything is opened
    cluster = cluster or ClusterOptions()
    stats = DiscoveryStats()
    root, stream = discover(source, csv_root=csv_root, stats=stats)
    installed = STOP.install()
    catalog = open_catalog(db)
    result = PushResult("", kind, mode, root, catalog.display_url)
    record: RunRecord | None = None
    spool: Spool | None = None
    try:
        catalog.init_schema()
        with STOP.deferred():
            record = RunRecord.start(catalog, f"push {kind}", root, arguments, url=resolve_url(db))
        result.run_id = record.run_id
        spool = _fan_out(catalog, stream, stats, cluster, batch_size, result, name, cap, task_frames, progress, log_stream)
        result.outcome = "completed"
    except Interrupted as exc:
        result.outcome = "interrupted"
        raise Interrupted(f"{exc}; committed transactions are saved (re-run with --diff to complete)") from exc
    except KeyboardInterrupt:
        result.outcome = "interrupted"
        raise
    except BaseException:
        result.outcome = "failed"
        raise
    finally:
        if spool is not None:
            spool.close()
        result.elapsed_s = time.monotonic() - started
        try:
            if record is not None:
                record.finish(result.outcome, result.to_dict())
        except MdbatchError:
            if result.outcome == "completed":
                raise
        finally:
            catalog.close()
            if installed:
                STOP.uninstall()
    return result


__all__ = ["MODES", "PushResult", "Writer", "drop_present", "push"]
