"""Lineage: which registry entries of a simulation were made from which, and what that graph says.

The convention (see docs/lineage.md): an analysis or artifact entry may carry
``extras.depends_on``, a list of references ``"analysis:<name>"`` or ``"artifact:<name>"`` to
entries of the same simulation's registry. MDFactory keeps unknown extras as they are, so a
registry with lineage stays an MDFactory registry.

`check_lineage` turns one registry (plus the mtimes of its files) into the graph's edges and the
findings they imply; it is pure (no I/O), so the scan calls it and tests call it directly:

- ``dependency_missing``: a reference names no entry of the registry (or is not a reference);
- ``dependency_cycle``: entries that depend on themselves through the graph, once per strongly
  connected group (a self-reference included), naming its members;
- ``stale_dependency``: an upstream entry changed after its dependent was made: the upstream's
  registry time (``updated_at``, else ``created_at``) is later than the dependent's, or one of the
  upstream's files has an mtime later than the dependent's registry time.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from . import findings as fk
from .errors import MdbatchError
from .findings import Finding
from .naming import is_valid_name
from .paths import contained, display

ANALYSIS = "analysis"
ARTIFACT = "artifact"
#: Registry sections by reference kind.
SECTIONS = {ANALYSIS: "analyses", ARTIFACT: "artifacts"}
#: Edge states, as `Catalog.lineage` reports them.
OK, STALE, MISSING, CYCLE = "ok", "stale", "missing", "cycle"
EDGE_STATES = (OK, STALE, MISSING, CYCLE)
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_SYNTAX = "'analysis:<name>' or 'artifact:<name>' (name: letters, digits, underscore)"


class InvalidDependencyError(MdbatchError, ValueError):
    """A `depends_on` reference is not ``analysis:<name>`` or ``artifact:<name>``."""

    def __init__(self, reference: object, reason: str = "") -> None:
        super().__init__(f"invalid dependency {reference!r}: {reason or 'expected ' + _SYNTAX}")
        self.reference = reference
        self.reason = reason

    def __reduce__(self) -> tuple[Any, ...]:  # survive pickling across processes
        return type(self), (self.reference, self.reason)


def parse_reference(reference: object) -> tuple[str, str]:
    """(kind, name) of a reference ``analysis:<name>`` / ``artifact:<name>``; InvalidDependencyError otherwise."""
    if not isinstance(reference, str):
        raise InvalidDependencyError(reference, f"a reference is a string, not {type(reference).__name__}")
    kind, sep, name = reference.partition(":")
    if not sep or kind not in SECTIONS or not is_valid_name(name):
        raise InvalidDependencyError(reference)
    return kind, name


def check_references(references: Iterable[object] | None) -> list[str]:
    """The references to write as ``extras.depends_on``: each checked, duplicates dropped, order kept.

    A lone string is refused (``depends_on="analysis:x"`` would otherwise read as its characters).
    """
    if references is None:
        return []
    if isinstance(references, (str, bytes)):
        raise InvalidDependencyError(references, "depends_on is a list of references, not one string")
    out: list[str] = []
    for ref in references:
        parse_reference(ref)
        if ref not in out:
            out.append(ref)  # type: ignore[arg-type]  # parse_reference proved it a str
    return out


@dataclass(frozen=True, slots=True)
class Edge:
    """One declared dependency: `item` (the dependent, ``kind:name``) was made from `depends_on`.

    `state` is one of EDGE_STATES; `detail` says why when it is not ``ok``.
    """

    item: str
    depends_on: str
    state: str
    detail: str = ""


@dataclass(frozen=True, slots=True)
class _Node:
    """One registry entry as the graph needs it: its registry time and its files' latest mtime."""

    time: datetime | None
    mtime_ns: int | None
    newest_file: str | None
    declared: tuple[str, ...]
    malformed: str  # why extras.depends_on is unusable as a whole ("" when it is a list)


def declared_references(entry: object) -> tuple[list[str], str]:
    """The references an entry declares (non-strings as their JSON text) and, when `depends_on`
    is present but not a list, why it is unusable."""
    extras = entry.get("extras") if isinstance(entry, dict) else None
    if not isinstance(extras, dict) or "depends_on" not in extras:
        return [], ""
    value = extras["depends_on"]
    if not isinstance(value, list):
        return [], f"extras.depends_on is {json.dumps(value)[:80]}, not a list of references"
    refs: list[str] = []
    for ref in value:
        text = ref if isinstance(ref, str) else json.dumps(ref)
        if text not in refs:
            refs.append(text)
    return refs, ""


def registry_time(entry: Mapping[str, Any]) -> datetime | None:
    """When an entry was last written: its ``updated_at``, else ``created_at`` (naive = UTC); None if neither parses."""
    for key in ("updated_at", "created_at"):
        value = entry.get(key)
        if isinstance(value, str) and value:
            try:
                parsed = datetime.fromisoformat(value)
            except ValueError:
                continue
            return (parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)).astimezone(UTC)
    return None


def entry_files(kind: str, entry: Mapping[str, Any]) -> list[str]:
    """The files of an entry as paths relative to `.analysis` (normalized; unsafe paths left out)."""
    paths = [entry.get("filename")] if kind == ANALYSIS else entry.get("files") or []
    return [norm for p in paths if (norm := contained(p)) is not None]


def _nodes(registry: Mapping[str, Any], mtimes: Mapping[str, int]) -> dict[str, _Node]:
    nodes: dict[str, _Node] = {}
    for kind, section in SECTIONS.items():
        for name, entry in registry.get(section, {}).items():
            if not isinstance(entry, dict):
                continue
            stamps = [(mtimes[f".analysis/{rel}"], rel) for rel in entry_files(kind, entry) if f".analysis/{rel}" in mtimes]
            newest = max(stamps) if stamps else None
            refs, malformed = declared_references(entry)
            nodes[f"{kind}:{display(name)}"] = _Node(
                registry_time(entry), newest[0] if newest else None, newest[1] if newest else None, tuple(refs), malformed
            )
    return nodes


def check_lineage(
    simulation: str, registry: Mapping[str, Any], mtimes: Mapping[str, int] | None = None
) -> tuple[tuple[Edge, ...], tuple[Finding, ...]]:
    """The edges of one simulation's dependency graph and the lineage findings they imply.

    `registry` is a parsed registry (see `registry.format.parse_registry`); `mtimes` maps the
    simulation's files (``.analysis/<path>``, as the inventory shows them) to their mtime in ns,
    for the "bytes changed" rule (files it lacks are not compared). Edges come sorted by
    (item, depends_on); findings by kind, then item.
    """
    nodes = _nodes(registry, mtimes or {})
    found: list[Finding] = []
    raw: list[tuple[str, str]] = []
    for item, node in sorted(nodes.items()):
        if node.malformed:
            found.append(Finding(simulation, fk.DEPENDENCY_MISSING, item, node.malformed))
        raw.extend((item, ref) for ref in node.declared)
    graph = {item: [ref for i, ref in raw if i == item and ref in nodes] for item in nodes}
    in_cycle: set[tuple[str, str]] = set()
    for members in _cycles(graph):
        group = set(members)
        in_cycle |= {(a, b) for a in members for b in graph[a] if b in group}
        found.append(
            Finding(simulation, fk.DEPENDENCY_CYCLE, ", ".join(sorted(members)), "cycle: " + " -> ".join(_cycle_path(graph, group)))
        )
    edges: list[Edge] = []
    for item, ref in sorted(raw):
        key = f"{item} -> {ref}"
        if ref not in nodes:
            why = f"{ref} is not in the registry" if _is_reference(ref) else f"{ref} is not a reference ({_SYNTAX})"
            edges.append(Edge(item, ref, MISSING, why))
            found.append(Finding(simulation, fk.DEPENDENCY_MISSING, key, why))
        elif (item, ref) in in_cycle:
            edges.append(Edge(item, ref, CYCLE, "part of a dependency cycle"))
        elif why := _staleness(ref, nodes[ref], item, nodes[item]):
            edges.append(Edge(item, ref, STALE, why))
            found.append(Finding(simulation, fk.STALE_DEPENDENCY, key, why))
        else:
            edges.append(Edge(item, ref, OK))
    found.sort(key=lambda f: (fk.KINDS.index(f.kind), f.item))
    return tuple(edges), tuple(found)


def _is_reference(ref: str) -> bool:
    try:
        parse_reference(ref)
    except InvalidDependencyError:
        return False
    return True


def _staleness(up_item: str, up: _Node, item: str, node: _Node) -> str:
    """Why `item` is stale with respect to its upstream `up_item`, or "" when it is not (or cannot be told)."""
    made = node.time
    if made is None:
        return ""
    if up.time is not None and up.time > made:
        return f"{up_item} was updated at {_iso(up.time)}, after {item} ({_iso(made)})"
    if up.mtime_ns is not None and up.mtime_ns > _ns(made):
        changed = _EPOCH + timedelta(microseconds=up.mtime_ns // 1000)
        return f"{up_item}'s file .analysis/{up.newest_file} was modified at {_iso(changed)}, after {item} ({_iso(made)})"
    return ""


def _ns(moment: datetime) -> int:
    """A datetime as nanoseconds since the epoch, exactly (integer microseconds × 1000)."""
    return (moment - _EPOCH) // timedelta(microseconds=1) * 1000


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat()


def _cycles(graph: Mapping[str, list[str]]) -> list[list[str]]:
    """The strongly connected groups that hold a cycle (two or more members, or one depending on
    itself), each sorted, in sorted order. Tarjan's algorithm without recursion."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    groups: list[list[str]] = []
    counter = 0
    for start in sorted(graph):
        if start in index:
            continue
        work = [(start, 0)]
        while work:
            node, child = work.pop()
            if child == 0:
                index[node] = low[node] = counter
                counter += 1
                stack.append(node)
                on_stack.add(node)
            targets = graph[node]
            if child < len(targets):
                work.append((node, child + 1))
                nxt = targets[child]
                if nxt not in index:
                    work.append((nxt, 0))
                elif nxt in on_stack:
                    low[node] = min(low[node], index[nxt])
                continue
            if low[node] == index[node]:
                group: list[str] = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    group.append(member)
                    if member == node:
                        break
                if len(group) > 1 or node in graph[node]:
                    groups.append(sorted(group))
            if work:
                parent = work[-1][0]
                low[parent] = min(low[parent], low[node])
    return sorted(groups)


def _cycle_path(graph: Mapping[str, list[str]], group: set[str]) -> list[str]:
    """One concrete cycle through the group's smallest member (breadth-first, so the shortest one)."""
    start = min(group)
    previous: dict[str, str] = {}
    frontier = [start]
    while frontier:
        following: list[str] = []
        for node in frontier:
            for nxt in sorted(graph[node]):
                if nxt not in group:
                    continue
                if nxt == start:
                    path = [node]
                    while path[-1] != start:
                        path.append(previous[path[-1]])
                    return [*reversed(path), start]
                if nxt not in previous:
                    previous[nxt] = node
                    following.append(nxt)
        frontier = following
    return [start, start]  # unreachable for a strongly connected group


def depended_files(registry: Mapping[str, Any], mtimes: Mapping[str, int] | None = None) -> dict[str, list[str]]:
    """Files (relative to `.analysis`) of the upstream entries that some entry may have been made from
    an older version of, each with why: what `store gc` keeps.

    An upstream's files are listed for each entry that depends on it and is stale with respect to it
    (see `check_lineage`; `mtimes` as there) or has no registry time (it cannot be told): such an
    entry predates the upstream's current bytes, so an older copy of them may be what it was made
    from. Reasons read ``"analysis:rmsd <- artifact:plot: <why stale>"``.
    """
    nodes = _nodes(registry, mtimes or {})
    out: dict[str, list[str]] = {}
    for item, node in sorted(nodes.items()):
        for ref in node.declared:
            up = nodes.get(ref)
            if up is None:
                continue
            why = f"{item} has no registry time" if node.time is None else _staleness(ref, up, item, node)
            if not why:
                continue
            kind, _, name = ref.partition(":")
            entry = registry[SECTIONS[kind]].get(name) if kind in SECTIONS else None
            for rel in entry_files(kind, entry) if isinstance(entry, dict) else []:
                out.setdefault(rel, []).append(f"{ref} <- {item}: {why}")
    return out
