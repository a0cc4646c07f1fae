"""Pieces every subcommand shares: the parser class, argument types, cluster options, rendering."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from ..errors import UsageError


class Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        raise UsageError(f"{self.prog}: {message}")


def positive(value: str) -> int:
    try:
        n = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value!r}") from None
    if n <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value!r}")
    return n


def add_cluster_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("cluster")
    g.add_argument("--workers", type=positive, help="worker processes for the local cluster (default: one per core, fewer for small campaigns)")
    target = g.add_mutually_exclusive_group()
    target.add_argument("--scheduler", metavar="ADDRESS", help="use a running Dask scheduler (tcp://host:port)")
    target.add_argument("--scheduler-file", metavar="PATH", help="use the scheduler described by a Dask scheduler file")
    dash = g.add_mutually_exclusive_group()
    dash.add_argument("--dashboard", dest="dashboard", action="store_true", default=None, help="always start the Dask dashboard (default: only for campaigns over 10,000 simulations)")
    dash.add_argument("--no-dashboard", dest="dashboard", action="store_false", help="never start the Dask dashboard")



def cluster_options(args: argparse.Namespace) -> Any:
    """ClusterOptions from the shared cluster arguments."""
    from ..engine import ClusterOptions

    return ClusterOptions(workers=args.workers, scheduler=args.scheduler, scheduler_file=args.scheduler_file, dashboard=args.dashboard)


def write_json(target: str | None, payload: dict[str, Any]) -> None:
    """Write `payload` as JSON to a file (atomically) or to stdout for '-'."""
    if not target:
        return
    text = json.dumps(payload, indent=2, ensure_ascii=False) + "\n"
    if target == "-":
        sys.stdout.write(text)
    else:
        from ..atomic import atomic_write_text

        atomic_write_text(target, text)


def human_bytes(n: int) -> str:
    """1536 -> '1.5 KB'."""
    size = float(n)
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if size < 1024 or unit == "TB":
            return f"{size:.1f} {unit}" if unit != "B" else f"{int(size)} B"
        size /= 1024
    return f"{n} B"
