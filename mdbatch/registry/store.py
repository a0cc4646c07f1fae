"""A simulation's registry as a library: MDFactory's API over locked, atomic updates.

Every write takes a `filelock` lock beside the file, re-reads under the lock, writes a temp file,
fsyncs and `os.replace`s it: no lost update with many processes writing one registry at once.
Unlike MDFactory, a corrupt registry is never silently reset: reading it raises
RegistryCorruptError, so a lab cannot lose a registry.
"""

from __future__ import annotations

import contextlib
import json
import os
import stat
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path, PurePath
from typing import TYPE_CHECKING, Any

import pyarrow as pa
import pyarrow.parquet as pq
from filelock import FileLock, Timeout

from ..atomic import atomic_write_bytes, atomic_writer, fsync_dir
from ..errors import (
    InvalidNameError,
    RegistryCorruptError,
    RegistryLockError,
    UsageError,
)
from ..hashing import sha256_file
from ..lineage import check_references
from ..naming import is_valid_name
from ..paths import contained

if TYPE_CHECKING:
    pass
from .format import (
    ANALYSIS_DIRNAME,
    DEFAULT_LOCK_TIMEOUT,
    LOCK_SUFFIX,
    REGISTRY_FILENAME,
    SCHEMA_VERSION,
    PathList,
    RegistryEntryExistsError,
    RegistryEntryNotFoundError,
    TableLike,
    UnsafePathError,
    data_columns,
    empty_registry,
    encode_registry,
    parse_registry,
    read_registry_file,
)

#: What `depends_on` accepts: references "analysis:<name>" / "artifact:<name>", or None.
Dependencies = Iterable[str] | None

# --------------------------------------------------------------------------- the registry


@dataclass(slots=True)
class _FileEffects:
    """Files a registry change touches besides metadata.json."""

    obsolete: list[Path] = field(default_factory=list)  # delete once the new registry is durable
    created: list[Path] = field(default_factory=list)  # delete if the registry write fails


class Registry:
    """The registry of one simulation; every read goes to disk, every write is locked and atomic.

    `Registry(sim_dir)` takes the simulation directory (the parent of `.analysis`); a path named
    `.analysis` is taken as the analysis directory itself.
    """

    def __init__(self, sim_dir: str | os.PathLike[str], *, lock_timeout: float = DEFAULT_LOCK_TIMEOUT) -> None:
        given = Path(sim_dir)
        if given.name == ANALYSIS_DIRNAME:
            self._analysis_dir, self._sim_dir = given, given.parent
        else:
            self._analysis_dir, self._sim_dir = given / ANALYSIS_DIRNAME, given
        self.lock_timeout = lock_timeout

    def __repr__(self) -> str:
        return f"Registry({str(self._sim_dir)!r})"

    @property
    def sim_dir(self) -> Path:
        """The simulation directory."""
        return self._sim_dir

    @property
    def analysis_dir(self) -> Path:
        """The `.analysis` directory: parquet files, artifacts and the registry."""
        return self._analysis_dir

    @property
    def path(self) -> Path:
        """The registry file, `.analysis/metadata.json`."""
        return self._analysis_dir / REGISTRY_FILENAME

    registry_path = path  # MDFactory's name

    @property
    def lock_path(self) -> Path:
        """The lock file beside the registry that serialises writers."""
        return self._analysis_dir / (REGISTRY_FILENAME + LOCK_SUFFIX)

    def load(self) -> dict[str, Any]:
        """Read and validate the registry: missing reads as empty; corrupt, or not a regular file
        (a directory, FIFO, socket, symlink, or `.analysis` a symlink), raises RegistryCorruptError."""
        data = read_registry_file(self.path)
        return empty_registry() if data is None else parse_registry(data, str(self.path))

    def add_analysis(self, name: str, data: TableLike, *, depends_on: Dependencies = None, **extras: Any) -> dict[str, Any]:
        """Write `.analysis/<name>.parquet` and register it (raise if registered); return the entry.

        `depends_on` lists what it was made from, ``"analysis:<name>"`` or ``"artifact:<name>"`` of
        this simulation (written as ``extras.depends_on``; see docs/lineage.md).
        """
        return self._put_analysis(name, data, extras, create=True, write=True, depends_on=depends_on)

    def update_analysis(self, name: str, data: TableLike, *, depends_on: Dependencies = None, **extras: Any) -> dict[str, Any]:
        """Write `.analysis/<name>.parquet` and (re-)register it, keeping `created_at`. Without
        `depends_on` the recorded dependencies are kept; ``depends_on=[]`` clears them."""
        return self._put_analysis(name, data, extras, create=False, write=True, depends_on=depends_on)

    def get_analysis(self, name: str) -> dict[str, Any]:
        """The entry of analysis `name`; RegistryEntryNotFoundError if absent."""
        return self._get("analyses", "analysis", name)

    def list_analyses(self) -> list[str]:
        """Sorted names of the registered analyses."""
        return sorted(self.load()["analyses"])

    def remove_analysis(self, name: str, delete_file: bool = True) -> None:
        """Unregister analysis `name` and, by default, delete its parquet file afterwards."""
        self._remove("analyses", "analysis", name, "filename" if delete_file else None)

    def add_entry(self, name: str, df: TableLike, *, depends_on: Dependencies = None, **extras: Any) -> dict[str, Any]:
        """MDFactory's add_entry: record `df`'s metadata only; the caller wrote the parquet."""
        return self._put_analysis(name, df, extras, create=True, write=False, depends_on=depends_on)

    def update_entry(self, name: str, df: TableLike, *, depends_on: Dependencies = None, **extras: Any) -> dict[str, Any]:
        """MDFactory's update_entry: record `df`'s metadata only, keeping `created_at`."""
        return self._put_analysis(name, df, extras, create=False, write=False, depends_on=depends_on)

    def remove_entry(self, name: str) -> None:
        """MDFactory's remove_entry: unregister analysis `name`, leaving its file alone."""
        self.remove_analysis(name, delete_file=False)

    get_entry = get_analysis

    def _put_analysis(
        self, name: str, data: TableLike, extras: dict[str, Any], *, create: bool, write: bool, depends_on: Dependencies
    ) -> dict[str, Any]:
        _check_new_entry(name, extras)
        refs = None if depends_on is None else check_references(depends_on)
        table = _as_table(data, convert=write)
        if table is not None:
            rows, columns = table.num_rows, data_columns(table.schema)
        else:  # metadata of a DataFrame someone else wrote, as MDFactory records it
            rows, columns = len(data), [str(column) for column in data.columns]
        target = self._analysis_dir / f"{name}.parquet"

        def write_file(effects: _FileEffects) -> None:
            if write and table is not None:
                if not target.exists():
                    effects.created.append(target)
                _write_parquet_atomic(table, target)

        fields = {"filename": target.name, "row_count": rows, "columns": columns}
        return self._put("analyses", "analysis", name, fields, extras, create, write_file, refs)

    def add_artifact(
        self,
        name: str,
        files: PathList,
        checksums: Mapping[str, str] | None = None,
        *,
        depends_on: Dependencies = None,
        **extras: Any,
    ) -> dict[str, Any]:
        """Register existing files under `.analysis` as artifact `name`; raise if it exists.

        `files` are paths relative to `.analysis`; without `checksums` each file's sha256 is
        computed; `depends_on` as for `add_analysis`. Returns the new entry.
        """
        return self._put_artifact(name, files, checksums, extras, create=True, depends_on=depends_on)

    def update_artifact(
        self,
        name: str,
        files: PathList,
        checksums: Mapping[str, str] | None = None,
        *,
        depends_on: Dependencies = None,
        **extras: Any,
    ) -> dict[str, Any]:
        """Register or re-register artifact `name`, keeping `created_at` (and, without `depends_on`, its dependencies)."""
        return self._put_artifact(name, files, checksums, extras, create=False, depends_on=depends_on)

    def get_artifact(self, name: str) -> dict[str, Any]:
        """The entry of artifact `name`; RegistryEntryNotFoundError if absent."""
        return self._get("artifacts", "artifact", name)

    def list_artifacts(self) -> list[str]:
        """Sorted names of the registered artifacts."""
        return sorted(self.load()["artifacts"])

    def remove_artifact(self, name: str, delete_files: bool = False) -> None:
        """Unregister artifact `name`; its files are kept unless `delete_files` is true."""
        self._remove("artifacts", "artifact", name, "files" if delete_files else None)

    add_artifact_entry = add_artifact
    update_artifact_entry = update_artifact
    get_artifact_entry = get_artifact
    remove_artifact_entry = remove_artifact

    def _put_artifact(
        self,
        name: str,
        files: PathList,
        checksums: Mapping[str, str] | None,
        extras: dict[str, Any],
        *,
        create: bool,
        depends_on: Dependencies = None,
    ) -> dict[str, Any]:
        _check_new_entry(name, extras)
        refs = None if depends_on is None else check_references(depends_on)
        # Stored normalized, exactly as the scanner will look them up.
        paths = [_safe(PurePath(f).as_posix() if isinstance(f, os.PathLike) else f) for f in files]
        if not paths:
            raise UsageError(f"artifact {name!r} needs at least one file")
        if checksums is None:
            # Hashing is the slow part and needs no registry state, so it happens before locking.
            sums = {rel: self._checksum(rel) for rel in paths}
        else:
            sums = {_safe(rel): value for rel, value in checksums.items()}
            if not set(sums) <= set(paths):
                raise UsageError(f"checksums for paths not in files: {sorted(set(sums) - set(paths))}")
            if not all(isinstance(value, str) for value in sums.values()):
                raise UsageError("checksums must map paths to hex strings")
        fields = {"files": paths, "checksums": sums}
        return self._put("artifacts", "artifact", name, fields, extras, create, None, refs)

    def _checksum(self, rel: str) -> str:
        try:
            return sha256_file(self._analysis_dir / rel)
        except FileNotFoundError:
            raise UsageError(f"artifact file not found: {self._analysis_dir / rel}") from None

    def _get(self, section: str, kind: str, name: str) -> dict[str, Any]:
        entry = self.load()[section].get(name)
        if entry is None:
            raise RegistryEntryNotFoundError(kind, name, str(self.path))
        return dict(entry)

    def _put(
        self,
        section: str,
        kind: str,
        name: str,
        fields: dict[str, Any],
        extras: dict[str, Any],
        create: bool,
        write_file: Callable[[_FileEffects], None] | None,
        depends_on: list[str] | None = None,
    ) -> dict[str, Any]:
        """Create or update one entry, keeping `created_at` and any keys mdbatch does not know.

        `depends_on` (checked references) becomes `extras.depends_on`; None keeps the recorded one,
        [] drops it."""
        written: dict[str, Any] = {}

        def change(registry: dict[str, Any]) -> _FileEffects:
            old = registry[section].get(name)
            if old is not None and create:
                raise RegistryEntryExistsError(kind, name, str(self.path))
            effects = _FileEffects()
            if write_file is not None:
                write_file(effects)
            now = datetime.now(UTC).isoformat()
            entry = dict(old) if old is not None else {}
            entry.update(fields, created_at=entry.get("created_at", now), updated_at=now)
            entry["extras"] = _with_dependencies(extras, old, depends_on)
            registry[section][name] = entry
            written.update(entry)
            return effects

        self._mutate(change)
        return written

    def _remove(self, section: str, kind: str, name: str, files_key: str | None) -> None:
        """Drop one entry; with `files_key`, delete the files it names once the drop is durable."""

        def change(registry: dict[str, Any]) -> _FileEffects:
            entry = registry[section].get(name)
            if entry is None:
                raise RegistryEntryNotFoundError(kind, name, str(self.path))
            effects = _FileEffects()
            if files_key is not None:
                value = entry[files_key]
                for rel in [value] if isinstance(value, str) else value:
                    effects.obsolete.append(self._analysis_dir / _safe(rel))
            del registry[section][name]
            return effects

        self._mutate(change)

    def _mutate(self, change: Callable[[dict[str, Any]], _FileEffects]) -> None:
        """Apply `change` to the registry as on disk now, under the lock, and write it atomically.

        Every mutation goes through here, so concurrent writers never lose each other's updates.
        Files `change` reports as obsolete are deleted after the registry is durable; files it
        reports as created are deleted if writing the registry fails.
        """
        with self.locked():
            registry = self.load()
            effects = change(registry)
            registry.setdefault("schema_version", SCHEMA_VERSION)
            try:
                atomic_write_bytes(self.path, encode_registry(registry), _new_file_mode(self.path))
            except BaseException:
                for created in effects.created:
                    with contextlib.suppress(OSError):
                        created.unlink()
                raise
            for obsolete in effects.obsolete:
                with contextlib.suppress(FileNotFoundError):
                    obsolete.unlink()

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        """Hold the lock every mutation takes, for the block (RegistryLockError after `lock_timeout`).

        For callers that must read, check and replace the registry's exact bytes as one step
        (`mdbatch repair`): inside, `read_bytes` and `replace_bytes` see no other writer.
        """
        self._analysis_dir.mkdir(parents=True, exist_ok=True)
        lock = FileLock(str(self.lock_path), timeout=self.lock_timeout)
        try:
            lock.acquire()
        except Timeout:
            raise RegistryLockError(f"{self.lock_path}: not acquired within {self.lock_timeout:g} s (another writer?)") from None
        try:
            yield
        finally:
            lock.release()

    def read_bytes(self) -> bytes | None:
        """The registry file's exact bytes, None when there is none (not parsed: a corrupt one reads too)."""
        return read_registry_file(self.path)

    def replace_bytes(self, data: bytes | None) -> None:
        """Replace the registry by exactly `data`, atomically, keeping its permissions (None: remove it).

        The caller holds `locked()` and has checked what it replaces.
        """
        if data is None:
            with contextlib.suppress(FileNotFoundError):
                self.path.unlink()
                fsync_dir(self._analysis_dir)
            return
        atomic_write_bytes(self.path, data, _new_file_mode(self.path))

    def check_integrity(self) -> dict[str, Any]:
        """Compare the registry with the files on disk, in MDFactory's result shape.

        Returns {"valid", "missing_files", "extra_files", "row_count_mismatches",
        "artifact_missing_files", "artifact_checksum_mismatches", "findings"}, the lists derived
        from the scanner's findings (also returned, as dicts).
        """
        from .. import findings as kinds
        from ..scan import ScanOptions, scan_simulation

        scan = scan_simulation(self._sim_dir, options=ScanOptions(hash_files=False))
        try:
            registry = self.load()
        except RegistryCorruptError:
            registry = empty_registry()
        analyses, artifacts = registry["analyses"], registry["artifacts"]
        by_item = {f"{n}:{rel}": (n, rel) for n, e in artifacts.items() for rel in e["files"]}
        result: dict[str, Any] = {
            "valid": not scan.findings,
            "missing_files": [],
            "extra_files": [],
            "row_count_mismatches": [],
            "artifact_missing_files": [],
            "artifact_checksum_mismatches": [],
            "findings": [finding.to_dict() for finding in scan.findings],
        }
        for finding in scan.findings:
            item = finding.item
            if finding.kind == kinds.MISSING_FILE:
                result["missing_files"].append(item)
            elif finding.kind == kinds.EXTRA_FILE:
                result["extra_files"].append(item.removeprefix(ANALYSIS_DIRNAME + "/"))
            elif finding.kind == kinds.ROW_COUNT_MISMATCH and item in analyses:
                entry = analyses[item]
                actual = _measure(_parquet_rows, self._analysis_dir, entry["filename"])
                result["row_count_mismatches"].append({"name": item, "expected": entry["row_count"], "actual": actual})
            elif finding.kind == kinds.ARTIFACT_MISSING_FILE:
                name, rel = by_item.get(item) or _split_item(item)
                result["artifact_missing_files"].append({"name": name, "file": rel})
            elif finding.kind == kinds.ARTIFACT_CHECKSUM_MISMATCH:
                name, rel = by_item.get(item) or _split_item(item)
                expected = artifacts.get(name, {}).get("checksums", {}).get(rel)
                actual = _measure(sha256_file, self._analysis_dir, rel)
                result["artifact_checksum_mismatches"].append({"name": name, "file": rel, "expected": expected, "actual": actual})
        return result


def _with_dependencies(extras: dict[str, Any], old: Mapping[str, Any] | None, depends_on: list[str] | None) -> dict[str, Any]:
    """The extras to write: `extras` plus `depends_on`, or the old entry's when None (an update that
    does not say what it was made from keeps what it was made from)."""
    out = dict(extras)
    if depends_on is None:
        previous = old.get("extras") if old is not None else None
        if isinstance(previous, dict) and "depends_on" in previous:
            out["depends_on"] = previous["depends_on"]
    elif depends_on:
        out["depends_on"] = list(depends_on)
    return out


def _split_item(item: str) -> tuple[str, str]:
    """Split a finding item "<artifact>:<path>" into its two parts."""
    name, _, rel = item.partition(":")
    return name, rel


def _safe(rel: object) -> str:
    """`rel` normalized by the scanner's containment rule; UnsafePathError when it is unsafe."""
    norm = contained(rel)
    if norm is None:
        raise UnsafePathError(rel)
    return norm


def _measure(read: Callable[[Path], Any], analysis_dir: Path, rel: str) -> Any:
    """Measure a flagged file under `.analysis`; None when unsafe or unreadable (already a finding)."""
    norm = contained(rel)
    if norm is None:
        return None
    try:
        return read(analysis_dir / norm)
    except (OSError, pa.ArrowException):
        return None


def _parquet_rows(path: Path) -> int:
    return int(pq.read_metadata(path).num_rows)


def _check_new_entry(name: object, extras: dict[str, Any]) -> None:
    """Refuse a name that cannot become a table name and extras that JSON cannot hold."""
    if not is_valid_name(name):
        raise InvalidNameError(str(name))
    try:
        json.dumps(extras)
    except (TypeError, ValueError) as exc:
        raise UsageError(f"extras must be JSON-serialisable: {exc}") from None


def _as_table(data: object, convert: bool) -> pa.Table | None:
    """`data` as the Arrow table to write (a DataFrame's index dropped), or None if not converting."""
    if isinstance(data, pa.Table):
        return data
    import pandas as pd  # lazy: the scanner imports this module and never needs pandas

    if not isinstance(data, pd.DataFrame):
        raise UsageError(f"analysis data must be a DataFrame or pyarrow Table, not {type(data).__name__}")
    return pa.Table.from_pandas(data, preserve_index=False) if convert else None


def _new_file_mode(target: Path) -> int:
    """Permissions for a rewritten file: the old file's, else its directory's without x bits.

    mkstemp creates 0600 files; without this a shared campaign's registry would turn private.
    """
    try:
        return stat.S_IMODE(target.stat().st_mode)
    except FileNotFoundError:
        return stat.S_IMODE(target.parent.stat().st_mode) & 0o666


def _write_parquet_atomic(table: pa.Table, target: Path) -> None:
    """Write `table` to `target` through a temp file in the same directory, fsync, os.replace."""
    with atomic_writer(target, _new_file_mode(target)) as handle:
        pq.write_table(table, handle)
