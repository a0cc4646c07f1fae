"""Turning one duplicate group into verified link sets: the planning half of the apply.

Just before acting, every path of a group is re-stat'ed against the scan (any change skips the
whole group); the group is split into link sets whose paths may share one inode (same device; for
hardlinks and symlinks also the same owner and mode, write bits aside, since linked paths show the
kept inode's); a kept copy is chosen (the inode with most names here); and the bytes of every other
inode are compared with it, or with the store object, in full: a fast-hash match is never proof.
With a store, a digest names one object: the paths that may show it form one set (the object is
created once, or an existing one reused after a full byte comparison) and the others are linked
among themselves, as without a store.
"""

from __future__ import annotations

import os
import stat
from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from ..paths import display
from .fsops import RootFS, read_all, same_bytes, split_rel
from .model import ApplyOptions, ApplyResult, DuplicateGroup, FileRef
from .store import Store

_SMALL = 1 << 20
WRITE_BITS = 0o222


@dataclass(slots=True)
class Member:
    """A path of a group as the scan saw it (`ref`) and as it was re-stat'ed just before acting (`st`)."""

    ref: FileRef
    st: os.stat_result


@dataclass(slots=True)
class LinkSet:
    """Paths of one group that will share one inode (or point to one object)."""

    set_id: int
    group: DuplicateGroup
    kind: str
    keeper: Member | None  # the campaign copy kept (None: an existing store object is kept)
    actions: list[Member]  # paths to replace by links
    members: list[Member] = field(default_factory=list)  # every path of the set (store references)
    target_ino: int = 0
    target_dev: int = 0
    target_mtime_ns: int = 0
    obj: str | None = None  # absolute store object path
    put: str | None = None  # how to create the object: "link" | "copy" | "reflink" (None: exists)
    chmod: tuple[str, int, int, int, bool] | None = None  # (path, ino, before, after, absolute)
    intents: list[tuple[int, dict[str, Any]]] = field(default_factory=list)

    def source(self) -> tuple[str, bool]:
        """(path, absolute?) of the bytes links point to: the store object, else the kept copy."""
        if self.obj is not None:
            return self.obj, True
        assert self.keeper is not None
        return self.keeper.ref.rel, False


class LinkPlanner:
    """Plans (and, for a dry run, describes) the link sets of each group; never modifies anything."""

    def __init__(self, fs: RootFS, options: ApplyOptions, kind: str, store: Store | None, link_max: int, result: ApplyResult) -> None:
        self.fs = fs
        self.options = options
        self.kind = kind
        self.store = store
        self.link_max = link_max
        self.result = result
        self._sets = 0
        #: Digests whose object a link set of this run creates.
        self._storing: set[str] = set()
        self.kept_out_paths = 0
        self.kept_out_groups = 0

    def _eligible(self, ref: FileRef) -> bool:
        statuses = self.options.statuses
        return statuses is None or ref.status in statuses

    def skip(self, group: DuplicateGroup, reason: str, paths: Iterable[str]) -> None:
        self.result.skipped.append({"digest": group.digest, "size": group.size, "reason": reason, "paths": [display(p) for p in paths]})

    def plan(self, group: DuplicateGroup) -> list[LinkSet]:
        """Re-check a group against the scan and split it into verified link sets."""
        eligible = [m for m in group.members if self._eligible(m)]
        self.result.ineligible_paths += len(group.members) - len(eligible)
        if len(eligible) < 2:
            return []
        fresh, changed, differs = self._recheck(group, eligible)
        if changed:
            self.result.changed.extend(changed)
            self.skip(group, "changed since the scan", changed)
            return []
        if differs:
            self.skip(group, "content differs from the kept copy (hash collision or changed in place); nothing linked", differs)
            return []
        parts: dict[tuple[int, ...], list[Member]] = defaultdict(list)
        for m in fresh:
            parts[self._partition(m.st)].append(m)
        if self.store is not None:
            return self._plan_store_group(group, list(parts.values()))
        sets: list[LinkSet] = []
        for members in parts.values():
            if len(members) >= 2:
                sets.extend(self._plan_set(group, members))
        return sets

    def _recheck(self, group: DuplicateGroup, refs: list[FileRef]) -> tuple[list[Member], list[str], list[str]]:
        """Re-stat every path (through its open descriptor) and compare every inode's bytes with the
        first path's: equality is transitive, so every member then equals whichever copy is kept.

        Returns (members, paths changed since the scan, paths whose bytes differ).
        """
        fresh: list[Member] = []
        changed: list[str] = []
        differs: list[str] = []
        seen: set[int] = set()
        ref_fd = -1
        ref_bytes: bytes | None = None
        size = group.size
        try:
            for ref in refs:
                try:
                    fd = self.fs.open_read(ref.rel)
                except OSError:
                    changed.append(ref.rel)
                    continue
                keep_open = False
                try:
                    st = os.fstat(fd)
                    if not stat.S_ISREG(st.st_mode) or not ref.same_stat(st):
                        changed.append(ref.rel)
                        continue
                    fresh.append(Member(ref, st))
                    if changed or differs or st.st_ino in seen:
                        continue
                    seen.add(st.st_ino)
                    if len(seen) == 1:  # the reference copy
                        if size <= _SMALL:
                            ref_bytes = read_all(fd, size)
                            if len(ref_bytes) != size:
                                changed.append(ref.rel)
                        else:
                            ref_fd, keep_open = fd, True
                    elif not (read_all(fd, size) == ref_bytes if ref_bytes is not None else same_bytes(ref_fd, fd, size)):
                        differs.append(ref.rel)
                finally:
                    if not keep_open:
                        os.close(fd)
        finally:
            if ref_fd >= 0:
                os.close(ref_fd)
        return fresh, changed, differs

    def _partition(self, st: os.stat_result) -> tuple[int, ...]:
        if self.kind == "reflink":
            return (st.st_dev,)
        mask = 0o7777 if self.options.writable else 0o7777 & ~WRITE_BITS
        return (st.st_dev, st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode) & mask)

    def _plan_set(self, group: DuplicateGroup, members: list[Member]) -> list[LinkSet]:
        per_inode = Counter(m.st.st_ino for m in members)
        # Keep the inode that already has the most names here (fewest renames), then the first path.
        best = max(range(len(members)), key=lambda k: (per_inode[members[k].st.st_ino], members[k].st.st_nlink, -k))
        keeper = members[best]
        actions = [m for m in members if m.st.st_ino != keeper.st.st_ino]
        if not actions:
            return []
        sets: list[LinkSet] = []
        kept, pending = keeper, actions
        # One inode holds at most link_max names: when the kept copy is full, the next copy stays
        # as it is and becomes the kept copy of the paths after it.
        room = self.link_max - kept.st.st_nlink if self.kind == "hardlink" else len(pending)
        while pending:
            if room <= 0:
                kept, pending = pending[0], pending[1:]
                pending = [m for m in pending if m.st.st_ino != kept.st.st_ino]
                room = self.link_max - kept.st.st_nlink
                continue
            batch, pending = pending[:room], pending[room:]
            ls = LinkSet(
                self._new_set(),
                group,
                self.kind,
                kept,
                batch,
                members=[kept, *batch],
                target_ino=kept.st.st_ino,
                target_dev=kept.st.st_dev,
                target_mtime_ns=kept.st.st_mtime_ns,
            )
            self._plan_chmod(ls, kept.ref.rel, kept.st, absolute=False)
            sets.append(ls)
            room = 0
        return sets

    @staticmethod
    def _shows(st: os.stat_result) -> tuple[int, int, int]:
        """Owner, group and mode (write bits aside) that a path linked to the inode `st` shows."""
        return (st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode) & ~WRITE_BITS)

    def _plan_store_group(self, group: DuplicateGroup, parts: list[list[Member]]) -> list[LinkSet]:
        """The group's one store link set, and the link sets of paths that cannot share the object.

        A digest names one object, so every path that may show it (on its device for hardlinks and
        reflinks; with its owner and mode for hardlinks and symlinks) goes into a single set: one
        object, created once. An object already in the store is used only if its bytes are these
        (compared in full; its name proves nothing). Paths whose owner or mode differ from the
        object's are linked among themselves, as without a store, and counted as kept out.
        """
        assert self.store is not None
        if self.kind in ("hardlink", "reflink"):
            device = self.store.device
            away = [m.ref.rel for ms in parts for m in ms if m.st.st_dev != device]
            if away:
                self.skip(
                    group,
                    f"the store is on another device than these files: use --link symlink to store them ({self.kind} cannot cross devices)",
                    away,
                )
            parts = [ms for ms in parts if ms[0].st.st_dev == device]
        if not parts:
            return []
        obj = self.store.object_path(group.digest)
        every = [m.ref.rel for ms in parts for m in ms]
        try:
            ost: os.stat_result | None = os.lstat(obj)
        except FileNotFoundError:
            ost = None
        if ost is not None:
            if not stat.S_ISREG(ost.st_mode) or ost.st_size != group.size:
                self.skip(group, "the store holds a different file under this digest (see `mdbatch store verify`); nothing linked", every)
                return []
            # Every member has the bytes of parts[0][0] (checked in _recheck): one comparison suffices.
            if not self._verify_object(group, obj, ost, parts[0][0], every):
                return []
            shows = self._shows(ost)
        elif group.digest in self._storing:
            self.skip(group, "another group of this run stores other bytes under this digest (hash collision?); nothing linked", every)
            return []
        else:  # the object takes the owner and mode of the largest set (of equal ones, the most readable)
            shows = self._shows(max(parts, key=lambda ms: (len(ms), bin(stat.S_IMODE(ms[0].st.st_mode) & 0o444).count("1")))[0].st)
        shared = [m for ms in parts if self.kind == "reflink" or self._shows(ms[0].st) == shows for m in ms]
        apart = [ms for ms in parts if not (self.kind == "reflink" or self._shows(ms[0].st) == shows)]
        sets = self._plan_store_set(group, shared, obj, ost) if shared else []
        if apart:
            self.kept_out_paths += sum(len(ms) for ms in apart)
            self.kept_out_groups += 1
            for ms in apart:
                if len(ms) >= 2:
                    sets.extend(self._plan_set(group, ms))
        return sets

    def _plan_store_set(self, group: DuplicateGroup, members: list[Member], obj: str, ost: os.stat_result | None) -> list[LinkSet]:
        """The link set of the paths that will share the store object `obj` (`ost`: its lstat if it exists)."""
        assert self.store is not None
        device = self.store.device
        per_inode = Counter(m.st.st_ino for m in members)
        # Keep a copy on the store's device (it can become the object), then the inode with most names here.
        best = max(
            range(len(members)), key=lambda k: (members[k].st.st_dev == device, per_inode[members[k].st.st_ino], members[k].st.st_nlink, -k)
        )
        keeper = members[best]
        ls = LinkSet(self._new_set(), group, self.kind, keeper, [], members=members, obj=obj)
        if ost is not None:
            ls.target_ino, ls.target_dev, ls.target_mtime_ns = ost.st_ino, ost.st_dev, ost.st_mtime_ns
        else:
            same_dev = keeper.st.st_dev == device
            ls.put = "link" if self.kind in ("hardlink", "symlink") and same_dev else "reflink" if self.kind == "reflink" else "copy"
            if ls.put == "link":
                ls.target_ino, ls.target_dev, ls.target_mtime_ns = keeper.st.st_ino, keeper.st.st_dev, keeper.st.st_mtime_ns
            self._storing.add(group.digest)
        if self.kind == "hardlink":
            ls.actions = [m for m in members if m.st.st_ino != ls.target_ino]
        else:
            ls.actions = list(members)
        limit = self.link_max - 1 - (ost.st_nlink if ost is not None else keeper.st.st_nlink)
        if self.kind == "hardlink" and len(ls.actions) > limit:
            over = ls.actions[max(0, limit) :]
            ls.actions = ls.actions[: max(0, limit)]
            self.skip(group, f"object reached the link limit ({self.link_max}); these paths stay as they are", [m.ref.rel for m in over])
        if ls.put == "link" or ost is not None:
            target_mode = stat.S_IMODE((ost or keeper.st).st_mode)
            if target_mode & WRITE_BITS:
                ls.chmod = (
                    obj if ost is not None else keeper.ref.rel,
                    ls.target_ino,
                    target_mode,
                    target_mode & ~WRITE_BITS,
                    ost is not None,
                )
        if not ls.actions and ls.put is None:
            return []
        return [ls]

    def note_kept_out(self) -> None:
        """Say once, at the end of a run, how many paths stayed out of the store and why."""
        if self.kept_out_paths:
            paths, groups = _count(self.kept_out_paths, "path"), _count(self.kept_out_groups, "group")
            self.result.kept_out_of_store = self.kept_out_paths
            self.result.messages.append(
                f"{paths} of {groups} kept out of the store: their owner or mode differs from the "
                "store object's (a linked path would show the object's); linked among themselves where they can be"
            )

    def _plan_chmod(self, ls: LinkSet, rel: str, st: os.stat_result, absolute: bool) -> None:
        if self.options.writable or self.kind == "reflink":
            return
        mode = stat.S_IMODE(st.st_mode)
        if mode & WRITE_BITS:
            ls.chmod = (rel, st.st_ino, mode, mode & ~WRITE_BITS, absolute)

    def _new_set(self) -> int:
        self._sets += 1
        return self._sets

    def _verify_object(self, group: DuplicateGroup, obj: str, ost: os.stat_result, member: Member, paths: list[str]) -> bool:
        """Compare the bytes of the existing store object `obj` (lstat'ed as `ost`) with one member's
        (every member has those bytes); otherwise skip the group's `paths`."""
        try:
            ref_fd = os.open(obj, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK)
        except OSError as exc:
            self.skip(group, f"store object unreadable: {exc.strerror or exc}; nothing linked", paths)
            return False
        try:
            now = os.fstat(ref_fd)
            if (now.st_ino, now.st_dev, now.st_size) != (ost.st_ino, ost.st_dev, ost.st_size) or not stat.S_ISREG(now.st_mode):
                self.skip(group, "the store object changed while it was checked; nothing linked", paths)
                return False
            ref_bytes = read_all(ref_fd, group.size) if group.size <= _SMALL else None
            if not self._same(member, ref_fd, ref_bytes, group.size):
                self.skip(
                    group,
                    "content differs from the store object under this digest (corrupt object or hash collision; "
                    "see `mdbatch store verify`); nothing linked",
                    paths,
                )
                return False
        finally:
            os.close(ref_fd)
        return True

    def _same(self, m: Member, ref_fd: int, ref_bytes: bytes | None, size: int) -> bool:
        try:
            fd = self.fs.open_read(m.ref.rel)
        except OSError:
            return False
        try:
            if not m.ref.same_stat(os.fstat(fd)):
                return False
            if ref_bytes is not None:
                return read_all(fd, size) == ref_bytes
            return same_bytes(ref_fd, fd, size)
        finally:
            os.close(fd)

    def symlink_text(self, ls: LinkSet, m: Member) -> str:
        if ls.obj is not None:
            return ls.obj
        assert ls.keeper is not None
        head, _ = split_rel(m.ref.rel)
        return os.path.relpath(ls.keeper.ref.rel, head or ".")

    def describe(self, ls: LinkSet) -> None:
        """Dry run: record what would be done for a link set."""
        target, _absolute = ls.source()
        if ls.put is not None and ls.keeper is not None:
            self.result.planned.append({"action": f"store-{ls.put}", "path": display(ls.keeper.ref.rel), "to": display(target)})
        if ls.chmod is not None:
            self.result.planned.append({"action": "chmod a-w", "path": display(ls.chmod[0]), "to": oct(ls.chmod[3])})
        for m in ls.actions:
            to = self.symlink_text(ls, m) if ls.kind == "symlink" else target
            self.result.planned.append({"action": ls.kind, "path": display(m.ref.rel), "to": display(to)})
        self.result.links += len(ls.actions)
        self.result.link_sets += 1
        freed = Counter(m.st.st_ino for m in ls.actions)
        nlinks = {m.st.st_ino: m.st.st_nlink for m in ls.actions}
        self.result.bytes_reclaimed += sum(ls.group.size for ino, n in freed.items() if n >= nlinks[ino])


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}{'' if n == 1 else 's'}"
