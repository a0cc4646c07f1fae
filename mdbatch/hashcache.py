"""The hash cache: what the catalog's file inventory vouches for, and the one place that trusts it.

Each inventory row (MDBATCH_FILES) records a file's device, inode, size, mtime_ns and ctime_ns,
its digests (the algorithms are the column names, xxh3_128 and sha256), its `facts` and the cache
version. While every stat field of the file still matches, the row is the file: `lookup` answers
for it without reading a byte, and a scan reads only what `lookup` cannot answer (then records
the new row). Facts are JSON: the parquet footer facts of a registered analysis
(`{"rows": n, "columns": [...]}`), or the bytes of a small identity or registry file
(`{"bytes": base64}`) that every scan needs. Pure: no Dask, no database.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
from collections import defaultdict
from dataclasses import dataclass
from typing import NamedTuple

import pyarrow as pa

from .hashing import FileDigest

#: Version of what the hash cache stores; entries of other versions are ignored (read again).
#: Version 2: the bytes of small identity and registry files are kept in `facts`.
HASH_CACHE_VERSION = 2
#: Identity and registry files up to this size keep their bytes in the cache (as facts), so an
#: unchanged re-audit never reads them again.
CACHED_BYTES_MAX = 64 * 1024
#: The inventory columns the cache and change detection read, in CacheEntry order after the path.
INVENTORY_COLUMNS = [
    "simulation",
    "path",
    "device",
    "inode",
    "size",
    "mtime_ns",
    "ctime_ns",
    "xxh3_128",
    "sha256",
    "facts",
    "cache_version",
]


class CacheEntry(NamedTuple):
    """A file as the inventory recorded it: the one stat record the cache and change detection share."""

    device: int
    inode: int
    size: int
    mtime_ns: int
    ctime_ns: int
    xxh3_128: str | None
    sha256: str | None = None
    facts: str | None = None

    def matches(self, st: os.stat_result) -> bool:
        """Whether `st` is still this file: same device, inode, size, mtime and ctime (ctime moves on
        any write, even one that restores size and mtime)."""
        return (
            st.st_ino == self.inode
            and st.st_dev == self.device
            and st.st_size == self.size
            and st.st_mtime_ns == self.mtime_ns
            and st.st_ctime_ns == self.ctime_ns
        )


@dataclass(frozen=True, slots=True)
class Hit:
    """The cache's answer for an unchanged file: its stat and digests (with its bytes, when asked),
    and its facts (with the parquet footer parsed, when asked)."""

    digest: FileDigest
    facts: str | None
    footer: tuple[int, tuple[str, ...]] | None = None


def lookup(path: str, entry: CacheEntry | None, *, sha256: bool = False, footer: bool = False, content: bool = False) -> Hit | None:
    """Look `path` up in the cache (None: it must be read). The entry must hold what is asked for
    (the sha256, the footer facts, the file's bytes) and the file's lstat must match it on every field."""
    if entry is None or entry.xxh3_128 is None or (sha256 and entry.sha256 is None) or ((footer or content) and not entry.facts):
        return None
    try:
        st = os.lstat(path)
    except OSError:
        return None
    if not entry.matches(st):
        return None
    parsed: tuple[int, tuple[str, ...]] | None = None
    data: bytes | None = None
    try:
        if footer:
            doc = json.loads(entry.facts or "")
            parsed = (int(doc["rows"]), tuple(str(c) for c in doc["columns"]))
        if content:
            data = base64.b64decode(json.loads(entry.facts or "")["bytes"], validate=True)
            if len(data) != st.st_size:
                return None
    except (ValueError, KeyError, TypeError, binascii.Error):
        return None
    digest = FileDigest(st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino, st.st_dev, entry.xxh3_128, entry.sha256, data, False)
    return Hit(digest, entry.facts, parsed)


def content_facts(data: bytes | None) -> str | None:
    """Facts keeping the bytes of a small identity or registry file, for the next `lookup(content=True)`."""
    if data is None or len(data) > CACHED_BYTES_MAX:
        return None
    return json.dumps({"bytes": base64.b64encode(data).decode("ascii")})


def footer_facts(rows: int, columns: tuple[str, ...]) -> str:
    """Facts keeping a parquet footer's row count and columns, for the next `lookup(footer=True)`."""
    return json.dumps({"rows": rows, "columns": list(columns)}, separators=(",", ":"))


def entries(
    inventory: pa.Table, use_cache: bool = True
) -> tuple[dict[str, dict[str, CacheEntry]], dict[str, dict[str, CacheEntry]], set[str]]:
    """From recorded inventory rows (INVENTORY_COLUMNS): (every entry, per simulation and path, for
    change detection; the entries the cache may answer from; simulations with rows of another cache
    version, whose rows must be rewritten)."""
    recorded: dict[str, dict[str, CacheEntry]] = defaultdict(dict)
    trusted: dict[str, dict[str, CacheEntry]] = defaultdict(dict)
    stale: set[str] = set()
    cols = inventory.select(INVENTORY_COLUMNS).to_pydict()
    for sim, path, dev, ino, size, mtime, ctime, digest, sha, facts, version in zip(*cols.values(), strict=True):
        entry = CacheEntry(dev, ino, size, mtime, ctime, digest, sha, facts)
        recorded[sim][path] = entry
        if version != HASH_CACHE_VERSION:
            stale.add(sim)
        elif use_cache and digest is not None:
            trusted[sim][path] = entry
    return dict(recorded), dict(trusted), stale
