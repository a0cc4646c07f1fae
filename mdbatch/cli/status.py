"""`mdbatch status [ROOT]`: what changed on disk since the last audit, like `git status` (stat calls only)."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from .common import DB_HELP, write_json

COLUMNS = ["simulation", "change", "path", "detail"]
#: Status rows carry paths and "from A/B" details: wider cells than other tables.
CELL = 100


def register(sub: Any) -> None:
    """Add the `status` subcommand."""
    p = sub.add_parser(
        "status",
        help="what changed on disk since the last audit (new, missing, changed, moved files; new and vanished simulations)",
        description=(
            "Compare the simulations under ROOT with what the catalog recorded of them, from directory listings and "
            "lstat alone (no file is read, nothing is written). Exit 0 when nothing changed, 1 when something did, 2 on error."
        ),
    )
    p.add_argument(
        "root",
        nargs="?",
        help="campaign root or a directory inside one (default: the current directory when it lies in an audited root, "
        "else the root of the newest audit)",
    )
    p.add_argument("--db", help=DB_HELP)
    p.add_argument("--json", metavar="PATH", help="write the status as JSON ('-' for stdout)")
    p.set_defaults(func=_cmd_status)


def _cmd_status(args: argparse.Namespace) -> int:
    from ..status import status

    report = status(args.root, db=args.db)
    write_json(args.json, report.to_dict())
    if not args.quiet:
        print(render(report), file=sys.stderr if args.json == "-" else sys.stdout, end="")
    return 0 if report.clean else 1


def render(report: Any) -> str:
    """The human view: where the baseline comes from, one table grouped per simulation, the totals."""
    import io

    from ..status import iter_rows
    from .render import table

    out = io.StringIO()
    where = report.root + (f" (below {report.subtree})" if report.subtree else "")
    base = report.baseline
    out.write(f"status of {where} against audit {base['run_id']} (completed {_when(base.get('ended_at'))}) in {report.catalog}\n")
    if report.clean:
        out.write(
            f"nothing changed: {report.found} simulations, {report.files_on_record} files as recorded "
            f"({report.unchanged} proven unchanged by their fingerprint; {report.elapsed_s:.1f}s)\n"
        )
        return out.getvalue()
    out.write("\n")
    table(iter_rows(report), COLUMNS, out, cell=CELL, footer=False)
    counts = report.counts()
    sims, files = counts["simulations"], counts["files"]
    out.write(
        f"\n{len(report.changes)} of {max(report.found, report.on_record)} simulations differ: "
        f"{sims['new']} new, {sims['vanished']} vanished, {sims['modified']} modified; "
        f"files: {files['new']} new, {files['missing']} missing, {files['changed']} changed, {files['moved']} moved\n"
    )
    if report.unreadable_directories:
        out.write(f"{len(report.unreadable_directories)} directories could not be read: simulations below them may be missed\n")
    out.write(f"record them with: mdbatch audit {report.root}\n")
    return out.getvalue()


def _when(iso: str | None) -> str:
    return iso.replace("T", " ")[:19] + " UTC" if iso else "at an unknown time"
