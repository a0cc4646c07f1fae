"""Storage and duplicates from a catalog's file inventory (MDBATCH_FILES), in one streaming pass.

Only present simulations count (rows of removed ones are kept as the hash cache, marked
`removed_run`, and filtered out in the database). The inventory of a large campaign has millions of
rows, so it is never loaded whole: each chunk is reduced with Arrow group-bys (bytes per extension,
per simulation, per distinct (digest, inode)) and only those reductions are kept. Paths are
fetched afterwards, by index lookups, for the duplicate groups that are asked for.
"""

from __future__ import annotations

import posixpath
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import pyarrow as pa
import pyarrow.compute as pc

from .base import CatalogBackend

if TYPE_CHECKING:
    import pandas as pd

FILES = "MDBATCH_FILES"
NO_EXTENSION = "(none)"
#: A suffix after a dot that is not the name's first character: 'traj.xtc' -> 'xtc'; '.bashrc' has none.
_EXTENSION = r"[^/]\.(?P<ext>[^./]+)$"
DUPLICATE_COLUMNS = ["size", "xxh3_128", "files", "inodes", "reclaimable_bytes", "paths"]


@dataclass(slots=True)
class InventoryStats:
    """What one pass over a root's inventory yields (all byte counts are file sizes, not blocks)."""

    #: Columns extension, files, bytes; largest first.
    by_extension: pd.DataFrame
    #: Columns root, simulation, files, bytes (simulation relative to its root).
    by_simulation: pd.DataFrame
    #: One row per duplicate group (DUPLICATE_COLUMNS), most reclaimable first; `top` groups at most.
    duplicates: pd.DataFrame
    #: {groups, files, reclaimable_bytes} over every duplicate group (not only the top ones).
    duplicate_totals: dict[str, int] = field(default_factory=dict)
    files: int = 0
    bytes: int = 0


def inventory_stats(
    catalog: CatalogBackend, root: str | None = None, *, top: int | None = None, chunk_rows: int = 200_000
) -> InventoryStats:
    """Storage by extension and by simulation, and duplicate groups, for `root` (every root when None).

    Files are duplicates when size (> 0) and xxh3-128 agree; paths sharing an inode count once
    towards the reclaimable bytes, as in the audit summary. `top` limits the groups returned (and
    whose paths are looked up) to the most reclaimable ones.
    """
    import pandas as pd

    ext_parts: list[pa.Table] = []
    sim_parts: list[pa.Table] = []
    dig_parts: list[pa.Table] = []
    files = 0
    total = 0
    if FILES in catalog.tables():
        where = {"root": root, "removed_run": None} if root is not None else {"removed_run": None}
        columns = ["simulation", "path", "size", "xxh3_128", "inode", "device"]
        for chunk in catalog.iter_rows(FILES, where, columns if root is not None else ["root", *columns], chunk_rows):
            if root is not None:  # one root: its column would only repeat the filter
                chunk = chunk.append_column("root", pa.repeat(pa.scalar(root, pa.string()), chunk.num_rows))
            files += chunk.num_rows
            total += int(pc.sum(chunk["size"]).as_py() or 0)
            ext = pc.utf8_lower(pc.struct_field(pc.extract_regex(chunk["path"], _EXTENSION), [0]))
            ext = pc.fill_null(ext, NO_EXTENSION)
            ext_parts.append(pa.table({"ext": ext, "size": chunk["size"]}).group_by("ext").aggregate([("size", "count"), ("size", "sum")]))
            sim_parts.append(
                chunk.select(["root", "simulation", "size"])
                .group_by(["root", "simulation"])
                .aggregate([("size", "count"), ("size", "sum")])
            )
            hashed = chunk.filter(pc.and_(pc.is_valid(chunk["xxh3_128"]), pc.greater(chunk["size"], 0)))
            dig_parts.append(hashed.group_by(["size", "xxh3_128", "device", "inode"]).aggregate([("size", "count")]))
    by_ext = _combine(ext_parts, ["ext"], ("size_count", "size_sum"))
    by_sim = _combine(sim_parts, ["root", "simulation"], ("size_count", "size_sum"))
    ext_frame = (
        pd.DataFrame({"extension": by_ext["ext"], "files": by_ext["size_count"], "bytes": by_ext["size_sum"]})
        if by_ext
        else _empty(["extension", "files", "bytes"])
    )
    ext_frame = ext_frame.sort_values(["bytes", "extension"], ascending=[False, True], ignore_index=True)
    sim_frame = (
        pd.DataFrame(
            {"root": by_sim["root"], "simulation": by_sim["simulation"], "files": by_sim["size_count"], "bytes": by_sim["size_sum"]}
        )
        if by_sim
        else _empty(["root", "simulation", "files", "bytes"])
    )
    groups, totals = _duplicate_groups(dig_parts)
    if top is not None:
        groups = groups.slice(0, top)
    dup_frame = _with_paths(catalog, groups, root)
    return InventoryStats(ext_frame, sim_frame.sort_values(["root", "simulation"], ignore_index=True), dup_frame, totals, files, total)


def duplicate_totals(catalog: CatalogBackend, root: str, chunk_rows: int = 200_000) -> dict[str, int]:
    """{groups, files, reclaimable_bytes} over the duplicate groups of `root` (the audit's summary)."""
    # Counted in the database: only groups of two or more files leave it.
    groups = catalog.group_counts(FILES, {"root": root, "removed_run": None}, ["size", "xxh3_128"], ["device", "inode"], min_count=2)
    dup = groups.filter(pc.and_(pc.is_valid(groups["xxh3_128"]), pc.greater(groups["size"], 0)))
    reclaim = pc.multiply(pc.subtract(dup["distinct"], 1), dup["size"])
    return {
        "groups": dup.num_rows,
        "files": int(pc.sum(dup["count"]).as_py() or 0),
        "reclaimable_bytes": int(pc.sum(reclaim).as_py() or 0),
    }


def _combine(parts: list[pa.Table], keys: list[str], sums: tuple[str, ...]) -> dict[str, list[object]] | None:
    """Re-aggregate per-chunk group-bys (a group may span chunks) into plain columns."""
    if not parts:
        return None
    merged = pa.concat_tables(parts).group_by(keys).aggregate([(c, "sum") for c in sums])
    return {**{k: merged[k].to_pylist() for k in keys}, **{c: merged[f"{c}_sum"].to_pylist() for c in sums}}


def _duplicate_groups(parts: list[pa.Table]) -> tuple[pa.Table, dict[str, int]]:
    """Groups of identical files (size, xxh3_128, files, inodes, reclaimable_bytes), most reclaimable first."""
    empty = pa.table(
        {
            "size": pa.array([], pa.int64()),
            "xxh3_128": pa.array([], pa.string()),
            "files": pa.array([], pa.int64()),
            "inodes": pa.array([], pa.int64()),
            "reclaimable_bytes": pa.array([], pa.int64()),
        }
    )
    if not parts:
        return empty, {"groups": 0, "files": 0, "reclaimable_bytes": 0}
    per_inode = pa.concat_tables(parts).group_by(["size", "xxh3_128", "device", "inode"]).aggregate([("size_count", "sum")])
    grouped = per_inode.group_by(["size", "xxh3_128"]).aggregate([("size_count_sum", "sum"), ("inode", "count")])
    dup = grouped.filter(pc.greater(grouped["size_count_sum_sum"], 1))
    reclaim = pc.multiply(pc.subtract(dup["inode_count"], 1), dup["size"])
    table = pa.table(
        {
            "size": dup["size"],
            "xxh3_128": dup["xxh3_128"],
            "files": dup["size_count_sum_sum"],
            "inodes": dup["inode_count"],
            "reclaimable_bytes": reclaim,
        }
    )
    table = table.sort_by([("reclaimable_bytes", "descending"), ("size", "descending"), ("xxh3_128", "ascending")])
    totals = {
        "groups": table.num_rows,
        "files": int(pc.sum(table["files"]).as_py() or 0),
        "reclaimable_bytes": int(pc.sum(table["reclaimable_bytes"]).as_py() or 0),
    }
    return (table if table.num_rows else empty), totals


def _with_paths(catalog: CatalogBackend, groups: pa.Table, root: str | None) -> pd.DataFrame:
    """The groups as a DataFrame with each group's absolute paths (sorted) in a `paths` list column."""
    import pandas as pd

    frame = groups.to_pandas()
    if frame.empty:
        return _empty(DUPLICATE_COLUMNS)
    # A second streaming pass, keeping the rows of the wanted groups: no index on (size, digest) to
    # maintain on every audit write (random inserts into it slowed big audits down).
    wanted = pa.array(sorted({f"{s}:{d}" for s, d in zip(frame["size"], frame["xxh3_128"], strict=True)}), pa.string())
    where = {"root": root, "removed_run": None} if root is not None else {"removed_run": None}
    paths: dict[tuple[int, str], list[str]] = {}
    for chunk in catalog.iter_rows(FILES, where, ["root", "simulation", "path", "size", "xxh3_128"], 200_000):
        keys = pc.binary_join_element_wise(pc.cast(chunk["size"], pa.string()), chunk["xxh3_128"], ":")
        found = chunk.filter(pc.fill_null(pc.is_in(keys, value_set=wanted), False))
        for r, sim, path, size, digest in zip(*(found[c].to_pylist() for c in found.column_names), strict=True):
            paths.setdefault((size, digest), []).append(posixpath.normpath(posixpath.join(r, sim, path)))
    frame["paths"] = [sorted(paths.get((s, d), [])) for s, d in zip(frame["size"], frame["xxh3_128"], strict=True)]
    return pd.DataFrame(frame, columns=DUPLICATE_COLUMNS)


def _empty(columns: list[str]) -> pd.DataFrame:
    import pandas as pd

    return pd.DataFrame(
        {c: pd.Series(dtype="int64" if c in ("files", "bytes", "size", "inodes", "reclaimable_bytes") else "object") for c in columns}
    )


def storage(catalog: CatalogBackend, root: str | None, by: str = "extension") -> pd.DataFrame:
    """Files and bytes per file extension, per simulation or per simulation type, largest first."""
    from ..errors import UsageError
    from .queries import systems

    if by not in ("extension", "simulation", "simulation_type"):
        raise UsageError(f"by={by!r}: use 'extension', 'simulation' or 'simulation_type'")
    stats = inventory_stats(catalog, root)
    if by == "extension":
        return stats.by_extension
    sims = stats.by_simulation
    if by == "simulation":
        return sims.sort_values(["bytes", "root", "simulation"], ascending=[False, True, True], ignore_index=True)
    types = systems(catalog, columns=["simulation_type", "directory"])
    full = [posixpath.normpath(posixpath.join(r, s)) for r, s in zip(sims["root"], sims["simulation"], strict=True)]
    kind = dict(zip(types["directory"], types["simulation_type"], strict=True))
    sims = sims.assign(simulation_type=[kind.get(d) or "(unknown)" for d in full])
    grouped = sims.groupby("simulation_type", as_index=False)[["files", "bytes"]].sum()
    return grouped.sort_values(["bytes", "simulation_type"], ascending=[False, True], ignore_index=True)
