"""`mdbatch findings [RUN|last]`: a stored audit's findings, filtered, as a table, JSON lines or CSV."""

from __future__ import annotations

import argparse
import os
from typing import Any

from ..errors import UsageError
from .common import DB_HELP, add_output_args, say

#: What the terminal table shows (files and pipes get every column).
TABLE_COLUMNS = ["simulation", "kind", "item", "detail"]


def register(sub: Any) -> None:
    """Add the `findings` subcommand."""
    p = sub.add_parser(
        "findings",
        help="a stored audit's findings (filter by kind, simulation, new since the previous audit)",
        description="List the findings an audit recorded. Exit 0 whatever is listed (gate on `audit --fail-on`).",
    )
    p.add_argument("run", nargs="?", default="last", help="audit run id, or 'last' (default) for the newest audit")
    p.add_argument("--db", help=DB_HELP)
    p.add_argument("--kind", metavar="K[,K...]", help="only these finding kinds (comma-separated)")
    p.add_argument("--simulation", metavar="S", help="only this simulation (its name relative to the root, or its directory)")
    p.add_argument("--new", action="store_true", help="only findings the simulation's previous scan did not have")
    add_output_args(p, formats=("table", "jsonl", "csv"), default_help="a table on a terminal, JSON lines when piped")
    p.set_defaults(func=_cmd_findings)


def parse_kinds(value: str | None) -> list[str] | None:
    """'missing_file,extra_file' -> the kinds, each checked against the known ones."""
    if value is None:
        return None
    from ..findings import KINDS

    kinds = [k.strip() for k in value.split(",") if k.strip()]
    unknown = [k for k in kinds if k not in KINDS]
    if unknown or not kinds:
        raise UsageError(f"--kind {value!r}: unknown kind {', '.join(unknown) or '(none given)'}; known kinds: {', '.join(KINDS)}")
    return kinds


def _cmd_findings(args: argparse.Namespace) -> int:
    from ..catalog.queries import findings, resolve_run
    from ..lifecycle import open_catalog_for_command
    from ..paths import relative_to_root
    from .render import emit, stdout_default, target_format

    kinds = parse_kinds(args.kind)
    fmt = target_format(args.output, args.format, default=stdout_default())
    with open_catalog_for_command(args.db, must_exist=True) as catalog:
        record = resolve_run(catalog, args.run, command="audit")
        simulation = args.simulation
        if simulation is not None and os.path.isabs(simulation) and record.get("root"):
            simulation = relative_to_root(os.path.normpath(simulation), record["root"])
        found = findings(catalog, record["run_id"], kind=kinds, simulation=simulation, new=args.new)
    if fmt == "table" and not args.output:
        if not args.quiet:
            what = "new findings" if args.new else "findings"
            print(f"{what} of audit {record['run_id']} ({record['status']}) of {record.get('root')}")
        emit(found, None, "table", table_columns=TABLE_COLUMNS, empty=_empty(record, args))
        return 0
    wrote = emit(found, args.output, fmt)
    if wrote:
        say(args, wrote)
    return 0


def _empty(record: dict[str, Any], args: argparse.Namespace) -> str:
    matching = " matching the filters" if args.kind or args.simulation else ""
    return f"no {'new ' if args.new else ''}findings{matching}"
