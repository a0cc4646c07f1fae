"""The fix of each finding kind: plan it from the files, re-check it under the lock, apply it to a registry.

`plan_simulation(task) -> SimPlan` is the per-simulation work the fan-out maps (pure: it reads the
simulation's registry, parquet footers and artifact files, and writes nothing). `recheck` and
`apply_fixes` run again on the client under the registry's lock, against the registry as it is
then, so a registry another writer changed meanwhile keeps that writer's change.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pyarrow as pa

from .. import findings as fk
from ..errors import RegistryCorruptError
from ..footer import read_footer
from ..hashing import sha256_file
from ..naming import is_valid_name
from ..paths import contained
from ..registry.format import ANALYSIS_DIRNAME, REGISTRY_FILENAME, empty_registry, encode_registry, parse_registry, read_registry_file
from .model import Fix, SimPlan, SimTask, Skip, sha256_bytes

_PREFIX = ANALYSIS_DIRNAME + "/"


def plan_group(tasks: list[SimTask], *, index: int = 0) -> list[SimPlan]:
    """The worker task: plan each simulation of a batch (`index` is the fan-out's task number)."""
    return [plan_simulation(task) for task in tasks]


def plan_simulation(task: SimTask, now: str | None = None) -> SimPlan:
    """Plan the fixes of one simulation's findings: each is checked against the files as they are now
    (a finding that no longer holds is skipped, with the reason) and applied to a copy of the registry."""
    analysis = os.path.join(task.directory, ANALYSIS_DIRNAME)
    try:
        before = read_registry_file(Path(analysis) / REGISTRY_FILENAME)
    except (OSError, RegistryCorruptError) as exc:  # unreadable, or a directory or FIFO where it should be
        why = exc.reason if isinstance(exc, RegistryCorruptError) else exc.strerror or str(exc)
        skips = tuple(Skip(task.simulation, k, i, f"the registry cannot be read: {why}") for k, i in task.findings)
        return SimPlan(task.simulation, task.directory, None, None, (), skips)
    registry = parsed(before)
    fixes: list[Fix] = []
    skipped: list[Skip] = []
    for kind, item in task.findings:
        planned = gather(kind, item, registry, before, analysis)
        if isinstance(planned, str):
            skipped.append(Skip(task.simulation, kind, item, planned))
        else:
            fixes.append(planned)
    after = build_after(before, fixes, now) if fixes else before
    return SimPlan(task.simulation, task.directory, before, after, tuple(fixes), tuple(skipped))


def parsed(data: bytes | None) -> dict[str, Any] | None:
    """The registry in `data` (empty when there is none), None when it is corrupt."""
    if data is None:
        return empty_registry()
    try:
        return parse_registry(data)
    except RegistryCorruptError:
        return None


# -- planning: one finding -> a Fix with its facts, or the reason it no longer holds --------------------


def gather(kind: str, item: str, registry: dict[str, Any] | None, raw: bytes | None, analysis: str) -> Fix | str:
    """The fix of finding (kind, item) given the registry and files now, or why it no longer holds."""
    if kind == fk.REGISTRY_CORRUPT:
        return _gather_rebuild(raw, registry, analysis)
    if registry is None:
        return "the registry is corrupt (fix registry_corrupt first, with --rebuild-corrupt)"
    if kind in (fk.ROW_COUNT_MISMATCH, fk.COLUMNS_MISMATCH):
        return _gather_footer(kind, item, registry, analysis)
    if kind == fk.EXTRA_FILE:
        return _gather_extra(item, registry, analysis)
    if kind == fk.MISSING_FILE:
        entry = registry["analyses"].get(item)
        if entry is None:
            return "the analysis is no longer registered"
        if _regular(analysis, entry["filename"]) is not None:
            return f"{entry['filename']} is present again"
        return Fix(kind, item, f"remove analysis {item!r} (its file {entry['filename']} is absent)", {"filename": entry["filename"]})
    if kind in (fk.ARTIFACT_MISSING_FILE, fk.ARTIFACT_CHECKSUM_MISMATCH):
        return _gather_artifact(kind, item, registry, analysis)
    return f"{kind} is never fixed automatically"


def _gather_footer(kind: str, name: str, registry: dict[str, Any], analysis: str) -> Fix | str:
    entry = registry["analyses"].get(name)
    if entry is None:
        return "the analysis is no longer registered"
    facts = _footer_facts(analysis, entry["filename"])
    if isinstance(facts, str):
        return facts
    facts["filename"] = entry["filename"]
    if kind == fk.ROW_COUNT_MISMATCH:
        if entry["row_count"] == facts["rows"]:
            return f"the registry already says {facts['rows']} rows"
        return Fix(kind, name, f"row_count {entry['row_count']} -> {facts['rows']} (parquet footer)", facts)
    if list(entry["columns"]) == facts["columns"]:
        return "the registry already lists the footer's columns"
    return Fix(kind, name, f"columns {entry['columns']} -> {facts['columns']} (parquet footer)", facts)


def _gather_extra(item: str, registry: dict[str, Any], analysis: str) -> Fix | str:
    rel = item[len(_PREFIX) :] if item.startswith(_PREFIX) else item
    if "/" in rel or not rel.endswith(".parquet"):
        return "not a parquet file at the top of .analysis"
    name = rel[: -len(".parquet")]
    if not is_valid_name(name):
        return f"{rel}: its name cannot be an analysis name (letters, digits, underscore)"
    if any(e.get("filename") == rel for e in registry["analyses"].values()):
        return f"{rel} is registered now"
    if name in registry["analyses"]:
        return f"an analysis named {name!r} is registered with another file"
    facts = _footer_facts(analysis, rel)
    if isinstance(facts, str):
        return facts
    facts.update(filename=rel, name=name)
    return Fix(fk.EXTRA_FILE, item, f"register {rel} as analysis {name!r} ({facts['rows']} rows, {len(facts['columns'])} columns)", facts)


def _gather_artifact(kind: str, item: str, registry: dict[str, Any], analysis: str) -> Fix | str:
    name, _, path = item.partition(":")
    entry = registry["artifacts"].get(name)
    if entry is None or path not in entry["files"]:
        return f"{path} is no longer a file of artifact {name!r}"
    facts: dict[str, Any] = {"artifact": name, "path": path}
    present = _regular(analysis, path)
    if kind == fk.ARTIFACT_MISSING_FILE:
        if present is not None:
            return f"{path} is present again"
        last = entry["files"] == [path]
        what = f"remove artifact {name!r} (its only file {path} is absent)" if last else f"drop {path} from artifact {name!r}"
        return Fix(kind, item, what, facts)
    if present is None:
        return f"{path} is absent now"
    try:
        digest = sha256_file(os.path.join(analysis, contained(path) or path))
    except OSError as exc:
        return f"{path} cannot be read: {exc.strerror or exc}"
    if entry["checksums"].get(path, "").lower() == digest:
        return "the registry already records the file's sha256"
    facts.update(sha256=digest, stat=_stat_key(present))
    return Fix(kind, item, f"record sha256 {digest[:16]}… for {path} of artifact {name!r}", facts)


def _gather_rebuild(raw: bytes | None, registry: dict[str, Any] | None, analysis: str) -> Fix | str:
    if raw is None:
        return "the registry is absent now"
    if registry is not None:
        return "the registry reads as valid now"
    parquets: list[dict[str, Any]] = []
    left: list[str] = []
    for rel in _top_parquets(analysis):
        name = rel[: -len(".parquet")]
        facts = _footer_facts(analysis, rel) if is_valid_name(name) else "its name cannot be an analysis name"
        if isinstance(facts, str):
            left.append(f"{rel} ({facts})")
            continue
        parquets.append({**facts, "filename": rel, "name": name})
    detail = f"rebuild from {len(parquets)} parquet files (artifacts are not kept; the corrupt bytes are in the snapshot)"
    if left:
        detail += f"; left out: {', '.join(left)}"
    return Fix(fk.REGISTRY_CORRUPT, f"{_PREFIX}{REGISTRY_FILENAME}", detail, {"sha256": sha256_bytes(raw), "parquets": parquets})


def _top_parquets(analysis: str) -> list[str]:
    try:
        names = sorted(os.listdir(analysis))
    except OSError:
        return []
    return [n for n in names if n.endswith(".parquet") and _regular(analysis, n) is not None]


def _regular(analysis: str, rel: str) -> os.stat_result | None:
    """The lstat of `rel` under `.analysis` when it is a regular file there (and a safe path), else None."""
    norm = contained(rel)
    if norm is None:
        return None
    try:
        st = os.lstat(os.path.join(analysis, norm))
    except OSError:
        return None
    return st if stat.S_ISREG(st.st_mode) else None


def _stat_key(st: os.stat_result) -> list[int]:
    return [st.st_size, st.st_mtime_ns, st.st_ino]


def _footer_facts(analysis: str, rel: str) -> dict[str, Any] | str:
    """{"rows", "columns", "stat"} of a parquet file under `.analysis`, or why they cannot be read."""
    st = _regular(analysis, rel)
    if st is None:
        return f"{rel} is absent (or not a regular file)"
    path = os.path.join(analysis, contained(rel) or rel)
    try:
        rows, columns = read_footer(None, path)
    except (OSError, ValueError, pa.ArrowException) as exc:
        return f"{rel}: the parquet footer cannot be read ({str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__})"
    return {"rows": rows, "columns": list(columns), "stat": _stat_key(st)}


# -- under the lock: does the fix still hold, and the registry with the fixes applied ----------------


def recheck(fix: Fix, registry: dict[str, Any] | None, raw: bytes | None, analysis: str) -> str | None:
    """Why `fix` no longer holds against the registry and files as they are now, or None when it does.

    Files are compared by stat with what the plan read (a changed file is re-planned by a re-run,
    not trusted); the registry is looked at afresh.
    """
    f = fix.facts
    for rel, key in _stats(fix):
        st = _regular(analysis, rel)
        if st is None or _stat_key(st) != key:
            return f"{rel} changed since it was read"
    if fix.kind == fk.REGISTRY_CORRUPT:
        return None if sha256_bytes(raw) == f["sha256"] else "the registry changed since it was read"
    if registry is None:
        return "the registry is corrupt now"
    again = gather(fix.kind, fix.item, registry, raw, analysis) if fix.kind in (fk.MISSING_FILE, fk.ARTIFACT_MISSING_FILE) else None
    if isinstance(again, str):
        return again
    if fix.kind in (fk.ROW_COUNT_MISMATCH, fk.COLUMNS_MISMATCH):
        entry = registry["analyses"].get(fix.item)
        if entry is None or entry["filename"] != f["filename"]:
            return "the analysis is no longer registered with that file"
        same = entry["row_count"] == f["rows"] if fix.kind == fk.ROW_COUNT_MISMATCH else list(entry["columns"]) == f["columns"]
        return "the registry says what the footer says now" if same else None
    if fix.kind == fk.EXTRA_FILE:
        if f["name"] in registry["analyses"] or any(e.get("filename") == f["filename"] for e in registry["analyses"].values()):
            return f"{f['filename']} is registered now"
        return None
    if fix.kind == fk.ARTIFACT_CHECKSUM_MISMATCH:
        entry = registry["artifacts"].get(f["artifact"])
        if entry is None or f["path"] not in entry["files"]:
            return f"{f['path']} is no longer a file of artifact {f['artifact']!r}"
        return "the registry records that sha256 now" if entry["checksums"].get(f["path"], "").lower() == f["sha256"] else None
    return None


def _stats(fix: Fix) -> Iterable[tuple[str, list[int]]]:
    f = fix.facts
    if fix.kind == fk.REGISTRY_CORRUPT:
        return [(p["filename"], p["stat"]) for p in f["parquets"]]
    return [(f.get("filename") or f["path"], f["stat"])] if "stat" in f else []


def build_after(raw: bytes | None, fixes: list[Fix], now: str | None = None) -> bytes:
    """The registry bytes with `fixes` applied to the registry in `raw` (rebuilt when one is registry_corrupt)."""
    stamp = now or datetime.now(UTC).isoformat()
    rebuild = next((f for f in fixes if f.kind == fk.REGISTRY_CORRUPT), None)
    registry = _rebuilt(rebuild, stamp) if rebuild is not None else parsed(raw)
    assert registry is not None, "fixes other than a rebuild need a registry that parses"
    for fix in fixes:
        if fix.kind != fk.REGISTRY_CORRUPT:
            apply_fix(registry, fix, stamp)
    return encode_registry(registry)


def _rebuilt(fix: Fix, now: str) -> dict[str, Any]:
    registry = empty_registry()
    for p in fix.facts["parquets"]:
        registry["analyses"][p["name"]] = _analysis_entry(p, now)
    return registry


def _analysis_entry(facts: dict[str, Any], now: str) -> dict[str, Any]:
    return {
        "filename": facts["filename"],
        "row_count": facts["rows"],
        "columns": facts["columns"],
        "created_at": now,
        "updated_at": now,
        "extras": {},
    }


def apply_fix(registry: dict[str, Any], fix: Fix, now: str) -> None:
    """Apply one (re-checked) fix to `registry` in place: `updated_at` set, `created_at` kept."""
    f = fix.facts
    analyses, artifacts = registry["analyses"], registry["artifacts"]
    if fix.kind == fk.ROW_COUNT_MISMATCH:
        analyses[fix.item].update(row_count=f["rows"], updated_at=now)
    elif fix.kind == fk.COLUMNS_MISMATCH:
        analyses[fix.item].update(columns=f["columns"], updated_at=now)
    elif fix.kind == fk.EXTRA_FILE:
        analyses[f["name"]] = _analysis_entry(f, now)
    elif fix.kind == fk.MISSING_FILE:
        del analyses[fix.item]
    elif fix.kind == fk.ARTIFACT_MISSING_FILE:
        entry = artifacts[f["artifact"]]
        entry["files"] = [p for p in entry["files"] if p != f["path"]]
        entry["checksums"].pop(f["path"], None)
        if entry["files"]:
            entry["updated_at"] = now
        else:
            del artifacts[f["artifact"]]
    elif fix.kind == fk.ARTIFACT_CHECKSUM_MISMATCH:
        entry = artifacts[f["artifact"]]
        entry["checksums"][f["path"]] = f["sha256"]
        entry["updated_at"] = now
