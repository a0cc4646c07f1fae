"""The exception family: every error mdbatch raises on purpose derives from MdbatchError."""

from __future__ import annotations

from typing import Any


class MdbatchError(Exception):
    """Root of mdbatch's errors; the CLI prints these as one line and exits 2."""

    exit_code = 2


class UsageError(MdbatchError, ValueError):
    """Arguments or inputs the user gave cannot be used as given."""


class InputError(MdbatchError, ValueError):
    """A campaign input (root, summary YAML, CSV) is missing or malformed."""


class RegistryCorruptError(MdbatchError, ValueError):
    """A `.analysis/metadata.json` is not valid JSON or does not follow the registry schema."""

    def __init__(self, message: str, path: str = "") -> None:
        super().__init__(f"{path}: {message}" if path else message)
        self.path = path
        self.reason = message


class RegistryLockError(MdbatchError, TimeoutError):
    """The registry's lock could not be taken in time."""


class InvalidNameError(MdbatchError, ValueError):
    """An analysis or artifact name cannot become a table name."""

    def __init__(self, name: str) -> None:
        super().__init__(f"invalid name {name!r}: use letters, digits and underscore only")
        self.name = name


class CatalogError(MdbatchError, RuntimeError):
    """The catalog backend is unreachable, misconfigured or refused a write."""


class CatalogDamagedError(CatalogError):
    """The catalog's storage is damaged (a corrupt SQLite file); mdbatch reads nothing more and writes nothing."""


class ClusterError(MdbatchError, RuntimeError):
    """The Dask cluster could not be started or reached."""


class DuplicateKeysError(CatalogError):
    """A push met keys that are already in the catalog (default mode: nothing is written)."""

    def __init__(self, count: int, tables: dict[str, int] | None = None, *, concurrent: bool = False) -> None:
        where = ", ".join(f"{n} in {t}" for t, n in sorted((tables or {}).items()))
        how = "were pushed concurrently by another process" if concurrent else "already exist in the catalog"
        super().__init__(
            f"{count} record{'s' if count != 1 else ''} {how}{f' ({where})' if where else ''}; "
            "use --diff to skip existing keys or --force to overwrite them"
        )
        self.count = count
        self.tables = dict(tables or {})


class ConfigError(MdbatchError, ValueError):
    """The mdbatch config file cannot be read or holds invalid settings."""


class Interrupted(MdbatchError):
    """A run was stopped by a signal (SIGTERM, SIGUSR1, SIGINT); what it had committed is kept."""

    exit_code = 3


class RefusedError(MdbatchError):
    """A run refused to record what it saw (a mass removal, another run of the same root in flight).

    The run is recorded as `refused` and nothing else in the catalog changes.
    """

    def __init__(self, message: str, run_id: str = "", summary: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.run_id = run_id
        self.summary = summary
