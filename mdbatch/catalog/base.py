"""The storage interface every catalog (SQLite, PostgreSQL, CSV) implements: storage only.

A backend stores the tables of `schema.py` and offers a handful of bulk operations on Arrow
tables: `apply` (upserts, updates and deletes, all in one transaction), `existing_keys` and
`rows_matching` (index lookups), `iter_rows` (typed chunks, filtered in the database), `clear`
and counts. It knows nothing of audits or runs: what they write is built from operations in
`writes` and `lifecycle`, what they read from `queries` and `filestats`. The shared contract suite
in tests/catalog/ runs against all three backends.
"""

from __future__ import annotations

import abc
from collections.abc import Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import pyarrow as pa
import pyarrow.compute as pc

from . import schema
from .ops import Delete, Op, Update, Upsert, parse_ts, rows_table

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["CatalogBackend", "Delete", "Op", "Update", "Upsert", "parse_ts", "rows_table"]


class CatalogBackend(abc.ABC):
    """A catalog's storage. Each `apply` is one transaction."""

    #: The URL with any password replaced by ***, safe to print and log.
    display_url: str

    # -- primitives every backend implements ----------------------------------------------------

    @abc.abstractmethod
    def init_schema(self, force: bool = False) -> None:
        """Create the fixed tables and record the schema version, migrating an older catalog.

        With `force`, drop every mdbatch table first (item tables included).
        """

    @abc.abstractmethod
    def schema_version(self) -> int | None:
        """The catalog's recorded schema version, None when it has no schema yet."""

    @abc.abstractmethod
    def tables(self) -> list[str]:
        """Names of the catalog tables that exist, sorted."""

    @abc.abstractmethod
    def apply(self, ops: Sequence[Op]) -> list[int]:
        """Run deletes and upserts in one transaction; rows written (or deleted) per op."""

    @abc.abstractmethod
    def existing_keys(self, table: str, keys: pa.Table) -> pa.Table:
        """The rows of `keys` (the table's key columns) that are present in `table` (see Upsert)."""

    @abc.abstractmethod
    def rows_matching(self, table: str, match: pa.Table, columns: Sequence[str] | None = None) -> pa.Table:
        """Rows of `table` equal to one of the rows of `match` on all of its columns (bulk lookups).

        For example one batch's simulations' inventory: `match` = {root, simulation}.
        """

    @abc.abstractmethod
    def iter_rows(
        self, table: str, where: Mapping[str, Any] | None = None, columns: Sequence[str] | None = None, chunk_rows: int = 50_000
    ) -> Iterator[pa.Table]:
        """Rows of `table` matching the equality filters in `where`, ordered by key, typed, in chunks.

        A missing table raises CatalogError naming it.
        """

    @abc.abstractmethod
    def count_rows(self, table: str, where: Mapping[str, Any] | None = None) -> int:
        """Rows of `table` matching `where` (0 when the table does not exist)."""

    def group_counts(
        self, table: str, where: Mapping[str, Any], by: Sequence[str], distinct: Sequence[str], min_count: int = 1
    ) -> pa.Table:
        """For each group of equal `by` values among the rows matching `where`, with at least
        `min_count` rows: the `by` columns, `count` (rows) and `distinct` (distinct `distinct`
        tuples). Counted in the database by the SQL backends; this default streams the rows."""
        parts = [
            chunk.group_by([*by, *distinct], use_threads=False).aggregate([(by[0], "count")])
            for chunk in (self.iter_rows(table, where, [*by, *distinct]) if table in self.tables() else ())
        ]
        arrow = schema.arrow_schema(schema.table_for(table), list(by))
        if not parts:
            return arrow.append(pa.field("count", pa.int64())).append(pa.field("distinct", pa.int64())).empty_table()
        per_tuple = pa.concat_tables(parts).group_by([*by, *distinct], use_threads=False).aggregate([(f"{by[0]}_count", "sum")])
        groups = per_tuple.group_by(list(by), use_threads=False).aggregate([(f"{by[0]}_count_sum", "sum"), (by[0], "count")])
        out = pa.table({**{k: groups[k] for k in by}, "count": groups[f"{by[0]}_count_sum_sum"], "distinct": groups[f"{by[0]}_count"]})
        return out.filter(pc.greater_equal(out["count"], min_count))

    @abc.abstractmethod
    def clear(self, targets: Sequence[tuple[str, Mapping[str, Any]]]) -> list[int]:
        """Delete the rows matching each (table, where) in one transaction; rows deleted per target."""

    @abc.abstractmethod
    def close(self) -> None:
        """Release connections."""

    # -- conveniences built on the primitives ---------------------------------------------------

    def read_table(self, name: str) -> pd.DataFrame:
        """A whole catalog table as a DataFrame (empty frame when the table does not exist)."""
        import pandas as pd

        if name not in self.tables():
            return pd.DataFrame()
        chunks = list(self.iter_rows(name))
        table = pa.concat_tables(chunks) if chunks else schema.arrow_schema(schema.table_for(name)).empty_table()
        return table.to_pandas()

    def __enter__(self) -> CatalogBackend:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
