"""Run history: what changed in a campaign between two audits.

Pure functions over plain data; the catalog stores their output (`MDBATCH_CHANGES`) and the audit
feeds them one batch at a time with what the catalog knew before the batch.

Files are new, missing, changed, moved (same size and digest at a new path; pairs are matched
across the whole campaign at the end of a run) or unchanged; simulations new, removed or
status-changed; findings new, resolved or persisting.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, NamedTuple, Protocol

import pyarrow as pa

FILE_CHANGES = ("new", "missing", "changed", "moved", "unchanged")
SIMULATION_CHANGES = ("new", "removed", "status_changed")
FINDING_CHANGES = ("new", "resolved", "persisting")


class FileState(Protocol):
    """What change detection reads of a recorded file (a PreviousFile, or a hash-cache entry)."""

    @property
    def size(self) -> int: ...
    @property
    def mtime_ns(self) -> int: ...
    @property
    def ctime_ns(self) -> int: ...
    @property
    def inode(self) -> int: ...
    @property
    def device(self) -> int: ...
    @property
    def xxh3_128(self) -> str | None: ...


class PreviousFile(NamedTuple):
    """A file as the previous run recorded it (the current inventory before this batch)."""

    size: int
    mtime_ns: int
    ctime_ns: int
    inode: int
    device: int
    xxh3_128: str | None


class Change(NamedTuple):
    """One change record: scope file|simulation|finding, the change, where, and what."""

    scope: str
    change: str
    simulation: str
    item: str
    size: int | None = None
    digest: str | None = None
    detail: str = ""


@dataclass(slots=True)
class ChangeCounts:
    """Per-scope counters of changes, including the unchanged files no record is stored for."""

    files: Counter[str] = field(default_factory=Counter)
    simulations: Counter[str] = field(default_factory=Counter)
    findings: Counter[str] = field(default_factory=Counter)

    def add(self, changes: Iterable[Change]) -> None:
        for c in changes:
            getattr(self, f"{c.scope}s")[c.change] += 1

    def to_dict(self) -> dict[str, dict[str, int]]:
        return {
            "files": {k: self.files.get(k, 0) for k in FILE_CHANGES},
            "simulations": {k: self.simulations.get(k, 0) for k in SIMULATION_CHANGES},
            "findings": {k: self.findings.get(k, 0) for k in FINDING_CHANGES},
        }


def file_changes(previous: Mapping[str, Mapping[str, FileState]], files: pa.Table, simulations: Iterable[str]) -> tuple[list[Change], int, set[str]]:
    """Classify the files of a batch against the previous inventory of its simulations.

    Returns (change records, number of unchanged files, simulations whose inventory is identical
    to the recorded one and need no rewrite). A file whose digest could not be taken this time
    (unreadable, changed during the scan) counts as changed only if its size moved.
    """
    now: dict[str, dict[str, tuple[int, int, int, int, int, str | None]]] = defaultdict(dict)
    cols = files.select(["simulation", "path", "size", "mtime_ns", "ctime_ns", "inode", "device", "xxh3_128"]).to_pydict()
    for sim, path, size, mtime, ctime, ino, dev, digest in zip(*cols.values(), strict=True):
        now[sim][path] = (size, mtime, ctime, ino, dev, digest)
    changes: list[Change] = []
    unchanged = 0
    identical: set[str] = set()
    for sim in simulations:
        before = previous.get(sim, {})
        after = now.get(sim, {})
        same_sim = len(before) == len(after)
        for path, (size, mtime, ctime, ino, dev, digest) in after.items():
            old = before.get(path)
            if old is None:
                changes.append(Change("file", "new", sim, path, size, digest))
                same_sim = False
            elif old.size != size or (digest is not None and old.xxh3_128 is not None and digest != old.xxh3_128):
                changes.append(Change("file", "changed", sim, path, size, digest, f"{old.size} -> {size} bytes"))
                same_sim = False
            else:
                unchanged += 1
                if (old.mtime_ns, old.ctime_ns, old.inode, old.device, old.xxh3_128) != (mtime, ctime, ino, dev, digest):
                    same_sim = False
        for path, old in before.items():
            if path not in after:
                changes.append(Change("file", "missing", sim, path, old.size, old.xxh3_128))
                same_sim = False
        if same_sim and before:
            identical.add(sim)
    return changes, unchanged, identical


def pair_moves(new: Iterable[Change], missing: Iterable[Change]) -> tuple[list[Change], list[Change], list[Change]]:
    """Match missing and new files with the same size and digest into moves.

    Returns (moves, new files left, missing files left). Each missing file pairs with at most one
    new file, in a deterministic order.
    """
    pool: dict[tuple[int | None, str], list[Change]] = defaultdict(list)
    for m in sorted(missing, key=lambda c: (c.simulation, c.item)):
        if m.digest:
            pool[(m.size, m.digest)].append(m)
    unmatched_missing = [m for m in missing if not m.digest]
    moves: list[Change] = []
    left_new: list[Change] = []
    for n in sorted(new, key=lambda c: (c.simulation, c.item)):
        candidates = pool.get((n.size, n.digest or ""))
        if n.digest and candidates:
            src = candidates.pop(0)
            moves.append(Change("file", "moved", n.simulation, n.item, n.size, n.digest, f"from {src.simulation}/{src.item}"))
        else:
            left_new.append(n)
    left_missing = unmatched_missing + [m for group in pool.values() for m in group]
    return moves, left_new, left_missing


def simulation_changes(previous: Mapping[str, str], current: Mapping[str, str], reappeared: Collection[str] = ()) -> list[Change]:
    """New simulations and status changes for the simulations of a batch (dir -> status); those in
    `reappeared` were recorded removed and are new again."""
    out: list[Change] = []
    for sim, status in current.items():
        old = previous.get(sim)
        if old is None:
            out.append(Change("simulation", "new", sim, sim, detail=f"{status} (reappeared)" if sim in reappeared else status))
        elif old != status:
            out.append(Change("simulation", "status_changed", sim, sim, detail=f"{old} -> {status}"))
    return out


def removed_simulations(previous: Iterable[str], seen: set[str]) -> list[Change]:
    """Simulations the previous run had that a complete walk of the root no longer finds."""
    return [Change("simulation", "removed", sim, sim) for sim in sorted(set(previous) - seen)]


def finding_changes(before: Iterable[tuple[str, str, str]], after: Iterable[tuple[str, str, str]]) -> tuple[list[Change], int]:
    """(new and resolved findings as change records, number persisting) between two runs."""
    old, new = set(before), set(after)
    records = [Change("finding", "new", s, f"{k}:{i}") for s, k, i in sorted(new - old)]
    records += [Change("finding", "resolved", s, f"{k}:{i}") for s, k, i in sorted(old - new)]
    return records, len(old & new)


def describe(changes: Mapping[str, Mapping[str, int]], previous_run: str | None, *, first: bool | None = None) -> str:
    """The one-paragraph summary of changes an audit prints at its end (`first`: nothing was recorded
    of the root before; by default, when there is no previous completed audit)."""
    if first if first is not None else previous_run is None:
        return "First audit of this root: everything is new."
    f, s, g = changes["files"], changes["simulations"], changes["findings"]
    since = f"Since run {previous_run}" if previous_run else "Since each simulation's latest scan"
    parts = [
        f"{since}: files {f['new']} new, {f['missing']} missing, {f['changed']} changed, "
        f"{f['moved']} moved, {f['unchanged']} unchanged",
        f"simulations {s['new']} new, {s['removed']} removed, {s['status_changed']} changed status",
        f"findings {g['new']} new, {g['resolved']} resolved, {g['persisting']} persisting.",
    ]
    return "; ".join(parts)


def changes_table(changes: Iterable[Change]) -> list[dict[str, Any]]:
    """Change records as plain dicts (for JSON lines and DataFrames)."""
    return [c._asdict() for c in changes]


# -- queries over a catalog's history ------------------------------------------------------------

RUN_COLUMNS = ["run_id", "command", "root", "status", "started_at", "ended_at", "host", "job", "version"]
CHANGE_COLUMNS = ["run_id", "scope", "change", "simulation", "item", "size", "digest", "detail"]


def _runs_frame(catalog: Any, root: str | None = None) -> Any:
    import pandas as pd

    runs = catalog.read_table("MDBATCH_RUNS")
    if runs.empty:
        return pd.DataFrame(columns=RUN_COLUMNS)
    if root is not None:
        runs = runs[runs["root"] == root]
    return runs.sort_values(["started_at", "run_id"]).reset_index(drop=True)


def list_runs(catalog: Any, root: str | None = None) -> Any:
    """Every recorded run (oldest first) with the headline numbers of its summary, as a DataFrame."""
    import json

    runs = _runs_frame(catalog, root)
    out = runs[[c for c in RUN_COLUMNS if c in runs.columns]].copy()
    summaries = [json.loads(s) if isinstance(s, str) and s else {} for s in runs.get("summary", [])]
    for key in ("simulations", "files", "bytes", "findings_total", "elapsed_s"):
        out[key] = [s.get(key) for s in summaries]
    return out


def resolve_run(catalog: Any, run: str, root: str | None = None, command: str | None = None) -> dict[str, Any]:
    """The run row for an id, or for 'last' (the newest, optionally of `root`/`command`)."""
    import json

    from .errors import UsageError

    runs = _runs_frame(catalog, root)
    if command is not None and not runs.empty:
        runs = runs[runs["command"] == command]
    if runs.empty:
        raise UsageError("no runs recorded in this catalog" + (f" for {root}" if root else ""))
    row = runs.iloc[-1] if run == "last" else runs[runs["run_id"] == run].iloc[0] if (runs["run_id"] == run).any() else None
    if row is None:
        raise UsageError(f"no run {run!r} in this catalog")
    record = {k: (None if _isna(v) else v) for k, v in row.to_dict().items()}
    for key in ("summary", "arguments"):
        text = record.get(key)
        if isinstance(text, str) and text:
            record[key] = json.loads(text)
    return record


def _isna(value: Any) -> bool:
    try:
        import pandas as pd

        return bool(pd.isna(value)) if not isinstance(value, (list, dict, tuple)) else False
    except (TypeError, ValueError):
        return False


def diff_runs(catalog: Any, a: str | None = None, b: str | None = None, root: str | None = None) -> Any:
    """What changed between runs `a` and `b` of one root (default: its last two audits).

    File and simulation records are the change log of every audit after `a` up to `b`; findings
    are compared exactly between the two runs' findings.
    """
    import pandas as pd

    from .errors import UsageError

    last = resolve_run(catalog, b or "last", root, command="audit")
    root = last["root"]
    audits = _runs_frame(catalog, root)
    audits = audits[audits["command"] == "audit"].reset_index(drop=True)
    ids = list(audits["run_id"])
    if a is None:
        pos = ids.index(last["run_id"])
        if pos == 0:
            raise UsageError(f"run {last['run_id']} is the first audit of {root}: nothing to compare with")
        a = ids[pos - 1]
    if a not in ids:
        raise UsageError(f"no audit run {a!r} of {root} in this catalog")
    lo, hi = ids.index(a), ids.index(last["run_id"])
    if lo >= hi:
        raise UsageError(f"run {a} is not older than run {last['run_id']}")
    between = [r for r in ids[lo + 1 : hi + 1] if r in set(audits.loc[audits["status"] != "refused", "run_id"])]
    records: list[dict[str, Any]] = []
    for run_id in between:  # in run order, filtered in the database
        if "MDBATCH_CHANGES" not in catalog.tables():
            break
        for chunk in catalog.iter_rows("MDBATCH_CHANGES", {"run_id": run_id}, CHANGE_COLUMNS):
            records += chunk.to_pylist()
    out = pd.DataFrame([r for r in records if r["scope"] != "finding"] + net_finding_changes([r for r in records if r["scope"] == "finding"]),
                       columns=CHANGE_COLUMNS)
    out["size"] = out["size"].astype("Int64")
    return out.sort_values(["scope", "change", "simulation", "item"]).reset_index(drop=True)


def net_finding_changes(records: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """The net effect of finding records over several runs (in run order): a finding new in one run and
    resolved in a later one changed nothing; one resolved then new again persisted."""
    first: dict[tuple[str, str], Mapping[str, Any]] = {}
    last: dict[tuple[str, str], Mapping[str, Any]] = {}
    for record in records:
        key = (record["simulation"], record["item"])
        first.setdefault(key, record)
        last[key] = record
    out = []
    for key, start in first.items():
        end = last[key]
        existed, exists = start["change"] == "resolved", end["change"] == "new"
        if existed != exists:
            out.append(dict(end))
    return out


def prune_removed(catalog: Any, root: str | None = None, older_than_days: float = 30.0) -> tuple[int, int]:
    """Delete the rows kept for simulations removed more than `older_than_days` ago (their hash cache);
    returns (simulations, inventory rows) deleted."""
    from datetime import datetime, timedelta, timezone

    import pyarrow.compute as pc

    from .catalog import schema
    from .catalog.ops import Delete

    if schema.SIMULATIONS.name not in catalog.tables():
        return 0, 0
    cutoff = datetime.now(timezone.utc) - timedelta(days=older_than_days)
    where = {"root": root} if root is not None else {}
    gone: list[pa.Table] = []
    for chunk in catalog.iter_rows(schema.SIMULATIONS.name, where, ["root", "simulation", "removed_run", "removed_at"]):
        marked = pc.is_valid(chunk["removed_run"])
        old = pc.or_kleene(pc.is_null(chunk["removed_at"]), pc.less_equal(chunk["removed_at"], pa.scalar(cutoff, pa.timestamp("us", tz="UTC"))))
        gone.append(chunk.filter(pc.and_(marked, old)).select(["root", "simulation"]))
    keys = pa.concat_tables(gone) if gone else pa.table({"root": pa.array([], pa.string()), "simulation": pa.array([], pa.string())})
    if keys.num_rows == 0:
        return 0, 0
    counts = catalog.apply([Delete(schema.SIMULATIONS.name, keys), Delete(schema.FILES.name, keys)])
    return keys.num_rows, counts[1]
