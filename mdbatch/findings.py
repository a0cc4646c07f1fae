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
)


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
