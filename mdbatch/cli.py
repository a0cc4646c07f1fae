"""The `mdbatch` command: parses arguments, calls the library, renders results.

Exit codes: 0 success and no findings; 1 findings exist; 2 usage or fatal error (one line on
stderr, traceback only with --debug); 3 interrupted by a signal (completed batches are saved);
130 Ctrl-C.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import traceback
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from . import __version__
from .errors import MdbatchError, UsageError


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        raise UsageError(f"{self.prog}: {message}")


def _positive(value: str) -> int:
    try:
        n = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value!r}") from None
    if n <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value!r}")
    return n


def _add_cluster_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("cluster")
    g.add_argument("--workers", type=_positive, help="worker processes for the local cluster (default: one per core, fewer for small campaigns)")
    target = g.add_mutually_exclusive_group()
    target.add_argument("--scheduler", metavar="ADDRESS", help="use a running Dask scheduler (tcp://host:port)")
    target.add_argument("--scheduler-file", metavar="PATH", help="use the scheduler described by a Dask scheduler file")
    dash = g.add_mutually_exclusive_group()
    dash.add_argument("--dashboard", dest="dashboard", action="store_true", default=None, help="always start the Dask dashboard (default: only for campaigns over 10,000 simulations)")
    dash.add_argument("--no-dashboard", dest="dashboard", action="store_false", help="never start the Dask dashboard")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="mdbatch", description="Audit, catalogue and deduplicate large simulation campaigns on Dask.")
    parser.add_argument("--version", action="version", version=f"mdbatch {__version__}")
    parser.add_argument("--debug", action="store_true", help="show tracebacks for errors")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    a = sub.add_parser("audit", help="scan a campaign, check integrity, write the catalog")
    a.add_argument("root", help="campaign root directory, summary YAML (system_directory: [...]) or CSV with a 'directory' column")
    a.add_argument("--db", help="catalog URL (default: $MDBATCH_DB, else sqlite:///mdbatch.db)")
    a.add_argument("--csv-root", help="directory that relative paths in a CSV/YAML input are resolved against")
    a.add_argument("--json", metavar="SUMMARY.json", help="write the run summary as JSON ('-' for stdout)")
    a.add_argument("--findings", metavar="FINDINGS.jsonl", help="write every finding as one JSON object per line")
    a.add_argument("--batch-size", type=_positive, help="simulations per task (default: 250, smaller for small campaigns)")
    a.add_argument("--quiet", action="store_true", help="no progress and no human summary")
    _add_cluster_args(a)

    g = sub.add_parser("generate", help="write a deterministic synthetic campaign (demo, tests, benchmarks)")
    g.add_argument("dest", help="directory to create the campaign in")
    g.add_argument("--sims", type=_positive, required=True, help="number of simulations")
    g.add_argument("--seed", type=int, default=0)
    g.add_argument("--faults", action="store_true", help="inject one fault of each finding kind (listed in mdbatch-campaign.json)")
    g.add_argument("--profile", choices=("metadata", "bytes"), default="metadata", help="small files, or multi-MB trajectories")
    g.add_argument("--traj-mb", type=_positive, help="trajectory size in MB for --profile bytes")
    g.add_argument("--nested", action="store_true", help="spread simulations over nested group directories")
    g.add_argument("--hostile", action="store_true", help="add hostile names: non-UTF-8 bytes, quotes, symlink loops")

    d = sub.add_parser("demo", help="generate a small campaign with faults and audit it into SQLite")
    d.add_argument("--dir", default="demo-campaign", help="where to generate the demo campaign (default: ./demo-campaign)")
    d.add_argument("--sims", type=_positive, default=200)
    d.add_argument("--db", help="catalog URL (default: $MDBATCH_DB, else sqlite:///mdbatch.db)")
    _add_cluster_args(d)
    return parser


def _cluster(args: argparse.Namespace) -> Any:
    from .engine import ClusterOptions

    return ClusterOptions(workers=args.workers, scheduler=args.scheduler, scheduler_file=args.scheduler_file, dashboard=args.dashboard)


def _cmd_audit(args: argparse.Namespace) -> int:
    from .audit import audit

    if args.scheduler_file and not os.path.exists(args.scheduler_file):
        raise UsageError(f"scheduler file {args.scheduler_file!r} does not exist")
    result = audit(
        args.root,
        db=args.db,
        cluster=_cluster(args),
        batch_size=args.batch_size,
        findings_path=args.findings,
        csv_root=args.csv_root,
        progress=not args.quiet,
        arguments={k: v for k, v in vars(args).items() if k not in ("func",)},
        keep_findings=not args.quiet,
    )
    _write_json(args.json, result.summary)
    if not args.quiet:
        print(render_summary(result.summary, result.findings().to_dict("records")))
    return result.exit_code


def _write_json(target: str | None, payload: dict[str, Any]) -> None:
    if not target:
        return
    text = json.dumps(payload, indent=2, ensure_ascii=False) + "\n"
    if target == "-":
        sys.stdout.write(text)
    else:
        from .atomic import atomic_write_text

        atomic_write_text(target, text)


def render_summary(summary: dict[str, Any], findings: list[dict[str, Any]] | None = None, examples: int = 3) -> str:
    """The human-readable end-of-run summary."""
    lines = [
        f"run {summary['run_id']} ({summary['outcome']}) of {summary['root']}",
        f"  {summary['simulations']} simulations, {summary['files']} files, {_human(summary['bytes'])} "
        f"in {summary['elapsed_s']:.1f}s on {summary['workers']} workers",
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
    lines.append(f"  catalog: {summary['catalog']}")
    return "\n".join(lines)


def _human(n: int) -> str:
    size = float(n)
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if size < 1024 or unit == "TB":
            return f"{size:.1f} {unit}" if unit != "B" else f"{int(size)} B"
        size /= 1024
    return f"{n} B"


def _cmd_generate(args: argparse.Namespace) -> int:
    from .generate import generate_campaign

    res = generate_campaign(
        args.dest, args.sims, seed=args.seed, faults=args.faults, profile=args.profile, traj_mb=args.traj_mb,
        nested=args.nested, hostile=args.hostile,
    )
    print(f"generated {len(res.simulations)} simulations, {res.files} files, {_human(res.bytes)} in {res.dest}")
    if args.faults:
        print(f"injected {len(res.expected_findings)} faults, listed in {res.manifest_path}")
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    from .audit import audit
    from .catalog import resolve_url
    from .generate import generate_campaign

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
    result = audit(dest, db=url, cluster=_cluster(args), arguments={"command": "demo"})
    print()
    print(render_summary(result.summary, result.findings().to_dict("records"), examples=1))
    print()
    print("What happened: every simulation directory was scanned in parallel; each registry")
    print("(.analysis/metadata.json) was checked against its parquet footers and artifact checksums,")
    print("every file was hashed (xxh3-128), and the results were bulk-written to the catalog.")
    print("The findings above are the faults the demo injected on purpose.")
    if url.startswith("sqlite:///"):
        path = url[len("sqlite:///"):]
        print(f"Look inside:  sqlite3 {path} 'SELECT kind, COUNT(*) FROM MDBATCH_FINDINGS GROUP BY kind'")
    return 0


_COMMANDS = {"audit": _cmd_audit, "generate": _cmd_generate, "demo": _cmd_demo}


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the process exit code."""
    debug = "--debug" in (argv if argv is not None else sys.argv[1:])
    try:
        args = build_parser().parse_args(argv)
        return _COMMANDS[args.command](args)
    except MdbatchError as exc:
        if debug:
            traceback.print_exc()
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # noqa: BLE001 - the one place that turns surprises into exit 2
        if debug:
            traceback.print_exc()
        print(f"error: internal error: {type(exc).__name__}: {exc} (run with --debug for the traceback)", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
