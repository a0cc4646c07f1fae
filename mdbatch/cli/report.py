"""`mdbatch report [RUN_ID|last] --output report.html` (`mdbatch audit --report` calls the same writer)."""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
from typing import Any

from .common import DB_HELP, human_bytes, positive, say


def register(sub: Any) -> None:
    """Add the `report` subcommand."""
    p = sub.add_parser("report", help="write a self-contained HTML report of an audit run")
    p.add_argument("run", nargs="?", default="last", help="audit run id, or 'last' (default) for the newest audit")
    p.add_argument("--db", help=DB_HELP)
    p.add_argument(
        "-o", "--output", default="report.html", metavar="PATH", help="HTML file to write, '-' for stdout (default: report.html)"
    )
    p.add_argument("--top", type=positive, default=20, help="duplicate groups to list (default 20)")
    p.add_argument("--quiet", action="store_true", default=argparse.SUPPRESS, help="print nothing on success")
    p.set_defaults(func=_cmd_report)


def _cmd_report(args: argparse.Namespace) -> int:
    info = write_report_to(args.db, args.output, args.run, top=args.top)
    if info is not None:
        say(args, describe(info))
    return 0


def write_report_to(catalog: Any, output: str, run: str, *, top: int = 20) -> Any:
    """Write the report to `output`, or to stdout for '-' (then returns None: nothing to describe)."""
    from ..report import write_report

    if output != "-":
        return write_report(catalog, output, run, top=top)
    with tempfile.TemporaryDirectory(prefix="mdbatch-report-") as tmp:
        page = os.path.join(tmp, "report.html")
        write_report(catalog, page, run, top=top)
        sys.stdout.flush()
        with open(page, "rb") as handle:
            shutil.copyfileobj(handle, sys.stdout.buffer)
        sys.stdout.buffer.flush()
    return None


def describe(info: Any) -> str:
    """One line saying what a report holds and where it went."""
    return (
        f"wrote {info.path} ({human_bytes(info.bytes)}): run {info.run_id} of {info.root}, "
        f"{info.simulations:,} simulations, {info.findings:,} findings"
    )
