"""`mdbatch dedupe` and `mdbatch store stats|verify|gc`."""

from __future__ import annotations

import argparse
import os
import re
from typing import Any

from ..errors import UsageError
from .common import Parser, add_cluster_args, cluster_options, human_bytes, positive, recorded_arguments, say, stdout_outputs, write_json

_SIZE = re.compile(r"^\s*(\d+)\s*([kmgt]i?b?|b)?\s*$", re.IGNORECASE)
_UNITS = {"": 1, "b": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}


def byte_size(value: str) -> int:
    """'4096', '64K', '1M', '2GiB' -> bytes (binary multiples)."""
    m = _SIZE.match(value)
    if not m:
        raise argparse.ArgumentTypeError(f"expected a size in bytes (e.g. 4096, 64K, 1M), got {value!r}")
    unit = (m.group(2) or "").lower()[:1]
    return int(m.group(1)) * _UNITS[unit]


def register(sub: Any) -> None:
    """Add the dedupe and store subcommands."""
    d = sub.add_parser("dedupe", help="find identical files across a campaign; link them safely (hardlink, reflink, symlink, store)")
    d.add_argument("root", nargs="?", help="campaign root directory")
    db = d.add_mutually_exclusive_group()
    db.add_argument(
        "--db",
        help="catalog whose audit digests to reuse and where to record the run (default: $MDBATCH_DB, the config file, "
        "else sqlite:///mdbatch.db if that file exists)",
    )
    db.add_argument("--no-db", action="store_true", help="use no catalog: hash every file, record nothing")
    d.add_argument("--groups", metavar="GROUPS.jsonl", help="write every group as one JSON line {digest, size, paths} ('-' for stdout)")
    d.add_argument("--json", metavar="SUMMARY.json", help="write the run summary as JSON ('-' for stdout)")
    d.add_argument(
        "--min-size", type=byte_size, default=1, metavar="BYTES", help="ignore files smaller than this (empty files are always ignored)"
    )
    d.add_argument(
        "--status",
        metavar="STATUS,...",
        help="simulation statuses whose files may be modified (default: completed; 'all' for every status)",
    )
    action = d.add_mutually_exclusive_group()
    action.add_argument("--apply", action="store_true", help="replace duplicates by links to one kept copy")
    action.add_argument(
        "--store", metavar="DIR", help="move one copy of each group into the content-addressed store DIR and link every copy to it"
    )
    d.add_argument(
        "--link",
        choices=("hardlink", "reflink", "symlink"),
        default="hardlink",
        help="link kind (default hardlink; reflink falls back to hardlink where unsupported)",
    )
    d.add_argument("--dry-run", action="store_true", help="print what --apply/--store would do; change nothing")
    d.add_argument(
        "--writable",
        action="store_true",
        help="leave linked files writable (default: read-only, since a write through one hardlink changes every copy)",
    )
    d.add_argument("--recover", metavar="JOURNAL", help="finish or roll back the interrupted apply recorded in JOURNAL, then exit")
    d.add_argument("--local", action="store_true", help="run every stage in this process (no Dask cluster)")
    d.add_argument("--io-threads", type=positive, default=1, help="reads in flight per task (raise for cold or network storage)")
    d.add_argument(
        "--listing",
        choices=("auto", "catalog", "walk"),
        default="auto",
        help="where the file list comes from: the catalog's last audit (only candidates re-statted), a walk of the tree, "
        "or auto (the catalog when it holds an audit of ROOT; default)",
    )
    d.add_argument(
        "--link-threads",
        type=positive,
        default=None,
        help="threads replacing paths by links (default: 1 where a link is fast, 4 where it is slow, measured on the first chunk)",
    )
    d.add_argument("--quiet", action="store_true", default=argparse.SUPPRESS, help="no progress and no human summary")
    add_cluster_args(d)
    d.set_defaults(func=_cmd_dedupe)

    s = sub.add_parser("store", help="content-addressed store: stats, verify, gc")
    ssub = s.add_subparsers(dest="store_command", required=True, parser_class=Parser)
    for name, helptext in (
        ("stats", "objects, references, bytes saved and the dedup ratio"),
        ("verify", "re-hash every object and report corrupt ones (exit 1)"),
        ("gc", "find objects no campaign path references any more; delete them with --delete"),
    ):
        p = ssub.add_parser(name, help=helptext)
        p.add_argument("store", help="store directory")
        p.add_argument("--json", metavar="PATH", help="write the result as JSON ('-' for stdout)")
        if name == "gc":
            mode = p.add_mutually_exclusive_group()
            mode.add_argument("--dry-run", dest="delete", action="store_false", default=False, help="only list orphans (the default)")
            mode.add_argument("--delete", dest="delete", action="store_true", help="delete the orphans (journaled, re-checked one by one)")
        p.set_defaults(func=_cmd_store)


def _cmd_dedupe(args: argparse.Namespace) -> int:
    from ..dedupe.recover import recover_journal
    from ..dedupe.run import dedupe, parse_statuses

    if args.recover:
        if args.apply or args.store or args.dry_run:
            raise UsageError("--recover runs alone: it finishes one interrupted apply and exits")
        if not os.path.exists(args.recover):
            raise UsageError(f"journal {args.recover!r} does not exist")
        report = recover_journal(args.recover)
        payload = report.to_dict()
        write_json(args.json, payload)
        if not args.quiet:
            print(
                f"recovered {report.journal}: {report.actions} actions, {report.completed} links kept, "
                f"{report.rolled_back} rolled back, {report.temps_removed} temporaries removed, {report.modes_restored} modes restored"
            )
            for a in report.anomalies:
                print(f"  left alone: {a['path']}: {a['problem']}")
        return 1 if report.anomalies else 0
    if not args.root:
        raise UsageError("dedupe: the campaign ROOT is required (or --recover JOURNAL)")
    if args.scheduler_file and not os.path.exists(args.scheduler_file):
        raise UsageError(f"scheduler file {args.scheduler_file!r} does not exist")
    explicit_cluster = bool(args.workers or args.scheduler or args.scheduler_file or args.cluster == "slurm")
    if args.local and explicit_cluster:
        raise UsageError("--local cannot be combined with --workers/--scheduler/--scheduler-file/--cluster slurm")
    if args.performance_report == "-":
        raise UsageError("--performance-report -: Dask writes its report to a file; give a file name")
    data_on_stdout = bool(stdout_outputs(args, "groups", "json"))
    url = catalog_url(args)
    result = dedupe(
        args.root,
        db=url,
        groups_path=args.groups,
        min_size=args.min_size,
        statuses=parse_statuses(args.status),
        apply=args.apply,
        link=args.link,
        store=args.store,
        dry_run=args.dry_run,
        writable=args.writable,
        cluster=cluster_options(args),
        mode="local" if args.local else "cluster" if explicit_cluster else "auto",
        io_threads=args.io_threads,
        link_threads=args.link_threads,
        listing=args.listing,
        progress=not args.quiet,
        arguments=recorded_arguments(args),
    )
    write_json(args.json, result.summary)
    say(args, render(result.summary, result.applied.planned if result.applied is not None else []), data_on_stdout=data_on_stdout)
    if url is None and not args.no_db:
        say(args, "  no catalog (sqlite:///mdbatch.db does not exist): every file was hashed; pass --db to reuse an audit's digests")
    return result.exit_code


def catalog_url(args: argparse.Namespace) -> str | None:
    """The catalog dedupe uses, resolved as every command resolves it (--db, $MDBATCH_DB, the config
    file); the built-in default sqlite:///mdbatch.db only when that file exists, so a dedupe outside
    any audited place creates no catalog. None with --no-db (or no catalog): every file is hashed."""
    from ..config import DEFAULT_URL, effective, resolve_url

    if args.no_db:
        return None
    url = resolve_url(args.db)
    if url == DEFAULT_URL and effective(args.db)[0].source == "default" and not os.path.exists(url.removeprefix("sqlite:///")):
        return None
    return url


def render(summary: dict[str, Any], planned: list[dict[str, str]], limit: int = 200) -> str:
    """The human-readable end-of-run summary (and a dry run's planned actions)."""
    lines: list[str] = []
    for p in planned[:limit]:
        lines.append(f"{p['action']:<10} {p['path']} -> {p['to']}")
    if len(planned) > limit:
        lines.append(f"... and {len(planned) - limit} more actions (see --json)")
    lines += [
        f"dedupe {summary['run_id']} ({summary['outcome']}, {summary['mode']}) of {summary['root']}",
        f"  {summary['simulations']} simulations, {summary['files']} files, {human_bytes(summary['bytes'])} in {summary['elapsed_s']:.1f}s",
        f"  {summary['groups']} duplicate groups, {summary['duplicate_files']} files, "
        f"{human_bytes(summary['reclaimable_bytes'])} reclaimable (dedup ratio {summary['dedup_ratio']:.2f})",
    ]
    changed = summary.get("changed_during_scan") or []
    if changed:
        lines.append(f"  {len(changed)} files changed while they were scanned (not grouped), e.g. {changed[0]}")
    applied = summary.get("apply")
    if applied:
        verb = "would link" if applied["dry_run"] else "linked"
        lines.append(
            f"  {verb} {applied['links']} paths ({applied['link']}), {human_bytes(applied['bytes_reclaimed'])} reclaimed"
            + (f" in {applied['elapsed_s']:.1f}s" if not applied["dry_run"] else "")
        )
        if applied["ineligible_paths"]:
            lines.append(
                f"  {applied['ineligible_paths']} paths left alone: their simulation status is not in {summary['modify_statuses']}"
            )
        for skip in applied["skipped"][:10]:
            lines.append(f"  skipped {skip['digest']} ({skip['reason']}): {', '.join(skip['paths'][:3])}")
        for message in applied["messages"]:
            lines.append(f"  note: {message}")
        if applied["journal"]:
            lines.append(f"  journal: {applied['journal']}")
    recovery = summary.get("recovery")
    if recovery:
        lines.append(
            f"  recovered {len(recovery['journals'])} interrupted apply journal(s): "
            f"{recovery['completed']} links kept, {recovery['rolled_back']} rolled back"
        )
    return "\n".join(lines)


def _cmd_store(args: argparse.Namespace) -> int:
    from ..dedupe.store import Store, describe_orphans

    store = Store.open(args.store)
    if args.store_command == "stats":
        result = store.stats()
        write_json(args.json, result)
        if args.json != "-":
            ratio = result["dedup_ratio"]
            print(
                f"{result['objects']} objects, {human_bytes(result['stored_bytes'])} stored; {result['references']} live references "
                f"({human_bytes(result['logical_bytes'])} logical); saved {human_bytes(result['bytes_saved'])}"
                f"{f', dedup ratio {ratio:.2f}' if ratio else ''}; {result['orphans']} orphans ({human_bytes(result['orphan_bytes'])})"
            )
        return 0
    if args.store_command == "verify":
        result = store.verify()
        write_json(args.json, result)
        if args.json != "-":
            print(
                f"verified {result['objects']} objects ({human_bytes(result['bytes'])}) in {result['elapsed_s']:.1f}s: "
                f"{result['corrupt']} corrupt"
            )
            for bad in result["corrupt_objects"][:20]:
                print(f"  {bad['object']}: {bad['problem']}")
        return 1 if result["corrupt"] else 0
    gc = store.gc(dry_run=not args.delete)
    payload = gc.to_dict()
    write_json(args.json, payload)
    if args.json != "-":
        size = human_bytes(payload["orphan_bytes"])
        if gc.dry_run:
            print(f"{payload['orphans']} orphan objects ({size}) of {gc.objects}; dry run, nothing deleted (use --delete)")
        else:
            print(f"deleted {gc.deleted} orphan objects of {gc.objects}, freed {human_bytes(gc.freed_bytes)}; journal {gc.journal}")
        for line in describe_orphans(gc):
            print(line)
    return 0
