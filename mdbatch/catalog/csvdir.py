"""The file catalog: one CSV per table in a directory (`csv:///path/to/dir`), as MDFactory's CSV mode.

`RUN_DATABASE.csv`, `ANALYSIS_OVERVIEW.csv`, `ANALYSIS_<name>.csv`, `ARTIFACT_<name>.csv` and
mdbatch's `MDBATCH_*.csv`. Every change happens under one `filelock` lock on the directory; each
changed table is written to a temp file (fsynced), then a small journal names the renames, then
the temp files replace their tables: a batch touching several tables is all-or-nothing even if the
process dies half-way (the next user of the directory completes the journal). Files are kept sorted
by key, with typed columns: integers as integers, timestamps as ISO 8601 UTC, bytes as hex.
Every write rewrites the tables it touches, so this backend suits catalogs of thousands of
simulations, not millions (use SQLite or PostgreSQL for those).
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
from filelock import FileLock, Timeout

from ..atomic import atomic_write_text, fsync_dir
from ..errors import CatalogError, DuplicateKeysError
from . import schema
from .base import CatalogBackend
from .ops import Delete, Op, Update, Upsert, key_strings, timestamp_text, typed, unique_keys, without_keys

LOCK_NAME = ".mdbatch.lock"
JOURNAL_NAME = ".mdbatch-journal.json"
LOCK_TIMEOUT_S = 600.0


def csv_dir(url: str) -> Path:
    """The directory of a `csv:` URL: `csv:///abs/dir` is /abs/dir, `csv://rel/dir` is relative."""
    rest = url.split(":", 1)[1]
    path = rest[2:] if rest.startswith("//") else rest
    if not path:
        raise CatalogError(f"catalog URL {url!r} names no directory: use csv:///path/to/dir")
    return Path(os.path.normpath(path))


class CSVCatalog(CatalogBackend):
    """A catalog of per-table CSV files in one directory, changed only under its lock."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.display_url = url
        self.dir = csv_dir(url)
        self._cache: dict[str, tuple[tuple[int, int, int], pa.Table]] = {}
        self._ready = False

    # -- locking and files --------------------------------------------------------------------

    @contextlib.contextmanager
    def _locked(self, create: bool = True) -> Iterator[None]:
        if create:
            try:
                self.dir.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise CatalogError(f"catalog {self.display_url}: cannot create {self.dir}: {exc.strerror or exc}") from exc
        elif not self.dir.is_dir():
            raise CatalogError(f"catalog {self.display_url}: directory {self.dir} does not exist")
        try:
            with FileLock(str(self.dir / LOCK_NAME), timeout=LOCK_TIMEOUT_S):
                self._recover()
                yield
        except Timeout as exc:
            raise CatalogError(
                f"catalog {self.display_url}: lock {self.dir / LOCK_NAME} not released within {LOCK_TIMEOUT_S:.0f}s"
            ) from exc
        except OSError as exc:
            raise CatalogError(f"catalog {self.display_url}: {exc.strerror or exc}: {exc.filename or self.dir}") from exc

    def _recover(self) -> None:
        """Finish a commit a dead process left half-done; drop temp files no commit refers to."""
        journal = self.dir / JOURNAL_NAME
        if journal.exists():
            pairs = json.loads(journal.read_text(encoding="utf-8"))
            for tmp, target in pairs:
                if (self.dir / tmp).exists():
                    os.replace(self.dir / tmp, self.dir / target)
            fsync_dir(self.dir)
            journal.unlink()
            self._cache.clear()
        for leftover in self.dir.glob(".*.csv.*.tmp"):
            with contextlib.suppress(OSError):
                leftover.unlink()

    def _path(self, name: str) -> Path:
        return self.dir / f"{name}.csv"

    def _read(self, name: str) -> pa.Table | None:
        """The whole table, typed (None when its file does not exist)."""
        path = self._path(name)
        try:
            st = path.stat()
        except FileNotFoundError:
            return None
        stamp = (st.st_ino, st.st_mtime_ns, st.st_size)
        cached = self._cache.get(name)
        if cached is not None and cached[0] == stamp:
            return cached[1]
        with path.open("rb") as handle:
            chunks = list(_read_chunks(handle, name, None)) if st.st_size else []
        table = pa.concat_tables(chunks) if chunks else schema.arrow_schema(schema.table_for(name)).empty_table()
        self._cache[name] = (stamp, table)
        return table

    def _commit(self, tables: Mapping[str, pa.Table]) -> None:
        """Replace several table files at once (temp files, journal, renames)."""
        pairs: list[tuple[str, str]] = []
        try:
            for name, table in tables.items():
                tmp = f".{name}.csv.{secrets.token_hex(4)}.tmp"
                with open(self.dir / tmp, "wb") as handle:
                    handle.write(_to_csv(table))
                    handle.flush()
                    os.fsync(handle.fileno())
                pairs.append((tmp, f"{name}.csv"))
            atomic_write_text(self.dir / JOURNAL_NAME, json.dumps(pairs))
        except BaseException:
            for tmp, _ in pairs:
                with contextlib.suppress(OSError):
                    (self.dir / tmp).unlink()
            raise
        for tmp, target in pairs:
            os.replace(self.dir / tmp, self.dir / target)
        fsync_dir(self.dir)
        (self.dir / JOURNAL_NAME).unlink()
        for name, table in tables.items():
            st = self._path(name).stat()
            self._cache[name] = ((st.st_ino, st.st_mtime_ns, st.st_size), table)

    # -- schema -------------------------------------------------------------------------------

    def init_schema(self, force: bool = False) -> None:
        if self._ready and not force:
            return
        with self._locked():
            if force:
                for name in self._table_names():
                    self._path(name).unlink()
                self._cache.clear()
            version = self._version()
            if version is not None and version > schema.SCHEMA_VERSION:
                raise CatalogError(
                    f"catalog {self.display_url} has schema version {version}, "
                    f"newer than this mdbatch ({schema.SCHEMA_VERSION}); upgrade mdbatch"
                )
            fresh = {t.name: schema.arrow_schema(t).empty_table() for t in schema.FIXED_TABLES if not self._path(t.name).exists()}
            if version != schema.SCHEMA_VERSION:  # older CSV files gain new columns (as NULL) when read
                fresh[schema.SCHEMA_INFO.name] = pa.table(
                    {"key": ["schema_version"], "value": [str(schema.SCHEMA_VERSION)]}, schema=schema.arrow_schema(schema.SCHEMA_INFO)
                )
            if fresh:
                self._commit(fresh)
        self._ready = True

    def _version(self) -> int | None:
        info = self._read(schema.SCHEMA_INFO.name)
        if info is None:
            return None
        values = dict(zip(info["key"].to_pylist(), info["value"].to_pylist(), strict=True))
        return int(values["schema_version"]) if "schema_version" in values else None

    def schema_version(self) -> int | None:
        if not self.dir.is_dir():
            return None
        with self._locked(create=False):
            return self._version()

    def _table_names(self) -> list[str]:
        names = (p.name[:-4] for p in self.dir.glob("*.csv"))
        fixed = {t.name for t in schema.FIXED_TABLES}
        return sorted(n for n in names if n in fixed or schema.item_kind(n) is not None)

    def tables(self) -> list[str]:
        if not self.dir.is_dir():
            return []
        with self._locked(create=False):
            return self._table_names()

    # -- writes -------------------------------------------------------------------------------

    def apply(self, ops: Sequence[Op]) -> list[int]:
        self.init_schema()
        with self._locked():
            work: dict[str, pa.Table] = {}
            counts = []
            for op in ops:
                definition = schema.table_for(op.table)
                current = work.get(op.table)
                if current is None:
                    current = self._read(op.table)
                    current = current if current is not None else schema.arrow_schema(definition).empty_table()
                rows = typed(definition, op.rows)
                if isinstance(op, Delete):
                    kept = without_keys(current, rows.column_names, rows)
                    counts.append(current.num_rows - kept.num_rows)
                    work[op.table] = kept
                elif isinstance(op, Update):
                    updated, written = _update(current, rows, list(op.match_columns()))
                    counts.append(written)
                    work[op.table] = updated
                else:
                    updated, written = _upsert(definition, current, rows, op)
                    counts.append(written)
                    work[op.table] = updated
            changed = {name: _sorted(schema.table_for(name), table) for name, table in work.items()}
            if changed:
                self._commit(changed)
        return counts

    def existing_keys(self, table: str, keys: pa.Table) -> pa.Table:
        definition = schema.table_for(table)
        names = list(schema.key_columns(definition))
        with self._locked():
            current = self._read(table)
        if current is None or keys.num_rows == 0:
            return schema.arrow_schema(definition, names).empty_table()
        current = _present(definition, current)
        wanted = typed(definition, keys.select(names))
        return wanted.filter(pc.is_in(key_strings(wanted, names), value_set=key_strings(current, names)))

    def rows_matching(self, table: str, match: pa.Table, columns: Sequence[str] | None = None) -> pa.Table:
        definition = schema.table_for(table)
        names = list(columns) if columns is not None else [c.name for c in definition.columns]
        with self._locked():
            current = self._read(table)
        if current is None or match.num_rows == 0:
            return schema.arrow_schema(definition, names).empty_table()
        wanted = typed(definition, match)
        hits = pc.is_in(key_strings(current, wanted.column_names), value_set=key_strings(wanted, wanted.column_names))
        return current.filter(hits).select(names)

    def clear(self, targets: Sequence[tuple[str, Mapping[str, Any]]]) -> list[int]:
        counts = []
        with self._locked():
            work: dict[str, pa.Table] = {}
            for name, where in targets:
                current = work.get(name, self._read(name))
                if current is None:
                    counts.append(0)
                    continue
                mask = _mask(current, where)
                counts.append(int(pc.sum(mask).as_py() or 0) if mask is not None else current.num_rows)
                work[name] = current.filter(pc.invert(mask)) if mask is not None else current.slice(0, 0)
            if work:
                self._commit(work)
        return counts

    # -- reads --------------------------------------------------------------------------------

    def iter_rows(
        self, table: str, where: Mapping[str, Any] | None = None, columns: Sequence[str] | None = None, chunk_rows: int = 50_000
    ) -> Iterator[pa.Table]:
        definition = schema.table_for(table)
        with self._locked(create=False):
            try:
                # The open file is a snapshot: writers replace the file by rename, never in place.
                handle = self._path(table).open("rb")
            except FileNotFoundError:
                raise CatalogError(
                    f"catalog {self.display_url} has no table {table} (nothing pushed there yet; `mdbatch init-db` creates the schema)"
                ) from None
        names = list(columns) if columns is not None else [c.name for c in definition.columns]
        with handle:
            for chunk in _read_chunks(handle, table, chunk_rows):
                mask = _mask(chunk, where or {})
                if mask is not None:
                    chunk = chunk.filter(mask)
                if chunk.num_rows:
                    yield chunk.select(names)

    def count_rows(self, table: str, where: Mapping[str, Any] | None = None) -> int:
        schema.table_for(table)
        if table not in self.tables():
            return 0
        return sum(t.num_rows for t in self.iter_rows(table, where, list(schema.key_columns(schema.table_for(table))) or None))

    def close(self) -> None:
        self._cache.clear()


def _upsert(definition: Any, current: pa.Table, rows: pa.Table, op: Upsert) -> tuple[pa.Table, int]:
    """`current` with `rows` upserted per `op`; and how many rows were written."""
    if op.on_conflict == "new":  # the keys were deleted in this transaction: a replace is the same, and safe
        op = Upsert(op.table, op.rows)
    keys = list(schema.key_columns(definition))
    full = schema.arrow_schema(definition)
    if not keys:  # append-only: generated ids continue after the largest one
        pk = definition.primary_key.columns.keys()[0]
        start = (pc.max(current[pk]).as_py() or 0) + 1 if current.num_rows else 1
        rows = rows.append_column(pk, pa.array(range(start, start + rows.num_rows), pa.int64()))
        return pa.concat_tables([current, _widen(rows, full)]), rows.num_rows
    rows = unique_keys(rows, keys, "last" if op.on_conflict == "replace" else "first")
    hits = pc.is_in(key_strings(rows, keys), value_set=key_strings(current, keys))
    new = rows.filter(pc.invert(hits))
    clashing = rows.filter(hits)
    if clashing.num_rows == 0:
        return pa.concat_tables([current, _widen(new, full)]), new.num_rows
    if op.on_conflict != "replace":
        present = _present(definition, current)
        blocked = pc.is_in(key_strings(clashing, keys), value_set=key_strings(present, keys))
        if op.on_conflict == "error" and pc.any(blocked).as_py():
            raise DuplicateKeysError(int(pc.sum(blocked).as_py()), {definition.name: int(pc.sum(blocked).as_py())}, concurrent=True)
        clashing = clashing.filter(pc.invert(blocked))
    clash_ids = key_strings(clashing, keys)
    touched = pc.is_in(key_strings(current, keys), value_set=clash_ids)
    before = current.filter(touched)
    old = dict(zip(key_strings(before, keys).to_pylist(), before.to_pylist(), strict=True))
    keep = set(op.keep) if op.on_conflict == "replace" else set()
    merged = []
    for key, row in zip(clash_ids.to_pylist(), clashing.to_pylist(), strict=True):
        previous = old[key]
        same = all(previous[c] == row.get(c) for c in op.keep_if_same)
        out = dict(previous)
        for column in full.names:
            if column in keep:
                out[column] = previous[column] if same else row.get(column)
            elif column in row:
                out[column] = row[column]
        merged.append(out)
    updated = pa.concat_tables([current.filter(pc.invert(touched)), pa.Table.from_pylist(merged, schema=full)])
    return pa.concat_tables([updated, _widen(new, full)]), new.num_rows + clashing.num_rows


def _update(current: pa.Table, rows: pa.Table, match: list[str]) -> tuple[pa.Table, int]:
    """`current` with the other columns of `rows` set on the rows equal to one of them on `match`."""
    if current.num_rows == 0 or rows.num_rows == 0:
        return current, 0
    rows = unique_keys(rows, match, "last")
    where = pc.index_in(key_strings(current, match), value_set=key_strings(rows, match))
    hit = pc.is_valid(where)
    written = int(pc.sum(hit).as_py() or 0)
    if not written:
        return current, 0
    out = current
    for name in rows.column_names:
        if name in match:
            continue
        column = out[name]
        fresh = pc.take(rows[name], pc.fill_null(where, 0)).cast(column.type)
        out = out.set_column(out.schema.get_field_index(name), name, pc.if_else(hit, fresh, column))
    return out, written


def _present(definition: Any, current: pa.Table) -> pa.Table:
    column = schema.present_column(definition)
    return current if column is None else current.filter(pc.is_valid(current[column]))


def _widen(rows: pa.Table, full: pa.Schema) -> pa.Table:
    """`rows` with every column of `full`, missing ones NULL, in `full`'s order."""
    cols = [rows[f.name] if f.name in rows.column_names else pa.nulls(rows.num_rows, f.type) for f in full]
    return pa.Table.from_arrays(cols, schema=full)


def _sorted(definition: Any, table: pa.Table) -> pa.Table:
    keys = list(schema.key_columns(definition)) or list(definition.primary_key.columns.keys())
    return table.sort_by([(k, "ascending") for k in keys]) if table.num_rows > 1 else table


def _mask(table: pa.Table, where: Mapping[str, Any]) -> pa.ChunkedArray | None:
    mask = None
    for column, value in where.items():
        if column not in table.column_names:
            raise CatalogError(f"internal: no column {column!r}")
        if value is None:  # as in SQL: `column IS NULL`
            test = pc.is_null(table[column])
        else:
            test = pc.fill_null(pc.equal(table[column], pa.scalar(value, table[column].type)), False)
        mask = test if mask is None else pc.and_(mask, test)
    return mask


def _to_csv(table: pa.Table) -> bytes:
    cols = [
        pa.array([None if b is None else b.hex() for b in c.to_pylist()], pa.string())
        if pa.types.is_binary(c.type)
        else timestamp_text(c, "Z")
        if pa.types.is_timestamp(c.type)
        else c
        for c in table.columns
    ]
    sink = pa.BufferOutputStream()
    pacsv.write_csv(pa.table(cols, names=table.column_names), sink, pacsv.WriteOptions(quoting_header="none"))
    return bytes(sink.getvalue())


def _read_chunks(handle: Any, name: str, chunk_rows: int | None) -> Iterator[pa.Table]:
    """Typed chunks of one table file; columns the file lacks (older schema) come back NULL."""
    definition = schema.table_for(name)
    full = schema.arrow_schema(definition)
    stored = {f.name: (pa.string() if pa.types.is_binary(f.type) else f.type) for f in full}
    block = 1 << 24
    reader = pacsv.open_csv(
        handle,
        read_options=pacsv.ReadOptions(block_size=block),
        parse_options=pacsv.ParseOptions(newlines_in_values=True),  # data_csv and YAML span lines
        convert_options=pacsv.ConvertOptions(
            column_types=stored,
            strings_can_be_null=True,
            quoted_strings_can_be_null=False,
            null_values=[""],
            include_columns=None,
        ),
    )
    for batch in reader:
        table = pa.Table.from_batches([batch])
        cols = []
        for field in full:
            if field.name not in table.column_names:
                cols.append(pa.nulls(table.num_rows, field.type))
            elif pa.types.is_binary(field.type):
                cols.append(pa.array([None if h is None else bytes.fromhex(h) for h in table[field.name].to_pylist()], pa.binary()))
            else:
                cols.append(table[field.name])
        typed_chunk = pa.Table.from_arrays(cols, schema=full)
        if chunk_rows is None:
            yield typed_chunk
        else:
            for start in range(0, typed_chunk.num_rows, chunk_rows):
                yield typed_chunk.slice(start, chunk_rows)
