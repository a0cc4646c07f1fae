"""`mdbatch runs list|show|diff|prune`: the run history of a catalog."""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any

from .common import DB_HELP, add_output_args, human_bytes, say

#: Keys of a run's recorded arguments that are argparse's plumbing, in records made before they were left out.
PLUMBING = frozenset({"func", "command", "debug", "quiet", "runs_command", "store_command", "config_command"})


def register(sub: Any) -> None:
    """Add the `runs` subcommand family."""
    p = sub.add_parser("runs", help="run history: list runs, show one, diff two, prune removed simulations")
    runs = p.add_subparsers(dest="runs_command", required=True, parser_class=type(p))
    for name, helptext in (
        ("list", "every recorded run, oldest first"),
        ("show", "one run's summary: what it did, found and changed"),
        ("diff", "what changed between two audits of a root"),
    ):
        q = runs.add_parser(name, help=helptext)
        q.add_argument("--db", help=DB_HELP)
        if name == "list":
            q.add_argument("--root", help="only runs of this campaign root")
            add_output_args(q, formats=("table", "jsonl", "csv"), default_help="a table")
        elif name == "show":
            q.add_argument("run", nargs="?", default="last", help="run id or 'last' (default)")
            q.add_argument("-o", "--output", metavar="PATH", help="write the run record to PATH (.json, .csv) or '-' (JSON)")
            q.add_argument("--format", choices=("text", "json", "csv"), help="text (default on stdout), json or csv")
        else:
            q.add_argument("a", nargs="?", help="older run (default: the audit before B)")
            q.add_argument("b", nargs="?", help="newer run (default: the last audit)")
            q.add_argument("--root", help="campaign root whose last two audits to compare")
            add_output_args(q, formats=("table", "jsonl", "csv"), default_help="a table")
        q.set_defaults(func=_cmd_runs)
    q = runs.add_parser("prune", help="delete the rows kept for simulations removed long ago (their hash cache)")
    q.add_argument("--db", help=DB_HELP)
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
    from .render import emit

    root = os.path.abspath(args.root) if getattr(args, "root", None) else None
    with open_catalog_for_command(args.db, must_exist=True) as catalog:
        if args.runs_command == "show":
            return _show(resolve_run(catalog, args.run), args)
        frame = list_runs(catalog, root) if args.runs_command == "list" else diff_runs(catalog, args.a, args.b, root)
    wrote = emit(frame, args.output, args.format, empty="no runs recorded" if args.runs_command == "list" else "no changes")
    if wrote:
        say(args, wrote)
    return 0


def record(run: dict[str, Any]) -> dict[str, Any]:
    """A run record for display and export: times as ISO text, arguments without argparse's plumbing."""
    out = {k: (v.isoformat() if hasattr(v, "isoformat") else v) for k, v in run.items()}
    if isinstance(out.get("arguments"), dict):
        out["arguments"] = {k: v for k, v in out["arguments"].items() if k not in PLUMBING}
    return out


def _show(run: dict[str, Any], args: argparse.Namespace) -> int:
    from .render import dumps, target_format

    data = record(run)
    fmt = args.format or ("text" if not args.output else "json" if args.output == "-" else None)
    if fmt is None:
        fmt = "json" if target_format(args.output, None, default="jsonl") == "jsonl" else "csv"
    if fmt == "text":
        text = "\n".join(describe_run(data)) + "\n"
    elif fmt == "json":
        text = json.dumps(data, indent=2, ensure_ascii=False, default=str) + "\n"
    else:
        text = dumps([data], list(data), "csv")
    if not args.output or args.output == "-":
        sys.stdout.write(text)
        return 0
    from ..atomic import atomic_write_text

    atomic_write_text(args.output, text)
    say(args, f"wrote run {data['run_id']} to {args.output}")
    return 0


def describe_run(run: dict[str, Any]) -> list[str]:
    """A run record as readable lines: who, when, where, with what, and what its summary says."""
    s = run.get("summary") or {}
    lines = [f"{run.get('command')} {run['run_id']}: {run.get('status')}" + (f" of {run['root']}" if run.get("root") else "")]
    ended = f", ended {_time(run.get('ended_at'))}" if run.get("ended_at") else ""
    took = f" ({s['elapsed_s']:.1f}s)" if isinstance(s.get("elapsed_s"), (int, float)) else ""
    lines.append(f"  started   {_time(run.get('started_at'))}{ended}{took}")
    where = (
        f"{run.get('host') or '?'}" + (f" (pid {run['pid']})" if run.get("pid") else "") + (f", job {run['job']}" if run.get("job") else "")
    )
    lines.append(f"  on        {where}, mdbatch {run.get('version') or '?'}")
    if run.get("catalog"):
        lines.append(f"  catalog   {run['catalog']}")
    options = _options(run.get("arguments"))
    if options:
        lines.append(f"  options   {options}")
    lines += _summary_lines(str(run.get("command")), s)
    return lines


def _time(value: Any) -> str:
    return str(value).replace("T", " ")[:19] + " UTC" if value else "?"


def _options(arguments: Any) -> str:
    """The options a run was given (those set to something), as `--name value` words."""
    if not isinstance(arguments, dict):
        return ""
    words = []
    for key, value in arguments.items():
        if key in PLUMBING or value in (None, False, [], "") or key in ("root", "source", "what"):
            continue
        flag = "--" + key.replace("_", "-")
        words.append(flag if value is True else f"{flag} {', '.join(map(str, value)) if isinstance(value, list) else value}")
    return " ".join(words)


def _summary_lines(command: str, s: dict[str, Any]) -> list[str]:
    """What a run's summary says, per command (audit, push, dedupe); its scalars for anything else."""
    if not s:
        return ["  (no summary recorded)"]
    if command in ("audit", "dedupe"):
        head = f"  scanned   {s.get('simulations', 0)} simulations, {s.get('files', 0)} files, {human_bytes(int(s.get('bytes') or 0))}"
        lines = [head + (f" on {s['workers']} worker{'' if s['workers'] == 1 else 's'}" if s.get("workers") else "")]
        if command == "audit":
            return lines + _audit_lines(s)
        return lines + [
            f"  found     {s.get('groups', 0)} duplicate groups, {s.get('duplicate_files', 0)} files, "
            f"{human_bytes(int(s.get('reclaimable_bytes') or 0))} reclaimable"
        ]
    if command.startswith("push") and isinstance(s.get("written"), dict):
        written = ", ".join(f"{n} rows to {t}" for t, n in s["written"].items() if n) or "nothing"
        skipped = ", ".join(f"{n} in {t}" for t, n in (s.get("skipped_existing") or {}).items() if n)
        return [f"  wrote     {written}"] + ([f"  skipped   {skipped} (already in the catalog)"] if skipped else [])
    return [f"  {k:<9} {v}" for k, v in s.items() if isinstance(v, (str, int, float)) and k not in ("run_id", "outcome", "catalog")]


def _audit_lines(s: dict[str, Any]) -> list[str]:
    total = s.get("findings_total", 0)
    kinds = ", ".join(f"{k} {v}" for k, v in (s.get("findings") or {}).items() if v)
    lines = [f"  findings  {total} in {s.get('simulations_with_findings', 0)} simulations" + (f": {kinds}" if kinds else "")]
    status = ", ".join(f"{k} {v}" for k, v in (s.get("status") or {}).items())
    if status:
        lines.append(f"  status    {status}")
    changes = s.get("changes") or {}
    if changes.get("summary"):
        lines.append(f"  changes   {changes['summary']}")
    refused = s.get("refused") or {}
    if refused.get("reason"):
        lines.append(f"  refused   {refused['reason']}")
    return lines


def _cmd_prune(args: argparse.Namespace) -> int:
    from ..catalog.queries import prune_removed
    from ..errors import UsageError
    from ..lifecycle import open_catalog_for_command

    if args.older_than < 0:
        raise UsageError("--older-than takes a number of days >= 0")
    root = os.path.abspath(args.root) if args.root else None
    with open_catalog_for_command(args.db, must_exist=True) as catalog:
        sims, files = prune_removed(catalog, root, args.older_than)
    say(args, f"pruned {sims} removed simulations ({files} inventory rows) removed at least {args.older_than:g} days ago")
    return 0
