"""`mdbatch audit`, `mdbatch generate` and `mdbatch demo`."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

from ..errors import RefusedError, UsageError
from .common import (
    DB_HELP,
    add_cluster_args,
    cluster_options,
    fraction,
    human_bytes,
    positive,
    recorded_arguments,
    say,
    stdout_outputs,
    write_json,
)

#: The audit's default --max-removed (kept here so `mdbatch --help` does not import the audit stack).
MAX_REMOVED = 0.5


def register(sub: Any) -> None:
    """Add the audit, generate and demo subcommands."""
    a = sub.add_parser("audit", help="scan a campaign, check integrity, write the catalog")
    a.add_argument("root", help="campaign root directory, summary YAML (system_directory: [...]) or CSV with a 'directory' column")
    a.add_argument("--db", help=DB_HELP)
    a.add_argument("--csv-root", help="directory that relative paths in a CSV/YAML input are resolved against")
    a.add_argument("--json", metavar="SUMMARY.json", help="write the run summary as JSON ('-' for stdout)")
    a.add_argument("--findings", metavar="FINDINGS.jsonl", help="write every finding as one JSON object per line ('-' for stdout)")
    a.add_argument("--batch-size", type=positive, help="simulations per task (default: 250, smaller for small campaigns)")
    a.add_argument("--quiet", action="store_true", default=argparse.SUPPRESS, help="no progress and no human summary")
    a.add_argument(
        "--report", metavar="REPORT.html", help="write the HTML report of this audit at the end (see `mdbatch report`; '-' for stdout)"
    )
    a.add_argument(
        "--fail-on",
        choices=("any", "new", "none"),
        default="any",
        help="exit 1 when the campaign has findings ('any', the default), only when some are new since each simulation's "
        "previous scan ('new': what a nightly job gates on), or never ('none'); interrupted stays 3, errors 2",
    )
    a.add_argument("--resume", metavar="RUN_ID", help="continue an interrupted audit of the same root ('last' for the latest)")
    a.add_argument(
        "--verify",
        choices=("cache", "full"),
        default="cache",
        help="'full' re-reads every file and reports bytes that changed while the stat did not (default: trust the hash cache)",
    )
    a.add_argument(
        "--walk-threads",
        type=positive,
        default=1,
        help="directory listings in flight during discovery (raise on parallel filesystems; default 1)",
    )
    a.add_argument(
        "--io-concurrency",
        type=positive,
        default=None,
        help="files each worker reads at once (default: measured, 1 on a warm cache, 4-8 on cold or network storage)",
    )
    a.add_argument(
        "--max-removed",
        type=fraction,
        default=MAX_REMOVED,
        metavar="FRACTION",
        help=f"refuse to record more than this share of the simulations the catalog records as removed (default {MAX_REMOVED})",
    )
    a.add_argument("--allow-removals", action="store_true", help="record removals whatever their share (also an empty root)")
    add_cluster_args(a)
    a.set_defaults(func=_cmd_audit)

    g = sub.add_parser("generate", help="write a deterministic synthetic campaign (demo, tests, benchmarks)")
    g.add_argument("dest", help="directory to create the campaign in")
    g.add_argument("--sims", type=positive, required=True, help="number of simulations")
    g.add_argument("--seed", type=int, default=0)
    g.add_argument("--faults", action="store_true", help="inject one fault of each finding kind (listed in mdbatch-campaign.json)")
    g.add_argument("--profile", choices=("metadata", "bytes"), default="metadata", help="small files, or multi-MB trajectories")
    g.add_argument("--traj-mb", type=positive, help="trajectory size in MB for --profile bytes")
    g.add_argument("--nested", action="store_true", help="spread simulations over nested group directories")
    g.add_argument("--hostile", action="store_true", help="add hostile names: non-UTF-8 bytes, quotes, symlink loops")
    g.set_defaults(func=_cmd_generate)

    d = sub.add_parser("demo", help="generate a small campaign with faults and audit it into SQLite")
    d.add_argument("--dir", default="demo-campaign", help="where to generate the demo campaign (default: ./demo-campaign)")
    d.add_argument("--sims", type=positive, default=200)
    d.add_argument("--db", help=DB_HELP)
    add_cluster_args(d)
    d.set_defaults(func=_cmd_demo)


def _cmd_audit(args: argparse.Namespace) -> int:
    if args.scheduler_file and not os.path.exists(args.scheduler_file):
        raise UsageError(f"scheduler file {args.scheduler_file!r} does not exist")
    if args.performance_report == "-":
        raise UsageError("--performance-report -: Dask writes its report to a file; give a file name")
    data_on_stdout = bool(stdout_outputs(args, "json", "findings", "report"))
    try:
        result = _run_audit(args)
    except RefusedError as exc:
        if exc.summary is not None:
            write_json(args.json, exc.summary)
        raise
    write_json(args.json, result.summary)
    if args.findings == "-":
        _print_findings(result)
    say(args, render_summary(result.summary, result.examples), data_on_stdout=data_on_stdout)
    if args.report:
        from .report import describe, write_report_to

        info = write_report_to(result.catalog_url_full, args.report, result.run_id)
        if info is not None:
            say(args, describe(info), data_on_stdout=data_on_stdout)
    if result.summary["outcome"] == "interrupted":
        print(
            f"error: interrupted; completed batches are saved. Continue with: mdbatch audit {args.root} --resume {result.run_id}",
            file=sys.stderr,
        )
    return result.exit_status(args.fail_on)


def _print_findings(result: Any) -> None:
    """Every finding of the run as JSON lines on stdout (`--findings -`), as the findings file has them."""
    import json

    for row in result.findings().to_dict(orient="records"):
        sys.stdout.write(json.dumps(row, ensure_ascii=False) + "\n")


def _run_audit(args: argparse.Namespace) -> Any:
    from ..auditing import audit
    from ..scan import ScanOptions

    return audit(
        args.root,
        db=args.db,
        cluster=cluster_options(args),
        batch_size=args.batch_size,
        findings_path=args.findings if args.findings != "-" else None,
        csv_root=args.csv_root,
        progress=not args.quiet,
        arguments=recorded_arguments(args),
        resume=args.resume,
        walk_threads=args.walk_threads,
        options=ScanOptions(io_threads=args.io_concurrency or 1, verify=args.verify),
        io_concurrency=args.io_concurrency,
        max_removed=args.max_removed,
        allow_removals=args.allow_removals,
    )


def workers(n: int | None) -> str:
    """'1 worker', '4 workers', 'no worker' (a run that ended before its cluster started)."""
    return "no worker" if not n else f"{n} worker{'' if n == 1 else 's'}"


def render_summary(summary: dict[str, Any], findings: list[dict[str, Any]] | None = None, examples: int = 3) -> str:
    """The human-readable end-of-run summary."""
    lines = [
        f"run {summary['run_id']} ({summary['outcome']}) of {summary['root']}",
        f"  {summary['simulations']} simulations, {summary['files']} files, {human_bytes(summary['bytes'])} "
        f"in {summary['elapsed_s']:.1f}s on {workers(summary.get('workers'))}",
        "  status: " + (", ".join(f"{k} {v}" for k, v in summary["status"].items()) or "none"),
    ]
    total = summary["findings_total"]
    if total == 0:
        lines.append("  no findings: every registry matches its files")
    else:
        lines.append(f"  {total} findings in {summary['simulations_with_findings']} simulations:")
        by_kind: dict[str, list[dict[str, Any]]] = {}
        for f in findings or []:
            by_kind.setdefault(f["kind"], []).append(f)
        for kind, count in summary["findings"].items():
            if count:
                lines.append(f"    {kind:<28} {count}")
                for f in by_kind.get(kind, [])[:examples]:
                    lines.append(f"      {f['simulation']}: {f['item']} — {f['detail']}")
    changes = summary.get("changes")
    if changes:
        lines.append(f"  changes: {changes['summary']}")
    cache = summary.get("cache")
    if cache and cache.get("hits"):
        line = f"  hash cache: {cache['hits']} unchanged files not read again, {cache['files_read']} read"
        if cache.get("simulations_kept") or cache.get("simulations_rescanned"):
            kept, rescanned = cache.get("simulations_kept", 0), cache.get("simulations_rescanned", 0)
            line += f"; {kept} simulations unchanged (fingerprint), {rescanned} rescanned"
        lines.append(line)
    lines.append(f"  catalog: {summary['catalog']}")
    return "\n".join(lines)


def _cmd_generate(args: argparse.Namespace) -> int:
    from ..generate import generate_campaign

    res = generate_campaign(
        args.dest,
        args.sims,
        seed=args.seed,
        faults=args.faults,
        profile=args.profile,
        traj_mb=args.traj_mb,
        nested=args.nested,
        hostile=args.hostile,
    )
    print(f"generated {len(res.simulations)} simulations, {res.files} files, {human_bytes(res.bytes)} in {res.dest}")
    if args.faults:
        print(f"injected {len(res.expected_findings)} faults, listed in {res.manifest_path}")
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    from ..auditing import audit
    from ..config import resolve_url
    from ..generate import generate_campaign

    dest = Path(args.dir)
    if dest.exists() and any(dest.iterdir()) and not (dest / "mdbatch-campaign.json").exists():
        raise UsageError(f"{dest} exists and is not an mdbatch demo campaign; pass --dir to choose another place")
    if not (dest / "mdbatch-campaign.json").exists():
        print(f"1/2 generating a demo campaign of {args.sims} simulations (with one fault of each kind) in {dest}/ ...")
        generate_campaign(dest, args.sims, seed=0, faults=True, nested=True, hostile=True)
    else:
        print(f"1/2 reusing the demo campaign in {dest}/")
    url = resolve_url(args.db)
    print(f"2/2 auditing it on a local Dask cluster into {url} ...")
    result = audit(dest, db=url, cluster=cluster_options(args), arguments={"command": "demo"})
    print()
    print(render_summary(result.summary, result.examples, examples=1))
    print()
    print("What happened: every simulation directory was scanned in parallel; each registry")
    print("(.analysis/metadata.json) was checked against its parquet footers and artifact checksums,")
    print("every file was hashed (xxh3-128), and the results were bulk-written to the catalog.")
    print("The findings above are the faults the demo injected on purpose.")
    if url.startswith("sqlite:///"):
        path = url[len("sqlite:///") :]
        print(f"Look inside:  sqlite3 {path} 'SELECT kind, COUNT(*) FROM MDBATCH_FINDINGS GROUP BY kind'")
    return 0
