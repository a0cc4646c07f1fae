"""What the fault tests share: running the real CLI, and reading a SQLite catalog through raw SQL."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

#: As root, file permissions do not apply; dropping these capabilities makes them apply again.
DROP_DAC = ["setpriv", "--inh-caps=-dac_override,-dac_read_search", "--bounding-set=-dac_override,-dac_read_search"]


def mdbatch(
    *args: str | os.PathLike[str], timeout: float = 300, env: dict[str, str] | None = None, permissions: bool = False
) -> subprocess.CompletedProcess[str]:
    """Run `python -m mdbatch ARGS` to completion (stdin closed), capturing its output.

    With `permissions`, file permissions hold even when the tests run as root (DAC capabilities dropped).
    """
    prefix = DROP_DAC if permissions and os.geteuid() == 0 else []
    return subprocess.run(
        [*prefix, sys.executable, "-m", "mdbatch", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
        env={**os.environ, **(env or {})},
    )


def rows(db: Path, sql: str, *params: Any) -> list[tuple[Any, ...]]:
    """Rows of a query on the SQLite catalog `db`, through sqlite3 rather than mdbatch."""
    with sqlite3.connect(db, timeout=60) as conn:
        return conn.execute(sql, params).fetchall()


def value(db: Path, sql: str, *params: Any) -> Any:
    found = rows(db, sql, *params)
    return found[0][0] if found else None


def summary(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text(encoding="utf-8"))


def one_error_line(stderr: str) -> str:
    """The single `error: ...` line a failing command must print, and nothing else."""
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), stderr
    return lines[0]
