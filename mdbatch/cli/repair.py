"""`mdbatch repair`: fix registries from an audit's findings (dry run, confirmation, undo)."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from ..errors import UsageError
from .common import DB_HELP, add_cluster_args, cluster_options, recorded_arguments, say, stdout_outputs, write_json

#: Skipped findings and conflicts listed in the human summary (all are in --json).
LISTED = 20


def register(sub: Any) -> None:
    """Add the repair subcommand."""
    p = sub.add_parser(
        "repair",
        help="fix registries from an audit's findings (journaled; --dry-run shows a diff, --undo RUN puts them back)",
        description="Fix the registries (.analysis/metadata.json) from the findings of an audit run. "
        "Exit 0 done, 1 something was skipped or in conflict, 2 error or refused, 3 interrupted.",
    )
    p.add_argument("root", nargs="?", help="campaign root (its last completed audit is repaired)")
    p.add_argument("--run", default="last", metavar="RUN|last", help="audit run whose findings to fix (default: the last of ROOT)")
    p.add_argument("--db", help=DB_HELP)
    p.add_argument("--kind", metavar="K[,K...]", help="fix only these finding kinds")
    p.add_argument("--simulation", metavar="S", help="fix only this simulation (its path relative to the root)")
    p.add_argument("--dry-run", action="store_true", help="print a diff of every registry that would change; change nothing")
    p.add_argument("--yes", action="store_true", help="do not ask (required when not on a terminal)")
    p.add_argument("--accept-checksums", action="store_true", help="record the current sha256 of artifact files whose checksum differs")
    p.add_argument("--rebuild-corrupt", action="store_true", help="rebuild corrupt registries from the parquet files present")
    p.add_argument("--undo", metavar="RUN", help="put back every registry repair run RUN replaced ('last': the newest repair)")
    p.add_argument("--force", action="store_true", help="with --undo: also put back registries changed since RUN")
    p.add_argument("--json", metavar="PATH", help="write the run summary as JSON ('-' for stdout)")
    add_cluster_args(p)
    p.set_defaults(func=_cmd_repair)


def _cmd_repair(args: argparse.Namespace) -> int:
    data_on_stdout = bool(stdout_outputs(args, "json"))
    if args.undo:
        return _cmd_undo(args, data_on_stdout)
    if args.force:
        raise UsageError("--force goes with --undo RUN")
    if not args.root and args.run == "last":
        raise UsageError("repair: give the campaign ROOT (its last completed audit is repaired) or --run RUN")
    confirm = None
    if not args.dry_run and not args.yes:
        if not sys.stdin.isatty():
            raise UsageError("repair changes registries: pass --yes to go ahead (or --dry-run to see the changes)")
        confirm = _ask
    from ..repair import repair

    kinds = [k.strip() for k in args.kind.split(",") if k.strip()] if args.kind else None
    result = repair(
        args.root,
        db=args.db,
        run=args.run,
        kinds=kinds,
        simulation=args.simulation,
        dry_run=args.dry_run,
        accept_checksums=args.accept_checksums,
        rebuild_corrupt=args.rebuild_corrupt,
        cluster=cluster_options(args),
        confirm=confirm,
        progress=not getattr(args, "quiet", False),
        arguments=recorded_arguments(args),
    )
    for diff in result.diffs:
        (sys.stderr if data_on_stdout else sys.stdout).write(diff)
    write_json(args.json, result.summary)
    say(args, render(result.summary), data_on_stdout=data_on_stdout)
    return result.exit_code


def _cmd_undo(args: argparse.Namespace, data_on_stdout: bool) -> int:
    if args.dry_run or args.kind or args.simulation or args.root:
        raise UsageError("--undo RUN runs alone (with --db, --force, --json)")
    from ..repair import undo

    result = undo(args.undo, db=args.db, force=args.force, progress=not getattr(args, "quiet", False), arguments=recorded_arguments(args))
    write_json(args.json, result.summary)
    say(args, render(result.summary), data_on_stdout=data_on_stdout)
    return result.exit_code


def _ask(plans: list[Any]) -> bool:
    """Ask once on the terminal whether to replace the registries the plans change."""
    changing = [p for p in plans if p.changes]
    if not changing:
        return True
    fixes = sum(len(p.fixes) for p in changing)
    sys.stderr.write(f"repair {len(changing)} registries ({fixes} fixes; --dry-run shows them)? [y/N] ")
    sys.stderr.flush()
    answer = sys.stdin.readline().strip().lower()
    return answer in ("y", "yes")


def render(summary: dict[str, Any]) -> str:
    """The human summary of a repair, dry run, undo or restore."""
    mode = summary.get("mode")
    lines = [f"repair {summary.get('run_id') or '(dry run)'} ({summary.get('outcome')}, {mode}) of {summary.get('root')}"]
    if mode in ("repair", "dry-run"):
        lines.append(f"  audit {summary.get('audit_run')}: {summary.get('findings', 0)} findings, {summary.get('to_fix', 0)} to fix")
    verb = "would change" if mode == "dry-run" else "changed"
    fixed = ", ".join(f"{k} {n}" for k, n in (summary.get("fixed") or {}).items())
    lines.append(f"  {verb} {summary.get('registries_changed', 0)} registries" + (f": {fixed}" if fixed else ""))
    never = summary.get("never_fixed") or {}
    if never:
        lines.append("  never fixed automatically: " + ", ".join(f"{k} {n}" for k, n in never.items()))
    for kind, need in (summary.get("needs_option") or {}).items():
        lines.append(f"  {kind} {need['count']}: fixed only with {need['option']}")
    for key, label in (("skipped", "skipped"), ("conflicts", "conflict"), ("failed", "failed")):
        items = summary.get(key) or []
        for item in items[:LISTED]:
            what = f"{item.get('kind')} {item.get('item')}" if key == "skipped" else item.get("directory")
            lines.append(f"  {label}: {item.get('simulation')}: {what}: {item.get('reason')}")
        if len(items) > LISTED:
            lines.append(f"  ... and {len(items) - LISTED} more {key} (see --json)")
    for rec in summary.get("recovered") or []:
        lines.append(f"  recovered killed run {rec['run_id']}: {rec['replaced']} replaced, {rec['not_replaced']} not replaced")
        for a in rec["anomalies"]:
            lines.append(f"    {a['directory']}: {a['problem']}")
    if summary.get("run_id") and mode != "dry-run":
        lines.append(f"  undo with: mdbatch repair --undo {summary['run_id']}")
    return "\n".join(lines)
