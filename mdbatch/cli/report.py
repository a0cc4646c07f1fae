"""`mdbatch report [RUN_ID|last] --output report.html` (`mdbatch audit --report` calls the same writer)."""

from __future__ import annotations

import argparse
from typing import Any

from .common import human_bytes, positive


def register(sub: Any) -> None:
    """Add the `report` subcommand."""
    p = sub.add_parser("report", help="write a self-contained HTML report of an audit run")
    p.add_argument("run", nargs="?", default="last", help="audit run id, or 'last' (default) for the newest audit")
    p.add_argument("--db", help="catalog URL (default: $MDBATCH_DB, else sqlite:///mdbatch.db)")
    p.add_argument("-o", "--output", default="report.html", metavar="PATH", help="HTML file to write (default: report.html)")
    p.add_argument("--top", type=positive, default=20, help="duplicate groups to list (default 20)")
    p.add_argument("--quiet", action="store_true", help="print nothing on success")
    p.set_defaults(func=_cmd_report)


def _cmd_report(args: argparse.Namespace) -> int:
    from ..report import write_report

    info = write_report(args.db, args.output, args.run, top=args.top)
    if not args.quiet:
        print(describe(info))
    return 0


def describe(info: Any) -> str:
    """One line saying what a report holds and where it went."""
    return (
        f"wrote {info.path} ({human_bytes(info.bytes)}): run {info.run_id} of {info.root}, "
        f"{info.simulations:,} simulations, {info.findings:,} findings"
    )
