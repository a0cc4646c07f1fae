"""`mdbatch registry history|restore`: the snapshots `mdbatch repair` keeps of a registry, and putting one back."""

from __future__ import annotations

import argparse
from typing import Any

from .common import DB_HELP, Parser, recorded_arguments, say, stdout_outputs, write_json


def register(sub: Any) -> None:
    """Add the registry subcommand."""
    r = sub.add_parser("registry", help="a simulation registry's snapshots (kept by repair) and restoring one")
    rsub = r.add_subparsers(dest="registry_command", required=True, parser_class=Parser)
    h = rsub.add_parser("history", help="list the snapshots of one simulation's registry, oldest first")
    h.add_argument("sim_dir", metavar="SIM_DIR", help="simulation directory (the parent of .analysis)")
    h.add_argument("--db", help=DB_HELP)
    h.add_argument("--json", metavar="PATH", help="write the snapshots as JSON ('-' for stdout)")
    h.set_defaults(func=_cmd_history)
    s = rsub.add_parser("restore", help="put back the bytes a registry had before a snapshot (a recorded, undoable run)")
    s.add_argument("sim_dir", metavar="SIM_DIR", help="simulation directory (the parent of .analysis)")
    s.add_argument("--to", required=True, metavar="SNAPSHOT", help="snapshot RUN:SEQ as `mdbatch registry history` lists it")
    s.add_argument("--db", help=DB_HELP)
    s.add_argument("--json", metavar="PATH", help="write the run summary as JSON ('-' for stdout)")
    s.set_defaults(func=_cmd_restore)


def _cmd_history(args: argparse.Namespace) -> int:
    from ..repair import history

    rows = history(args.sim_dir, db=args.db)
    data_on_stdout = bool(stdout_outputs(args, "json"))
    write_json(args.json, {"sim_dir": args.sim_dir, "snapshots": rows})
    if not rows:
        say(args, f"no snapshots of {args.sim_dir}'s registry in this catalog", data_on_stdout=data_on_stdout)
        return 0
    lines = [f"{'SNAPSHOT':<32} {'TAKEN AT':<32} {'ACTION':<8} SHA256 BEFORE -> AFTER"]
    for row in rows:
        before, after = (row["sha256_before"] or "absent")[:12], (row["sha256_after"] or "absent")[:12]
        lines.append(f"{row['snapshot']:<32} {row['taken_at']:<32} {row['action']:<8} {before} -> {after}")
    say(args, "\n".join(lines), data_on_stdout=data_on_stdout)
    return 0


def _cmd_restore(args: argparse.Namespace) -> int:
    from ..repair import restore
    from .repair import render

    data_on_stdout = bool(stdout_outputs(args, "json"))
    arguments = {k: v for k, v in recorded_arguments(args).items() if k != "registry_command"}
    result = restore(args.sim_dir, args.to, db=args.db, arguments=arguments)
    write_json(args.json, result.summary)
    say(args, render(result.summary), data_on_stdout=data_on_stdout)
    return result.exit_code
