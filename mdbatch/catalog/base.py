"""The backend interface every catalog (SQLite, PostgreSQL, CSV) implements."""

from __future__ import annotations

import abc
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ..records import BatchResult

if TYPE_CHECKING:
    import pandas as pd
    import pyarrow as pa


@dataclass(frozen=True, slots=True)
class RunInfo:
    """The identity of one mdbatch run, recorded when it starts."""

    run_id: str
    command: str
    root: str | None
    arguments: dict[str, Any] = field(default_factory=dict)
    host: str = ""
    version: str = ""
    started_at: str = ""


class CatalogBackend(abc.ABC):
    """Where audits land. Each `write_batch` is one transaction: all of a batch or none of it."""

    #: The URL with any password replaced by ***, safe to print and log.
    display_url: str

    @abc.abstractmethod
    def init_schema(self, force: bool = False) -> None:
        """Create the fixed tables (dropping mdbatch's tables first when `force`)."""

    @abc.abstractmethod
    def begin_run(self, run: RunInfo) -> None:
        """Record a run as started ("running")."""

    @abc.abstractmethod
    def write_batch(self, run_id: str, root: str, batch: BatchResult) -> None:
        """Write one batch of scans in a single transaction (bulk, never row by row)."""

    @abc.abstractmethod
    def finish_run(self, run_id: str, status: str, summary: dict[str, Any]) -> None:
        """Mark a run completed, failed or interrupted and store its summary."""

    @abc.abstractmethod
    def duplicate_summary(self, root: str) -> dict[str, int]:
        """Identical non-empty files under `root` per the inventory: {groups, files, reclaimable_bytes}.

        Files are identical when size and xxh3-128 agree; paths already sharing an inode count once
        towards what can be reclaimed.
        """

    @abc.abstractmethod
    def file_inventory(self, root: str, chunk_rows: int = 100_000) -> Iterator[pa.Table]:
        """The recorded inventory of `root` (MDBATCH_FILES rows, FILES_SCHEMA columns) in chunks."""

    @abc.abstractmethod
    def scanned_simulations(self, run_id: str) -> set[str]:
        """Simulations (relative to the root) that run `run_id` has written so far."""

    @abc.abstractmethod
    def read_table(self, name: str) -> pd.DataFrame:
        """A whole catalog table as a DataFrame (empty frame when the table does not exist)."""

    @abc.abstractmethod
    def close(self) -> None:
        """Release connections."""

    def __enter__(self) -> CatalogBackend:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
