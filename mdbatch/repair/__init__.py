"""`mdbatch repair`: fix registries from an audit's findings, journaled and undoable.

`fixes` plans and applies the fix of each finding kind (pure: a directory in, a plan out);
`commit` replaces registries under their locks with a journal and catalog snapshots; `recover`
finishes what a killed run left; `undo` puts registries back; `run` drives a repair (see
docs/repair.md).
"""

from __future__ import annotations

from .fixes import plan_simulation
from .model import FIXED_KINDS, FLAGGED_KINDS, REPAIRABLE, Fix, Outcome, RepairResult, SimPlan, SimTask, Skip
from .run import registry_diff, repair
from .undo import history, restore, undo

__all__ = [
    "FIXED_KINDS",
    "FLAGGED_KINDS",
    "REPAIRABLE",
    "Fix",
    "Outcome",
    "RepairResult",
    "SimPlan",
    "SimTask",
    "Skip",
    "history",
    "plan_simulation",
    "registry_diff",
    "repair",
    "restore",
    "undo",
]
