"""`repair`: fix the registries from an audit's findings, fanned out like the audit, journaled, undoable.

Order of a run: read the findings of the audit (default: the last completed audit of ROOT), plan
every simulation that has a fixable one (`fixes.plan_simulation`, on the Dask cluster or in this
process when that is faster), and for a dry run stop there with a diff per registry. Otherwise ask
(`confirm`) once, record the run, recover what a killed repair left, and replace the registries a
batch at a time, each fix re-checked under the registry's lock (`commit.py`).
"""

from __future__ import annotations

import difflib
import os
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from typing import IO, Any

import pyarrow as pa

from ..catalog import queries, schema
from ..catalog.base import CatalogBackend
from ..config import resolve_url
from ..engine import ClusterOptions, Fanout, Inline, inline_is_faster
from ..engine import plan as size_plan
from ..errors import UsageError
from ..registry.format import ANALYSIS_DIRNAME, REGISTRY_FILENAME
from .commit import Decision, Target
from .fixes import build_after, parsed, plan_group, recheck
from .journal import pending_journals
from .model import FLAGGED_KINDS, REPAIRABLE, RepairResult, SimPlan, SimTask, Skip
from .session import Session, command_catalog, counts, session

#: Seconds one simulation's plan takes (a registry, a footer or two): sizes the fan-out.
PLAN_S = 0.004
Confirm = Callable[[list[SimPlan]], bool]


def repair(
    root: str | os.PathLike[str] | None = None,
    *,
    db: str | None = None,
    run: str = "last",
    kinds: Sequence[str] | None = None,
    simulation: str | None = None,
    dry_run: bool = False,
    accept_checksums: bool = False,
    rebuild_corrupt: bool = False,
    cluster: ClusterOptions | None = None,
    confirm: Confirm | None = None,
    progress: bool = True,
    log_stream: IO[str] | None = None,
    arguments: dict[str, Any] | None = None,
) -> RepairResult:
    """Fix the registries of `root` from audit `run`'s findings; returns the run's result.

    `kinds` limits the kinds fixed, `simulation` to one simulation (relative to the root).
    `artifact_checksum_mismatch` is fixed only with `accept_checksums`, `registry_corrupt` only with
    `rebuild_corrupt`. A dry run writes nothing, on disk or in the catalog. `confirm(plans)` is asked
    once before anything is written; False ends the run `refused` with nothing changed.
    """
    started = time.monotonic()
    say = _say(progress, log_stream or sys.stderr)
    with command_catalog(db, read_only=dry_run) as catalog:
        audit = _audit_run(catalog, root, run)
        top = str(audit["root"])
        allowed = _allowed(kinds, accept_checksums, rebuild_corrupt)
        tasks, left = _tasks(catalog, str(audit["run_id"]), top, simulation, allowed, kinds)
        head = {"command": "repair", "root": top, "audit_run": audit["run_id"], "catalog": catalog.display_url, **left}
        if dry_run:
            return _dry_run(tasks, cluster, head, say, started)
        with session(catalog, top, "repair", arguments or {}, resolve_url(db)) as s:
            info: dict[str, Any] = {}
            s.describe = lambda s: {**head, "mode": "repair", **_described(s, info, started)}
            plans = _plan(tasks, cluster, say, info)
            if confirm is not None and not confirm(plans):
                s.end_as = "refused"
                say("nothing changed (not confirmed)")
            else:
                s.replace(_targets(catalog, top, plans))
        return RepairResult(s.run_id, s.summary, s.outcomes)


def _say(progress: bool, stream: IO[str]) -> Callable[[str], None]:
    def say(message: str) -> None:
        if progress:
            stream.write(f"mdbatch repair: {message}\n")
            stream.flush()

    return say


def _audit_run(catalog: CatalogBackend, root: str | os.PathLike[str] | None, run: str) -> dict[str, Any]:
    """The audit run whose findings are fixed: `run` (an id), or the last completed audit of `root`."""
    top = os.path.abspath(os.fspath(root)) if root is not None else None
    if run != "last":
        found = queries.resolve_run(catalog, run, command="audit")
        if top is not None and found["root"] != top:
            raise UsageError(f"audit run {run} is of {found['root']}, not of {top}")
        return found
    if top is None:
        raise UsageError("repair: give the campaign ROOT (its last completed audit is repaired) or --run RUN")
    audits = queries.audits_of(catalog, top)
    if not audits:
        raise UsageError(f"no completed audit of {top} in {catalog.display_url}: run `mdbatch audit {top}` first")
    return audits[-1]


def _allowed(kinds: Sequence[str] | None, accept_checksums: bool, rebuild_corrupt: bool) -> set[str]:
    """The kinds this repair fixes: the fixable ones asked for, the flagged ones only with their option."""
    from ..findings import KINDS

    unknown = sorted(set(kinds or ()) - set(KINDS))
    if unknown:
        raise UsageError(f"--kind: unknown finding kind(s) {', '.join(unknown)} (known: {', '.join(KINDS)})")
    flags = {"--accept-checksums": accept_checksums, "--rebuild-corrupt": rebuild_corrupt}
    return {k for k in REPAIRABLE if (kinds is None or k in kinds) and (k not in FLAGGED_KINDS or flags[FLAGGED_KINDS[k]])}


def _tasks(
    catalog: CatalogBackend, run_id: str, root: str, simulation: str | None, allowed: set[str], kinds: Sequence[str] | None
) -> tuple[list[SimTask], dict[str, Any]]:
    """One task per simulation with a finding to fix; and the findings left (counts by kind, and why)."""
    where: dict[str, Any] = {"run_id": run_id, **({"simulation": simulation} if simulation is not None else {})}
    per_sim: dict[str, list[tuple[str, str]]] = {}
    never: Counter[str] = Counter()
    needs: Counter[str] = Counter()
    total = 0
    for chunk in catalog.iter_rows(schema.FINDINGS.name, where, ["simulation", "kind", "item"]):
        for row in chunk.to_pylist():
            kind = row["kind"]
            if kinds is not None and kind not in kinds:
                continue
            total += 1
            if kind in allowed:
                per_sim.setdefault(row["simulation"], []).append((kind, row["item"]))
            elif kind in FLAGGED_KINDS and kind in REPAIRABLE:
                needs[kind] += 1
            else:
                never[kind] += 1
    tasks = [SimTask(sim, os.path.join(root, sim), tuple(sorted(set(found)))) for sim, found in sorted(per_sim.items())]
    left = {
        "findings": total,
        "to_fix": sum(len(t.findings) for t in tasks),
        "never_fixed": dict(sorted(never.items())),
        "needs_option": {k: {"count": n, "option": FLAGGED_KINDS[k]} for k, n in sorted(needs.items())},
    }
    return tasks, left


def _chunks(tasks: list[SimTask], size: int) -> Iterator[list[SimTask]]:
    for start in range(0, len(tasks), size):
        yield tasks[start : start + size]


def _plan(tasks: list[SimTask], cluster: ClusterOptions | None, say: Callable[[str], None], info: dict[str, Any]) -> list[SimPlan]:
    """Plan every task: in this process when that beats starting a cluster, else on the Dask cluster."""
    options = cluster or ClusterOptions()
    t0 = time.monotonic()
    workers, size = size_plan(len(tasks), True, options.workers or os.cpu_count() or 1, None)
    inline = inline_is_faster(options, len(tasks) * PLAN_S)
    runner = Inline() if inline else Fanout(options, workers_needed=workers, dashboard=False)
    plans: list[SimPlan] = []
    with runner as fan:
        info.update(in_process=inline, workers=fan.n_workers)
        for batch in fan.stream(plan_group, _chunks(tasks, size), prefix="repair-plan"):
            plans.extend(batch)
    info["plan_s"] = round(time.monotonic() - t0, 3)
    info["plans"] = plans
    say(f"planned {len(tasks)} simulations in {info['plan_s']:.1f}s ({'in process' if inline else f'{fan.n_workers} Dask workers'})")
    return plans


def _hashes(catalog: CatalogBackend, root: str, sims: list[str]) -> dict[str, str | None]:
    """The identity hash the catalog records for each simulation of `root`."""
    if not sims:
        return {}
    match = pa.table({"root": pa.array([root] * len(sims), pa.string()), "simulation": pa.array(sims, pa.string())})
    rows = catalog.rows_matching(schema.SIMULATIONS.name, match, ["simulation", "hash"]).to_pylist()
    return {r["simulation"]: r["hash"] for r in rows}


def _targets(catalog: CatalogBackend, root: str, plans: list[SimPlan]) -> list[Target]:
    """The registries to replace, each deciding its bytes afresh under its lock."""
    changing = [p for p in plans if p.changes]
    hashes = _hashes(catalog, root, [p.simulation for p in changing])
    return [Target(p.simulation, p.directory, hashes.get(p.simulation), _decider(p)) for p in changing]


def _decider(plan: SimPlan) -> Callable[[bytes | None], Decision]:
    """Under the lock: re-check each planned fix against the registry and files now, apply those that hold."""

    def decide(current: bytes | None) -> Decision:
        registry = parsed(current)
        analysis = os.path.join(plan.directory, ANALYSIS_DIRNAME)
        holding, skipped = [], list(plan.skipped)
        for fix in plan.fixes:
            reason = recheck(fix, registry, current, analysis)
            if reason is None:
                holding.append(fix)
            else:
                skipped.append(Skip(plan.simulation, fix.kind, fix.item, reason))
        if not holding:
            return Decision(False, skipped=tuple(skipped))
        after = build_after(current, holding)
        return Decision(True, after, tuple(f.to_dict() for f in holding), tuple(skipped))

    return decide


def _described(s: Session, info: dict[str, Any], started: float) -> dict[str, Any]:
    """A repair's summary keys from what it has done."""
    plans: list[SimPlan] = info.get("plans", [])
    skipped = [k.to_dict() for p in plans if not p.changes for k in p.skipped]
    skipped += [k.to_dict() for o in s.outcomes for k in o.skipped]
    return {
        "planned_simulations": len(plans),
        **counts(s.outcomes),
        "skipped": skipped,
        "in_process": info.get("in_process"),
        "workers": info.get("workers"),
        "plan_s": info.get("plan_s"),
        "elapsed_s": round(time.monotonic() - started, 3),
    }


def _dry_run(
    tasks: list[SimTask], cluster: ClusterOptions | None, head: dict[str, Any], say: Callable[[str], None], started: float
) -> RepairResult:
    """Plan only: the diff of every registry that would change; nothing written anywhere."""
    info: dict[str, Any] = {}
    plans = _plan(tasks, cluster, say, info)
    changing = [p for p in plans if p.changes]
    diffs = [registry_diff(p.simulation, p.before, p.after) for p in changing]
    fixes = Counter(f.kind for p in changing for f in p.fixes)
    summary = {
        **head,
        "run_id": None,
        "mode": "dry-run",
        "outcome": "completed",
        "planned_simulations": len(plans),
        "registries_changed": len(changing),
        "fixed": dict(sorted(fixes.items())),
        "skipped": [k.to_dict() for p in plans for k in p.skipped],
        "conflicts": [],
        "failed": [],
        "pending_journals": len(pending_journals(str(head["root"]))),
        "in_process": info.get("in_process"),
        "workers": info.get("workers"),
        "elapsed_s": round(time.monotonic() - started, 3),
    }
    return RepairResult("", summary, [], diffs)


def registry_diff(simulation: str, before: bytes | None, after: bytes | None) -> str:
    """A unified diff of one registry's text before and after (an absent file diffs as empty)."""
    name = f"{simulation}/{ANALYSIS_DIRNAME}/{REGISTRY_FILENAME}"
    old = (before or b"").decode("utf-8", "replace").splitlines(keepends=True)
    new = (after or b"").decode("utf-8", "replace").splitlines(keepends=True)
    lines = difflib.unified_diff(old, new, f"a/{name}", f"b/{name}")
    return "".join(line if line.endswith("\n") else line + "\n\\ No newline at end of file\n" for line in lines)
