"""Finding kinds and the finding record: what an audit reports about one simulation."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

MISSING_FILE = "missing_file"
EXTRA_FILE = "extra_file"
ROW_COUNT_MISMATCH = "row_count_mismatch"
COLUMNS_MISMATCH = "columns_mismatch"
ARTIFACT_MISSING_FILE = "artifact_missing_file"
ARTIFACT_CHECKSUM_MISMATCH = "artifact_checksum_mismatch"
REGISTRY_CORRUPT = "registry_corrupt"
PARQUET_UNREADABLE = "parquet_unreadable"
UNSAFE_PATH = "unsafe_path"
INVALID_NAME = "invalid_name"
UNREADABLE = "unreadable"
CHANGED_DURING_SCAN = "changed_during_scan"
SILENT_CORRUPTION = "silent_corruption"
STALE_DEPENDENCY = "stale_dependency"
DEPENDENCY_MISSING = "dependency_missing"
DEPENDENCY_CYCLE = "dependency_cycle"

#: Every kind an audit can report, in the order summaries list them.
KINDS: tuple[str, ...] = (
    MISSING_FILE,
    EXTRA_FILE,
    ROW_COUNT_MISMATCH,
    COLUMNS_MISMATCH,
    ARTIFACT_MISSING_FILE,
    ARTIFACT_CHECKSUM_MISMATCH,
    REGISTRY_CORRUPT,
    PARQUET_UNREADABLE,
    UNSAFE_PATH,
    INVALID_NAME,
    UNREADABLE,
    CHANGED_DURING_SCAN,
    SILENT_CORRUPTION,
    STALE_DEPENDENCY,
    DEPENDENCY_MISSING,
    DEPENDENCY_CYCLE,
)

#: The kinds that lineage (`extras.depends_on`, see `lineage`) reports.
LINEAGE_KINDS: tuple[str, ...] = (STALE_DEPENDENCY, DEPENDENCY_MISSING, DEPENDENCY_CYCLE)

#: What each kind means, one line each (docs and `--help` texts quote these).
DESCRIPTIONS: dict[str, str] = {
    MISSING_FILE: "a registered analysis's parquet file is absent",
    EXTRA_FILE: "a parquet file in .analysis is not in the registry",
    ROW_COUNT_MISMATCH: "the registry's row count differs from the parquet footer's",
    COLUMNS_MISMATCH: "the registry's columns differ from the parquet footer's",
    ARTIFACT_MISSING_FILE: "a file an artifact lists is absent",
    ARTIFACT_CHECKSUM_MISMATCH: "an artifact file's sha256 differs from the registry's (or none is recorded)",
    REGISTRY_CORRUPT: "the registry is not valid JSON or does not follow the registry schema",
    PARQUET_UNREADABLE: "a registered parquet file's footer cannot be read",
    UNSAFE_PATH: "a registry path is absolute or leaves the simulation directory (never opened)",
    INVALID_NAME: "an analysis or artifact name cannot become a table name",
    UNREADABLE: "a file or directory cannot be read",
    CHANGED_DURING_SCAN: "a file changed, vanished or was replaced while it was read",
    SILENT_CORRUPTION: "a file's bytes changed while its size, mtime and ctime did not (--verify full)",
    STALE_DEPENDENCY: "an entry's upstream (extras.depends_on) was updated, or its files modified, after the entry was made",
    DEPENDENCY_MISSING: "an entry depends on an analysis or artifact that is not in the registry (or on something that is no reference)",
    DEPENDENCY_CYCLE: "entries depend on themselves through extras.depends_on (once per cycle, naming its members)",
}


@dataclass(frozen=True, slots=True)
class Finding:
    """One problem found in one simulation.

    `simulation` is the simulation directory relative to the campaign root, `item` the analysis,
    artifact or file concerned, `detail` a human-readable explanation.
    """

    simulation: str
    kind: str
    item: str
    detail: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Finding:
        return cls(str(data["simulation"]), str(data["kind"]), str(data["item"]), str(data["detail"]))
