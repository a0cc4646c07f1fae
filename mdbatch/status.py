"""`status`: what changed on disk since a root was last audited, from stat calls alone.

Like `git status`: new, missing, changed (size, mtime, ctime, inode, device) and moved files, and
new, vanished and modified simulations, against what the catalog recorded of each simulation (its
latest scan: the last completed audit of the root, or a later partial one). Nothing is read but
directory listings and lstat results, and nothing is written: no run is recorded.

Most simulations are proven unchanged by their recorded fingerprint (`inventory.fingerprint` of
paths and stat fields, salted as `scan.scan_salt` salts it): one walk and one lstat per file. Only a
simulation whose fingerprint moved has its recorded inventory read and compared file by file. A
file that vanished from one place and appeared at another with the same device, inode, size and
mtime was moved (a rename keeps them), within a simulation or across two.

Which directories are simulations is decided as an audit decides it (`discover.walk_root`): by
their names, except a directory whose only marker is a root `metadata.json`, whose `hash` is read.
"""

from __future__ import annotations

import os
import time
from collections import Counter, defaultdict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa

from .catalog import CatalogBackend, open_catalog, queries, schema
from .discover import DiscoveryStats, walk_root
from .errors import CatalogError, UsageError
from .inventory import StatRow, fingerprint, odd_entries, odd_salt, simulation_status, stat_files, top_level
from .paths import display, relative_to_root
from .scan import ScanOptions, scan_salt

#: Recorded inventories read per query when simulations are compared file by file.
LOOKUP_SIMULATIONS = 500
_STAT_FIELDS = ("size", "mtime", "ctime", "inode", "device")
_INVENTORY = ["simulation", "path", "path_raw", "size", "mtime_ns", "ctime_ns", "inode", "device"]


@dataclass(frozen=True, slots=True)
class FileChange:
    """One file that differs from the record: `change` is new, missing, changed or moved."""

    change: str
    path: str
    size: int | None = None
    #: For a change: the stat fields that moved (size, mtime, ctime, inode, device).
    fields: tuple[str, ...] = ()
    detail: str = ""
    #: For a move: the simulation and path at its other end.
    other_simulation: str | None = None
    other_path: str | None = None

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "change": self.change,
            "path": self.path,
            "size": self.size,
            "fields": list(self.fields),
            "detail": self.detail,
        }
        if self.other_path is not None:
            out["other"] = {"simulation": self.other_simulation, "path": self.other_path}
        return out


@dataclass(slots=True)
class SimulationChange:
    """A simulation that differs from the record: `change` is new, vanished or modified."""

    simulation: str
    change: str
    #: Its status now (None when vanished) and as recorded (None when new).
    status: str | None = None
    recorded_status: str | None = None
    #: Files and bytes now (on record, for a vanished simulation).
    files: int = 0
    bytes: int = 0
    file_changes: list[FileChange] = field(default_factory=list)
    #: What could not be looked at (unreadable directories or files), as "path: reason".
    problems: list[str] = field(default_factory=list)
    detail: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {
            "simulation": self.simulation,
            "change": self.change,
            "status": self.status,
            "recorded_status": self.recorded_status,
            "files": self.files,
            "bytes": self.bytes,
            "detail": self.detail,
            "problems": list(self.problems),
            "file_changes": [f.to_dict() for f in self.file_changes],
        }


@dataclass(slots=True)
class StatusReport:
    """What `status` found: the baseline it compared with and every simulation that differs."""

    root: str
    catalog: str
    baseline: dict[str, Any]
    #: The sub-directory of the root looked at ("" for the whole root).
    subtree: str = ""
    on_record: int = 0
    found: int = 0
    unchanged: int = 0
    #: Simulations whose fingerprint moved (or was never recorded), compared file by file.
    compared: int = 0
    files_on_record: int = 0
    #: Files per change, new simulations' files counted new and vanished ones' missing.
    file_counts: Counter[str] = field(default_factory=Counter)
    changes: list[SimulationChange] = field(default_factory=list)
    unreadable_directories: list[str] = field(default_factory=list)
    elapsed_s: float = 0.0

    @property
    def clean(self) -> bool:
        """Whether nothing differs from the record (and nothing was unreadable)."""
        return not self.changes and not self.unreadable_directories

    def counts(self) -> dict[str, dict[str, int]]:
        """Simulations per change and files per change."""
        sims = Counter(c.change for c in self.changes)
        files = self.file_counts
        return {
            "simulations": {k: sims.get(k, 0) for k in ("new", "vanished", "modified")},
            "files": {k: files.get(k, 0) for k in ("new", "missing", "changed", "moved")},
        }

    def to_dict(self) -> dict[str, Any]:
        return {
            "root": self.root,
            "subtree": self.subtree,
            "catalog": self.catalog,
            "baseline": self.baseline,
            "clean": self.clean,
            "simulations": {
                "on_record": self.on_record,
                "found": self.found,
                "unchanged": self.unchanged,
                "compared": self.compared,
                **self.counts()["simulations"],
            },
            "files": {"on_record": self.files_on_record, **self.counts()["files"]},
            "changes": [c.to_dict() for c in self.changes],
            "unreadable_directories": list(self.unreadable_directories),
            "elapsed_s": self.elapsed_s,
        }


@dataclass(frozen=True, slots=True)
class _Recorded:
    status: str | None
    fingerprint: str | None
    files: int = 0


@dataclass(slots=True)
class _Seen:
    """A simulation found on disk whose fingerprint did not hold (or that is new)."""

    simulation: str
    rows: list[StatRow]
    problems: list[str]


def status(root: str | os.PathLike[str] | None = None, *, db: str | None = None) -> StatusReport:
    """Compare the simulations under `root` (default: the current directory when it lies in an
    audited root, else the root of the newest completed audit) with what the catalog at `db`
    recorded of them. Reads directory listings and lstat results only; writes nothing.

    Raises CatalogError when the catalog is missing or older than this mdbatch, UsageError when no
    completed audit covers `root`.
    """
    started = time.monotonic()
    catalog = open_catalog(db, must_exist=True)
    try:
        _check_schema(catalog)
        base, subtree = _locate(catalog, root)
        audits = queries.audits_of(catalog, base)
        last = audits[-1]
        report = StatusReport(
            root=base,
            catalog=catalog.display_url,
            baseline={"run_id": last["run_id"], "ended_at": _iso(last.get("ended_at"))},
            subtree=subtree,
        )
        _compare(catalog, report)
    finally:
        catalog.close()
    report.elapsed_s = round(time.monotonic() - started, 3)
    return report


def _iso(value: Any) -> str | None:
    return value.isoformat() if hasattr(value, "isoformat") else None if value is None else str(value)


def _check_schema(catalog: CatalogBackend) -> None:
    version = catalog.schema_version()
    if version is None or schema.SIMULATIONS.name not in catalog.tables():
        raise CatalogError(f"catalog {catalog.display_url} has no audit recorded (run `mdbatch audit ROOT` first)")
    if version < schema.SCHEMA_VERSION:
        raise CatalogError(
            f"catalog {catalog.display_url} has schema version {version}, older than this mdbatch's {schema.SCHEMA_VERSION}; "
            "status never writes, so migrate it first (`mdbatch init-db` or the next audit)"
        )


def _locate(catalog: CatalogBackend, root: str | os.PathLike[str] | None) -> tuple[str, str]:
    """(audited root, sub-directory of it to look at, '' for all) for the `root` asked about."""
    done = queries.audits_of_any_root(catalog)
    roots = sorted({r["root"] for r in done if r["root"]})
    if not roots:
        raise UsageError(f"no completed audit in {catalog.display_url}: run `mdbatch audit ROOT` first")
    if root is None:
        here = _enclosing(roots, os.getcwd())
        if here is None:
            return str(done[-1]["root"]), ""
        return here, relative_to_root(os.getcwd(), here) if here != os.getcwd() else ""
    asked = os.path.abspath(os.fspath(root))
    found = _enclosing(roots, asked)
    if found is None:
        shown = ", ".join(roots[:5]) + (" …" if len(roots) > 5 else "")
        raise UsageError(f"no completed audit of {asked} (or of a directory holding it) in {catalog.display_url}; audited roots: {shown}")
    if not os.path.isdir(asked):
        raise UsageError(f"{asked} is not a directory (the catalog records audits of {found})")
    return found, "" if found == asked else relative_to_root(asked, found)


def _enclosing(roots: Iterable[str], directory: str) -> str | None:
    """The nearest of `roots` that is `directory` or holds it."""
    inside = [r for r in roots if r == directory or os.path.commonpath([r, directory]) == r]
    return max(inside, key=len) if inside else None


def _in_scope(simulation: str, subtree: str) -> bool:
    return not subtree or simulation == subtree or simulation.startswith(subtree + "/")


def _recorded(catalog: CatalogBackend, report: StatusReport) -> tuple[dict[str, _Recorded], set[str]]:
    """(present simulations of the scope on record, those recorded removed)."""
    present: dict[str, _Recorded] = {}
    removed: set[str] = set()
    columns = ["simulation", "status", "fingerprint", "removed_run"]
    for chunk in catalog.iter_rows(schema.SIMULATIONS.name, {"root": report.root}, columns):
        for sim, status_, fp, gone in zip(*chunk.to_pydict().values(), strict=True):
            if not _in_scope(sim, report.subtree):
                continue
            if gone is not None:
                removed.add(sim)
            else:
                present[sim] = _Recorded(status_, fp)
    return present, removed


def _compare(catalog: CatalogBackend, report: StatusReport) -> None:
    """Walk the scope, prove what it can unchanged by fingerprint, compare the rest file by file."""
    recorded, removed = _recorded(catalog, report)
    report.on_record = len(recorded)
    salt = scan_salt(ScanOptions())
    stats = DiscoveryStats()
    top = os.path.join(report.root, report.subtree) if report.subtree else report.root
    modified: list[_Seen] = []
    new: list[_Seen] = []
    seen: set[str] = set()
    for path in walk_root(top, stats):
        sim = relative_to_root(path, report.root)
        seen.add(sim)
        item = _look(path, sim, salt, recorded.get(sim))
        if item is None:
            report.unchanged += 1
        elif sim in recorded:
            modified.append(item)
        else:
            new.append(item)
    report.found = len(seen)
    report.compared = len(modified)
    report.unreadable_directories = [f"{display(p)}: {reason}" for p, reason in stats.unreadable]
    vanished = sorted(set(recorded) - seen)
    inventory = _inventories(catalog, report.root, [s.simulation for s in modified] + vanished)
    report.files_on_record = _files_on_record(catalog, report)
    changes = [_modified(s, recorded[s.simulation], inventory.get(s.simulation, {})) for s in modified]
    changes += [_new(s, removed) for s in new]
    changes += [_vanished(sim, recorded[sim], inventory.get(sim, {})) for sim in vanished]
    _pair_moves(changes, modified + new, inventory)
    report.file_counts = Counter(f.change for c in changes for f in c.file_changes if f.change != "moved_away")
    _collapse(changes)
    # A fingerprint also moves with what salts it (another mdbatch version): no file differing is no change.
    differ = [c for c in changes if c.change != "modified" or c.file_changes or c.problems or c.detail]
    report.unchanged += len(changes) - len(differ)
    report.changes = sorted(differ, key=lambda c: (c.simulation, c.change))


def _look(path: str, sim: str, salt: str, recorded: _Recorded | None) -> _Seen | None:
    """None when the simulation's fingerprint holds; else what one walk and lstat per file saw."""
    problems: list[str] = []

    def note(_kind: str, item: str, detail: str) -> None:
        problems.append(f"{item}: {detail}")

    rows = stat_files(path, note)
    if recorded is not None and recorded.fingerprint is not None and not problems:
        try:
            odd = odd_entries(path)
        except OSError as exc:
            problems.append(f".analysis: {exc.strerror or exc}")
        else:
            if fingerprint(rows, salt + odd_salt(odd)) == recorded.fingerprint:
                return None
    return _Seen(sim, rows, problems)


_Row = tuple[int, int, int, int, int]  # size, mtime_ns, ctime_ns, inode, device


def _inventories(catalog: CatalogBackend, root: str, sims: list[str]) -> dict[str, dict[str, _Row]]:
    """The recorded inventory of `sims` (path -> stat fields), a few hundred simulations per query."""
    out: dict[str, dict[str, _Row]] = defaultdict(dict)
    for start in range(0, len(sims), LOOKUP_SIMULATIONS):
        part = sims[start : start + LOOKUP_SIMULATIONS]
        keys = pa.table({"root": pa.array([root] * len(part), pa.string()), "simulation": pa.array(part, pa.string())})
        rows = catalog.rows_matching(schema.FILES.name, keys, columns=_INVENTORY).to_pydict()
        for sim, path, raw, size, mtime, ctime, ino, dev in zip(*rows.values(), strict=True):
            out[sim][os.fsdecode(raw) if raw is not None else path] = (size, mtime, ctime, ino, dev)
    return out


def _files_on_record(catalog: CatalogBackend, report: StatusReport) -> int:
    """Files the catalog records for the scope's present simulations."""
    where = {"root": report.root, "removed_run": None}
    if not report.subtree:
        return catalog.count_rows(schema.FILES.name, where)
    total = 0
    for chunk in catalog.iter_rows(schema.FILES.name, where, ["simulation"]):
        total += sum(1 for s in chunk.column("simulation").to_pylist() if _in_scope(s, report.subtree))
    return total


def _modified(seen: _Seen, recorded: _Recorded, before: dict[str, _Row]) -> SimulationChange:
    """A simulation on record whose fingerprint moved: its files compared with the recorded ones."""
    now: dict[str, _Row] = {r[0]: r[1:] for r in seen.rows}
    changes: list[FileChange] = []
    for rel, row in now.items():
        old = before.get(rel)
        if old is None:
            changes.append(FileChange("new", display(rel), row[0]))
            continue
        moved = tuple(name for name, a, b in zip(_STAT_FIELDS, old, row, strict=True) if a != b)
        if moved:
            changes.append(FileChange("changed", display(rel), row[0], moved, _describe(moved, old, row)))
    changes += [FileChange("missing", display(rel), old[0]) for rel, old in before.items() if rel not in now]
    status_now = simulation_status(top_level(now))
    detail = f"status {recorded.status} -> {status_now}" if recorded.status != status_now else ""
    return SimulationChange(
        seen.simulation,
        "modified",
        status_now,
        recorded.status,
        len(now),
        sum(r[0] for r in now.values()),
        sorted(changes, key=lambda f: (f.path, f.change)),
        seen.problems,
        detail,
    )


def _describe(moved: tuple[str, ...], old: _Row, new: _Row) -> str:
    parts = [f"size {old[0]} -> {new[0]}" if name == "size" else name for name in moved]
    return ", ".join(parts)


def _new(seen: _Seen, removed: set[str]) -> SimulationChange:
    rels = [r[0] for r in seen.rows]
    files = [FileChange("new", display(r[0]), r[1]) for r in seen.rows]
    again = "recorded removed before" if seen.simulation in removed else ""
    return SimulationChange(
        seen.simulation,
        "new",
        simulation_status(top_level(rels)),
        None,
        len(rels),
        sum(r[1] for r in seen.rows),
        files,
        seen.problems,
        again,
    )


def _vanished(sim: str, recorded: _Recorded, before: dict[str, _Row]) -> SimulationChange:
    files = [FileChange("missing", display(rel), row[0]) for rel, row in sorted(before.items())]
    return SimulationChange(sim, "vanished", None, recorded.status, len(before), sum(r[0] for r in before.values()), files, [], "")


def _pair_moves(changes: list[SimulationChange], seen: list[_Seen], inventory: dict[str, dict[str, _Row]]) -> None:
    """Turn a missing and a new file with the same device, inode, size and mtime (what a rename keeps)
    into a move: `moved` where it is now, `moved_away` where it was when that is another simulation."""
    pool: dict[tuple[int, ...], list[tuple[str, str]]] = defaultdict(list)
    for sim, rows in sorted(inventory.items()):
        for rel, (size, mtime, _ctime, ino, dev) in sorted(rows.items()):
            pool[(dev, ino, size, mtime)].append((sim, display(rel)))
    now = {(s.simulation, display(r[0])): (r[5], r[4], r[1], r[2]) for s in seen for r in s.rows}
    missing = {(c.simulation, f.path) for c in changes for f in c.file_changes if f.change == "missing"}
    moved: dict[tuple[str, str], tuple[str, str]] = {}  # origin -> destination
    for change in changes:
        for i, f in enumerate(change.file_changes):
            if f.change != "new":
                continue
            origin = next((m for m in pool.get(now.get((change.simulation, f.path), ()), []) if m in missing and m not in moved), None)
            if origin is not None:
                moved[origin] = (change.simulation, f.path)
                source = origin[1] if origin[0] == change.simulation else f"{origin[0]}/{origin[1]}"
                change.file_changes[i] = FileChange("moved", f.path, f.size, (), f"from {source}", *origin)
    for change in changes:
        kept = []
        for f in change.file_changes:
            to = moved.get((change.simulation, f.path)) if f.change == "missing" else None
            if to is None:
                kept.append(f)
            elif to[0] != change.simulation:
                kept.append(FileChange("moved_away", f.path, f.size, (), f"to {to[0]}/{to[1]}", *to))
        change.file_changes = kept


def _collapse(changes: list[SimulationChange]) -> None:
    """Shorten what the file lists repeat: a new simulation lists only the files moved into it, a
    vanished one only those moved out, and a simulation moved whole is one line at each end."""
    by_name = {c.simulation: c for c in changes}
    for change in changes:
        if change.change != "new":
            continue
        change.file_changes = [f for f in change.file_changes if f.change == "moved"]
        origins = {f.other_simulation for f in change.file_changes}
        origin = by_name.get(origins.pop() or "") if len(origins) == 1 and len(change.file_changes) == change.files else None
        if origin is not None and origin.change == "vanished" and len(origin.file_changes) == origin.files:
            change.detail, change.file_changes = f"moved from {origin.simulation}", []
            origin.detail, origin.file_changes = f"moved to {change.simulation}", []
    for change in changes:
        if change.change == "vanished":
            change.file_changes = [f for f in change.file_changes if f.change == "moved_away"]


def iter_rows(report: StatusReport) -> Iterator[tuple[str, str, str, str]]:
    """The report as (simulation, change, path, detail) rows, a simulation's files below it."""
    for c in report.changes:
        yield c.simulation, c.change, "", _headline(c)
        for f in c.file_changes:
            yield "", f.change, f.path, f.detail
        for p in c.problems:
            yield "", "unreadable", p.split(": ", 1)[0], p.split(": ", 1)[-1]
    for d in report.unreadable_directories:
        yield d.split(": ", 1)[0], "unreadable", "", d.split(": ", 1)[-1]


def _headline(c: SimulationChange) -> str:
    if c.change == "vanished":
        return f"{c.recorded_status or 'unknown'}; {c.files} files on record" + (f"; {c.detail}" if c.detail else "")
    head = f"{c.status}; {c.files} files"
    return head + (f"; {c.detail}" if c.detail else "")
