"""The house stays in order: mypy and ruff clean, short modules and functions, no import cycle.

These are the limits the style notes set (../shared/STYLE.md); a change that breaks one fails here,
not in a reviewer's reading.
"""

from __future__ import annotations

import ast
import shutil
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "mdbatch"
#: Checked trees (tests and benchmarks are code too).
LINTED = ["mdbatch", "tests", "benchmarks", "examples"]
MAX_MODULE_LINES = 600
MAX_FUNCTION_LINES = 80


def _ruff() -> list[str]:
    exe = shutil.which("ruff", path=str(Path(sys.executable).parent)) or shutil.which("ruff")
    return [exe] if exe else [sys.executable, "-m", "ruff"]


def test_package_is_mypy_clean(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "mypy", "--cache-dir", str(tmp_path / "cache"), "mdbatch"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


@pytest.mark.parametrize("command", [["check"], ["format", "--check"]], ids=["lint", "format"])
def test_code_is_ruff_clean(command: list[str]) -> None:
    proc = subprocess.run([*_ruff(), *command, *LINTED], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def _modules() -> dict[str, Path]:
    out = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        name = ".".join(path.relative_to(ROOT).with_suffix("").parts)
        out[name.removesuffix(".__init__")] = path
    return out


def test_modules_and_functions_are_short() -> None:
    long_modules, long_functions = [], []
    for name, path in _modules().items():
        text = path.read_text(encoding="utf-8")
        if text.count("\n") > MAX_MODULE_LINES:
            long_modules.append((name, text.count("\n")))
        for node in ast.walk(ast.parse(text)):
            is_function = isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.end_lineno is not None
            if is_function and (lines := node.end_lineno - node.lineno + 1) > MAX_FUNCTION_LINES:  # type: ignore[union-attr,operator]
                long_functions.append((f"{name}.{node.name}", lines))  # type: ignore[union-attr]
    assert long_modules == [] and long_functions == []


def _imports(name: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """The package's modules that module `name` imports, anywhere in it (inside functions too)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        targets: list[str] = []
        if isinstance(node, ast.ImportFrom):
            base = package.split(".")[: len(package.split(".")) - (node.level - 1)] if node.level else []
            target = ".".join([*base, *([node.module] if node.module else [])]) if node.level else (node.module or "")
            targets = [t for t in (f"{target}.{a.name}" for a in node.names) if t in modules] or [target]
        elif isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        found.update(t for t in targets if t in modules and t != name)
    return found


def test_no_import_cycle() -> None:
    modules = _modules()
    graph = {name: _imports(name, path, modules) for name, path in modules.items()}
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    cycles: list[list[str]] = []
    counter = iter(range(len(graph) * 2))
    children: dict[str, list[str]] = defaultdict(list, {k: sorted(v) for k, v in graph.items()})

    def visit(v: str) -> None:  # Tarjan's strongly connected components
        index[v] = low[v] = next(counter)
        stack.append(v)
        for w in children[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    assert cycles == []
