"""The per-simulation scan: one simulation directory in, one immutable record out.

`scan_simulation` touches only the directory it is given, never follows a symlink, reads every
regular file once (taking xxh3-128, sha256 where the registry holds sha256, the registry JSON and
the parquet footers from that one read), and turns every problem into a finding instead of an
exception. Dask only maps it over batches (see `engine.py`); tests call it directly.
"""

from __future__ import annotations

import dataclasses
import functools
import os
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import pyarrow as pa

from . import findings as fk
from .errors import RegistryCorruptError
from .findings import Finding
from .footer import read_footer
from .hashcache import HASH_CACHE_VERSION, CacheEntry, content_facts, footer_facts, lookup
from .hashing import FileDigest, NotRegularFile, digest_file
from .identity import build_input_name, identity
from .inventory import fingerprint, loose_parquets, odd_salt, registry_absence, simulation_status, top_level, walk
from .lineage import Edge, check_lineage
from .naming import is_valid_name
from .paths import contained, display, raw_bytes, relative_to_root
from .registry.format import ANALYSIS_DIRNAME, REGISTRY_FILENAME, parse_registry
from .version import __version__

REGISTRY_REL = f"{ANALYSIS_DIRNAME}/{REGISTRY_FILENAME}"
_NO_REGISTRY = f"parquet file in {ANALYSIS_DIRNAME}, which has no registry ({REGISTRY_REL} is absent)"
# The registry and build metadata are parsed from the bytes the inventory read anyway.
_MAX_REGISTRY_BYTES = 64 << 20


#: Reads of files up to this size measure the storage's latency (larger ones its bandwidth).
LATENCY_READ_BYTES = 64 << 10


@dataclass(frozen=True, slots=True)
class ScanOptions:
    """What a scan computes. `hash_files=False` reads only the files the integrity checks need."""

    hash_files: bool = True
    max_input_bytes: int = 65536
    #: Simulations of a batch scanned at once by one worker (threads): the bound on concurrent file
    #: opens per worker. 1 is fastest on a warm page cache; 2-4 keep reads in flight on cold storage.
    io_threads: int = 1
    #: "cache": trust the hash cache for files whose stat is unchanged; "full": read everything and
    #: report files whose bytes changed while their stat did not (silent corruption).
    verify: str = "cache"

    @property
    def trusts_cache(self) -> bool:
        """Whether a file whose stat is unchanged may be taken from the hash cache (and a simulation
        whose fingerprint holds kept unscanned): not under --verify full, not without digests."""
        return self.hash_files and self.verify != "full"


@functools.lru_cache(maxsize=16)
def scan_salt(options: ScanOptions) -> str:
    """What besides the files shapes a scan's result, salted into every fingerprint: a new mdbatch
    or hash-cache version, or other scan options, make every recorded fingerprint differ."""
    return f"mdbatch {__version__}|cache {HASH_CACHE_VERSION}|hash {int(options.hash_files)}|input {options.max_input_bytes}|lineage 1"


@dataclass(frozen=True, slots=True)
class FileEntry:
    """One regular file of a simulation, path relative to the simulation directory."""

    path: str
    path_raw: bytes | None
    size: int
    mtime_ns: int
    ctime_ns: int
    inode: int
    device: int
    xxh3_128: str | None
    sha256: str | None
    #: What the hash cache keeps beside the digests, as JSON: parquet footer facts ({"rows": n,
    #: "columns": [...]}) of registered analyses; the bytes ({"bytes": base64}) of the small
    #: identity and registry files every scan needs.
    facts: str | None = None
    #: True when the digests came from the hash cache instead of a read.
    cached: bool = False


@dataclass(frozen=True, slots=True)
class AnalysisEntry:
    """A registered analysis as the registry states it and as its parquet footer shows it."""

    name: str
    filename: str
    status: str  # ok | missing | mismatch | unreadable | unsafe | invalid
    registered_rows: int | None
    registered_columns: tuple[str, ...]
    file_rows: int | None
    file_columns: tuple[str, ...] | None
    file_size: int | None
    updated_at: str | None


@dataclass(frozen=True, slots=True)
class ArtifactEntry:
    """A registered artifact: its files and checksums as recorded, and whether they verified."""

    name: str
    status: str  # ok | missing | mismatch | unsafe | invalid
    files: tuple[str, ...]
    checksums: tuple[tuple[str, str], ...]
    updated_at: str | None


@dataclass(frozen=True, slots=True)
class SimulationScan:
    """Everything one scan learned about one simulation directory.

    `simulation` is its path relative to the campaign root (the key everywhere in the catalog),
    `directory` its absolute path (as MDFactory's tables record it).
    """

    simulation: str
    directory: str
    hash: str
    simulation_type: str | None
    engine: str | None
    parametrization: str | None
    status: str
    input_data: str | None
    input_data_type: str | None
    analyses: tuple[AnalysisEntry, ...]
    artifacts: tuple[ArtifactEntry, ...]
    files: tuple[FileEntry, ...]
    findings: tuple[Finding, ...]
    scanned_at: str
    elapsed_s: float
    #: The inventory's fingerprint (see `inventory`), or None when this scan cannot be reproduced
    #: from the stat fields alone (a file was unreadable or changed while being read, no digests).
    fingerprint: str | None = None
    #: What adaptive I/O measures: files up to LATENCY_READ_BYTES read and the seconds they took;
    #: reads whose page-cache state was known, and how many of them found their bytes cold.
    reads: int = 0
    read_s: float = 0.0
    known: int = 0
    cold: int = 0
    #: The registry's dependency graph (`extras.depends_on`, see `lineage`); its findings are in `findings`.
    lineage: tuple[Edge, ...] = ()

    @property
    def bytes(self) -> int:
        return sum(f.size for f in self.files)


@dataclass(slots=True)
class _Ctx:
    """Mutable state of one scan; never escapes `scan_simulation`."""

    sim: str
    name: str
    options: ScanOptions
    findings: list[Finding] = field(default_factory=list)
    digests: dict[str, FileDigest] = field(default_factory=dict)
    data: dict[str, bytes] = field(default_factory=dict)
    facts: dict[str, tuple[int, tuple[str, ...]]] = field(default_factory=dict)
    unreadable: set[str] = field(default_factory=set)
    changed: set[str] = field(default_factory=set)
    #: Files whose digest and bytes came from the hash cache, with the cache's facts (their bytes).
    from_cache: dict[str, str] = field(default_factory=dict)
    #: `inventory.odd_entries`: what is at the registry's path when it is no regular file.
    odd: dict[str, os.stat_result] = field(default_factory=dict)
    #: True when the simulation has no registry at all (not one that cannot be read).
    no_registry: bool = False
    #: Reads of small files and the seconds they took (the storage's latency); reads whose page-cache
    #: state is known, and how many of those were cold (see `SimulationScan.reads`).
    reads: int = 0
    read_s: float = 0.0
    known: int = 0
    cold: int = 0

    def add(self, kind: str, item: str, detail: str) -> None:
        self.findings.append(Finding(self.name, kind, item, detail))


def _read(ctx: _Ctx, rel: str, abspath: str, *, sha256: bool, keep: bool, xxh3: bool) -> FileDigest | None:
    """Read one file once; record unreadable/changed findings; keep small bytes when asked."""
    started = time.perf_counter()
    try:
        d = digest_file(abspath, want_xxh3=xxh3, want_sha256=sha256, keep_small=keep)
    except (FileNotFoundError, NotRegularFile) as exc:
        ctx.changed.add(rel)
        why = "vanished" if isinstance(exc, FileNotFoundError) else "stopped being a regular file"
        ctx.add(fk.CHANGED_DURING_SCAN, display(rel), f"file {why} during the scan")
        return None
    except OSError as exc:
        if exc.errno == 40:  # ELOOP: O_NOFOLLOW met a symlink that replaced the file
            ctx.changed.add(rel)
            ctx.add(fk.CHANGED_DURING_SCAN, display(rel), "file was replaced by a symlink during the scan")
            return None
        ctx.unreadable.add(rel)
        ctx.add(fk.UNREADABLE, display(rel), exc.strerror or str(exc))
        return None
    if d.size <= LATENCY_READ_BYTES:  # a small read takes the storage's latency, not its bandwidth
        ctx.reads += 1
        ctx.read_s += time.perf_counter() - started
    if d.cold is not None:
        ctx.known += 1
        ctx.cold += d.cold
    if d.changed:
        ctx.changed.add(rel)
        ctx.add(fk.CHANGED_DURING_SCAN, display(rel), "size or mtime changed while the file was read")
    ctx.digests[rel] = d
    if d.data is not None:
        ctx.data[rel] = d.data
    return d


def _stat_only(rel: str, abspath: str) -> FileEntry | None:
    try:
        st = os.lstat(abspath)
    except OSError:
        return None
    return FileEntry(display(rel), raw_bytes(rel), st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino, st.st_dev, None, None)


def _load_registry(ctx: _Ctx, files: dict[str, str], cached: CacheEntry | None = None) -> dict[str, Any] | None:
    if REGISTRY_REL not in files:
        ctx.no_registry, ctx.odd = registry_absence(ctx.sim, ctx.add, [f.item for f in ctx.findings if f.kind == fk.UNREADABLE])
        return None
    d = _content_from_cache(ctx, REGISTRY_REL, files[REGISTRY_REL], cached) if cached is not None else None
    if d is None:
        d = _read(ctx, REGISTRY_REL, files[REGISTRY_REL], sha256=False, keep=True, xxh3=ctx.options.hash_files)
    if d is None or REGISTRY_REL in ctx.changed:
        return None
    data = ctx.data.get(REGISTRY_REL)
    if data is None:  # larger than one read: fetch it whole, bounded
        if d.size > _MAX_REGISTRY_BYTES:
            ctx.add(fk.REGISTRY_CORRUPT, REGISTRY_REL, f"registry is {d.size} bytes, over the {_MAX_REGISTRY_BYTES} limit")
            return None
        try:
            with open(files[REGISTRY_REL], "rb") as handle:
                data = handle.read(_MAX_REGISTRY_BYTES + 1)
        except OSError as exc:
            ctx.add(fk.UNREADABLE, REGISTRY_REL, exc.strerror or str(exc))
            return None
    try:
        return parse_registry(data, REGISTRY_REL)
    except RegistryCorruptError as exc:
        ctx.add(fk.REGISTRY_CORRUPT, REGISTRY_REL, exc.reason)
        return None


def _artifact_targets(ctx: _Ctx, registry: dict[str, Any] | None) -> set[str]:
    """Simulation-relative paths whose sha256 the registry records (hashed in the inventory pass)."""
    wanted: set[str] = set()
    if registry is None:
        return wanted
    for name, entry in registry["artifacts"].items():
        if not is_valid_name(name):
            continue
        for path in entry["files"]:
            norm = contained(path)
            if norm is not None:
                wanted.add(f"{ANALYSIS_DIRNAME}/{norm}")
    return wanted


def _footer(ctx: _Ctx, rel: str, abspath: str) -> tuple[int, tuple[str, ...]] | str:
    """(rows, columns) from the parquet footer (or the hash cache), or the reason it cannot be read."""
    if rel in ctx.facts:
        return ctx.facts[rel]
    d = ctx.digests.get(rel)
    size = d.size if d is not None else None
    if size == 0:
        return "empty file"
    try:
        ctx.facts[rel] = read_footer(ctx.data.get(rel), abspath)
    except (OSError, ValueError, pa.ArrowException) as exc:
        return str(exc).splitlines()[0][:300] if str(exc) else type(exc).__name__
    return ctx.facts[rel]


def _check_analyses(ctx: _Ctx, registry: dict[str, Any], files: dict[str, str]) -> tuple[list[AnalysisEntry], set[str]]:
    entries: list[AnalysisEntry] = []
    registered: set[str] = set()
    for name, entry in sorted(registry["analyses"].items()):
        filename = entry["filename"]
        rows = entry["row_count"]
        cols = tuple(entry["columns"])
        norm = contained(filename)
        rel = f"{ANALYSIS_DIRNAME}/{norm}" if norm is not None else None
        if rel is not None:
            registered.add(rel)

        def record(
            status: str,
            frows: int | None = None,
            fcols: tuple[str, ...] | None = None,
            *,
            rel: str | None = rel,
            name: str = name,
            filename: str = filename,
            rows: int = rows,
            cols: tuple[str, ...] = cols,
            updated: str | None = entry.get("updated_at"),
        ) -> None:  # the loop's values bound here, where it is defined
            size = ctx.digests[rel].size if rel is not None and rel in ctx.digests else None
            entries.append(AnalysisEntry(display(name), display(filename), status, rows, cols, frows, fcols, size, updated))

        if not is_valid_name(name):
            ctx.add(fk.INVALID_NAME, display(name), "analysis name cannot be a table name (letters, digits, underscore)")
            record("invalid")
            continue
        if rel is None:
            ctx.add(
                fk.UNSAFE_PATH, f"{name}:{display(filename)}", "registry path is absolute or leaves the simulation directory; not opened"
            )
            record("unsafe")
            continue
        if rel not in files:
            ctx.add(fk.MISSING_FILE, name, f"{rel} is registered but absent (or not a regular file)")
            record("missing")
            continue
        if rel in ctx.unreadable or rel in ctx.changed:
            record("unreadable")
            continue
        footer = _footer(ctx, rel, files[rel])
        if isinstance(footer, str):
            ctx.add(fk.PARQUET_UNREADABLE, name, f"{rel}: {footer}")
            record("unreadable")
            continue
        frows, fcols = footer
        status = "ok"
        if frows != rows:
            ctx.add(fk.ROW_COUNT_MISMATCH, name, f"registry says {rows} rows, parquet footer has {frows}")
            status = "mismatch"
        if fcols != cols:
            ctx.add(fk.COLUMNS_MISMATCH, name, f"registry columns {list(cols)}, parquet columns {list(fcols)}")
            status = "mismatch"
        record(status, frows, fcols)
    return entries, registered


def _check_artifacts(ctx: _Ctx, registry: dict[str, Any], files: dict[str, str]) -> list[ArtifactEntry]:
    entries: list[ArtifactEntry] = []
    for name, entry in sorted(registry["artifacts"].items()):
        paths = tuple(display(p) for p in entry["files"])
        sums = tuple(sorted((display(k), v) for k, v in entry["checksums"].items()))
        if not is_valid_name(name):
            ctx.add(fk.INVALID_NAME, display(name), "artifact name cannot be a table name (letters, digits, underscore)")
            entries.append(ArtifactEntry(display(name), "invalid", paths, sums, entry.get("updated_at")))
            continue
        status = "ok"
        for path in entry["files"]:
            item = f"{name}:{display(path)}"
            norm = contained(path)
            if norm is None:
                ctx.add(fk.UNSAFE_PATH, item, "registry path is absolute or leaves the simulation directory; not opened")
                status = "unsafe"
                continue
            rel = f"{ANALYSIS_DIRNAME}/{norm}"
            if rel not in files:
                ctx.add(fk.ARTIFACT_MISSING_FILE, item, f"{rel} is listed but absent (or not a regular file)")
                status = "missing" if status == "ok" else status
                continue
            d = ctx.digests.get(rel)
            if d is None or rel in ctx.changed:
                status = "unreadable" if status == "ok" else status
                continue
            expected = entry["checksums"].get(path)
            if expected is None:
                ctx.add(fk.ARTIFACT_CHECKSUM_MISMATCH, item, "no checksum recorded for this file")
                status = "mismatch" if status == "ok" else status
            elif d.sha256 is not None and expected.lower() != d.sha256:
                ctx.add(fk.ARTIFACT_CHECKSUM_MISMATCH, item, f"registry sha256 {expected[:16]}…, file sha256 {d.sha256[:16]}…")
                status = "mismatch" if status == "ok" else status
        entries.append(ArtifactEntry(name, status, paths, sums, entry.get("updated_at")))
    return entries


def _content_from_cache(ctx: _Ctx, rel: str, abspath: str, cached: CacheEntry | None) -> FileDigest | None:
    """An unchanged identity or registry file's digest and bytes from the hash cache, or None."""
    hit = lookup(abspath, cached, content=True)
    if hit is None:
        return None
    ctx.digests[rel] = hit.digest
    ctx.data[rel] = hit.digest.data or b""
    ctx.from_cache[rel] = hit.facts or ""
    return hit.digest


def _entry_from_cache(
    ctx: _Ctx, rel: str, shown: str, abspath: str, cached: CacheEntry | None, need_sha: bool, need_footer: bool
) -> FileEntry | None:
    """An unchanged file's inventory entry from the hash cache (the footer and digests the integrity
    checks read noted on the way), or None when it must be read."""
    hit = lookup(abspath, cached, sha256=need_sha, footer=need_footer)
    if hit is None:
        return None
    d = hit.digest
    if hit.footer is not None:
        ctx.facts[rel] = hit.footer
    if need_sha or need_footer:  # the integrity checks read these; other files need only the entry
        ctx.digests[rel] = d
    return FileEntry(shown, raw_bytes(rel), d.size, d.mtime_ns, d.ctime_ns, d.inode, d.device, d.xxh3_128, d.sha256, hit.facts, cached=True)


def _check_silent_change(ctx: _Ctx, rel: str, d: FileDigest, cached: CacheEntry) -> None:
    """--verify full: the stat says unchanged but the bytes differ from what the cache recorded."""
    same_stat = (d.inode, d.device, d.size, d.mtime_ns, d.ctime_ns) == (
        cached.inode,
        cached.device,
        cached.size,
        cached.mtime_ns,
        cached.ctime_ns,
    )
    if same_stat and not d.changed and cached.xxh3_128 is not None and d.xxh3_128 is not None and d.xxh3_128 != cached.xxh3_128:
        ctx.add(fk.SILENT_CORRUPTION, display(rel), "bytes changed while size, mtime and ctime did not (xxh3 differs from the hash cache)")


@dataclass(frozen=True, slots=True)
class _Targets:
    """Which files of a simulation a scan needs more of than a digest: sha256 (artifact files the
    registry checksums), the parquet footer (registered analyses), the bytes (identity inputs)."""

    sha: set[str]
    parquet: set[str]
    identity: set[str]

    @property
    def keep(self) -> set[str]:
        """Files whose bytes (if small) are kept in memory after the read: identity inputs, footers."""
        return self.identity | self.parquet


def scan_simulation(
    sim_dir: str | os.PathLike[str],
    root: str | os.PathLike[str] | None = None,
    options: ScanOptions | None = None,
    cache: Mapping[str, CacheEntry] | None = None,
) -> SimulationScan:
    """Scan one simulation directory: identity, status, registry checks, file inventory, findings.

    `cache` maps inventory paths to what the hash cache knows; a file whose device, inode, size,
    mtime_ns and ctime_ns all match is not read again. Never raises for problems inside the
    directory; they become findings in the result.
    """
    started = time.perf_counter()
    opts = options or ScanOptions()
    sim = os.fspath(sim_dir)
    ctx = _Ctx(sim=sim, name=relative_to_root(sim, None if root is None else os.fspath(root)), options=opts)
    files = walk(sim, ctx.add)
    top = top_level(files)
    use = cache if cache is not None and opts.trusts_cache else None
    registry = _load_registry(ctx, files, use.get(REGISTRY_REL) if use is not None else None)
    targets = _Targets(
        sha=_artifact_targets(ctx, registry),
        parquet=(
            {f"{ANALYSIS_DIRNAME}/{n}" for e in registry["analyses"].values() if (n := contained(e["filename"])) is not None}
            if registry is not None
            else set()
        ),
        identity={n for n in ("metadata.json", build_input_name(os.path.basename(os.path.normpath(sim)), top)) if n},
    )
    inventory = _inventory(ctx, files, cache, use is not None, targets)
    analyses, artifacts = _registry_checks(ctx, registry, files)
    if ctx.facts:
        inventory = [
            e
            if e.cached
            or e.xxh3_128 is None
            or (fact := ctx.facts.get(f"{ANALYSIS_DIRNAME}/{e.path[len(ANALYSIS_DIRNAME) + 1 :]}")) is None
            else dataclasses.replace(e, facts=footer_facts(*fact))
            for e in inventory
        ]
    digest, sim_type, engine, param, input_data, input_type = identity(sim, top, ctx.data, opts.max_input_bytes)
    edges, found = check_lineage(ctx.name, registry, {e.path: e.mtime_ns for e in inventory}) if registry is not None else ((), ())
    ctx.findings.extend(found)
    return SimulationScan(
        simulation=ctx.name,
        directory=display(os.path.abspath(sim)),
        hash=digest,
        simulation_type=sim_type,
        engine=engine,
        parametrization=param,
        status=simulation_status(top),
        input_data=input_data,
        input_data_type=input_type,
        analyses=tuple(analyses),
        artifacts=tuple(artifacts),
        files=tuple(inventory),
        findings=tuple(ctx.findings),
        scanned_at=datetime.now(UTC).isoformat(),
        elapsed_s=time.perf_counter() - started,
        fingerprint=_fingerprint(ctx, files, inventory),
        reads=ctx.reads,
        read_s=ctx.read_s,
        known=ctx.known,
        cold=ctx.cold,
        lineage=edges,
    )


def _inventory(
    ctx: _Ctx, files: dict[str, str], cache: Mapping[str, CacheEntry] | None, use_cache: bool, targets: _Targets
) -> list[FileEntry]:
    """One entry per regular file: from the hash cache when its stat still matches, else from one read
    (the digests, footers and bytes the checks need noted in `ctx` on the way)."""
    opts = ctx.options
    keep = targets.keep
    inventory: list[FileEntry] = []
    for rel, abspath in files.items():
        shown = display(rel)
        d: FileDigest | None = None
        if rel == REGISTRY_REL and rel in ctx.digests:
            d = ctx.digests[rel]
        else:
            cached = cache.get(shown) if cache is not None else None
            if use_cache and rel not in targets.identity:
                hit = _entry_from_cache(ctx, rel, shown, abspath, cached, rel in targets.sha, rel in targets.parquet)
                if hit is not None:
                    inventory.append(hit)
                    continue
            elif use_cache and rel not in targets.sha:
                d = _content_from_cache(ctx, rel, abspath, cached)
            if d is None and (opts.hash_files or rel in targets.sha or rel in keep):
                d = _read(ctx, rel, abspath, sha256=rel in targets.sha, keep=rel in keep, xxh3=opts.hash_files)
                if d is not None and cached is not None and opts.verify == "full":
                    _check_silent_change(ctx, rel, d, cached)
        if d is None:
            if rel not in ctx.changed and (entry := _stat_only(rel, abspath)) is not None:
                inventory.append(entry)
            continue
        trusted = rel not in ctx.changed
        cached_bytes = ctx.from_cache.get(rel)
        kept = trusted and (rel in targets.identity or rel == REGISTRY_REL) and opts.hash_files
        inventory.append(
            FileEntry(
                shown,
                raw_bytes(rel),
                d.size,
                d.mtime_ns,
                d.ctime_ns,
                d.inode,
                d.device,
                d.xxh3_128 if trusted else None,
                d.sha256 if trusted else None,
                (cached_bytes if cached_bytes is not None else content_facts(ctx.data.get(rel))) if kept else None,
                cached_bytes is not None,
            )
        )
    return inventory


def _registry_checks(ctx: _Ctx, registry: dict[str, Any] | None, files: dict[str, str]) -> tuple[list[AnalysisEntry], list[ArtifactEntry]]:
    """The registry against the files (analyses, artifacts), and parquet files it does not list (extra)."""
    analyses: list[AnalysisEntry] = []
    artifacts: list[ArtifactEntry] = []
    if registry is not None:
        analyses, registered = _check_analyses(ctx, registry, files)
        artifacts = _check_artifacts(ctx, registry, files)
        for rel in loose_parquets(files, registered):
            ctx.add(fk.EXTRA_FILE, display(rel), "parquet file in .analysis is not in the registry")
    elif ctx.no_registry:
        for rel in loose_parquets(files, set()):
            ctx.add(fk.EXTRA_FILE, display(rel), _NO_REGISTRY)
    return analyses, artifacts


def _fingerprint(ctx: _Ctx, files: dict[str, str], inventory: list[FileEntry]) -> str | None:
    """The inventory's fingerprint, when every walked file was inventoried with its digest and
    nothing was unreadable or changed during the scan (only then do the stat fields determine it)."""
    if not ctx.options.hash_files or len(inventory) != len(files):
        return None
    if any(f.kind in (fk.UNREADABLE, fk.CHANGED_DURING_SCAN) for f in ctx.findings) or any(e.xxh3_128 is None for e in inventory):
        return None
    rows = (
        (os.fsdecode(e.path_raw) if e.path_raw is not None else e.path, e.size, e.mtime_ns, e.ctime_ns, e.inode, e.device)
        for e in inventory
    )
    return fingerprint(rows, scan_salt(ctx.options) + odd_salt(ctx.odd))
