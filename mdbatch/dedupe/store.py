"""A content-addressed store: one read-only copy per distinct content, and who references it.

Layout::

    STORE/store.json                  {"version": 1, "algorithm": "xxh3-128"}
    STORE/objects/<2 hex>/<digest>    one object per content, mode 0444
    STORE/refs.jsonl                  one line per (object, campaign path, link kind), append-only
    STORE/.mdbatch-journal/           journals of `gc` deletions
    STORE/lock                        held by an apply into the store and by gc

A reference is *live* while the campaign path still is what the apply made it: the same inode as
the object (hardlink), a symlink to the object (symlink), or a regular file of the object's size
(reflink: clones own their extents, so deleting a reflinked object never loses data). An object
with no live reference is an orphan; `gc` deletes orphans, re-checking each one just before.

Lineage (docs/lineage.md): `gc` never deletes an orphan that a live registry entry depends on, that
is, an object one of whose recorded paths is `<simulation>/.analysis/<file>` where `<file>` is a
file of an analysis or artifact U that the simulation's registry (as on disk now) lists, and some
entry D of that registry names U in `extras.depends_on` and predates U's current bytes (D is stale
with respect to U, or has no registry time). The campaign path was rewritten (U was redone) after
D was made, so the object may be the only copy of the bytes D was made from. Once D is redone, the
object goes. An object whose simulation registry cannot be read is kept (its lineage is unknown).
"""

from __future__ import annotations

import json
import os
import secrets
import stat
import time
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from filelock import FileLock, Timeout

from ..atomic import atomic_write_bytes, fsync_dir
from ..errors import MdbatchError, RegistryCorruptError, UsageError
from ..hashing import digest_file
from ..lineage import SECTIONS, depended_files, entry_files
from ..paths import display
from ..registry.format import ANALYSIS_DIRNAME, REGISTRY_FILENAME, parse_registry, read_registry_file
from .journal import Journal, append_and_close, pending_journals

STORE_VERSION = 1
ALGORITHM = "xxh3-128"
_DIGEST_CHARS = frozenset("0123456789abcdef")


class StoreBusyError(MdbatchError, RuntimeError):
    """Another mdbatch process holds the store lock."""


@dataclass(frozen=True, slots=True)
class Ref:
    """One campaign path that was linked to an object."""

    digest: str
    path: str
    kind: str
    at: str = ""

    def to_json(self) -> str:
        """One refs.jsonl line (lone surrogates of undecodable names kept as \\udcXX escapes)."""
        at = self.at or datetime.now(UTC).isoformat()
        return json.dumps({"digest": self.digest, "path": self.path, "kind": self.kind, "at": at}, ensure_ascii=True, separators=(",", ":"))


@dataclass(slots=True)
class GcResult:
    """What gc found (and deleted unless dry run)."""

    dry_run: bool
    objects: int = 0
    orphans: list[dict[str, Any]] = field(default_factory=list)
    deleted: int = 0
    freed_bytes: int = 0
    kept_after_recheck: int = 0
    #: Orphans kept because a live registry entry depends on them: digest, object, size, and `why`.
    kept_by_lineage: list[dict[str, Any]] = field(default_factory=list)
    refs_before: int = 0
    refs_after: int = 0
    journal: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "dry_run": self.dry_run,
            "objects": self.objects,
            "orphans": len(self.orphans),
            "orphan_bytes": sum(o["size"] for o in self.orphans),
            "deleted": self.deleted,
            "freed_bytes": self.freed_bytes,
            "kept_after_recheck": self.kept_after_recheck,
            "refs_before": self.refs_before,
            "refs_after": self.refs_after,
            "journal": self.journal,
            "orphan_objects": self.orphans,
            "kept_by_lineage": len(self.kept_by_lineage),
            "kept_objects": self.kept_by_lineage,
        }


class Store:
    """A content-addressed store directory (see the module docstring for its layout)."""

    def __init__(self, path: str) -> None:
        self.path = os.path.abspath(path)
        self.objects_dir = os.path.join(self.path, "objects")
        self.refs_path = os.path.join(self.path, "refs.jsonl")
        self._lock: FileLock | None = None

    # -- layout -------------------------------------------------------------------------------

    @classmethod
    def open(cls, path: str, create: bool = False, planning: bool = False) -> Store:
        """Open a store; with `create`, make its layout first if it does not exist. With `planning`
        (a dry run) a store that does not exist yet is described as empty and nothing is created."""
        store = cls(path)
        meta = os.path.join(store.path, "store.json")
        if not os.path.exists(meta):
            if planning and not os.path.exists(store.path):
                return store
            if not create:
                raise UsageError(f"{store.path} is not an mdbatch store (no store.json)")
            os.makedirs(store.objects_dir, exist_ok=True)
            atomic_write_bytes(meta, (json.dumps({"version": STORE_VERSION, "algorithm": ALGORITHM}) + "\n").encode())
            fsync_dir(store.path)
        try:
            with open(meta, encoding="utf-8") as handle:
                info = json.load(handle)
        except (OSError, ValueError) as exc:
            raise UsageError(f"{meta}: unreadable store description: {exc}") from exc
        if info.get("version") != STORE_VERSION or info.get("algorithm") != ALGORITHM:
            raise UsageError(f"{store.path}: unsupported store (version {info.get('version')!r}, algorithm {info.get('algorithm')!r})")
        return store

    def object_path(self, digest: str) -> str:
        """Where the object of `digest` lives: objects/<2 hex>/<digest>."""
        if len(digest) != 32 or not set(digest) <= _DIGEST_CHARS:
            raise ValueError(f"not an xxh3-128 hex digest: {digest!r}")
        return os.path.join(self.objects_dir, digest[:2], digest)

    def ensure_shard(self, digest: str) -> str:
        """Create objects/<2 hex>/ if needed; returns the object path."""
        path = self.object_path(digest)
        shard = os.path.dirname(path)
        if not os.path.isdir(shard):
            os.makedirs(shard, exist_ok=True)
            fsync_dir(self.objects_dir)
        return path

    @property
    def device(self) -> int:
        """st_dev of the objects directory (of its nearest existing ancestor before it is created)."""
        path = self.objects_dir
        while True:
            try:
                return os.stat(path).st_dev
            except FileNotFoundError:
                parent = os.path.dirname(path)
                if parent == path:
                    raise
                path = parent

    def tmp_path(self) -> str:
        return os.path.join(self.objects_dir, f".tmp-{secrets.token_hex(8)}")

    def lock(self, timeout: float = 0.0) -> None:
        """Take the store lock (apply into the store, gc); released by `unlock` or when the process dies."""
        lock = FileLock(os.path.join(self.path, "lock"), timeout=timeout)
        try:
            lock.acquire()
        except Timeout as exc:
            raise StoreBusyError(f"another mdbatch process is using the store {self.path}") from exc
        self._lock = lock

    def unlock(self) -> None:
        if self._lock is not None:
            self._lock.release()
            self._lock = None

    # -- references ---------------------------------------------------------------------------

    def add_refs(self, refs: list[Ref]) -> None:
        """Append references and fsync: durable before any campaign path is linked to an object."""
        if not refs:
            return
        data = ("\n".join(r.to_json() for r in refs) + "\n").encode("ascii")
        fd = os.open(self.refs_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o644)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            os.fsync(fd)
        finally:
            os.close(fd)

    def refs(self) -> dict[str, list[Ref]]:
        """Recorded references per digest (duplicates collapsed; a torn last line ignored)."""
        out: dict[str, dict[tuple[str, str], Ref]] = defaultdict(dict)
        try:
            handle = open(self.refs_path, "rb")  # noqa: SIM115 - closed below
        except FileNotFoundError:
            return {}
        with handle:
            for line in handle:
                if not line.endswith(b"\n"):
                    break
                try:
                    rec = json.loads(line)
                    ref = Ref(str(rec["digest"]), str(rec["path"]), str(rec["kind"]), str(rec.get("at", "")))
                except (ValueError, KeyError, TypeError):
                    continue
                out[ref.digest].setdefault((ref.path, ref.kind), ref)
        return {d: list(v.values()) for d, v in out.items()}

    def is_live(self, ref: Ref, obj: os.stat_result) -> bool:
        """Whether `ref.path` still references the object whose lstat is `obj`."""
        try:
            st = os.lstat(ref.path)
        except OSError:
            return False
        if ref.kind == "hardlink":
            return stat.S_ISREG(st.st_mode) and (st.st_dev, st.st_ino) == (obj.st_dev, obj.st_ino)
        if ref.kind == "symlink":
            try:
                return stat.S_ISLNK(st.st_mode) and os.readlink(ref.path) == self.object_path(ref.digest)
            except OSError:
                return False
        return stat.S_ISREG(st.st_mode) and st.st_size == obj.st_size

    def objects(self) -> Iterator[tuple[str, str, os.stat_result]]:
        """(digest, path, lstat) of every object, sorted by digest."""
        try:
            shards = sorted(os.listdir(self.objects_dir))
        except FileNotFoundError:
            return
        for shard in shards:
            shard_dir = os.path.join(self.objects_dir, shard)
            if len(shard) != 2 or not os.path.isdir(shard_dir):
                continue
            for name in sorted(os.listdir(shard_dir)):
                if name.startswith(".") or not name.startswith(shard):
                    continue
                path = os.path.join(shard_dir, name)
                try:
                    st = os.lstat(path)
                except FileNotFoundError:
                    continue
                if stat.S_ISREG(st.st_mode):
                    yield name, path, st

    # -- commands -----------------------------------------------------------------------------

    def stats(self) -> dict[str, Any]:
        """Objects, live references, stored vs logical bytes, bytes saved and the dedup ratio."""
        refs = self.refs()
        objects = stored = live_refs = logical = orphans = orphan_bytes = 0
        for digest, _path, st in self.objects():
            objects += 1
            stored += st.st_size
            live = sum(1 for r in refs.get(digest, ()) if self.is_live(r, st))
            live_refs += live
            logical += live * st.st_size
            if live == 0:
                orphans += 1
                orphan_bytes += st.st_size
        referenced = stored - orphan_bytes
        return {
            "store": self.path,
            "objects": objects,
            "stored_bytes": stored,
            "references": live_refs,
            "recorded_references": sum(len(v) for v in refs.values()),
            "logical_bytes": logical,
            "bytes_saved": logical - referenced,
            "dedup_ratio": round(logical / referenced, 4) if referenced else None,
            "orphans": orphans,
            "orphan_bytes": orphan_bytes,
        }

    def verify(self) -> dict[str, Any]:
        """Re-hash every object; report those whose bytes no longer match their name."""
        started = time.perf_counter()
        checked = 0
        nbytes = 0
        bad: list[dict[str, Any]] = []
        for digest, path, _st in self.objects():
            checked += 1
            try:
                d = digest_file(path)
            except OSError as exc:
                bad.append({"object": path, "digest": digest, "problem": f"unreadable: {exc.strerror or exc}"})
                continue
            nbytes += d.size
            if d.changed or d.xxh3_128 != digest:
                bad.append({"object": path, "digest": digest, "problem": f"content hashes to {d.xxh3_128}"})
        return {
            "store": self.path,
            "objects": checked,
            "bytes": nbytes,
            "corrupt": len(bad),
            "corrupt_objects": bad,
            "elapsed_s": round(time.perf_counter() - started, 3),
        }

    def gc(self, dry_run: bool = True) -> GcResult:
        """Find objects no recorded campaign path references any more; delete them unless `dry_run`.

        Deletions are journaled (STORE/.mdbatch-journal) and each orphan is re-checked just before
        it is deleted. The reference log is compacted to live references afterwards.
        """
        result = GcResult(dry_run)
        self.lock()
        try:
            for path in pending_journals(self.path):
                append_and_close(path, [{"t": "recovered", "note": "gc deletions are atomic; nothing to undo"}], "recovered")
            refs = self.refs()
            result.refs_before = sum(len(v) for v in refs.values())
            live_refs: list[Ref] = []
            orphans: list[tuple[str, str, os.stat_result]] = []
            lineage = _Lineage()
            for digest, path, st in self.objects():
                result.objects += 1
                recorded = refs.get(digest, [])
                live = [r for r in recorded if self.is_live(r, st)]
                live_refs.extend(live)
                if live:
                    continue
                row = {"digest": digest, "object": path, "size": st.st_size, "links": st.st_nlink}
                needed = lineage.needs(recorded)
                if needed:
                    result.kept_by_lineage.append({**row, "why": needed})
                    live_refs.extend(recorded)  # their paths are what the lineage rule keeps it for
                    continue
                orphans.append((digest, path, st))
                why = (
                    f"none of its {len(recorded)} recorded paths still links to it"
                    if recorded
                    else "no campaign path was ever recorded for it"
                )
                result.orphans.append({**row, "why": why})
            if dry_run:
                result.refs_after = result.refs_before
                return result
            self._delete(orphans, refs, result)
            self._compact(live_refs)
            result.refs_after = len(live_refs)
        finally:
            self.unlock()
        return result

    def _delete(self, orphans: list[tuple[str, str, os.stat_result]], refs: dict[str, list[Ref]], result: GcResult) -> None:
        if not orphans:
            return
        run_id = f"gc-{datetime.now(UTC):%Y%m%dT%H%M%SZ}-{secrets.token_hex(3)}"
        journal = Journal(self.path, run_id, {"op": "gc", "store": self.path})
        ids = []
        for digest, path, st in orphans:
            i = journal.new_id()
            ids.append(i)
            journal.write({"t": "delete", "id": i, "object": path, "digest": digest, "ino": st.st_ino, "size": st.st_size})
        journal.sync()
        for i, (digest, path, st) in zip(ids, orphans, strict=True):
            try:
                now = os.lstat(path)
            except FileNotFoundError:
                journal.write({"t": "skip", "id": i, "reason": "already gone"})
                continue
            if now.st_ino != st.st_ino or any(self.is_live(r, now) for r in refs.get(digest, ())):
                result.kept_after_recheck += 1
                journal.write({"t": "skip", "id": i, "reason": "referenced again"})
                continue
            if _Lineage().needs(refs.get(digest, [])):  # a registry declared the dependency since the listing
                result.kept_after_recheck += 1
                journal.write({"t": "skip", "id": i, "reason": "a live registry entry depends on it"})
                continue
            os.unlink(path)
            result.deleted += 1
            # A hardlinked object with other names frees nothing; only a last name frees the bytes.
            result.freed_bytes += st.st_size if now.st_nlink == 1 else 0
            journal.write({"t": "done", "id": i})
        result.journal = journal.close("completed")

    def _compact(self, live: list[Ref]) -> None:
        lines = sorted({r.to_json() for r in live})
        atomic_write_bytes(self.refs_path, ("\n".join(lines) + "\n" if lines else "").encode("ascii"), mode=0o644)


class _Lineage:
    """Which recorded campaign paths a live registry entry depends on (registries read once each)."""

    def __init__(self) -> None:
        self._files: dict[str, dict[str, list[str]] | None] = {}

    def needs(self, refs: list[Ref]) -> list[str]:
        """Why the object of `refs` must be kept ("<path>: analysis:rmsd <- artifact:plot"), or [] when nothing depends on it."""
        out: list[str] = []
        for ref in refs:
            marker = f"/{ANALYSIS_DIRNAME}/"
            at = ref.path.rfind(marker)
            if at < 0:
                continue
            sim, rel = ref.path[:at], ref.path[at + len(marker) :]
            files = self._depended(sim)
            if files is None:
                out.append(f"{display(ref.path)}: the registry of {display(sim)} cannot be read, so its lineage cannot be checked")
            else:
                out.extend(f"{display(ref.path)}: {why}" for why in files.get(rel, []))
        return out

    def _depended(self, sim: str) -> dict[str, list[str]] | None:
        if sim not in self._files:
            path = os.path.join(sim, ANALYSIS_DIRNAME, REGISTRY_FILENAME)
            try:
                data = read_registry_file(Path(path))
                registry = {} if data is None else parse_registry(data, path)
                self._files[sim] = depended_files(registry, _mtimes(sim, registry)) if registry else {}
            except (OSError, RegistryCorruptError):
                self._files[sim] = None
        return self._files[sim]


def _mtimes(sim: str, registry: dict[str, Any]) -> dict[str, int]:
    """The mtimes of the registry's files as they are now (the lineage's "bytes changed" rule)."""
    out: dict[str, int] = {}
    for kind, section in SECTIONS.items():
        for entry in registry[section].values():
            for rel in entry_files(kind, entry) if isinstance(entry, dict) else []:
                try:
                    out[f"{ANALYSIS_DIRNAME}/{rel}"] = os.stat(os.path.join(sim, ANALYSIS_DIRNAME, rel)).st_mtime_ns
                except OSError:
                    continue
    return out


def describe_orphans(result: GcResult, limit: int = 20) -> list[str]:
    """Human lines for the first orphans of a gc result (each with why it goes), then the objects
    kept because a live registry entry depends on them (each with the dependency)."""
    lines = [f"  {o['digest']}  {o['size']} bytes  {display(o['object'])}  ({o['why']})" for o in result.orphans[:limit]]
    if result.kept_by_lineage:
        lines.append(f"kept {len(result.kept_by_lineage)} unreferenced objects a live registry entry depends on (lineage):")
        for kept in result.kept_by_lineage[:limit]:
            lines.append(f"  {kept['digest']}  {kept['size']} bytes  {display(kept['object'])}")
            lines.extend(f"    {why}" for why in kept["why"])
    return lines
