"""`mdbatch runs list|show|diff`: the run history of a catalog."""

from __future__ import annotations

import argparse
import json
import os
from typing import Any

from .common import output_frame


def register(sub: Any) -> None:
    """Add the `runs` subcommand family."""
    p = sub.add_parser("runs", help="run history: list runs, show one, diff two, prune removed simulations")
    runs = p.add_subparsers(dest="runs_command", required=True, parser_class=type(p))
    for name, helptext in (
        ("list", "every recorded run, oldest first"),
        ("show", "one run's summary and stage snapshots"),
        ("diff", "what changed between two audits of a root"),
    ):
        q = runs.add_parser(name, help=helptext)
        q.add_argument("--db", help="catalog URL (default: $MDBATCH_DB, else sqlite:///mdbatch.db)")
        q.add_argument("--output", metavar="FILE", help="write .csv or .json (JSON lines) instead of a table")
        if name == "list":
            q.add_argument("--root", help="only runs of this campaign root")
        elif name == "show":
            q.add_argument("run", nargs="?", default="last", help="run id or 'last' (default)")
        else:
            q.add_argument("a", nargs="?", help="older run (default: the audit before B)")
            q.add_argument("b", nargs="?", help="newer run (default: the last audit)")
            q.add_argument("--root", help="campaign root whose last two audits to compare")
        q.set_defaults(func=_cmd_runs)
    q = runs.add_parser("prune", help="delete the rows kept for simulations removed long ago (their hash cache)")
    q.add_argument("--db", help="catalog URL (default: $MDBATCH_DB, else sqlite:///mdbatch.db)")
    q.add_argument("--root", help="only simulations of this campaign root")
    q.add_argument(
        "--older-than",
        type=float,
        default=30.0,
        metavar="DAYS",
        help="prune simulations removed at least this many days ago (default 30; 0: every removed one)",
    )
    q.set_defaults(func=_cmd_prune)


def _cmd_runs(args: argparse.Namespace) -> int:
    from ..catalog.queries import diff_runs, list_runs, resolve_run
    from ..lifecycle import open_catalog_for_command

    root = os.path.abspath(args.root) if getattr(args, "root", None) else None
    with open_catalog_for_command(args.db, must_exist=True) as catalog:
        if args.runs_command == "list":
            output_frame(list_runs(catalog, root), args.output)
        elif args.runs_command == "show":
            run = resolve_run(catalog, args.run)
            if args.output:
                import pandas as pd

                output_frame(pd.DataFrame([{**run, "summary": json.dumps(run.get("summary"))}]), args.output)
            else:
                print(json.dumps(run, indent=2, default=str, ensure_ascii=False))
        else:
            output_frame(diff_runs(catalog, args.a, args.b, root), args.output)
    return 0


def _cmd_prune(args: argparse.Namespace) -> int:
    from ..catalog.queries import prune_removed
    from ..errors import UsageError
    from ..lifecycle import open_catalog_for_command

    if args.older_than < 0:
        raise UsageError("--older-than takes a number of days >= 0")
    root = os.path.abspath(args.root) if args.root else None
    with open_catalog_for_command(args.db, must_exist=True) as catalog:
        sims, files = prune_removed(catalog, root, args.older_than)
    print(f"pruned {sims} removed simulations ({files} inventory rows) removed at least {args.older_than:g} days ago")
    return 0
