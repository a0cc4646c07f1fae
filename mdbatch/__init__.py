"""mdbatch: distributed batch auditing, cataloguing and deduplication of simulation campaigns.

The public API, for notebooks and scripts (the `mdbatch` command is a thin layer over it)::

    import mdbatch

    result = mdbatch.audit("/scratch/campaign", db="sqlite:///mdbatch.db")   # -> AuditResult
    result.summary, result.findings(), result.run_id
    cat = mdbatch.Catalog("sqlite:///mdbatch.db")                           # every query a DataFrame
    cat.systems(status="completed"), cat.findings(), cat.runs(), cat.diff(), cat.duplicates()
    cat.report("report.html")                                               # the HTML report
    mdbatch.Registry(sim_dir).list_analyses()                               # one simulation's registry

`import mdbatch` is cheap: the names below load their modules (pandas, pyarrow, SQLAlchemy, Dask)
on first use.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from .version import __version__

__all__ = [
    "AuditResult",
    "Catalog",
    "ClusterOptions",
    "MdbatchError",
    "Registry",
    "ReportInfo",
    "__version__",
    "audit",
]

if TYPE_CHECKING:
    from .api import Catalog
    from .auditing import AuditResult, audit
    from .engine import ClusterOptions
    from .errors import MdbatchError
    from .registry import Registry
    from .report import ReportInfo

#: Lazy public names -> the module that defines them (no submodule is called `audit`, so the
#: function is simply looked up in `auditing`).
_LAZY = {
    "AuditResult": "auditing",
    "Catalog": "api",
    "ClusterOptions": "engine",
    "MdbatchError": "errors",
    "Registry": "registry",
    "ReportInfo": "report",
    "audit": "auditing",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
