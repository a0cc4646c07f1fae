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
import sys
import types
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
    from .audit import AuditResult, audit
    from .engine import ClusterOptions
    from .errors import MdbatchError
    from .registry import Registry
    from .report import ReportInfo

#: Lazy public names -> the module that defines them.
_LAZY = {
    "AuditResult": "audit",
    "Catalog": "api",
    "ClusterOptions": "engine",
    "MdbatchError": "errors",
    "Registry": "registry",
    "ReportInfo": "report",
}


def __getattr__(name: str) -> Any:
    if name == "audit":
        return importlib.import_module(".audit", __name__)  # the submodule, callable: see _AuditModule
    if name in _LAZY:
        value = getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))


class _AuditModule(types.ModuleType):
    """The `mdbatch.audit` submodule, callable as its `audit` function.

    `mdbatch.audit` names both the submodule and the function, and importing a submodule always
    binds its name on the package; making the module callable keeps `mdbatch.audit(root, ...)`,
    `mdbatch.audit.AuditResult` and `import mdbatch.audit` all working, in any import order.
    """

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.audit(*args, **kwargs)

    @property
    def __signature__(self) -> Any:
        import inspect

        return inspect.signature(self.audit)


class _Package(types.ModuleType):
    """This package's module type: whenever the `audit` submodule is bound here, it becomes callable."""

    def __setattr__(self, name: str, value: Any) -> None:
        if name == "audit" and type(value) is types.ModuleType:
            value.__class__ = _AuditModule
        super().__setattr__(name, value)


# Submodules import only after this package has run, so every binding of `audit` goes through _Package.
sys.modules[__name__].__class__ = _Package
