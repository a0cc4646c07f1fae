"""MDFactory's per-simulation registry `.analysis/metadata.json`: its format, and locked atomic updates.

`format` parses, validates and encodes a registry (what the scanner reads); `store.Registry` is
the library API (MDFactory's methods over locked, atomic writes, `check_integrity` through the
scanner).
"""

from .format import (
    ANALYSIS_DIRNAME,
    DEFAULT_LOCK_TIMEOUT,
    LOCK_SUFFIX,
    REGISTRY_FILENAME,
    SCHEMA_VERSION,
    RegistryEntryExistsError,
    RegistryEntryNotFoundError,
    UnsafePathError,
    data_columns,
    empty_registry,
    encode_registry,
    parse_registry,
    read_registry_file,
)
from .store import Registry

__all__ = [
    "ANALYSIS_DIRNAME",
    "DEFAULT_LOCK_TIMEOUT",
    "LOCK_SUFFIX",
    "REGISTRY_FILENAME",
    "SCHEMA_VERSION",
    "Registry",
    "RegistryEntryExistsError",
    "RegistryEntryNotFoundError",
    "UnsafePathError",
    "data_columns",
    "empty_registry",
    "encode_registry",
    "parse_registry",
    "read_registry_file",
]
