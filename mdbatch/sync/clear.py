"""`clear`: delete rows from the sync tables, after saying exactly what will go.

`clear systems` empties RUN_DATABASE; `clear analysis` takes one of --analysis-name N,
--artifact-name N, --overview, --analyses, --artifacts, --all; `clear all` is everything a push
writes (RUN_DATABASE, ANALYSIS_OVERVIEW, every ANALYSIS_<name> and ARTIFACT_<name>). Clearing an
item table also clears its rows of the overview, so the overview never describes data that is gone.
Tables stay (empty); mdbatch's own audit tables (MDBATCH_*) are never touched here.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..catalog import CatalogBackend, schema
from ..errors import UsageError

TARGETS = ("systems", "analysis", "all")


@dataclass(frozen=True, slots=True)
class ClearTarget:
    """Rows of one table to delete (all of them when `where` is empty)."""

    table: str
    where: tuple[tuple[str, Any], ...] = ()

    def describe(self) -> str:
        return self.table + (" where " + ", ".join(f"{k} = {v!r}" for k, v in self.where) if self.where else "")


def plan(
    catalog: CatalogBackend,
    what: str,
    *,
    analysis_name: str | None = None,
    artifact_name: str | None = None,
    overview: bool = False,
    analyses: bool = False,
    artifacts: bool = False,
    everything: bool = False,
) -> list[ClearTarget]:
    """The deletions `clear <what> [flag]` stands for, given the tables the catalog has."""
    if what not in TARGETS:
        raise UsageError(f"clear what? expected one of {', '.join(TARGETS)}, got {what!r}")
    items = [t for t in catalog.tables() if schema.item_kind(t) is not None]
    by_kind = {k: [t for t in items if schema.item_kind(t) == k] for k in ("analysis", "artifact")}
    if what == "systems":
        return [ClearTarget(schema.RUN_TABLE)]
    if what == "all":
        return [ClearTarget(schema.RUN_TABLE), ClearTarget(schema.OVERVIEW_TABLE)] + [ClearTarget(t) for t in items]
    chosen = [
        f
        for f, on in (
            ("--analysis-name", analysis_name),
            ("--artifact-name", artifact_name),
            ("--overview", overview),
            ("--analyses", analyses),
            ("--artifacts", artifacts),
            ("--all", everything),
        )
        if on
    ]
    if len(chosen) != 1:
        raise UsageError(
            "clear analysis needs exactly one of --analysis-name N, --artifact-name N, --overview, --analyses, --artifacts, --all"
        )
    if analysis_name is not None or artifact_name is not None:
        kind, name = ("analysis", analysis_name) if analysis_name is not None else ("artifact", artifact_name)
        assert name is not None
        return [
            ClearTarget(schema.item_table_name(kind, name)),
            ClearTarget(schema.OVERVIEW_TABLE, (("item_type", kind), ("item_name", name))),
        ]
    if overview:
        return [ClearTarget(schema.OVERVIEW_TABLE)]
    if everything:
        return [ClearTarget(schema.OVERVIEW_TABLE)] + [ClearTarget(t) for t in items]
    kind = "analysis" if analyses else "artifact"
    return [ClearTarget(t) for t in by_kind[kind]] + [ClearTarget(schema.OVERVIEW_TABLE, (("item_type", kind),))]


def count(catalog: CatalogBackend, targets: list[ClearTarget]) -> list[int]:
    """How many rows each target would delete now."""
    return [catalog.count_rows(t.table, dict(t.where)) for t in targets]


def execute(catalog: CatalogBackend, targets: list[ClearTarget]) -> list[int]:
    """Delete every target's rows in one transaction; rows deleted per target."""
    return catalog.clear([(t.table, dict(t.where)) for t in targets])
