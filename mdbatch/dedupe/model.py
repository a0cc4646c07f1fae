"""Records of the dedupe pipeline: files as the scan saw them, duplicate groups, stage statistics.

Paths are kept as ``str`` decoded with surrogateescape (exact for any byte name) and relative to
the campaign root with ``/`` separators; :func:`mdbatch.paths.display` makes them printable.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

from ..paths import display


@dataclass(frozen=True, slots=True)
class FileRef:
    """One regular file of the campaign as the listing stat'ed it (never through a symlink)."""

    rel: str
    simulation: str
    status: str
    size: int
    mtime_ns: int
    ctime_ns: int
    inode: int
    device: int

    @property
    def identity(self) -> tuple[int, int]:
        """(device, inode): paths sharing it are one file on disk."""
        return (self.device, self.inode)

    def same_stat(self, st: os.stat_result) -> bool:
        """True when `st` (an lstat) still describes the file the scan saw."""
        return (
            st.st_ino == self.inode
            and st.st_dev == self.device
            and st.st_size == self.size
            and st.st_mtime_ns == self.mtime_ns
            and st.st_ctime_ns == self.ctime_ns
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "rel": self.rel,
            "simulation": self.simulation,
            "status": self.status,
            "size": self.size,
            "mtime_ns": self.mtime_ns,
            "ctime_ns": self.ctime_ns,
            "inode": self.inode,
            "device": self.device,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> FileRef:
        return cls(
            d["rel"],
            d["simulation"],
            d["status"],
            int(d["size"]),
            int(d["mtime_ns"]),
            int(d["ctime_ns"]),
            int(d["inode"]),
            int(d["device"]),
        )


def sort_key(rel: str) -> bytes:
    """Paths sort by their exact bytes, so the order is the same for any name."""
    return rel.encode("utf-8", "surrogateescape")


@dataclass(frozen=True, slots=True)
class DuplicateGroup:
    """Non-empty files of one size and one xxh3-128 digest, two or more paths.

    Paths sharing an inode count once towards what can be reclaimed (as in the audit summary).
    """

    digest: str
    size: int
    members: tuple[FileRef, ...]

    @property
    def paths(self) -> list[str]:
        """Member paths relative to the root, sorted by bytes."""
        return [m.rel for m in self.members]

    @property
    def inodes(self) -> int:
        return len({m.identity for m in self.members})

    @property
    def reclaimable_bytes(self) -> int:
        return (self.inodes - 1) * self.size

    def to_json(self) -> dict[str, Any]:
        """The `--groups` line: digest, size and display paths relative to the root, sorted."""
        return {"digest": self.digest, "size": self.size, "paths": [display(p) for p in self.paths]}


@dataclass(slots=True)
class FindStats:
    """How the candidate set shrank stage by stage, and what could not be looked at."""

    simulations: int = 0
    files: int = 0
    bytes: int = 0
    physical_bytes: int = 0
    status: dict[str, int] = field(default_factory=dict)
    empty_or_small: int = 0
    size_candidates: int = 0
    inode_candidates: int = 0
    partial_hashed: int = 0
    partial_candidates: int = 0
    full_hashed: int = 0
    full_hashed_bytes: int = 0
    reused_digests: int = 0
    changed: list[str] = field(default_factory=list)
    unreadable: list[tuple[str, str]] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "simulations": self.simulations,
            "files": self.files,
            "bytes": self.bytes,
            "status": dict(sorted(self.status.items())),
            "stages": {
                "files": self.files,
                "below_min_size": self.empty_or_small,
                "same_size": self.size_candidates,
                "distinct_inodes": self.inode_candidates,
                "head_tail_hashed": self.partial_hashed,
                "after_head_tail": self.partial_candidates,
                "full_hashed": self.full_hashed,
                "full_hashed_bytes": self.full_hashed_bytes,
                "digests_reused": self.reused_digests,
            },
            "changed_during_scan": [display(p) for p in self.changed],
            "unreadable": [{"path": display(p), "error": e} for p, e in self.unreadable],
            "timings": {k: round(v, 3) for k, v in self.timings.items()},
        }


@dataclass(slots=True)
class FindResult:
    """Duplicate groups (largest first) and the statistics of the search."""

    root: str
    groups: list[DuplicateGroup]
    stats: FindStats

    @property
    def duplicate_files(self) -> int:
        return sum(len(g.members) for g in self.groups)

    @property
    def reclaimable_bytes(self) -> int:
        return sum(g.reclaimable_bytes for g in self.groups)

    @property
    def dedup_ratio(self) -> float:
        """Bytes on disk now / bytes on disk once every group is one inode (1.0: nothing to gain)."""
        physical = self.stats.physical_bytes
        after = physical - self.reclaimable_bytes
        return round(physical / after, 4) if after > 0 else 1.0


LINK_KINDS = ("hardlink", "reflink", "symlink")
DEFAULT_STATUSES = frozenset({"completed"})


@dataclass(frozen=True, slots=True)
class ApplyOptions:
    """How to link: kind, optional store, read-only or not, which simulation statuses may change."""

    link: str = "hardlink"
    store: str | None = None
    writable: bool = False
    #: Statuses whose simulations may be modified; None: every status.
    statuses: frozenset[str] | None = DEFAULT_STATUSES
    dry_run: bool = False
    #: Actions journaled (one fsync) before they are carried out.
    chunk_actions: int = 2048
    #: Most names one inode may get (LINK_MAX); None: ask the filesystem.
    link_max: int | None = None
    #: Threads carrying out the links of a chunk (link/rename latency overlaps; 1: strictly serial).
    threads: int = 4
    #: Links run on one thread until a chunk shows a link takes longer than this (seconds); only
    #: then on `threads` threads. 0: use the threads from the start.
    fast_link_s: float = 50e-6


@dataclass(slots=True)
class ApplyResult:
    """What an apply did (or, for a dry run, would do)."""

    run_id: str
    dry_run: bool
    link: str
    store: str | None
    journal: str | None = None
    links: int = 0
    bytes_reclaimed: int = 0
    groups: int = 0
    groups_linked: int = 0
    link_sets: int = 0
    ineligible_paths: int = 0
    objects_created: int = 0
    #: Paths of store groups that could not share the object (another owner or mode than the object's).
    kept_out_of_store: int = 0
    skipped: list[dict[str, Any]] = field(default_factory=list)
    changed: list[str] = field(default_factory=list)
    messages: list[str] = field(default_factory=list)
    planned: list[dict[str, str]] = field(default_factory=list)
    elapsed_s: float = 0.0
    #: Threads the links ran on, and the per-link time on one thread that chose them (calibration).
    threads: int = 1
    link_s_one_thread: float | None = None

    @property
    def links_per_s(self) -> float | None:
        return round(self.links / self.elapsed_s, 1) if self.elapsed_s > 0 and self.links else None

    def to_dict(self) -> dict[str, Any]:
        return {
            "run_id": self.run_id,
            "dry_run": self.dry_run,
            "link": self.link,
            "store": self.store,
            "journal": self.journal,
            "links": self.links,
            "bytes_reclaimed": self.bytes_reclaimed,
            "groups": self.groups,
            "groups_linked": self.groups_linked,
            "link_sets": self.link_sets,
            "ineligible_paths": self.ineligible_paths,
            "objects_created": self.objects_created,
            "kept_out_of_store": self.kept_out_of_store,
            "skipped_groups": len(self.skipped),
            "skipped": self.skipped,
            "changed_since_scan": [display(p) for p in self.changed],
            "messages": self.messages,
            "elapsed_s": round(self.elapsed_s, 3),
            "links_per_s": self.links_per_s,
            "threads": self.threads,
            "link_us_one_thread": None if self.link_s_one_thread is None else round(self.link_s_one_thread * 1e6, 1),
        }
