"""The registry's format: MDFactory's `.analysis/metadata.json`, validated, encoded, read safely.

The on-disk format is MDFactory's, byte-for-meaning::

    {"schema_version": "1.0",
     "analyses": {name: {"filename": "<name>.parquet", "row_count": int, "columns": [str, ...],
                         "created_at": iso, "updated_at": iso, "extras": {...}}},
     "artifacts": {name: {"files": ["artifacts/<name>/<file>", ...], "checksums": {path: sha256},
                          "created_at": iso, "updated_at": iso, "extras": {...}}}}

Paths are relative to `.analysis`. The scanner reads registries through this module only; the
locked, atomic writes are `store.Registry`'s.
"""

from __future__ import annotations

import json
import os
import stat
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeAlias

import pyarrow as pa

from ..errors import MdbatchError, RegistryCorruptError
from ..inventory import file_type

if TYPE_CHECKING:
    import pandas as pd

TableLike: TypeAlias = "pd.DataFrame | pa.Table"
PathList: TypeAlias = "Iterable[str | os.PathLike[str]]"

SCHEMA_VERSION = "1.0"
ANALYSIS_DIRNAME = ".analysis"
REGISTRY_FILENAME = "metadata.json"
LOCK_SUFFIX = ".lock"
DEFAULT_LOCK_TIMEOUT = 60.0
_is_str = str.__instancecheck__  # map(_is_str, xs) is the cheapest all-strings test; parse is hot


class _EntryError(MdbatchError, KeyError):
    """Base of the entry lookup errors; carries the entry kind, name and registry path."""

    template = ""

    def __init__(self, kind: str, name: str, path: str = "") -> None:
        message = self.template.format(kind=kind, name=name)
        super().__init__(f"{path}: {message}" if path else message)
        self.kind, self.name, self.path = kind, name, path

    def __str__(self) -> str:  # KeyError would repr() the message
        return str(self.args[0])

    def __reduce__(self) -> tuple[Any, ...]:  # survive pickling across processes
        return type(self), (self.kind, self.name, self.path)


class RegistryEntryExistsError(_EntryError):
    """An analysis or artifact of that name is already registered (use the update method)."""

    template = "{kind} {name!r} already exists"


class RegistryEntryNotFoundError(_EntryError):
    """No analysis or artifact of that name is registered."""

    template = "no {kind} named {name!r}"


class UnsafePathError(MdbatchError, ValueError):
    """A registry path is absolute, has a backslash, or leaves `.analysis` (see paths.contained)."""

    def __init__(self, path: object) -> None:
        super().__init__(f"unsafe path {path!r}: must be relative to .analysis and stay inside it")
        self.path = path

    def __reduce__(self) -> tuple[Any, ...]:
        return type(self), (self.path,)


# --------------------------------------------------------------------------- validation


def parse_registry(data: bytes, path: str = "") -> dict[str, Any]:
    """Decode and validate registry bytes; the one validator every reader uses.

    Returns the registry dict (unknown keys kept) with "analyses" and "artifacts" present.
    Raises RegistryCorruptError(reason, path) for anything that is not a well-typed registry.
    Names are not checked here: an invalid name is a finding, not corruption.
    """
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise RegistryCorruptError(f"not UTF-8 (byte {exc.start})", path) from None
    try:
        registry = json.loads(text)
    except json.JSONDecodeError as exc:
        where = f"line {exc.lineno} column {exc.colno}"
        raise RegistryCorruptError(f"not valid JSON: {exc.msg} at {where}", path) from None
    if type(registry) is not dict:
        raise RegistryCorruptError(f"top level is {_json_type(registry)}, not an object", path)
    if "schema_version" in registry and type(registry["schema_version"]) is not str:
        raise RegistryCorruptError("schema_version is not a string", path)
    for section, problem_of in (("analyses", _analysis_problem), ("artifacts", _artifact_problem)):
        entries = registry.setdefault(section, {})
        if type(entries) is not dict:
            raise RegistryCorruptError(f"{section} is {_json_type(entries)}, not an object", path)
        for name, entry in entries.items():
            problem = problem_of(entry)
            if problem:
                raise RegistryCorruptError(f"{section}[{name!r}]: {problem}", path)
    return registry


def _analysis_problem(entry: object) -> str:
    """Why `entry` is not a valid analysis entry, or "" when it is."""
    if type(entry) is not dict:
        return f"entry is {_json_type(entry)}, not an object"
    if type(entry.get("filename")) is not str:
        return "filename must be a string"
    rows = entry.get("row_count")
    if type(rows) is not int or rows < 0:  # type() also rejects bool, an int subclass
        return f"row_count must be a non-negative integer, got {rows!r}"
    columns = entry.get("columns")
    if type(columns) is not list or not all(map(_is_str, columns)):
        return "columns must be a list of strings"
    return ""


def _artifact_problem(entry: object) -> str:
    """Why `entry` is not a valid artifact entry, or "" when it is."""
    if type(entry) is not dict:
        return f"entry is {_json_type(entry)}, not an object"
    files = entry.get("files")
    if type(files) is not list or not all(map(_is_str, files)):
        return "files must be a list of strings"
    sums = entry.get("checksums")
    if type(sums) is not dict or not all(map(_is_str, sums.values())):
        return "checksums must be an object mapping paths to strings"
    return ""


def _json_type(value: object) -> str:
    names = {dict: "an object", list: "an array", str: "a string", bool: "a boolean"}
    return "null" if value is None else names.get(type(value), "a number")


def data_columns(schema: pa.Schema) -> list[str]:
    """The data column names of a schema, leaving out the columns pandas stored for its index."""
    meta = schema.pandas_metadata or {}
    index = {col for col in meta.get("index_columns", []) if isinstance(col, str)}
    return [name for name in schema.names if name not in index]


def encode_registry(registry: Mapping[str, Any]) -> bytes:
    """Serialise a registry as MDFactory does: 2-space indented JSON, trailing newline, UTF-8."""
    return (json.dumps(registry, indent=2) + "\n").encode("utf-8")


def empty_registry() -> dict[str, Any]:
    """A fresh registry with no analyses and no artifacts."""
    return {"schema_version": SCHEMA_VERSION, "analyses": {}, "artifacts": {}}


_OPEN_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC


def read_registry_file(path: Path) -> bytes | None:
    """The bytes of the registry file at `path`, or None when there is none.

    As the scanner does, follows no symlink (neither the registry nor its `.analysis`) and never
    blocks (a FIFO is opened non-blocking and refused): anything but a regular file there raises
    RegistryCorruptError saying what it is.
    """
    analysis = path.parent
    if analysis.is_symlink():
        raise RegistryCorruptError(f"{analysis.name} is a symbolic link, not a directory", str(path))
    try:
        fd = os.open(path, _OPEN_FLAGS)
    except (FileNotFoundError, NotADirectoryError):
        return None
    except OSError:  # ELOOP for a symlink, ENXIO for a socket: say what is there, not the errno
        try:
            mode = os.lstat(path).st_mode
        except OSError:
            mode = stat.S_IFREG
        if stat.S_ISREG(mode):
            raise
        raise RegistryCorruptError(f"is {file_type(mode)}, not a regular file", str(path)) from None
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            raise RegistryCorruptError(f"is {file_type(mode)}, not a regular file", str(path))
        with os.fdopen(fd, "rb", closefd=False) as handle:
            return handle.read()
    finally:
        os.close(fd)
