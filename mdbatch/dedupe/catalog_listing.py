"""Stage 0 from the catalog: the files an audit recorded, instead of listing the tree again.

An audit's inventory (`MDBATCH_FILES`) holds every file's size, stat and xxh3-128. `dedupe --db`
takes the listing from there for the simulations the catalog knows, and only re-stats the files
whose size is shared (the candidates): a file whose stat still matches keeps its recorded digest
and is not read; one that changed is hashed like a new file; one that vanished drops out.
Simulations the discovery walk finds but the catalog does not know (new since the audit) are
listed by walking them. Files added to an audited simulation after its audit are not seen (say so).
"""

from __future__ import annotations

import os
import stat
from array import array
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from ..paths import relative_to_root
from .digests import InventoryDigests
from .listing import ListingBatch
from .model import FileRef

if TYPE_CHECKING:
    from ..catalog import CatalogBackend

_ROWS = ("simulation", "path", "path_raw", "size", "mtime_ns", "ctime_ns", "inode", "device", "xxh3_128")
#: (path, size, mtime_ns, ctime_ns, inode, device): what the audit recorded of one file.
Row = tuple[str, int, int, int, int, int]


@dataclass(slots=True)
class CatalogListing:
    """What the catalog recorded of a root: per simulation its status and files, and their digests."""

    statuses: dict[str, str]
    files: dict[str, list[Row]]
    digests: InventoryDigests
    used: int = 0  # simulations listed from the catalog
    walked: int = 0  # simulations listed by walking them (not in the catalog)
    restatted: int = 0
    changed: int = 0
    vanished: list[str] = field(default_factory=list)

    @classmethod
    def load(cls, catalog: CatalogBackend, root: str) -> CatalogListing:
        """The present simulations of `root` and their inventory (empty when none was recorded)."""
        from ..catalog import schema
        from ..catalog.queries import file_inventory

        statuses: dict[str, str] = {}
        if schema.SIMULATIONS.name in catalog.tables():
            for chunk in catalog.iter_rows(schema.SIMULATIONS.name, {"root": root, "removed_run": None}, ["simulation", "status"]):
                statuses.update(zip(chunk.column("simulation").to_pylist(), chunk.column("status").to_pylist(), strict=True))
        files: dict[str, list[Row]] = defaultdict(list)
        entries: dict[tuple[int, int], tuple[int, int, int, str]] = {}
        for chunk in file_inventory(catalog, root, _ROWS):
            cols = [chunk.column(n).to_pylist() for n in _ROWS]
            for sim, path, raw, size, mtime, ctime, ino, dev, digest in zip(*cols, strict=True):
                files[sim].append((os.fsdecode(raw) if raw is not None else path, size, mtime, ctime, ino, dev))
                if digest:
                    entries[(dev, ino)] = (size, mtime, ctime, digest)
        return cls(statuses, dict(files), InventoryDigests(entries))

    def split(self, sim_dirs: Sequence[str], root: str) -> tuple[ListingBatch, list[str]]:
        """The simulations the catalog lists (as one batch of recorded stats, not yet re-statted)
        and those to walk: not in the catalog, or recorded without a status."""
        rels: list[str] = []
        cols = (array("i"), array("q"), array("q"), array("q"), array("Q"), array("Q"))
        sims: list[str] = []
        statuses: list[str] = []
        walk: list[str] = []
        for sim_dir in sim_dirs:
            name = relative_to_root(sim_dir, root)
            rows, status = self.files.get(name), self.statuses.get(name)
            if rows is None or status is None:
                walk.append(sim_dir)
                continue
            base = os.path.relpath(sim_dir, root).replace(os.sep, "/")
            prefix = "" if base == "." else f"{base}/"
            k = len(sims)
            sims.append(base)
            statuses.append(status)
            for path, size, mtime, ctime, ino, dev in rows:
                rels.append(prefix + path)
                for col, value in zip(cols, (k, size, mtime, ctime, ino, dev), strict=True):
                    col.append(value)
        self.used, self.walked = len(sims), len(walk)
        batch = ListingBatch(-1, rels, *cols, tuple(sims), tuple(statuses), (), 0.0, recorded=True)
        return batch, walk

    def restat(self, root: str, ref: FileRef) -> FileRef | None:
        """`ref` as the file is now (its recorded stat when unchanged); None when it is gone or no
        longer a regular file (counted as vanished)."""
        self.restatted += 1
        try:
            st = os.lstat(os.path.join(root, ref.rel))
        except OSError:
            self.vanished.append(ref.rel)
            return None
        if not stat.S_ISREG(st.st_mode):
            self.vanished.append(ref.rel)
            return None
        if ref.same_stat(st):
            return ref
        self.changed += 1
        return FileRef(ref.rel, ref.simulation, ref.status, st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino, st.st_dev)
