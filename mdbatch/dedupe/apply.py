"""The journaled executor: carries out planned link sets without ever changing what a path reads.

`linkplan.py` re-checks each group and splits it into verified link sets. Here, a chunk of link
sets is journaled (intents fsync'd once per chunk, and store references before that), then carried
out: store objects and read-only bits first, then every path: a last-moment stat check against the
scan, the kept copy linked to a temporary name in the same directory (and checked to be the kept
inode), and ``os.replace`` over the path. Links run on a few threads (link and rename latency
overlaps), each with its own directory descriptors, while the main thread plans and journals the
next chunk. See `journal.py` for the record format
and `recover.py` for what happens after a crash.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import secrets
import stat
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

from ..atomic import fsync_dir
from .fsops import FICLONE, ReflinkUnsupported, RootFS, copy_range, fchmod_path_checked, link_max, same_bytes, split_rel
from .journal import Journal
from .linkplan import LinkPlanner, LinkSet, Member
from .listing import TMP_PREFIX
from .model import LINK_KINDS, ApplyOptions, ApplyResult, DuplicateGroup
from .store import Ref, Store

#: Called at each step of the apply with its name; tests use it to crash at chosen moments.
Hook = Callable[[str], None]
#: One job of a link task: a link set and the (intent id, intent, member) of paths of one old inode.
LinkJob = tuple["LinkSet", list[tuple[int, dict[str, Any], Member]]]
#: Why a link set is skipped when its object exists by the time it is created (planned as absent):
#: whatever appeared is not trusted; the next run compares its bytes and reuses it.
_APPEARED = "a store object appeared under this digest after it was planned; nothing linked (a re-run checks its bytes and reuses it)"
#: Links the first (serial) chunk must make before it decides between one thread and several.
CALIBRATION_LINKS = 256


class Executor:
    """Applies link sets under one root with a journal; one instance per apply run."""

    def __init__(self, root: str, options: ApplyOptions, run_id: str, hook: Hook | None = None) -> None:
        if options.link not in LINK_KINDS:
            raise ValueError(f"link must be one of {LINK_KINDS}, got {options.link!r}")
        self.root = root
        self.options = options
        self.kind = options.link
        self.hook = hook or (lambda _step: None)
        self.result = ApplyResult(run_id, options.dry_run, options.link, options.store)
        self.store = Store.open(options.store, create=not options.dry_run, planning=options.dry_run) if options.store else None
        self.fs = RootFS(root)
        self.journal: Journal | None = None
        self.token = secrets.token_hex(4)
        self._seq = 0
        self._touched: set[tuple[int, int]] = set()
        self._linked_groups: set[tuple[str, int]] = set()
        self._main_thread = threading.get_ident()
        self._local = threading.local()
        self._fs_lock = threading.Lock()
        self._thread_fs: list[RootFS] = []
        self._slot_cache: dict[int, RootFS] = {}
        #: Links run on the threads once calibration (the first chunk, on one thread) says they help.
        self._threaded = options.threads > 1 and options.fast_link_s <= 0
        self._calibrated = self._threaded
        self.result.threads = options.threads if self._threaded else 1
        #: The journaled chunk whose links are running: (link sets, futures, reflink sources).
        self._inflight: tuple[list[LinkSet], list[Future[Any]], dict[int, int]] | None = None
        self._pool = (
            ThreadPoolExecutor(options.threads, thread_name_prefix="mdbatch-apply") if options.threads > 1 and not options.dry_run else None
        )
        self.link_max = options.link_max or link_max(root)
        self.planner = LinkPlanner(self.fs, options, self.kind, self.store, self.link_max, self.result)

    # -- driving ------------------------------------------------------------------------------

    def run(self, groups: Iterable[DuplicateGroup]) -> ApplyResult:
        """Apply every group; the journal is closed on success and recovered in place on failure."""
        started = time.perf_counter()
        try:
            if self.store is not None and not self.options.dry_run:
                self.store.lock()
            if self.kind == "reflink" and not self.options.dry_run and not self._reflink_works():
                self.result.messages.append("reflink is not supported on this filesystem; falling back to hardlinks")
                self.kind = "hardlink"
                self.result.link = "hardlink"
            self.planner = LinkPlanner(self.fs, self.options, self.kind, self.store, self.link_max, self.result)
            if not self.options.dry_run:
                header = {
                    "op": "apply",
                    "link": self.kind,
                    "store": self.store.path if self.store else None,
                    "writable": self.options.writable,
                }
                self.journal = Journal(self.root, self.result.run_id, header)
                self.result.journal = self.journal.path
            chunk: list[LinkSet] = []
            pending = 0
            for group in groups:
                self.result.groups += 1
                for ls in self.planner.plan(group):
                    chunk.append(ls)
                    pending += len(ls.actions) + 1
                if pending >= self.options.chunk_actions:
                    self._flush(chunk)
                    chunk, pending = [], 0
            self._flush(chunk)
            self.planner.note_kept_out()
            if self.journal is not None:
                self._drain()
                self.result.journal = self.journal.close("completed")
                self.journal = None
        except BaseException:
            self._abort()
            raise
        finally:
            if self._pool is not None:
                self._pool.shutdown()
            for fs in [self.fs, *self._thread_fs]:
                fs.close()
            if self.store is not None:
                self.store.unlock()
            self.result.elapsed_s = time.perf_counter() - started
        return self.result

    def _abort(self) -> None:
        """Leave a consistent tree after an exception: recover the journal in place."""
        if self._pool is not None:  # no link may still be in flight while recovery looks
            self._pool.shutdown(wait=True, cancel_futures=True)
        if self._inflight is not None:
            self._close_sources(self._inflight[2])
            self._inflight = None
        if self.journal is None:
            return
        from .recover import recover

        self.journal.abandon()
        path, self.journal = self.journal.path, None
        report = recover(path)
        self.result.journal = report.journal

    # -- journaling and acting ----------------------------------------------------------------

    def _flush(self, chunk: list[LinkSet]) -> None:
        """Journal the intents of a chunk of link sets (one fsync), then carry them out."""
        if not chunk:
            return
        if self.options.dry_run:
            for ls in chunk:
                self.planner.describe(ls)
            return
        journal = self.journal
        assert journal is not None
        refs: list[Ref] = []
        for ls in chunk:
            if ls.put is not None:
                tmp = self.store.tmp_path() if ls.put in ("copy", "reflink") else None  # type: ignore[union-attr]
                i = journal.new_id()
                rec = {"t": "put", "id": i, "set": ls.set_id, "src": ls.keeper.ref.rel, "object": ls.obj, "how": ls.put, "tmp": tmp}  # type: ignore[union-attr]
                journal.write(rec)
                ls.intents.append((i, rec))
            if ls.chmod is not None:
                path, ino, before, after, absolute = ls.chmod
                i = journal.new_id()
                rec = {"t": "chmod", "id": i, "set": ls.set_id, "path": path, "ino": ino, "before": before, "after": after, "abs": absolute}
                journal.write(rec)
                ls.intents.append((i, rec))
            target, _absolute = ls.source()
            for m in ls.actions:
                i = journal.new_id()
                self._seq += 1
                head, _name = split_rel(m.ref.rel)
                tmp = f"{head}/{TMP_PREFIX}{self.token}-{self._seq}" if head else f"{TMP_PREFIX}{self.token}-{self._seq}"
                rec = {
                    "t": "link",
                    "id": i,
                    "set": ls.set_id,
                    "path": m.ref.rel,
                    "tmp": tmp,
                    "kind": ls.kind,
                    "target": self.planner.symlink_text(ls, m) if ls.kind == "symlink" else target,
                    "target_ino": ls.target_ino,
                    "old_ino": m.st.st_ino,
                    "old_dev": m.st.st_dev,
                }
                journal.write_link(rec)
                ls.intents.append((i, rec))
            if ls.obj is not None:  # paths kept out of the store are linked among themselves: no reference
                refs.extend(Ref(ls.group.digest, os.path.join(self.root, m.ref.rel), ls.kind) for m in ls.members)
        if self.store is not None:
            self.store.add_refs(refs)
        journal.sync()
        self.hook("synced")
        self._drain()
        self._submit(chunk)

    def _submit(self, chunk: list[LinkSet]) -> None:
        """Start carrying out a journaled chunk: objects and read-only bits now, then every link on
        the worker threads while the next chunk is being planned (see `_drain`)."""
        jobs: list[LinkJob] = []
        sources: dict[int, int] = {}
        for ls in chunk:
            links = self._begin_set(ls)
            if links is None:
                continue
            # Paths sharing an old inode go to one job, in order: unlinking one moves the others' ctime.
            by_inode: dict[int, list[tuple[int, dict[str, Any], Member]]] = defaultdict(list)
            for item in links:
                by_inode[item[2].st.st_ino].append(item)
            jobs.extend((ls, items) for items in by_inode.values())
            if ls.kind == "reflink":
                sources[ls.set_id] = self._reflink_source(ls)
        if self._pool is not None and self._threaded and len(jobs) > 1:
            futures = [self._pool.submit(self._link_jobs, part, sources, slot) for slot, part in self._slots(jobs)]
            self._inflight = (chunk, futures, sources)
        else:
            try:
                done: Future[Any] = Future()
                started = time.perf_counter()
                done.set_result(self._link_jobs(jobs, sources))
                self._calibrate(sum(len(items) for _ls, items in jobs), time.perf_counter() - started)
            finally:
                self._close_sources(sources)
            self._inflight = (chunk, [done], {})

    def _drain(self) -> None:
        """Wait for the chunk in flight, record how each action ended, and make that durable."""
        if self._inflight is None:
            return
        chunk, futures, sources = self._inflight
        per_set: dict[int, list[tuple[int, Member, str | None]]] = defaultdict(list)
        try:
            for future in futures:
                for set_id, results in future.result():
                    per_set[set_id].extend(results)
        finally:
            self._inflight = None
            self._close_sources(sources)
        for ls in chunk:
            if ls.set_id in per_set:
                self._finish_set(ls, per_set[ls.set_id])
        assert self.journal is not None
        self.journal.sync()

    @staticmethod
    def _close_sources(sources: dict[int, int]) -> None:
        for fd in sources.values():
            with contextlib.suppress(OSError):
                os.close(fd)

    def _begin_set(self, ls: LinkSet) -> list[tuple[int, dict[str, Any], Member]] | None:
        """Create the store object and set the read-only bit of a set; its link jobs, or None to skip it."""
        journal = self.journal
        assert journal is not None
        records = iter(ls.intents)
        if ls.put is not None:
            i, rec = next(records)
            reason = self._put(ls, rec)
            if reason is not None:
                for j, _r in [(i, rec), *records]:
                    journal.write({"t": "skip", "id": j, "reason": reason})
                self.planner.skip(ls.group, reason, [m.ref.rel for m in ls.members])
                return None
            journal.done(i)
            self.result.objects_created += 1
            if ls.put == "link" and ls.keeper is not None:  # a new name: the kept inode's ctime moved
                self._touched.add((ls.keeper.st.st_dev, ls.keeper.st.st_ino))
            self.hook("put")
        if ls.chmod is not None:
            i, _rec = next(records)
            if not self._chmod(ls):
                for j, _r in [(i, _rec), *records]:
                    journal.write({"t": "skip", "id": j, "reason": "kept copy changed"})
                self.planner.skip(ls.group, "kept copy changed before linking", [ls.chmod[0]])
                return None
            journal.done(i)
            if ls.keeper is not None:
                self._touched.add((ls.keeper.st.st_dev, ls.keeper.st.st_ino))
            self.hook("chmod")
        return [(i, rec, m) for (i, rec), m in zip(records, ls.actions, strict=True)]

    def _calibrate(self, links: int, seconds: float) -> None:
        """After the first serial chunk of at least CALIBRATION_LINKS links (or half a chunk), choose
        threads only if a link took longer than `fast_link_s`: threads overlap slow link and rename
        calls (ext4 with discard: ~90 µs a link), but where a link takes ~20 µs (tmpfs) the threads
        mostly contend for the GIL and one thread links faster (measured: 25k vs 15k links/s)."""
        if self._pool is None or self._calibrated or links < max(1, min(CALIBRATION_LINKS, self.options.chunk_actions // 2)):
            return
        self._calibrated = True
        per_link = seconds / links
        self._threaded = per_link > self.options.fast_link_s
        self.result.threads = self.options.threads if self._threaded else 1
        self.result.link_s_one_thread = per_link

    def _slots(self, jobs: list[LinkJob]) -> list[tuple[int | None, list[LinkJob]]]:
        """Split a chunk's jobs into a few tasks per thread by directory: slot k always gets the same
        directories, and its own descriptor cache, so across chunks a directory is opened once, not
        once per chunk per thread (a group spans thousands of directories; interleaved slices made
        every thread cycle through all of them and evict each before its next use). A slot holding
        far more than its share (many duplicates in a few directories) is cut into pieces that run
        on the threads' own caches instead. Returns (slot or None, jobs) per task."""
        n = 4 * self.options.threads
        parts: list[list[LinkJob]] = [[] for _ in range(n)]
        for job in jobs:
            parts[hash(split_rel(job[1][0][2].ref.rel)[0]) % n].append(job)
        share = max(1, -(-len(jobs) // n))
        tasks: list[tuple[int | None, list[LinkJob]]] = []
        for slot, part in enumerate(parts):
            if len(part) <= 2 * share:
                if part:
                    tasks.append((slot, part))
            else:
                tasks.extend((None, part[k : k + share]) for k in range(0, len(part), share))
        return tasks

    def _slot_fs(self, slot: int) -> RootFS:
        """The descriptor cache of a slot: used by one task at a time (a chunk's tasks have distinct
        slots, and a chunk is drained before the next is submitted)."""
        with self._fs_lock:
            fs = self._slot_cache.get(slot)
            if fs is None:
                fs = RootFS(self.root, cache_size=max(16, self.fs.cache_size // (4 * self.options.threads)))
                self._slot_cache[slot] = fs
                self._thread_fs.append(fs)
        return fs

    def _link_jobs(
        self, jobs: list[LinkJob], sources: dict[int, int], slot: int | None = None
    ) -> list[tuple[int, list[tuple[int, Member, str | None]]]]:
        """Link the paths of some jobs (one job: the paths of one old inode, in order); runs on a worker
        thread with the directory descriptors of its slot (or its own). Returns (set id, [(intent id,
        member, reason)])."""
        fs = self._fs() if slot is None else self._slot_fs(slot)
        keepers: dict[int, tuple[int, str] | str | None] = {}
        out: list[tuple[int, list[tuple[int, Member, str | None]]]] = []
        for ls, items in jobs:
            if ls.set_id not in keepers:
                # The kept copy's directory, resolved once (None: links come from a store object).
                try:
                    keepers[ls.set_id] = (
                        fs.at(ls.keeper.ref.rel) if ls.kind == "hardlink" and ls.obj is None and ls.keeper is not None else None
                    )
                except OSError as exc:
                    keepers[ls.set_id] = f"link failed: {exc.strerror or exc}"
            keeper_at = keepers[ls.set_id]
            results: list[tuple[int, Member, str | None]] = []
            touched = False
            for i, rec, m in items:
                reason = (
                    keeper_at
                    if isinstance(keeper_at, str)
                    else self._link_one(fs, ls, m, rec, sources.get(ls.set_id, -1), touched, keeper_at)
                )
                touched = touched or reason is None
                results.append((i, m, reason))
                if reason is None:
                    self.hook("replaced")
            out.append((ls.set_id, results))
        return out

    def _finish_set(self, ls: LinkSet, results: list[tuple[int, Member, str | None]]) -> None:
        journal = self.journal
        assert journal is not None
        linked = 0
        freed: Counter[int] = Counter()
        for i, m, reason in sorted(results, key=lambda r: r[0]):
            if reason is None:
                journal.done(i)
                linked += 1
                freed[m.st.st_ino] += 1
                self._touched.add((m.st.st_dev, m.st.st_ino))
            else:
                journal.write({"t": "skip", "id": i, "reason": reason})
                if reason.startswith("changed"):
                    self.result.changed.append(m.ref.rel)
                self.planner.skip(ls.group, reason, [m.ref.rel])
        if linked == 0 and ls.chmod is not None:
            self._restore_chmod(ls)
        self.result.links += linked
        self.result.link_sets += 1 if linked else 0
        if linked and (ls.group.digest, ls.group.size) not in self._linked_groups:
            self._linked_groups.add((ls.group.digest, ls.group.size))
            self.result.groups_linked += 1
        nlinks = {m.st.st_ino: m.st.st_nlink for m in ls.actions}
        self.result.bytes_reclaimed += sum(ls.group.size for ino, n in freed.items() if n >= nlinks[ino])

    def _fs(self) -> RootFS:
        """This thread's directory descriptors (never shared: an evicted descriptor could be reused)."""
        if threading.get_ident() == self._main_thread:
            return self.fs
        fs: RootFS | None = getattr(self._local, "fs", None)
        if fs is None:
            fs = RootFS(self.root, cache_size=max(16, self.fs.cache_size // max(1, self.options.threads)))
            self._local.fs = fs
            with self._fs_lock:
                self._thread_fs.append(fs)
        return fs

    def _link_one(
        self, fs: RootFS, ls: LinkSet, m: Member, rec: dict[str, Any], src_fd: int, touched: bool, keeper_at: tuple[int, str] | None
    ) -> str | None:
        """Replace one path by a link; None on success, else why it was left alone."""
        try:
            head, name = split_rel(m.ref.rel)
            dfd = fs.dirfd(head)
            st = os.stat(name, dir_fd=dfd, follow_symlinks=False)
        except OSError:
            return "changed since the scan (vanished)"
        touched = touched or (m.st.st_dev, m.st.st_ino) in self._touched
        if not (
            stat.S_ISREG(st.st_mode)
            and st.st_ino == m.st.st_ino
            and st.st_size == m.st.st_size
            and st.st_mtime_ns == m.st.st_mtime_ns
            and (touched or st.st_ctime_ns == m.st.st_ctime_ns)
        ):
            return "changed since the scan"
        tmp = split_rel(rec["tmp"])[1]
        try:
            if ls.kind == "hardlink":
                if keeper_at is not None:
                    os.link(keeper_at[1], tmp, src_dir_fd=keeper_at[0], dst_dir_fd=dfd, follow_symlinks=False)
                else:
                    os.link(ls.obj, tmp, dst_dir_fd=dfd, follow_symlinks=False)  # type: ignore[arg-type]
                t = os.stat(tmp, dir_fd=dfd, follow_symlinks=False)
                if t.st_ino != ls.target_ino or t.st_size != ls.group.size or t.st_mtime_ns != ls.target_mtime_ns:
                    os.unlink(tmp, dir_fd=dfd)
                    return "kept copy changed before linking"
            elif ls.kind == "symlink":
                os.symlink(rec["target"], tmp, dir_fd=dfd)
            else:
                fs.reflink(src_fd, rec["tmp"], m.st)
            self.hook("tmp")
            os.replace(tmp, name, src_dir_fd=dfd, dst_dir_fd=dfd)
        except OSError as exc:
            with contextlib.suppress(OSError):
                os.unlink(tmp, dir_fd=dfd)
            return f"link failed: {exc.strerror or exc}"
        return None

    def _put(self, ls: LinkSet, rec: dict[str, Any]) -> str | None:
        """Create the store object of a link set from its kept copy; None on success, else why not."""
        assert self.store is not None and ls.keeper is not None and ls.obj is not None
        obj = self.store.ensure_shard(ls.group.digest)
        if ls.put == "link":
            try:
                dfd, name = self.fs.at(ls.keeper.ref.rel)
                os.link(name, obj, src_dir_fd=dfd, follow_symlinks=False)
                st = os.lstat(obj)
            except FileExistsError:
                return _APPEARED
            except OSError as exc:
                return f"store object not created: {exc.strerror or exc}"
            if st.st_ino != ls.keeper.st.st_ino or st.st_mtime_ns != ls.keeper.st.st_mtime_ns:
                os.unlink(obj)
                return "kept copy changed before it was stored"
            return None
        tmp = rec["tmp"]
        try:
            src = self.fs.open_read(ls.keeper.ref.rel)
            try:
                if not ls.keeper.ref.same_stat(os.fstat(src)):
                    return "kept copy changed before it was stored"
                fd = os.open(tmp, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
                try:
                    if ls.put == "reflink":
                        fcntl.ioctl(fd, FICLONE, src)
                    else:
                        copy_range(src, fd, ls.group.size)
                    os.fsync(fd)  # the copy's bytes are on disk before any path points at them
                    if not same_bytes(src, fd, ls.group.size):
                        raise OSError(f"the copy in the store does not read back identical ({tmp})")
                    reason = self._take_owner(fd, ls.keeper.st) if ls.put == "copy" else None
                    if reason is None:
                        os.fchmod(fd, 0o444 if ls.put == "reflink" else stat.S_IMODE(ls.keeper.st.st_mode) & ~0o222)
                    ost = os.fstat(fd)
                finally:
                    os.close(fd)
            finally:
                os.close(src)
            if reason is not None:
                os.unlink(tmp)
                return reason
            try:
                os.link(tmp, obj)  # never replaces an object that appeared meanwhile
            except FileExistsError:
                os.unlink(tmp)
                return _APPEARED
            os.unlink(tmp)
        except OSError as exc:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            return f"store object not created: {exc.strerror or exc}"
        ls.target_ino, ls.target_dev, ls.target_mtime_ns = ost.st_ino, ost.st_dev, ost.st_mtime_ns
        fsync_dir(os.path.dirname(obj))
        return None

    @staticmethod
    def _take_owner(fd: int, like: os.stat_result) -> str | None:
        """Give a copied object the owner of the files that will be symlinks to it (they will show
        it); None when done, else why not."""
        try:
            os.fchown(fd, like.st_uid, like.st_gid)
        except PermissionError:
            return "cannot give the store object the owner of these files (run as their owner); nothing linked"
        return None

    def _chmod(self, ls: LinkSet) -> bool:
        assert ls.chmod is not None
        return self._set_mode(ls, ls.chmod[3])

    def _restore_chmod(self, ls: LinkSet) -> None:
        assert ls.chmod is not None
        self._set_mode(ls, ls.chmod[2])

    def _set_mode(self, ls: LinkSet, mode: int) -> bool:
        """Set the mode of the set's kept file (or store object) if it is still the recorded inode."""
        assert ls.chmod is not None
        path, ino, _before, _after, absolute = ls.chmod
        try:
            return fchmod_path_checked(path, ino, mode) if absolute else self.fs.fchmod_checked(path, ino, mode)
        except OSError:
            return False

    def _reflink_source(self, ls: LinkSet) -> int:
        path, absolute = ls.source()
        return os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC) if absolute else self.fs.open_read(path)

    def _reflink_works(self) -> bool:
        """Probe FICLONE once in the journal directory (on the root's filesystem)."""
        from .journal import journal_dir

        d = journal_dir(self.root)
        os.makedirs(d, exist_ok=True)
        src_path = os.path.join(d, f".probe-{self.token}-src")
        dst_rel = os.path.relpath(os.path.join(d, f".probe-{self.token}-dst"), self.root)
        try:
            with open(src_path, "wb") as handle:
                handle.write(b"mdbatch reflink probe\n")
            src = os.open(src_path, os.O_RDONLY | os.O_CLOEXEC)
            try:
                self.fs.reflink(src, dst_rel, os.fstat(src))
                self.fs.unlink(dst_rel)
                return True
            except ReflinkUnsupported:
                return False
            finally:
                os.close(src)
        finally:
            try:
                os.unlink(src_path)
            except OSError:
                pass


def apply_groups(root: str, groups: Iterable[DuplicateGroup], options: ApplyOptions, run_id: str, hook: Hook | None = None) -> ApplyResult:
    """Link the duplicates of `groups` under `root` (see the module docstring); the caller holds the root lock."""
    return Executor(root, options, run_id, hook).run(groups)
